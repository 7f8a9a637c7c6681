"""Passes and pipelines.

A ``Pass`` is a named ``Graph -> PassResult`` function. ``RewritePass`` is the pass every rewrite
is: a list of rules applied by the driver (``sweep`` or ``local``), whose result carries the
candidates the rules reported. ``Pipeline`` runs a list of passes (to a fixed point when asked),
times each, runs the IR verifier after each, collects the candidates and, when a pass raises or
leaves an invalid graph, raises ``PassError`` naming the pass, the passes that ran before it and
the culprit node.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..errors import GraphOptError, PassError
from ..ir.graph import Graph
from .trace import Candidate

Stats = dict[str, Any]  # JSON-able counters (int / float), and lists of names where a pass lists some


@dataclass(frozen=True)
class PassResult:
    """What one pass returns: the new graph, whether it changed, its counters by name, and every
    place its rules looked at (matched or not, and why)."""

    graph: Graph
    changed: bool
    stats: Mapping[str, Any] = field(default_factory=dict)
    candidates: tuple[Candidate, ...] = ()


class Pass:
    """Base class of passes. Subclasses set ``name`` and implement ``run``."""

    name: str = ""

    def run(self, g: Graph) -> PassResult:
        raise NotImplementedError(f"pass {self.name or type(self).__name__} has no run()")

    def __repr__(self) -> str:
        return f"<pass {self.name}>"


class FunctionPass(Pass):
    """A pass made from a function ``Graph -> PassResult``."""

    def __init__(self, name: str, fn: Callable[[Graph], PassResult]) -> None:
        self.name = name
        self.fn = fn

    def run(self, g: Graph) -> PassResult:
        return self.fn(g)


@dataclass
class PassRecord:
    """One run of one pass inside a pipeline."""

    name: str
    iteration: int
    seconds: float
    changed: bool
    stats: Stats
    nodes_before: int
    nodes_after: int
    nodes_dropped: int  # nodes of the input graph that are gone from the output graph
    candidates: tuple[Candidate, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "iteration": self.iteration,
                "seconds": round(self.seconds, 6), "changed": self.changed,
                "stats": self.stats, "nodes_before": self.nodes_before,
                "nodes_after": self.nodes_after, "nodes_dropped": self.nodes_dropped,
                "not_rewritten": [c.to_dict() for c in self.candidates if not c.matched]}


@dataclass
class PipelineResult:
    graph: Graph
    changed: bool
    records: list[PassRecord]
    iterations: int

    def stats(self) -> Stats:
        """Counters summed over all runs of all passes (lists concatenated)."""
        return merge_stats([r.stats for r in self.records])

    @property
    def candidates(self) -> list[Candidate]:
        """Every place a rule looked at, in the order the passes ran (the last round of a
        fixed-point pipeline for each pass)."""
        last: dict[str, int] = {}
        for r in self.records:
            last[r.name] = r.iteration
        return [c for r in self.records if r.iteration == last[r.name] for c in r.candidates]


ProgressFn = Callable[[str, int], None]  # (pass name, iteration), called before each pass


class Pipeline(Pass):
    """Runs passes in order, verifying the IR after each.

    ``fixed_point=True`` repeats the whole list until no pass changes the graph (at most
    ``max_iterations`` rounds; running out of rounds is not an error, it is recorded in the
    result's ``iterations``). A pipeline is itself a pass, so pipelines nest.
    """

    def __init__(self, passes: Sequence[Pass], *, name: str = "pipeline",
                 fixed_point: bool = False, max_iterations: int = 8, verify: bool = True,
                 progress: ProgressFn | None = None) -> None:
        for p in passes:
            if not isinstance(p, Pass):
                raise TypeError(f"pipeline {name}: {p!r} is not a Pass")
        if max_iterations < 1:
            raise ValueError("max_iterations must be >= 1")
        self.passes = list(passes)
        self.name = name
        self.fixed_point = fixed_point
        self.max_iterations = max_iterations
        self.verify = verify
        self.progress = progress

    def run(self, g: Graph) -> PassResult:
        r = self.run_traced(g)
        return PassResult(r.graph, r.changed, r.stats(), tuple(r.candidates))

    def run_traced(self, g: Graph) -> PipelineResult:
        from ..ir.verify import verify

        records: list[PassRecord] = []
        done: list[str] = []
        any_change = False
        rounds = self.max_iterations if self.fixed_point else 1
        it = 0
        for it in range(1, rounds + 1):
            round_change = False
            for p in self.passes:
                if self.progress is not None:
                    self.progress(p.name, it)
                before = g
                t0 = time.perf_counter()
                try:
                    res = p.run(g)
                except PassError:
                    raise
                except Exception as e:
                    raise _pass_error(p.name, done, e) from e
                dt = time.perf_counter() - t0
                if not isinstance(res, PassResult):
                    raise PassError(f"pass {p.name} returned {type(res).__name__}, "
                                    f"not PassResult", where=f"pass {p.name}")
                if self.verify:
                    try:
                        verify(res.graph)
                    except GraphOptError as e:
                        raise _pass_error(p.name, done, e, invalid=True) from e
                changed = bool(res.changed) and res.graph != before
                before_ids = {id(n) for n in before.nodes}
                after_ids = {id(n) for n in res.graph.nodes}
                records.append(PassRecord(p.name, it, dt, changed, dict(res.stats),
                                          len(before.nodes), len(res.graph.nodes),
                                          len(before_ids - after_ids),
                                          tuple(res.candidates)))
                done.append(p.name)
                g = res.graph
                round_change |= changed
            any_change |= round_change
            if not round_change:
                break
        return PipelineResult(g, any_change, records, it)


def _pass_error(name: str, done: list[str], e: Exception, invalid: bool = False) -> PassError:
    before = ", ".join(done) if done else "none"
    what = "left an invalid graph" if invalid else "failed"
    if isinstance(e, GraphOptError):
        msg, where, ctx = e.message, e.where, e.context
    else:
        msg, where, ctx = f"{type(e).__name__}: {e}", None, None
    err = PassError(f"pass {name} {what} (after passes: {before}): {msg}",
                    where=where or f"pass {name}", context=ctx)
    err.pass_name = name  # type: ignore[attr-defined]
    err.passes_before = list(done)  # type: ignore[attr-defined]
    return err


def merge_stats(all_stats: Sequence[Mapping[str, Any]]) -> Stats:
    """Sum numeric counters and concatenate list values."""
    out: Stats = {}
    for s in all_stats:
        for k, v in s.items():
            if isinstance(v, bool) or not isinstance(v, (int, float, list)):
                out[k] = v
            elif isinstance(v, list):
                out[k] = list(out.get(k, [])) + list(v)
            else:
                out[k] = out.get(k, 0) + v
    return out


class RewritePass(Pass):
    """A pass made of rules: the driver applies them (``mode`` "sweep" or "local", see
    ``rewrite/driver.py``) and the result carries their candidates.

    Stats: for each candidate kind (a rule's ``place``), ``<place>_fused`` / ``<place>_not_fused``
    (fusion rules) or ``<place>_rewritten`` / ``<place>_not_rewritten`` (others); rules without a
    place, and rules reporting only their refusals, count their rewrites under their own name.
    Subclasses add counters in ``summarize``.
    """

    mode: str = "sweep"
    rules: Sequence[Any] = ()

    def __init__(self, name: str = "", rules: Sequence[Any] = (), mode: str | None = None,
                 options: Mapping[str, Any] | None = None) -> None:
        if name:
            self.name = name
        if rules:
            self.rules = list(rules)
        if mode is not None:
            self.mode = mode
        if self.mode not in ("sweep", "local"):
            raise ValueError(f"pass {self.name}: mode must be 'sweep' or 'local'")
        self.options: dict[str, Any] = dict(options or {})

    def run(self, g: Graph) -> PassResult:
        from .driver import local, sweep

        fn = sweep if self.mode == "sweep" else local
        out = fn(g, self.rules, self.options, pass_name=self.name)
        stats: Stats = {}
        quiet = {r.name for r in self.rules if not r.report_matches}
        for r in self.rules:
            if (not r.place or r.name in quiet) and out.applied.get(r.name):
                stats[r.name] = out.applied[r.name]
        for c in out.candidates:
            if c.rule in quiet:
                continue  # refusals only: the pass's summarize counts them
            ok, bad = ("_fused", "_not_fused") if c.rule_kind == "fusion" else (
                "_rewritten", "_not_rewritten")
            for suffix in (ok, bad):
                stats.setdefault(c.kind + suffix, 0)
            stats[c.kind + (ok if c.matched else bad)] += 1
        stats.update(self.summarize(g, out.graph, out.candidates))
        return PassResult(out.graph, out.changed, stats, tuple(out.candidates))

    def summarize(self, before: Graph, after: Graph, candidates: Sequence[Candidate]
                  ) -> Stats:
        """Extra counters of this pass (default: none)."""
        return {}
