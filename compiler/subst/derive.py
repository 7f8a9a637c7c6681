"""Ruler-style derivability pruning: drop a rule that the rules kept before it already prove.

Rules are taken smallest first (ops of both sides, then name). A rule is dropped when the
search could make its rewrite with the rules kept so far: its two sides, as graphs over the
rule's free inputs at the stored instance (each dim a distinct prime, so a pattern binds a dim
only as the rule states it), are rewritten breadth-first by the kept rules in the directions the
search uses them (``search/ruleset.py``: forward, and backward where the rhs reads every lhs
input) up to ``depth`` rewrites and ``max_graphs`` graphs from each side, until the two sides
meet. Matching is graphopt's own (``rewrite/index.Matcher`` over ``PatternRule``s built by
``from_subst``); graphs are compared by their outputs' hash-consed structure, commutative
operands in a fixed order (the matcher takes them in either order).

Meeting in the middle is a derivation only in the search's directions: the lhs reaches some
graph M by any rewrites, and M leads back to the rhs, which holds when the rhs reached M
through rewrites whose reverse the search also has (``Step.invertible``). A rule used in both
directions needs that both ways. Only rewrites whose sides use the rule's own ops are tried,
and (``max_growth``, default 0) only graphs with at most that many ops more than the rule's
larger side are reached: the search rarely keeps a candidate that costs more. A derivation
these bounds miss only keeps a rule.

``keep``: names of rules that are kept whatever (the rules the benchmarks' searches apply,
``bench/rule_usage.py``): a derivation in several steps is a deeper search, and a search under
a budget may not find it.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from ..ir.graph import Graph
from ..ir.node import Node
from ..ops.registry import get_op
from ..rewrite.index import Matcher
from ..rewrite.match import Match
from ..rewrite.rule import PatternRule, from_subst, reversible
from ..search.backtrack import rewrite_once
from .rulefile import SubstRule

DEFAULT_DEPTH = 3
DEFAULT_MAX_GRAPHS = 300
# a derivation passes only through graphs at most this many ops larger than the rule's larger
# side: the search prices a rewrite by its cost and drops a candidate costing more than alpha
# times the best (``search/backtrack.py``), so it rarely walks through a bigger graph
DEFAULT_MAX_GROWTH: int | None = 0
# kept rules are matched by one Matcher over most of them plus one over the latest few: the
# big one is rebuilt (and its memo of matches per node dropped) when the latest reach this many
REBUILD_EVERY = 64

Progress = Callable[[str], None]


def order_key(r: SubstRule) -> tuple[int, int, str]:
    """Smallest first: ops of both sides, then the larger side, then name."""
    return (r.lhs_ops + r.rhs_ops, max(r.lhs_ops, r.rhs_ops), r.name)


def _ops(g: Graph) -> int:
    return sum(1 for n in g.nodes if n.op != "input")


def ops_of(g: Graph) -> frozenset[str]:
    return frozenset(n.op for n in g.nodes if n.op != "input")


@dataclass(frozen=True)
class Step:
    """One direction of a kept rule as the search uses it."""

    rule: PatternRule
    rhs_ops: frozenset[str]  # ops the rewrite builds
    invertible: bool  # the search also has the opposite direction


def steps_of(r: SubstRule) -> list[Step]:
    """The directions of ``r`` the search uses: forward, and backward when the rhs reads every
    lhs input; a direction whose pattern side has an output that is a bare input matches
    anything and is not used (``search/ruleset.py`` makes the same choices)."""
    fwd_ok, back_ok = _no_bare_output(r.lhs), _no_bare_output(r.rhs)
    both = reversible(r) and fwd_ok and back_ok
    out = []
    if fwd_ok:
        out.append(Step(from_subst(r), ops_of(r.rhs), both))
    if reversible(r) and back_ok:
        out.append(Step(from_subst(r, reverse=True), ops_of(r.lhs), both))
    return out


def _no_bare_output(g: Graph) -> bool:
    return all(v.node.op != "input" for v in g.outputs)


class Base:
    """The kept rules' directions and matchers over them."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.by_name: dict[str, Step] = {}
        self._big: Matcher | None = None
        self._big_n = 0  # steps the big matcher covers
        self._small: Matcher | None = None
        self._steps_of: dict[str, list[Step]] = {}

    def steps_for(self, r: SubstRule) -> list[Step]:
        """``steps_of(r)``, memoized by rule name (a check's rule is added when it is kept)."""
        got = self._steps_of.get(r.name)
        if got is None:
            got = self._steps_of[r.name] = steps_of(r)
        return got

    def add(self, r: SubstRule) -> None:
        for s in self.steps_for(r):
            self.steps.append(s)
            self.by_name[s.rule.name] = s
        self._small = None
        if len(self.steps) - self._big_n >= REBUILD_EVERY:
            self._big, self._big_n = None, 0

    def matchers(self) -> list[Matcher]:
        if self._big is None and len(self.steps) >= REBUILD_EVERY:
            self._big_n = len(self.steps)
            self._big = Matcher([s.rule for s in self.steps])
        if self._small is None:
            self._small = Matcher([s.rule for s in self.steps[self._big_n:]])
        return [m for m in (self._big, self._small) if m is not None]

    def matches(self, g: Graph, allowed: frozenset[str]) -> Iterator[tuple[Step, Match]]:
        """Every (direction, match) in ``g`` whose rewrite builds only ``allowed`` ops."""
        for m in self.matchers():
            for r, mt in m.matches(g):
                s = self.by_name[r.name]
                if s.rhs_ops <= allowed:
                    yield s, mt


class Canon:
    """Structural keys of graph outputs: equal keys, equal graphs (commutative operands in a
    fixed order). Holds the nodes it has seen (a node's id could otherwise name a later node):
    one instance per check."""

    def __init__(self) -> None:
        self.ids: dict[Node, int] = {}  # nodes hash by identity
        self.table: dict[tuple, int] = {}

    def node(self, n: Node) -> int:
        got = self.ids.get(n)
        if got is not None:
            return got
        ins = [(self.node(v.node), v.index) for v in n.inputs]
        if len(ins) == 2 and get_op(n.op).commutative:
            ins.sort()
        k = self.table.setdefault((n.op, n.attrs, tuple(ins)), len(self.table))
        self.ids[n] = k
        return k

    def key(self, g: Graph) -> tuple:
        return tuple((self.node(v.node), v.index) for v in g.outputs)


Trail = tuple[str, ...]  # names of the rule directions applied, in order


@dataclass
class Side:
    """Graphs reached from one side of a rule: key -> (graph, reached through invertible
    rewrites only, the rewrites)."""

    graphs: dict[tuple, tuple[Graph, bool, Trail]] = field(default_factory=dict)
    frontier: list[tuple[Graph, bool, Trail]] = field(default_factory=list)

    def add(self, key: tuple, g: Graph, inv: bool, path: Trail) -> bool:
        """Record ``g``; whether it is new (or now known reachable invertibly)."""
        old = self.graphs.get(key)
        if old is not None and (old[1] or not inv):
            return False
        self.graphs[key] = (g, inv, path)
        self.frontier.append((g, inv, path))
        return True


@dataclass
class Check:
    """The outcome of one derivability check."""

    derivable: bool
    graphs: int  # graphs reached from both sides
    depth: int  # rewrites from each side when the sides met (or the depth searched)
    # forward: the rewrites from the lhs and from the rhs (invertible) to the graph they meet at
    paths: tuple[Trail, Trail] = ((), ())


def derivable(r: SubstRule, base: Base, depth: int = DEFAULT_DEPTH,
              max_graphs: int = DEFAULT_MAX_GRAPHS,
              max_growth: int | None = DEFAULT_MAX_GROWTH) -> Check:
    """Whether the rewrites of ``r`` (both ways when the search uses it both ways) follow from
    the rules of ``base`` within ``depth`` rewrites and ``max_graphs`` graphs per side, through
    graphs of at most ``max_growth`` ops more than the larger side (None: any size)."""
    canon = Canon()
    limit = None if max_growth is None else max(r.lhs_ops, r.rhs_ops) + max_growth
    allowed = ops_of(r.lhs) | ops_of(r.rhs)
    dirs = base.steps_for(r)
    need_fwd = any(not s.rule.name.endswith("~") for s in dirs)
    need_back = any(s.rule.name.endswith("~") for s in dirs)
    lhs, rhs = Side(), Side()
    lhs.add(canon.key(r.lhs), r.lhs, True, ())
    rhs.add(canon.key(r.rhs), r.rhs, True, ())
    paths: list[tuple[Trail, Trail]] = []

    def met() -> bool:
        # forward: lhs ->* M and rhs ->* M through invertible rewrites (so M ->* rhs);
        # backward: the mirror image (possibly at another M)
        fwd, back = not need_fwd, not need_back
        for k, (_, inv_r, path_r) in rhs.graphs.items():
            got = lhs.graphs.get(k)
            if got is not None:
                if inv_r and not paths:
                    paths.append((got[2], path_r))
                fwd, back = fwd or inv_r, back or got[1]
                if fwd and back:
                    return True
        return False

    if met():
        return Check(True, 2, 0, paths[0] if paths else ((), ()))
    for level in range(1, depth + 1):
        grew = False
        for side in (lhs, rhs):
            todo, side.frontier = side.frontier, []
            for g, inv, path in todo:
                if len(side.graphs) >= max_graphs:
                    break
                pos = {id(n): i for i, n in enumerate(g.nodes)}
                for s, m in base.matches(g, allowed):
                    ng = rewrite_once(g, s.rule, m, pos)
                    if isinstance(ng, str) or (limit is not None and _ops(ng) > limit):
                        continue
                    grew |= side.add(canon.key(ng), ng, inv and s.invertible,
                                     path + (s.rule.name,))
                    if len(side.graphs) >= max_graphs:
                        break
            if met():
                return Check(True, len(lhs.graphs) + len(rhs.graphs), level,
                             paths[0] if paths else ((), ()))
        if not grew:
            break
    return Check(False, len(lhs.graphs) + len(rhs.graphs), depth)


@dataclass
class PruneReport:
    """What pruning kept and dropped, and how long it took."""

    depth: int
    max_graphs: int
    max_growth: int | None
    before: int = 0
    kept: int = 0
    dropped: int = 0
    kept_used: int = 0  # derivable rules kept because a benchmark's search applies them
    pinned: list[str] = field(default_factory=list)  # names from ``keep`` among the rules
    graphs: int = 0  # graphs reached over all checks
    seconds: float = 0.0
    by_file: dict[str, tuple[int, int]] = field(default_factory=dict)  # stem -> (before, after)
    derived: dict[str, int] = field(default_factory=dict)  # dropped rule -> rewrites per side

    def table(self) -> str:
        w = max([len(k) for k in self.by_file] + [5])
        lines = [f"{'file':{w}s}  {'before':>7s}  {'after':>7s}"]
        for k, (b, a) in sorted(self.by_file.items()):
            lines.append(f"{k:{w}s}  {b:7d}  {a:7d}")
        lines.append(f"{'total':{w}s}  {self.before:7d}  {self.kept:7d}")
        growth = "any size" if self.max_growth is None else f"growth <= {self.max_growth} ops"
        lines.append(f"pruned {self.dropped} derivable rules (depth {self.depth}, at most "
                     f"{self.max_graphs} graphs a side, {growth}; {self.graphs} graphs in all), "
                     f"kept "
                     f"{self.kept_used} derivable rules the benchmarks' searches apply, in "
                     f"{self.seconds:.1f}s")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"depth": self.depth, "max_graphs": self.max_graphs,
                "max_growth": self.max_growth, "before": self.before,
                "kept": self.kept, "dropped": self.dropped, "kept_used": self.kept_used,
                "graphs": self.graphs, "seconds": round(self.seconds, 1),
                "keep": self.pinned,
                "by_file": {k: {"before": b, "after": a}
                            for k, (b, a) in sorted(self.by_file.items())}}

    def manifest(self) -> dict:
        """``as_dict`` without the time: what the rule directory records (deterministic)."""
        return {k: v for k, v in self.as_dict().items() if k != "seconds"}


def prune(rules: Iterable[SubstRule], depth: int = DEFAULT_DEPTH,
          max_graphs: int = DEFAULT_MAX_GRAPHS, keep: Iterable[str] = (),
          max_growth: int | None = DEFAULT_MAX_GROWTH,
          progress: Progress | None = None) -> tuple[list[SubstRule], PruneReport]:
    """The rules not derivable from smaller kept ones (plus those named in ``keep``), in the
    order given by ``order_key``; and the report. Deterministic: the result depends on the set
    of rules, not their order."""
    say = progress or (lambda s: None)
    pinned = {k.rstrip("~") for k in keep}
    todo = sorted(rules, key=order_key)
    names = [r.name for r in todo]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[:5]
        raise ValueError(f"duplicate rule names: {', '.join(dup)}")
    rep = PruneReport(depth, max_graphs, max_growth, before=len(todo),
                      pinned=sorted(pinned & set(names)))
    base = Base()
    kept: list[SubstRule] = []
    t0 = time.perf_counter()
    for i, r in enumerate(todo):
        c = derivable(r, base, depth, max_graphs, max_growth)
        rep.graphs += c.graphs
        if c.derivable and r.name not in pinned:
            rep.dropped += 1
            rep.derived[r.name] = c.depth
        else:
            rep.kept_used += c.derivable
            kept.append(r)
            base.add(r)
        if (i + 1) % 100 == 0:
            say(f"{i + 1}/{len(todo)} rules, {len(kept)} kept")
    rep.seconds = time.perf_counter() - t0
    rep.kept = len(kept)
    for r in todo:
        b, a = rep.by_file.get(r.source, (0, 0))
        rep.by_file[r.source] = (b + 1, a)
    for r in kept:
        b, a = rep.by_file[r.source]
        rep.by_file[r.source] = (b, a + 1)
    return kept, rep


def by_source(rules: Sequence[SubstRule]) -> dict[str, list[SubstRule]]:
    """Rules grouped by file stem, each file sorted by name (as the generator writes them)."""
    out: dict[str, list[SubstRule]] = {}
    for r in rules:
        out.setdefault(r.source, []).append(r)
    for v in out.values():
        v.sort(key=lambda r: r.name)
    return out


def read_used(path: Path | str) -> set[str]:
    """Rule names from a usage file (``bench/rule_usage.py``: {"used": [...]}, or a list)."""
    d = json.loads(Path(path).read_text())
    names = d["used"] if isinstance(d, dict) else d
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: expected a list of rule names or {{\"used\": [...]}}")
    return {n.rstrip("~") for n in names}
