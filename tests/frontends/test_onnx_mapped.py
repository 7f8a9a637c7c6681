"""Large inline weights are mapped from the model file, not parsed (``onnx_mapped``,
``read_model(map_initializers=True)``): the proto the frontend works on is small, the weights
read back equal, a file replaced after loading is still read as it was, other layouts are
parsed whole."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt.errors import FrontendError
from graphopt.frontends import onnx as fe
from graphopt.frontends import onnx_export as ex
from graphopt.frontends.onnx_io import MAP_MIN_BYTES, read_model

RNG = np.random.default_rng(0)
W = RNG.standard_normal((200, 100)).astype(np.float32)  # 80,000 bytes: mapped
B = RNG.standard_normal(100).astype(np.float32)  # 400 bytes: parsed
NAMES = ["w", "lbl", "b"]


def _model(w: np.ndarray = W) -> onnx.ModelProto:
    """x @ w + b, plus a large string initializer (no raw data: never mapped)."""
    labels = numpy_helper.from_array(np.array(["a" * 20] * 4000, dtype=object), "lbl")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Add", ["y", "b"], ["z"]),
         helper.make_node("Identity", ["lbl"], ["labels"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 200])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [4, 100]),
         helper.make_tensor_value_info("labels", TensorProto.STRING, [4000])],
        [numpy_helper.from_array(w, "w"), labels, numpy_helper.from_array(B, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _write(path: Path, m: onnx.ModelProto) -> Path:
    path.write_bytes(m.SerializeToString())
    return path


def test_large_initializer_is_external_to_the_file_itself(tmp_path: Path) -> None:
    p = _write(tmp_path / "m.onnx", _model())
    m = read_model(p, map_initializers=True)
    w, lbl, b = m.graph.initializer
    assert [t.name for t in m.graph.initializer] == NAMES  # order kept
    assert w.data_location == TensorProto.EXTERNAL and not w.HasField("raw_data")
    info = {e.key: e.value for e in w.external_data}
    assert info["location"] == "m.onnx" and int(info["length"]) == W.nbytes >= MAP_MIN_BYTES
    raw = p.read_bytes()[int(info["offset"]):int(info["offset"]) + W.nbytes]
    assert np.array_equal(np.frombuffer(raw, np.float32).reshape(W.shape), W)
    assert b.data_location == TensorProto.DEFAULT and lbl.data_location == TensorProto.DEFAULT
    whole = read_model(p)
    assert m.ByteSize() < whole.ByteSize() - W.nbytes + 200
    # everything but the mapped weight's data is the file's own proto
    w.ClearField("external_data")
    w.ClearField("data_location")
    w.raw_data = whole.graph.initializer[0].raw_data
    assert m.SerializeToString() == whole.SerializeToString()


def test_loaded_graph_reads_the_mapped_weights(tmp_path: Path) -> None:
    p = _write(tmp_path / "m.onnx", _model())
    g = fe.load(p)
    consts = {n.origin.name: n.const for n in g.nodes if n.op == "constant" and n.origin}
    assert consts["w"].external is not None and consts["w"].file is not None
    assert np.array_equal(consts["w"].array, W) and np.array_equal(consts["b"].array, B)
    # the export writes the weights inline again: the same bytes as the file's
    assert ex.to_bytes(g) and np.array_equal(
        numpy_helper.to_array(onnx.load_from_string(ex.to_bytes(g)).graph.initializer[0]), W)


def test_a_file_replaced_after_loading_is_read_as_it_was(tmp_path: Path) -> None:
    p = _write(tmp_path / "m.onnx", _model())
    g = fe.load(p)
    tmp = _write(tmp_path / "other.onnx", _model(W[::-1].copy() + 1))  # same layout
    os.replace(tmp, p)  # as an in-place save replaces it
    w = next(n.const for n in g.nodes if n.op == "constant" and n.origin.name == "w")
    assert np.array_equal(w.array, W)
    out = tmp_path / "out.onnx"
    ex.save(g, out, external_threshold=1 << 10)  # streamed from the (old) file
    ws = {t.name: numpy_helper.to_array(t, str(tmp_path))
          for t in onnx.load(str(out)).graph.initializer}
    assert np.array_equal(ws["w"], W)
    again = fe.load(p)  # a new load reads the new file
    w2 = next(n.const for n in again.nodes if n.op == "constant" and n.origin.name == "w")
    assert np.array_equal(w2.array, W[::-1] + 1)


def test_other_layouts_are_parsed_whole(tmp_path: Path) -> None:
    m = _model()
    # a graph field in two parts (protobuf merges them): not the layout read_mapped reads
    extra = onnx.ModelProto()
    extra.graph.doc_string = "second part"
    p = tmp_path / "split.onnx"
    p.write_bytes(m.SerializeToString() + extra.SerializeToString())
    got = read_model(p, map_initializers=True)
    assert got.graph.doc_string == "second part"
    assert got.graph.initializer[0].HasField("raw_data")
    # nothing large enough: parsed whole too
    small = _model(W[:10].copy())
    small.graph.node[0].input[1] = "w"
    small.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 10
    p2 = _write(tmp_path / "small.onnx", small)
    assert read_model(p2, map_initializers=True).graph.initializer[0].HasField("raw_data")


def test_truncated_file_is_a_frontend_error(tmp_path: Path) -> None:
    data = _model().SerializeToString()
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[:len(data) // 2])
    with pytest.raises(FrontendError):
        fe.load(p)


def _mixed(tmp_path: Path) -> Path:
    """Large and small weights of several element types, some mapped from the file."""
    h = RNG.standard_normal((300, 300)).astype(np.float16)
    mask = RNG.random(100_000) < 0.5
    idx = RNG.integers(-5, 5, 20_000).astype(np.int64)
    g = helper.make_graph(
        [helper.make_node("Cast", ["h"], ["hf"], to=TensorProto.FLOAT),
         helper.make_node("Not", ["m"], ["nm"]), helper.make_node("Neg", ["i"], ["ni"]),
         helper.make_node("MatMul", ["x", "w"], ["y"]),
         helper.make_node("Add", ["y", "b"], ["z"])],
        "mixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 200])],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in (
            ("hf", TensorProto.FLOAT, [300, 300]), ("nm", TensorProto.BOOL, [100_000]),
            ("ni", TensorProto.INT64, [20_000]), ("z", TensorProto.FLOAT, [4, 100]))],
        [numpy_helper.from_array(a, n) for n, a in (("h", h), ("m", mask), ("i", idx),
                                                    ("w", W), ("b", B))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return _write(tmp_path / "mixed.onnx", m)


@pytest.mark.parametrize("name", ["m.onnx", "mixed.onnx"])
def test_to_bytes_is_the_serialized_model(tmp_path: Path, name: str) -> None:
    p = _write(tmp_path / "m.onnx", _model()) if name == "m.onnx" else _mixed(tmp_path)
    g = fe.load(p)
    got = ex.to_bytes(g)
    ex._last_export = None
    assert got == ex.to_model(g).SerializeToString()
    # and a graph whose weights are numpy arrays in memory (the parsed-whole path)
    g2 = fe.load(onnx.load(str(p)))
    ex._last_export = None
    assert ex.to_bytes(g2) == ex.to_model(g2).SerializeToString()


def test_inline_parts_refuses_a_missing_placeholder() -> None:
    from graphopt.frontends.onnx_mapped import inline_parts

    data = _model().SerializeToString()
    with pytest.raises(ValueError, match="1 tensors were set aside, 0 placeholders"):
        inline_parts(data, "<aside>", [[b"\0" * 8]])


def test_typed_data_beside_raw_data_is_still_refused(tmp_path: Path) -> None:
    m = _model()
    m.graph.initializer[0].float_data.append(1.0)  # invalid: two value fields
    p = _write(tmp_path / "bad.onnx", m)
    assert read_model(p, map_initializers=True).graph.initializer[0].HasField("raw_data")
    with pytest.raises(FrontendError, match="invalid ONNX model"):
        fe.load(p)
