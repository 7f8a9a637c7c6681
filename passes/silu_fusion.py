"""x * sigmoid(x) -> one ``silu`` op; SiLU-gated MLPs (``silu(gate) * up``) are reported.

Anchor: every ``sigmoid`` that feeds a ``mul``. Matched meaning:

    s = sigmoid(x);  y = mul(x, s) | mul(s, x)          -> y = silu(x)

where both operands are the same value ``x`` and every user of ``s`` is such a multiply (a
sigmoid also used elsewhere stays, and so does its multiply: fusing would compute it twice). No
cast may sit between the sigmoid and the multiply: ``x * cast(sigmoid(cast(x)))`` rounds the
sigmoid to the narrower type before the product, which ``silu`` in that type does not repeat
(casts before the whole pattern are fine: ``silu(cast(x))`` is what ``y`` computes). ONNX files
of both torch exporters and ``torch.export`` (core ATen decomposes ``aten.silu``) all spell SiLU
as this Mul/Sigmoid pair. The spellings are the rules of ``rules/silu_fusion.rules``.

Gated MLP (report only, rule ``gated_mlp``): ``mul(silu(a), b)`` (or ``mul(a * sigmoid(a), b)``
whose SiLU this pass fuses) whose ``a`` (gate) and ``b`` (up) are projections of one input. Its
fused form is ``silu`` plus one merged gate/up matmul (``a``, ``b`` = the outputs of a ``split``
of one matmul, as passes/matmul_fusion.py produces); reshapes between a matmul and its use (2-D
matmuls of the torch frontend) and a constant bias add are looked through. Each such multiply is
a ``gated_mlp`` candidate. The rule never rewrites (it only reports), so every candidate is a
``MatchFail``: the reason says that gate and up already come from one split matmul (the fused
form, made by matmul_fusion), or why they do not (separate matmuls: matmul_fusion declined or did
not run; not a projection; different inputs). ``summarize`` counts the places in fused form
(``gated_mlp_merged``). The pass runs after matmul_fusion (passes/fusions.py) so the report sees
the merged form.

Export: ``silu`` is written as ``Mul(x, Sigmoid(x))`` at every opset (ops/elementwise.py: ONNX
Runtime 1.32 fuses that pair into its QuickGelu kernel, while Swish-24 is expanded into four
nodes and runs ~2.5x slower). Triton codegen puts ``silu`` and the gating ``mul`` in one pointwise
region (codegen/triton/lower.py).
"""
from __future__ import annotations

from typing import Sequence

from graphopt.ir.node import Node, Value
from graphopt.ir.types import TensorType
from graphopt.rewrite.context import MatchContext, const_array
from graphopt.rewrite.match import Match, MatchFail, fail
from graphopt.rewrite.passes import RewritePass
from graphopt.rewrite.rule import Rule

MERGED = "gate and up already come from one merged matmul"  # the gated-MLP report's fused form


def match_silu(s: Node, ctx: MatchContext) -> tuple[Value, list[Node]]:
    """(x, the multiplies that become silu(x)) for sigmoid node ``s``."""
    x = s.inputs[0]
    muls: list[Node] = []
    for u, pos in ctx.users_of(s):
        if u.op == "cast":
            raise fail("sigmoid is cast before the multiply (x * cast(sigmoid(x)) rounds the "
                       "sigmoid first; silu would not)", u)
        if pos < 0 or u.op != "mul":
            raise fail(f"sigmoid is also used by {u.op if pos >= 0 else 'a graph output'} "
                       f"(fusing would compute it twice)", u if pos >= 0 else s)
        if u.inputs[1 - pos] != x:
            raise fail("sigmoid(x) is multiplied by something other than x", u)
        if u.out_types[0] != x.type:
            raise fail(f"x {x.type} and the product {u.out_types[0]} differ in type", u)
        if u not in muls:
            muls.append(u)
    xt = x.type
    if not isinstance(xt, TensorType) or not xt.dtype.is_float:
        raise fail("x is not a float tensor", s)
    return x, muls


def _feeds_mul(s: Node, ctx: MatchContext) -> bool:
    """Whether the sigmoid reaches a multiply (directly or through a cast): a SiLU candidate."""
    for u, pos in ctx.users_of(s):
        if pos >= 0 and u.op == "mul":
            return True
        if pos >= 0 and u.op == "cast" and any(w.op == "mul" for w, _ in ctx.users_of(u)):
            return True
    return False


class SiluRule(Rule):
    """x * sigmoid(x) (either operand order) -> silu(x)."""

    name = "silu_fusion"
    place = "silu"
    place_title = "SiLU compositions (x * sigmoid(x))"
    anchors = frozenset({"sigmoid"})
    pass_name = "silu_fusion"

    def match(self, n: Node, ctx: MatchContext) -> Match | None:
        if not _feeds_mul(n, ctx):
            return None  # a plain sigmoid activation
        x, muls = match_silu(n, ctx)
        return Match(roots=[u.out for u in muls], data=x,
                     detail=f"{len(muls)} multiply" + ("" if len(muls) == 1 else "s"))

    def build(self, m: Match) -> Sequence[Value]:
        y = Node.build("silu", (m.tr(m.data),), {}, m.roots[0].node.origin).out
        return [y] * len(m.roots)


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
            raise fail(f"{what} is a piece of a split along axis {split.attrs['axis']}, not "
                       f"the feature axis", split)
        u = _through_views(split.inputs[0])
    u = _through_bias(u)
    if u.node.op != "matmul":
        raise fail(f"{what} operand is not a matmul projection ({u.node.op})", u.node)
    return u.node, split


def _piece(v: Value) -> int:
    return _through_views(v).index


def gated_mlp_form(m: Node, gate: Value, up: Value) -> Match | MatchFail:
    """What the gated MLP ``m = silu(gate) * up`` is: in its fused form (gate and up pieces of
    one split matmul: a match without roots, nothing to rewrite) or why not."""
    mg, sg = _projection(gate, "gate")
    mu, su = _projection(up, "up")
    if sg is not None and sg is su:
        if _piece(gate) == _piece(up):
            return fail("gate and up are the same piece of the split", m)
        w = mg.inputs[1].type
        shape = list(w.shape) if isinstance(w, TensorType) and w.shape is not None else "?"
        return Match(detail=f"{MERGED} {shape}, split {list(sg.attrs['sizes'])} (its fused "
                            f"form: silu + the merged matmul)")
    if sg is not None and su is not None:
        return fail("gate and up are pieces of two different merged matmuls", su)
    if sg is not None or su is not None:
        piece = su if su is not None else sg
        assert piece is not None
        return fail("gate and up come from different matmuls (only one is a piece of a merged "
                    "matmul)", piece)
    if _through_views(mg.inputs[0]) != _through_views(mu.inputs[0]):
        return fail("gate and up matmuls read different inputs", mu)
    return fail("gate and up are two matmuls over one input, not merged into one (matmul_fusion "
                "merges them when its cost model prices the merged form cheaper; "
                "MatmulFusion(force=True) always does)", mu)


def silu_input(v: Value, ctx: MatchContext) -> Value | None:
    """``a`` when ``v`` is silu(a), or a * sigmoid(a) that ``SiluRule`` fuses; else None."""
    n = v.node
    if n.op == "silu":
        return n.inputs[0]
    if n.op != "mul":
        return None
    for i in (0, 1):
        s = n.inputs[i].node
        if s.op == "sigmoid" and s.inputs[0] == n.inputs[1 - i]:
            try:
                return match_silu(s, ctx)[0]
            except MatchFail:
                return None
    return None


class GatedMlpRule(Rule):
    """Report: is ``silu(gate) * up`` in its fused form (one merged gate/up matmul)?"""

    name = "gated_mlp"
    place = "gated_mlp"
    place_title = "SiLU-gated MLPs (silu(gate) * up)"
    anchors = frozenset({"mul"})
    pass_name = "silu_fusion"

    def match(self, n: Node, ctx: MatchContext) -> Match | MatchFail | None:
        for i in (0, 1):
            up = n.inputs[1 - i]
            gate = silu_input(n.inputs[i], ctx)
            if gate is not None and const_array(up) is None:
                return gated_mlp_form(n, gate, up)
        return None


class SiluFusion(RewritePass):
    """Fuse x * sigmoid(x) into ``silu``; report SiLU-gated MLPs."""

    name = "silu_fusion"
    rules = (SiluRule(), GatedMlpRule())

