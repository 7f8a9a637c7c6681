"""IR verifier: re-checks every node's types and the graph's structure.

Errors show the node, op, types, origin and a few lines of IR around it."""
from __future__ import annotations

from ..errors import GraphOptError, VerifyError
from .graph import Graph
from .node import Node
from .text import node_line, value_names


def context_lines(g: Graph, culprit: Node, radius: int = 3) -> str:
    names = value_names(g)
    nodes = [n for n in g.nodes if n.op != "input"]
    try:
        i = nodes.index(culprit)
    except ValueError:
        return ""
    out = []
    for j in range(max(0, i - radius), min(len(nodes), i + radius + 1)):
        mark = ">>" if j == i else "  "
        out.append(f"{mark} {node_line(nodes[j], names, None, 4)}")
    return "\n".join(out)


def verify(g: Graph) -> None:
    """Raise VerifyError on the first inconsistency."""
    from ..ops.registry import get_op

    inputs = set(id(n) for n in g.inputs)
    for n in g.nodes:
        if n.op == "input":
            if id(n) not in inputs:
                raise VerifyError(f"input {n.attrs['name']!r} is used but is not a graph input",
                                  where=f"node input #{n.uid}", context=context_lines(g, n))
            continue
        try:
            types = get_op(n.op).checked_infer(tuple(v.type for v in n.inputs), n.attrs, n.origin)
        except GraphOptError as e:
            raise VerifyError(e.message, where=n.where, context=context_lines(g, n)) from e
        if tuple(types) != n.out_types:
            raise VerifyError(
                f"stored types {', '.join(map(str, n.out_types))} differ from inferred "
                f"{', '.join(map(str, types))}", where=n.where, context=context_lines(g, n))
        for v in n.inputs:
            if v.index >= len(v.node.out_types):
                raise VerifyError(f"reads output {v.index} of {v.node.op}, which has "
                                  f"{len(v.node.out_types)}", where=n.where,
                                  context=context_lines(g, n))
    names = g.output_names
    if len(set(names)) != len(names):
        raise VerifyError(f"duplicate output names {list(names)}", where=f"graph {g.name}")
