"""Applying rules to graphs: every match of a rule, one rewrite, and greedy rewriting to a fixed
point. Edits are functional (``Graph.replace``): the input graph is never changed."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

from ..ir.graph import Graph
from ..ir.node import Value
from .match import Match, MatchFail, Tracer, index_by_op, match_roots
from .pattern import root_node
from .rule import Rule


def matches(g: Graph, r: Rule, tracer: Tracer | None = None, limit: int = 10000
            ) -> list[Match]:
    """Every match of ``r`` in ``g`` that passes its check (at most ``limit``)."""
    by_op = index_by_op(g)
    pn, _ = root_node(r.lhs[0])
    out: list[Match] = []
    seen: set[tuple] = set()
    for anchor in by_op.get(pn.op if pn else "", []):
        for m in match_roots(r.lhs, g, anchor, by_op):
            key = tuple((id(v.node), v.index) for v in m.roots)
            if key in seen:
                continue
            seen.add(key)
            if r.check is not None:
                c = r.check(m)
                if isinstance(c, MatchFail) or c is False:
                    if tracer is not None:
                        tracer.record(r.name, c if isinstance(c, MatchFail)
                                      else m.fail("check failed"))
                    continue
            out.append(m)
            if len(out) >= limit:
                return out
    return out


def apply(g: Graph, r: Rule, m: Match) -> "Graph | MatchFail":
    """``g`` with the match's roots replaced by the rule's rhs."""
    vals = r.build(m)
    if isinstance(vals, MatchFail):
        return vals
    mapping: dict[Value, Value] = {old: new for old, new in zip(m.roots, vals)}
    return g.replace(mapping)


def rewrites(g: Graph, r: Rule, tracer: Tracer | None = None) -> Iterator[Graph]:
    """Every graph one application of ``r`` gives (for search)."""
    for m in matches(g, r, tracer):
        ng = apply(g, r, m)
        if isinstance(ng, MatchFail):
            if tracer is not None:
                tracer.record(r.name, ng)
            continue
        yield ng


@dataclass
class RewriteStats:
    applied: dict[str, int] = field(default_factory=dict)
    steps: int = 0
    stopped: str = ""  # "fixpoint" | "max_steps" | "cycle"


def rewrite(g: Graph, rules: Sequence[Rule], max_steps: int = 1000,
            tracer: Tracer | None = None) -> tuple[Graph, RewriteStats]:
    """Apply rules greedily (first rule, first match) until none applies. Stops on a cycle
    (a graph seen before) or after ``max_steps``."""
    st = RewriteStats()
    seen = {g.key()}
    while st.steps < max_steps:
        for r in rules:
            done = False
            for ng in rewrites(g, r, tracer):
                if ng.key() in seen:
                    continue
                seen.add(ng.key())
                g = ng
                st.applied[r.name] = st.applied.get(r.name, 0) + 1
                st.steps += 1
                done = True
                break
            if done:
                break
        else:
            st.stopped = "fixpoint"
            return g, st
    st.stopped = "max_steps"
    return g, st
