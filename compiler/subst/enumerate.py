"""Step 1 of TASO's Algorithm 1: enumeration of every acyclic graph of up to k ops.

Graphs are built level by level (all graphs of n ops, then n+1), so when a node is built the
fewest ops any graph computes its value with is already known: a graph with a non-minimal value
is recorded (it is the left side of "this equals something smaller") but never extended, since
every graph reading that value is a rule derivable from a smaller one. The last op added must
read one of the graph's sinks (no unions of unrelated parts).

A graph is a set of op nodes over the scenario's inputs; its outputs are its sinks (op outputs no
op of the graph reads). Nodes are hash-consed IR nodes, so "duplicated computation" (the same op
on the same inputs twice) is simply a node already in the set, and each distinct node is built,
type-checked and fingerprinted once however many graphs contain it. Commutative ops only take
their inputs in one order. Each set of nodes is expanded once, whatever order it was built in.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from ..errors import GraphOptError
from ..ir.graph import Graph
from ..ir.node import Attrs, Node, Value, input_node
from ..ir.types import TensorType
from . import fingerprint as fpr
from ..rewrite.dims import DimExpr, representable

# sizes the fingerprints are computed at (small, distinct per variable)
FP_DIMS: dict[str, int] = {"a": 3, "b": 4, "c": 5, "d": 2, "e": 3, "f": 2}
from .scenario import Scenario


@dataclass(frozen=True)
class GraphRec:
    """One enumerated graph: its op nodes (ids) and its outputs (value ids, in hash order)."""

    nodes: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass
class EnumStats:
    graphs: int = 0  # graphs recorded (at most max_outputs outputs)
    states: int = 0  # distinct node sets visited
    nodes: int = 0  # distinct op nodes built
    invalid: int = 0  # op applications rejected by shape inference
    renamed: int = 0  # graphs skipped as input renamings of recorded ones
    seconds: float = 0.0
    by_ops: dict[int, int] = field(default_factory=dict)


class Enumerator:
    """Enumerates one scenario and buckets its graphs by fingerprint."""

    def __init__(self, scenario: Scenario, max_ops: int, seed: int = 0, samples: int = 3,
                 progress: Callable[[str], None] | None = None) -> None:
        from ..ops.registry import get_op

        self.sc = scenario
        self.max_ops = max_ops
        self.progress = progress
        for spec in scenario.ops:
            if not get_op(spec.op).fingerprinted:  # (get_op fails early on an unknown op)
                raise GraphOptError(f"scenario {scenario.name}: op {spec.op!r} has no fingerprint "
                                    f"semantics", where=f"op {spec.op} (OpDef.fingerprint)")
        # per scenario op: its operands commute (enumerate each unordered pair once)
        self.commutes = [get_op(spec.op).commutative for spec in scenario.ops]
        rng = np.random.default_rng(seed)
        self.samples = samples
        self.values: list[Value] = []
        self.vtype: list[TensorType] = []
        self.vfp: list[tuple[np.ndarray, ...]] = []  # one residue array per sample
        self.vhash: list[int] = []
        self.best: dict[int, int] = {}  # value hash -> fewest ops computing it
        self.vnode: list[int] = []  # producing op node id, -1 for graph inputs
        self.input_nodes: list[Node] = []
        # fingerprints are computed at small sizes (types are checked at the stored instance)
        self.fp_env: dict[str, int] = dict(FP_DIMS)
        self.fp = fpr.ModPrimeInterpreter(samples, self.fp_env)  # evaluates one node at a time
        for name, t in scenario.input_types():
            n = input_node(name, t)
            self.input_nodes.append(n)
            small = self.fp_shape(t)
            self._add_value(n.out, tuple(fpr.random_input(small, rng) for _ in range(samples)),
                            -1)
            self.best[self.vhash[-1]] = 0
        self.n_inputs = len(self.values)
        self.nodes: list[Node] = []
        self.node_ins: list[tuple[int, ...]] = []
        self.node_outs: list[tuple[int, ...]] = []
        self.node_cone: list[frozenset[int]] = []  # the node and every op node it depends on
        self.node_canonical: list[bool] = []  # no enumerated graph computes its value cheaper
        self._memo: dict[tuple, int] = {}
        self._attr_cache: dict[tuple, list[Attrs]] = {}
        self.buckets: dict[tuple[int, ...], list[GraphRec]] = {}
        self.stats = EnumStats()
        self._max_arity = max(s.arity for s in scenario.ops)
        # symmetry breaking: inputs of one type are used as a prefix (x; x,y; x,y,z; never y alone)
        self._prev_same: dict[int, int] = {}
        for i in range(self.n_inputs):
            for j in range(i - 1, -1, -1):
                if self.vtype[j] == self.vtype[i]:
                    self._prev_same[i] = j
                    break

    def fp_shape(self, t: TensorType) -> tuple[int, ...]:
        """A stored-instance shape at the fingerprint sizes."""
        return tuple(int(DimExpr.of(d).eval(self.fp_env)) for d in t.shape)  # type: ignore

    # ---- values and nodes ------------------------------------------------------------------
    def _add_value(self, v: Value, fp: tuple[np.ndarray, ...], node_id: int) -> int:
        self.values.append(v)
        self.vtype.append(v.type)  # type: ignore[arg-type]
        self.vfp.append(fp)
        self.vhash.append(fpr.digest(fp))
        self.vnode.append(node_id)
        return len(self.values) - 1

    def _attrs(self, si: int, ins: tuple[int, ...]) -> list[Attrs]:
        key = (si, tuple(self.vtype[i] for i in ins))
        got = self._attr_cache.get(key)
        if got is None:
            got = [Attrs(a) for a in self.sc.ops[si].attrs(key[1])]
            self._attr_cache[key] = got
        return got

    def _node(self, si: int, ins: tuple[int, ...], attrs: Attrs) -> int:
        key = (si, ins, attrs)
        nid = self._memo.get(key)
        if nid is not None:
            return nid
        spec = self.sc.ops[si]
        try:
            node = Node.build(spec.op, [self.values[i] for i in ins], attrs)
        except GraphOptError:
            self._memo[key] = -1
            self.stats.invalid += 1
            return -1
        types = node.out_types
        if any(not isinstance(t, TensorType) or t.shape is None or
               any(not isinstance(d, int) or (d > 0 and not representable(d)) or d == 0
                   for d in t.shape) for t in types):
            self._memo[key] = -1
            self.stats.invalid += 1
            return -1
        fps = self.fp.run_node(node, [self.vfp[i] for i in ins])
        nid = len(self.nodes)
        self.nodes.append(node)
        self.node_ins.append(ins)
        vids = tuple(self._add_value(Value(node, k), fps[k], nid) for k in range(len(types)))
        self.node_outs.append(vids)
        cone = {nid}
        for i in ins:
            if self.vnode[i] >= 0:
                cone |= self.node_cone[self.vnode[i]]
        self.node_cone.append(frozenset(cone))
        canonical = True
        for v in vids:
            h = self.vhash[v]
            b = self.best.get(h)
            if b is not None and b < len(cone):
                canonical = False
            elif b is None or len(cone) < b:
                self.best[h] = len(cone)
        self.node_canonical.append(canonical)
        self._memo[key] = nid
        self.stats.nodes += 1
        return nid

    # ---- enumeration -----------------------------------------------------------------------
    def run(self) -> "Enumerator":
        t0 = time.perf_counter()
        # graphs of no ops: one input, or two inputs (the right-hand side of e.g. split(concat))
        for i in range(self.n_inputs):
            self._record((), (i,))
        if self.sc.max_outputs >= 2:
            for i, j in itertools.combinations(range(self.n_inputs), 2):
                self._record((), (i, j))
        # level by level, so the fewest ops computing a value is known before it is needed
        frontier: list[tuple[int, ...]] = [()]
        for level in range(self.max_ops):
            nxt: list[tuple[int, ...]] = []
            seen: set[tuple[int, ...]] = set()
            for nodes in frontier:
                self._expand(nodes, level, seen, nxt)
            if self.progress:
                self.progress(f"{self.sc.name}: {level + 1} ops: {len(seen)} graphs, "
                              f"{len(nxt)} to expand, {self.stats.nodes} ops built")
            frontier = nxt
        self.stats.seconds = time.perf_counter() - t0
        return self

    def _combos(self, avail: list[int], arity: int, commutative: bool) -> Iterator[tuple[int, ...]]:
        if arity == 1:
            return ((v,) for v in avail)
        if commutative:
            return itertools.combinations_with_replacement(avail, arity)
        return itertools.product(avail, repeat=arity)

    def _expand(self, nodes: tuple[int, ...], depth: int, seen: set[tuple[int, ...]],
                nxt: list[tuple[int, ...]]) -> None:
        avail = list(range(self.n_inputs)) + [v for n in nodes for v in self.node_outs[n]]
        last = depth + 1 == self.max_ops
        # the last op must read a sink of the graph: otherwise the graph is a union of two
        # unrelated parts (never both sides of a new rule)
        need = set(self._sinks(nodes)) if (last and nodes) else None
        for si, spec in enumerate(self.sc.ops):
            for ins in self._combos(avail, spec.arity, self.commutes[si]):
                if need is not None and need.isdisjoint(ins):
                    continue
                for attrs in self._attrs(si, ins):
                    nid = self._node(si, ins, attrs)
                    if nid < 0 or nid in nodes:
                        continue
                    new = tuple(sorted(nodes + (nid,)))
                    if new in seen:
                        continue
                    seen.add(new)
                    self.stats.states += 1
                    sinks = self._sinks(new)
                    if len(sinks) <= self.sc.max_outputs:
                        self._record(new, sinks)
                    remaining = self.max_ops - depth - 1
                    if remaining <= 0 or not self.node_canonical[nid]:
                        continue  # a graph reading a non-minimal value is never a rule side
                    if len(sinks) - remaining * (self._max_arity - 1) <= self.sc.max_outputs:
                        nxt.append(new)

    def _sinks(self, nodes: tuple[int, ...]) -> tuple[int, ...]:
        used = {v for n in nodes for v in self.node_ins[n]}
        return tuple(v for n in nodes for v in self.node_outs[n] if v not in used)

    def _record(self, nodes: tuple[int, ...], outs: tuple[int, ...]) -> None:
        used = self._used_inputs(nodes, outs)
        if any(self._prev_same.get(i, i) not in used for i in used):
            self.stats.renamed += 1
            return  # an input renaming of a graph that is recorded
        hs = [self.vhash[v] for v in outs]
        if len(set(hs)) != len(hs):
            return  # two equal outputs: the output correspondence would be ambiguous
        order = sorted(range(len(outs)), key=lambda i: hs[i])
        key = tuple(hs[i] for i in order)
        rec = GraphRec(nodes, tuple(outs[i] for i in order))
        self.buckets.setdefault(key, []).append(rec)
        self.stats.graphs += 1
        self.stats.by_ops[len(nodes)] = self.stats.by_ops.get(len(nodes), 0) + 1

    # ---- graphs out ------------------------------------------------------------------------
    def _used_inputs(self, nodes: tuple[int, ...], outs: tuple[int, ...]) -> set[int]:
        used: set[int] = set()
        for n in nodes:
            used.update(v for v in self.node_ins[n] if v < self.n_inputs)
        used.update(v for v in outs if v < self.n_inputs)
        return used

    def inputs_of(self, rec: GraphRec) -> tuple[int, ...]:
        """Graph-input value ids the graph reads (sorted)."""
        return tuple(sorted(self._used_inputs(rec.nodes, rec.outputs)))

    def cone_size(self, v: int) -> int:
        n = self.vnode[v]
        return 0 if n < 0 else len(self.node_cone[n])

    def separable(self, rec: GraphRec) -> bool:
        """Whether each output is computed by its own ops (no op shared between outputs)."""
        if len(rec.outputs) < 2:
            return False
        cones = [self._cone(v, set(rec.nodes)) for v in rec.outputs]
        for a, b in itertools.combinations(cones, 2):
            if a & b:
                return False
        return True

    def _cone(self, v: int, members: set[int]) -> set[int]:
        out: set[int] = set()
        stack = [self.vnode[v]]
        while stack:
            n = stack.pop()
            if n < 0 or n in out or n not in members:
                continue
            out.add(n)
            stack.extend(self.vnode[i] for i in self.node_ins[n])
        return out

    def to_graph(self, rec: GraphRec, input_ids: tuple[int, ...], name: str) -> Graph:
        ins = [self.values[i].node for i in input_ids]
        outs = [self.values[v] for v in rec.outputs]
        return Graph(ins, outs, [f"o{i}" for i in range(len(outs))], name=name)

    def op_count(self, rec: GraphRec) -> int:
        return len(rec.nodes)


def candidate_buckets(en: Enumerator) -> Iterator[list[GraphRec]]:
    for recs in en.buckets.values():
        if len(recs) > 1:
            yield recs
