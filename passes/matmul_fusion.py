"""Merge matmuls that share their input and have constant weights into one matmul + split.

Group: the matmuls ``matmul(x, W_i)`` reading one value ``x`` whose weights ``W_i`` are constant
2-D [K, N_i] (Q/K/V projections, gate/up of a gated MLP; widths may differ, as for GQA's K/V). A
bias epilogue ``add(matmul(x, W_i), b_i)`` with a constant [N_i] bias is merged too (members
without a bias get zeros). The merged form, built by ``merge_parallel.merge_matmuls`` (the one
implementation the search's ``merge_matmul_shared_lhs`` uses too), is

    y = matmul(x, concat(W_i, axis=1)) [+ concat(b_i)] ;  y_1..y_n = split(y, axis=-1)

``MatmulGroupRule`` is the rule (place "matmul_group", anchored at the first matmul of a group):
the cost model of the target (``graphopt.cost.model.CostModel``; the pass's ``target`` option)
prices both forms of the group as small graphs, and the group is merged only when the merged
form is cheaper (``force``: always); each group is reported with both estimates. Activation
epilogues stay after the split (the runtime fuses them into each piece). The accepted forms are
stated in ``rules/matmul_fusion.rules``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.node import ConstData, Node, Value, constant, input_node
from graphopt.ir.types import TensorType
from graphopt.rewrite.context import MatchContext, const_array
from graphopt.rewrite.match import Match, MatchFail, fail
from graphopt.rewrite.passes import RewritePass, Stats
from graphopt.rewrite.rule import Rule
from graphopt.rewrite.trace import Candidate

from .merge_parallel import merge_matmuls

RULE = "matmul_fusion"


@dataclass
class Member:
    mm: Node
    weight: np.ndarray  # [K, N]
    bias_add: Node | None = None
    bias: np.ndarray | None = None  # [N]

    @property
    def out(self) -> Value:
        return (self.bias_add if self.bias_add is not None else self.mm).out

    @property
    def width(self) -> int:
        return int(self.weight.shape[1])


@dataclass
class Group:
    x: Value
    members: list[Member]

    def describe(self) -> str:
        biased = sum(1 for m in self.members if m.bias is not None)
        return (f"{len(self.members)} matmuls ({biased} with bias), widths "
                f"{[m.width for m in self.members]}")


def _readers(x: Value, ctx: MatchContext) -> list[Node]:
    """The matmuls reading ``x`` as their left operand, each once, in graph order."""
    mms = {id(u): u for u, pos in ctx.users_of(x.node)
           if u.op == "matmul" and pos == 0 and u.inputs[0].index == x.index}
    return sorted(mms.values(), key=lambda u: ctx.position[id(u)])


def _bias_of(mm: Node, ctx: MatchContext, n_out: int) -> tuple[Node, np.ndarray] | None:
    us = ctx.users_of(mm)
    if len(us) != 1:
        return None
    add, pos = us[0]
    if add.op != "add" or pos < 0:
        return None
    b = const_array(add.inputs[1 - pos])
    if b is None or b.size != n_out or (b.ndim and b.shape[-1] != n_out):
        return None
    if add.out_types[0] != mm.out_types[0]:
        return None
    return add, b.reshape(n_out)


def group_at(n: Node, ctx: MatchContext) -> Group | None:
    """The group of matmuls sharing the left operand of matmul ``n`` when ``n`` is the first of
    them (None: ``n`` reads its input alone, or the group is another matmul's place). Raises
    MatchFail when fewer than two of them can merge."""
    x = n.inputs[0]
    readers = _readers(x, ctx)
    if len(readers) < 2 or readers[0] is not n:
        return None
    members: list[Member] = []
    why: list[MatchFail] = []  # (MatchFail is falsy: kept in a list, not or-ed)
    for mm in readers:
        w = const_array(mm.inputs[1])
        if w is None:
            why.append(fail("weight is not a constant", mm.inputs[1]))
        elif w.ndim != 2:
            why.append(fail(f"weight has rank {w.ndim}, not 2", mm))
        else:
            members.append(Member(mm, w))
    if len(members) < 2:
        raise why[0] if why else fail("fewer than two constant-weight matmuls", n)
    if len({m.weight.dtype for m in members}) != 1 or len({m.weight.shape[0]
                                                           for m in members}) != 1:
        raise fail("weights differ in dtype or input width", members[1].mm)
    for m in members:
        b = _bias_of(m.mm, ctx, m.width)
        if b is not None:
            m.bias_add, m.bias = b
    return Group(x, members)


def merged(x: Value, members: Sequence[Member], fold: bool = True) -> list[Value]:
    """The merged form of ``members`` over ``x`` (one value per member)."""
    origin = members[0].mm.origin
    return merge_matmuls(
        x, [constant(ConstData(m.weight), origin=origin) for m in members],
        [None if m.bias is None else constant(ConstData(m.bias), origin=origin)
         for m in members], origin, fold)


def _separate(x: Value, members: Sequence[Member]) -> list[Value]:
    outs = []
    for m in members:
        y = Node.build("matmul", (x, constant(ConstData(m.weight))), {}).out
        if m.bias is not None:
            y = Node.build("add", (y, constant(ConstData(m.bias))), {}).out
        outs.append(y)
    return outs


def group_costs(grp: Group, device: str) -> tuple[float, float]:
    """Estimated seconds of (separate, merged) forms of the group on ``device``."""
    from graphopt.cost.model import CostModel

    t = grp.x.type
    assert isinstance(t, TensorType)
    xin = input_node("x", t)
    cm = CostModel(device)
    return (cm(Graph([xin], _separate(xin.out, grp.members))),
            cm(Graph([xin], merged(xin.out, grp.members))))


class MatmulGroupRule(Rule):
    """Constant-weight matmuls sharing an input (and their constant bias adds) -> one matmul
    (+ add) and a split, where the target's cost model says the merged form is faster."""

    name = RULE
    place = "matmul_group"
    place_title = "matmul groups (shared input, constant weights)"
    anchors = frozenset({"matmul"})
    pass_name = RULE

    def match(self, n: Node, ctx: MatchContext) -> Match | MatchFail | None:
        grp = group_at(n, ctx)
        if grp is None:
            return None
        target = ctx.option("target", "cpu")
        sep, mer = group_costs(grp, target)
        what = (f"{grp.describe()}; cost {sep * 1e6:.1f}us -> {mer * 1e6:.1f}us on {target}")
        if not (mer < sep or ctx.option("force", False)):
            return fail(f"cost model: merged form is not faster ({what})", grp.members[0].mm)
        return Match(values={"x": grp.x}, roots=[m.out for m in grp.members], data=grp,
                     detail=what)

    def build(self, m: Match) -> list[Value]:
        grp: Group = m.data
        return merged(m.tr(grp.x), grp.members)


class MatmulFusion(RewritePass):
    """Merge constant-weight matmuls that share an input when the cost model of ``device`` says
    so (``force``: always, for tests and explicit requests)."""

    name = RULE
    rules = (MatmulGroupRule(),)

    def __init__(self, device: str = "cpu", force: bool = False) -> None:
        super().__init__(options={"target": device, "force": force})
        self.device = device
        self.force = force

    def summarize(self, before: Graph, after: Graph, candidates: Sequence[Candidate]
                  ) -> Stats:
        # each merged group of k matmuls leaves one: k = (matmuls removed) + (groups merged)
        groups = sum(1 for c in candidates if c.matched)
        removed = sum(n.op == "matmul" for n in before.nodes) - sum(
            n.op == "matmul" for n in after.nodes)
        return {"matmuls_merged": removed + groups}


class MatmulMerge(MatmulFusion):
    """Every matmul group merged, the cost model's decision aside: ``MatmulFusion(force=True)``
    under a name of its own for ``pass_by_name``, which replays the rules stated at sizes too
    small for the cost model to merge them."""

    name = "matmul_merge"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device, force=True)
