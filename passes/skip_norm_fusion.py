"""Residual add + norm -> ONNX Runtime's ``com.microsoft`` SkipLayerNormalization /
SkipSimplifiedLayerNormalization (contrib ops: only with ``allow_contrib_ops``, target cpu).

Matched meaning (anchor: every ``layer_norm`` / ``rms_norm`` whose input is an ``add``):

    s = add(input, skip) [ input = add(m, bias) for layer_norm ];  y = norm(s) over the last axis

* ``layer_norm(s, gamma?, beta?)`` -> SkipLayerNormalization(input, skip, gamma, beta?, bias?)
  (gamma ones when absent); a constant [H] ``bias`` added to one operand first (used by nothing
  else) is folded into the op's bias input;
* ``rms_norm(s, gamma)``           -> SkipSimplifiedLayerNormalization(input, skip, gamma) (its
  CPU kernel reads input 3 as beta and ignores it, so no bias is folded there).

Conditions (ONNX Runtime 1.32's CPU kernels, checked in tests/passes/test_skip_norm_fusion.py):
f32 / f16; input 2-D [N, H] or 3-D [B, S, H]; skip of the input's shape or, for a 3-D input,
[1, S, H] / [S, H] (other broadcasts are rejected at run time); normalized over the last axis
only; gamma / beta 1-D [H] (or [1, .., 1, H], reshaped). When the sum is also used elsewhere
(the residual stream) those users read the op's 4th output ``input_skip_bias_sum`` (bit-equal to
the Add, measured); then gamma / beta must be constants or graph inputs (the op is built where
the add was). The kernels compute the variance as E[s^2] - mean^2 in one pass: the same value in
exact arithmetic, slightly different rounding (max |dy| ~1e-6 on unit-scale rows).

Which places to lower (``mode``), measured on this machine's CPU with ONNX Runtime 1.32
(single-op models, docs/fusions.md):

* ``"auto"``: none. SkipLayerNormalization runs 4-8x slower than Add + LayerNormalization
  (0.47 vs 0.09 ms at [1,128,768]; 40 vs 10 ms at [1,2048,4096]) and
  SkipSimplifiedLayerNormalization 4-60% slower than Add + RMSNormalization (opset 23) (0.09 vs
  0.06 ms; 8.6 vs 8.3 ms), so every place is reported as kept, with those numbers.
* ``"always"``: every place that has a contrib form (runtimes whose kernels are faster).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.node import ConstData, Node, Value, constant
from graphopt.ir.types import DType, TensorType
from graphopt.rewrite.passes import Pass, PassResult

from .cleanup import const_array
from .fusion_report import Candidate, NoMatch, add_notes, rebuild
from .ort_attention import CONTRIB_OPSETS

RULE = "skip_norm_fusion"
MODES = ("auto", "always")
CONTRIB = {"layer_norm": "SkipLayerNormalization",
           "rms_norm": "SkipSimplifiedLayerNormalization"}
# why mode auto keeps each form (ONNX Runtime 1.32 CPU, single-op medians, docs/fusions.md)
AUTO_KEEP = {
    "layer_norm": "SkipLayerNormalization is 4-8x slower than Add + LayerNormalization on this "
                  "CPU (ONNX Runtime 1.32: 0.47 vs 0.09 ms at [1,128,768], 40 vs 10 ms at "
                  "[1,2048,4096]) (mode auto)",
    "rms_norm": "SkipSimplifiedLayerNormalization is slower than Add + RMSNormalization on this "
                "CPU (ONNX Runtime 1.32: 0.09 vs 0.06 ms at [1,128,768], 8.6 vs 8.3 ms at "
                "[1,2048,4096]) (mode auto)",
}
_DTYPES = (DType.f32, DType.f16)
Users = dict[Node, list[tuple[Node, int]]]


@dataclass
class SkipNorm:
    """One place to lower: ``norm(add)`` -> the contrib op over ``input``, ``skip``."""

    norm: Node
    add: Node
    input: Value
    skip: Value
    gamma: Value | None  # None: ones
    beta: Value | None
    bias: np.ndarray | None
    sum_used: bool  # the add has users besides the norm: its 4th output replaces it

    @property
    def op_type(self) -> str:
        return CONTRIB[self.norm.op]


def _t(v: Value) -> TensorType:
    t = v.type
    assert isinstance(t, TensorType) and t.shape is not None
    return t


def _param(v: Value, h: int, what: str, norm: Node) -> None:
    shp = _t(v).shape
    if not shp or shp[-1] != h or any(d != 1 for d in shp[:-1]):
        raise NoMatch(f"{what} has shape {list(shp)}, not [{h}]", norm)


def _skip_ok(inp: tuple, skip: tuple) -> bool:
    return skip == inp or (len(inp) == 3 and skip in ((1, *inp[1:]), tuple(inp[1:])))


def _split_operands(add: Node, full: tuple) -> tuple[Value, Value]:
    """(input, skip): the input has the sum's shape, the skip that or ORT's batch broadcast."""
    a, b = add.inputs
    for x, s in ((a, b), (b, a)):
        if tuple(_t(x).shape) == full and _skip_ok(full, tuple(_t(s).shape)):
            return x, s
    raise NoMatch(f"operand shapes {list(_t(a).shape)} + {list(_t(b).shape)}: the skip must "
                  f"have the input's shape or (3-D) [1, S, H] / [S, H]", add)


def _fold_bias(x: Value, h: int, users: Users) -> tuple[Value, np.ndarray | None]:
    """``m`` and the [H] bias when ``x = add(m, bias)`` is used only once, else (x, None)."""
    n = x.node
    if n.op != "add" or len(users.get(n, [])) != 1 or users[n][0][1] < 0:
        return x, None
    for i in (0, 1):
        c = const_array(n.inputs[1 - i])
        m = n.inputs[i]
        if (c is not None and const_array(m) is None and c.size == h and c.ndim >= 1
                and c.shape[-1] == h and _t(m).shape == _t(x).shape):
            return m, c.reshape(h)
    return x, None


def match_skip_norm(norm: Node, users: Users) -> SkipNorm:
    s = norm.inputs[0]
    add = s.node
    t = _t(s)
    shp = tuple(t.shape)
    if t.dtype not in _DTYPES:
        raise NoMatch(f"dtype {t.dtype.value} (the contrib kernels take f32 / f16)", norm)
    if len(shp) not in (2, 3):
        raise NoMatch(f"input of rank {len(shp)} (the contrib kernels take 2-D or 3-D)", norm)
    if norm.attrs["axis"] != len(shp) - 1:
        raise NoMatch(f"normalized from axis {norm.attrs['axis']}, not over the last axis only",
                      norm)
    h = shp[-1]
    if not isinstance(h, int):
        raise NoMatch(f"symbolic hidden size {h}", norm)
    params = list(norm.inputs[1:])
    for v, what in zip(params, ("gamma", "beta")):
        _param(v, h, what, norm)
    inp, skip = _split_operands(add, shp)
    us = users.get(add, [])
    sum_used = any(u is not norm for u, _ in us)
    if sum_used:
        for v, what in zip(params, ("gamma", "beta")):
            if v.node.op not in ("constant", "input"):
                raise NoMatch(f"{what} is computed in the graph and the sum has other users "
                              f"(the op would be built where the add is)", v.node)
    bias = None
    if norm.op == "layer_norm":
        inp, bias = _fold_bias(inp, h, users)
        if bias is None and tuple(_t(skip).shape) == shp:
            skip, bias = _fold_bias(skip, h, users)
            if bias is not None:
                inp, skip = skip, inp
    return SkipNorm(norm, add, inp, skip, params[0] if params else None,
                    params[1] if len(params) > 1 else None, bias, sum_used)


def _vec(v: Value, h: int, like: Node) -> Value:
    if tuple(_t(v).shape) == (h,):
        return v
    return Node.build("reshape", (v,), {"shape": (h,)}, like.origin).out


def lower(m: SkipNorm, tr: Callable[[Value], Value]) -> tuple[Value, Value | None]:
    """(normalized output, sum or None) of the contrib node replacing ``m``."""
    from onnx import helper

    x, s = tr(m.input), tr(m.skip)
    t = _t(x)
    h = int(t.shape[-1])  # type: ignore[index, arg-type]
    npdt = t.dtype.to_numpy()
    gamma = _vec(tr(m.gamma), h, m.norm) if m.gamma is not None else constant(
        ConstData(np.ones(h, npdt)))
    ins: list[Value | None] = [x, s, gamma]
    if m.norm.op == "layer_norm":
        ins.append(_vec(tr(m.beta), h, m.norm) if m.beta is not None else None)
        if m.bias is not None:
            ins.append(constant(ConstData(m.bias.astype(npdt))))
    names = [f"in{i}" if v is not None else "" for i, v in enumerate(ins)]
    outs = ["out0", "", "", "out3"] if m.sum_used else ["out0"]
    proto = helper.make_node(m.op_type, names, outs, domain="com.microsoft",
                             epsilon=float(m.norm.attrs["epsilon"]))
    out_t = m.norm.out_types[0]
    attrs = {
        "op_type": m.op_type, "domain": "com.microsoft", "proto": proto.SerializeToString(),
        "opsets": CONTRIB_OPSETS, "out_types": (out_t, out_t) if m.sum_used else (out_t,),
        "present": tuple(bool(n) for n in names), "captured": (), "call": None,
        "functions": (),
    }
    node = Node.build("opaque", tuple(v for v in ins if v is not None), attrs, m.norm.origin)
    return node.outputs[0], (node.outputs[1] if m.sum_used else None)


def find_skip_norm(g: Graph, mode: str = "auto") -> tuple[list[Candidate], list[SkipNorm]]:
    """Every norm reading an add: lowered (in ``mode``) or not, with the reason."""
    from .attention_flash import users_with_outputs

    if mode not in MODES:
        raise ValueError(f"{RULE}: unknown mode {mode!r}; valid: {', '.join(MODES)}")
    users = users_with_outputs(g)
    cands: list[Candidate] = []
    found: list[SkipNorm] = []
    taken: set[int] = set()
    for n in g.nodes:
        if n.op not in CONTRIB or n.inputs[0].node.op != "add":
            continue
        try:
            m = match_skip_norm(n, users)
            if id(m.add) in taken:
                raise NoMatch("the sum is already fused into another norm", m.add)
            if mode == "auto":
                raise NoMatch(AUTO_KEEP[n.op], n)
        except NoMatch as e:
            cands.append(Candidate("skip_norm", RULE, n, False, e.condition, e.node))
            continue
        taken.add(id(m.add))
        found.append(m)
        extra = [w for w, ok in (("bias", m.bias is not None),
                                 ("sum output", m.sum_used)) if ok]
        cands.append(Candidate("skip_norm", RULE, n, True, detail=m.op_type + (
            f" ({', '.join(extra)})" if extra else "")))
    return cands, found


class SkipNormFusion(Pass):
    """Lower residual add + layer_norm / rms_norm to com.microsoft Skip(Simplified)LayerNorm."""

    name = "skip_norm_fusion"

    def __init__(self, mode: str = "auto") -> None:
        if mode not in MODES:
            raise ValueError(f"{self.name}: unknown mode {mode!r}; valid: {', '.join(MODES)}")
        self.mode = mode

    def run(self, g: Graph) -> PassResult:
        cands, found = find_skip_norm(g, self.mode)
        builders: dict[int, Callable] = {}
        for m in found:
            cache: dict[str, tuple[Value, Value | None]] = {}

            def get(tr: Callable[[Value], Value], m: SkipNorm = m,
                    cache: dict[str, tuple[Value, Value | None]] = cache
                    ) -> tuple[Value, Value | None]:
                if "out" not in cache:
                    cache["out"] = lower(m, tr)
                return cache["out"]

            builders[id(m.norm)] = (lambda f: lambda tr: (f(tr)[0],))(get)
            if m.sum_used:
                builders[id(m.add)] = (lambda f: lambda tr: (f(tr)[1],))(get)
        out = rebuild(g, builders) if builders else g
        stats: dict[str, object] = {
            "skip_layer_norm": sum(1 for m in found if m.norm.op == "layer_norm"),
            "skip_simplified_layer_norm": sum(1 for m in found if m.norm.op == "rms_norm"),
            "skip_norm_not_fused": sum(1 for c in cands if not c.fused)}
        add_notes(stats, cands)
        return PassResult(out, bool(found), stats)

