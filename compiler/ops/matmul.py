"""Matrix multiplication: ``matmul`` with numpy semantics (batched broadcast, 1-D rules).

Frontend lowerings that have no op of their own also live here: ONNX Gemm and aten
addmm / linear become transpose / matmul / mul / add compositions."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import ShapeError
from ..ir.node import Attrs
from ..ir.types import Dim, TensorType, ValueType
from .registry import (SYM_DEFAULT, Cost, Example, OpDef, Unsupported, broadcast_shapes, nbytes,
                       register, same_dtype, tensor_types)
from .shape import check_attrs


def matmul_shape(name: str, a: tuple[Dim, ...], b: tuple[Dim, ...]) -> tuple[Dim, ...]:
    """Output shape of numpy matmul over int or symbolic dims."""
    if len(a) == 0 or len(b) == 0:
        raise ShapeError(f"{name}: matmul needs inputs of rank >= 1, got {list(a)} and {list(b)}")
    a2 = (1, a[0]) if len(a) == 1 else a
    b2 = (b[0], 1) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise ShapeError(f"{name}: contraction dims differ: {list(a)} @ {list(b)} "
                         f"({a2[-1]} vs {b2[-2]})")
    batch = broadcast_shapes(name, a2[:-2], b2[:-2])
    out: list[Dim] = list(batch)
    if len(a) > 1:
        out.append(a2[-2])
    if len(b) > 1:
        out.append(b2[-1])
    return tuple(out)


def _static(d: Dim) -> int:
    return d if isinstance(d, int) else SYM_DEFAULT


@register
class MatMul(OpDef):
    """numpy.matmul: [..., M, K] @ [..., K, N] -> [..., M, N]; 1-D operands get a dim
    prepended (a) / appended (b) that is removed again from the result."""

    name = "matmul"
    attr_names = ()
    min_inputs = max_inputs = 2
    onnx = ("MatMul", "Gemm")
    aten = ("aten.mm.default", "aten.bmm.default", "aten.matmul.default",
            "aten.addmm.default", "aten.linear.default")
    commutative = False
    associative = True
    exact_int = True
    cost_class = "heavy"
    matrix_unit = True
    triton_kernel = "matmul"

    def mixed_axes(self, in_types: tuple[ValueType, ...], attrs: Attrs
                   ) -> tuple[tuple[int, int], ...]:
        """The contraction axis of both operands (numpy matmul shapes)."""
        ra, rb = (len(t.shape) if isinstance(t, TensorType) and t.shape is not None else 2
                  for t in in_types[:2])
        return ((0, ra - 1), (1, 0 if rb == 1 else rb - 2))

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        check_attrs(self.name, attrs, self.attr_names)
        a, b = tensor_types(self.name, in_types)
        dt = same_dtype(self.name, [a, b])
        if a.shape is None or b.shape is None:
            raise ShapeError(f"matmul({a}, {b}): unknown rank")
        return (TensorType(matmul_shape(f"matmul({a}, {b})", a.shape, b.shape), dt),)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        a, b = np.asarray(xs[0]), np.asarray(xs[1])
        out = np.matmul(a, b)
        if a.dtype != object:
            out = np.asarray(out).astype(a.dtype, copy=False)
        return (np.asarray(out),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        import torch

        return (torch.matmul(xs[0], xs[1]),)

    def cost(self, in_types: tuple[ValueType, ...], out_types: tuple[ValueType, ...],
             attrs: Attrs) -> Cost:
        a, b = tensor_types(self.name, in_types)
        assert a.shape is not None and b.shape is not None
        k = _static(a.shape[-1])
        out = out_types[0]
        n_out = out.static_numel(SYM_DEFAULT) if isinstance(out, TensorType) else 1
        b_total = sum(nbytes(t) for t in in_types) + sum(nbytes(t) for t in out_types)
        return Cost(2.0 * n_out * k, float(b_total), 1)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        def r(*s: int) -> np.ndarray:
            return rng.standard_normal(s).astype(np.float32)

        tol = dict(rtol=1e-4, atol=1e-5)
        return [
            Example([r(3, 5), r(5, 7)], **tol),
            Example([r(2, 1, 3, 5), r(4, 5, 2)], **tol),
            Example([r(5), r(5, 3)], **tol),
            Example([r(2, 3, 5), r(5)], **tol),
            Example([r(7), r(7)], **tol),
            Example([rng.integers(-4, 5, (3, 4)).astype(np.int64),
                     rng.integers(-4, 5, (4, 2)).astype(np.int64)]),
        ]

    # ---- frontends ---------------------------------------------------------------------------
    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        if ctx.op_type == "Gemm":
            return [gemm_from_onnx(ctx)]
        if ctx.attrs or len(ctx.inputs) != 2 or any(v is None for v in ctx.inputs):
            raise Unsupported(f"MatMul with attributes {sorted(ctx.attrs)}")
        return [ctx.build("matmul", list(ctx.inputs))]

    def to_onnx(self, ctx: Any, node: Any) -> None:
        ctx.emit("MatMul", [ctx.name(v) for v in node.inputs], ctx.out_names(node))

    def from_aten(self, ctx: Any) -> Any:
        t = ctx.target
        if t in ("aten.mm.default", "aten.bmm.default", "aten.matmul.default"):
            a, b = ctx.args[0], ctx.args[1]
            return ctx.build("matmul", [a, b])
        if t == "aten.addmm.default":
            inp, m1, m2 = ctx.args[0], ctx.args[1], ctx.args[2]
            beta = _arg(ctx, 3, "beta", 1)
            alpha = _arg(ctx, 4, "alpha", 1)
            y = ctx.build("matmul", [m1, m2])
            if alpha != 1:
                y = ctx.build("mul", [y, ctx.scalar(alpha, y)])
            if beta == 0:
                return y
            c = inp if beta == 1 else ctx.build("mul", [inp, ctx.scalar(beta, inp)])
            return ctx.build("add", [y, c])
        if t == "aten.linear.default":
            x, w = ctx.args[0], ctx.args[1]
            bias = _arg(ctx, 2, "bias", None)
            if len(w.type.shape) != 2:
                raise Unsupported(f"aten.linear with weight of type {w.type}")
            y = ctx.build("matmul", [x, ctx.build("transpose", [w], perm=(1, 0))])
            return y if bias is None else ctx.build("add", [y, bias])
        raise Unsupported(f"matmul cannot lift {t}")


def _arg(ctx: Any, i: int, name: str, default: Any) -> Any:
    if len(ctx.args) > i:
        return ctx.args[i]
    return ctx.kwargs.get(name, default)


def _scalar_const(ctx: Any, value: float, like: TensorType, what: str) -> Any:
    try:
        dt = like.dtype.to_numpy()
    except TypeError:
        raise Unsupported(f"Gemm {what}={value} on {like.dtype.value} (no numpy dtype)") from None
    if not like.dtype.is_float:
        raise Unsupported(f"Gemm {what}={value} on integer type {like.dtype.value}")
    return ctx.constant(np.array(value, dtype=dt))


def gemm_from_onnx(ctx: Any) -> Any:
    """ONNX Gemm: Y = alpha * A' @ B' + beta * C as transpose / matmul / mul / add."""
    ins = list(ctx.inputs)
    if len(ins) < 2 or ins[0] is None or ins[1] is None:
        raise Unsupported("Gemm without A or B")
    a, b = ins[0], ins[1]
    c = ins[2] if len(ins) > 2 else None
    known = {"alpha", "beta", "transA", "transB", "broadcast"}
    extra = set(ctx.attrs) - known
    if extra:
        raise Unsupported(f"Gemm with attributes {sorted(extra)}")
    alpha = float(ctx.attrs.get("alpha", 1.0))
    beta = float(ctx.attrs.get("beta", 1.0))
    for v in (a, b):
        if not isinstance(v.type, TensorType) or v.type.shape is None or len(v.type.shape) != 2:
            raise Unsupported(f"Gemm input of type {v.type} (rank 2 needed)")
    if int(ctx.attrs.get("transA", 0)):
        a = ctx.build("transpose", [a], perm=(1, 0))
    if int(ctx.attrs.get("transB", 0)):
        b = ctx.build("transpose", [b], perm=(1, 0))
    y = ctx.build("matmul", [a, b])
    yt: TensorType = y.type
    if alpha != 1.0:
        y = ctx.build("mul", [y, _scalar_const(ctx, alpha, yt, "alpha")])
    if c is None or beta == 0.0:
        return y
    ct = c.type
    if not isinstance(ct, TensorType) or ct.shape is None:
        raise Unsupported(f"Gemm C of type {ct}")
    try:
        full = broadcast_shapes("Gemm", yt.shape, ct.shape)  # type: ignore[arg-type]
    except ShapeError as e:
        raise Unsupported(str(e)) from None
    if full != yt.shape:
        raise Unsupported(f"Gemm C {ct} does not broadcast to {yt}")
    if beta != 1.0:
        c = ctx.build("mul", [c, _scalar_const(ctx, beta, ct, "beta")])
    return ctx.build("add", [y, c])
