"""The profiler's public API: probe opsets, shape-like constants, whole-graph timing, keys,
failures reported as "cannot be priced", the cache. No test asserts a time."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from graphopt.cost.profile import (OpProfiler, Timing, Unpriced, export_opset, graph_key,
                                   node_key, probe_graph)
from graphopt.frontends.onnx_export import to_model
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node, Value, constant, input_node, op
from graphopt.ir.types import DType, TensorType

F32 = DType.f32


def _x(name: str, *shape: int, dt: DType = F32) -> Node:
    return input_node(name, TensorType(shape, dt))


def _onnx(op_type: str, ins: list[Value], out: TensorType) -> Value:
    """An opaque standard ONNX node over ``ins``."""
    proto = helper.make_node(op_type, [f"in{i}" for i in range(len(ins))], ["out0"])
    attrs = {"op_type": op_type, "domain": "", "proto": proto.SerializeToString(),
             "opsets": (("", 18),), "out_types": (out,), "present": (True,) * len(ins),
             "captured": (), "call": None, "functions": ()}
    return Node.build("opaque", ins, attrs).out


def _reshape(data: Value, shape: Value) -> Value:
    return _onnx("Reshape", [data, shape], TensorType((3, 2), F32))


def _profiler(tmp_path: Path, **kw: object) -> OpProfiler:
    return OpProfiler("cpu", cache_path=tmp_path / "costs.json", reps=3, warmup=1, **kw)


def _no_clock() -> float:
    pytest.fail("timed despite the cache")


def _rms() -> Node:
    x = _x("x", 4, 16)
    return op("rms_norm", x.out, constant(np.ones(16, np.float32)), axis=1, epsilon=1e-5).node


# ---- probes -------------------------------------------------------------------------------------

def test_probes_run_at_the_export_opset_unless_pinned(tmp_path: Path) -> None:
    rms = _rms()
    g, _ = probe_graph(rms)
    assert export_opset(g) == 23  # one RMSNormalization node; 18 would be its composition
    assert [n.op_type for n in to_model(g, export_opset(g)).graph.node] == ["RMSNormalization"]
    relu = op("relu", _x("x", 4).out).node
    assert export_opset(probe_graph(relu)[0]) == 18
    assert node_key(rms) == node_key(rms, 23) != node_key(rms, 18)
    p = _profiler(tmp_path)
    assert isinstance(p.price_op(rms), Timing) and isinstance(p.price_op(rms, opset=18), Timing)
    assert p.measured == 2  # two probes, two keys
    p.flush()
    pinned = _profiler(tmp_path, opset=18, timer=_no_clock)
    assert pinned.op_time(rms) == p.op_time(rms, opset=18) and pinned.hits == 1


def test_probes_keep_shape_like_constants_and_refresh_weights() -> None:
    w = constant(np.arange(6, dtype=np.float32))
    shape = constant(np.array([3, 2], np.int64))
    n = _reshape(w, shape).node
    g, feeds = probe_graph(n)
    probe = g.outputs[0].node
    assert probe.inputs[1].node is shape.node  # the values are what the op runs with
    assert probe.inputs[0].node is not w.node and not feeds
    other_w = _reshape(constant(np.zeros(6, np.float32)), shape).node
    other_shape = _reshape(w, constant(np.array([2, 3], np.int64))).node
    assert node_key(n) == node_key(other_w) != node_key(other_shape)


def test_a_probe_failing_while_it_runs_cannot_be_priced(tmp_path: Path) -> None:
    # Reshape to a shape fed at run time (zeros in probes): ONNX Runtime fails in the run
    n = _reshape(_x("d", 6).out, _x("s", 2, dt=DType.i64).out).node
    p = _profiler(tmp_path)
    got = p.price_op(n)
    assert isinstance(got, Unpriced) and str(got).startswith("cannot be priced: opaque: ")
    assert p.op_time(n) is None and p.measured == 0
    assert list(p.fallbacks.values()) == [str(got)]
    symbolic = op("relu", input_node("x", TensorType(("batch", 8), F32)).out).node
    assert "symbolic shape" in str(p.price_op(symbolic))


# ---- whole graphs -------------------------------------------------------------------------------

def _graphs() -> list[Graph]:
    x = _x("q", 2, 8, 16)
    a = Graph([x], [op("softmax", x.out, axis=2)])
    b = Graph([x], [op("exp", x.out)])
    return [a, b]


def test_graph_key_is_structure_types_and_shape_like_values() -> None:
    def g(name: str, w: np.ndarray, shape: tuple[int, ...] = (3, 2)) -> Graph:
        x = _x(name, 6)
        y = op("add", x.out, constant(w))
        return Graph([x], [_reshape(y, constant(np.array(shape, np.int64)))])

    a = g("x", np.ones(6, np.float32))
    assert graph_key(a) == graph_key(g("y", np.zeros(6, np.float32)))  # names, weight data
    assert graph_key(a) != graph_key(g("x", np.ones(6, np.float32), (2, 3)))
    assert graph_key(a) == graph_key(a, 18) != graph_key(a, 23)
    assert graph_key(_graphs()[0]) != graph_key(_graphs()[1])


def test_graphs_are_timed_together_then_read_from_the_cache(tmp_path: Path) -> None:
    graphs = _graphs()
    p = _profiler(tmp_path)
    got = p.graph_times(graphs, budget_s=0.0, min_reps=3)
    assert all(isinstance(t, Timing) and t.runs == 3 and t.spread >= 0 for t in got), got
    assert p.measured == 2
    data = json.loads((tmp_path / "costs.json").read_text())
    assert {graph_key(g) for g in graphs} <= set(data["machines"][p.machine()])
    again = _profiler(tmp_path, timer=_no_clock)
    assert again.graph_times(list(reversed(graphs))) == list(reversed(got))
    assert again.hits == 2 and again.measured == 0


def test_a_graph_that_does_not_run_is_unpriced_beside_the_others(tmp_path: Path) -> None:
    d, s = _x("d", 6), _x("s", 2, dt=DType.i64)
    bad = Graph([d, s], [_reshape(d.out, s.out)])  # fails at run time (s is zeros)
    p = _profiler(tmp_path)
    good, failed = p.graph_times([_graphs()[1], bad], budget_s=0.0)
    assert isinstance(good, Timing)
    assert isinstance(failed, Unpriced) and str(failed).startswith("cannot be priced: ")
    assert p.graph_times([bad]) == [failed] and p.measured == 1  # remembered, not re-run
    feeds = {"d": np.ones(6, np.float32), "s": np.array([3, 2], np.int64)}
    fed = _profiler(tmp_path / "fed").graph_times([bad], feeds=[feeds], budget_s=0.0)
    assert isinstance(fed[0], Timing)
    torch_p = OpProfiler("cpu", "torch", cache_path=tmp_path / "t.json")
    assert "ONNX Runtime" in str(torch_p.graph_times([bad])[0])
