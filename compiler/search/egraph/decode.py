"""A choice of one e-node per e-class -> a graphopt ``Graph``: nodes are rebuilt with
``Node.build`` (which infers their types again), leaves come from the encoder's side table,
dim-valued attrs have their symbolic dims mapped back."""
from __future__ import annotations

from collections import Counter

from ...errors import GraphOptError
from ...ir.graph import Graph
from ...ir.node import Node, Value
from .encode import Encoded
from .saturate import Saturated, build
from .view import Choice


def decode(choice: Choice, sat: Saturated, enc: Encoded) -> Graph:
    """The graph ``choice`` picks from ``sat`` (same inputs, output names and meta as the
    encoded graph). Raises GraphOptError when the choice misses a class or is cyclic."""
    return decode_reached(choice, sat, enc)[0]


def decode_reached(choice: Choice, sat: Saturated, enc: Encoded) -> tuple[Graph, Choice]:
    """``decode``, and the part of ``choice`` the graph reached (the root included)."""
    built: dict[str, "Value | Node"] = {}
    on_path: set[str] = set()

    def value(cls: str) -> "Value | Node":
        if cls in built:
            return built[cls]
        if cls in on_path:
            raise GraphOptError(f"e-graph choice is cyclic at class {cls}",
                                where="egraph decode")
        if cls not in choice:
            raise GraphOptError(f"e-graph choice has no e-node for class {cls}",
                                where="egraph decode")
        on_path.add(cls)
        i = choice[cls]
        t = sat.terms[(cls, i)]
        kids = sat.view.classes[cls][i].children
        out: Value | Node
        if t.kind == "leaf":
            out = enc.leaves[t.index]
        elif t.kind == "out":
            parent = value(kids[0])
            if not isinstance(parent, Node):
                raise GraphOptError(f"Out of a non-node class {kids[0]}", where="egraph decode")
            out = Value(parent, t.index)
        elif t.kind == "op":
            ins = []
            for k in kids:
                v = value(k)
                if not isinstance(v, Value):
                    raise GraphOptError(f"{t.op} reads a multi-output class {k}",
                                        where="egraph decode")
                ins.append(v)
            n = build(t, ins, enc)
            from .encode import multi

            out = n if multi(n) else n.out
        else:
            raise GraphOptError(f"root class {cls} read as a value", where="egraph decode")
        on_path.discard(cls)
        built[cls] = out
        return out

    import sys

    root = sat.view.roots[0]
    t = sat.terms[(root, choice[root])]
    kids = sat.view.classes[root][choice[root]].children
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 20000))
    try:
        outs = [value(k) for k in kids]
    finally:
        sys.setrecursionlimit(old)
    assert t.kind == "root"
    if not all(isinstance(v, Value) for v in outs):
        raise GraphOptError("a graph output decodes to a multi-output node", where="egraph decode")
    g = enc.graph
    reached = {c: choice[c] for c in built}
    reached[root] = choice[root]
    return Graph(g.inputs, outs, g.output_names, g.name, g.meta), reached  # type: ignore


def rules_used(choice: Choice, sat: Saturated) -> dict[str, int]:
    """Rules behind the chosen e-nodes, with counts: a chosen e-node in a class a rule unioned
    a node of that constructor into (``made``), when it is not an e-node of the input graph.
    (A class several rules fed with the same constructor is credited to one of them: a
    hand-written rule first, else the first by name; the counts are approximate.)"""
    used: Counter[str] = Counter()
    for cls, i in choice.items():
        by = sat.made.get(cls)
        if not by:
            continue
        label = sat.view.classes[cls][i].op
        if (cls, i) in sat.original:
            continue
        # a hand-written rule's name has no '-' (generated ones are '<family>-<hash>'):
        # credited first, since generated reshuffles re-derive what merges made
        names = sorted((r for r, c in by if c == label), key=lambda r: ("-" in r, r))
        if names:
            used[names[0]] += 1
    return dict(used)
