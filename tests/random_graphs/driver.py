"""Driving hypothesis over random graphs: one run records every outcome, one run shrinks.

Why hypothesis and not a seeded generator: the graphs come from ``tests.strategy_families.model_graphs``
(hypothesis strategies), and a failure must shrink to a minimal graph, which hypothesis does
from the choice sequence. A run is reproducible: ``derandomize=True`` (CI: the seed is a hash
of the test) or ``hypothesis.seed(S)`` (script mode), never the example database.

``survey`` (phase generate only) checks ``n`` graphs and tallies every outcome without stopping
at a failure. ``shrink`` reruns the same sequence with a body that raises on a failure, so
hypothesis stops at the first failing graph and shrinks it; every failing call writes
``regressions/new_<kind>.ir``, the minimal one last.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from hypothesis import HealthCheck, Phase, given, note, seed, settings

from graphopt.ir.graph import Graph
from tests.strategy_families import model_graphs

from .equivalence import DEFAULT_SEARCH_GRAPHS, Outcome, check_graph
from .regress import REGRESSIONS, graph_text, write_failure
from .tally import Tally

SUPPRESS = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
            HealthCheck.large_base_example]


class GraphFailed(AssertionError):
    """A random graph failed the equivalence check."""


def _settings(n: int, phases: list[Phase], derandomize: bool) -> settings:
    return settings(max_examples=n, deadline=None, database=None, derandomize=derandomize,
                    phases=phases, suppress_health_check=SUPPRESS, print_blob=False)


def _decorate(fn: Callable[[Graph], None], n: int, phases: list[Phase],
              rng_seed: int | None) -> Callable[[], None]:
    test = settings(_settings(n, phases, rng_seed is None))(given(model_graphs())(fn))
    return seed(rng_seed)(test) if rng_seed is not None else test


def survey(n: int, rng_seed: int | None = None, search_graphs: int = DEFAULT_SEARCH_GRAPHS,
           tally: Tally | None = None, progress: Callable[[Tally], None] | None = None,
           failures: list[tuple[Graph, Outcome]] | None = None) -> Tally:
    """Check ``n`` random graphs (seed ``rng_seed``; None: derandomized) and tally them; failing
    graphs are appended to ``failures`` with their outcomes."""
    t = tally if tally is not None else Tally()

    def body(g: Graph) -> None:
        out = check_graph(g, search_graphs=search_graphs)
        t.add(g, out)
        if out.failed and failures is not None:
            failures.append((g, out))
        if progress is not None:
            progress(t)

    _decorate(body, n, [Phase.generate], rng_seed)()
    return t


def shrink(n: int, rng_seed: int | None = None, search_graphs: int = DEFAULT_SEARCH_GRAPHS,
           directory: Path = REGRESSIONS, found_by: str = "",
           tally: Tally | None = None) -> None:
    """Check up to ``n`` random graphs, stopping at the first failure; hypothesis shrinks it and
    raises ``GraphFailed`` with the minimal graph, written under ``directory``."""

    def body(g: Graph) -> None:
        out = check_graph(g, search_graphs=search_graphs)
        if tally is not None:
            tally.add(g, out)
        if out.failed:
            note(graph_text(g))
            path = write_failure(g, out, found_by, directory)
            raise GraphFailed(f"{out.kind}: {out.reason} (graph written to {path})\n"
                              f"{out.detail}")

    _decorate(body, n, [Phase.generate, Phase.shrink], rng_seed)()
