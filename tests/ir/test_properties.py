"""Properties over random well-typed graphs (tests/strategies.py): the text form round-trips,
ONNX export/import preserves results, cleanup and canonicalize preserve results."""
from __future__ import annotations

import numpy as np
from hypothesis import given, note, reject, settings

from graphopt.check import check_graphs, compare_outputs, precision_dtypes, run_graph
from graphopt.ir.graph import Graph
from graphopt.ir.text import parse, print_graph_with_weights
from graphopt.ir.verify import verify
from graphopt.passes.canonicalize import Canonicalize
from graphopt.passes.cleanup import cleanup_passes
from graphopt.rewrite.passes import Pipeline
from tests.strategies import feeds_for, graphs


def _same_results(a: Graph, b: Graph, feeds: dict) -> None:
    ra, rb = run_graph(a, feeds), run_graph(b, feeds)
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


@settings(max_examples=200, deadline=None)
@given(graphs())
def test_text_round_trip(g: Graph) -> None:
    text, weights = print_graph_with_weights(g, inline_limit=4)
    note(text)
    g2 = parse(text, weights)
    verify(g2)
    text2, weights2 = print_graph_with_weights(g2, inline_limit=4)
    assert text2 == text
    assert list(weights2) == list(weights)
    _same_results(g, g2, feeds_for(g))


def _finite_throughout(g: Graph, feeds: dict[str, np.ndarray]) -> bool:
    """Whether every floating value the graph computes on ``feeds`` is finite."""
    values = [v for n in g.nodes if n.op not in ("input", "constant") for v in n.outputs]
    probe = Graph(g.inputs, values)
    return all(np.isfinite(a).all() for a in map(np.asarray, run_graph(probe, feeds))
               if a.dtype.kind in "fc")


@settings(max_examples=200, deadline=None)
@given(graphs())
def test_onnx_round_trip(g: Graph) -> None:
    from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as OrtNotImplemented

    from graphopt.frontends import onnx as onnx_frontend
    from graphopt.frontends import onnx_export

    note(str(g))
    feeds = feeds_for(g)
    if not _finite_throughout(g, feeds):
        # how NaN and inf propagate through reductions is each runtime's own: log_softmax of
        # [inf, inf, 1] is [nan, nan, nan] in torch and [nan, nan, -inf] in ONNX Runtime
        reject()
    expected = run_graph(g, feeds)
    model = onnx_export.to_model(g)
    try:
        got = run_graph(g, feeds, "onnx")
    except OrtNotImplemented:
        reject()  # ONNX Runtime has no CPU kernel for this op and dtype (e.g. Erf on f64)
    dts = precision_dtypes(g)
    compare_outputs(expected, got, g.output_names, dtypes=dts).raise_if_failed("ONNX Runtime")
    g2 = onnx_frontend.load(model)
    verify(g2)
    assert g2.input_names == g.input_names and g2.output_names == g.output_names
    compare_outputs(expected, run_graph(g2, feeds), g.output_names, dtypes=dts
                    ).raise_if_failed("re-imported graph")


@settings(max_examples=200, deadline=None)
@given(graphs())
def test_cleanup_preserves_results(g: Graph) -> None:
    note(str(g))
    res = Pipeline(cleanup_passes(), fixed_point=True).run(g)
    note(str(res.graph))
    verify(res.graph)
    assert res.graph.output_types == g.output_types
    check_graphs(g, res.graph)


@settings(max_examples=200, deadline=None)
@given(graphs())
def test_canonicalize_preserves_results(g: Graph) -> None:
    note(str(g))
    res = Pipeline([Canonicalize(), *cleanup_passes()], fixed_point=True).run(g)
    note(str(res.graph))
    verify(res.graph)
    assert res.graph.output_types == g.output_types
    check_graphs(g, res.graph)


def test_strategies_build_deep_graphs() -> None:
    """The strategy is not degenerate: it reaches several op families and multi-op graphs."""
    from hypothesis import HealthCheck, Phase, find

    def deep(g: Graph) -> bool:
        ops = {n.op for n in g.nodes} - {"input", "constant"}
        return len(ops) >= 3 and sum(n.op not in ("input", "constant") for n in g.nodes) >= 4

    g = find(graphs(), deep, settings=settings(max_examples=500, database=None,
                                               phases=[Phase.generate],
                                               suppress_health_check=list(HealthCheck)))
    assert deep(g)
