"""ONNX exporter: IR -> ModelProto / file (names, initializers, external data, opaque nodes with
captured values, atomic writes)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt import parse
from graphopt.errors import ExportError
from graphopt.frontends import onnx as fe
from graphopt.frontends import onnx_export as ex
from graphopt.ir.graph import Graph
from graphopt.ir.interp import run
from graphopt.ir.node import ConstData, Node, Value, constant, input_node, op
from graphopt.ir.types import DType, TensorType

X = helper.make_tensor_value_info


def _ort(model: onnx.ModelProto | Path, feeds: dict[str, Any]) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"]).run(None, feeds)


def _f32(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_ir_graph_exports_checks_and_runs() -> None:
    g = parse("""
graph main(%x: f32[batch,4], %y: f32[4]) {
  %0: f32[batch,4] = add(%x, %y)
  %1: f32[batch,4] = relu(%0)
  %2: f32[batch,4] = mul(%1, %x)
  return %2 as "out"
}
""")
    m = ex.to_model(g, full_check=True)
    onnx.checker.check_model(m, full_check=True)
    assert [i.name for i in m.graph.input] == ["x", "y"]
    assert [o.name for o in m.graph.output] == ["out"]
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 4
    x, y = _f32(3, 4), _f32(4, seed=1)
    np.testing.assert_allclose(_ort(m, {"x": x, "y": y})[0], run(g, x, y)[0], rtol=1e-6)


def test_output_that_is_an_input_or_repeated_gets_identity() -> None:
    x = input_node("x", TensorType((2,), DType.f32))
    r = op("relu", x.out)
    g = Graph([x], [x.out, r, r], ["a", "b", "c"])
    m = ex.to_model(g)
    onnx.checker.check_model(m, full_check=True)
    v = np.array([-1.0, 2.0], np.float32)
    a, b, c = _ort(m, {"x": v})
    np.testing.assert_array_equal(a, v)
    np.testing.assert_array_equal(b, [0, 2])
    np.testing.assert_array_equal(c, [0, 2])
    assert sum(1 for n in m.graph.node if n.op_type == "Identity") == 2


def test_constant_output_and_passthrough_with_same_name() -> None:
    x = input_node("x", TensorType((2,), DType.f32))
    k = constant(np.array([1.0, 2.0], np.float32))
    g = Graph([x], [x.out, k], ["x", "k"])
    m = ex.to_model(g)
    onnx.checker.check_model(m, full_check=True)
    a, b = _ort(m, {"x": np.zeros(2, np.float32)})
    np.testing.assert_array_equal(b, [1, 2])


def test_one_initializer_per_const_data_and_small_ctx_consts_shared() -> None:
    data = ConstData(np.arange(4, dtype=np.float32))
    x = input_node("x", TensorType((4,), DType.f32))
    c1 = Node.build("constant", (), {"data": data}).out
    s = op("add", x.out, c1)
    t = op("mul", s, c1)
    g = Graph([x], [t], ["y"])
    m = ex.to_model(g)
    assert len(m.graph.initializer) == 1
    ctx = ex.ExportCtx(g, 18, None)
    a = ctx.const(np.array([1, 2], np.int64))
    b = ctx.const(np.array([1, 2], np.int64))
    c = ctx.const(np.array([1, 2], np.int32))
    assert a == b and a != c


def test_emit_attribute_conversion() -> None:
    x = input_node("x", TensorType((2, 3), DType.f32))
    g = Graph([x], [x.out], ["y"])
    ctx = ex.ExportCtx(g, 18, None)
    (o,) = ctx.emit("Foo", ["x"], 1, domain="acme", f=1.5, i=2, b=True, s="hi", ints=(1, 2),
                    floats=[1, 2.5], empty=(), t=np.array([1.0], np.float32), dt=DType.f16,
                    none=None)
    n = ctx.nodes[-1]
    got = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    assert got["f"] == 1.5 and got["i"] == 2 and got["b"] == 1 and got["s"] == b"hi"
    assert got["ints"] == [1, 2] and got["floats"] == [1.0, 2.5] and got["empty"] == []
    assert got["dt"] == TensorProto.FLOAT16 and "none" not in got
    assert numpy_helper.to_array(got["t"]).tolist() == [1.0]
    assert n.domain == "acme" and o not in ("x", "y")
    assert "acme" in ctx.domains


def test_export_is_deterministic() -> None:
    m = _if_model()
    a = ex.to_model(fe.load(m)).SerializeToString()
    b = ex.to_model(fe.load(m)).SerializeToString()
    assert a == b


def test_names_come_from_provenance() -> None:
    nodes = [helper.make_node("Add", ["x", "x"], ["sum"], name="/block/Add"),
             helper.make_node("Relu", ["sum"], ["y"], name="/block/Relu")]
    m = helper.make_model(helper.make_graph(nodes, "g", [X("x", TensorProto.FLOAT, [2])],
                                            [X("y", TensorProto.FLOAT, [2])]))
    out = ex.to_model(fe.load(m))
    names = [o for n in out.graph.node for o in n.output]
    assert "/block/Add" in names and "y" in names
    assert [n.name for n in out.graph.node] == ["/block/Add", "/block/Relu"]


# ---- opaque nodes with captured values ------------------------------------------------------

def _if_model() -> onnx.ModelProto:
    then_g = helper.make_graph([helper.make_node("Add", ["x", "b"], ["t"])], "then", [],
                               [X("t", TensorProto.FLOAT, [2])])
    else_g = helper.make_graph([helper.make_node("Mul", ["x", "b"], ["e"])], "else", [],
                               [X("e", TensorProto.FLOAT, [2])])
    b = numpy_helper.from_array(np.array([10.0, 20.0], np.float32), "b")
    nodes = [helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)]
    m = helper.make_model(helper.make_graph(
        nodes, "g", [X("cond", TensorProto.BOOL, []), X("x", TensorProto.FLOAT, [2])],
        [X("y", TensorProto.FLOAT, [2])], [b]), opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    return m


def test_two_opaque_nodes_capturing_one_name_with_different_values() -> None:
    g = fe.load(_if_model())
    (iff,) = [n for n in g.nodes if n.op == "opaque"]
    cond, x, b = iff.inputs
    # a second If reading "x" as relu(x) and "b" as the same constant
    x2 = op("relu", x)
    iff2 = Node.build("opaque", [cond, x2, b], iff.attrs, iff.origin)
    y = op("add", iff.outputs[0], iff2.outputs[0])
    g2 = Graph(g.inputs, [y], ["y"], meta=g.meta)
    m = ex.to_model(g2, full_check=True)
    xv = np.array([-1.0, 2.0], np.float32)
    bv = np.array([10.0, 20.0], np.float32)
    for c in (True, False):
        want = (xv + bv) + (np.maximum(xv, 0) + bv) if c else xv * bv + np.maximum(xv, 0) * bv
        np.testing.assert_allclose(_ort(m, {"cond": np.array(c), "x": xv})[0], want)
    ifs = [n for n in m.graph.node if n.op_type == "If"]
    reads = [{i for a in n.attribute for sub in [a.g] for k in sub.node for i in k.input}
             for n in ifs]
    assert reads[0] != reads[1]  # one of them reads a renamed alias of "x"


def test_captured_value_from_a_computed_node_gets_its_name() -> None:
    then_g = helper.make_graph([helper.make_node("Identity", ["h"], ["t"])], "then", [],
                               [X("t", TensorProto.FLOAT, [2])])
    else_g = helper.make_graph([helper.make_node("Neg", ["h"], ["e"])], "else", [],
                               [X("e", TensorProto.FLOAT, [2])])
    nodes = [helper.make_node("Relu", ["x"], ["h"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)]
    m = helper.make_model(helper.make_graph(
        nodes, "g", [X("cond", TensorProto.BOOL, []), X("x", TensorProto.FLOAT, [2])],
        [X("y", TensorProto.FLOAT, [2])]), opset_imports=[helper.make_opsetid("", 18)])
    out = ex.to_model(fe.load(m), full_check=True)
    assert not any(n.op_type == "Identity" for n in out.graph.node)
    assert any(n.op_type == "Relu" and n.output[0] == "h" for n in out.graph.node)
    xv = np.array([-1.0, 2.0], np.float32)
    np.testing.assert_allclose(_ort(out, {"cond": np.array(False), "x": xv})[0], [0, -2])


def test_opset_change_converts_opaque_nodes_whose_schema_changed(monkeypatch) -> None:
    # TopK changed at opset 10 (k became an input) and 11
    nodes = [helper.make_node("TopK", ["x"], ["v", "i"], k=2)]
    m = helper.make_model(helper.make_graph(
        nodes, "g", [X("x", TensorProto.FLOAT, [4])],
        [X("v", TensorProto.FLOAT, [2]), X("i", TensorProto.INT64, [2])]),
        opset_imports=[helper.make_opsetid("", 9)])
    m.ir_version = 4
    g = fe.load(m)
    assert any(n.op == "opaque" and n.attrs["op_type"] == "TopK" for n in g.nodes)
    x = np.array([3.0, 1.0, 4.0, 1.5], np.float32)
    old = ort.InferenceSession(ex.to_model(g).SerializeToString()).run(None, {"x": x})
    new_model = ex.to_model(g, opset=18)
    topk = [n for n in new_model.graph.node if n.op_type == "TopK"]
    assert len(topk) == 1 and len(topk[0].input) == 2  # k is an input from opset 10
    new = ort.InferenceSession(new_model.SerializeToString()).run(None, {"x": x})
    for a, b in zip(old, new):
        np.testing.assert_array_equal(a, b)

    from onnx import version_converter

    def refuse(*args: object, **kw: object) -> None:
        raise RuntimeError("no adapter")

    monkeypatch.setattr(version_converter, "convert_version", refuse)
    with pytest.raises(ExportError, match="TopK.*cannot be converted to opset 18"):
        ex.to_model(g, opset=18)


def test_unmapped_op_fails_with_node_named() -> None:
    from graphopt.ops.registry import OpDef

    class NoOnnx(OpDef):
        name = "no_onnx_test_op"

    x = input_node("x", TensorType((2,), DType.f32))
    g = Graph([x], [op("relu", x.out)], ["y"])
    ctx = ex.ExportCtx(g, 18, None)
    with pytest.raises(ExportError, match="no ONNX mapping"):
        NoOnnx().to_onnx(ctx, g.nodes[-1])


# ---- files ------------------------------------------------------------------------------------

def _weights_graph(n: int = 64) -> tuple[Graph, np.ndarray]:
    w = _f32(n, n, seed=3)
    x = input_node("x", TensorType(("b", n), DType.f32))
    y = op("matmul", x.out, constant(w))
    small = constant(np.array([2.0], np.float32))
    return Graph([x], [op("mul", y, small)], ["y"]), w


def test_save_inline_leaves_no_temp_files(tmp_path: Path) -> None:
    g, w = _weights_graph()
    p = ex.save(g, tmp_path / "m.onnx")
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]
    x = _f32(2, 64)
    np.testing.assert_allclose(_ort(p, {"x": x})[0], 2 * (x @ w), rtol=1e-5)


def test_save_external_data_and_reload(tmp_path: Path) -> None:
    g, w = _weights_graph()
    p = ex.save(g, tmp_path / "m.onnx", external_threshold=1000)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.onnx.data"]
    m = onnx.load(str(p), load_external_data=False)
    big = [t for t in m.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    assert len(big) == 1 and len(m.graph.initializer) == 2  # the 4-byte one stays inline
    onnx.checker.check_model(str(p), full_check=True)
    x = _f32(2, 64)
    np.testing.assert_allclose(_ort(p, {"x": x})[0], 2 * (x @ w), rtol=1e-5)
    # reload: the weight is an external memory-mapped constant; re-save elsewhere inline
    g2 = fe.load(p)
    (c,) = [n.const for n in g2.nodes if n.op == "constant" and n.const.external]
    np.testing.assert_array_equal(c.array, w)
    p2 = ex.save(g2, tmp_path / "sub" / "m2.onnx")
    np.testing.assert_allclose(_ort(p2, {"x": x})[0], 2 * (x @ w), rtol=1e-5)
    # and external again, over the file it was loaded from
    ex.save(g2, p, external_threshold=1000)
    np.testing.assert_allclose(_ort(p, {"x": x})[0], 2 * (x @ w), rtol=1e-5)


def test_save_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g, _ = _weights_graph()
    (tmp_path / "m.onnx").write_bytes(b"old")

    def boom(*a: Any, **k: Any) -> None:
        raise ExportError("boom")

    monkeypatch.setattr(ex, "_check", boom)
    with pytest.raises(ExportError, match="boom"):
        ex.save(g, tmp_path / "m.onnx", external_threshold=1000)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]
    assert (tmp_path / "m.onnx").read_bytes() == b"old"


def test_round_trip_keeps_functions_and_bf16(tmp_path: Path) -> None:
    f = helper.make_function("my.fn", "Twice", ["a"], ["b"],
                             [helper.make_node("Add", ["a", "a"], ["b"])],
                             [helper.make_opsetid("", 18)])
    bf = helper.make_tensor("k", TensorProto.BFLOAT16, [2], [1.0, 3.0])
    nodes = [helper.make_node("Twice", ["x"], ["t"], domain="my.fn"),
             helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["t", "kf"], ["y"])]
    m = helper.make_model(helper.make_graph(nodes, "g", [X("x", TensorProto.FLOAT, [2])],
                                            [X("y", TensorProto.FLOAT, [2])], [bf]),
                          opset_imports=[helper.make_opsetid("", 18),
                                         helper.make_opsetid("my.fn", 1)], functions=[f])
    m.ir_version = 9
    p = ex.save(fe.load(m), tmp_path / "f.onnx", external_threshold=0)
    out = onnx.load(str(p))
    assert [fn.name for fn in out.functions] == ["Twice"]
    xv = np.array([1.0, 2.0], np.float32)
    np.testing.assert_allclose(_ort(p, {"x": xv})[0], _ort(m, {"x": xv})[0])


def test_value_not_a_graph_value_is_reported() -> None:
    x = input_node("x", TensorType((2,), DType.f32))
    g = Graph([x], [op("relu", x.out)], ["y"])
    ctx = ex.ExportCtx(g, 18, None)
    v = Value(g.nodes[-1], 0)
    assert ctx.name(v) == "y" and ctx.out_names(g.nodes[-1]) == ["y"]


def test_save_writes_the_bytes_the_check_ran(tmp_path: Path) -> None:
    x = input_node("x", TensorType((2, 3), DType.f32))
    g = Graph([x], [op("relu", x.out)], ["y"])
    checked = ex.to_bytes(g)
    assert ex.to_bytes(g) is checked  # remembered
    p = ex.save(g, tmp_path / "a.onnx")
    assert p.read_bytes() == checked
    # taken by save: the next save builds afresh (same content), another opset never reuses
    ex.save(g, tmp_path / "b.onnx")
    assert (tmp_path / "b.onnx").read_bytes() == checked
    ex.to_bytes(g)
    ex.save(g, tmp_path / "c.onnx", opset=13)
    assert onnx.load(str(tmp_path / "c.onnx")).opset_import[0].version == 13
