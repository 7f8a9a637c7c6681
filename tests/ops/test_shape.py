"""Structural ops: symbolic shapes, attr normalization, ONNX import faithful across opsets
(against ONNX Runtime), aten lifting (against torch), export of symbolic shapes."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from tests.ops.frontend_fakes import check_aten, check_onnx_node, export_run, lift_onnx
from graphopt.errors import GraphOptError, ShapeError
from graphopt.ir.graph import Graph
from graphopt.ir.interp import run
from graphopt.ir.node import Node, constant, input_node, op, op_multi
from graphopt.ir.types import DType, TensorType, dim_product
from graphopt.ops.registry import Unsupported, get_op
from graphopt.ops.shape import I64_MAX, I64_MIN
from graphopt.ops.symbols import bind_symbols, symbol_values

F32 = DType.f32
I64 = np.int64


def t(*shape: Any, dt: DType = F32) -> TensorType:
    return TensorType(tuple(shape), dt)


def v(name: str, *shape: Any, dt: DType = F32) -> Any:
    return input_node(name, t(*shape, dt=dt)).out


def r(rng: np.random.Generator, *s: int) -> np.ndarray:
    return rng.standard_normal(s).astype(np.float32)


RNG = np.random.default_rng(7)


# ---- reshape ------------------------------------------------------------------------------------

@pytest.mark.parametrize("target,want", [
    ([0, -1], ("batch", 12)),
    ([0, 3, 2, 2], ("batch", 3, 2, 2)),
    ([-1, 4], (dim_product(["batch", 3]), 4)),
    ([-1], (dim_product(["batch", 12]),)),
    ([0, 0, 2, -1], ("batch", 3, 2, 2)),
])
@pytest.mark.parametrize("opset", [5, 13, 14])
def test_onnx_reshape_resolves_zero_and_minus_one_with_symbols(target: list, want: tuple,
                                                                opset: int) -> None:
    x = r(RNG, 2, 3, 4)
    g = check_onnx_node("Reshape", [x, np.array(target, I64)], {}, opset, consts=(1,),
                        types={0: t("batch", 3, 4)})
    assert g.outputs[0].type == t(*want)


def test_onnx_reshape_allowzero() -> None:
    x = np.zeros((0, 3), np.float32)
    g = check_onnx_node("Reshape", [x, np.array([3, 0], I64)], {"allowzero": 1}, 14,
                        consts=(1,))
    assert g.outputs[0].type == t(3, 0)


def test_onnx_reshape_declines_what_it_cannot_model() -> None:
    x, s = v("x", "a", 6), v("s", 2, dt=DType.i64)
    with pytest.raises(Unsupported, match="not a constant"):
        lift_onnx("Reshape", [x, s], {}, 13)
    with pytest.raises(Unsupported, match="cannot infer -1"):
        lift_onnx("Reshape", [x, constant(np.array([4, -1], I64))], {}, 13)


def test_reshape_infer_checks_counts_symbolically() -> None:
    x = v("x", "b", "s", 6)
    assert op("reshape", x, shape=("b", "s", 2, 3)).type == t("b", "s", 2, 3)
    assert op("reshape", x, shape=(dim_product(["b", "s"]), 6)).type.shape == ("b*s", 6)
    with pytest.raises(ShapeError, match=r"reshape\(f32\[b,s,6\]\).*element counts"):
        op("reshape", x, shape=("b", 12))


def test_reshape_runs_with_two_symbols_bound_from_graph_inputs() -> None:
    x = input_node("x", t("b", "s", 6))
    y = op("reshape", x.out, shape=("b", "s", 2, 3))
    g = Graph([x], [y])
    a = r(RNG, 2, 3, 6)
    (got,) = run(g, a)
    np.testing.assert_array_equal(got, a.reshape(2, 3, 2, 3))
    (got_t,) = run(g, torch.from_numpy(a), backend="torch")
    np.testing.assert_array_equal(got_t.numpy(), a.reshape(2, 3, 2, 3))
    # without bindings the op names the symbols it lacks
    with pytest.raises(ShapeError, match=r"symbols \['b', 's'\]"):
        get_op("reshape").numpy([a], y.node.attrs)
    with symbol_values(bind_symbols([x.out_types[0]], [a])):
        np.testing.assert_array_equal(get_op("reshape").numpy([a], y.node.attrs)[0],
                                      a.reshape(2, 3, 2, 3))


@pytest.mark.parametrize("axis", [0, 1, 2, -1, 3])
def test_onnx_flatten(axis: int) -> None:
    g = check_onnx_node("Flatten", [r(RNG, 2, 3, 4)], {"axis": axis}, 13)
    assert g.op_counts() == {"reshape": 1}


def test_export_reshape_with_symbols(tmp_path: Any) -> None:
    x = input_node("x", t("b", "s", 6))
    y1 = op("reshape", x.out, shape=("b", "s", 2, 3))
    y2 = op("reshape", x.out, shape=(dim_product(["b", "s"]), 6))
    y3 = op("reshape", x.out, shape=("s", "b", 6))  # moved symbols: -1 and Shape(x)[0]
    g = Graph([x], [y1, y2, y3])
    for shape in [(2, 3, 6), (4, 1, 6)]:
        a = r(RNG, *shape)
        got = export_run(g, 13, {"x": a})
        np.testing.assert_array_equal(got[0], a.reshape(shape[0], shape[1], 2, 3))
        np.testing.assert_array_equal(got[1], a.reshape(-1, 6))
        np.testing.assert_array_equal(got[2], a.reshape(shape[1], shape[0], 6))


def test_export_reshape_symbol_absent_from_input() -> None:
    from graphopt.errors import ExportError
    from graphopt.frontends.onnx_export import ExportCtx

    x = input_node("x", t("b", "s", 6))
    flat = op("reshape", x.out, shape=(dim_product(["b", "s"]), 6))
    y = op("reshape", flat, shape=("b", "s", 2, 3))  # b, s only known from the graph input
    g = Graph([x], [y])
    a = r(RNG, 2, 3, 6)
    if hasattr(ExportCtx, "sym_dim"):
        np.testing.assert_array_equal(export_run(g, 13, {"x": a})[0], a.reshape(2, 3, 2, 3))
    else:
        with pytest.raises(ExportError, match="no run-time source for dim"):
            export_run(g, 13, {"x": a})


# ---- transpose ------------------------------------------------------------------------------------

def test_onnx_transpose_default_perm_is_reversed() -> None:
    g = check_onnx_node("Transpose", [r(RNG, 2, 3, 4)], {}, 13)
    assert g.outputs[0].node.attrs["perm"] == (2, 1, 0)
    check_onnx_node("Transpose", [r(RNG, 2, 3, 4)], {"perm": [1, 2, 0]}, 1)


def test_transpose_errors() -> None:
    with pytest.raises(ShapeError, match="not a permutation"):
        op("transpose", v("x", 2, 3), perm=(0, 0))


def test_aten_transposes() -> None:
    x = torch.randn(2, 3, 4)
    check_aten("aten.permute.default", (x, [2, 0, 1]))
    check_aten("aten.transpose.int", (x, -1, 0))
    check_aten("aten.t.default", (torch.randn(3, 5),))
    check_aten("aten.t.default", (torch.randn(5),))


# ---- concat / split ----------------------------------------------------------------------------------

@pytest.mark.parametrize("opset", [4, 13])
def test_onnx_concat(opset: int) -> None:
    attrs = {"axis": -1 if opset >= 11 else 1}
    check_onnx_node("Concat", [r(RNG, 2, 3), r(RNG, 2, 1), r(RNG, 2, 0)], attrs, opset)


def test_concat_symbolic_dims() -> None:
    assert op("concat", v("a", "b", 3), v("c", "b", 5), axis=-1).type == t("b", 8)
    assert op("concat", v("a", 0, 3), v("c", "n", 3), axis=0).type == t("n", 3)
    with pytest.raises(ShapeError, match="cannot add symbolic"):
        op("concat", v("a", "n", 3), v("c", 2, 3), axis=0)
    with pytest.raises(ShapeError, match="dim 0 differs"):
        op("concat", v("a", 2, 3), v("c", 4, 3), axis=1)


def test_aten_cat() -> None:
    check_aten("aten.cat.default", ([torch.randn(2, 3), torch.randn(2, 5)], 1))
    check_aten("aten.cat.default", ([torch.randn(2, 3), torch.randn(0)], 0))


@pytest.mark.parametrize("opset,attrs,split_in,n", [
    (11, {"axis": 1, "split": [2, 5]}, None, 2),
    (11, {"axis": 1}, None, 7),
    (13, {"axis": -1}, [1, 4, 2], 3),
    (13, {"axis": 1}, None, 7),
    (18, {"axis": 1, "num_outputs": 3}, None, 3),
    (18, {"axis": 1}, [3, 4], 2),
])
def test_onnx_split(opset: int, attrs: dict, split_in: list | None, n: int) -> None:
    arrays = [r(RNG, 2, 7)] + ([np.array(split_in, I64)] if split_in else [])
    g = check_onnx_node("Split", arrays, attrs, opset, consts=(1,), num_outputs=n)
    if "num_outputs" in attrs:
        assert g.outputs[0].node.attrs["sizes"] == (3, 3, 1)


def test_split_infer_errors() -> None:
    with pytest.raises(ShapeError, match="do not add up"):
        op_multi("split", v("x", 2, 7), axis=1, sizes=(3, 3))
    with pytest.raises(ShapeError, match="do not add up"):
        op_multi("split", v("x", 2, "n"), axis=1, sizes=(3, 3))


def test_aten_split() -> None:
    x = torch.randn(7, 2)
    g = check_aten("aten.split.Tensor", (x, 3))
    assert [o.type.shape[0] for o in g.outputs] == [3, 3, 1]
    check_aten("aten.split_with_sizes.default", (x, [1, 6], 0))
    check_aten("aten.split_with_sizes.default", (x, [2], 1), used_outputs={0})


# ---- slice ---------------------------------------------------------------------------------------------

def _slice_cases() -> list[tuple[int, int, int]]:
    rng = np.random.default_rng(11)
    vals = [-100, -7, -6, -5, -2, -1, 0, 1, 2, 4, 5, 6, 7, 100, I64_MAX, I64_MIN]
    out = []
    for _ in range(40):
        out.append((int(rng.choice(vals)), int(rng.choice(vals)),
                    int(rng.choice([-3, -2, -1, 1, 2, 3]))))
    return out + [(0, I64_MAX, 1), (-1, I64_MIN, -1), (5, -7, -1), (3, 3, 1), (-1, -7, -2)]


@pytest.mark.parametrize("start,end,step", _slice_cases())
def test_onnx_slice_vs_ort_and_normalized(start: int, end: int, step: int) -> None:
    x = r(RNG, 6, 3)
    arrays = [x, np.array([start], I64), np.array([end], I64), np.array([0], I64),
              np.array([step], I64)]
    if step < 0 and end == I64_MAX:
        with pytest.raises(Unsupported, match="INT_MAX"):
            lift_onnx("Slice", [v("x", 6, 3)] + [constant(a) for a in arrays[1:]], {}, 13)
        return
    g = check_onnx_node("Slice", arrays, {}, 13, consts=(1, 2, 3, 4))
    node = g.outputs[0].node
    # normalization is a fixed point and is tight: equal slices are one node
    assert Node.build("slice", node.inputs, node.attrs) is node
    a = node.attrs
    if a["axes"]:
        s, e, st = a["starts"][0], a["ends"][0], a["steps"][0]
        assert 0 <= s < 6 and -7 <= e <= 6
        n = node.out_types[0].shape[0]
        if n > 1:
            assert e == s + (n - 1) * st + (1 if st > 0 else -1) or (e == -7 and st < 0)


def test_slice_normalization_makes_equal_slices_equal() -> None:
    x = v("x", 5, 4)
    a = op("slice", x, starts=(-3,), ends=(I64_MAX,), axes=(0,), steps=(1,))
    b = op("slice", x, starts=(2,), ends=(5,), axes=(-2,), steps=(1,))
    c = op("slice", x, starts=(2, 0), ends=(9, 4), axes=(0, 1), steps=(1, 1))
    assert a.node is b.node is c.node
    assert a.node.attrs["axes"] == (0,)
    ident = op("slice", x, starts=(0,), ends=(100,), axes=(1,), steps=(1,))
    assert ident.node.attrs["axes"] == () and ident.type == x.type
    # [0:5:3] and [0:4:3] take the same elements
    assert op("slice", x, starts=(0,), ends=(5,), axes=(0,), steps=(3,)).node is \
        op("slice", x, starts=(0,), ends=(4,), axes=(0,), steps=(3,)).node


@pytest.mark.parametrize("opset", [9, 10, 13])
def test_onnx_slice_opsets(opset: int) -> None:
    x = r(RNG, 4, 5, 6)
    if opset < 10:
        check_onnx_node("Slice", [x], {"starts": [1, -4], "ends": [100, -1], "axes": [0, 2]},
                        opset)
        check_onnx_node("Slice", [x], {"starts": [1, 0], "ends": [3, 2]}, opset)
    else:
        arrays = [x, np.array([-2, 1], I64), np.array([0, 9], I64), np.array([2, -3], I64),
                  np.array([-1, 2], I64)]
        check_onnx_node("Slice", arrays, {}, opset, consts=(1, 2, 3, 4))
        check_onnx_node("Slice", arrays[:3], {}, opset, consts=(1, 2))


def test_slice_on_symbolic_dims() -> None:
    x = v("x", "b", "s", 4)
    assert op("slice", x, starts=(0,), ends=(I64_MAX,), axes=(1,), steps=(1,)).type == x.type
    rev = op("slice", x, starts=(-1,), ends=(I64_MIN,), axes=(1,), steps=(-1,))
    assert rev.type == x.type
    assert op("slice", x, starts=(1,), ends=(3,), axes=(2,), steps=(1,)).type == t("b", "s", 2)
    assert op("slice", x, starts=(3,), ends=(3,), axes=(1,), steps=(1,)).type == t("b", 0, 4)
    with pytest.raises(ShapeError, match="symbolic dim 's'.*unknown"):
        op("slice", x, starts=(0,), ends=(2,), axes=(1,), steps=(1,))
    g = Graph([x.node], [rev])
    a = r(RNG, 2, 5, 4)
    np.testing.assert_array_equal(run(g, a)[0], a[:, ::-1])
    np.testing.assert_array_equal(run(g, torch.from_numpy(a), backend="torch")[0].numpy(),
                                  a[:, ::-1])


def test_aten_slice() -> None:
    x = torch.randn(5, 7)
    check_aten("aten.slice.Tensor", (x, 1, 1, 6, 2))
    check_aten("aten.slice.Tensor", (x, 0, -3, I64_MAX))
    check_aten("aten.slice.Tensor", (x, -1, 2))


# ---- gather -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("axis,idx", [(0, [[0, -1], [2, 1]]), (1, [-3, 2]), (-1, 1), (2, [0])])
def test_onnx_gather(axis: int, idx: Any) -> None:
    check_onnx_node("Gather", [r(RNG, 4, 3, 2), np.array(idx, I64)], {"axis": axis}, 13)
    check_onnx_node("Gather", [r(RNG, 4, 3, 2), np.array(idx, np.int32)], {"axis": axis}, 11,
                    consts=(1,))


def test_gather_symbolic_indices_select_with_if() -> None:
    import z3

    x = np.array([z3.Real(f"x{i}") for i in range(3)], dtype=object)
    i = np.array([z3.Int("i")], dtype=object)
    node = op("gather", v("x", 3), v("i", 1, dt=DType.i64), axis=0).node
    (y,) = get_op("gather").symbolic([x, i], node.attrs)
    s = z3.Solver()
    s.add(i[0] == -1, y[0] != x[2])
    assert s.check() == z3.unsat


def test_aten_gathers() -> None:
    x = torch.randn(4, 5, 3)
    check_aten("aten.select.int", (x, 1, -2))
    check_aten("aten.embedding.default", (torch.randn(10, 4), torch.tensor([[1, 9], [0, 0]])))
    check_aten("aten.index_select.default", (x, 2, torch.tensor([2, 0])))
    check_aten("aten.index.Tensor", (x, [torch.tensor([3, -1, 0])]))
    check_aten("aten.index.Tensor", (x, [None, torch.tensor([[1], [4]])]))
    check_aten("aten.index.Tensor", (x, [torch.tensor([1, 0]), torch.tensor([[2], [-1]])]))
    with pytest.raises(Unsupported, match="adjacent"):
        check_aten("aten.index.Tensor", (x, [torch.tensor([1]), None, torch.tensor([2])]))


# ---- expand ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("xs,shape", [((3, 1), [2, 1, 4]), ((3, 1), [1]), ((1, 4), [3, 1]),
                                      ((2, 1, 3), [2, 5, 3])])
def test_onnx_expand_is_bidirectional(xs: tuple, shape: list) -> None:
    check_onnx_node("Expand", [r(RNG, *xs), np.array(shape, I64)], {}, 13, consts=(1,))


def test_expand_infer_is_strict() -> None:
    with pytest.raises(ShapeError, match="lower rank"):
        op("expand", v("x", 3, 1), shape=(1,))
    with pytest.raises(ShapeError, match="broadcast gives"):
        op("expand", v("x", 3, 1), shape=(1, 1))
    assert op("expand", v("x", 1, "s"), shape=("b", 4, "s")).type == t("b", 4, "s")


def test_expand_runtime_and_export_with_symbols() -> None:
    x = input_node("x", t(1, "s"))
    y = op("expand", x.out, shape=("s", "s"))  # dim 0 from Shape(x)[1]
    g = Graph([x], [y])
    a = r(RNG, 1, 4)
    np.testing.assert_array_equal(run(g, a)[0], np.broadcast_to(a, (4, 4)))
    np.testing.assert_array_equal(export_run(g, 13, {"x": a})[0], np.broadcast_to(a, (4, 4)))


def test_aten_expand() -> None:
    check_aten("aten.expand.default", (torch.randn(3, 1), [2, -1, 4]))


# ---- squeeze / unsqueeze ---------------------------------------------------------------------------------

@pytest.mark.parametrize("opset", [11, 13])
def test_onnx_squeeze_unsqueeze(opset: int) -> None:
    x = r(RNG, 1, 3, 1, 2)
    if opset < 13:
        check_onnx_node("Squeeze", [x], {"axes": [0, -2]}, opset)
        check_onnx_node("Unsqueeze", [r(RNG, 3, 2)], {"axes": [-1, 0]}, opset)
    else:
        check_onnx_node("Squeeze", [x, np.array([-2, 0], I64)], {}, opset, consts=(1,))
        check_onnx_node("Unsqueeze", [r(RNG, 3, 2), np.array([-1, 1], I64)], {}, opset,
                        consts=(1,))
    check_onnx_node("Squeeze", [x], {}, opset)


def test_squeeze_without_axes_on_symbolic_is_unsupported() -> None:
    with pytest.raises(Unsupported, match="symbolic"):
        lift_onnx("Squeeze", [v("x", 1, "b")], {}, 13)
    with pytest.raises(ShapeError, match="not 1"):
        op("squeeze", v("x", 1, "b"), axes=(1,))


def test_unsqueeze_axes_normalized_against_output_rank() -> None:
    y = op("unsqueeze", v("x", 3, 2), axes=(-1, 0))
    assert y.node.attrs["axes"] == (0, 3) and y.type == t(1, 3, 2, 1)


def test_aten_squeeze_unsqueeze() -> None:
    x = torch.randn(1, 3, 1)
    check_aten("aten.squeeze.dims", (x, [0, 1]))  # torch ignores dim 1 (size 3)
    check_aten("aten.squeeze.dim", (x, -1))
    check_aten("aten.squeeze.default", (x,))
    check_aten("aten.unsqueeze.default", (x, -1))


# ---- pad ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_onnx_pad_opset2_attrs(mode: str) -> None:
    check_onnx_node("Pad", [r(RNG, 3, 4)], {"pads": [1, 2, 0, 1], "mode": mode, "value": 2.5}, 2)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_onnx_pad_inputs(mode: str) -> None:
    x = r(RNG, 3, 4)
    arrays = [x, np.array([1, 2, 2, 1], I64), np.array(-1.5, np.float32)]
    check_onnx_node("Pad", arrays, {"mode": mode}, 19, consts=(1, 2))


def test_onnx_pad_axes_and_negative_pads() -> None:
    x = r(RNG, 3, 4, 5)
    arrays = [x, np.array([2, -1, 0, 1], I64), np.array(0.5, np.float32), np.array([-1, 0], I64)]
    g = check_onnx_node("Pad", arrays, {}, 18, consts=(1, 2, 3))
    assert g.op_counts() == {"pad": 1, "slice": 1}
    arrays = [x, np.array([0, -1, 0, 0, -2, 0], I64)]
    g = check_onnx_node("Pad", arrays, {}, 13, consts=(1,))
    assert g.op_counts() == {"slice": 1}
    with pytest.raises(Unsupported, match="negative"):
        lift_onnx("Pad", [v("x", 3, 4), constant(np.array([0, -1, 0, 0], I64))],
                  {"mode": "reflect"}, 13)


def test_onnx_pad_integer_constant() -> None:
    x = np.arange(6, dtype=np.int32).reshape(2, 3)
    check_onnx_node("Pad", [x, np.array([1, 0, 0, 2], I64), np.array(-7, np.int32)], {}, 13,
                    consts=(1, 2))


def test_pad_infer_errors() -> None:
    with pytest.raises(ShapeError, match="reflect"):
        op("pad", v("x", 2, 3), pads=(0, 3, 0, 0), mode="reflect")
    with pytest.raises(ShapeError, match="symbolic"):
        op("pad", v("x", "b", 3), pads=(1, 0, 0, 0))
    assert op("pad", v("x", "b", 3), pads=(0, 1, 0, 2)).type == t("b", 6)


def test_aten_pads() -> None:
    x = torch.randn(2, 3, 4, 5)
    check_aten("aten.constant_pad_nd.default", (x, [1, 2, 0, 3], 1.5))
    check_aten("aten.constant_pad_nd.default", (x, [-1, 2]))
    check_aten("aten.reflection_pad2d.default", (x, [1, 2, 3, 0]))
    check_aten("aten.replication_pad1d.default", (torch.randn(2, 3, 4), [2, 1]))


# ---- tile ------------------------------------------------------------------------------------------------

def test_onnx_tile_and_symbolic() -> None:
    check_onnx_node("Tile", [r(RNG, 2, 3), np.array([2, 3], I64)], {}, 13, consts=(1,))
    assert op("tile", v("x", "b", 3), repeats=(2, 1)).type == t(dim_product(["b", 2]), 3)


def test_aten_repeat() -> None:
    check_aten("aten.repeat.default", (torch.randn(2, 3), [2, 1, 3]))
    check_aten("aten.repeat.default", (torch.randn(2, 3), [1, 2]))


# ---- export of each op at old and new opsets -------------------------------------------------------

@pytest.mark.parametrize("opset", [11, 13])
def test_export_axes_ops_across_opsets(opset: int) -> None:
    x = input_node("x", t(1, 3, 1))
    y = op("unsqueeze", op("squeeze", x.out, axes=(0, 2)), axes=(0, -1))
    parts = op_multi("split", y, axis=1, sizes=(1, 2))
    g = Graph([x], [*parts])
    a = r(RNG, 1, 3, 1)
    got = export_run(g, opset, {"x": a})
    np.testing.assert_array_equal(got[0], a.reshape(1, 3, 1)[:, :1])
    np.testing.assert_array_equal(got[1], a.reshape(1, 3, 1)[:, 1:])


def test_errors_name_op_and_types() -> None:
    with pytest.raises(GraphOptError, match=r"op gather.*gather\(f32\[3\], f32\[2\]\)"):
        op("gather", v("x", 3), v("i", 2), axis=0)


@pytest.mark.parametrize("name,attrs", [("slice", {"starts": (0,), "ends": (1,), "axes": (0,),
                                                   "steps": (1,), "stride": (1,)}),
                                        ("pad", {"pads": (0, 0), "modee": "edge"}),
                                        ("reshape", {"shape": (3,), "allowzero": 1})])
def test_unknown_attrs_are_rejected(name: str, attrs: dict) -> None:
    with pytest.raises(ShapeError, match="unknown attribute"):
        op(name, v("x", 3), **attrs)


def test_aten_slice_to_symbolic_end_and_symbolic_sizes() -> None:
    from tests.ops.frontend_fakes import FakeAtenCtx

    x = v("x", "b", "s", 4)
    ctx = FakeAtenCtx("aten.slice.Tensor", (x, 1, 0, "s"), {}, 1, {0})
    y = get_op("slice").from_aten(ctx)
    assert y.type == x.type and y.node.attrs["axes"] == ()
    with pytest.raises(Unsupported, match="symbolic bounds"):
        get_op("slice").from_aten(FakeAtenCtx("aten.slice.Tensor", (x, 1, 0, "t"), {}, 1, {0}))
    with pytest.raises(Unsupported, match="not all ints"):
        get_op("tile").from_aten(FakeAtenCtx("aten.repeat.default", (x, [1, "s", 1]), {}, 1,
                                             {0}))
    ctx = FakeAtenCtx("aten.view.default", (x, ["b", "s", 2, -1]), {}, 1, {0})
    assert get_op("reshape").from_aten(ctx).type == t("b", "s", 2, 2)
