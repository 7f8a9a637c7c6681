"""What the exporter writes runs in ONNX Runtime (default session options) as the source does:
the pooling op ORT has specialized kernels for, an opset ORT has kernels for, scalar inputs where
ORT's shape inference wants them. One regression test per cause found by the backend suites."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import graphopt
from graphopt import parse
from graphopt.frontends import onnx as fe
from graphopt.frontends import onnx_export as ex


def _ort(data: bytes, feeds: dict[str, Any]) -> list[np.ndarray]:
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)


def _ops(data: bytes) -> list[str]:
    return [n.op_type for n in onnx.load_from_string(data).graph.node]


def _pool_model(op_type: str, **attrs: Any) -> onnx.ModelProto:
    g = helper.make_graph([helper.make_node(op_type, ["x"], ["y"], **attrs)], "p",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("op,pool", [("reduce_mean", "GlobalAveragePool"),
                                     ("reduce_max", "GlobalMaxPool")])
def test_spatial_reductions_are_written_as_global_pools(op: str, pool: str) -> None:
    """A reduction over all spatial axes (keepdims, rank >= 3, f32) not read from an ONNX
    Reduce* node is written as the global pool (ORT's NCHWc kernel, as the source had)."""
    g = parse(f"""graph t(%x: f32[2,3,4,5]) {{
  %0: f32[2,3,1,1] = {op}(%x) {{axes=(2, 3), keepdims=true}}
  %1: f32[2,3,4] = {op}(%x) {{axes=(3,), keepdims=false}}
  return %0 as "y", %1 as "z"
}}""")
    data = ex.to_bytes(g)
    assert _ops(data) == [pool, pool.replace("Global", "Reduce").replace("AveragePool", "Mean")
                          .replace("MaxPool", "Max")]
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    y, z = _ort(data, {"x": x})
    fn = np.mean if op == "reduce_mean" else np.max
    np.testing.assert_allclose(y, fn(x, axis=(2, 3), keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(z, fn(x, axis=3), rtol=1e-6)


@pytest.mark.parametrize("src,kw,written", [
    ("GlobalAveragePool", {}, "GlobalAveragePool"), ("GlobalMaxPool", {}, "GlobalMaxPool"),
    ("ReduceMean", {"axes": [2, 3], "keepdims": 1}, "ReduceMean"),
    ("ReduceMax", {"axes": [2, 3], "keepdims": 1}, "ReduceMax")])
def test_onnx_sources_keep_their_spelling(src: str, kw: dict[str, Any], written: str) -> None:
    """The source's op is written back: ORT's kernels for the two spellings differ in the last
    bit, and the check compares with the source run in ORT."""
    m = _pool_model(src, **kw)
    data = ex.to_bytes(fe.load(m))
    assert _ops(data) == [written]
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5)).astype(np.float32)
    assert np.array_equal(_ort(data, {"x": x})[0], _ort(m.SerializeToString(), {"x": x})[0])


def test_old_opsets_are_written_at_one_ort_has_kernels_for() -> None:
    """Opset 6: ORT runs Sum-6, but the IR's lowering (adds) had no Add-6 kernel in ORT."""
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in "abc"]
    g = helper.make_graph([helper.make_node("Sum", ["a", "b", "c"], ["s"]),
                           helper.make_node("Neg", ["a"], ["n"])], "old", vi,
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1])
                           for n in "sn"])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 6)])
    m.ir_version = 3
    feeds = {n: np.array([i + 1.5], np.float32) for i, n in enumerate("abc")}
    om = graphopt.optimize(m, inputs=feeds, budget=0)
    data = ex.to_bytes(om.graph)
    assert onnx.load_from_string(data).opset_import[0].version == ex.MIN_WRITTEN_OPSET
    s, n = _ort(data, feeds)
    assert s[0] == np.float32(7.5) and n[0] == np.float32(-1.5)
    assert onnx.load_from_string(ex.to_model(om.graph, opset=6).SerializeToString()
                                 ).opset_import[0].version == 6  # asked for: as asked


@pytest.mark.parametrize("case", ["test_affine_grid_2d_expanded",
                                  "test_affine_grid_3d_align_corners_expanded"])
def test_range_gets_scalars_after_its_if_is_folded(case: str) -> None:
    """AffineGrid's expansion feeds Range the [1]-shaped outputs of an If whose condition
    graphopt folds to a constant; ORT then inlines the If and its shape inference rejected the
    Range. The written Range reads rank-0 reshapes."""
    from onnx.backend.test.loader import load_node_model_tests
    from onnx.backend.test.runner import Runner

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = [c for c in load_node_model_tests() if c.name == case][0]
    names = [i.name for i in c.model.graph.input]
    feeds = dict(zip(names, c.data_sets[0][0]))
    om = graphopt.optimize(c.model, inputs=feeds, budget=0)
    data = ex.to_bytes(om.graph)
    m = onnx.load_from_string(data)
    made = {o for n in m.graph.node if n.op_type == "Reshape" for o in n.output}
    ranges = [n for n in m.graph.node if n.op_type == "Range"]
    assert ranges and all(x in made for n in ranges for x in n.input[1:2])
    for ins, outs in c.data_sets:
        Runner.assert_similar_outputs(outs, _ort(data, dict(zip(names, ins))), c.rtol, c.atol)


def _initializer_input_model(ir_version: int) -> onnx.ModelProto:
    """y = x * W + relu(W), W an initializer also listed as a graph input."""
    w = onnx.numpy_helper.from_array(np.array([1.0, -2.0, 3.0], np.float32), "W")
    g = helper.make_graph(
        [helper.make_node("Mul", ["x", "W"], ["xw"]), helper.make_node("Relu", ["W"], ["rw"]),
         helper.make_node("Add", ["xw", "rw"], ["y"])], "init_inputs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("W", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = ir_version
    return m


def test_initializer_inputs_stay_overridable_from_ir4() -> None:
    """IR >= 4: ORT lets users feed an initializer listed as an input, so the written model keeps
    it as an input with the initializer as its default (relu(W) is not folded)."""
    m = _initializer_input_model(8)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    other = np.array([0.5, 4.0, -1.0], np.float32)
    om = graphopt.optimize(m, budget=0)
    assert om.graph.input_names == ("x", "W")
    data = ex.to_bytes(om.graph)
    w = onnx.load_from_string(data)
    assert [i.name for i in w.graph.input] == ["x", "W"] and w.ir_version >= 4
    assert "W" in {t.name for t in w.graph.initializer}
    src = m.SerializeToString()
    for feeds in ({"x": x}, {"x": x, "W": other}):
        assert np.array_equal(_ort(data, feeds)[0], _ort(src, feeds)[0])
    assert np.array_equal(om(x), _ort(src, {"x": x})[0])  # the default when not fed
    import torch

    assert torch.equal(om(torch.from_numpy(x)), torch.from_numpy(om(x)))  # torch callable too
    from graphopt.check import make_inputs

    assert np.array_equal(make_inputs(om.original)["W"], [1.0, -2.0, 3.0])  # check: default
    assert fe.load(m, fold_initializer_inputs=True).input_names == ("x",)


def test_ir3_initializer_inputs_are_constants() -> None:
    """IR 3 lists every initializer as an input; ORT cannot override them: constants, written
    at IR >= 4 without listing them as inputs."""
    m = _initializer_input_model(3)
    om = graphopt.optimize(m, budget=0)
    assert om.graph.input_names == ("x",)
    w = onnx.load_from_string(ex.to_bytes(om.graph))
    assert [i.name for i in w.graph.input] == ["x"] and w.ir_version >= 4
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(_ort(ex.to_bytes(om.graph), {"x": x})[0],
                          _ort(m.SerializeToString(), {"x": x})[0])
