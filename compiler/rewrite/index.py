"""The incremental match index: every (rule, match) of a graph, for a search that visits many
graphs each one rewrite away from another.

* Single-root matches depend only on the anchor node and its ancestors, so they are memoized per
  node (valid in every graph holding the node): a new graph only matches at its new nodes.
* Rules are grouped by root op and the ops of the pattern two levels down (``_sig``), so a node
  tries only rules that can match it; the rules that matched a node are also remembered by the
  structure of its cone (``cone_key``): a rewrite rebuilds every node downstream of it, and those
  rebuilt nodes mostly have the structure some old node had.
* Multi-root matches of a graph rewritten from another are the parent's matches whose nodes are
  all still there plus the matches with a new node at some root; each further root is looked for
  among the users of what the earlier roots bound (``match_roots_with``).

A match whose check fails is not a match; the reason is counted per (rule, reason) in
``Matcher.failures`` and, with a ``Tracer``, recorded as a ``Candidate``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from ..ir.graph import Graph
from ..ir.node import Node, Value
from .match import Match, MatchFail, index_by_op, match_roots_with
from .pattern import root_node
from .rule import PatternRule
from .trace import Candidate, Tracer

SIG_DEPTH = 2  # pattern levels a rule's signature covers

Users = dict[Node, list[tuple[Node, int]]]


def _pattern_ops(r: PatternRule) -> frozenset[str]:
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


@dataclass
class MultiMatches:
    """The multi-root matches of one graph and the ids of its nodes."""

    matches: list[tuple[PatternRule, Match]]
    nodes: set[int]


class Matcher:
    """Every (rule, match) in a graph, memoized across the graphs of a search (see the module
    docstring). ``failures``: failed checks per (rule name, reason); ``tracer``: receives each
    failed check as a ``Candidate``."""

    def __init__(self, rules: Sequence[PatternRule], tracer: Tracer | None = None) -> None:
        from ..ops.registry import all_ops

        self.rules = list(rules)
        self.tracer = tracer
        self.failures: dict[tuple[str, str], int] = {}
        # root op -> [(pattern signature two levels deep, rules)]
        self.single: dict[str, list[tuple[Any, list[PatternRule]]]] = {}
        self.multi: list[tuple[PatternRule, frozenset[str]]] = []
        groups: dict[str, dict[Any, list[PatternRule]]] = {}
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
        self.memo: dict[Node, list[tuple[PatternRule, Match]]] = {}
        # structure of a node's cone (what a single-root pattern can see) -> rules that matched
        self.by_structure: dict[tuple, list[PatternRule]] = {}
        self._reach: dict[int, list[dict[str, int]]] = {}  # multi-root rule -> per root
        self._sigs: dict[tuple[int, int], Any] = {}
        self.built: dict[int, tuple[Match, "list[Value] | MatchFail"]] = {}

    def build(self, r: PatternRule, m: Match) -> "list[Value] | MatchFail":
        """The rule's replacement for a match (memoized: it depends on the match only)."""
        hit = self.built.get(id(m))
        if hit is not None and hit[0] is m:
            return hit[1]
        vals = r.replacement(m)
        self.built[id(m)] = (m, vals)
        return vals

    def _passes(self, r: PatternRule, m: Match, anchor: Node) -> bool:
        """Whether ``m`` passes ``r``'s check; a failure is counted (and traced) with its
        reason."""
        res = r.checked(m)
        if not isinstance(res, MatchFail):
            return True
        key = (r.name, res.reason)
        self.failures[key] = self.failures.get(key, 0) + 1
        if self.tracer is not None:
            self.tracer.record(Candidate.of(r, anchor, res, r.pass_name or "search"))
        return False

    # ---- single-root rules -------------------------------------------------------------------
    def at(self, n: Node) -> list[tuple[PatternRule, Match]]:
        """The single-root matches anchored at ``n`` (memoized)."""
        got = self.memo.get(n)
        if got is not None:
            return got
        if n.op not in self.single:
            self.memo[n] = []
            return []
        key = cone_key(n, self.depth)
        known = self.by_structure.get(key)
        out: list[tuple[PatternRule, Match]] = []
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

    def _first(self, r: PatternRule, n: Node) -> list[tuple[PatternRule, Match]]:
        """The first structural match of single-root rule ``r`` at ``n`` when it passes the
        check, as a 0- or 1-element list."""
        for m in match_roots_with(r.lhs, lambda i, bound: [n]):
            return [(r, m)] if self._passes(r, m, n) else []
        return []

    # ---- every rule --------------------------------------------------------------------------
    def matches(self, g: Graph, parent: MultiMatches | None = None,
                keep: list[MultiMatches] | None = None
                ) -> Iterator[tuple[PatternRule, Match]]:
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

    # ---- multi-root rules --------------------------------------------------------------------
    def multi_matches(self, g: Graph, parent: MultiMatches | None) -> MultiMatches:
        pos = {id(n) for n in g.nodes}
        by_op = index_by_op(g)
        users = g.users()
        out: list[tuple[PatternRule, Match]] = []
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

    def _anchors(self, r: PatternRule, i: int, by_op: dict[str, list[Node]]) -> list[Node]:
        """Nodes of ``by_op`` that root ``i`` of ``r`` can match (ops two levels deep)."""
        sig = self._sigs.get((id(r), i))
        if sig is None:
            sig = _sig(r.lhs[i], SIG_DEPTH)
            self._sigs[(id(r), i)] = sig
        if sig is None:
            return []
        return [a for a in by_op.get(sig[0], ()) if sig[1] < len(a.out_types)
                and _fits(sig, Value(a, sig[1]), self.commutative)]

    def _join(self, r: PatternRule, first: int, anchor: Node, by_op: dict[str, list[Node]],
              users: Users) -> Iterator[Match]:
        """Matches of multi-root rule ``r`` with root ``first`` at ``anchor``. Each further root
        is looked for among the users (a few levels down) of a variable an earlier root bound,
        instead of among all nodes of its op."""
        reach = self._reach.get(id(r))
        if reach is None:
            reach = [_var_depths(t) for t in r.lhs]
            self._reach[id(r)] = reach

        def candidates(i: int, m: Match) -> Sequence[Node]:
            if i == first:
                return [anchor]
            pn, _ = root_node(r.lhs[i])
            assert pn is not None
            best: tuple[int, Value] | None = None
            for name, d in reach[i].items():
                v = m.values.get(name)
                if v is not None and (best is None or d < best[0]):
                    best = (d, v)
            if best is None:
                return by_op.get(pn.op, [])
            d, v = best
            return [u for u in _users_within(users, v, d) if u.op == pn.op]

        return match_roots_with(r.lhs, candidates, first)

    def _add(self, r: PatternRule, m: Match, seen: set[tuple[int, frozenset]],
             out: list[tuple[PatternRule, Match]]) -> None:
        key = (id(r), frozenset((id(v.node), v.index) for v in m.roots))
        if key in seen:
            return
        seen.add(key)
        if self._passes(r, m, m.roots[0].node):
            out.append((r, m))


def _users_within(users: Users, v: Value, depth: int) -> list[Node]:
    """Nodes reading ``v`` and their users, ``depth`` levels down, each once (first found
    first)."""
    level = [u for u, j in users.get(v.node, ()) if u.inputs[j].index == v.index]
    found: dict[int, Node] = {}
    for _ in range(depth):
        nxt = []
        for u in level:
            if id(u) not in found:
                found[id(u)] = u
                nxt.extend(w for w, _ in users.get(u, ()))
        level = nxt
    return list(found.values())
