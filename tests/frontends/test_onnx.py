"""ONNX frontend: loading models into the IR (types, constants, external data, opaque nodes,
control flow with captured values, bad files)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt.errors import FrontendError
from graphopt.frontends import onnx as fe
from graphopt.frontends import onnx_export as ex
from graphopt.frontends.onnx_lift import ImportCtx
from graphopt.frontends.onnx_opaque import opaque_reason
from graphopt.ir.node import ConstData
from graphopt.ir.types import DType, OpaqueType, TensorType


def _model(nodes: list, inputs: list, outputs: list, inits: list | None = None,
           opset: int = 18, **kw: Any) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, inits or [])
    m = helper.make_model(g, opset_imports=kw.pop("opsets", [helper.make_opsetid("", opset)]),
                          **kw)
    m.ir_version = 9
    return m


def _ort(model: onnx.ModelProto | str | Path, feeds: dict[str, Any]) -> list[Any]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"]).run(None, feeds)


def _roundtrip_equal(m: onnx.ModelProto, feeds: dict[str, Any]) -> onnx.ModelProto:
    """load -> export; the export passes the full checker and ORT gives the same outputs."""
    out = ex.to_model(fe.load(m))
    onnx.checker.check_model(out, full_check=True)
    want, got = _ort(m, feeds), _ort(out, feeds)
    assert len(want) == len(got)
    for a, b in zip(want, got):
        for x, y in zip(a, b) if isinstance(a, list) else [(a, b)]:
            assert x.shape == y.shape and x.dtype == y.dtype
            if x.dtype == object:
                assert x.tolist() == y.tolist()
            else:
                np.testing.assert_allclose(x, y, rtol=1e-6)
    return out


X = helper.make_tensor_value_info


# ---- types ------------------------------------------------------------------------------------

def test_symbolic_and_unknown_dims() -> None:
    x = X("x", TensorProto.FLOAT, ["batch", "seq len", None, 4])
    y = X("y", TensorProto.FLOAT, ["batch", "seq len", None, 4])
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [x], [y])
    g = fe.load(m)
    t = g.input_types[0]
    assert isinstance(t, TensorType) and t.dtype == DType.f32
    assert t.shape[0] == "batch" and t.shape[1] == "seq_len" and t.shape[3] == 4
    assert t.shape[2] == "unk_0"
    # the output of relu carries the input's dims: symbols survive inference
    assert g.outputs[0].type == t
    assert g.nodes[-1].op == "relu"
    out = ex.to_model(g)
    dims = out.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", "seq_len", "unk_0", 4]


def test_unknown_dims_are_deterministic() -> None:
    x = X("x", TensorProto.FLOAT, [None, None])
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [x],
               [X("y", TensorProto.FLOAT, [None, None])])
    a, b = fe.load(m), fe.load(m)
    assert a.input_types == b.input_types
    assert a.input_types[0].shape == ("unk_0", "unk_1")


def test_meta_keeps_opsets_ir_version_and_metadata() -> None:
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [X("x", TensorProto.FLOAT, [2])],
               [X("y", TensorProto.FLOAT, [2])],
               opsets=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    helper.set_model_props(m, {"author": "me"})
    g = fe.load(m)
    assert dict(g.meta.opsets) == {"": 17, "com.microsoft": 1}
    assert g.meta.ir_version == 9
    assert dict(g.meta.metadata) == {"author": "me"}
    out = ex.to_model(g)
    assert {o.domain: o.version for o in out.opset_import}[""] == 17
    assert {p.key: p.value for p in out.metadata_props} == {"author": "me"}


# ---- constants --------------------------------------------------------------------------------

def test_initializers_and_constant_nodes() -> None:
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    nodes = [
        helper.make_node("Constant", [], ["c"], value_floats=[1.0, 2.0, 3.0]),
        helper.make_node("Constant", [], ["k"], value_int=7),
        helper.make_node("Add", ["x", "w"], ["s"]),
        helper.make_node("Mul", ["s", "c"], ["y"]),
    ]
    m = _model(nodes, [X("x", TensorProto.FLOAT, [2, 3])], [X("y", TensorProto.FLOAT, [2, 3])],
               [w])
    g = fe.load(m)
    consts = {n.origin.name: n.const for n in g.nodes if n.op == "constant"}
    assert set(consts) == {"w", "c"}  # "k" is unused: dead code is gone
    np.testing.assert_array_equal(consts["w"].array, np.arange(6).reshape(2, 3))
    assert consts["c"].array.dtype == np.float32 and consts["c"].shape == (3,)
    assert consts["w"].external is None
    x = np.ones((2, 3), np.float32)
    _roundtrip_equal(m, {"x": x})


def test_constant_scalar_keeps_rank_zero() -> None:
    nodes = [helper.make_node("Constant", [], ["k"], value_float=2.0),
             helper.make_node("Mul", ["x", "k"], ["y"])]
    m = _model(nodes, [X("x", TensorProto.FLOAT, [3])], [X("y", TensorProto.FLOAT, [3])])
    out = ex.to_model(fe.load(m))
    (init,) = out.graph.initializer
    assert list(init.dims) == []


def test_numpy_less_dtype_keeps_the_tensor_proto() -> None:
    bf = helper.make_tensor("b", TensorProto.BFLOAT16, [2], [1.0, 2.0])
    nodes = [helper.make_node("Cast", ["b"], ["y"], to=TensorProto.FLOAT)]
    m = _model(nodes, [], [X("y", TensorProto.FLOAT, [2])], [bf])
    g = fe.load(m)
    (c,) = [n.const for n in g.nodes if n.op == "constant"]
    assert c.dtype == DType.bf16 and c.onnx_proto is not None and not c.has_array
    out = _roundtrip_equal(m, {})
    assert out.graph.initializer[0].data_type == TensorProto.BFLOAT16


def test_string_initializer() -> None:
    s = numpy_helper.from_array(np.array(["a", "bc"], dtype=object), "s")
    nodes = [helper.make_node("Identity", ["s"], ["y"])]
    m = _model(nodes, [], [X("y", TensorProto.STRING, [2])], [s])
    out = _roundtrip_equal(m, {})
    assert _ort(out, {})[0].tolist() == ["a", "bc"]


# ---- external data ----------------------------------------------------------------------------

def _external_model(tmp: Path) -> tuple[Path, np.ndarray]:
    w = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    m = _model(nodes, [X("x", TensorProto.FLOAT, ["n", 64])], [X("y", TensorProto.FLOAT,
                                                                    ["n", 32])],
               [numpy_helper.from_array(w, "w")])
    path = tmp / "m.onnx"
    onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.weights", size_threshold=0)
    return path, w


def test_external_data_is_memory_mapped(tmp_path: Path) -> None:
    path, w = _external_model(tmp_path)
    g = fe.load(path)
    (c,) = [n.const for n in g.nodes if n.op == "constant"]
    assert c.external is not None
    fpath, off, length = c.external
    assert Path(fpath) == (tmp_path / "m.weights").resolve() and length == w.nbytes
    arr = c.array
    assert isinstance(arr, np.memmap)
    np.testing.assert_array_equal(arr, w)
    x = np.ones((3, 64), np.float32)
    out = ex.to_model(g)
    np.testing.assert_allclose(_ort(out, {"x": x})[0], x @ w, rtol=1e-5)


def test_in_memory_model_with_external_data_and_base_dir(tmp_path: Path) -> None:
    path, w = _external_model(tmp_path)
    m = onnx.load(str(path), load_external_data=False)
    with pytest.raises(FrontendError, match="in memory"):
        fe.load(m)
    g = fe.load(m, base_dir=tmp_path)
    (c,) = [n.const for n in g.nodes if n.op == "constant"]
    np.testing.assert_array_equal(c.array, w)


def test_missing_external_data_names_model_initializer_and_path(tmp_path: Path) -> None:
    path, _ = _external_model(tmp_path)
    (tmp_path / "m.weights").unlink()
    with pytest.raises(FrontendError) as e:
        fe.load(path)
    msg = str(e.value)
    assert str(path) in msg and "'w'" in msg and "m.weights" in msg and "missing" in msg
    assert "\n" not in msg


def test_short_external_data_file(tmp_path: Path) -> None:
    path, _ = _external_model(tmp_path)
    data = (tmp_path / "m.weights").read_bytes()
    (tmp_path / "m.weights").write_bytes(data[:100])
    with pytest.raises(FrontendError, match="has 100 bytes"):
        fe.load(path)


# ---- opaque nodes -----------------------------------------------------------------------------

def _if_model() -> onnx.ModelProto:
    """y = If(cond) then x + b else x * b, where the branches read outer x and b."""
    then_g = helper.make_graph([helper.make_node("Add", ["x", "b"], ["t"])], "then", [],
                               [X("t", TensorProto.FLOAT, [2])])
    else_g = helper.make_graph([helper.make_node("Mul", ["x", "b"], ["e"])], "else", [],
                               [X("e", TensorProto.FLOAT, [2])])
    b = numpy_helper.from_array(np.array([10.0, 20.0], np.float32), "b")
    nodes = [helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g),
             helper.make_node("Relu", ["y"], ["z"])]
    return _model(nodes, [X("cond", TensorProto.BOOL, []), X("x", TensorProto.FLOAT, [2])],
                  [X("z", TensorProto.FLOAT, [2])], [b])


def test_if_with_outer_scope_capture_round_trips() -> None:
    m = _if_model()
    g, report = fe.load_with_report(m)
    (n,) = [n for n in g.nodes if n.op == "opaque"]
    assert n.attrs["op_type"] == "If" and n.attrs["captured"] == ("x", "b")
    assert len(n.inputs) == 3 and n.inputs[2].node.op == "constant"
    assert "control flow" in (opaque_reason(n) or "")
    assert [o.op_type for o in report.opaque] == ["If"]
    x = np.array([1.0, -2.0], np.float32)
    for cond in (True, False):
        _roundtrip_equal(m, {"cond": np.array(cond), "x": x})


def test_loop_with_outer_scope_capture_round_trips() -> None:
    # for i in range(n): acc = acc + x * i   (x captured from the outer graph)
    body = helper.make_graph(
        [helper.make_node("Cast", ["i"], ["fi"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["x", "fi"], ["xi"]),
         helper.make_node("Add", ["acc", "xi"], ["acc2"]),
         helper.make_node("Identity", ["c"], ["c2"])],
        "body",
        [X("i", TensorProto.INT64, []), X("c", TensorProto.BOOL, []),
         X("acc", TensorProto.FLOAT, [3])],
        [X("c2", TensorProto.BOOL, []), X("acc2", TensorProto.FLOAT, [3])])
    nodes = [helper.make_node("Loop", ["n", "", "a0"], ["r"], body=body),
             helper.make_node("Neg", ["r"], ["y"])]
    m = _model(nodes, [X("n", TensorProto.INT64, []), X("x", TensorProto.FLOAT, [3]),
                       X("a0", TensorProto.FLOAT, [3])], [X("y", TensorProto.FLOAT, [3])])
    g = fe.load(m)
    (n,) = [n for n in g.nodes if n.op == "opaque" and n.attrs["op_type"] == "Loop"]
    assert n.attrs["present"] == (True, False, True) and n.attrs["captured"] == ("x",)
    _roundtrip_equal(m, {"n": np.array(4), "x": np.array([1, 2, 3], np.float32),
                         "a0": np.zeros(3, np.float32)})


def test_nested_subgraph_capture_skips_names_bound_inside() -> None:
    inner = helper.make_graph([helper.make_node("Add", ["t", "x"], ["u"])], "inner", [],
                              [X("u", TensorProto.FLOAT, [2])])
    inner_else = helper.make_graph([helper.make_node("Identity", ["t"], ["v"])], "inner_else",
                                   [], [X("v", TensorProto.FLOAT, [2])])
    outer_then = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["t"]),
         helper.make_node("If", ["c2"], ["w"], then_branch=inner, else_branch=inner_else)],
        "then", [], [X("w", TensorProto.FLOAT, [2])])
    outer_else = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                                   [X("e", TensorProto.FLOAT, [2])])
    m = _model([helper.make_node("If", ["c"], ["y"], then_branch=outer_then,
                                 else_branch=outer_else)],
               [X("c", TensorProto.BOOL, []), X("c2", TensorProto.BOOL, []),
                X("x", TensorProto.FLOAT, [2])], [X("y", TensorProto.FLOAT, [2])])
    g = fe.load(m)
    (n,) = [n for n in g.nodes if n.op == "opaque"]
    assert n.attrs["captured"] == ("x", "c2")  # "t" is defined inside
    for c, c2 in ((True, True), (True, False), (False, True)):
        _roundtrip_equal(m, {"c": np.array(c), "c2": np.array(c2),
                             "x": np.array([1, 2], np.float32)})


def test_sequence_values_are_opaque_types() -> None:
    nodes = [helper.make_node("SequenceConstruct", ["a", "b"], ["s"]),
             helper.make_node("SequenceAt", ["s", "i"], ["t"]),
             helper.make_node("Relu", ["t"], ["y"])]
    m = _model(nodes, [X("a", TensorProto.FLOAT, [2]), X("b", TensorProto.FLOAT, [2]),
                       X("i", TensorProto.INT64, [])], [X("y", TensorProto.FLOAT, [2])])
    g = fe.load(m)
    seq = [n for n in g.nodes if n.op == "opaque" and n.attrs["op_type"] == "SequenceConstruct"]
    assert isinstance(seq[0].out_types[0], OpaqueType)
    assert seq[0].out_types[0].summary.startswith("seq(")
    _roundtrip_equal(m, {"a": np.array([1, -1], np.float32), "b": np.array([-3, 3], np.float32),
                         "i": np.array(1)})


def test_sequence_graph_output() -> None:
    nodes = [helper.make_node("SplitToSequence", ["a"], ["s"], keepdims=0)]
    seq_t = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)
    m = _model(nodes, [X("a", TensorProto.FLOAT, [3, 2])], [seq_t])
    out = _roundtrip_equal(m, {"a": np.arange(6, dtype=np.float32).reshape(3, 2)})
    assert out.graph.output[0].type.HasField("sequence_type")


def test_com_microsoft_op_stays_opaque_and_runs() -> None:
    nodes = [helper.make_node("Gelu", ["x"], ["g"], domain="com.microsoft"),
             helper.make_node("Add", ["g", "x"], ["y"])]
    m = _model(nodes, [X("x", TensorProto.FLOAT, [4])], [X("y", TensorProto.FLOAT, [4])],
               opsets=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])
    g, report = fe.load_with_report(m)
    note = report.opaque[0]
    assert note.domain == "com.microsoft" and "not modelled" in note.reason
    out = _roundtrip_equal(m, {"x": np.array([-1, 0, 1, 2], np.float32)})
    assert any(n.domain == "com.microsoft" for n in out.graph.node)


def test_empty_optional_outputs_are_kept_in_place() -> None:
    # LSTM with only its second output (Y_h) requested: outputs ["", "h", ""]
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((1, 8, 3)).astype(np.float32), "W")
    r = numpy_helper.from_array(rng.standard_normal((1, 8, 2)).astype(np.float32), "R")
    nodes = [helper.make_node("LSTM", ["x", "W", "R"], ["", "h", ""], hidden_size=2),
             helper.make_node("Relu", ["h"], ["y"])]
    m = _model(nodes, [X("x", TensorProto.FLOAT, [4, 1, 3])],
               [X("y", TensorProto.FLOAT, [1, 1, 2])], [w, r])
    g = fe.load(m)
    (n,) = [n for n in g.nodes if n.op == "opaque"]
    assert len(n.out_types) == 1
    out = _roundtrip_equal(m, {"x": rng.standard_normal((4, 1, 3)).astype(np.float32)})
    (lstm,) = [n for n in out.graph.node if n.op_type == "LSTM"]
    assert lstm.output[0] == "" and lstm.output[1] and lstm.output[2] == ""
    # the opaque node also runs on its own (interpreter path)
    from graphopt.ir.interp import run

    x = rng.standard_normal((4, 1, 3)).astype(np.float32)
    np.testing.assert_allclose(run(g, x)[0], _ort(m, {"x": x})[0], rtol=1e-5)


def test_local_function_call_site_is_opaque() -> None:
    f = helper.make_function("my.fn", "Twice", ["a"], ["b"],
                             [helper.make_node("Add", ["a", "a"], ["b"])],
                             [helper.make_opsetid("", 18)])
    nodes = [helper.make_node("Twice", ["x"], ["t"], domain="my.fn"),
             helper.make_node("Relu", ["t"], ["y"])]
    m = _model(nodes, [X("x", TensorProto.FLOAT, [2])], [X("y", TensorProto.FLOAT, [2])],
               opsets=[helper.make_opsetid("", 18), helper.make_opsetid("my.fn", 1)],
               functions=[f])
    g, report = fe.load_with_report(m)
    assert len(g.meta.functions) == 1
    assert "local function" in report.opaque[0].reason
    out = _roundtrip_equal(m, {"x": np.array([1, -2], np.float32)})
    assert [fn.name for fn in out.functions] == ["Twice"]


def test_mapped_op_lifts_to_ir() -> None:
    nodes = [helper.make_node("Add", ["x", "y"], ["s"]), helper.make_node("Relu", ["s"], ["r"])]
    m = _model(nodes, [X("x", TensorProto.FLOAT, [2, 3]), X("y", TensorProto.FLOAT, [3])],
               [X("r", TensorProto.FLOAT, [2, 3])])
    g, report = fe.load_with_report(m)
    assert [n.op for n in g.nodes if n.op != "input"] == ["add", "relu"]
    assert report.opaque == []
    add = g.nodes[-2]
    assert add.origin is not None and add.origin.source == "onnx" and add.origin.detail == "Add"


def test_import_ctx_const_and_num_outputs() -> None:
    node = helper.make_node("Add", ["x", "c", ""], ["y", ""])
    from graphopt.ir.node import Node, Origin, input_node

    xv = input_node("x", TensorType((2,), DType.f32)).out
    cv = Node.build("constant", (), {"data": ConstData(np.array([1.0, 2.0], np.float32))}).out
    ctx = ImportCtx(node, 18, [xv, cv, None], {}, Origin("onnx", "n", "Add"))
    assert ctx.const(0) is None and ctx.const(2) is None
    np.testing.assert_array_equal(ctx.const(1), [1.0, 2.0])
    assert ctx.num_outputs == 1
    v = ctx.build("add", [xv, cv])
    assert v.node.origin == Origin("onnx", "n", "Add") and v.type == TensorType((2,), DType.f32)
    k = ctx.constant(np.array(3, np.int64))
    assert k.node.op == "constant" and k.type == TensorType((), DType.i64)


# ---- bad input --------------------------------------------------------------------------------

def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FrontendError) as e:
        fe.load(tmp_path / "nope.onnx")
    assert "nope.onnx" in _one_line(e) and "no such file" in str(e.value)


def test_not_onnx_and_truncated(tmp_path: Path) -> None:
    p = tmp_path / "junk.onnx"
    p.write_bytes(b"\xff\xfe this is not a protobuf \x00\x01" * 5)
    with pytest.raises(FrontendError) as e:
        fe.load(p)
    assert "junk.onnx" in _one_line(e)
    t = tmp_path / "text.onnx"
    t.write_text("hello world\n")
    with pytest.raises(FrontendError):
        fe.load(t)
    good = _if_model().SerializeToString()
    for cut in (len(good) // 3, len(good) // 2, len(good) - 7):
        q = tmp_path / f"cut{cut}.onnx"
        q.write_bytes(good[:cut])
        with pytest.raises(FrontendError) as e:
            fe.load(q)
        assert q.name in _one_line(e)
    with pytest.raises(FrontendError, match="directory"):
        fe.load(tmp_path)


def test_cyclic_graph_names_a_node_on_the_cycle(tmp_path: Path) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="start"),
             helper.make_node("Add", ["a", "c"], ["b"], name="n1"),
             helper.make_node("Neg", ["b"], ["c"], name="n2"),
             helper.make_node("Relu", ["c"], ["y"], name="end")]
    m = _model(nodes, [X("x", TensorProto.FLOAT, [2])], [X("y", TensorProto.FLOAT, [2])])
    p = tmp_path / "cyc.onnx"
    p.write_bytes(m.SerializeToString())
    with pytest.raises(FrontendError) as e:
        fe.load(p, check=False)
    msg = _one_line(e)
    assert "cycle" in msg and "cyc.onnx" in msg and ("'n1'" in msg or "'n2'" in msg)
    assert "'start'" not in msg.split("cycle")[1]


def test_undefined_input_names_node() -> None:
    nodes = [helper.make_node("Add", ["x", "ghost"], ["y"], name="adder")]
    m = _model(nodes, [X("x", TensorProto.FLOAT, [2])], [X("y", TensorProto.FLOAT, [2])])
    with pytest.raises(FrontendError) as e:
        fe.load(m, check=False)
    msg = _one_line(e)
    assert "'ghost'" in msg and "adder" in msg and "Add" in msg


def test_unknown_domain_without_opset_import() -> None:
    nodes = [helper.make_node("Frob", ["x"], ["y"], name="f", domain="acme")]
    m = _model(nodes, [X("x", TensorProto.FLOAT, [2])], [X("y", TensorProto.FLOAT, [2])])
    with pytest.raises(FrontendError) as e:
        fe.load(m, check=False)
    assert "acme" in _one_line(e) and "Frob" in str(e.value)


def test_unlisted_custom_domain_with_opset_loads_opaque() -> None:
    nodes = [helper.make_node("Frob", ["x"], ["y"], name="f", domain="acme")]
    m = _model(nodes, [X("x", TensorProto.FLOAT, [2])], [X("y", TensorProto.FLOAT, [2])],
               opsets=[helper.make_opsetid("", 18), helper.make_opsetid("acme", 1)])
    g, report = fe.load_with_report(m)
    assert report.opaque[0].op_type == "Frob"
    out = ex.to_model(g)
    assert out.graph.node[0].domain == "acme"


def test_shape_computations_on_constants_fold_at_import() -> None:
    # the legacy-exporter pattern: Expand's shape is computed from constants
    shape = numpy_helper.from_array(np.array([2], np.int64), "shp")
    target = numpy_helper.from_array(np.array([3, 4], np.int64), "tgt")
    nodes = [helper.make_node("ConstantOfShape", ["shp"], ["ones"],
                              value=numpy_helper.from_array(np.array([1], np.int64))),
             helper.make_node("Mul", ["ones", "tgt"], ["dims"]),
             helper.make_node("Expand", ["x", "dims"], ["y"])]
    m = _model(nodes, [X("x", TensorProto.FLOAT, [1, 4])], [X("y", TensorProto.FLOAT, [3, 4])],
               [shape, target])
    g, report = fe.load_with_report(m)
    assert report.opaque == [] and report.folded >= 1
    assert [n.op for n in g.nodes if n.op not in ("input", "constant")] == ["expand"]
    _roundtrip_equal(m, {"x": np.arange(4, dtype=np.float32).reshape(1, 4)})
