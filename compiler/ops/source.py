"""Graph sources: graph inputs and constants."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import ShapeError
from ..ir.node import Attrs, ConstData
from ..ir.types import ValueType, numpy_to_torch
from .registry import Cost, Example, OpDef, register


@register
class Input(OpDef):
    """A graph input. attrs: name (str), type (TensorType | OpaqueType), optionally default
    (ConstData: the value when the input is not fed -- an ONNX initializer that is also a graph
    input at IR >= 4, which ONNX Runtime lets its users override)."""

    name = "input"
    cost_class = "source"
    max_inputs = 0

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        return (attrs["type"],)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        raise ShapeError(f"input {attrs['name']!r} has no value; pass it to the interpreter")

    def cost(self, in_types, out_types, attrs) -> Cost:  # type: ignore[override]
        return Cost(0.0, 0.0, 0)


@register
class Constant(OpDef):
    """A constant tensor. attrs: data (ConstData, hashed by identity)."""

    name = "constant"
    cost_class = "source"
    max_inputs = 0
    onnx = ("Constant",)

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        d = attrs["data"]
        if not isinstance(d, ConstData):
            raise ShapeError("constant: attr 'data' must be ConstData")
        return (d.type,)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        return (attrs["data"].array,)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        return (numpy_to_torch(attrs["data"].array),)

    def symbolic(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        """The data as Python numbers, -inf as the z3 constant standing for it
        (ops/symbolic.py: masks)."""
        out = np.asarray(attrs["data"].array).astype(object)
        if out.dtype == object and out.size and np.asarray(attrs["data"].array).dtype.kind == "f":
            from .symbolic import is_neg_inf, neg_inf

            flat = out.reshape(-1)
            for i, v in enumerate(flat):
                if is_neg_inf(v):
                    flat[i] = neg_inf()
        return (out,)

    def cost(self, in_types, out_types, attrs) -> Cost:  # type: ignore[override]
        return Cost(0.0, 0.0, 0)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        return [Example([], {"data": ConstData(rng.standard_normal((2, 3)).astype(np.float32))})]
