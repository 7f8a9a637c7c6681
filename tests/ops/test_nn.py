"""conv / max_pool / avg_pool: geometry (auto_pad, ceil_mode, count_include_pad, dilations),
ONNX import against ONNX Runtime, aten lifting against torch, z3 forms."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from tests.ops.frontend_fakes import check_aten, check_onnx_node, lift_onnx
from graphopt.errors import ShapeError
from graphopt.ir.node import input_node, op
from graphopt.ir.types import DType, TensorType
from graphopt.ops.registry import Unsupported, get_op

F32 = DType.f32
RNG = np.random.default_rng(5)
TOL = dict(rtol=1e-4, atol=1e-5)


def r(*s: int) -> np.ndarray:
    return RNG.standard_normal(s).astype(np.float32)


def v(name: str, *shape: Any, dt: DType = F32) -> Any:
    return input_node(name, TensorType(tuple(shape), dt)).out


# ---- conv ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("auto_pad", ["NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("strides", [[1, 1], [2, 3]])
def test_onnx_conv_auto_pad(auto_pad: str, strides: list) -> None:
    attrs: dict[str, Any] = {"auto_pad": auto_pad, "strides": strides}
    if auto_pad == "NOTSET":
        attrs["pads"] = [1, 0, 2, 1]
    check_onnx_node("Conv", [r(1, 3, 7, 8), r(4, 3, 3, 2), r(4)], attrs, 11, consts=(1, 2),
                    **TOL)


@pytest.mark.parametrize("case", [
    dict(x=(2, 4, 9), w=(6, 2, 3), attrs={"group": 2, "dilations": [2], "pads": [1, 2]}),
    dict(x=(1, 2, 5, 6), w=(2, 1, 2, 3), attrs={"group": 2, "kernel_shape": [2, 3],
                                                   "strides": [2, 1]}),
    dict(x=(1, 2, 4, 3, 5), w=(3, 2, 2, 1, 3), attrs={"pads": [0, 0, 1, 1, 0, 1]}),
    dict(x=(1, 3, 6, 7), w=(4, 3, 3, 3), attrs={"auto_pad": "SAME_LOWER", "dilations": [1, 1],
                                                   "strides": [2, 2]}),
])
def test_onnx_conv_forms(case: dict) -> None:
    arrays = [r(*case["x"]), r(*case["w"])]
    check_onnx_node("Conv", arrays, case["attrs"], 13, consts=(1,), **TOL)


def test_conv_infer() -> None:
    y = op("conv", v("x", "n", 3, 7, 8), v("w", 4, 3, 3, 2), strides=(2, 1), pads=(1, 0, 1, 1))
    assert y.type == TensorType(("n", 4, 4, 8), F32)
    assert y.node.attrs["dilations"] == (1, 1) and y.node.attrs["group"] == 1
    # 1x1 conv keeps symbolic spatial dims; others cannot
    assert op("conv", v("x", 1, 3, "h", "w"), v("w", 5, 3, 1, 1)).type.shape == (1, 5, "h", "w")
    with pytest.raises(ShapeError, match="symbolic dim 'h'"):
        op("conv", v("x", 1, 3, "h", 4), v("w", 5, 3, 3, 1))
    with pytest.raises(ShapeError, match=r"conv\(f32\[1,4,5,5\], f32\[2,3,1,1\]\).*channels"):
        op("conv", v("x", 1, 4, 5, 5), v("w", 2, 3, 1, 1))
    with pytest.raises(ShapeError, match="not divisible by group"):
        op("conv", v("x", 1, 4, 5, 5), v("w", 3, 2, 1, 1), group=2)


def test_conv_cost() -> None:
    y = op("conv", v("x", 2, 3, 5, 5), v("w", 4, 3, 3, 3), v("b", 4))
    c = get_op("conv").cost(tuple(i.type for i in y.node.inputs), y.node.out_types,
                            y.node.attrs)
    n_out = 2 * 4 * 3 * 3
    assert c.flops == 2 * n_out * 27 + n_out


def test_conv_symbolic_is_exact() -> None:
    import z3

    x = np.array([[[z3.Real(f"x{i}") for i in range(4)]]], dtype=object)  # [1,1,4]
    w = np.array([[[z3.Real("a"), z3.Real("b")]]], dtype=object)  # [1,1,2]
    node = op("conv", v("x", 1, 1, 4), v("w", 1, 1, 2), strides=(2,), pads=(1, 0)).node
    (y,) = get_op("conv").symbolic([x, w], node.attrs)
    assert y.shape == (1, 1, 2)
    s = z3.Solver()
    s.add(z3.Or(y[0, 0, 0] != z3.Real("b") * x[0, 0, 0],
                y[0, 0, 1] != z3.Real("a") * x[0, 0, 1] + z3.Real("b") * x[0, 0, 2]))
    assert s.check() == z3.unsat


def test_aten_convolution() -> None:
    x, w, b = torch.randn(2, 4, 7, 6), torch.randn(6, 2, 3, 3), torch.randn(6)
    check_aten("aten.convolution.default",
               (x, w, b, [2, 1], [1, 0], [1, 2], False, [0, 0], 2), **TOL)
    check_aten("aten.conv2d.padding", (x, w, None, [1, 1], "same", [2, 1], 2), **TOL)
    check_aten("aten.conv1d.default", (torch.randn(1, 3, 9), torch.randn(2, 3, 4)), **TOL)
    with pytest.raises(Unsupported, match="transposed"):
        check_aten("aten.convolution.default",
                   (x, torch.randn(4, 3, 3, 3), None, [1, 1], [0, 0], [1, 1], True, [0, 0], 1))


# ---- pools -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("ceil", [0, 1])
@pytest.mark.parametrize("pads,strides,dil", [([1, 0, 1, 1], [2, 2], [1, 1]),
                                              ([0, 0, 0, 0], [2, 3], [2, 1]),
                                              ([1, 1, 0, 1], [3, 2], [1, 2])])
def test_onnx_max_pool(ceil: int, pads: list, strides: list, dil: list) -> None:
    attrs = {"kernel_shape": [3, 2], "pads": pads, "strides": strides, "dilations": dil,
             "ceil_mode": ceil}
    check_onnx_node("MaxPool", [r(2, 3, 8, 7)], attrs, 12)


@pytest.mark.parametrize("auto_pad", ["VALID", "SAME_UPPER", "SAME_LOWER"])
def test_onnx_max_pool_auto_pad_and_old_opset(auto_pad: str) -> None:
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": auto_pad}
    check_onnx_node("MaxPool", [r(1, 2, 7, 8)], attrs, 8)
    check_onnx_node("MaxPool", [RNG.integers(-9, 9, (1, 2, 5, 6)).astype(np.int8)],
                    {"kernel_shape": [2, 2], "pads": [1, 1, 1, 1]}, 12)


def test_onnx_max_pool_declines() -> None:
    x = v("x", 1, 2, 5, 5)
    with pytest.raises(Unsupported, match="Indices"):
        lift_onnx("MaxPool", [x], {"kernel_shape": [2, 2]}, 12, num_outputs=2)
    with pytest.raises(Unsupported, match="storage_order"):
        lift_onnx("MaxPool", [x], {"kernel_shape": [2, 2], "storage_order": 1}, 12)


@pytest.mark.parametrize("ceil", [0, 1])
@pytest.mark.parametrize("include", [0, 1])
@pytest.mark.parametrize("pads,strides", [([1, 1, 1, 1], [2, 2]), ([1, 0, 0, 1], [2, 3]),
                                          ([0, 0, 0, 0], [3, 3])])
def test_onnx_avg_pool(ceil: int, include: int, pads: list, strides: list) -> None:
    attrs = {"kernel_shape": [3, 2], "pads": pads, "strides": strides, "ceil_mode": ceil,
             "count_include_pad": include}
    check_onnx_node("AveragePool", [r(2, 3, 8, 7)], attrs, 11, **TOL)


def test_onnx_avg_pool_dilations_opset19() -> None:
    attrs = {"kernel_shape": [2, 2], "pads": [1, 0, 1, 1], "dilations": [2, 1],
             "count_include_pad": 0}
    check_onnx_node("AveragePool", [r(1, 2, 7, 6)], attrs, 19, **TOL)


@pytest.mark.parametrize("op_type", ["GlobalAveragePool", "GlobalMaxPool"])
def test_onnx_global_pools_become_reductions(op_type: str) -> None:
    g = check_onnx_node(op_type, [r(2, 3, 4, 5)], {}, 13, **TOL)
    want = "reduce_mean" if op_type == "GlobalAveragePool" else "reduce_max"
    assert g.op_counts() == {want: 1}
    assert g.outputs[0].node.attrs["axes"] == (2, 3)


def test_pool_infer() -> None:
    y = op("max_pool", v("x", "n", 3, 7, 6), kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1),
           ceil_mode=True)
    assert y.type.shape == ("n", 3, 4, 4)
    assert y.node.attrs["dilations"] == (1, 1)
    with pytest.raises(ShapeError, match="pads"):
        op("max_pool", v("x", 1, 3, 7, 6), kernel=(2, 2), pads=(2, 0, 0, 0))
    with pytest.raises(ShapeError, match="dtype"):
        op("avg_pool", v("x", 1, 3, 7, 6, dt=DType.i32), kernel=(2, 2))


def test_max_pool_symbolic_takes_if_maxima() -> None:
    import z3

    xs = [z3.Real(f"x{i}") for i in range(3)]
    x = np.array([[xs]], dtype=object)
    node = op("max_pool", v("x", 1, 1, 3), kernel=(2,), strides=(1,), pads=(1, 0)).node
    (y,) = get_op("max_pool").symbolic([x], node.attrs)
    assert y.shape == (1, 1, 3)
    s = z3.Solver()
    s.add(xs[0] == 1, xs[1] == 5, xs[2] == 2)
    s.add(z3.Or(y[0, 0, 0] != 1, y[0, 0, 1] != 5, y[0, 0, 2] != 5))
    assert s.check() == z3.unsat


def test_aten_pools() -> None:
    x = torch.randn(2, 3, 9, 8)
    check_aten("aten.max_pool2d_with_indices.default", (x, [3, 3], [2, 2], [1, 1], [1, 1], True),
               used_outputs={0})
    check_aten("aten.max_pool2d_with_indices.default", (x, [2, 2]), used_outputs={0})
    with pytest.raises(Unsupported, match="indices"):
        check_aten("aten.max_pool2d_with_indices.default", (x, [2, 2]))
    for ceil in (False, True):
        for include in (False, True):
            check_aten("aten.avg_pool2d.default", (x, [3, 2], [2, 3], [1, 1], ceil, include),
                       **TOL)
    check_aten("aten.avg_pool2d.default", (x, [2, 2]), **TOL)
    g = check_aten("aten._adaptive_avg_pool2d.default", (x, [1, 1]), **TOL)
    assert g.op_counts() == {"reduce_mean": 1}
    g = check_aten("aten._adaptive_avg_pool2d.default", (x, [3, 4]), **TOL)
    assert g.op_counts() == {"avg_pool": 1}
    with pytest.raises(Unsupported):
        check_aten("aten._adaptive_avg_pool2d.default", (x, [2, 3]))


def test_torch_generic_path_matches_numpy() -> None:
    """Pads torch's own pooling rejects (asymmetric) take the generic tap loop."""
    x = r(1, 2, 7, 6)
    for name, extra in (("max_pool", {}), ("avg_pool", {"count_include_pad": True})):
        node = op(name, v("x", 1, 2, 7, 6), kernel=(3, 3), strides=(2, 1),
                  pads=(2, 0, 0, 1), ceil_mode=True, **extra).node
        o = get_op(name)
        want = o.numpy([x], node.attrs)[0]
        got = o.torch([torch.from_numpy(x)], node.attrs)[0].numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
