"""Merge matmuls that share their input and have constant weights into one matmul + split.

Group: the users ``matmul(x, W_i)`` of one value ``x`` whose weights ``W_i`` are constant 2-D
[K, N_i] (Q/K/V projections, gate/up of a gated MLP; widths may differ, as for GQA's K/V). A
bias epilogue ``add(matmul(x, W_i), b_i)`` with a constant [N_i] bias is merged too (members
without a bias get zeros). The merged form is

    y = matmul(x, concat(W_i, axis=1)) [+ concat(b_i)] ;  y_1..y_n = split(y, axis=-1)

The cost model (``graphopt.cost.model.CostModel`` for the target device) prices both forms of
the group as small graphs and the merge is made only when it is cheaper; otherwise the group is
reported as not fused with the two estimates. Activation epilogues stay after the split (the
runtime fuses them into each piece).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.node import ConstData, Node, Value, constant, input_node
from graphopt.ir.types import TensorType
from graphopt.rewrite.passes import Pass, PassResult

from .cleanup import const_array
from .fusion_report import Candidate, add_notes, rebuild

RULE = "matmul_fusion"


@dataclass
class Member:
    mm: Node
    weight: np.ndarray  # [K, N]
    bias_add: Node | None = None
    bias: np.ndarray | None = None

    @property
    def out(self) -> Node:
        return self.bias_add if self.bias_add is not None else self.mm


@dataclass
class Group:
    x: Value
    members: list[Member]


def _bias_of(mm: Node, users: dict[Node, list[tuple[Node, int]]], n_out: int
             ) -> tuple[Node, np.ndarray] | None:
    us = users.get(mm, [])
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


def find_groups(g: Graph) -> tuple[list[Candidate], list[Group]]:
    """Candidate groups (values read by two or more matmuls) and the mergeable ones."""
    from .attention_flash import users_with_outputs

    users = users_with_outputs(g)
    cands: list[Candidate] = []
    groups: list[Group] = []
    for n in g.nodes:
        mms = [u for u, pos in users.get(n, []) if u.op == "matmul" and pos == 0
               and u.inputs[0].node is n]
        by_index: dict[int, list[Node]] = {}
        for u in mms:
            by_index.setdefault(u.inputs[0].index, []).append(u)
        for idx, group in by_index.items():
            group = list(dict.fromkeys(group))
            if len(group) < 2:
                continue
            x = Value(n, idx)
            members: list[Member] = []
            fail: tuple[str, Node] | None = None
            for mm in group:
                w = const_array(mm.inputs[1])
                if w is None:
                    fail = ("weight is not a constant", mm.inputs[1].node)
                    continue
                if w.ndim != 2:
                    fail = (f"weight has rank {w.ndim}, not 2", mm)
                    continue
                members.append(Member(mm, w))
            if len(members) < 2:
                reason, node = fail or ("fewer than two constant-weight matmuls", n)
                cands.append(Candidate("matmul_group", RULE, n, False, reason, node))
                continue
            dts = {m.weight.dtype for m in members}
            ks = {m.weight.shape[0] for m in members}
            if len(dts) != 1 or len(ks) != 1:
                cands.append(Candidate("matmul_group", RULE, n, False,
                                       "weights differ in dtype or input width", members[1].mm))
                continue
            for m in members:
                b = _bias_of(m.mm, users, m.weight.shape[1])
                if b is not None:
                    m.bias_add, m.bias = b
            groups.append(Group(x, members))
    return cands, groups


def _merged(x: Value, members: Sequence[Member], like: Node) -> list[Value]:
    w = np.concatenate([m.weight for m in members], axis=1)
    y = Node.build("matmul", (x, constant(ConstData(w), origin=like.origin)), {},
                   like.origin).out
    if any(m.bias is not None for m in members):
        b = np.concatenate([m.bias if m.bias is not None else
                            np.zeros(m.weight.shape[1], m.weight.dtype) for m in members])
        y = Node.build("add", (y, constant(ConstData(b.astype(w.dtype)), origin=like.origin)),
                       {}, like.origin).out
    rank = len(y.type.shape)  # type: ignore[union-attr]
    sizes = tuple(int(m.weight.shape[1]) for m in members)
    return list(Node.build("split", (y,), {"axis": rank - 1, "sizes": sizes},
                           like.origin).outputs)


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
    sep = Graph([xin], _separate(xin.out, grp.members))
    mer = Graph([xin], _merged(xin.out, grp.members, grp.members[0].mm))
    return cm(sep), cm(mer)


class MatmulFusion(Pass):
    """Merge constant-weight matmuls that share an input when the cost model says so."""

    name = "matmul_fusion"

    def __init__(self, device: str = "cpu", force: bool = False) -> None:
        self.device = device
        self.force = force  # merge without asking the cost model (tests, explicit requests)

    def candidates(self, g: Graph) -> tuple[list[Candidate], list[Group]]:
        cands, groups = find_groups(g)
        chosen: list[Group] = []
        for grp in groups:
            anchor = grp.x.node
            sep, mer = group_costs(grp, self.device)
            what = (f"{len(grp.members)} matmuls, widths "
                    f"{[int(m.weight.shape[1]) for m in grp.members]}; cost {sep * 1e6:.1f}us "
                    f"-> {mer * 1e6:.1f}us on {self.device}")
            if mer < sep or self.force:
                chosen.append(grp)
                cands.append(Candidate("matmul_group", RULE, anchor, True, detail=what))
            else:
                cands.append(Candidate("matmul_group", RULE, anchor, False,
                                       f"cost model: merged form is not faster ({what})",
                                       grp.members[0].mm))
        return cands, chosen

    def run(self, g: Graph) -> PassResult:
        cands, chosen = self.candidates(g)
        builders: dict[int, Callable] = {}
        for grp in chosen:
            cache: dict[str, list[Value]] = {}

            def piece(tr: Callable[[Value], Value], i: int, grp: Group = grp,
                      cache: dict[str, list[Value]] = cache) -> tuple[Value, ...]:
                if "outs" not in cache:
                    cache["outs"] = _merged(tr(grp.x), grp.members, grp.members[0].mm)
                return (cache["outs"][i],)

            for i, m in enumerate(grp.members):
                builders[id(m.out)] = (lambda i, f: lambda tr: f(tr, i))(i, piece)
        out = rebuild(g, builders) if builders else g
        stats: dict[str, object] = {
            "matmul_groups_fused": len(chosen),
            "matmuls_merged": sum(len(grp.members) for grp in chosen),
            "matmul_groups_not_fused": sum(1 for c in cands if not c.fused)}
        add_notes(stats, cands)
        return PassResult(out, bool(chosen), stats)
