"""Driving hypothesis over random graphs: one run records every outcome, one run shrinks.

Why hypothesis and not a seeded generator: the graphs come from
``tests.strategy_families.model_graphs`` (hypothesis strategies), and a failure must shrink to a
minimal graph, which hypothesis does from the choice sequence. A run is reproducible:
``derandomize=True`` (CI: the seed is a hash of the test) or ``hypothesis.seed(S)`` (script
mode), never the example database; the search is budgeted in graphs expanded, not seconds.

``survey`` (phase generate only) checks ``n`` graphs and tallies every outcome without stopping
at a failure. ``shrink`` reruns the same sequence with a body that raises on a failure, so
hypothesis stops at the first failing graph and shrinks it; every failing call writes
``regressions/new_<kind>.ir``, the minimal one last.
"""
from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class RunConfig:
    """One run: ``n`` graphs from hypothesis seed ``seed`` (None: derandomized), the search's
    budget in graphs expanded per random graph, ops drawn per graph, empty dims or not."""

    n: int
    seed: int | None = None
    search_graphs: int = DEFAULT_SEARCH_GRAPHS
    max_ops: int = 10
    zero_dims: bool = False

    def command(self) -> str:
        """The script-mode command line that repeats this run."""
        s = (f"python -m tests.random_graphs.run --n {self.n} --seed {self.seed} "
             f"--search-graphs {self.search_graphs} --max-ops {self.max_ops}")
        return s + (" --zero-dims" if self.zero_dims else "")


class GraphFailed(AssertionError):
    """A random graph failed the equivalence check."""


def _decorate(fn: Callable[[Graph], None], cfg: RunConfig, phases: list[Phase]
              ) -> Callable[[], None]:
    st = settings(max_examples=cfg.n, deadline=None, database=None,
                  derandomize=cfg.seed is None, phases=phases, suppress_health_check=SUPPRESS,
                  print_blob=False)
    test = st(given(model_graphs(cfg.max_ops, cfg.zero_dims))(fn))
    return seed(cfg.seed)(test) if cfg.seed is not None else test


def survey(cfg: RunConfig, tally: Tally | None = None,
           progress: Callable[[Tally], None] | None = None,
           on_failure: Callable[[Graph, Outcome], None] | None = None) -> Tally:
    """Check ``cfg.n`` random graphs and tally them; ``on_failure`` sees each failing graph."""
    t = tally if tally is not None else Tally()

    def body(g: Graph) -> None:
        out = check_graph(g, search_graphs=cfg.search_graphs)
        t.add(g, out)
        if out.failed and on_failure is not None:
            on_failure(g, out)
        if progress is not None:
            progress(t)

    _decorate(body, cfg, [Phase.generate])()
    return t


def shrink(cfg: RunConfig, directory: Path = REGRESSIONS, found_by: str = "",
           tally: Tally | None = None) -> None:
    """Check up to ``cfg.n`` random graphs, stopping at the first failure; hypothesis shrinks
    it and raises ``GraphFailed`` with the minimal graph, written under ``directory``."""

    def body(g: Graph) -> None:
        out = check_graph(g, search_graphs=cfg.search_graphs)
        if tally is not None:
            tally.add(g, out)
        if out.failed:
            note(graph_text(g))
            path = write_failure(g, out, found_by or cfg.command(), directory)
            raise GraphFailed(f"{out.kind}: {out.reason} (graph written to {path})\n"
                              f"{out.detail}")

    _decorate(body, cfg, [Phase.generate, Phase.shrink])()
