"""Applying rules to graphs. Edits are functional: the input graph is never changed.

A ``Match`` names the values it replaces in ``roots``; a match without roots says the place is
already in the form the rule wants (a report-only rule: a gated MLP whose gate and up are one
merged matmul): it is recorded as matched and nothing is rewritten.

* ``sweep``: every rule looks at every anchor of the graph as it is; each match claims its root
  nodes (a place rewritten by one rule is not rewritten by another in the same sweep: the later
  one is recorded as not matched, naming the first); then one bottom-up rebuild puts each
  match's replacement in place, built over the already rebuilt inputs (``Match.tr``). Rules of a
  sweep may read users (``MatchContext``): fusions run this way.
* ``local``: a bottom-up rebuild in which each rebuilt node is offered to the rules anchored at
  its op, again and again until none applies (at most ``max_per_node`` times): chains of local
  rewrites (canonical forms, no-op removal) settle in one pass. Local rules see the node and its
  ancestors only.
* ``matches`` / ``apply`` / ``rewrites`` / ``rewrite``: every match of one rule, one rewrite,
  every one-step rewrite, and greedy rewriting to a fixed point (tests, tools).

Every look at an anchor that a rule reports becomes a ``Candidate`` (``rewrite/trace.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

from ..ir.graph import Graph
from ..ir.node import Node, Value
from .context import MatchContext
from .match import Match, MatchFail
from .rule import Rule, _guarded
from .trace import Candidate, Tracer


@dataclass
class Outcome:
    """What a sweep or local rewrite did: the new graph, the candidates, the count of
    rewrites per rule."""

    graph: Graph
    candidates: list[Candidate] = field(default_factory=list)
    applied: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.applied)

    def count(self, name: str) -> None:
        self.applied[name] = self.applied.get(name, 0) + 1


def _anchored(r: Rule, ctx: MatchContext) -> list[Node]:
    if r.anchors is None:
        return list(ctx.graph.nodes)
    out: list[Node] = []
    for op in sorted(r.anchors):
        out.extend(ctx.by_op.get(op, ()))
    if len(r.anchors) > 1:
        out.sort(key=lambda n: ctx.position[id(n)])
    return out


def reads_replaced(reads: Iterable[Value], roots: Iterable[Value],
                   position: Mapping[int, int]) -> bool:
    """TASO's cycle check: whether the node of a value in ``reads`` depends, through its inputs,
    on one of ``roots`` (the values a rewrite replaces): the rewrite would need the old value to
    make the new one. ``position``: topological position of each node of the graph (by id); a
    node missing from it is new (built by the rewrite) and is walked too, and a node placed
    before every root cannot depend on one."""
    replaced = list(roots)
    targets = {(id(v.node), v.index) for v in replaced}
    first = min(position.get(id(v.node), 1 << 60) for v in replaced)
    stack = [v.node for v in reads]
    seen: set[int] = set()
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        p = position.get(id(n))
        if p is not None and p < first:
            continue
        for v in n.inputs:
            if (id(v.node), v.index) in targets:
                return True
            stack.append(v.node)
    return False


def sweep(g: Graph, rules: Sequence[Rule], options: Mapping[str, Any] | None = None,
          pass_name: str = "") -> Outcome:
    """Match every rule on ``g`` as it is, then rebuild once with every replacement."""
    ctx = MatchContext(g, options)
    out = Outcome(g)
    claimed: dict[int, tuple[Rule, Match]] = {}  # root node id -> the match that claimed it
    for r in rules:
        for anchor in _anchored(r, ctx):
            res = _guarded(r.match, anchor, ctx)
            if res is None:
                continue
            if isinstance(res, Match) and res.roots:  # no roots: matched, nothing to rewrite
                taken = next((claimed[id(v.node)] for v in res.roots if id(v.node) in claimed),
                             None)
                if taken is not None:
                    res = MatchFail(f"already rewritten by {taken[0].name}", res.roots[0].node)
                elif len({(id(v.node), v.index) for v in res.roots}) > 1 and reads_replaced(
                        res.values.values(), res.roots, ctx.position):
                    res = MatchFail("the replacement would read a value it replaces",
                                    res.roots[0].node)
                else:
                    for v in res.roots:
                        claimed[id(v.node)] = (r, res)
            if r.place and (r.report_matches or not isinstance(res, Match)):
                out.candidates.append(Candidate.of(r, anchor, res, pass_name))
    if not claimed:
        return out
    env: dict[tuple[int, int], Value] = {}

    def tr(v: Value) -> Value:
        return env.get((id(v.node), v.index), v)

    built: dict[int, list[Value]] = {}  # id(match) -> replacement values
    for n in g.nodes:
        if n.op == "input":
            continue
        hit = claimed.get(id(n))
        outs: list[Value] | None = None
        if hit is not None:
            r, m = hit
            vals = built.get(id(m))
            if vals is None:
                got = r.replacement(m.rebased(tr))
                if isinstance(got, MatchFail):
                    raise ValueError(f"rule {r.name} matched at {n.op} #{n.uid} but cannot build "
                                     f"its replacement: {got}")
                vals = built[id(m)] = got
                out.count(r.name)
            repl = {(id(v.node), v.index): nv for v, nv in zip(m.roots, vals)}
            outs = [repl.get((id(n), i)) for i in range(len(n.out_types))]  # type: ignore[misc]
        rebuilt: tuple[Value, ...] | None = None
        for i in range(len(n.out_types)):
            v = outs[i] if outs is not None else None
            if v is None:
                if rebuilt is None:
                    rebuilt = n.with_inputs(tuple(tr(x) for x in n.inputs)).outputs
                v = rebuilt[i]
            env[(id(n), i)] = v
    out.graph = Graph(g.inputs, [tr(v) for v in g.outputs], g.output_names, g.name, g.meta)
    return out


def local(g: Graph, rules: Sequence[Rule], options: Mapping[str, Any] | None = None,
          max_per_node: int = 16, pass_name: str = "") -> Outcome:
    """Rewrite bottom-up: each rebuilt node is rewritten by the first rule that matches it, and
    the result again, until no rule applies (local rules only: no users, no graph context)."""
    by_op: dict[str, list[Rule]] = {}
    anywhere: list[Rule] = []
    for r in rules:
        if r.anchors is None:
            anywhere.append(r)
        else:
            for op in r.anchors:
                by_op.setdefault(op, []).append(r)
    out = Outcome(g)
    ctx = MatchContext(g, options)

    def rewrite_node(n: Node) -> Sequence[Value] | None:
        cur = n
        vals: list[Value] | None = None
        for _ in range(max_per_node):
            for r in by_op.get(cur.op, []) + anywhere:
                res = _guarded(r.match, cur, ctx)
                if res is None:
                    continue
                if isinstance(res, MatchFail) or not res.roots:  # failed, or nothing to do
                    if r.place:
                        out.candidates.append(Candidate.of(r, cur, res, pass_name))
                    continue
                got = r.replacement(res)
                if isinstance(got, MatchFail):
                    continue
                if r.place and r.report_matches:
                    out.candidates.append(Candidate.of(r, cur, res, pass_name))
                out.count(r.name)
                full = {(id(v.node), v.index): nv for v, nv in zip(res.roots, got)}
                vals = [full.get((id(cur), i), Value(cur, i)) for i in range(len(cur.out_types))]
                break
            else:
                break
            if len(vals) != 1 or vals[0].node is cur:
                break
            cur = vals[0].node
            if vals[0].index != 0 or len(cur.out_types) != 1:
                break
        return vals

    out.graph = g.map_nodes(rewrite_node)
    return out


# ---- single rewrites (search, tests, tools) --------------------------------------------------

def matches(g: Graph, r: Rule, tracer: Tracer | None = None, limit: int = 10000,
            options: Mapping[str, Any] | None = None) -> list[Match]:
    """Every match of ``r`` in ``g`` (at most ``limit``); failed checks go to ``tracer``."""
    ctx = MatchContext(g, options)
    out: list[Match] = []
    seen: set[tuple] = set()
    for anchor in _anchored(r, ctx):
        for res in r.matches(anchor, ctx):
            if isinstance(res, MatchFail):
                if tracer is not None:
                    tracer.record(Candidate.of(r, anchor, res))
                continue
            key = tuple((id(v.node), v.index) for v in res.roots)
            if key in seen:
                continue
            seen.add(key)
            out.append(res)
            if len(out) >= limit:
                return out
    return out


def apply(g: Graph, r: Rule, m: Match) -> "Graph | MatchFail":
    """``g`` with the match's roots replaced by the rule's replacement."""
    vals = r.replacement(m)
    if isinstance(vals, MatchFail):
        return vals
    return g.replace({old: new for old, new in zip(m.roots, vals)})


def rewrites(g: Graph, r: Rule, tracer: Tracer | None = None) -> Iterator[Graph]:
    """Every graph one application of ``r`` gives (for search)."""
    for m in matches(g, r, tracer):
        ng = apply(g, r, m)
        if isinstance(ng, MatchFail):
            if tracer is not None:
                tracer.record(Candidate.of(r, m.roots[0].node, ng))
            continue
        yield ng


@dataclass
class RewriteStats:
    applied: dict[str, int] = field(default_factory=dict)
    steps: int = 0
    stopped: str = ""  # "fixpoint" | "max_steps"


def rewrite(g: Graph, rules: Sequence[Rule], max_steps: int = 1000,
            tracer: Tracer | None = None) -> tuple[Graph, RewriteStats]:
    """Apply rules greedily (first rule, first match) until none applies. A rewrite that gives
    a graph seen before is skipped (so a rule and its reverse cannot loop); stops after
    ``max_steps``. Graph keys are node ids, so ``seen`` keeps its graphs alive (an id freed by a
    dropped graph could otherwise name a new node)."""
    st = RewriteStats()
    seen = {g.key(): g}
    while st.steps < max_steps:
        for r in rules:
            ng = next((x for x in rewrites(g, r, tracer) if x.key() not in seen), None)
            if ng is not None:
                seen[ng.key()] = ng
                g = ng
                st.applied[r.name] = st.applied.get(r.name, 0) + 1
                st.steps += 1
                break
        else:
            st.stopped = "fixpoint"
            return g, st
    st.stopped = "max_steps"
    return g, st


__all__ = ["Outcome", "sweep", "local", "matches", "apply", "rewrites", "rewrite",
           "RewriteStats"]
