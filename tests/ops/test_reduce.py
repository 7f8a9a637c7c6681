"""Tricky semantics of reductions and norms: axes normalization, ONNX axes as attribute vs input
and noop_with_empty_axes, Softmax's pre-13 2-D coercion, LayerNormalization's extra outputs,
export forms per opset, argmax ties, aten lowering, z3 semantics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from graphopt.errors import ShapeError
from graphopt.ir.node import input_node, op
from graphopt.ir.types import DType, TensorType
from graphopt.ops.registry import get_op

from tests.ops.op_testing import check_export, check_import, check_lift, graph_of, onnx_model, ops_of

RNG = np.random.default_rng(7)
X = RNG.standard_normal((2, 3, 4)).astype(np.float32)


def _in(name: str, shape: tuple, dt: DType = DType.f32):
    return input_node(name, TensorType(shape, dt)).out


# ---- attrs and infer -----------------------------------------------------------------------------

def test_reduce_axes_normalized_and_all() -> None:
    x = _in("x", ("batch", 3, 4))
    a = op("reduce_sum", x, axes=(-1, 0))
    assert a.node.attrs["axes"] == (0, 2) and a.node.attrs["keepdims"] is False
    assert a.type == TensorType((3,), DType.f32)
    assert op("reduce_sum", x, axes=(2, 0)).node is a.node  # one canonical node
    assert op("reduce_max", x).node.attrs["axes"] == (0, 1, 2)
    assert op("reduce_max", x, axes=(1,), keepdims=True).type.shape == ("batch", 1, 4)
    with pytest.raises(ShapeError, match="repeated axes"):
        op("reduce_sum", x, axes=(1, -2))
    with pytest.raises(ShapeError, match="axis 3 out of range"):
        op("reduce_sum", x, axes=(3,))
    with pytest.raises(ShapeError, match="reduce_mean: dtype i64 not supported"):
        op("reduce_mean", _in("i", (2,), DType.i64))


def test_norm_and_softmax_infer() -> None:
    x = _in("x", ("batch", "seq", 8))
    assert op("softmax", x).node.attrs["axis"] == 2
    assert op("layer_norm", x, _in("s", (8,)), epsilon=1e-6).node.attrs["axis"] == 2
    with pytest.raises(ShapeError, match="do not broadcast"):
        op("layer_norm", x, _in("s2", (4,)))
    with pytest.raises(ShapeError, match="different dtype"):
        op("rms_norm", x, _in("s3", (8,), DType.f16))
    with pytest.raises(ShapeError, match=r"must have shape \[3\]"):
        op("batch_norm", _in("y", (2, 3, 5)), *[_in(f"p{i}", (5,)) for i in range(4)])
    assert op("argmax", x, axis=-1).type == TensorType(("batch", "seq"), DType.i64)


# ---- numeric semantics ---------------------------------------------------------------------------

def test_argmax_ties_first_or_last() -> None:
    x = np.array([[1, 3, 3, 0], [2, 2, 2, 2]], np.float32)
    a = get_op("argmax")
    first = a.normalize_attrs((TensorType((2, 4), DType.f32),), _attrs(axis=1))
    last = a.normalize_attrs((TensorType((2, 4), DType.f32),), _attrs(axis=1,
                                                                       select_last_index=True))
    np.testing.assert_array_equal(a.numpy([x], first)[0], [1, 0])
    np.testing.assert_array_equal(a.numpy([x], last)[0], [2, 3])
    np.testing.assert_array_equal(a.torch([torch.from_numpy(x)], last)[0].numpy(), [2, 3])
    np.testing.assert_array_equal(get_op("argmin").numpy([x], last)[0], [3, 3])
    g, feeds = graph_of("argmax", [x], axis=1, select_last_index=True)
    check_export(g, feeds, 13)


def test_layer_norm_half_rounds_normalized_before_scale() -> None:
    x = (RNG.standard_normal((2, 8)) * 3).astype(np.float16)
    s = RNG.standard_normal((8,)).astype(np.float16)
    (y,) = get_op("layer_norm").numpy([x, s], _attrs(axis=1, epsilon=1e-5))
    x32 = x.astype(np.float32)
    n = (x32 - x32.mean(1, keepdims=True)) / np.sqrt(x32.var(1, keepdims=True) + 1e-5)
    assert y.dtype == np.float16
    np.testing.assert_allclose(y, n.astype(np.float16) * s, rtol=2e-3, atol=2e-3)


# ---- z3 semantics --------------------------------------------------------------------------------

def test_symbolic_reductions_prove_identities() -> None:
    import z3

    xs = np.array([[z3.Real(f"x{i}{j}") for j in range(3)] for i in range(2)], dtype=object)
    s_all = get_op("reduce_sum").symbolic([xs], _attrs(axes=(0, 1), keepdims=False))[0][()]
    s_rows = get_op("reduce_sum").symbolic([xs], _attrs(axes=(1,), keepdims=False))[0]
    s_two = get_op("reduce_sum").symbolic([s_rows], _attrs(axes=(0,), keepdims=False))[0][()]
    mean = get_op("reduce_mean").symbolic([xs], _attrs(axes=(0, 1), keepdims=False))[0][()]
    mx = get_op("reduce_max").symbolic([xs], _attrs(axes=(1,), keepdims=True))[0]
    assert mx.shape == (2, 1)
    solver = z3.Solver()
    solver.add(z3.Or(s_all != s_two, mean * 6 != s_all,
                     z3.Or([mx[0, 0] < xs[0, j] for j in range(3)])))
    assert solver.check() == z3.unsat
    am = get_op("argmax").symbolic([xs], _attrs(axis=1, keepdims=False,
                                                select_last_index=False))[0]
    solver = z3.Solver()  # the value at the argmax index is the max
    pick = z3.If(am[0] == 0, xs[0, 0], z3.If(am[0] == 1, xs[0, 1], xs[0, 2]))
    solver.add(pick != mx[0, 0])
    assert solver.check() == z3.unsat


def test_symbolic_softmax_and_norms_build() -> None:
    import z3

    xs = np.array([z3.Real(f"v{i}") for i in range(4)], dtype=object)
    (sm,) = get_op("softmax").symbolic([xs], _attrs(axis=0))
    solver = z3.Solver()  # exp/sum: the outputs sum to one whatever exp is (given exp > 0)
    from graphopt.ops.symbolic import uf

    solver.add([uf("exp")(v) > 0 for v in xs])
    solver.add(sum(sm) != 1)
    assert solver.check() == z3.unsat
    (ln,) = get_op("layer_norm").symbolic([xs.reshape(1, 4)], _attrs(axis=1, epsilon=1e-5))
    assert ln.shape == (1, 4) and all(z3.is_expr(e) for e in ln.ravel())


# ---- ONNX import ---------------------------------------------------------------------------------

def test_onnx_reduce_axes_attr_then_input() -> None:
    feeds = {"x": X}
    m = onnx_model("ReduceSum", feeds, ["x"], 11, axes=[-1, 0], keepdims=0)
    g = check_import(m, feeds, {"reduce_sum": 1})
    assert g.nodes[-1].attrs["axes"] == (0, 2)
    axes = np.array([1], np.int64)
    m = onnx_model("ReduceSum", feeds, ["x", "axes"], 13, consts={"axes": axes})
    g = check_import(m, feeds, {"reduce_sum": 1})
    assert g.output_types[0].shape == (2, 1, 4)  # keepdims defaults to 1
    m = onnx_model("ReduceSum", feeds, ["x"], 13, noop_with_empty_axes=1)
    check_import(m, feeds, {"identity": 1})
    m = onnx_model("ReduceSum", feeds, ["x"], 13)
    g = check_import(m, feeds, {"reduce_sum": 1})
    assert g.output_types[0].shape == (1, 1, 1)
    m = onnx_model("ReduceSum", {"x": X, "axes": axes}, ["x", "axes"], 13,
                   outputs=[("y", None, [None] * 3)])
    check_import(m, {"x": X, "axes": axes}, {"opaque:ReduceSum": 1})
    m = onnx_model("ReduceMean", feeds, ["x"], 17, axes=[1])
    check_import(m, feeds, {"reduce_mean": 1})
    m = onnx_model("ReduceMax", feeds, ["x", "axes"], 18, consts={"axes": axes}, keepdims=0)
    check_import(m, feeds, {"reduce_max": 1})
    xi = np.arange(6, dtype=np.int32).reshape(2, 3)
    m = onnx_model("ReduceMean", {"x": xi}, ["x"], 13, axes=[1])
    check_import(m, {"x": xi}, {"opaque:ReduceMean": 1})


def test_onnx_softmax_before_13_only_last_axis() -> None:
    feeds = {"x": X}
    m = onnx_model("Softmax", feeds, ["x"], 11)  # axis=1 default: normalizes over axes 1 and 2
    check_import(m, feeds, {"opaque:Softmax": 1})
    m = onnx_model("Softmax", feeds, ["x"], 11, axis=2)
    check_import(m, feeds, {"softmax": 1})
    m = onnx_model("LogSoftmax", feeds, ["x"], 11, axis=-1)
    check_import(m, feeds, {"log_softmax": 1})
    m = onnx_model("Softmax", feeds, ["x"], 13, axis=1)
    check_import(m, feeds, {"softmax": 1})


def test_onnx_layer_norm_only_with_one_output() -> None:
    s, b = RNG.standard_normal((4,)).astype(np.float32), RNG.standard_normal((4,)).astype(
        np.float32)
    feeds = {"x": X}
    m = onnx_model("LayerNormalization", feeds, ["x", "s", "b"], 17, consts={"s": s, "b": b})
    check_import(m, feeds, {"layer_norm": 1}, rtol=1e-5, atol=1e-5)
    m = onnx_model("LayerNormalization", feeds, ["x", "s"], 17, consts={"s": s[None]}, axis=-1,
                   epsilon=1e-3)
    check_import(m, feeds, {"layer_norm": 1}, rtol=1e-5, atol=1e-5)
    m = onnx_model("LayerNormalization", feeds, ["x", "s", "b"], 17, consts={"s": s, "b": b},
                   outputs=[("y", None), ("mean", None)])
    g = check_import(m, feeds, None)
    assert "layer_norm" not in ops_of(g)
    m = onnx_model("LayerNormalization", feeds, ["x", "s"], 17, consts={"s": s}, stash_type=11)
    g = check_import(m, feeds, None, ort=False)
    assert "layer_norm" not in ops_of(g)


def test_onnx_batch_norm_and_rms_norm() -> None:
    x = RNG.standard_normal((2, 3, 5)).astype(np.float32)
    p = {k: RNG.standard_normal((3,)).astype(np.float32) for k in ("s", "b", "m")}
    p["v"] = (np.abs(RNG.standard_normal((3,))) + 0.5).astype(np.float32)
    m = onnx_model("BatchNormalization", {"x": x}, ["x", "s", "b", "m", "v"], 15, consts=p,
                   epsilon=1e-3)
    check_import(m, {"x": x}, {"batch_norm": 1}, rtol=1e-5, atol=1e-5)
    m = onnx_model("BatchNormalization", {"x": x}, ["x", "s", "b", "m", "v"], 15, consts=p,
                   training_mode=1, outputs=[("y", None), ("rm", None), ("rv", None)])
    g = check_import(m, {"x": x}, None, ort=False)
    assert "batch_norm" not in ops_of(g)
    m = onnx_model("RMSNormalization", {"x": X}, ["x", "s"], 23, consts={"s": p["s"][:1]})
    check_import(m, {"x": X}, {"rms_norm": 1}, rtol=1e-5, atol=1e-5)


# ---- ONNX export forms ---------------------------------------------------------------------------

def test_reduce_export_axes_form_follows_opset() -> None:
    g, feeds = graph_of("reduce_sum", [X], axes=(1,), keepdims=True)
    from tests.ops.op_testing import export

    for opset, as_input in ((11, False), (13, True)):
        check_export(g, feeds, opset)
        (n,) = export(g, opset).graph.node
        assert (len(n.input) == 2) == as_input and any(a.name == "axes" for a in
                                                       n.attribute) != as_input
    g, feeds = graph_of("reduce_mean", [X], axes=(0, 2))
    for opset, as_input in ((17, False), (18, True)):
        check_export(g, feeds, opset)
        (n,) = export(g, opset).graph.node
        assert (len(n.input) == 2) == as_input


def test_softmax_export_before_13_transposes() -> None:
    g, feeds = graph_of("softmax", [X], axis=1)
    assert check_export(g, feeds, 11) == ["Transpose", "Softmax", "Transpose"]
    assert check_export(g, feeds, 13) == ["Softmax"]
    g, feeds = graph_of("log_softmax", [X], axis=2)
    assert check_export(g, feeds, 11) == ["LogSoftmax"]


@pytest.mark.parametrize("dt", [np.float32, np.float16])
def test_norm_export_native_or_composed(dt: type) -> None:
    x = X.astype(dt)
    s = RNG.standard_normal((4,)).astype(dt)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dt == np.float32 else {"rtol": 3e-3, "atol": 3e-3}
    g, feeds = graph_of("layer_norm", [x, s, s], axis=2)
    assert check_export(g, feeds, 17, **tol) == ["LayerNormalization"]
    assert "LayerNormalization" not in check_export(g, feeds, 16, **tol)
    g, feeds = graph_of("layer_norm", [x], axis=1)  # no scale: ONNX needs one, a constant
    assert check_export(g, feeds, 17, **tol) == ["LayerNormalization"]
    g, feeds = graph_of("rms_norm", [x, s], axis=2)
    assert check_export(g, feeds, 23, **tol) == ["RMSNormalization"]
    assert "RMSNormalization" not in check_export(g, feeds, 18, **tol)


# ---- aten ----------------------------------------------------------------------------------------

class _Reductions(torch.nn.Module):
    def forward(self, x: torch.Tensor, i: torch.Tensor) -> tuple:
        return (x.sum(), x.mean((0, -1), keepdim=True), x.amax(1), x.amin((0, 1)), i.sum(-1),
                (i > 0).sum(), x.argmax(), x.argmax(-1, keepdim=True), x.argmin(0), x.prod(1),
                torch.softmax(x, 1), torch.log_softmax(x, -1), torch.softmax(x.half(), -1),
                torch.softmax(x, -1, dtype=torch.float64))


def test_aten_reductions_lift() -> None:
    x = torch.randn(2, 3, 4)
    i = torch.randint(-3, 3, (2, 3), dtype=torch.int32)
    g = check_lift(_Reductions(), x, i, rtol=1e-3, atol=1e-3)
    counts = ops_of(g)
    assert not any(k.startswith("opaque") for k in counts), counts


class _Norms(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln = torch.nn.LayerNorm(4)
        self.ln_nw = torch.nn.LayerNorm((3, 4), elementwise_affine=False)
        self.bn = torch.nn.BatchNorm1d(3)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)

    def forward(self, x: torch.Tensor) -> tuple:
        return self.ln(x), self.ln_nw(x), self.bn(x)


def test_aten_norms_lift() -> None:
    g = check_lift(_Norms().eval(), torch.randn(2, 3, 4), rtol=1e-5, atol=1e-5)
    counts = ops_of(g)
    assert counts.get("layer_norm") == 2 and counts.get("batch_norm") == 1, counts


class _LayerNormStats(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple:
        y, mean, rstd = torch.ops.aten.native_layer_norm(x, [4], None, None, 1e-5)
        return y, mean


def test_aten_native_layer_norm_with_used_stats_stays_opaque() -> None:
    g = check_lift(_LayerNormStats(), torch.randn(2, 4), rtol=1e-5, atol=1e-5)
    assert "layer_norm" not in ops_of(g), ops_of(g)


def _attrs(**kw):
    from graphopt.ir.node import Attrs

    return Attrs(kw)
