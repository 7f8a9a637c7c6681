"""The quantization ops (ops/quant.py) and the 4-bit integer dtypes: semantics against values
worked out by hand (rounding half to even, saturation, per-axis and blocked scales with a partial
last block), against ONNX Runtime on one-node models built here (u4 / i4 outputs are read back
through a Cast to int32: ONNX Runtime's Python API cannot return 4-bit tensors), torch against
numpy for the 4-bit forms (the conformance suite covers the 8-bit ones), u4 / i4 constants
through ONNX export / import (packed, inline and external) and the text IR, shape errors, the z3
semantics, ONNX import of every form, the compositions below opset 21, and graphs of these ops
run by the interpreter and by graphopt.check's ONNX Runtime and torch backends."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from graphopt.check import check_graphs
from graphopt.errors import ExportError, ParseError, ShapeError
from graphopt.ir.graph import Graph, GraphMeta
from graphopt.ir.interp import run
from graphopt.ir.node import ConstData, Node, constant, input_node
from graphopt.ir.text import parse, print_graph_with_weights
from graphopt.ir.types import DType, TensorType, numpy_to_torch, torch_to_numpy
from graphopt.ops.registry import get_op, nbytes
from tests.ops.op_testing import export, import_onnx, onnx_model, ort_run

RNG = np.random.default_rng(11)
U4, I4 = ml_dtypes.uint4, ml_dtypes.int4


def q(x: Any, s: Any, z: Any, **attrs: Any) -> np.ndarray:
    return get_op("quantize_linear").numpy([np.asarray(x), np.asarray(s), np.asarray(z)],
                                           _attrs("quantize_linear", x, s, z, attrs))[0]


def dq(x: Any, s: Any, z: Any, **attrs: Any) -> np.ndarray:
    return get_op("dequantize_linear").numpy([np.asarray(x), np.asarray(s), np.asarray(z)],
                                             _attrs("dequantize_linear", x, s, z, attrs))[0]


def _attrs(op: str, *arrays_and_attrs: Any) -> Any:
    *arrays, attrs = arrays_and_attrs
    return node_of(op, *arrays, **attrs).attrs


def node_of(op: str, *arrays: Any, **attrs: Any) -> Node:
    ins = [input_node(f"x{k}", TensorType(np.shape(a), DType.from_numpy(np.asarray(a).dtype))).out
           for k, a in enumerate(arrays)]
    return Node.build(op, ins, attrs)


def as_graph(node: Node, opset: int = 21) -> Graph:
    """A graph computing ``node`` from the graph inputs it reads (directly or not)."""
    ins: dict[int, Node] = {}
    todo = [node]
    while todo:
        n = todo.pop()
        if n.op == "input":
            ins[id(n)] = n
        todo.extend(v.node for v in n.inputs)
    order = sorted(ins.values(), key=lambda n: n.attrs["name"])
    return Graph(order, list(node.outputs), meta=GraphMeta(opsets=(("", opset),)))


def int4_weight_graph(w: np.ndarray) -> tuple[Graph, dict[str, np.ndarray]]:
    """dequantize_linear(w constant, scale input, zero point 0): a graph keeping ``w`` as a
    constant through import (nothing folds it)."""
    s = input_node("s", TensorType((), DType.f32))
    n = Node.build("dequantize_linear", [constant(w), s.out, constant(np.zeros((), w.dtype))])
    return Graph([s], [n.out], meta=GraphMeta(opsets=(("", 21),))), {"s": np.array(1.0, np.float32)}


# ---- semantics, by hand -------------------------------------------------------------------------

TIES = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.49, 300.0, -300.0], np.float32)


@pytest.mark.parametrize("zdt,zp,want", [
    (np.int8, 0, [0, 2, 2, 0, -2, -2, 3, 127, -128]),
    (np.uint8, 3, [3, 5, 5, 3, 1, 1, 6, 255, 0]),
    (I4, -1, [-1, 1, 1, -1, -3, -3, 2, 7, -8]),
    (U4, 8, [8, 10, 10, 8, 6, 6, 11, 15, 0]),
])
def test_quantize_rounds_half_to_even_and_saturates(zdt: Any, zp: int, want: list[int]) -> None:
    y = q(TIES, np.float32(1.0), np.asarray(zp, dtype=zdt))
    assert y.dtype == np.dtype(zdt)
    assert y.astype(np.int64).tolist() == want


def test_quantize_blocked_with_partial_last_block() -> None:
    x = np.array([[1.0, 3.0, 5.0, -6.0, 10.0],
                  [0.5, 0.5, 9.0, 9.0, -3.0]], np.float32)
    s = np.array([[1.0, 2.0, 4.0], [0.5, 3.0, 2.0]], np.float32)  # blocks of 2 along axis 1
    z = np.array([[0, 1, -1], [2, 0, 4]], np.int8)
    y = q(x, s, z, axis=1, block_size=2)
    # row 0: [1/1, 3/1] + 0 | [5/2 -> 2, -6/2] + 1 | [10/4 -> 2] - 1
    # row 1: [1, 1] + 2 | [3, 3] + 0 | [-1.5 -> -2] + 4
    assert y.tolist() == [[1, 3, 3, -2, 1], [3, 3, 3, 3, 2]]
    back = dq(y, s, z, axis=1, block_size=2)
    np.testing.assert_array_equal(back, [[1, 3, 4, -6, 8], [0.5, 0.5, 9, 9, -4]])


def test_quantize_per_axis_and_per_tensor_axis_canonical() -> None:
    x = np.array([[1.0, -1.0], [4.0, 8.0], [0.0, 2.5]], np.float32)
    y = q(x, np.array([1.0, 2.0, 0.5], np.float32), np.array([0, 10, 200], np.uint8), axis=-2)
    assert y.tolist() == [[1, 0], [12, 14], [200, 205]]
    n = node_of("quantize_linear", x, np.float32(1.0), np.uint8(0), axis=1)
    assert n.attrs["axis"] == 0  # per tensor: the axis is meaningless, stored as 0
    assert node_of("quantize_linear", x, np.ones(2, np.float32), np.zeros(2, np.uint8),
                   axis=-1).attrs["axis"] == 1


def test_dequantize_by_hand() -> None:
    y = dq(np.array([0, 15, 8, 3], U4), np.float32(0.5), np.asarray(8, U4))
    np.testing.assert_array_equal(y, [-4.0, 3.5, 0.0, -2.5])
    y = dq(np.array([[-8, 7], [1, -1]], I4), np.array([2.0, 0.25], np.float16),
           np.array([0, -1], I4), axis=0)
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, [[-16.0, 14.0], [0.5, 0.0]])


def test_dynamic_quantize_by_hand() -> None:
    op = get_op("dynamic_quantize_linear")
    y, s, z = op.numpy([np.array([-1.0, 0.5, 3.7], np.float32)], node_of(
        "dynamic_quantize_linear", np.zeros(3, np.float32)).attrs)
    scale = np.float32(np.float32(4.7) / np.float32(255))  # hi - lo = 3.7 - (-1)
    assert s.dtype == np.float32 and s == scale
    assert z.dtype == np.uint8 and int(z) == 54  # rint(1 / scale) = rint(54.25...)
    assert y.tolist() == [0, 81, 255]
    y, s, z = op.numpy([np.zeros((2, 2), np.float32)], {})
    assert float(s) == 1.0 and int(z) == 0 and not y.any()  # an empty range: scale 1
    y, s, z = op.numpy([np.array([2.0, 5.1], np.float32)], {})
    assert int(z) == 0 and int(y[1]) == 255  # the range always includes 0


def test_matmul_integer_by_hand() -> None:
    a = np.array([[1, 2], [3, 4]], np.uint8)
    b = np.array([[1, -1, 0], [2, 0, -3]], np.int8)
    (y,) = get_op("matmul_integer").numpy(
        [a, b, np.uint8(1), np.array([1, 0, -1], np.int8)], {})
    # (a - 1) @ (b - [1, 0, -1]) = [[0, 1], [2, 3]] @ [[0, -1, 1], [1, 0, -2]]
    assert y.dtype == np.int32
    assert y.tolist() == [[1, 0, -2], [3, -2, -4]]


# ---- against ONNX Runtime ---------------------------------------------------------------------

def ort_q_or_dq(op_type: str, x: np.ndarray, s: np.ndarray, z: np.ndarray | None,
                opset: int = 21, **attrs: Any) -> np.ndarray:
    """One QuantizeLinear / DequantizeLinear node run in ONNX Runtime (a 4-bit result read
    through a Cast to int32)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out_np = (z.dtype if z is not None else np.dtype(np.uint8)) if op_type == "QuantizeLinear" \
        else s.dtype
    four = np.dtype(out_np).name in ("uint4", "int4")
    inits = [numpy_helper.from_array(s, "s")] + ([numpy_helper.from_array(z, "z")]
                                                 if z is not None else [])
    xin = "x"
    feeds = {"x": x}
    nodes = []
    if x.dtype.name in ("uint4", "int4"):  # fed as int32, cast in the graph
        feeds = {"x": x.astype(np.int32)}
        nodes.append(helper.make_node("Cast", ["x"], ["x4"],
                                      to=helper.np_dtype_to_tensor_dtype(x.dtype)))
        xin = "x4"
    out = "y4" if four else "y"
    nodes.append(helper.make_node(op_type, [xin, "s"] + (["z"] if z is not None else []), [out],
                                  **attrs))
    if four:
        nodes.append(helper.make_node("Cast", ["y4"], ["y"], to=TensorProto.INT32))
    vi = helper.make_tensor_value_info
    g = helper.make_graph(nodes, "g", [vi("x", helper.np_dtype_to_tensor_dtype(
        feeds["x"].dtype), x.shape)], [vi("y", TensorProto.INT32 if four else
                                          helper.np_dtype_to_tensor_dtype(np.dtype(out_np)),
                                          x.shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    onnx.checker.check_model(m)
    return ort_run(m, feeds)[0]


QZ_TYPES = [np.int8, np.uint8, I4, U4]


def _zp(zdt: Any, shape: tuple[int, ...]) -> np.ndarray:
    lo, hi = {np.dtype(np.int8): (-10, 10), np.dtype(np.uint8): (100, 150),
              np.dtype(I4): (-3, 3), np.dtype(U4): (5, 10)}[np.dtype(zdt)]
    return RNG.integers(lo, hi + 1, shape).astype(zdt)


@pytest.mark.parametrize("zdt", QZ_TYPES)
@pytest.mark.parametrize("form", ["tensor", "axis", "block"])
def test_quantize_and_dequantize_match_onnxruntime(zdt: Any, form: str) -> None:
    x = (RNG.standard_normal((4, 10)) * 4).astype(np.float32)
    x[0, :4] = [0.5, 1.5, -2.5, 1000.0]  # ties and saturation
    attrs: dict[str, Any] = {}
    if form == "tensor":
        sshape: tuple[int, ...] = ()
    elif form == "axis":
        sshape, attrs = (4,), {"axis": 0}
    else:
        sshape, attrs = (4, 3), {"axis": 1, "block_size": 4}  # 10 = 4 + 4 + 2
    s = RNG.uniform(0.05, 0.6, sshape).astype(np.float32)
    z = _zp(zdt, sshape)
    want = ort_q_or_dq("QuantizeLinear", x, s, z, **attrs)
    got = q(x, s, z, **attrs)
    np.testing.assert_array_equal(got.astype(np.int32), want)
    back = dq(got, s, z, **attrs)
    np.testing.assert_array_equal(back, ort_q_or_dq("DequantizeLinear", got, s, z, **attrs))


@pytest.mark.parametrize("opset", [21, 23])
def test_quantize_f16_divides_in_f32_like_onnxruntime(opset: int) -> None:
    """f16: the IR divides in f32; ONNX Runtime does at opset 21, and at 23 with precision=FLOAT
    (which the exporter writes); 20000 values hit the cases where an f16 division differs."""
    x = (RNG.standard_normal(20000) * 20).astype(np.float16)
    s, z = np.float16(0.3), np.int8(0)
    g = as_graph(node_of("quantize_linear", x, s, z), opset)
    m = export(g, opset)
    if opset >= 23:
        (qn,) = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
        assert [a.i for a in qn.attribute if a.name == "precision"] == [1]
    got = ort_run(m, {"x0": x, "x1": np.asarray(s), "x2": np.asarray(z)})[0]
    np.testing.assert_array_equal(got, q(x, s, z))
    f16_division = np.clip(np.rint(x / s), -128, 127).astype(np.int8)
    assert (f16_division != got).any()  # the data does tell the two apart


def test_dynamic_quantize_matches_onnxruntime() -> None:
    op = get_op("dynamic_quantize_linear")
    cases = [RNG.standard_normal((5, 7)).astype(np.float32) * 3,
             np.abs(RNG.standard_normal(40)).astype(np.float32) + 1,
             -np.abs(RNG.standard_normal((2, 3))).astype(np.float32),
             np.zeros((3, 2), np.float32), np.array([1e-40, 0.0], np.float32),
             np.array([3e-43, -1e-44], np.float32)]
    for x in cases:
        m = onnx_model("DynamicQuantizeLinear", {"x": x}, ["x"], 11,
                       outputs=(("y", np.uint8), ("s", np.float32), ("z", np.uint8)))
        want = ort_run(m, {"x": x})
        got = op.numpy([x], {})
        tgot = op.torch([numpy_to_torch(x)], {})
        for w, g_, t in zip(want, got, tgot):
            assert g_.dtype == w.dtype and g_.shape == w.shape
            np.testing.assert_array_equal(g_, w, err_msg=str(x))
            np.testing.assert_array_equal(t.numpy(), w, err_msg=str(x))


@pytest.mark.parametrize("adt,bdt", [(np.int8, np.int8), (np.uint8, np.int8),
                                     (np.uint8, np.uint8), (np.int8, np.uint8)])
def test_matmul_integer_matches_onnxruntime(adt: Any, bdt: Any) -> None:
    def ints(dt: Any, *shape: int) -> np.ndarray:
        info = np.iinfo(dt)
        return RNG.integers(info.min, info.max + 1, shape).astype(dt)

    a, b = ints(adt, 2, 9, 16), ints(bdt, 16, 8)
    az, bz = ints(adt), ints(bdt, 8)
    m = onnx_model("MatMulInteger", {"a": a, "b": b}, ["a", "b", "az", "bz"], 13,
                   consts={"az": az, "bz": bz}, outputs=(("y", np.int32),))
    want = ort_run(m, {"a": a, "b": b})[0]
    op = get_op("matmul_integer")
    np.testing.assert_array_equal(op.numpy([a, b, az, bz], {})[0], want)
    t = op.torch([numpy_to_torch(v) for v in (a, b, az, bz)], {})[0]
    np.testing.assert_array_equal(t.numpy(), want)


def test_matmul_integer_torch_int_mm_and_fallback_agree() -> None:
    """2-D b takes torch._int_mm (with the zero points as corrections), batched b the exact
    integer matmul: both equal numpy, zero points of both signs and dtypes included."""
    op = get_op("matmul_integer")
    for a, b, az, bz in [
        (RNG.integers(0, 256, (3, 4, 6)).astype(np.uint8),
         RNG.integers(0, 256, (6, 5)).astype(np.uint8), np.uint8(255), np.uint8(0)),
        (RNG.integers(-128, 128, (2, 6)).astype(np.int8),
         RNG.integers(-128, 128, (3, 6, 5)).astype(np.int8), np.int8(-128),
         RNG.integers(-128, 128, 5).astype(np.int8)),
    ]:
        want = op.numpy([a, b, az, bz], {})[0]
        got = op.torch([numpy_to_torch(v) for v in (a, b, az, bz)], {})[0]
        np.testing.assert_array_equal(got.numpy(), want)


# ---- torch == numpy for the 4-bit forms ---------------------------------------------------------

@pytest.mark.parametrize("zdt", [I4, U4])
def test_torch_matches_numpy_for_4bit(zdt: Any) -> None:
    x = (RNG.standard_normal((3, 8)) * 5).astype(np.float32)
    s = RNG.uniform(0.1, 1.0, (3, 2)).astype(np.float32)
    z = _zp(zdt, (3, 2))
    attrs = node_of("quantize_linear", x, s, z, axis=1, block_size=4).attrs
    want = get_op("quantize_linear").numpy([x, s, z], attrs)[0]
    (t,) = get_op("quantize_linear").torch([numpy_to_torch(v) for v in (x, s, z)], attrs)
    assert DType.from_torch(t.dtype) == DType.from_numpy(zdt)
    np.testing.assert_array_equal(torch_to_numpy(t).astype(np.int32), want.astype(np.int32))
    back = get_op("dequantize_linear").numpy([want, s, z], attrs)[0]
    (tb,) = get_op("dequantize_linear").torch([t, numpy_to_torch(s), numpy_to_torch(z)], attrs)
    np.testing.assert_array_equal(tb.numpy(), back)


# ---- u4 / i4 as IR dtypes ----------------------------------------------------------------------

def test_int4_dtypes_map_to_ml_dtypes_and_half_a_byte() -> None:
    assert DType.u4.to_numpy() == np.dtype(U4) and DType.i4.to_numpy() == np.dtype(I4)
    assert DType.from_numpy(U4) == DType.u4 and DType.from_numpy(I4) == DType.i4
    assert nbytes(TensorType((1000,), DType.u4)) == 500
    assert ConstData(np.zeros(1001, I4)).nbytes == 500  # (rounded down, as for the cost)


@pytest.mark.parametrize("dt,vals", [(U4, [0, 1, 7, 8, 15]), (I4, [-8, -1, 0, 1, 7])])
def test_int4_constant_through_onnx_export_and_import(dt: Any, vals: list[int]) -> None:
    arr = np.array(vals * 3, dtype=dt).reshape(3, 5)  # 15 values: an odd count
    g, feeds = int4_weight_graph(arr)
    m = export(g, 21)
    (init,) = [t for t in m.graph.initializer if list(t.dims) == [3, 5]]
    assert init.data_type == DType.from_numpy(dt).to_onnx() and len(init.raw_data) == 8
    np.testing.assert_array_equal(ort_run(m, feeds)[0], arr.astype(np.float32))
    back = import_onnx(m)
    (k,) = [x for x in back.nodes if x.op == "constant" and x.const.shape == (3, 5)]
    assert k.const.dtype == DType.from_numpy(dt)
    np.testing.assert_array_equal(k.const.array, arr)


def test_packed_u4_initializer_size() -> None:
    w = RNG.integers(0, 16, 1000).astype(U4)
    n = Node.build("cast", [constant(w)], {"to": DType.f32})
    m = export(Graph([], [n.out], meta=GraphMeta(opsets=(("", 21),))), 21)
    assert len(m.graph.initializer[0].raw_data) == 500
    assert m.ByteSize() < 700  # the u8 form alone would take 1000 bytes


def test_int4_external_data_round_trip(tmp_path: Path) -> None:
    from graphopt.frontends.onnx import load
    from graphopt.frontends.onnx_export import save

    import onnx

    w = RNG.integers(-8, 8, (65, 41)).astype(I4)  # 2665 values: 1333 bytes, an odd count
    g, feeds = int4_weight_graph(w)
    p = save(g, tmp_path / "m.onnx", external_threshold=0)
    data = tmp_path / "m.onnx.data"
    assert data.stat().st_size == (65 * 41 + 1) // 2
    back = load(p)
    (k,) = [x for x in back.nodes if x.op == "constant" and x.const.shape == (65, 41)]
    assert k.const.external is not None and k.const.dtype == DType.i4
    np.testing.assert_array_equal(k.const.array, w)
    np.testing.assert_array_equal(run(back, **feeds)[0], w.astype(np.float32))
    np.testing.assert_array_equal(ort_run(onnx.load(str(p)), feeds)[0], w.astype(np.float32))


def test_int4_constants_in_the_text_ir() -> None:
    src = """graph g(%x: f32[3]) {
  %0: u4[3] = constant() {data=dense<u4[3]>[0, 9, 15]}
  %1: i4[2,2] = constant() {data=dense<i4[2,2]>[-8, 7, 0, -1]}
  %2: f32[3] = cast(%0) {to=dtype:f32}
  %3: i8[2,2] = cast(%1) {to=dtype:i8}
  return %2 as "a", %3 as "b"
}"""
    g = parse(src)
    a, b = run(g, np.zeros(3, np.float32))
    assert a.tolist() == [0, 9, 15] and b.tolist() == [[-8, 7], [0, -1]]
    text, weights = print_graph_with_weights(g, inline_limit=2)
    assert weights  # the 3- and 4-element constants went to the side table
    g2 = parse(text, weights)
    for x, y in zip(run(g2, np.zeros(3, np.float32)), (a, b)):
        np.testing.assert_array_equal(x, y)
    assert parse(g.to_text()).to_text() == g.to_text()
    with pytest.raises(ParseError, match=r"\[0, 15\]"):
        parse(src.replace("[0, 9, 15]", "[0, 9, 16]"))


def test_cast_to_and_from_int4_matches_onnxruntime() -> None:
    xi = np.array([-20, -9, -8, -1, 0, 7, 8, 15, 16, 20, 255], np.int32)
    xf = np.array([-20.5, -9.0, -8.7, -1.5, -0.5, 0.5, 7.7, 8.5, 15.2, 16.0, 2.5], np.float32)
    for x in (xi, xf):
        for to in (DType.u4, DType.i4):
            c4 = Node.build("cast", [input_node("x", TensorType(x.shape, DType.from_numpy(
                x.dtype))).out], {"to": to})
            n = Node.build("cast", [c4.out], {"to": DType.i32})
            g = Graph([c4.inputs[0].node], [n.out], meta=GraphMeta(opsets=(("", 21),)))
            want = run(g, x)[0]
            # ints keep their low 4 bits; floats truncate first, as casts to other ints do
            exp = np.trunc(x).astype(np.int64) & 15
            if to == DType.i4:
                exp = (exp ^ 8) - 8
            np.testing.assert_array_equal(want, exp)
            np.testing.assert_array_equal(ort_run(export(g, 21), {"x": x})[0], want)
            tw = run(g, numpy_to_torch(x), backend="torch")[0]
            np.testing.assert_array_equal(tw.numpy(), want)
    g = Graph([], [Node.build("cast", [constant(np.array([1], U4))], {"to": DType.f32}).out])
    with pytest.raises(ExportError, match="opset 21"):
        export(g, 18)


# ---- shape errors ------------------------------------------------------------------------------

F = np.zeros((4, 6), np.float32)


@pytest.mark.parametrize("op,arrays,attrs,msg", [
    ("quantize_linear", [F, np.ones(4, np.float32), np.zeros(4, np.int8)], {"axis": 1},
     r"1-D \[6\]"),
    ("quantize_linear", [F, np.ones((4, 3), np.float32), np.zeros((4, 3), np.int8)],
     {"axis": 1, "block_size": 4}, r"ceil\(6 / 4\) = 2"),
    ("quantize_linear", [F, np.ones((3, 6), np.float32), np.zeros((3, 6), np.int8)],
     {"axis": 1, "block_size": 2}, "dim 0 must equal"),
    ("quantize_linear", [F, np.ones(6, np.float32), np.zeros(5, np.int8)], {},
     "zero point"),
    ("quantize_linear", [F, np.float16(1), np.int8(0)], {}, "input's dtype"),
    ("quantize_linear", [F, np.float32(1), np.int32(0)], {}, "must be one of"),
    ("quantize_linear", [F.astype(np.float64), np.float64(1), np.int8(0)], {}, "f32, f16"),
    ("quantize_linear", [F, np.float32(1), np.int8(0)], {"block_size": -1}, ">= 0"),
    ("quantize_linear", [F, np.ones(4, np.float32), np.zeros(4, np.int8)], {"axis": 2},
     "out of range"),
    ("quantize_linear", [F, np.float32(1), np.int8(0)], {"axes": 1}, "unknown attribute"),
    ("dequantize_linear", [F.astype(np.int8), np.float32(1), np.uint8(0)], {},
     "input's dtype"),
    ("dequantize_linear", [F.astype(np.int8), np.int8(1), np.int8(0)], {}, "scale"),
    ("dynamic_quantize_linear", [F.astype(np.float16)], {}, "f32"),
    ("matmul_integer", [F.astype(np.int8), np.zeros((6, 3), np.int32), np.int8(0),
                        np.int32(0)], {}, "i8, u8"),
    ("matmul_integer", [F.astype(np.int8), np.zeros((6, 3), np.int8), np.zeros(4, np.int8),
                        np.int8(0)], {}, "scalar"),
    ("matmul_integer", [F.astype(np.int8), np.zeros((6, 3), np.int8), np.int8(0),
                        np.zeros(6, np.int8)], {}, r"rank 0 or \[3\]"),
    ("matmul_integer", [F.astype(np.int8), np.zeros((6, 3), np.int8), np.uint8(0),
                        np.int8(0)], {}, "a's dtype|dtype"),
    ("matmul_integer", [F.astype(np.int8), np.zeros((5, 3), np.int8), np.int8(0),
                        np.int8(0)], {}, "contraction"),
])
def test_shape_errors(op: str, arrays: list[np.ndarray], attrs: dict[str, Any],
                      msg: str) -> None:
    with pytest.raises(ShapeError, match=msg):
        node_of(op, *arrays, **attrs)


# ---- z3 ----------------------------------------------------------------------------------------

def test_dequantize_symbolic_is_exact() -> None:
    import z3

    qs = np.array([[z3.Int(f"q{i}{j}") for j in range(3)] for i in range(2)], dtype=object)
    ss = np.array([z3.Real("s0"), z3.Real("s1")], dtype=object)
    zs = np.array([z3.Int("z0"), z3.Int("z1")], dtype=object)
    n = node_of("dequantize_linear", np.zeros((2, 3), np.int8), np.ones(2, np.float32),
                np.zeros(2, np.int8), axis=0)
    (y,) = get_op("dequantize_linear").symbolic([qs, ss, zs], n.attrs)
    solver = z3.Solver()
    solver.add(z3.Or(*[y[i, j] != (qs[i, j] - zs[i]) * ss[i]
                       for i in range(2) for j in range(3)]))
    assert solver.check() == z3.unsat  # (q - zp) * s, row i with scale i


def test_quantize_symbolic_is_one_function_per_dtype() -> None:
    import z3

    x = np.array([z3.Real("x0"), z3.Real("x1")], dtype=object)
    s, z = np.asarray(z3.Real("s"), dtype=object), np.asarray(z3.Int("z"), dtype=object)
    op = get_op("quantize_linear")
    n8 = node_of("quantize_linear", np.zeros(2, np.float32), np.float32(1), np.int8(0))
    nu = node_of("quantize_linear", np.zeros(2, np.float32), np.float32(1), np.uint8(0))
    (a,) = op.symbolic_typed([x, s, z], n8.attrs, [t for t in (v.type for v in n8.inputs)])
    (b,) = op.symbolic_typed([x, s, z], n8.attrs, [v.type for v in n8.inputs])
    (c,) = op.symbolic_typed([x, s, z], nu.attrs, [v.type for v in nu.inputs])
    prove_eq, prove_ne = z3.Solver(), z3.Solver()
    prove_eq.add(z3.Or(a[0] != b[0], a[1] != b[1]))
    assert prove_eq.check() == z3.unsat  # the same application twice: equal
    prove_ne.add(a[0] != c[0])
    assert prove_ne.check() == z3.sat  # i8 and u8 saturate differently: not provably equal
    assert z3.is_int(a[0])


def test_matmul_integer_symbolic_is_exact() -> None:
    import z3

    a = np.array([[z3.Int(f"a{i}{k}") for k in range(2)] for i in range(2)], dtype=object)
    b = np.array([[z3.Int(f"b{k}{j}") for j in range(2)] for k in range(2)], dtype=object)
    az, bz = z3.Int("az"), np.array([z3.Int("bz0"), z3.Int("bz1")], dtype=object)
    (y,) = get_op("matmul_integer").symbolic([a, b, np.asarray(az, dtype=object), bz], {})
    s = z3.Solver()
    s.add(y[1, 0] != (a[1, 0] - az) * (b[0, 0] - bz[0]) + (a[1, 1] - az) * (b[1, 0] - bz[0]))
    assert s.check() == z3.unsat


# ---- ONNX import -------------------------------------------------------------------------------

def test_import_fills_zero_points_and_reads_one_element_scales() -> None:
    x = (RNG.standard_normal((2, 6)) * 3).astype(np.float32)
    cases = [  # (node inputs, consts, attrs, opset, output dtype)
        (["x", "s"], {"s": np.float32(0.1)}, {}, 13, np.uint8),
        (["x", "s", "z"], {"s": np.array([0.1], np.float32), "z": np.array([3], np.int8)},
         {}, 21, np.int8),
        (["x", "s"], {"s": np.full((2, 2), 0.7, np.float32)},
         {"axis": 1, "block_size": 4, "output_dtype": 22}, 21, I4),
    ]
    for ins, consts, attrs, opset, out in cases:
        m = onnx_model("QuantizeLinear", {"x": x}, ins, opset, consts=consts,
                       outputs=(("y", out),), **attrs)
        g = import_onnx(m)
        assert g.op_counts().get("quantize_linear") == 1, g.to_text()
        (y,) = run(g, x)
        assert y.dtype == np.dtype(out)
        want = ort_q_or_dq("QuantizeLinear", x, np.asarray(consts["s"]), np.asarray(
            consts["z"]) if "z" in consts else (np.zeros(np.shape(consts["s"]), out)
                                                if out is I4 else None), opset, **attrs)
        np.testing.assert_array_equal(y.astype(np.int32), want)


def test_import_dequantize_dynamic_quantize_and_matmul_integer() -> None:
    qv = RNG.integers(0, 16, (4, 6)).astype(U4)
    m = onnx_model("DequantizeLinear", {"x": np.zeros((1,), np.float32)}, ["w", "s", "z"], 21,
                   consts={"w": qv, "s": RNG.uniform(0.1, 1, (2, 6)).astype(np.float32),
                           "z": np.full((2, 6), 8, U4)},
                   outputs=(("y", np.float32),), axis=0, block_size=2)
    g = import_onnx(m)
    (y,) = run(g, np.zeros((1,), np.float32))
    np.testing.assert_array_equal(y, ort_run(m, {"x": np.zeros((1,), np.float32)})[0])

    x = RNG.standard_normal((3, 4)).astype(np.float32)
    m = onnx_model("DynamicQuantizeLinear", {"x": x}, ["x"], 11,
                   outputs=(("y", np.uint8), ("s", np.float32), ("z", np.uint8)))
    g = import_onnx(m)
    assert g.op_counts() == {"dynamic_quantize_linear": 1}
    for a, b in zip(run(g, x), ort_run(m, {"x": x})):
        np.testing.assert_array_equal(a, b)

    a8 = RNG.integers(0, 256, (2, 3, 4)).astype(np.uint8)
    b8 = RNG.integers(-128, 128, (2, 4, 5)).astype(np.int8)
    bz = np.tile(np.arange(5, dtype=np.int8), (2, 1, 1))  # ONNX Runtime's [B, 1, N]
    for ins, consts in [(["a", "b"], {}), (["a", "b", "az", "bz"],
                                           {"az": np.array([3], np.uint8), "bz": bz})]:
        m = onnx_model("MatMulInteger", {"a": a8, "b": b8}, ins, 13, consts=consts,
                       outputs=(("y", np.int32),))
        g = import_onnx(m)
        assert g.op_counts().get("matmul_integer") == 1, g.to_text()
        np.testing.assert_array_equal(run(g, a8, b8)[0], ort_run(m, {"a": a8, "b": b8})[0])
        # exported again, the per-column zero point goes back to [B, 1, N]
        np.testing.assert_array_equal(ort_run(export(g, 13), {"a": a8, "b": b8})[0],
                                      run(g, a8, b8)[0])


def test_import_reshapes_one_element_zero_points_given_at_run_time() -> None:
    a = RNG.integers(0, 256, (4, 3)).astype(np.uint8)
    b = RNG.integers(0, 256, (3, 2)).astype(np.uint8)
    feeds = {"a": a, "b": b, "az": np.array([12], np.uint8), "bz": np.array([0], np.uint8)}
    m = onnx_model("MatMulInteger", feeds, list(feeds), 10, outputs=(("y", np.int32),))
    g = import_onnx(m)
    assert g.op_counts() == {"matmul_integer": 1, "reshape": 2}
    np.testing.assert_array_equal(run(g, **feeds)[0], ort_run(m, feeds)[0])
    feeds = {"x": RNG.integers(-8, 8, 5).astype(np.int8), "s": np.array(0.5, np.float32),
             "z": np.array([3], np.int8)}
    m = onnx_model("DequantizeLinear", feeds, list(feeds), 21, outputs=(("y", np.float32),))
    g = import_onnx(m)
    assert g.op_counts() == {"dequantize_linear": 1, "reshape": 1}
    np.testing.assert_array_equal(run(g, **feeds)[0], ort_run(m, feeds)[0])


def test_import_keeps_unmodelled_forms_opaque() -> None:
    x = RNG.standard_normal((2, 4)).astype(np.float16)
    m = onnx_model("QuantizeLinear", {"x": x}, ["x", "s", "z"], 23,
                   consts={"s": np.float16(0.1), "z": np.int8(0)}, outputs=(("y", np.int8),))
    g = import_onnx(m)  # opset 23 divides f16 by f16 in f16: not the IR's f32 division
    assert "quantize_linear" not in g.op_counts()
    xi = RNG.integers(0, 9, (2, 4)).astype(np.int32)
    m = onnx_model("QuantizeLinear", {"x": xi}, ["x", "s", "z"], 21,
                   consts={"s": np.int32(2), "z": np.int8(0)}, outputs=(("y", np.int8),))
    assert "quantize_linear" not in import_onnx(m).op_counts()


# ---- export forms ------------------------------------------------------------------------------

def test_export_below_opset_21_writes_compositions() -> None:
    x = (RNG.standard_normal((3, 5)) * 3).astype(np.float32)
    s, z = RNG.uniform(0.1, 0.5, 3).astype(np.float32), np.array([0, 100, 255], np.uint8)
    qn = node_of("quantize_linear", x, s, z, axis=0)
    dn = Node.build("dequantize_linear", [qn.out, qn.inputs[1], qn.inputs[2]], qn.attrs)
    g = as_graph(dn, 13)
    feeds = {"x0": x, "x1": s, "x2": z}
    for opset, native in ((13, False), (18, False), (21, True)):
        m = export(g, opset)
        types = {n.op_type for n in m.graph.node}
        assert ("QuantizeLinear" in types) == native and ("DequantizeLinear" in types) == native
        np.testing.assert_array_equal(ort_run(m, feeds)[0], run(g, **feeds)[0])
    blocked = as_graph(node_of("dequantize_linear", np.zeros((2, 4), np.int8),
                               np.ones((2, 2), np.float32), np.zeros((2, 2), np.int8),
                               axis=1, block_size=2), 18)
    with pytest.raises(ExportError, match="blocked.*opset 21"):
        export(blocked, 18)
    four = as_graph(node_of("quantize_linear", x, np.float32(1), np.asarray(0, U4)), 18)
    with pytest.raises(ExportError, match="u4.*opset 21"):
        export(four, 18)


def test_pipeline_raises_the_opset_for_quantize_ops() -> None:
    from graphopt.pipeline import raise_opset_for_fused_ops

    g = as_graph(node_of("quantize_linear", F, np.float32(1), np.int8(0)), 17)
    assert raise_opset_for_fused_ops(g).meta.opset("") == 21
    g = as_graph(node_of("dynamic_quantize_linear", F), 17)
    assert raise_opset_for_fused_ops(g).meta.opset("") == 17


# ---- whole graphs ------------------------------------------------------------------------------

def weight_only_int4_graph() -> tuple[Graph, dict[str, np.ndarray]]:
    """x [2, 16] @ dequantize(W u4 [16, 8], blocks of 8 along K, zero point 8)."""
    wq = RNG.integers(0, 16, (16, 8)).astype(U4)
    s = RNG.uniform(0.01, 0.05, (2, 8)).astype(np.float32)
    z = np.full((2, 8), 8, U4)
    x = input_node("x", TensorType((2, 16), DType.f32))
    w = Node.build("dequantize_linear", [constant(wq), constant(s), constant(z)],
                   {"axis": 0, "block_size": 8})
    y = Node.build("matmul", [x.out, w.out])
    return Graph([x], [y.out], meta=GraphMeta(opsets=(("", 21),))), {
        "x": RNG.standard_normal((2, 16)).astype(np.float32)}


def dynamic_int8_graph() -> tuple[Graph, dict[str, np.ndarray]]:
    """y = cast(matmul_integer(dq(x), Wq, x_zp, w_zp[N])) * (x_scale * w_scale)."""
    wq = RNG.integers(-128, 128, (16, 8)).astype(np.int8)
    ws = np.float32(0.02)
    x = input_node("x", TensorType((3, 16), DType.f32))
    dql = Node.build("dynamic_quantize_linear", [x.out])
    qx, xs, xz = dql.outputs
    mm = Node.build("matmul_integer", [qx, constant(wq), xz, constant(
        RNG.integers(-3, 4, 8).astype(np.int8))])
    f = Node.build("cast", [mm.out], {"to": DType.f32})
    sc = Node.build("mul", [xs, constant(ws)])
    y = Node.build("mul", [f.out, sc.out])
    return Graph([x], [y.out], meta=GraphMeta(opsets=(("", 21),))), {
        "x": RNG.standard_normal((3, 16)).astype(np.float32)}


def fake_quant_graph() -> tuple[Graph, dict[str, np.ndarray]]:
    """x through quantize / dequantize per tensor (i4, zero point -1), then a matmul."""
    x = input_node("x", TensorType((2, 5), DType.f32))
    s, z = constant(np.float32(0.4)), constant(np.asarray(-1, I4))
    qn = Node.build("quantize_linear", [x.out, s, z])
    dn = Node.build("dequantize_linear", [qn.out, s, z])
    y = Node.build("matmul", [dn.out, constant(RNG.standard_normal((5, 3)).astype(np.float32))])
    return Graph([x], [y.out], meta=GraphMeta(opsets=(("", 21),))), {
        "x": (RNG.standard_normal((2, 5)) * 2).astype(np.float32)}


@pytest.mark.parametrize("make", [weight_only_int4_graph, dynamic_int8_graph, fake_quant_graph])
@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_check_runs_quantized_graphs(make: Any, backend: str) -> None:
    g, feeds = make()
    res = check_graphs(g, g, feeds, backend=backend)
    assert res.ok
    (y,) = run(g, **feeds)
    assert y.dtype == np.float32 and np.isfinite(y).all()


def test_weight_only_int4_graph_by_hand() -> None:
    g, feeds = weight_only_int4_graph()
    w_node = next(n for n in g.nodes if n.op == "dequantize_linear")
    wq, s, z = (np.asarray(v.node.const.array) for v in w_node.inputs)
    w = (wq.astype(np.float64) - 8) * np.repeat(s, 8, axis=0)
    np.testing.assert_allclose(run(g, **feeds)[0], feeds["x"] @ w, rtol=1e-5, atol=1e-5)


def test_fold_and_cost_of_int4_constants() -> None:
    from graphopt.ir.fold import fold_node

    w = RNG.integers(-8, 8, (3, 4)).astype(I4)
    t = Node.build("transpose", [constant(w)], {"perm": (1, 0)})
    (folded,) = fold_node(t)  # type: ignore[misc]
    assert folded.type == TensorType((4, 3), DType.i4)
    np.testing.assert_array_equal(folded.node.const.array, w.T)
    g, _ = weight_only_int4_graph()
    w_node = next(n for n in g.nodes if n.op == "dequantize_linear")
    c = get_op("dequantize_linear").cost(tuple(v.type for v in w_node.inputs),
                                         w_node.out_types, w_node.attrs)
    # u4 [16, 8] is 64 bytes, scales 64 + zero points 8, output f32 [16, 8] 512
    assert c.bytes == 64 + 64 + 8 + 512
