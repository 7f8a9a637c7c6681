"""Golden-IR rewrite checks shared by the pass tests: match count, golden IR, numeric
equivalence, verifier clean."""
from __future__ import annotations

from typing import Any, Mapping

from graphopt.check import check_graphs
from graphopt.ir.graph import Graph
from graphopt.ir.text import parse, print_graph
from graphopt.ir.verify import verify
from graphopt.rewrite.passes import Pass, Pipeline


def counters(stats: Mapping[str, Any]) -> dict[str, int]:
    """The non-zero integer counters of a pass's stats (notes and node totals left out)."""
    return {k: v for k, v in stats.items()
            if isinstance(v, int) and not isinstance(v, bool) and v and k != "nodes"}


def assert_rewrite(p: Pass, src: str, golden: str, counts: Mapping[str, int],
                   inputs: Mapping[str, Any] | None = None) -> Graph:
    """Run ``p`` once on the graph ``src`` and check the four things a rewrite test checks."""
    g = parse(src)
    verify(g)
    res = Pipeline([p]).run_traced(g)  # verifies the result too
    stats = res.records[0].stats
    assert counters(stats) == dict(counts), f"stats {stats}"
    got, want = print_graph(res.graph), print_graph(parse(golden))
    assert got == want, f"got:\n{got}\nwant:\n{want}"
    verify(res.graph)
    check_graphs(g, res.graph, inputs)
    return res.graph
