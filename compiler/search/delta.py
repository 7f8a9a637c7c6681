"""Pricing a rewrite by the part of the graph it touches, before the rewritten graph is built:
the search queues candidates by this estimate and costs a graph in full only when it leaves the
queue."""
from __future__ import annotations

from typing import Any, Sequence

from ..ir.graph import toposort
from ..ir.node import Node, Value
from ..rewrite.match import Match


def local_delta(model: Any, m: Match, mapping: dict[Value, Value], pos: dict[int, int],
                users: dict[Node, list[tuple[Node, int]]], graph_outs: set[tuple[int, int]],
                down: int = 2, memo: dict[tuple, float] | None = None) -> float:
    """Cost change of a rewrite, from the part of the graph it touches: the matched nodes, the
    producers of their inputs and the users of the replaced values ``down`` levels deep, before
    and after (rebuilt over the new values). Fusion decisions further away are assumed
    unchanged, so this is an estimate; the search costs a graph in full before keeping it."""
    part: dict[int, Node] = {}
    for n in m.nodes.values():
        part[id(n)] = n
        for v in n.inputs:
            p = v.node
            if p.op not in ("input", "constant"):
                part[id(p)] = p
    frontier = [k.node for k in mapping]
    for _ in range(down):
        nxt = []
        for n in frontier:
            for u, _ in users.get(n, ()):
                if id(u) not in part:
                    part[id(u)] = u
                    nxt.append(u)
        frontier = nxt
    before = sorted(part.values(), key=lambda n: pos[id(n)])
    escaping: list[Value] = []
    for n in before:
        us = users.get(n, ())
        for i in range(len(n.out_types)):
            if (id(n), i) in graph_outs or any(id(u) not in part and u.inputs[j].index == i
                                               for u, j in us):
                escaping.append(Value(n, i))
    key = None
    if memo is not None:
        # the same rewrite of the same neighbourhood (a sibling graph) has the same delta
        key = (tuple(id(n) for n in before), tuple((id(v.node), v.index) for v in escaping),
               tuple((id(k.node), k.index, id(v.node), v.index) for k, v in mapping.items()))
        hit = memo.get(key)
        if hit is not None:
            return hit
    t_before = model.nodes_time(before, escaping)
    # after: the users in the part rebuilt over the new values
    env: dict[tuple[int, int], Value] = {(id(k.node), k.index): v for k, v in mapping.items()}
    for n in before:
        if any((id(v.node), v.index) in env for v in n.inputs):
            nn = n.with_inputs([env.get((id(v.node), v.index), v) for v in n.inputs])
            for i in range(len(n.out_types)):
                env.setdefault((id(n), i), Value(nn, i))
    after_outs = [env.get((id(v.node), v.index), v) for v in escaping]
    after = _part_nodes(after_outs, part, pos)
    delta = model.nodes_time(after, after_outs) - t_before
    if key is not None:
        memo[key] = delta
        # the key holds ids: keep the nodes alive while the memo lives
        memo[("keep", key)] = (before, list(mapping.values()))  # type: ignore[assignment]
    return delta


def _part_nodes(outs: Sequence[Value], part: dict[int, Node], pos: dict[int, int]) -> list[Node]:
    """Nodes computing ``outs`` inside the part: nodes of ``part`` and new nodes (not in the old
    graph), in topological order; anything else is outside."""
    return toposort((v.node for v in outs),
                    keep=lambda n: id(n) in part or id(n) not in pos)
