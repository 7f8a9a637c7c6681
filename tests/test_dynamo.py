"""``torch.compile(model, backend=graphopt)``: the six transformer families match eager, graph
breaks and graphs graphopt cannot compile run eagerly with the reason logged, options reach
``graphopt.optimize``, and a new input shape or changed weights compile again."""
from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Any, Iterator

import pytest
import torch
from torch import nn

from graphopt.dynamo import RECORDS, GraphRecord, graphopt_backend
from graphopt.errors import GraphOptError
from tests.models import build

FAMILIES = ["gpt2", "bert", "llama", "mistral", "t5", "vit"]


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    RECORDS.clear()
    yield
    torch._dynamo.reset()


def _max_diff(expected: Any, actual: Any) -> float:
    exp = expected if isinstance(expected, (tuple, list)) else (expected,)
    act = actual if isinstance(actual, (tuple, list)) else (actual,)
    assert len(exp) == len(act)
    return max(float((e - a).abs().max()) for e, a in zip(exp, act))


class MLP(nn.Module):
    def __init__(self, width: int = 16, hidden: int = 32) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.up = nn.Linear(width, hidden)
        self.down = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.gelu(self.up(x))) + x


class ItemBreak(MLP):
    """A forward with a graph break: ``.item()`` leaves the graph (Dynamo's default config)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.up(x))
        scale = y.mean().item()
        return self.down(y) * scale


def _statuses() -> list[str]:
    return [r.status for r in RECORDS]


@pytest.mark.parametrize("name", FAMILIES)
def test_families_match_eager(name: str) -> None:
    model, example, _ = build(name)
    compiled = torch.compile(model, backend=graphopt_backend, options={"budget": 0})
    with torch.no_grad():
        expected = model(*example)
        actual = compiled(*example)
    assert _max_diff(expected, actual) <= 1e-4
    assert RECORDS and _statuses() == ["graphopt"] * len(RECORDS), [r.line() for r in RECORDS]
    rec = RECORDS[-1]
    assert rec.nodes_after < rec.nodes_before  # graphopt rewrote it (fusions, cleanup)
    assert rec.report is not None and rec.report["check"] is not None  # checked against eager


def test_graph_break_is_logged_and_the_rest_compiled(caplog: pytest.LogCaptureFixture) -> None:
    model = ItemBreak().eval()
    x = torch.randn(4, 16)
    compiled = torch.compile(model, backend=graphopt_backend, options={"budget": 0})
    with caplog.at_level(logging.INFO, logger="graphopt.dynamo"), torch.no_grad():
        out = compiled(x)
        expected = model(x)
    assert _max_diff(expected, out) <= 1e-5
    breaks = [r for r in caplog.records if r.name == "graphopt.dynamo" and "graph break" in
              r.getMessage()]
    assert breaks and "item()" in breaks[0].getMessage(), [r.getMessage() for r in
                                                           caplog.records]
    assert any(r.graph_break for r in RECORDS)
    assert "graphopt" in _statuses()  # the graph before the break went through graphopt


def test_unsupported_graph_falls_back_with_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    """With .item() captured into the graph, the graph reads a data-dependent float: graphopt's
    frontend refuses it, the graph runs as Dynamo captured it, and the reason is logged."""
    model = ItemBreak().eval()
    x = torch.randn(4, 16)
    with torch._dynamo.config.patch(capture_scalar_outputs=True), \
            caplog.at_level(logging.WARNING, logger="graphopt.dynamo"), torch.no_grad():
        out = torch.compile(model, backend=graphopt_backend, options={"budget": 0})(x)
        expected = model(x)
    assert _max_diff(expected, out) <= 1e-5
    eager = [r for r in RECORDS if r.status == "eager"]
    assert eager and eager[0].reason
    assert any("runs eagerly" in r.getMessage() and eager[0].reason in r.getMessage()
               for r in caplog.records)


def test_fallback_false_raises() -> None:
    model = ItemBreak().eval()
    with torch._dynamo.config.patch(capture_scalar_outputs=True), torch.no_grad(), \
            pytest.raises(Exception) as info:
        torch.compile(model, backend=graphopt_backend,
                      options={"budget": 0, "fallback": False})(torch.randn(4, 16))
    cause = getattr(info.value, "inner_exception", None) or info.value.__cause__
    assert isinstance(cause, GraphOptError), repr(info.value)
    assert "_local_scalar_dense" in str(cause)  # the error names the node graphopt refused


def test_grad_mode_falls_back() -> None:
    model = MLP()
    x = torch.randn(4, 16)
    out = torch.compile(model, backend=graphopt_backend, options={"budget": 0})(x)
    assert out.requires_grad  # eager autograd kept
    assert _statuses() == ["eager"] and "grad" in RECORDS[0].reason


def test_options_reach_optimize() -> None:
    model = MLP().eval()
    x = torch.randn(4, 16)
    with torch.no_grad():
        out = torch.compile(model, backend=graphopt_backend,
                            options={"target": "a100", "budget": 0})(x)
        assert _max_diff(model(x), out) <= 1e-5
    assert RECORDS[-1].report["target"] == "a100"
    torch._dynamo.reset()
    model = MLP(64, 128).eval()  # layers large enough for the quantizer to take them
    x = torch.randn(4, 64)
    with torch.no_grad():
        out = torch.compile(model, backend=graphopt_backend,
                            options={"quantize": "int8-weight", "budget": 0})(x)
        expected = model(x)
    rep = RECORDS[-1].report
    assert RECORDS[-1].status == "graphopt" and rep["quantization"]["layers"]
    assert not torch.equal(out, expected)  # quantized weights: close, not equal
    assert _max_diff(expected, out) < 0.05 * float(expected.abs().max())


def test_onnxruntime_runtime() -> None:
    model, example, _ = build("bert")
    compiled = torch.compile(model, backend=graphopt_backend,
                             options={"budget": 0, "runtime": "onnxruntime"})
    with torch.no_grad():
        assert _max_diff(model(*example), compiled(*example)) <= 1e-4
    assert _statuses() == ["graphopt"]


def test_bad_options_are_errors() -> None:
    with pytest.raises(GraphOptError, match="unknown option"):
        graphopt_backend(torch.fx.symbolic_trace(MLP()), [torch.randn(2, 16)],
                         options={"targte": "cpu"})
    with pytest.raises(GraphOptError, match="unknown target"):
        graphopt_backend(torch.fx.symbolic_trace(MLP()), [torch.randn(2, 16)],
                         options={"target": "tpu9"})
    with pytest.raises(GraphOptError, match="unknown runtime"):
        graphopt_backend(torch.fx.symbolic_trace(MLP()), [torch.randn(2, 16)],
                         options={"runtime": "tvm"})


def test_new_shapes_and_changed_weights_compile_again() -> None:
    model = MLP().eval()
    compiled = torch.compile(model, backend=graphopt_backend, options={"budget": 0})
    with torch.no_grad():
        for rows in (2, 3, 5):  # the second shape makes Dynamo's graph dynamic
            x = torch.randn(rows, 16)
            assert _max_diff(model(x), compiled(x)) <= 1e-5
        built = len(RECORDS)
        model.up.weight.mul_(2.0)  # in place: the frozen copy is stale, graphopt builds again
        assert _max_diff(model(x), compiled(x)) <= 1e-5
    assert len(RECORDS) == built + 1
    assert _statuses() == ["graphopt"] * len(RECORDS)


def test_records_describe_the_outcome() -> None:
    rec = GraphRecord("graph 1 (3 ops)", "eager", "no reason")
    assert "runs eagerly: no reason" in rec.line()


def test_entry_point_name() -> None:
    names = entry_points(group="torch_dynamo_backends").names
    if "graphopt" not in names:
        pytest.skip("the torch_dynamo_backends entry point 'graphopt' is not installed "
                    "(pyproject: [project.entry-points.torch_dynamo_backends] graphopt = "
                    "\"graphopt.dynamo:graphopt_backend\", then pip install -e . --no-deps)")
    model = MLP().eval()
    x = torch.randn(4, 16)
    with torch.no_grad():
        out = torch.compile(model, backend="graphopt", options={"budget": 0})(x)
        assert _max_diff(model(x), out) <= 1e-5
    assert _statuses() == ["graphopt"]
