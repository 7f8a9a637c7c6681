"""CI's slice of the random-graph equivalence run: 500 graphs through the full pipeline.

Reproducible: hypothesis with ``derandomize=True`` (the seed is derived from the test, no
example database), the search budgeted in graphs expanded rather than seconds. A failing graph
makes the test fail; hypothesis shrinks it and the minimal graph is written to
``regressions/new_<kind>.ir`` (see regress.py). The same run also tallies what fired: the slice
must reach the fusion passes, the canonical forms, cleanup and the search, so a strategy that
stopped producing the shapes they rewrite fails here rather than silently testing nothing.
"""
from __future__ import annotations

from tests.random_graphs.driver import RunConfig, shrink
from tests.random_graphs.tally import Tally

SLICE = 500
# passes (and the search) the slice must see fire at least once
MUST_FIRE = {"constant_fold", "cse", "remove_noops", "canonicalize", "gelu_fusion",
             "rms_norm_fusion", "silu_fusion", "attention_flash", "matmul_fusion", "search"}


def test_random_graph_slice() -> None:
    tally = Tally()
    shrink(RunConfig(SLICE), tally=tally, found_by="tests/random_graphs/test_slice.py")
    print(tally.render(f"random-graph equivalence: CI slice of {SLICE}"))
    assert tally.graphs == SLICE
    assert tally.failures == 0
    assert tally.kinds["ok"] >= 0.9 * SLICE, dict(tally.kinds)
    missing = MUST_FIRE - tally.pass_families()
    assert not missing, f"never fired over the slice: {sorted(missing)}"
