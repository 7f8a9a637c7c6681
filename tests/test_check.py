"""The numeric check: valid generated inputs, dtype-aware comparison, the three entry points."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graphopt.check import (CheckResult, check_graphs, check_onnx, check_torch, coerce_inputs,
                            compare_outputs, index_bounds, load_inputs, make_inputs,
                            precision_dtypes, symbol_sizes, tolerance)
from graphopt.errors import CheckError, FrontendError
from graphopt.ir.text import parse
from graphopt.ir.types import DType

def _dense(shape: tuple[int, ...]) -> str:
    vals = ", ".join(repr(float(v)) for v in np.arange(np.prod(shape)) / 10)
    return f"dense<f32[{','.join(map(str, shape))}]>[{vals}]"


EMB = (
    "graph emb(%input_ids: i64[batch,seq], %attention_mask: i64[batch,seq], %pos: i32[seq], "
    "%flag: bool[batch], %x: f32[batch,seq,4], %n: i32[3]) {\n"
    f"  %w: f32[11,4] = constant() {{data={_dense((11, 4))}}}\n"
    f"  %p: f32[5,4] = constant() {{data={_dense((5, 4))}}}\n"
    """  %0: f32[batch,seq,4] = gather(%w, %input_ids) {axis=0}
  %1: i64[seq] = cast(%pos) {to=dtype:i64}
  %2: i64[1,seq] = unsqueeze(%1) {axes=(0,)}
  %3: f32[1,seq,4] = gather(%p, %2) {axis=0}
  %4: f32[batch,seq,4] = add(%0, %3)
  %5: f32[batch,seq,4] = add(%4, %x)
  return %5 as "y"
}""")


def test_generated_inputs_are_valid_for_the_model() -> None:
    g = parse(EMB)
    for seed in range(5):
        feeds = make_inputs(g, seed)
        ids, mask, pos = feeds["input_ids"], feeds["attention_mask"], feeds["pos"]
        b, s = ids.shape
        assert 2 <= b <= 8 and 2 <= s <= 8  # symbols get concrete sizes ...
        assert mask.shape == (b, s) and pos.shape == (s,) and feeds["x"].shape == (b, s, 4)
        assert feeds["flag"].shape == (b,)  # ... the same for every use
        assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < 11  # in the table
        assert pos.dtype == np.int32 and pos.min() >= 0 and pos.max() < 5  # through cast
        assert set(np.unique(mask)) <= {0, 1} and (mask.sum(axis=-1) >= 1).all()
        assert feeds["flag"].dtype == np.bool_
        assert feeds["x"].dtype == np.float32
        n = feeds["n"]
        assert n.min() >= 1 and n.max() < 8  # plain ints: small, never zero
    check_graphs(g, g)  # the generated inputs run


def test_index_bounds_and_symbol_sizes() -> None:
    g = parse(EMB)
    sizes = symbol_sizes(g, 0)
    assert set(sizes) == {"batch", "seq"}
    assert symbol_sizes(g, 0, {"seq": 3})["seq"] == 3
    assert index_bounds(g, sizes) == {"input_ids": 11, "pos": 5}


def test_generated_inputs_are_deterministic() -> None:
    g = parse(EMB)
    a, b = make_inputs(g, 3), make_inputs(g, 3)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_gather_through_opaque_onnx_node_bounds_indices() -> None:
    from onnx import helper

    from graphopt.ir.graph import Graph
    from graphopt.ir.node import Node, constant, input_node
    from graphopt.ir.types import TensorType

    proto = helper.make_node("GatherElements", ["table", "idx"], ["y"], axis=1)
    table = constant(np.ones((4, 7), np.float32))
    idx = input_node("idx", TensorType((4, 2), DType.i64))
    n = Node.build("opaque", [table, idx.out], {
        "op_type": "GatherElements", "domain": "", "proto": proto.SerializeToString(),
        "opsets": (("", 18),), "out_types": (TensorType((4, 2), DType.f32),),
        "present": (True, True), "captured": (), "call": None, "functions": ()})
    g = Graph([idx], [n.out])
    assert index_bounds(g, {}) == {"idx": 7}  # axis 1 of the table, read from the ONNX attr
    feeds = make_inputs(g)
    assert feeds["idx"].max() < 7
    check_graphs(g, g)  # runs the opaque node in ONNX Runtime on valid indices


# ---- comparing ----------------------------------------------------------------------------------

def _cmp(e: np.ndarray, a: np.ndarray) -> CheckResult:
    return compare_outputs([e], [a], ["y"])


def test_tolerances_depend_on_dtype() -> None:
    assert tolerance(DType.f32).rtol == 1e-4
    assert tolerance(DType.f16).rtol == tolerance(DType.bf16).rtol == 1e-2
    assert tolerance(DType.i64) is None and tolerance(DType.bool) is None
    x = np.linspace(-3, 3, 50).astype(np.float32)
    assert _cmp(x, x * (1 + 3e-5)).ok
    r = _cmp(x, x * (1 + 1e-3))
    assert not r.ok and r.outputs[0].max_rel == pytest.approx(1e-3, rel=1e-2)
    h = x.astype(np.float16)
    assert _cmp(h, (h * np.float16(1.004)).astype(np.float16)).ok
    assert not _cmp(h, (h * np.float16(1.05)).astype(np.float16)).ok


def test_ints_and_bools_compare_exactly() -> None:
    i = np.arange(10, dtype=np.int64)
    j = i.copy()
    j[3] += 1
    r = _cmp(i, j)
    assert not r.ok and r.outputs[0].mismatched == 1 and r.outputs[0].max_abs == 1
    assert _cmp(i, i.copy()).ok
    assert not _cmp(np.array([True, False]), np.array([True, True])).ok


def test_nan_and_inf_positions_must_match() -> None:
    e = np.array([1.0, np.nan, np.inf, -np.inf], np.float32)
    assert _cmp(e, e.copy()).ok
    moved = np.array([np.nan, 1.0, np.inf, -np.inf], np.float32)
    r = _cmp(e, moved)
    assert not r.ok and "NaN at 2 differing positions" in r.outputs[0].reason
    r = _cmp(e, np.array([1.0, np.nan, -np.inf, -np.inf], np.float32))
    assert not r.ok and "inf differs" in r.outputs[0].reason


def test_shape_dtype_and_count_mismatches() -> None:
    x = np.zeros((2, 3), np.float32)
    assert "shape" in _cmp(x, x.reshape(3, 2)).outputs[0].reason
    assert "dtype" in _cmp(x, x.astype(np.float64)).outputs[0].reason
    with pytest.raises(CheckError, match="2 outputs.*1"):
        compare_outputs([x, x], [x], ["a", "b"])


def test_absolute_error_scales_with_the_output() -> None:
    big = np.array([1e4, 0.0], np.float32)
    # an absolute error of 0.05 next to values of 1e4 is float32 accumulation noise
    assert _cmp(big, big + np.array([0.0, 0.05], np.float32)).ok
    small = np.array([1.0, 0.0], np.float32)
    assert not _cmp(small, small + np.array([0.0, 0.05], np.float32)).ok


def test_precision_follows_the_least_precise_float_on_the_way() -> None:
    g = parse("""
graph t(%x: f32[3], %i: i32[3]) {
  %0: f16[3] = cast(%x) {to=dtype:f16}
  %1: f64[3] = cast(%0) {to=dtype:f64}
  %2: f64[3] = cast(%x) {to=dtype:f64}
  return %1 as "a", %2 as "b", %i as "c"
}""")
    assert precision_dtypes(g) == [DType.f16, DType.f32, None]
    e = np.array([1.0, 2.0, 3.0])
    r = compare_outputs([e], [e * (1 + 1e-3)], ["a"], dtypes=[DType.f16])
    assert r.ok
    assert not compare_outputs([e], [e * (1 + 1e-3)], ["a"]).ok


def test_check_result_summary_and_dict() -> None:
    r = _cmp(np.ones(3, np.float32), np.ones(3, np.float32))
    d = r.to_dict()
    assert d["ok"] and d["outputs"][0]["name"] == "y" and d["max_abs"] == 0.0
    bad = _cmp(np.ones(3, np.float32), np.full(3, 2.0, np.float32))
    with pytest.raises(CheckError) as ei:
        bad.raise_if_failed()
    assert "output 'y'" in str(ei.value) and "MISMATCH" in str(ei.value)
    assert ei.value.result is bad  # type: ignore[attr-defined]


# ---- entry points -------------------------------------------------------------------------------

ADD = """graph t(%x: f32[batch,3], %y: f32[3]) {
  %0: f32[batch,3] = add(%x, %y)
  return %0 as "z"
}"""
SUB = ADD.replace("add(", "sub(")


def test_check_graphs_passes_equal_and_fails_different_graphs() -> None:
    a, b = parse(ADD), parse(SUB)
    res = check_graphs(a, a)
    assert res.ok and set(res.inputs) == {"x", "y"} and res.inputs["y"] == "f32[3]"
    with pytest.raises(CheckError, match="differs from the original graph"):
        check_graphs(a, b)
    assert not check_graphs(a, b, raise_on_mismatch=False).ok


def test_inputs_named_like_interpreter_parameters() -> None:
    g = parse(ADD.replace("%x", "%g").replace("%y", "%backend"))
    assert check_graphs(g, g).ok


def test_check_graphs_signature_must_match() -> None:
    other = parse(ADD.replace("%y", "%w"))
    with pytest.raises(CheckError, match="inputs differ"):
        check_graphs(parse(ADD), other)


def test_user_inputs_dict_and_npz(tmp_path: Path) -> None:
    g = parse(ADD)
    feeds = {"x": np.ones((2, 3), np.float32), "y": np.arange(3, dtype=np.float32)}
    path = tmp_path / "in.npz"
    np.savez(path, **feeds)
    loaded = load_inputs(path)
    assert set(loaded) == {"x", "y"}
    assert check_graphs(g, g, str(path)).inputs == {"x": "f32[2,3]", "y": "f32[3]"}
    assert check_graphs(g, g, feeds).ok
    with pytest.raises(CheckError, match="lack"):
        coerce_inputs(g, {"x": feeds["x"]})
    with pytest.raises(CheckError, match="unknown names"):
        coerce_inputs(g, {**feeds, "q": feeds["y"]})
    with pytest.raises(CheckError, match="dtype"):
        coerce_inputs(g, {**feeds, "y": feeds["y"].astype(np.float64)})
    with pytest.raises(FrontendError, match="not found"):
        load_inputs(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(FrontendError, match="npz"):
        load_inputs(tmp_path / "junk.npz")


def _onnx_model(op_type: str = "Add"):  # type: ignore[no-untyped-def]
    from onnx import TensorProto, helper, numpy_helper

    y = numpy_helper.from_array(np.array([1.0, 2.0, 3.0], np.float32), "y")
    graph = helper.make_graph(
        [helper.make_node(op_type, ["x", "y"], ["z"])], "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 3])], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_check_onnx_against_graphs_and_models() -> None:
    from graphopt.frontends.onnx import load

    m_add, m_sub = _onnx_model("Add"), _onnx_model("Sub")
    g = load(m_add)
    assert check_onnx(m_add, g).ok
    assert check_onnx(m_add, m_add).ok
    res = check_onnx(m_add, m_sub, raise_on_mismatch=False)
    assert not res.ok and res.outputs[0].name == "z"
    with pytest.raises(CheckError, match="ONNX Runtime"):
        check_onnx(m_add, load(m_sub))


def test_check_torch_on_example_and_generated_inputs() -> None:
    import torch

    from graphopt.frontends.fx import from_module

    class M(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x) * 2.0 + 1.0

    class Wrong(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x) * 2.0 + 1.5

    ex = (torch.randn(2, 3),)
    g = from_module(M(), ex)
    res = check_torch(M(), g, ex)
    assert res.ok and res.inputs == {g.input_names[0]: "f32[2,3]"}
    assert check_torch(M(), g, None, {g.input_names[0]: np.ones((2, 3), np.float32)}).ok
    with pytest.raises(CheckError, match="torch"):
        check_torch(Wrong(), g, ex)


# ---- what runs: the written bytes, in ONNX Runtime with its default session options ----------

def _light_squeezenet() -> tuple[object, dict[str, np.ndarray], np.ndarray]:
    """The onnx wheel's light_squeezenet (IR 3, opset 9), its input as the onnx runner makes it
    and its stored expected output: logits ~9.5e9 and all equal, so the softmax turns one ulp of
    the global average pool into a different output."""
    import os

    import onnx
    from onnx import numpy_helper

    d = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    m = onnx.load(os.path.join(d, "light_squeezenet.onnx"))
    inits = {t.name for t in m.graph.initializer}
    x = [i for i in m.graph.input if i.name not in inits][0]
    shape = tuple(dim.dim_value for dim in x.type.tensor_type.shape.dim)
    n = int(np.prod(shape))
    feeds = {x.name: (np.arange(n).reshape(shape) / n).astype(np.float32)}
    t = onnx.TensorProto()
    with open(os.path.join(d, "light_squeezenet_output_0.pb"), "rb") as f:
        t.ParseFromString(f.read())
    return m, feeds, numpy_helper.to_array(t)


def test_onnx_sessions_use_ort_default_options() -> None:
    import onnxruntime as ort

    from graphopt.check import onnx_session

    m = _onnx_model("Add")
    level = onnx_session(m).get_session_options().graph_optimization_level
    assert level == ort.SessionOptions().graph_optimization_level == \
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert onnx_session(m, optimized=False).get_session_options().graph_optimization_level == \
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL


def test_check_sees_the_kernel_difference_users_get() -> None:
    """GlobalAveragePool written as ReduceMean: the same bits without ORT's graph optimizations,
    a different softmax with them (its NCHWc pool). The check must fail it (it passed before)."""
    import onnx
    from onnx import helper

    from graphopt.check import onnx_session, run_session

    m, feeds, _ = _light_squeezenet()
    other = onnx.ModelProto()
    other.CopyFrom(m)
    for i, nd in enumerate(other.graph.node):
        if nd.op_type == "GlobalAveragePool":
            other.graph.node[i].CopyFrom(helper.make_node(
                "ReduceMean", list(nd.input), list(nd.output), axes=[2, 3], keepdims=1))
    plain = [run_session(onnx_session(x, optimized=False), feeds)[0] for x in (m, other)]
    assert np.array_equal(plain[0], plain[1])  # what the check used to compare
    with pytest.raises(CheckError, match="default session options"):
        check_onnx(m, other, feeds)


def test_optimized_squeezenet_writes_what_the_original_computes(tmp_path: Path) -> None:
    """The issue's case: constant folding alone wrote a model giving 0.00133 / 0 where 0.001
    is expected, with the check reporting 0 error."""
    import onnxruntime as ort

    import graphopt

    m, feeds, want = _light_squeezenet()
    om = graphopt.optimize(m, inputs=feeds, passes=["constant_fold"], budget=0)
    assert "default session options" in om.report["check"]["reference"]
    om.save(tmp_path / "sq.onnx")
    got = ort.InferenceSession(str(tmp_path / "sq.onnx"),
                               providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-7)
