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
exact arithmetic, slightly different rounding (max |dy| ~1e-6 on unit-scale rows). The accepted
forms are the rules of ``rules/skip_norm_fusion.rules`` (tested numerically in ONNX Runtime:
the contrib ops have no symbolic semantics).

Which places to lower (``mode``):

* ``"auto"``: a place that passed the conditions above is lowered when the cost model of the
  pass's ``target`` prices the contrib node below the add (+ bias add) and norm it replaces, by
  more than the model resolves. Target ``cpu`` (this host, where the result runs in ONNX
  Runtime) uses the measured mode: each node is profiled alone in ONNX Runtime on this machine
  at the opset the pipeline exports it at (the profiler's default), cached on disk by op, attrs,
  types and opset; a saving below one run's fixed overhead (measured with the probes) is not
  resolved and keeps the standard ops. The candidate's reason (or detail) quotes both times. The
  analytic model has no price of its own for a contrib kernel (only its generic memory-bound
  default), so other targets, or ``cost="analytic"``, keep every place and say so; a caller's
  ``cost_model`` (a ``CostModel``) decides instead when given.
* ``"always"``: every place that has a contrib form.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from graphopt.cost.measured import HOST, MeasuredCostModel, cost_mode, host_profiler
from graphopt.cost.model import CostModel
from graphopt.cost.profile import Unpriced
from graphopt.ir.graph import Graph
from graphopt.ir.node import ConstData, Node, Value, constant
from graphopt.ir.types import DType
from graphopt.rewrite.context import MatchContext, const_array, tensor_type
from graphopt.rewrite.match import Match, MatchFail, fail
from graphopt.rewrite.passes import RewritePass, Stats
from graphopt.rewrite.rule import Rule
from graphopt.rewrite.trace import Candidate

from .ort_attention import CONTRIB_OPSETS

MODES = ("auto", "always")
COSTS = ("measured", "analytic")
CONTRIB = {"layer_norm": "SkipLayerNormalization",
           "rms_norm": "SkipSimplifiedLayerNormalization"}
_DTYPES = (DType.f32, DType.f16)
_Tr = Callable[[Value], Value]


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
    bias_add: Node | None  # the add(m, bias) folded into the op
    sum_used: bool  # the add has users besides the norm: its 4th output replaces it

    @property
    def op_type(self) -> str:
        return CONTRIB[self.norm.op]

    @property
    def replaced(self) -> list[Node]:
        """The standard nodes the contrib op replaces, in topological order."""
        return [n for n in (self.bias_add, self.add, self.norm) if n is not None]

    @property
    def roots(self) -> list[Value]:
        return [self.norm.out] + ([self.add.out] if self.sum_used else [])


def _param(v: Value, h: int, what: str, norm: Node) -> None:
    shp = tensor_type(v).shape
    if not shp or shp[-1] != h or any(d != 1 for d in shp[:-1]):
        raise fail(f"{what} has shape {list(shp)}, not [{h}]", norm)


def _skip_ok(inp: tuple, skip: tuple) -> bool:
    return skip == inp or (len(inp) == 3 and skip in ((1, *inp[1:]), tuple(inp[1:])))


def _split_operands(add: Node, full: tuple) -> tuple[Value, Value]:
    """(input, skip): the input has the sum's shape, the skip that or ORT's batch broadcast."""
    a, b = add.inputs
    for x, s in ((a, b), (b, a)):
        if tuple(tensor_type(x).shape) == full and _skip_ok(full, tuple(tensor_type(s).shape)):
            return x, s
    raise fail(f"operand shapes {list(tensor_type(a).shape)} + {list(tensor_type(b).shape)}: the skip must "
               f"have the input's shape or (3-D) [1, S, H] / [S, H]", add)


def _fold_bias(x: Value, h: int, ctx: MatchContext) -> tuple[Value, np.ndarray | None]:
    """``m`` and the [H] bias when ``x = add(m, bias)`` is used only once, else (x, None)."""
    n = x.node
    us = ctx.users_of(n)
    if n.op != "add" or len(us) != 1 or us[0][1] < 0:
        return x, None
    for i in (0, 1):
        c = const_array(n.inputs[1 - i])
        m = n.inputs[i]
        if (c is not None and const_array(m) is None and c.size == h and c.ndim >= 1
                and c.shape[-1] == h and tensor_type(m).shape == tensor_type(x).shape):
            return m, c.reshape(h)
    return x, None


def match_skip_norm(norm: Node, ctx: MatchContext) -> SkipNorm:
    """The contrib form of ``norm(add(...))``; MatchFail naming the condition it misses."""
    s = norm.inputs[0]
    add = s.node
    t = tensor_type(s)
    shp = tuple(t.shape)
    if t.dtype not in _DTYPES:
        raise fail(f"dtype {t.dtype.value} (the contrib kernels take f32 / f16)", norm)
    if len(shp) not in (2, 3):
        raise fail(f"input of rank {len(shp)} (the contrib kernels take 2-D or 3-D)", norm)
    if norm.attrs["axis"] != len(shp) - 1:
        raise fail(f"normalized from axis {norm.attrs['axis']}, not over the last axis only",
                   norm)
    h = shp[-1]
    if not isinstance(h, int):
        raise fail(f"symbolic hidden size {h}", norm)
    params = list(norm.inputs[1:])
    for v, what in zip(params, ("gamma", "beta")):
        _param(v, h, what, norm)
    inp, skip = _split_operands(add, shp)
    sum_used = any(u is not norm for u, _ in ctx.users_of(add))
    if sum_used:
        for v, what in zip(params, ("gamma", "beta")):
            if v.node.op not in ("constant", "input"):
                raise fail(f"{what} is computed in the graph and the sum has other users "
                           f"(the op would be built where the add is)", v.node)
    bias = None
    bias_add = None
    if norm.op == "layer_norm":
        folded, bias = _fold_bias(inp, h, ctx)
        if bias is None and tuple(tensor_type(skip).shape) == shp:
            folded, bias = _fold_bias(skip, h, ctx)
            if bias is not None:
                inp, skip = skip, inp
        if bias is not None:
            bias_add, inp = inp.node, folded
    return SkipNorm(norm, add, inp, skip, params[0] if params else None,
                    params[1] if len(params) > 1 else None, bias, bias_add, sum_used)


def _vec(v: Value, h: int, like: Node) -> Value:
    if tuple(tensor_type(v).shape) == (h,):
        return v
    return Node.build("reshape", (v,), {"shape": (h,)}, like.origin).out


def contrib_node(m: SkipNorm, tr: _Tr = lambda v: v) -> Node:
    """The opaque com.microsoft node replacing ``m`` (output 0: the norm, output 1 when the sum
    is used: the sum), over the values ``tr`` maps ``m``'s inputs to."""
    from onnx import helper

    x, s = tr(m.input), tr(m.skip)
    t = tensor_type(x)
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
    return Node.build("opaque", tuple(v for v in ins if v is not None), attrs, m.norm.origin)


# ---- the cost decision (mode auto) -------------------------------------------------------------

_MEASURED: list[MeasuredCostModel] = []


def measured_model() -> MeasuredCostModel:
    """The measured cost model of this host (one per process, so measurements are reused)."""
    if not _MEASURED:
        # the profiler probes each node at the opset the pipeline exports it at (its default):
        # rms_norm is one RMSNormalization node there, a six-node composition below opset 23
        _MEASURED.append(MeasuredCostModel(HOST, host_profiler()))
    return _MEASURED[0]


@dataclass(frozen=True)
class Decision:
    lower: bool
    reason: str


def _us(t: float) -> str:
    return f"{t * 1e6:.1f} us"


def decide(m: SkipNorm, model: CostModel) -> Decision:
    """Whether the contrib node is cheaper than the nodes it replaces, by ``model``, and why."""
    node = contrib_node(m)
    std = model.nodes_time(m.replaced, m.roots)
    new = model.nodes_time([node], node.outputs)
    ops = " + ".join(n.op for n in m.replaced)
    how = f"{model.name} cost model, {model.device.name}"
    resolution = 0.0
    if isinstance(model, MeasuredCostModel):
        prof = model.profiler
        unpriced = [t for t in map(prof.price_op, (*m.replaced, node))
                    if isinstance(t, Unpriced)]
        prof.flush()
        if unpriced:
            return Decision(False, f"{m.op_type} vs {ops} cannot be measured on this host "
                                   f"({unpriced[0].reason}); kept ({how})")
        how = "measured in ONNX Runtime on this host"
        resolution = prof.overhead()
    times = f"{m.op_type} {_us(new)} vs {ops} {_us(std)} ({how})"
    if new >= std:
        return Decision(False, f"{m.op_type} is slower: {times}")
    if std - new <= resolution:
        return Decision(False, f"{m.op_type} would save {_us(std - new)}, within what the probes "
                               f"resolve (one run's fixed overhead, {_us(resolution)}): {times}")
    return Decision(True, times)


def auto_decision(m: SkipNorm, ctx: MatchContext) -> Decision:
    """Mode auto: the pass's ``cost_model`` when given, else the measured model when the
    target is this host; the analytic model has no price of its own for a contrib kernel."""
    model = ctx.option("cost_model")
    if model is None:
        target = ctx.option("target", HOST)
        cost = cost_mode(target, ctx.option("cost"))
        if cost == "analytic":
            return Decision(False, f"the analytic cost model has no price for the com.microsoft "
                                   f"kernel (target {target}; it is measured on this host only)")
        if target != HOST:
            return Decision(False, f"measured costs exist for this host (target {HOST}) only, "
                                   f"not for target {target}")
        model = measured_model()
    return decide(m, model)


class SkipNormRule(Rule):
    """norm(add(input, skip)) -> com.microsoft Skip(Simplified)LayerNormalization; in mode auto
    only where the target's cost model prices it cheaper."""

    name = "skip_norm_fusion"
    kind = "lowering"
    place = "skip_norm"
    place_title = "residual add + norm (com.microsoft Skip*Normalization)"
    anchors = frozenset(CONTRIB)
    pass_name = "skip_norm_fusion"

    def match(self, n: Node, ctx: MatchContext) -> Match | MatchFail | None:
        if n.inputs[0].node.op != "add":
            return None
        m = match_skip_norm(n, ctx)
        extra = [w for w, ok in (("bias", m.bias is not None), ("sum output", m.sum_used)) if ok]
        detail = m.op_type + (f" ({', '.join(extra)})" if extra else "")
        if ctx.option("mode", "auto") == "auto":
            d = auto_decision(m, ctx)
            if not d.lower:
                return fail(f"{d.reason} (mode auto)", n)
            detail += f"; {d.reason}"
        return Match(roots=m.roots, data=m, detail=detail)

    def build(self, m: Match) -> Sequence[Value]:
        sn: SkipNorm = m.data
        node = contrib_node(sn, m.tr)
        return list(node.outputs)


class SkipNormFusion(RewritePass):
    """Lower residual add + layer_norm / rms_norm to com.microsoft Skip(Simplified)LayerNorm.

    ``mode`` "auto" (cost model of ``target``; ``cost`` "measured" / "analytic" picks the mode,
    default measured on cpu; ``cost_model`` supplies a model) or "always"."""

    name = "skip_norm_fusion"
    rules = (SkipNormRule(),)

    def __init__(self, mode: str = "auto", target: str = "cpu", cost: str | None = None,
                 cost_model: CostModel | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"{self.name}: unknown mode {mode!r}; valid: {', '.join(MODES)}")
        if cost is not None and cost not in COSTS:
            raise ValueError(f"{self.name}: unknown cost mode {cost!r}; valid: "
                             f"{', '.join(COSTS)}")
        super().__init__(options={"mode": mode, "target": target, "cost": cost,
                                  "cost_model": cost_model})

    def summarize(self, before: Graph, after: Graph, candidates: Sequence[Candidate]
                  ) -> Stats:
        done = [c.anchor.op for c in candidates if c.kind == "skip_norm" and c.matched]
        return {"skip_layer_norm": done.count("layer_norm"),
                "skip_simplified_layer_norm": done.count("rms_norm")}
