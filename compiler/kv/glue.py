"""The few ONNX nodes a decode graph needs that are no IR op: the cache append (a concat whose
length is a sum of symbols, past + new, which IR dims cannot spell), the run-time lengths
(``Shape``) and the position ranges (``Range``). They are ``opaque`` nodes carrying their
NodeProto, like the ones the ONNX importer keeps: exported as they are, run by ONNX Runtime in
the interpreters.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..ir.node import Node, Value, constant, op
from ..ir.types import DType, TensorType

OPSET = 18
SCATTER_OPSET = 24  # TensorScatter, ONNX's KV-cache write


def onnx_op(op_type: str, inputs: Sequence[Value], out_types: Sequence[TensorType],
            opset: int = OPSET, **attrs: Any) -> tuple[Value, ...]:
    """An opaque node running the ONNX op ``op_type`` (default domain) on ``inputs``."""
    import onnx

    proto = onnx.helper.make_node(op_type, [f"i{k}" for k in range(len(inputs))],
                                  [f"o{k}" for k in range(len(out_types))], **attrs)
    n = Node.build("opaque", list(inputs), {
        "op_type": op_type, "domain": "", "proto": proto.SerializeToString(),
        "opsets": (("", opset),), "out_types": tuple(out_types),
        "present": (True,) * len(inputs), "captured": (), "call": None, "functions": ()})
    return n.outputs


def length(x: Value, axis: int) -> Value:
    """The run-time size of ``x`` along ``axis`` as an i64 scalar."""
    (shp,) = onnx_op("Shape", [x], [TensorType((1,), DType.i64)], start=axis, end=axis + 1)
    return op("reshape", shp, shape=())


def arange(start: Value, stop: Value, dim: str) -> Value:
    """i64 [dim] = start, start + 1, ..., stop - 1 (``dim`` names the length)."""
    one = constant(np.array(1, np.int64))
    (r,) = onnx_op("Range", [start, stop, one], [TensorType((dim,), DType.i64)])
    return r


def append(past: Value, new: Value, axis: int, total: str) -> Value:
    """concat(past, new) along ``axis``, whose length is the symbol ``total``."""
    t = new.type
    assert isinstance(t, TensorType) and t.shape is not None
    shape = list(t.shape)
    shape[axis] = total
    (out,) = onnx_op("Concat", [past, new], [t.with_shape(tuple(shape))], axis=axis)
    return out


def scatter(buffer: Value, new: Value, index: Value, axis: int) -> Value:
    """``buffer`` with ``new`` written along ``axis`` from slot ``index[b]`` of each row b
    (ONNX TensorScatter, linear mode; in place when the output is bound to the buffer)."""
    t = buffer.type
    assert isinstance(t, TensorType)
    (out,) = onnx_op("TensorScatter", [buffer, new, index], [t], opset=SCATTER_OPSET,
                     axis=axis, mode="linear")
    return out


def pad_to(x: Value, axis: int, size: int) -> Value:
    """``x`` zero-padded at the end of ``axis`` (a symbolic length) to ``size``."""
    t = x.type
    assert isinstance(t, TensorType) and t.shape is not None
    rank = len(t.shape)
    zeros = constant(np.zeros(rank + axis, np.int64))
    rest = constant(np.zeros(rank - axis - 1, np.int64))
    amount = op("reshape", op("sub", constant(np.array(size, np.int64)), length(x, axis)),
                shape=(1,))
    pads = op("concat", zeros, amount, rest, axis=0)
    shape = list(t.shape)
    shape[axis] = size
    (out,) = onnx_op("Pad", [x, pads], [t.with_shape(tuple(shape))])
    return out


def with_opset(meta: Any, opset: int) -> Any:
    """``meta`` with the default-domain opset raised to at least ``opset``."""
    from dataclasses import replace

    have = meta.opset("") or 0
    if have >= opset:
        return meta
    opsets = tuple((d, opset if d == "" else v) for d, v in meta.opsets)
    if not any(d == "" for d, _ in opsets):
        opsets = (("", opset), *opsets)
    return replace(meta, opsets=opsets)
