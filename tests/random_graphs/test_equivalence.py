"""The judge itself: check_graph tells a right result from each kind of wrong one."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import graphopt
from graphopt.errors import GraphOptError
from graphopt.ir.graph import Graph
from graphopt.ir.node import ConstData, Node, constant, input_node
from graphopt.ir.types import DType, TensorType
from tests.random_graphs.equivalence import check_graph, mask_numbers


def _gelu_graph(op: str = "add") -> Graph:
    """x * 0.5 * (1 + erf(x * 1/sqrt 2)) [op] x: gelu_fusion rewrites it."""
    x = input_node("x", TensorType((2, 3), DType.f32))

    def c(v: float) -> Any:
        return constant(ConstData(np.asarray(v, dtype=np.float32)))

    e = Node.build("erf", [Node.build("mul", [x.out, c(0.70710678)]).out]).out
    g = Node.build("mul", [Node.build("mul", [x.out, c(0.5)]).out,
                           Node.build("add", [e, c(1.0)]).out]).out
    y = Node.build(op, [g, x.out]).out
    return Graph([x], [y], ["y"])


def test_right_result_is_ok_and_reports_what_fired() -> None:
    out = check_graph(_gelu_graph())
    assert out.kind == "ok", out.detail
    assert out.fired.get("gelu_fusion.gelu_fused") == 1


def test_wrong_graph_is_a_semantic_change(monkeypatch: pytest.MonkeyPatch) -> None:
    real = graphopt.optimize

    def wrong(g: Graph, **kw: Any) -> Any:  # optimizes a different graph, unchecked
        kw["check"] = False
        return real(_gelu_graph("sub"), **kw)

    monkeypatch.setattr(graphopt, "optimize", wrong)
    out = check_graph(_gelu_graph())
    assert out.kind == "semantic_change", out
    assert out.failed


def test_wrong_written_bytes_are_an_export_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    from graphopt.api import OptimizedModel
    from graphopt.frontends import onnx_export

    def save_wrong(self: OptimizedModel, path: str) -> None:
        onnx_export.save(_gelu_graph("sub"), path)

    monkeypatch.setattr(OptimizedModel, "save", save_wrong)
    out = check_graph(_gelu_graph())
    assert out.kind == "export_mismatch", out


def test_clean_refusal_and_raw_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(g: Graph, **kw: Any) -> Any:
        raise GraphOptError("cannot take 3 of %v7", where="node")

    monkeypatch.setattr(graphopt, "optimize", refuse)
    out = check_graph(_gelu_graph())
    assert (out.kind, out.reason) == ("refused", "GraphOptError: cannot take N of %v")
    assert not out.failed

    def crash(g: Graph, **kw: Any) -> Any:
        raise ValueError("boom")

    monkeypatch.setattr(graphopt, "optimize", crash)
    out = check_graph(_gelu_graph())
    assert out.kind == "crash" and out.failed and "ValueError" in out.detail


def test_mask_numbers_keeps_the_kind_of_message() -> None:
    assert mask_numbers("shape [2, 3] vs 1e-05 at %x.1\nmore") == "shape [N, N] vs N at %v"



def _interpreter_off_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the reference interpreter disagree with ONNX Runtime on every graph."""
    import tests.random_graphs.equivalence as eq

    real = eq.run_graph
    monkeypatch.setattr(eq, "run_graph", lambda g, feeds, backend="numpy": [
        x + np.ones_like(x) for x in real(g, feeds, backend)])


def test_interpreter_and_ort_disagreeing_on_the_original_is_listed_not_failed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The written model equals the original in ONNX Runtime: the optimizer kept the meaning,
    whatever the interpreter says (in the 10,000-graph run: f16 rounding of a reduce_sum
    cancelled by a sub put them 2e-3 apart once)."""
    _interpreter_off_by_one(monkeypatch)
    out = check_graph(_gelu_graph())
    assert out.kind == "interp_vs_ort" and not out.failed, out
    assert "written vs original, both in ONNX Runtime: agree" in out.detail


def test_written_model_differing_in_ort_too_is_a_backend_disagreement(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from graphopt.api import OptimizedModel
    from graphopt.frontends import onnx_export

    _interpreter_off_by_one(monkeypatch)
    monkeypatch.setattr(OptimizedModel, "save",
                        lambda self, path: onnx_export.save(_gelu_graph("sub"), path))
    out = check_graph(_gelu_graph())
    assert out.kind == "backend_disagreement" and out.failed, out
