"""x * sigmoid(x) -> one ``silu`` op; SiLU-gated MLPs (``silu(gate) * up``) are reported.

Anchor: every ``sigmoid`` that feeds a ``mul``. Matched meaning:

    s = sigmoid(x);  y = mul(x, s) | mul(s, x)          -> y = silu(x)

where both operands are the same value ``x`` and every user of ``s`` is such a multiply (a
sigmoid also used elsewhere stays, and so does its multiply: fusing would compute it twice). No
cast may sit between the sigmoid and the multiply: ``x * cast(sigmoid(cast(x)))`` rounds the
sigmoid to the narrower type before the product, which ``silu`` in that type does not repeat
(casts before the whole pattern are fine: ``silu(cast(x))`` is what ``y`` computes). ONNX files
of both torch exporters and ``torch.export`` (core ATen decomposes ``aten.silu``) all spell SiLU
as this Mul/Sigmoid pair.

Gated MLP (report only): ``mul(silu(a), b)`` whose ``a`` (gate) and ``b`` (up) are projections of
one input. Its fused form is ``silu`` plus one merged gate/up matmul (``a``, ``b`` = the outputs of
a ``split`` of one matmul, as passes/matmul_fusion.py produces); reshapes between a matmul and its
use (2-D matmuls of the torch frontend) and a constant bias add are looked through. Each such
multiply is a ``gated_mlp`` candidate: fused when gate and up come from one split matmul, else
not fused with the reason (separate matmuls: matmul_fusion declined or did not run; not a
projection; different inputs). The pass runs after matmul_fusion (passes/fusions.py) so the
report sees the merged form.

Export: ``silu`` is written as ``Mul(x, Sigmoid(x))`` at every opset (ops/elementwise.py: ONNX
Runtime 1.32 fuses that pair into its QuickGelu kernel, while Swish-24 is expanded into four
nodes and runs ~2.5x slower). Triton codegen puts ``silu`` and the gating ``mul`` in one pointwise
region (codegen/triton/lower.py).
"""
from __future__ import annotations

from typing import Callable

from graphopt.ir.graph import Graph
from graphopt.ir.node import Node, Value
from graphopt.ir.types import TensorType
from graphopt.rewrite.passes import Pass, PassResult

from .cleanup import const_array
from .fusion_report import Candidate, NoMatch, add_notes, rebuild

RULE = "silu_fusion"
Users = dict[Node, list[tuple[Node, int]]]


def _other(n: Node, pos: int) -> Value:
    return n.inputs[1 - pos]


def match_silu(s: Node, users: Users) -> tuple[Value, list[Node]]:
    """(x, the multiplies that become silu(x)) for sigmoid node ``s``."""
    x = s.inputs[0]
    us = users.get(s, [])
    muls: list[Node] = []
    for u, pos in us:
        if u.op == "cast":
            raise NoMatch("sigmoid is cast before the multiply (x * cast(sigmoid(x)) rounds the "
                          "sigmoid first; silu would not)", u)
        if pos < 0 or u.op != "mul":
            raise NoMatch(f"sigmoid is also used by {u.op if pos >= 0 else 'a graph output'} "
                          f"(fusing would compute it twice)", u if pos >= 0 else s)
        if _other(u, pos) != x:
            raise NoMatch("sigmoid(x) is multiplied by something other than x", u)
        if u.out_types[0] != x.type:
            raise NoMatch(f"x {x.type} and the product {u.out_types[0]} differ in type", u)
        if u not in muls:
            muls.append(u)
    xt = x.type
    if not isinstance(xt, TensorType) or not xt.dtype.is_float:
        raise NoMatch("x is not a float tensor", s)
    return x, muls


def _feeds_mul(s: Node, users: Users) -> bool:
    """Whether the sigmoid reaches a multiply (directly or through a cast): a SiLU candidate."""
    for u, pos in users.get(s, []):
        if pos >= 0 and u.op == "mul":
            return True
        if pos >= 0 and u.op == "cast" and any(w.op == "mul" for w, _ in users.get(u, [])):
            return True
    return False


def find_silu(g: Graph) -> tuple[list[Candidate], list[tuple[Value, list[Node]]]]:
    """Every sigmoid feeding a multiply: fused (x and the multiplies replaced) or why not."""
    from .attention_flash import users_with_outputs

    users = users_with_outputs(g)
    cands: list[Candidate] = []
    found: list[tuple[Value, list[Node]]] = []
    for n in g.nodes:
        if n.op != "sigmoid" or not _feeds_mul(n, users):
            continue
        try:
            x, muls = match_silu(n, users)
        except NoMatch as e:
            cands.append(Candidate("silu", RULE, n, False, e.condition, e.node))
            continue
        cands.append(Candidate("silu", RULE, n, True))
        found.append((x, muls))
    return cands, found


# ---- gated MLP (report) -----------------------------------------------------------------------

def _through_views(v: Value) -> Value:
    while v.node.op == "reshape":
        v = v.node.inputs[0]
    return v


def _through_bias(v: Value) -> Value:
    n = v.node
    if n.op == "add":
        for i in (0, 1):
            if const_array(n.inputs[1 - i]) is not None and const_array(n.inputs[i]) is None:
                return n.inputs[i]
    return v


def _projection(v: Value, what: str) -> tuple[Node, Node | None]:
    """(matmul, split or None) computing ``v``: a matmul [+ bias] or one piece of a split of one."""
    u = _through_views(v)
    split = None
    if u.node.op == "split":
        split = u.node
        st = split.inputs[0].type
        if isinstance(st, TensorType) and st.shape is not None \
                and split.attrs["axis"] != len(st.shape) - 1:
            raise NoMatch(f"{what} is a piece of a split along axis {split.attrs['axis']}, not "
                          f"the feature axis", split)
        u = _through_views(split.inputs[0])
    u = _through_bias(u)
    if u.node.op != "matmul":
        raise NoMatch(f"{what} operand is not a matmul projection ({u.node.op})", u.node)
    return u.node, split


def _piece(v: Value) -> int:
    return _through_views(v).index


def match_gated_mlp(m: Node, gate_pos: int) -> str:
    """The fused form's description for ``mul(silu(gate), up)`` node ``m``; NoMatch when it is
    not one (or not in its fused form)."""
    gate, up = m.inputs[gate_pos].node.inputs[0], m.inputs[1 - gate_pos]
    mg, sg = _projection(gate, "gate")
    mu, su = _projection(up, "up")
    if sg is not None and sg is su:
        if _piece(gate) == _piece(up):
            raise NoMatch("gate and up are the same piece of the split", m)
        w = mg.inputs[1].type
        shape = list(w.shape) if isinstance(w, TensorType) and w.shape is not None else "?"
        return f"silu + merged gate/up matmul {shape}, split {list(sg.attrs['sizes'])}"
    if sg is not None and su is not None:
        raise NoMatch("gate and up are pieces of two different merged matmuls", su)
    if sg is not None or su is not None:
        piece = su if su is not None else sg
        assert piece is not None
        raise NoMatch("gate and up come from different matmuls (only one is a piece of a merged "
                      "matmul)", piece)
    if _through_views(mg.inputs[0]) != _through_views(mu.inputs[0]):
        raise NoMatch("gate and up matmuls read different inputs", mu)
    raise NoMatch("gate and up are two matmuls over one input, not merged into one (matmul_fusion "
                  "merges them when its cost model prices the merged form cheaper; "
                  "MatmulFusion(force=True) always does)", mu)


def find_gated_mlp(g: Graph) -> list[Candidate]:
    """Every ``mul(silu(a), b)`` with a non-constant ``b``: a ``gated_mlp`` candidate."""
    cands: list[Candidate] = []
    for n in g.nodes:
        if n.op != "mul":
            continue
        pos = next((i for i in (0, 1) if n.inputs[i].node.op == "silu"
                    and const_array(n.inputs[1 - i]) is None), None)
        if pos is None:
            continue
        try:
            detail = match_gated_mlp(n, pos)
        except NoMatch as e:
            cands.append(Candidate("gated_mlp", RULE, n, False, e.condition, e.node))
            continue
        cands.append(Candidate("gated_mlp", RULE, n, True, detail=detail))
    return cands


class SiluFusion(Pass):
    """Fuse x * sigmoid(x) into ``silu``; report SiLU-gated MLPs."""

    name = "silu_fusion"

    def run(self, g: Graph) -> PassResult:
        cands, found = find_silu(g)
        builders: dict[int, Callable] = {}
        for x, muls in found:
            for mul in muls:
                def build(tr: Callable[[Value], Value], x: Value = x,
                          mul: Node = mul) -> tuple[Value, ...]:
                    return (Node.build("silu", (tr(x),), {}, mul.origin).out,)
                builders[id(mul)] = build
        res = rebuild(g, builders) if builders else g
        mlps = find_gated_mlp(res)
        stats: dict[str, object] = {
            "silu_fused": len(found),
            "silu_not_fused": sum(1 for c in cands if not c.fused),
            "gated_mlp_fused": sum(1 for c in mlps if c.fused),
            "gated_mlp_not_fused": sum(1 for c in mlps if not c.fused)}
        add_notes(stats, cands + mlps)
        return PassResult(res, bool(found), stats)
