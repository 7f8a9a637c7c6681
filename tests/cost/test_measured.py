"""Measured mode: ops profiled in ONNX Runtime, cached on disk by (op, attrs, types)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from graphopt.cost.measured import MeasuredCostModel, cost_model
from graphopt.cost.profile import OpProfiler, node_key, probe_graph
from graphopt.cost.model import CostModel
from graphopt.errors import GraphOptError
from graphopt.ir.graph import Graph
from graphopt.ir.node import constant, input_node, op
from graphopt.ir.types import DType, TensorType


def _graph() -> Graph:
    x = input_node("x", TensorType((16, 32), DType.f32))
    h = op("relu", op("add", op("matmul", x.out, constant(np.ones((32, 32), np.float32))),
                      constant(np.ones((32,), np.float32))))
    return Graph([x], [op("exp", h)])


def test_probe_keeps_constants_constant() -> None:
    g = _graph()
    mm = next(n for n in g.nodes if n.op == "matmul")
    pg, feeds = probe_graph(mm)
    assert pg.input_names == ("x0",) and feeds["x0"].shape == (16, 32)
    assert [n.op for n in pg.nodes if n.op != "input"] == ["constant", "matmul"]


def test_key_sees_attrs_types_and_constness() -> None:
    x = input_node("x", TensorType((4, 4), DType.f32))
    y = input_node("y", TensorType((4, 4), DType.f32))
    a = op("matmul", x.out, y.out).node
    b = op("matmul", x.out, constant(np.ones((4, 4), np.float32))).node
    c = op("matmul", y.out, x.out).node
    assert node_key(a) == node_key(c) != node_key(b)
    t1 = op("transpose", x.out, perm=(1, 0)).node
    t2 = op("transpose", op("reshape", x.out, shape=(2, 8)), perm=(1, 0)).node
    assert node_key(t1) != node_key(t2)


def _no_clock() -> float:
    pytest.fail("probed despite the cache")


def test_measures_once_then_reads_the_cache(tmp_path) -> None:
    path = tmp_path / "costs.json"
    g = _graph()
    p = OpProfiler("cpu", cache_path=path, reps=3, warmup=1)
    m = MeasuredCostModel("cpu", p)
    t = m(g)
    assert t > 0 and p.measured == 4 and not p.fallbacks
    data = json.loads(path.read_text())
    assert len(data["machines"][p.machine()]) == 4

    p2 = OpProfiler("cpu", cache_path=path, timer=_no_clock)
    m2 = MeasuredCostModel("cpu", p2)
    assert m2(g) == pytest.approx(t)
    assert p2.hits == 4 and p2.measured == 0


def test_fused_regions_never_cost_less_than_their_roofline(tmp_path) -> None:
    p = OpProfiler("h100", cache_path=tmp_path / "c.json", reps=3, warmup=1)
    m = MeasuredCostModel("h100", p)
    gc = m.graph_cost(_graph(), detail=True)
    analytic = CostModel("h100")
    for r in gc.detail:
        assert r.time >= CostModel.region_time(analytic, r) - 1e-12
    assert any(len(r.nodes) > 1 for r in gc.detail)


def test_unmeasurable_nodes_use_the_analytic_time_and_say_why(tmp_path) -> None:
    x = input_node("x", TensorType(("batch", 8), DType.f32))
    g = Graph([x], [op("relu", x.out)])
    p = OpProfiler("cpu", cache_path=tmp_path / "c.json", reps=2, warmup=1)
    t = MeasuredCostModel("cpu", p)(g)
    assert t == pytest.approx(CostModel("cpu")(g))
    assert any("symbolic shape" in why for why in p.fallbacks.values())


def test_corrupt_cache_is_an_error_naming_the_file(tmp_path) -> None:
    path = tmp_path / "c.json"
    path.write_text("[1, 2")
    p = OpProfiler("cpu", cache_path=path)
    with pytest.raises(GraphOptError, match="unreadable op-cost cache") as e:
        MeasuredCostModel("cpu", p)(_graph())
    assert "c.json" in str(e.value)


def test_cost_model_modes() -> None:
    assert type(cost_model("h100")) is CostModel
    assert isinstance(cost_model("cpu", "measured"), MeasuredCostModel)
    with pytest.raises(GraphOptError, match="unknown cost mode"):
        cost_model("cpu", "guess")
