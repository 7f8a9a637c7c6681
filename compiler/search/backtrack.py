"""TASO's cost-ordered backtracking search with relaxation ``alpha``.

    queue <- {G0}; best <- G0
    while queue and budget left:
        G <- cheapest graph in queue                  (skipped when cost(G) >= alpha * cost(best))
        for every rule r and every match m of r in G:
            G' <- G with m rewritten by r             (skipped when the rewrite would be cyclic)
            if G' was seen before: continue           (dedup by structural hash)
            if cost(G') < alpha * cost(best): queue <- G'
            if cost(G') < cost(best): best <- G'

Graphs are immutable and hash-consed, so dedup is a set of graph keys and a rewrite shares every
unchanged node with its parent. Matches of single-root rules depend only on the matched node and
its ancestors, so they are memoized per node: a new graph only matches at its new nodes.

Large graphs are searched in windows (``search``): consecutive slices of the topological order,
cut where few values cross, each searched as a graph of its own under a share of the budget and
spliced back. Windows with the same structure (the layers of a transformer) reuse the first
one's result with their own weights. A second round with shifted cuts catches rewrites that
straddle a cut.
"""
from __future__ import annotations

import heapq
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from ..ir.graph import Graph
from ..ir.node import Node, Value, input_node
from ..rewrite.match import Match, MatchFail, index_by_op, match_roots, match_term, solve_dims
from ..rewrite.pattern import root_node
from ..rewrite.rule import PatternRule, Rule
from .budget import Budget

DEFAULT_ALPHA = 1.05
DEFAULT_WINDOW = 160  # ops per window for large graphs

Progress = Callable[[str], None]


# ---- results --------------------------------------------------------------------------------------

@dataclass
class SearchResult:
    graph: Graph
    cost: float  # seconds, under the model
    initial_cost: float
    applied: dict[str, int]  # rule -> times applied on the way to the best graph
    expanded: int  # graphs taken off the queue
    explored: int  # candidate graphs built and costed
    seconds: float
    stopped: str  # "exhausted" (queue empty) | "time" | "graphs" | "explored" | "patience"
    windows: int = 1
    reused_windows: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # why candidates were dropped

    @property
    def speedup(self) -> float:
        """Estimated fraction of time saved: 1 - cost/initial."""
        return 0.0 if self.initial_cost <= 0 else 1.0 - self.cost / self.initial_cost

    def to_dict(self) -> dict[str, Any]:
        return {"cost_before_us": round(self.initial_cost * 1e6, 3),
                "cost_after_us": round(self.cost * 1e6, 3),
                "estimated_speedup": round(self.speedup, 4),
                "rules_applied": dict(sorted(self.applied.items())),
                "graphs_expanded": self.expanded, "graphs_explored": self.explored,
                "seconds": round(self.seconds, 4), "stopped": self.stopped,
                "windows": self.windows, "reused_windows": self.reused_windows,
                "rejected": dict(sorted(self.rejected.items()))}


# ---- matching -------------------------------------------------------------------------------------

def _pattern_ops(r: Rule) -> frozenset[str]:
    ops: set[str] = set()
    stack = list(r.lhs)
    seen: set[int] = set()
    while stack:
        pn, _ = root_node(stack.pop())
        if pn is None or pn.uid in seen:
            continue
        seen.add(pn.uid)
        ops.add(pn.op)
        stack.extend(pn.inputs)
    return frozenset(ops)


def _sig(t: Any, depth: int) -> Any:
    """A pattern term's ops down to ``depth`` levels: None for a variable, else (op, inputs)."""
    pn, idx = root_node(t)
    if pn is None:
        return None
    if depth == 0:
        return (pn.op, idx, None)
    return (pn.op, idx, tuple(_sig(c, depth - 1) for c in pn.inputs))


def _fits(sig: Any, v: Value, commutative: frozenset[str]) -> bool:
    """Whether value ``v`` can match a pattern of signature ``sig`` (ops and arities only)."""
    if sig is None:
        return True
    op, idx, kids = sig
    n = v.node
    if n.op != op or v.index != idx:
        return False
    if kids is None:
        return True
    if len(kids) != len(n.inputs):
        return False
    if all(_fits(k, x, commutative) for k, x in zip(kids, n.inputs)):
        return True
    return (op in commutative and len(kids) == 2
            and _fits(kids[0], n.inputs[1], commutative)
            and _fits(kids[1], n.inputs[0], commutative))


SIG_DEPTH = 2


def _depth(t: Any) -> int:
    pn, _ = root_node(t)
    if pn is None:
        return 0
    return 1 + max((_depth(c) for c in pn.inputs), default=0)


def _var_depths(t: Any) -> dict[str, int]:
    """Pattern variables under a root and how many levels above the root each sits (least)."""
    out: dict[str, int] = {}

    def walk(x: Any, d: int) -> None:
        pn, _ = root_node(x)
        if pn is None:
            name = x.name
            out[name] = min(out.get(name, d), d)
            return
        for c in pn.inputs:
            walk(c, d + 1)

    walk(t, 0)
    return out


def cone_key(n: Node, depth: int) -> tuple:
    """Everything a pattern of ``depth`` levels rooted at ``n`` can observe: ops, attrs and
    types of the nodes ``depth`` levels up, which of them are the same node, and the values at
    the edge (op, index, type; constants by identity)."""
    local: dict[int, int] = {}
    items: list[tuple] = []

    def visit(x: Node, d: int) -> int:
        k = local.get(id(x))
        if k is not None and items[k][0] != "leaf":
            return k
        if d == 0 or x.op in ("input", "constant"):
            if k is None:
                k = len(items)
                local[id(x)] = k
                items.append(("leaf", x.op, x.out_types,
                              x.attrs if x.op in ("constant", "input") else None))
            return k
        ins = tuple((visit(v.node, d - 1), v.index) for v in x.inputs)
        k = local.get(id(x))  # a shallower visit may have made it a leaf: upgrade it
        entry = (x.op, x.attrs, x.out_types, ins)
        if k is None:
            k = len(items)
            local[id(x)] = k
            items.append(entry)
        else:
            items[k] = entry
        return k

    visit(n, depth)
    return tuple(items)


class Matcher:
    """Every (rule, match) in a graph. Single-root matches are memoized per anchor node (valid in
    any graph holding the node: they depend only on the node and its ancestors). Rules are
    indexed by root op and the ops of the root's inputs, so a node tries only rules that can
    match it."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        from ..ops.registry import all_ops

        self.rules = list(rules)
        # root op -> [(pattern signature two levels deep, rules)]
        self.single: dict[str, list[tuple[Any, list[Rule]]]] = {}
        self.multi: list[tuple[Rule, frozenset[str]]] = []
        groups: dict[str, dict[Any, list[Rule]]] = {}
        for r in self.rules:
            pn, _ = root_node(r.lhs[0])
            if pn is None:
                raise ValueError(f"rule {r.name}: pattern root is a bare variable")
            if len(r.lhs) == 1:
                groups.setdefault(pn.op, {}).setdefault(_sig(r.lhs[0], SIG_DEPTH), []).append(r)
            else:
                self.multi.append((r, _pattern_ops(r)))
        self.single = {op: list(d.items()) for op, d in groups.items()}
        self.commutative = frozenset(n for n, o in all_ops().items() if o.commutative)
        self.depth = max((_depth(r.lhs[0]) for r in self.rules if len(r.lhs) == 1), default=0)
        self.memo: dict[Node, list[tuple[Rule, Match]]] = {}
        # structure of a node's cone (what a single-root pattern can see) -> rules that matched:
        # a rewrite rebuilds every node downstream of it, and those rebuilt nodes mostly have
        # the structure some old node had
        self.by_structure: dict[tuple, list[Rule]] = {}
        self._reach: dict[int, list[dict[str, int]]] = {}  # multi-root rule -> per root
        self._sigs: dict[tuple[int, int], Any] = {}
        self.built: dict[int, tuple[Match, "list[Value] | MatchFail"]] = {}
        self.deltas: dict[tuple, float] = {}  # local_delta results by neighbourhood
        self.failed_checks = 0
        self.attempts = 0

    def build(self, r: Rule, m: Match) -> "list[Value] | MatchFail":
        """The rule's replacement for a match (memoized: it depends on the match only)."""
        hit = self.built.get(id(m))
        if hit is not None and hit[0] is m:
            return hit[1]
        vals = r.replacement(m)
        self.built[id(m)] = (m, vals)
        return vals

    def _check(self, r: Rule, m: Match) -> bool:
        if r.check is None:
            return True
        c = r.check(m)
        if isinstance(c, MatchFail) or c is False:
            self.failed_checks += 1
            return False
        return True

    def at(self, n: Node) -> list[tuple[Rule, Match]]:
        got = self.memo.get(n)
        if got is not None:
            return got
        if n.op not in self.single:
            self.memo[n] = []
            return []
        key = cone_key(n, self.depth)
        known = self.by_structure.get(key)
        out: list[tuple[Rule, Match]] = []
        if known is not None:
            for r in known:
                out.extend(self._first(r, n))
        else:
            v = Value(n, 0)
            for sig, rules in self.single[n.op]:
                if not _fits(sig, v, self.commutative):
                    continue
                for r in rules:
                    out.extend(self._first(r, n))
            self.by_structure[key] = [r for r, _ in out]
        self.memo[n] = out
        return out

    def _first(self, r: Rule, n: Node) -> list[tuple[Rule, Match]]:
        """The first match of single-root rule ``r`` at ``n`` that passes its check (the
        rewrite driver's convention), as a 0- or 1-element list."""
        self.attempts += 1
        for m in match_roots(r.lhs, None, n, {}):  # type: ignore[arg-type]
            return [(r, m)] if self._check(r, m) else []
        return []

    def matches(self, g: Graph, parent: "MultiMatches | None" = None,
                keep: "list[MultiMatches] | None" = None) -> Iterator[tuple[Rule, Match]]:
        """Every (rule, match) of ``g``. ``parent``: the multi-root matches of the graph ``g``
        was rewritten from (then only matches at new nodes are searched for); ``keep``: a list
        that receives ``g``'s own (for its children)."""
        for n in g.nodes:
            if n.op in self.single:
                yield from self.at(n)
        if not self.multi:
            return
        found = self.multi_matches(g, parent)
        if keep is not None:
            keep.append(found)
        yield from found.matches

    def multi_matches(self, g: Graph, parent: "MultiMatches | None") -> "MultiMatches":
        pos = {id(n) for n in g.nodes}
        by_op = index_by_op(g)
        users = g.users()
        out: list[tuple[Rule, Match]] = []
        # one match per set of roots: (a, b) and (b, a) rewrite to mirror images
        seen: set[tuple[int, frozenset]] = set()
        if parent is None:
            for r, ops in self.multi:
                if not all(o in by_op for o in ops):
                    continue
                for a in self._anchors(r, 0, by_op):
                    for m in self._join(r, 0, a, by_op, users):
                        self._add(r, m, seen, out)
            return MultiMatches(out, pos)
        # still valid: every matched node is still here. New ones have a new root: an old
        # node never reads a new one, so a match touching a new node has a new node on top
        for r, m in parent.matches:
            if all(id(x) in pos for x in m.nodes.values()):
                seen.add((id(r), frozenset((id(v.node), v.index) for v in m.roots)))
                out.append((r, m))
        new_by_op: dict[str, list[Node]] = {}
        for n in g.nodes:
            if id(n) not in parent.nodes:
                new_by_op.setdefault(n.op, []).append(n)
        for r, ops in self.multi:
            if not all(o in by_op for o in ops):
                continue
            for i in range(len(r.lhs)):
                for a in self._anchors(r, i, new_by_op):
                    for m in self._join(r, i, a, by_op, users):
                        self._add(r, m, seen, out)
        return MultiMatches(out, pos)

    def _anchors(self, r: Rule, i: int, by_op: dict[str, list[Node]]) -> list[Node]:
        """Nodes of ``by_op`` that root ``i`` of ``r`` can match (ops two levels deep)."""
        sig = self._sigs.get((id(r), i))
        if sig is None:
            sig = _sig(r.lhs[i], SIG_DEPTH)
            self._sigs[(id(r), i)] = sig
        if sig is None:
            return []
        return [a for a in by_op.get(sig[0], ()) if sig[1] < len(a.out_types)
                and _fits(sig, Value(a, sig[1]), self.commutative)]

    def _join(self, r: Rule, first: int, anchor: Node, by_op: dict[str, list[Node]],
              users: dict[Node, list[tuple[Node, int]]]) -> Iterator[Match]:
        """Matches of multi-root rule ``r`` with root ``first`` at ``anchor``. Each further root
        is looked for among the users (a few levels down) of a variable an earlier root bound,
        instead of among all nodes of its op. Roots come back in the rule's order."""
        k = len(r.lhs)
        order = [(first + j) % k for j in range(k)]
        reach = self._reach.get(id(r))
        if reach is None:
            reach = [_var_depths(t) for t in r.lhs]
            self._reach[id(r)] = reach

        def cands(i: int, m: Match) -> "Sequence[Node]":
            pn, _ = root_node(r.lhs[i])
            assert pn is not None
            if i == first:
                return [anchor]
            best: tuple[int, Value] | None = None
            for name, d in reach[i].items():
                v = m.values.get(name)
                if v is not None and (best is None or d < best[0]):
                    best = (d, v)
            if best is None:
                return by_op.get(pn.op, [])
            d, v = best
            level = [u for u, j in users.get(v.node, ()) if u.inputs[j].index == v.index]
            found: dict[int, Node] = {}
            for _ in range(d):
                nxt = []
                for u in level:
                    if id(u) not in found:
                        found[id(u)] = u
                        nxt.extend(w for w, _ in users.get(u, ()))
                level = nxt
            return [u for u in found.values() if u.op == pn.op]

        def step(j: int, m: Match) -> Iterator[Match]:
            if j == k:
                if solve_dims(m) is None:
                    m.roots = [m.roots[order.index(i)] for i in range(k)]
                    yield m
                return
            i = order[j]
            t = r.lhs[i]
            _, idx = root_node(t)
            for node in cands(i, m):
                if idx >= len(node.out_types):
                    continue
                v = Value(node, idx)
                if any(x.node is v.node and x.index == v.index for x in m.roots):
                    continue
                for m2 in match_term(t, v, m):
                    m3 = m2.copy()
                    m3.roots.append(v)
                    yield from step(j + 1, m3)

        yield from step(0, Match())

    def _add(self, r: Rule, m: Match, seen: set[tuple[int, frozenset]],
             out: list[tuple[Rule, Match]]) -> None:
        key = (id(r), frozenset((id(v.node), v.index) for v in m.roots))
        if key in seen:
            return
        seen.add(key)
        if self._check(r, m):
            out.append((r, m))


@dataclass
class MultiMatches:
    """The multi-root matches of one graph and the ids of its nodes."""

    matches: list[tuple[Rule, Match]]
    nodes: set[int]


# ---- one rewrite --------------------------------------------------------------------------------

def rewrite_once(g: Graph, r: Rule, m: Match, pos: dict[int, int]) -> "Graph | str":
    """``g`` with match ``m`` rewritten by ``r``, or why not ("cycle", the rule's reason).
    ``pos``: topological position of each node of ``g`` (for the cycle check)."""
    vals = r.replacement(m)
    if isinstance(vals, MatchFail):
        return "rhs: " + vals.reason.split(":")[0]
    mapping: dict[Value, Value] = {}
    for old, new in zip(m.roots, vals):
        if not (old.node is new.node and old.index == new.index):
            mapping[old] = new
    if not mapping:
        return "no-op"
    if _cyclic(mapping, pos):
        return "cycle"
    return g.replace(mapping)


def _cyclic(mapping: dict[Value, Value], pos: dict[int, int]) -> bool:
    """Whether a replacement value reads one of the values it replaces (TASO's cycle check).
    Graph.replace would not build a cycle, but would keep the old subgraph alive to feed the new
    one: a rewrite that is never wanted."""
    roots = {(id(k.node), k.index) for k in mapping}
    root_nodes = {id(k.node) for k in mapping}
    first = min(pos.get(i, 1 << 60) for i in root_nodes)
    stack = [v.node for v in mapping.values()]
    seen: set[int] = set()
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        p = pos.get(id(n))
        if p is not None and p < first:
            continue  # an old node before every root cannot depend on one
        for v in n.inputs:
            if (id(v.node), v.index) in roots:
                return True
            stack.append(v.node)
    return False


# ---- the search -----------------------------------------------------------------------------------

def backtrack(g: Graph, rules: "Sequence[Rule] | Matcher", cost: Callable[[Graph], float], *,
              alpha: float = DEFAULT_ALPHA, budget: Budget | None = None,
              progress: Progress | None = None, lazy: bool | None = None) -> SearchResult:
    """TASO's search on one graph. ``cost(graph) -> seconds``.

    lazy (default: when ``cost`` is a CostModel): a candidate is first priced by costing only
    the neighbourhood the rewrite changes (``local_delta``); the graph is built and costed in
    full when it comes off the queue. Otherwise every candidate is built and costed at once."""
    if alpha < 1.0:
        raise ValueError(f"alpha must be >= 1, got {alpha}")
    if lazy is None:
        lazy = hasattr(cost, "nodes_time")
    budget = (budget or Budget()).start()
    matcher = rules if isinstance(rules, Matcher) else Matcher(rules)
    st = _State(g, cost, alpha, budget, progress)
    if lazy:
        st.run_lazy(matcher)
    else:
        st.run_exact(matcher)
    applied: dict[str, int] = {}
    for name in st.best_path:
        applied[name] = applied.get(name, 0) + 1
    return SearchResult(st.best, st.best_cost, st.c0, applied, budget.expanded, budget.explored,
                        time.perf_counter() - st.t0, st.stopped, rejected=st.rejected)


class _State:
    """One search: the queue, the best graph, the counters."""

    def __init__(self, g: Graph, cost: Callable[[Graph], float], alpha: float, budget: Budget,
                 progress: Progress | None) -> None:
        self.g, self.cost, self.alpha, self.budget, self.progress = g, cost, alpha, budget, progress
        self.t0 = time.perf_counter()
        self.c0 = cost(g)
        budget.explored += 1
        self.best, self.best_cost, self.best_path = g, self.c0, ()
        self.seen = {g.key()}
        self.tie = itertools.count()
        self.rejected: dict[str, int] = {}
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

    # every candidate built and costed (any cost function)
    def run_exact(self, matcher: Matcher) -> None:
        # equal costs pop deepest first, so a plateau of equal-cost rewrites is walked
        # depth-first (a rewrite that pays off only after the next one is reached quickly)
        queue: list[tuple[float, int, int, Graph, tuple[str, ...]]] = [
            (self.c0, 0, next(self.tie), self.g, ())]
        while queue and not self.stop():
            c, _, _, cur, path = heapq.heappop(queue)
            if c >= self.alpha * self.best_cost and cur is not self.g:
                self.reject("stale")
                continue
            self.budget.expanded += 1
            self.since_better += 1
            pos = {id(n): i for i, n in enumerate(cur.nodes)}
            for r, m in matcher.matches(cur):
                if self.out_of_budget_mid_expansion():
                    break
                ng = rewrite_once(cur, r, m, pos)
                if isinstance(ng, str):
                    self.reject(ng)
                    continue
                k = ng.key()
                if k in self.seen:
                    self.reject("duplicate")
                    continue
                self.seen.add(k)
                nc = self.cost(ng)
                self.budget.explored += 1
                npath = path + (r.name,)
                self.improve(ng, nc, npath)
                if nc < self.alpha * self.best_cost:
                    heapq.heappush(queue, (nc, -len(npath), next(self.tie), ng, npath))
                else:
                    self.reject("cost")

    # candidates priced by their neighbourhood, built when taken off the queue
    def run_lazy(self, matcher: Matcher) -> None:
        model: Any = self.cost
        queue: list[tuple[float, int, int, Graph, dict[Value, Value] | None,
                          tuple[str, ...]]] = [(self.c0, 0, next(self.tie), self.g, None, ())]
        multi: dict[tuple, MultiMatches] = {}  # expanded graph -> its multi-root matches
        while queue and not self.stop():
            est, _, _, parent, mapping, path = heapq.heappop(queue)
            if est >= self.alpha * self.best_cost and mapping is not None:
                self.reject("stale")
                continue
            if mapping is None:
                cur, c = parent, self.c0
            else:
                cur = parent.replace(mapping)
                k = cur.key()
                if k in self.seen:
                    self.reject("duplicate")
                    continue
                self.seen.add(k)
                c = self.cost(cur)
                self.improve(cur, c, path)
                if c >= self.alpha * self.best_cost:
                    self.reject("cost")
                    continue
            self.budget.expanded += 1
            self.since_better += 1
            nodes = cur.nodes
            pos = {id(n): i for i, n in enumerate(nodes)}
            users = cur.users()
            outs = {(id(v.node), v.index) for v in cur.outputs}
            kept: list[MultiMatches] = []
            for r, m in matcher.matches(cur, multi.get(parent.key()) if mapping else None,
                                        kept):
                if self.out_of_budget_mid_expansion():
                    break
                vals = matcher.build(r, m)
                if isinstance(vals, MatchFail):
                    self.reject("rhs: " + vals.reason.split(":")[0])
                    continue
                mp: dict[Value, Value] = {}
                for old, new in zip(m.roots, vals):
                    if not (old.node is new.node and old.index == new.index):
                        mp[old] = new
                if not mp:
                    self.reject("no-op")
                    continue
                if _cyclic(mp, pos):
                    self.reject("cycle")
                    continue
                delta = local_delta(model, m, mp, pos, users, outs, memo=matcher.deltas)
                self.budget.explored += 1
                nest = c + delta
                if nest < self.alpha * self.best_cost:
                    npath = path + (r.name,)
                    heapq.heappush(queue, (nest, -len(npath), next(self.tie), cur, mp, npath))
                else:
                    self.reject("cost")
            if kept:
                multi[cur.key()] = kept[0]


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
    order: list[Node] = []
    seen: set[int] = set()
    for v in outs:
        root = v.node
        if id(root) in seen or not (id(root) in part or id(root) not in pos):
            continue
        stack: list[tuple[Node, int]] = [(root, 0)]
        seen.add(id(root))
        while stack:
            n, i = stack[-1]
            if i < len(n.inputs):
                stack[-1] = (n, i + 1)
                c = n.inputs[i].node
                if id(c) not in seen and (id(c) in part or id(c) not in pos):
                    seen.add(id(c))
                    stack.append((c, 0))
            else:
                stack.pop()
                order.append(n)
    return order


# ---- windows --------------------------------------------------------------------------------------

def _ops(g: Graph) -> list[Node]:
    return [n for n in g.nodes if n.op not in ("input", "constant")]


def partition(g: Graph, size: int, offset: int = 0) -> list[list[Node]]:
    """Consecutive slices of the topological order (sources left out), about ``size`` ops each,
    cut where the fewest values are live. ``offset`` shifts the first cut (for a second round)."""
    ops = _ops(g)
    n = len(ops)
    if n <= size:
        return [ops]
    index = {id(x): i for i, x in enumerate(ops)}
    last_use = [-1] * n  # last op (position) reading each op's outputs
    for i, x in enumerate(ops):
        for v in x.inputs:
            j = index.get(id(v.node))
            if j is not None:
                last_use[j] = max(last_use[j], i)
    for v in g.outputs:
        j = index.get(id(v.node))
        if j is not None:
            last_use[j] = n
    # live[i]: values produced before position i and read at i or later
    live = [0] * (n + 1)
    delta = [0] * (n + 2)
    for j in range(n):
        if last_use[j] > j:
            delta[j + 1] += 1
            delta[last_use[j] + 1] -= 1
    acc = 0
    for i in range(n + 1):
        acc += delta[i]
        live[i] = acc
    cuts = [0]
    start = 0
    prev = 0
    while n - start > size + size // 2:
        base = size // 2 if (offset and prev == 0) else size
        lo = max(start + 1, start + base - size // 3)
        hi = min(n - 1, start + base + size // 3)
        # aim at the previous window's length: windows that start at the same phase of a
        # repeated structure (transformer layers) come out identical and are searched once
        target = start + prev if prev and lo <= start + prev <= hi else start + base
        cut = min(range(lo, hi + 1), key=lambda i: (live[i], abs(i - target)))
        cuts.append(cut)
        prev = cut - start
        start = cut
    cuts.append(n)
    return [ops[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]


@dataclass
class Window:
    graph: Graph  # the slice as a graph of its own
    ext: list[Value]  # the outside value each of its inputs stands for
    outs: list[Value]  # the values of the big graph its outputs are
    consts: list[Node]  # its constants in a fixed order (for reuse across equal windows)


def extract(g: Graph, nodes: list[Node], used_outside: set[tuple[int, int]]) -> Window:
    inside = {id(x) for x in nodes}
    ext: list[Value] = []
    ext_in: dict[tuple[int, int], Node] = {}
    env: dict[tuple[int, int], Value] = {}
    for x in nodes:
        for v in x.inputs:
            k = (id(v.node), v.index)
            if v.node.op == "constant" or id(v.node) in inside or k in ext_in:
                continue
            node = input_node(f"w{len(ext)}", v.type)
            ext_in[k] = node
            ext.append(v)
            env[k] = node.out
    for x in nodes:
        ins = [env.get((id(v.node), v.index), v) for v in x.inputs]
        nn = x.with_inputs(ins)
        for i in range(len(x.out_types)):
            env[(id(x), i)] = Value(nn, i)
    outs = [Value(x, i) for x in nodes for i in range(len(x.out_types))
            if (id(x), i) in used_outside]
    sub = Graph([ext_in[(id(v.node), v.index)] for v in ext],
                [env[(id(v.node), v.index)] for v in outs],
                [f"o{i}" for i in range(len(outs))], name="window")
    consts = [x for x in sub.nodes if x.op == "constant"]
    return Window(sub, ext, outs, consts)


def splice(result: Graph, w: Window, env: dict[tuple[int, int], Value],
           consts: dict[int, Node] | None = None) -> list[Value]:
    """Rebuild ``result`` (a searched window) over the big graph's values: window inputs become
    ``env``-mapped outside values; ``consts`` swaps constants (reuse in an equal window)."""
    vals: dict[tuple[int, int], Value] = {}
    for node, v in zip(result.inputs, w.ext):
        vals[(id(node), 0)] = env.get((id(v.node), v.index), v)
    for n in result.nodes:
        if n.op == "input":
            continue
        if n.op == "constant":
            c = consts.get(id(n), n) if consts else n
            vals[(id(n), 0)] = c.out
            continue
        nn = n.with_inputs([vals[(id(v.node), v.index)] for v in n.inputs])
        for i in range(len(n.out_types)):
            vals[(id(n), i)] = Value(nn, i)
    return [vals[(id(v.node), v.index)] for v in result.outputs]


def _signature(w: Window) -> tuple:
    """Structure of a window without provenance or weight data: ops, attrs, wiring, input types,
    and each constant's type (its data too when small: rules may test small constants)."""
    import numpy as np

    local: dict[int, int] = {}
    items: list[tuple] = []
    for n in w.graph.nodes:
        local[id(n)] = len(local)
        if n.op == "constant":
            c = n.const
            small = c.has_array and int(np.prod(c.shape)) <= 16
            items.append(("constant", str(c.type), np.asarray(c.array).tobytes() if small
                          else None))
        elif n.op == "input":
            items.append(("input", n.attrs["name"], str(n.out_types[0])))
        else:
            items.append((n.op, n.attrs, tuple((local[id(v.node)], v.index) for v in n.inputs)))
    outs = tuple((local[id(v.node)], v.index) for v in w.graph.outputs)
    return (tuple(items), outs)


def search(g: Graph, rules: Sequence[Rule], cost: Callable[[Graph], float], *,
           alpha: float = DEFAULT_ALPHA, budget: Budget | None = None,
           window: int = DEFAULT_WINDOW, rounds: int = 2, progress: Progress | None = None
           ) -> SearchResult:
    """Search ``g``: whole when it has at most ``window`` ops, else window by window (``rounds``
    passes, the second with shifted cuts). ``cost(graph) -> seconds``."""
    budget = (budget or Budget()).start()
    matcher = Matcher(rules)
    t0 = time.perf_counter()
    c0 = cost(g)
    if len(_ops(g)) <= window:
        r = backtrack(g, matcher, cost, alpha=alpha, budget=budget, progress=progress)
        r.initial_cost = c0
        return r
    applied: dict[str, int] = {}
    rejected: dict[str, int] = {}
    n_windows = reused = 0
    stopped = "exhausted"
    cur = g
    for rnd in range(rounds):
        parts = partition(cur, window, offset=rnd)
        users_out = _used_outside(cur, parts)
        env: dict[tuple[int, int], Value] = {}
        memo: dict[tuple, tuple[Window, Graph, SearchResult]] = {}
        total_ops = sum(len(p) for p in parts)
        done_ops = 0
        for i, part in enumerate(parts):
            w = extract(cur, part, users_out)
            sig = _signature(w)
            if sig in memo and len(memo[sig][0].consts) == len(w.consts):
                w0, res_graph, res = memo[sig]
                swap = {id(a): b for a, b in zip(w0.consts, w.consts)}
                new_outs = splice(res_graph, _rebased(w0, w), env, swap)
                reused += 1
                for k, v in res.applied.items():
                    applied[k] = applied.get(k, 0) + v
            else:
                if budget.exhausted():
                    res = None
                else:
                    left = total_ops - done_ops
                    rounds_left = rounds - rnd
                    share = len(part) / max(left, 1) / rounds_left
                    child = budget.share(share)
                    res = backtrack(w.graph, matcher, cost, alpha=alpha, budget=child)
                    budget.charge(child)
                    n_windows += 1
                    for k, v in res.rejected.items():
                        rejected[k] = rejected.get(k, 0) + v
                    for k, v in res.applied.items():
                        applied[k] = applied.get(k, 0) + v
                    if res.stopped != "exhausted":
                        stopped = res.stopped
                if res is None or not _reusable(w, res.graph):
                    new_outs = splice(res.graph if res else w.graph, w, env)
                else:
                    memo[sig] = (w, res.graph, res)
                    new_outs = splice(res.graph, w, env)
            for v, nv in zip(w.outs, new_outs):
                env[(id(v.node), v.index)] = nv
            done_ops += len(part)
            if progress:
                progress(f"round {rnd + 1}: window {i + 1}/{len(parts)}")
        cur = Graph(cur.inputs, [env.get((id(v.node), v.index), v) for v in cur.outputs],
                    cur.output_names, cur.name, cur.meta)
        if budget.exhausted():
            if stopped == "exhausted":
                stopped = budget.exhausted() or stopped
            break
    final = cost(cur)
    if final > c0:  # windows are costed alone; never return a graph the model says is slower
        cur, final, applied = g, c0, {}
        rejected["whole-graph-worse"] = rejected.get("whole-graph-worse", 0) + 1
    return SearchResult(cur, final, c0, applied, budget.expanded, budget.explored,
                        time.perf_counter() - t0, stopped, n_windows, reused, rejected)


def _used_outside(g: Graph, parts: list[list[Node]]) -> set[tuple[int, int]]:
    """Values read outside the window that makes them (or graph outputs)."""
    where: dict[int, int] = {}
    for i, p in enumerate(parts):
        for x in p:
            where[id(x)] = i
    out: set[tuple[int, int]] = set()
    for i, p in enumerate(parts):
        for x in p:
            for v in x.inputs:
                j = where.get(id(v.node))
                if j is not None and j != i:
                    out.add((id(v.node), v.index))
    for v in g.outputs:
        out.add((id(v.node), v.index))
    return out


def _reusable(w: Window, result: Graph) -> bool:
    """A result can serve an equal window when its constants are the window's own (a rule that
    computed new constant data from matched weights would be wrong for other weights)."""
    own = {id(c) for c in w.consts}
    return all(n.op != "constant" or id(n) in own for n in result.nodes)


def _rebased(w0: Window, w: Window) -> Window:
    """``w0``'s graph with ``w``'s outside values (its inputs stand for them)."""
    return Window(w0.graph, w.ext, w.outs, w.consts)
