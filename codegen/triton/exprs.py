"""Triton expressions for pointwise IR ops, over fp32 / bool operands.

Each op declares its expression next to itself (``OpDef.triton_format`` / ``triton_expr``, the
operands it takes in ``triton_operands``): source text over the operand expressions (strings
naming fp32 values, or bool for predicates). Float values are computed in fp32 (like
TorchInductor); a node whose result dtype is narrower rounds through it (``.to(f16).to(f32)``)
so a fused chain rounds where the eager chain would. Only builtins of ``triton.language`` are
used (no ``@jit`` library helpers such as ``tl.sigmoid``), so kernels run the same on a GPU and in
the interpreter.

``fusible(node)`` says whether a node can live inside a generated kernel, and if not why.
"""
from __future__ import annotations

from graphopt.ir.node import Node, Value
from graphopt.ir.types import DType, TensorType
from graphopt.ops.elementwise import scalar_constant as _scalar_constant
from graphopt.ops.elementwise import triton_literal as literal  # noqa: F401 (kernels use it)
from graphopt.ops.registry import NotGenerated, get_op

# dtypes a kernel may load, compute on and store
KERNEL_DTYPES = frozenset({DType.f16, DType.bf16, DType.f32, DType.bool})
FLOATS = frozenset({DType.f16, DType.bf16, DType.f32})
TL_DTYPE = {DType.f16: "tl.float16", DType.bf16: "tl.bfloat16", DType.f32: "tl.float32",
            DType.bool: "tl.int1"}


def scalar_constant(v: Value) -> float | None:
    """The value of a finite one-element f16/bf16/f32 constant (inlined into kernels), else
    None."""
    return _scalar_constant(v, FLOATS)


def fusible(n: Node) -> str | None:
    """None when ``n`` can be computed inside a generated kernel, else the reason it cannot."""
    op = get_op(n.op)
    if not op.has_triton_expr:
        return f"op {n.op} has no Triton expression"
    for i, t in enumerate(list(n.out_types) + [v.type for v in n.inputs]):
        if not isinstance(t, TensorType) or t.shape is None:
            return f"{n.op}: value of unknown shape"
        if t.dtype not in KERNEL_DTYPES:
            return f"{n.op}: dtype {t.dtype.value} is not generated (f16/bf16/f32/bool only)"
    ins = [v.type.dtype for v in n.inputs]  # type: ignore[union-attr]
    if op.triton_operands == "bool" and any(d != DType.bool for d in ins):
        return f"{n.op} on non-bool operands"
    if op.triton_operands == "float" and any(d not in FLOATS for d in ins):
        return f"{n.op} on non-float operands"
    try:
        emit(n, ["a", "b", "c"][:len(n.inputs)])
    except NotGenerated as e:
        return f"{n.op}: {e}"
    return None


def emit(n: Node, xs: list[str]) -> str:
    """Source of ``n``'s value over operand expressions ``xs``, rounded to its dtype."""
    dtype = n.out_types[0].dtype  # type: ignore[union-attr]
    return round_to(get_op(n.op).triton_expr(xs, n), dtype)


def round_to(expr: str, dtype: DType) -> str:
    """fp32 value rounded to ``dtype`` and back (no-op for f32 and bool)."""
    if dtype in (DType.f16, DType.bf16):
        return f"({expr}).to({TL_DTYPE[dtype]}).to(tl.float32)"
    return expr
