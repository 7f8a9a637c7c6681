"""Regression files: a failing random graph, shrunk, as text IR under ``regressions/``.

A file holds ``#`` header lines (the outcome kind, its reason, how it was found) and then the
graph in text form with every constant inline (``graphopt.ir.text``), so it is a complete
test case on its own. A failing example is written to ``regressions/new_<kind>.ir``, replaced
by each later failure of that kind: hypothesis replays the minimal failing example last, so
what remains is the shrunk graph. Once the bug is fixed, rename the file after the bug; every
``*.ir`` file there is checked by ``test_regressions.py``. A failure whose fix lies outside
this part goes to ``known_failures/`` instead (strict xfails in ``test_known_failures.py``).
"""
from __future__ import annotations

from pathlib import Path

from graphopt.ir.graph import Graph
from graphopt.ir.text import parse, print_graph

from .equivalence import Outcome

REGRESSIONS = Path(__file__).parent / "regressions"
INLINE_ALL = 1 << 30  # print every constant's data inline


def graph_text(g: Graph) -> str:
    """The graph as text IR with all constant data inline (round-trips through ``parse``)."""
    return print_graph(g, inline_limit=INLINE_ALL)


def write_failure(g: Graph, outcome: Outcome, found_by: str,
                  directory: Path = REGRESSIONS) -> Path:
    """Write ``g`` as ``new_<kind>.ir`` with the outcome in its header; returns the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"new_{outcome.kind}.ir"
    head = [f"# kind: {outcome.kind}", f"# reason: {outcome.reason}", f"# found by: {found_by}"]
    head += [f"# | {ln}" for ln in outcome.detail.splitlines()[-12:]]
    path.write_text("\n".join(head) + "\n" + graph_text(g) + "\n")
    return path


def load_regression(path: Path) -> Graph:
    """The graph of a regression file (its ``#`` header lines skipped)."""
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    return parse("\n".join(lines))


def regression_files(directory: Path = REGRESSIONS) -> list[Path]:
    return sorted(directory.glob("*.ir"))
