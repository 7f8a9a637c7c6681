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
