"""matmul: numpy-rule shapes (symbolic too), cost, ONNX MatMul / Gemm import against ONNX
Runtime, aten mm / bmm / addmm / matmul / linear against torch, export."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.ops.frontend_fakes import check_aten, check_onnx_node, export_run
from graphopt.errors import ShapeError
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node, input_node, op
from graphopt.ir.types import DType, TensorType
from graphopt.ops.registry import Unsupported, get_op

F32 = DType.f32


def _v(name: str, *shape: object) -> object:
    return input_node(name, TensorType(tuple(shape), F32)).out  # type: ignore[arg-type]


def r(rng: np.random.Generator, *s: int) -> np.ndarray:
    return rng.standard_normal(s).astype(np.float32)


@pytest.mark.parametrize("a,b,out", [
    ((3, 5), (5, 7), (3, 7)),
    (("batch", 1, 3, 5), (4, 5, 2), ("batch", 4, 3, 2)),
    ((5,), (2, 5, 3), (2, 3)),
    (("b", "s", 8), (8,), ("b", "s")),
    ((8,), (8,), ()),
    (("b", "s", "d"), ("d", 16), ("b", "s", 16)),
])
def test_infer_shapes(a: tuple, b: tuple, out: tuple) -> None:
    y = op("matmul", _v("a", *a), _v("b", *b))
    assert y.type == TensorType(out, F32)


def test_infer_errors_name_op_and_types() -> None:
    with pytest.raises(ShapeError, match=r"matmul.*f32\[3,5\].*f32\[4,7\]"):
        op("matmul", _v("a", 3, 5), _v("b", 4, 7))
    with pytest.raises(ShapeError, match="do not broadcast"):
        op("matmul", _v("a", 2, 3, 5), _v("b", 4, 5, 2))
    with pytest.raises(ShapeError, match="dtypes"):
        op("matmul", _v("a", 3, 5), input_node("b", TensorType((5, 2), DType.f16)).out)
    with pytest.raises(ShapeError, match="contraction"):
        op("matmul", _v("a", "s", "k"), _v("b", "j", 4))


def test_cost_counts_2mnk() -> None:
    y = op("matmul", _v("a", 2, 3, 5), _v("b", 5, 7))
    c = get_op("matmul").cost((TensorType((2, 3, 5), F32), TensorType((5, 7), F32)),
                              y.node.out_types, y.node.attrs)
    assert c.flops == 2 * 2 * 3 * 7 * 5
    assert c.bytes == 4 * (30 + 35 + 42)
    assert c.launches == 1


@pytest.mark.parametrize("sa,sb", [((3, 5), (5, 7)), ((2, 1, 3, 5), (4, 5, 2)),
                                   ((5,), (5, 3)), ((2, 3, 5), (5,))])
def test_onnx_matmul_vs_ort(sa: tuple, sb: tuple) -> None:
    rng = np.random.default_rng(0)
    check_onnx_node("MatMul", [r(rng, *sa), r(rng, *sb)], {}, 13, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opset", [7, 11, 13])
@pytest.mark.parametrize("ta,tb,alpha,beta,cshape", [
    (0, 0, 1.0, 1.0, (3, 4)),
    (1, 0, 0.5, 2.0, (4,)),
    (0, 1, 1.0, 0.25, (1, 4)),
    (1, 1, -1.5, 1.0, (3, 1)),
    (0, 0, 2.0, 0.0, (3, 4)),
    (0, 1, 1.0, 1.0, None),
    (1, 0, 1.0, 3.0, ()),
])
def test_onnx_gemm_vs_ort(opset: int, ta: int, tb: int, alpha: float, beta: float,
                          cshape: tuple | None) -> None:
    if cshape is None and opset < 11:
        pytest.skip("C is required before opset 11")
    rng = np.random.default_rng(1)
    a = r(rng, 5, 3) if ta else r(rng, 3, 5)
    b = r(rng, 4, 5) if tb else r(rng, 5, 4)
    arrays = [a, b] + ([] if cshape is None else [r(rng, *cshape)])
    attrs = {"transA": ta, "transB": tb, "alpha": alpha, "beta": beta}
    g = check_onnx_node("Gemm", arrays, attrs, opset, rtol=1e-5, atol=1e-5)
    counts = g.op_counts()
    assert counts["matmul"] == 1
    assert counts.get("transpose", 0) == ta + tb
    assert counts.get("add", 0) == (0 if cshape is None or beta == 0 else 1)


def test_onnx_gemm_with_constant_c_and_weights() -> None:
    rng = np.random.default_rng(2)
    check_onnx_node("Gemm", [r(rng, 3, 5), r(rng, 4, 5), r(rng, 4)], {"transB": 1}, 13,
                    consts=(1, 2), atol=1e-5)


def test_onnx_gemm_integer_alpha_unsupported() -> None:
    a = input_node("a", TensorType((2, 3), DType.i32)).out
    b = input_node("b", TensorType((3, 2), DType.i32)).out
    from tests.ops.frontend_fakes import lift_onnx

    with pytest.raises(Unsupported, match="integer"):
        lift_onnx("Gemm", [a, b], {"alpha": 2.0}, 13)


def test_aten_mm_bmm_matmul() -> None:
    t = torch.randn
    check_aten("aten.mm.default", (t(3, 5), t(5, 2)), atol=1e-5)
    check_aten("aten.bmm.default", (t(2, 3, 5), t(2, 5, 4)), atol=1e-5)
    check_aten("aten.matmul.default", (t(2, 1, 3, 5), t(4, 5, 2)), atol=1e-5)
    check_aten("aten.matmul.default", (t(5), t(2, 5, 3)), atol=1e-5)


@pytest.mark.parametrize("beta,alpha", [(1, 1), (0.5, 2.0), (0, 1.5)])
def test_aten_addmm(beta: float, alpha: float) -> None:
    t = torch.randn
    check_aten("aten.addmm.default", (t(4), t(3, 5), t(5, 4)), {"beta": beta, "alpha": alpha},
               atol=1e-5)


def test_aten_linear() -> None:
    t = torch.randn
    g = check_aten("aten.linear.default", (t(2, 3, 5), t(4, 5), t(4)), atol=1e-5)
    assert g.op_counts() == {"add": 1, "matmul": 1, "transpose": 1}
    check_aten("aten.linear.default", (t(3, 5), t(4, 5)), atol=1e-5)


def test_export_symbolic_batch_runs_in_ort() -> None:
    x = input_node("x", TensorType(("batch", 3, 5), F32))
    w = input_node("w", TensorType((5, 7), F32))
    g = Graph([x, w], [op("matmul", x.out, w.out)])
    rng = np.random.default_rng(3)
    xa, wa = r(rng, 4, 3, 5), r(rng, 5, 7)
    (got,) = export_run(g, 13, {"x": xa, "w": wa})
    np.testing.assert_allclose(got, xa @ wa, rtol=1e-5, atol=1e-5)


def test_symbolic_is_exact_sum_of_products() -> None:
    import z3

    a = np.array([[z3.Real(f"a{i}{j}") for j in range(2)] for i in range(2)], dtype=object)
    b = np.array([[z3.Real(f"b{i}{j}") for j in range(2)] for i in range(2)], dtype=object)
    node = Node.build("matmul", [_v("a", 2, 2), _v("b", 2, 2)])  # type: ignore[list-item]
    (y,) = get_op("matmul").symbolic([a, b], node.attrs)
    s = z3.Solver()
    s.add(y[0, 1] != a[0, 0] * b[0, 1] + a[0, 1] * b[1, 1])
    assert s.check() == z3.unsat
