"""Passes and pipelines.

A ``Pass`` is a named ``Graph -> PassResult`` function. ``Pipeline`` runs a list of passes (to a
fixed point when asked), times each, runs the IR verifier after each and, when a pass raises or
leaves an invalid graph, raises ``PassError`` naming the pass, the passes that ran before it and
the culprit node.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..errors import GraphOptError, PassError
from ..ir.graph import Graph

Stats = dict[str, Any]  # JSON-able: counters (int), notes (lists of str)


@dataclass
class PassResult:
    """What one pass returns: the new graph, whether it changed, and its counters by name."""

    graph: Graph
    changed: bool
    stats: Stats = field(default_factory=dict)


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

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "iteration": self.iteration,
                "seconds": round(self.seconds, 6), "changed": self.changed,
                "stats": self.stats, "nodes_before": self.nodes_before,
                "nodes_after": self.nodes_after, "nodes_dropped": self.nodes_dropped}


@dataclass
class PipelineResult:
    graph: Graph
    changed: bool
    records: list[PassRecord]
    iterations: int

    def stats(self) -> Stats:
        """Counters summed over all runs of all passes (notes concatenated)."""
        return merge_stats([r.stats for r in self.records])


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
        return PassResult(r.graph, r.changed, r.stats())

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
                                          len(before_ids - after_ids)))
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


def merge_stats(all_stats: Sequence[Stats]) -> Stats:
    """Sum numeric counters and concatenate list-valued notes."""
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
