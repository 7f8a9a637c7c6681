"""RMSNorm composition -> one ``rms_norm`` op.

Anchor: every ``rsqrt``. Matched meaning (after canonicalize: constants on the right):

    mul(x, rsqrt(add(reduce_mean(pow(x, 2) | mul(x, x), axes=(last,), keepdims), eps)))
    [ then mul(., w) with a constant weight w of shape [N] ]

The weight multiply is folded into ``rms_norm``'s scale (ones when absent). LayerNorm needs no
rule here: both frontends already lift it to ``layer_norm`` (ONNX LayerNormalization, aten
native_layer_norm).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.node import ConstData, Node, Value, constant
from graphopt.ir.types import TensorType
from graphopt.rewrite.passes import Pass, PassResult

from .cleanup import const_array
from .fusion_report import Candidate, NoMatch, rebuild

RULE = "rms_norm_fusion"


def _scalar(v: Value) -> float | None:
    a = const_array(v)
    if a is None or a.size != 1 or a.dtype.kind != "f":
        return None
    return float(a.reshape(()))


def _other(n: Node, v: Value) -> Value:
    a, b = n.inputs
    return b if a == v else a


def match_rms(rs: Node, users: dict[Node, list[tuple[Node, int]]]
              ) -> tuple[Value, float, Node, Node, np.ndarray | None]:
    """(x, eps, the normalizing mul, the node whose output is replaced, weight or None)."""
    add = rs.inputs[0].node
    if add.op != "add":
        raise NoMatch("rsqrt of something other than mean + eps", add)
    eps = _scalar(add.inputs[1])
    if eps is None or eps < 0:
        raise NoMatch("epsilon is not a non-negative scalar constant", add)
    mean = add.inputs[0].node
    if mean.op != "reduce_mean" or not mean.attrs["keepdims"]:
        raise NoMatch("not a keepdims mean of squares", mean)
    sq = mean.inputs[0].node
    if sq.op == "pow" and _scalar(sq.inputs[1]) == 2.0:
        x = sq.inputs[0]
    elif sq.op == "mul" and sq.inputs[0] == sq.inputs[1]:
        x = sq.inputs[0]
    else:
        raise NoMatch("mean of something other than x*x", sq)
    t = x.type
    assert isinstance(t, TensorType) and t.shape is not None
    last = len(t.shape) - 1
    if tuple(mean.attrs["axes"]) != (last,):
        raise NoMatch(f"mean over axes {mean.attrs['axes']}, not the last axis", mean)
    us = users.get(rs, [])
    norm = next((u for u, _ in us if u.op == "mul" and _other(u, rs.out) == x), None)
    if norm is None or len(us) != 1:
        raise NoMatch("rsqrt is not used only to scale x", rs)
    out, weight = norm, None
    nus = users.get(norm, [])
    if len(nus) == 1 and nus[0][0].op == "mul" and nus[0][1] >= 0:
        wmul = nus[0][0]
        w = const_array(_other(wmul, norm.out))
        if w is not None and w.ndim == 1 and w.shape[0] == t.shape[-1] \
                and wmul.out_types[0] == norm.out_types[0]:
            out, weight = wmul, w
    return x, eps, norm, out, weight


def find_rms(g: Graph
             ) -> tuple[list[Candidate], list[tuple[Value, float, Node, np.ndarray | None]]]:
    from .attention_flash import users_with_outputs

    users = users_with_outputs(g)
    cands: list[Candidate] = []
    found = []
    for n in g.nodes:
        if n.op != "rsqrt":
            continue
        try:
            x, eps, _, out, w = match_rms(n, users)
        except NoMatch as e:
            cands.append(Candidate("rms_norm", RULE, n, False, e.condition, e.node))
            continue
        cands.append(Candidate("rms_norm", RULE, n, True,
                               detail="with weight" if w is not None else "no weight"))
        found.append((x, eps, out, w))
    return cands, found


class RmsNormFusion(Pass):
    name = "rms_norm_fusion"

    def run(self, g: Graph) -> PassResult:
        cands, found = find_rms(g)
        builders: dict[int, Callable] = {}
        for x, eps, out, w in found:
            def build(tr: Callable[[Value], Value], x: Value = x, eps: float = eps,
                      out: Node = out, w: np.ndarray | None = w) -> tuple[Value, ...]:
                xt = tr(x)
                t = xt.type
                assert isinstance(t, TensorType) and t.shape is not None
                npdt = t.dtype.to_numpy()
                scale = w.astype(npdt) if w is not None else np.ones(t.shape[-1], npdt)
                y = Node.build("rms_norm", (xt, constant(ConstData(scale))),
                               {"axis": len(t.shape) - 1, "epsilon": eps}, out.origin).out
                return (y,)
            builders[id(out)] = build
        res = rebuild(g, builders) if builders else g
        stats: dict[str, object] = {"rms_norm_fused": len(found),
                                    "rms_norm_not_fused": sum(1 for c in cands if not c.fused)}
        notes = [c.describe() for c in cands if not c.fused]
        if notes:
            stats["notes"] = notes
        return PassResult(res, bool(found), stats)
