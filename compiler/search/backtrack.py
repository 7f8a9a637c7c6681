"""TASO's cost-ordered backtracking search with relaxation ``alpha``.

    queue <- {G0}; best <- G0
    while queue and budget left:
        G <- cheapest graph in queue                  (skipped when cost(G) >= alpha * cost(best))
        for every rule r and every match m of r in G:
            G' <- G with m rewritten by r             (skipped when the rewrite would be cyclic)
            if G' was seen before: continue           (dedup by structural hash)
            if cost(G') < alpha * cost(best): queue <- G'
            if cost(G') < cost(best): best <- G'

Graphs are immutable and hash-consed, so dedup is by graph key (the ids of the graph's input
and output nodes) and a rewrite shares every unchanged node with its parent. An id names a node
only while the node lives: ``seen`` maps each key to the nodes it names and so keeps them alive
(a candidate dropped for its cost would otherwise be collected, and a later, different graph
whose new nodes got its ids would be dropped as its duplicate). Matches come from the
incremental index (``rewrite/index.py``): a new graph only matches at its new nodes.

Two ways to price a candidate, one loop: *exact* builds and costs every candidate graph when it
is found; *lazy* (a ``CostModel``) queues it at its parent's cost plus ``local_delta`` (the cost
change of the part the rewrite touches) and builds and costs it in full only when it leaves the
queue. Windowed search of large graphs is ``windows.py``.
"""
from __future__ import annotations

import heapq
import itertools
import time
from typing import Callable, Sequence

from ..ir.graph import Graph
from ..ir.node import Node, Value
from ..rewrite.driver import reads_replaced
from ..rewrite.index import Matcher, MultiMatches
from ..rewrite.match import Match, MatchFail
from ..rewrite.rule import PatternRule
from .budget import Budget
from .delta import local_delta
from .result import SearchResult

DEFAULT_ALPHA = 1.05

Progress = Callable[[str], None]
Rewrite = dict[Value, Value]  # old value -> its replacement
# a queue entry: (priority, -depth, tie, graph, rewrite of it still to build or None, names of
# the rules applied from the start graph)
Entry = tuple[float, int, int, Graph, Rewrite | None, tuple[str, ...]]
# prices one candidate: (rule, match, rewrite, path) -> (priority, graph, rewrite) or None
Pricer = Callable[[PatternRule, Match, Rewrite, tuple[str, ...]],
                  "tuple[float, Graph, Rewrite | None] | None"]


# ---- one rewrite --------------------------------------------------------------------------------

def rewrite_map(vals: "list[Value] | MatchFail", m: Match,
                pos: dict[int, int]) -> "Rewrite | str":
    """The old -> new values of a built rewrite (the roots it changes), or why it is not one:
    the rule's reason, "no-op", or "cycle" (TASO's cycle check: Graph.replace would not build a
    cycle, but would keep the old subgraph alive to feed the new one: a rewrite never wanted).
    ``pos``: topological position of each node of the graph."""
    if isinstance(vals, MatchFail):
        return "rhs: " + vals.reason.split(":")[0]
    mapping: Rewrite = {}
    for old, new in zip(m.roots, vals):
        if not (old.node is new.node and old.index == new.index):
            mapping[old] = new
    if not mapping:
        return "no-op"
    if reads_replaced(mapping.values(), mapping, pos):
        return "cycle"
    return mapping


def rewrite_once(g: Graph, r: PatternRule, m: Match, pos: dict[int, int]) -> "Graph | str":
    """``g`` with match ``m`` rewritten by ``r``, or why not (see ``rewrite_map``)."""
    mapping = rewrite_map(r.replacement(m), m, pos)
    return mapping if isinstance(mapping, str) else g.replace(mapping)


def held(g: Graph) -> tuple[Node, ...]:
    """The nodes whose ids make up ``g.key()`` (kept alive while the key is in use)."""
    return g.inputs + tuple(v.node for v in g.outputs)


# ---- the search -----------------------------------------------------------------------------------

def backtrack(g: Graph, rules: "Sequence[PatternRule] | Matcher", cost: Callable[[Graph], float],
              *, alpha: float = DEFAULT_ALPHA, budget: Budget | None = None,
              progress: Progress | None = None, lazy: bool | None = None,
              deltas: dict[tuple, float] | None = None) -> SearchResult:
    """TASO's search on one graph. ``cost(graph) -> seconds``.

    lazy (default: when ``cost`` is a CostModel): a candidate is first priced by costing only
    the neighbourhood the rewrite changes (``local_delta``); the graph is built and costed in
    full when it comes off the queue. Otherwise every candidate is built and costed at once.
    ``deltas``: a memo of neighbourhood prices to share between searches (windows)."""
    if alpha < 1.0:
        raise ValueError(f"alpha must be >= 1, got {alpha}")
    if lazy is None:
        lazy = hasattr(cost, "nodes_time")
    budget = (budget or Budget()).start()
    matcher = rules if isinstance(rules, Matcher) else Matcher(rules)
    st = _State(g, matcher, cost, alpha, budget, progress)
    st.run(_Lazy(st, {} if deltas is None else deltas) if lazy else _Exact(st))
    applied: dict[str, int] = {}
    for name in st.best_path:
        applied[name] = applied.get(name, 0) + 1
    return SearchResult(st.best, st.best_cost, st.c0, applied, budget.expanded, budget.explored,
                        time.perf_counter() - st.t0, st.stopped, rejected=st.rejected,
                        failed_checks=dict(matcher.failures), tried=st.tried,
                        refused=st.refused, best_delta=st.best_delta)


class _State:
    """One search: the queue, the best graph, the counters."""

    def __init__(self, g: Graph, matcher: Matcher, cost: Callable[[Graph], float], alpha: float,
                 budget: Budget, progress: Progress | None) -> None:
        self.g, self.matcher, self.cost, self.alpha = g, matcher, cost, alpha
        self.budget, self.progress = budget, progress
        self.t0 = time.perf_counter()
        self.c0 = cost(g)
        budget.explored += 1
        self.best, self.best_cost, self.best_path = g, self.c0, ()
        # graph key -> the nodes it names, held so their ids are not reused while the key is
        # here (``multi`` in ``run`` is keyed by the keys of graphs seen here, too)
        self.seen: dict[tuple, tuple[Node, ...]] = {g.key(): held(g)}
        self.tie = itertools.count()
        self.rejected: dict[str, int] = {}
        self.tried: dict[str, int] = {}  # rewrites priced, per rule
        self.refused: dict[tuple[str, str], int] = {}  # rewrites refused, per (rule, reason)
        self.best_delta: dict[str, float] = {}  # least cost change of a rewrite, per rule
        self.stopped = "exhausted"
        self.since_better = 0  # expansions since the best graph last improved

    def reject(self, why: str) -> None:
        self.rejected[why] = self.rejected.get(why, 0) + 1

    def stop(self) -> bool:
        why = self.budget.exhausted()
        if why is None and self.budget.patience is not None and \
                self.since_better >= self.budget.patience:
            why = "patience"
        if why:
            self.stopped = why
        return why is not None

    def out_of_budget_mid_expansion(self) -> bool:
        b = self.budget
        return b.out_of_time() or (b.max_explored is not None and b.explored >= b.max_explored)

    def improve(self, ng: Graph, nc: float, path: tuple[str, ...]) -> None:
        if nc < self.best_cost:
            self.best, self.best_cost, self.best_path = ng, nc, path
            self.since_better = 0
            if self.progress:
                self.progress(f"best {nc * 1e6:.1f} us after {self.budget.explored} graphs "
                              f"({path[-1]})")

    def arrive(self, g: Graph, path: tuple[str, ...], found: bool = False) -> float | None:
        """A newly built graph: its cost, or None when it was seen before or costs too much to
        expand (recorded). ``found``: a candidate built as it is found (counted explored)."""
        k = g.key()
        if k in self.seen:
            self.reject("duplicate")
            return None
        self.seen[k] = held(g)
        c = self.cost(g)
        if found:
            self.budget.explored += 1
        self.improve(g, c, path)
        if c >= self.alpha * self.best_cost:
            self.reject("cost")
            return None
        return c

    def run(self, pricing: "_Exact | _Lazy") -> None:
        # equal costs pop deepest first, so a plateau of equal-cost rewrites is walked
        # depth-first (a rewrite that pays off only after the next one is reached quickly)
        queue: list[Entry] = [(self.c0, 0, next(self.tie), self.g, None, ())]
        multi: dict[tuple, MultiMatches] = {}  # expanded graph -> its multi-root matches
        while queue and not self.stop():
            prio, _, _, parent, mapping, path = heapq.heappop(queue)
            if path and prio >= self.alpha * self.best_cost:
                self.reject("stale")
                continue
            cur, c = parent, prio
            if mapping is not None:  # priced lazily: build and cost it now
                cur = parent.replace(mapping)
                got = self.arrive(cur, path)
                if got is None:
                    continue
                c = got
            self.budget.expanded += 1
            self.since_better += 1
            pos = {id(n): i for i, n in enumerate(cur.nodes)}
            price = pricing.pricer(cur, c, pos)
            kept: list[MultiMatches] = []
            for r, m in self.matcher.matches(cur, multi.get(parent.key()) if mapping else None,
                                             kept if pricing.incremental else None):
                if self.out_of_budget_mid_expansion():
                    break
                mp = rewrite_map(pricing.build(r, m), m, pos)
                if isinstance(mp, str):
                    self.reject(mp)
                    self.refused[(r.name, mp)] = self.refused.get((r.name, mp), 0) + 1
                    continue
                self.tried[r.name] = self.tried.get(r.name, 0) + 1
                npath = path + (r.name,)
                priced = price(r, m, mp, npath)
                if priced is None:
                    continue
                est, ng, later = priced
                if est - c < self.best_delta.get(r.name, float("inf")):
                    self.best_delta[r.name] = est - c
                if est < self.alpha * self.best_cost:
                    heapq.heappush(queue, (est, -len(npath), next(self.tie), ng, later, npath))
                else:
                    self.reject("cost")
            if kept:
                multi[cur.key()] = kept[0]


class _Exact:
    """Every candidate built and costed when found (any cost function)."""

    incremental = False  # its queue holds built graphs: no parent to take matches from

    def __init__(self, st: _State) -> None:
        self.st = st

    def build(self, r: PatternRule, m: Match) -> "list[Value] | MatchFail":
        return r.replacement(m)

    def pricer(self, cur: Graph, c: float, pos: dict[int, int]) -> Pricer:
        st = self.st

        def price(r: PatternRule, m: Match, mp: Rewrite, path: tuple[str, ...]
                  ) -> tuple[float, Graph, None] | None:
            ng = cur.replace(mp)
            nc = st.arrive(ng, path, found=True)
            return None if nc is None else (nc, ng, None)

        return price


class _Lazy:
    """Candidates priced by the neighbourhood a rewrite changes (a CostModel's ``nodes_time``),
    built when taken off the queue."""

    incremental = True  # a graph's multi-root matches start from its parent's

    def __init__(self, st: _State, deltas: dict[tuple, float]) -> None:
        self.st, self.deltas = st, deltas

    def build(self, r: PatternRule, m: Match) -> "list[Value] | MatchFail":
        return self.st.matcher.build(r, m)

    def pricer(self, cur: Graph, c: float, pos: dict[int, int]) -> Pricer:
        st, model, deltas = self.st, self.st.cost, self.deltas
        users = cur.users()
        outs = {(id(v.node), v.index) for v in cur.outputs}

        def price(r: PatternRule, m: Match, mp: Rewrite, path: tuple[str, ...]
                  ) -> tuple[float, Graph, Rewrite]:
            delta = local_delta(model, m, mp, pos, users, outs, memo=deltas)
            st.budget.explored += 1
            return c + delta, cur, mp

        return price

