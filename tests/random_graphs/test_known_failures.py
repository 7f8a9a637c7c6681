"""Graphs the random runs found that still fail, each outside this part's files (the export
opset; ONNX Runtime's kernels at a raised opset): strict xfails, so the fix that makes one pass
fails here until its file moves to regressions/ (where it is then checked for good)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.random_graphs.equivalence import check_graph
from tests.random_graphs.regress import load_regression, regression_files

KNOWN = Path(__file__).parent / "known_failures"


@pytest.mark.xfail(strict=True, reason="a known bug: see the file's header")
@pytest.mark.parametrize("path", regression_files(KNOWN), ids=lambda p: p.stem)
def test_known_failure(path: Path) -> None:
    out = check_graph(load_regression(path))
    assert out.kind == "ok", f"{out.kind}: {out.reason}"
