"""ONNX op types that are no op of graphopt's, lowered at import.

What an ONNX op type means at import is the frontend's knowledge: these types have no IR op
(nothing declares them in ``OpDef.onnx``), so the importer lowers them here, before asking the
ops: Dropout at inference -> its input; Shape / Size / Range / ConstantOfShape on static or
constant inputs -> constants (ConstantOfShape of a symbolic shape -> ``expand`` of the scalar).
A lowering raises ``Unsupported`` (the node stays opaque, the reason is reported) outside what it
handles. Run-time shape computations these cannot fold are followed by ``onnx_symbolic``.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ..ir.node import Value
from ..ir.types import TensorType
from ..ops.registry import Unsupported
from ..ops.shape import build, onnx_dims, onnx_only_attrs

if TYPE_CHECKING:
    from .onnx_lift import ImportCtx

__all__ = ["Lowering", "lowering_for"]

Lowering = Callable[["ImportCtx"], Sequence[Value]]
_LOWERINGS: dict[str, Lowering] = {}


def lowering_for(op_type: str) -> Lowering | None:
    """The frontend's own lowering of a default-domain ONNX op type, if it has one."""
    return _LOWERINGS.get(op_type)


def _lowers(op_type: str) -> Callable[[Lowering], Lowering]:
    def reg(fn: Lowering) -> Lowering:
        _LOWERINGS[op_type] = fn
        return fn
    return reg


@_lowers("Dropout")
def _dropout(ctx: "ImportCtx") -> Sequence[Value]:
    if ctx.num_outputs != 1:
        raise Unsupported("Dropout with its mask output")
    x = ctx.inputs[0]
    if ctx.opset < 12:
        onnx_only_attrs(ctx, {"ratio", "is_test", "consumed_inputs"})
    if ctx.opset < 7:
        if not int(ctx.attrs.get("is_test", 0)):
            raise Unsupported("Dropout-6 in training mode (is_test=0)")
    if ctx.opset >= 12:
        onnx_only_attrs(ctx, {"seed"})
        if len(ctx.inputs) > 2 and ctx.inputs[2] is not None:
            tm = ctx.const(2)
            if tm is None:
                raise Unsupported("Dropout training_mode is not a constant")
            if bool(np.asarray(tm).reshape(-1)[0]):
                raise Unsupported("Dropout in training mode")
    return [x]  # type: ignore[list-item]


@_lowers("Shape")
def _shape(ctx: "ImportCtx") -> Sequence[Value]:
    if not ctx.inputs or ctx.inputs[0] is None:
        raise Unsupported("Shape without input")
    t = ctx.inputs[0].type
    if not isinstance(t, TensorType) or t.shape is None:
        raise Unsupported(f"Shape of {t}")
    onnx_only_attrs(ctx, {"start", "end"})
    r = len(t.shape)
    start = int(ctx.attrs.get("start", 0))
    end = int(ctx.attrs.get("end", r))
    start = min(max(start + r if start < 0 else start, 0), r)
    end = min(max(end + r if end < 0 else end, 0), r)
    dims = t.shape[start:end]
    if not all(isinstance(d, int) for d in dims):
        raise Unsupported(f"Shape of {t}: symbolic dims {list(dims)}")
    return [ctx.constant(np.array(dims, dtype=np.int64))]


@_lowers("Size")
def _size(ctx: "ImportCtx") -> Sequence[Value]:
    t = ctx.inputs[0].type  # type: ignore[union-attr]
    if not isinstance(t, TensorType) or not t.is_static:
        raise Unsupported(f"Size of {t}")
    return [ctx.constant(np.array(t.static_numel(), dtype=np.int64))]


@_lowers("Range")
def _range(ctx: "ImportCtx") -> Sequence[Value]:
    vals = []
    for i in range(3):
        if i >= len(ctx.inputs) or ctx.inputs[i] is None:
            raise Unsupported("Range with a missing input")
        a = ctx.const(i)
        if a is None:
            raise Unsupported("Range with non-constant inputs")
        vals.append(np.asarray(a).reshape(()))
    start, limit, delta = vals
    dt = start.dtype
    if delta == 0:
        raise Unsupported("Range with delta 0")
    n = max(int(math.ceil((float(limit) - float(start)) / float(delta))), 0)
    if dt.kind in "iu":
        out = (int(start) + np.arange(n, dtype=np.int64) * int(delta)).astype(dt)
    else:
        # ONNX: start + i * delta, in the input type
        out = (start + np.arange(n).astype(dt) * delta).astype(dt)
    return [ctx.constant(out)]


@_lowers("ConstantOfShape")
def _constant_of_shape(ctx: "ImportCtx") -> Sequence[Value]:
    onnx_only_attrs(ctx, {"value"})
    shape = onnx_dims(ctx, 0, "shape")
    if shape is None:
        raise Unsupported("ConstantOfShape without input")
    value = ctx.attrs.get("value")
    v = np.zeros((1,), np.float32) if value is None else np.asarray(value).reshape(-1)
    if v.size != 1:
        raise Unsupported(f"ConstantOfShape value with {v.size} elements")
    if any(isinstance(d, int) and d < 0 for d in shape):
        raise Unsupported(f"ConstantOfShape of shape {shape}")
    if all(isinstance(d, int) for d in shape):
        return [ctx.constant(np.full(shape, v[0], dtype=v.dtype))]
    # a symbolic shape: the scalar broadcast to it
    return [build(ctx, "expand", [ctx.constant(np.asarray(v[0], dtype=v.dtype))],
                  shape=tuple(shape))]
