"""Every graph a random run once got wrong (tests/random_graphs/regressions/*.ir), shrunk, now
passes the full pipeline with the written model equal to the original."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.random_graphs.equivalence import check_graph
from tests.random_graphs.regress import load_regression, regression_files


@pytest.mark.parametrize("path", regression_files(), ids=lambda p: p.stem)
def test_regression(path: Path) -> None:
    g = load_regression(path)
    out = check_graph(g)
    assert out.kind == "ok", f"{out.kind}: {out.reason}\n{out.detail}"

