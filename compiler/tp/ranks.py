"""Between the global view and the ranks' programs.

``project(g, rank)``: rank ``rank``'s program from a sharded graph in the collectives' global
view. The walk starts at the outputs (which every rank computes); at a collective it goes into
the rank's own operand only, and the collective becomes its rank view (one operand, calling
``torch.distributed``); ``shard`` over a constant is folded, so the program holds only its
blocks of the weights. Reading another rank's block is an error (a plan bug, never silent).

``merge(programs)``: the inverse, for the check: the ranks' programs joined into one graph in
the global view, their collectives paired in the order each program issues them (as a process
group pairs them), so the check runs exactly the programs that are written.
"""
from __future__ import annotations

import sys
from typing import Sequence

import numpy as np

from ..errors import GraphOptError
from ..ir.graph import Graph
from ..ir.node import ConstData, Node, Value
from ..ops.collectives import Shard

COLLECTIVES = frozenset({"all_reduce", "all_gather", "reduce_scatter"})


def is_global(n: Node) -> bool:
    """A collective in the global view (one operand per rank)."""
    return n.op in COLLECTIVES and len(n.inputs) == n.attrs["world_size"]


def _fold_shard(n: Node) -> Node:
    src = n.inputs[0].node
    arr = np.asarray(src.attrs["data"].array)
    sl = [slice(None)] * arr.ndim
    sl[n.attrs["axis"]] = Shard.block(n.attrs, arr.shape[n.attrs["axis"]])
    block = arr[tuple(sl)]
    if 0 not in arr.strides:  # a broadcast (shape-only) weight stays a view: nothing to copy
        block = np.ascontiguousarray(block)
    return Node.build("constant", [], {"data": ConstData(block)}, src.origin)


def project(g: Graph, rank: int, world: int) -> Graph:
    """Rank ``rank``'s program (see the module doc)."""
    memo: dict[int, Node] = {}
    order = g.nodes  # topological: inputs first

    for n in order:
        if n.op in ("input", "constant"):
            memo[id(n)] = n
    # only the nodes rank ``rank`` computes: walk back from the outputs
    needed: set[int] = set()
    stack = [v.node for v in g.outputs]
    while stack:
        n = stack.pop()
        if id(n) in needed:
            continue
        needed.add(id(n))
        if is_global(n):
            stack.append(n.inputs[rank].node)
        else:
            stack.extend(v.node for v in n.inputs)

    def val(v: Value, reader: Node) -> Value:
        src = v.node
        if is_global(src) and src.op == "reduce_scatter" and v.index != rank:
            raise GraphOptError(f"rank {rank} reads rank {v.index}'s block of a reduce-scatter",
                                where=reader.where)
        nn = memo[id(src)]
        return Value(nn, 0 if is_global(src) and src.op == "reduce_scatter" else v.index)

    for n in order:
        if id(n) not in needed or id(n) in memo:
            continue
        if n.op == "shard" and n.attrs["rank"] != rank:
            raise GraphOptError(f"rank {rank}'s program reads rank {n.attrs['rank']}'s block "
                                f"(a sharding plan error)", where=n.where)
        if is_global(n):
            op_in = val(n.inputs[rank], n)
            memo[id(n)] = Node.build(n.op, [op_in], n.attrs, n.origin)
        elif n.op == "shard" and n.inputs[0].node.op == "constant":
            memo[id(n)] = _fold_shard(n)
        else:
            memo[id(n)] = Node.build(n.op, [val(v, n) for v in n.inputs], n.attrs, n.origin)
    outs = [val(v, v.node) for v in g.outputs]
    return Graph(list(g.inputs), outs, g.output_names, f"{g.name}.rank{rank}", meta=g.meta)


def collectives(g: Graph) -> list[Node]:
    """The collectives of a rank's program in the order it issues them."""
    return [n for n in g.nodes if n.op in COLLECTIVES]


def merge(programs: Sequence[Graph]) -> list[Graph]:
    """The ranks' programs joined in the global view: one graph per rank, over the same inputs,
    computing that rank's outputs (see the module doc). Raises when the programs issue
    different collectives in the same place of their order."""
    world = len(programs)
    calls = [collectives(p) for p in programs]
    if len({len(c) for c in calls}) != 1:
        raise GraphOptError(f"the ranks issue {[len(c) for c in calls]} collectives: a process "
                            f"group would hang", where="rank programs")
    index = [{id(n): k for k, n in enumerate(c)} for c in calls]
    for k in range(len(calls[0])):
        ns = [c[k] for c in calls]
        if len({(n.op, n.attrs) for n in ns}) != 1 or any(len(n.inputs) != 1 for n in ns):
            raise GraphOptError(
                f"collective #{k} differs between ranks ({', '.join(f'{n.op} {dict(n.attrs)}' for n in ns)})",
                where="rank programs")
        if ns[0].attrs["world_size"] != world:
            raise GraphOptError(f"collective #{k} is for {ns[0].attrs['world_size']} ranks, the "
                                f"programs are {world}", where=ns[0].where)
    inputs = {n.attrs["name"]: n for n in programs[0].inputs}
    joined: dict[int, Node] = {}  # collective index -> global node
    memo: list[dict[int, Node]] = [dict() for _ in programs]

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20 * max(len(p.nodes) for p in programs) + 1000))
    try:
        def build(r: int, n: Node) -> Node:
            hit = memo[r].get(id(n))
            if hit is not None:
                return hit
            if n.op == "input":
                name = n.attrs["name"]
                if name not in inputs or inputs[name].out_types != n.out_types:
                    raise GraphOptError(f"rank {r}'s input {name} differs from rank 0's",
                                        where="rank programs")
                out = inputs[name]
            elif n.op in COLLECTIVES:
                k = index[r][id(n)]
                out = joined.get(k)
                if out is None:
                    vals = [value(q, calls[q][k].inputs[0]) for q in range(world)]
                    out = joined[k] = Node.build(n.op, vals, n.attrs, n.origin)
            else:
                out = Node.build(n.op, [value(r, v) for v in n.inputs], n.attrs, n.origin)
            memo[r][id(n)] = out
            return out

        def value(r: int, v: Value) -> Value:
            """Rank r's value ``v`` in the global view (its block of a reduce-scatter)."""
            out = build(r, v.node)
            return Value(out, r if v.node.op == "reduce_scatter" else v.index)

        return [Graph(list(inputs.values()), [value(r, v) for v in p.outputs], p.output_names,
                      f"merged.rank{r}", meta=p.meta) for r, p in enumerate(programs)]
    finally:
        sys.setrecursionlimit(limit)
