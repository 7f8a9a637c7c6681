"""Elementwise ops (numpy broadcasting). Each op's ``fn`` is written once over the operators
numpy, torch and z3 object arrays share, so the three semantics cannot drift apart."""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from ..ir.node import Attrs
from ..ir.types import DType, TensorType, ValueType
from .registry import (Example, OpDef, broadcast_shapes, register, same_dtype, tensor_types)


class Binary(OpDef):
    """Base of binary elementwise ops: same dtype on both sides, numpy broadcasting."""

    min_inputs = max_inputs = 2
    elementwise = True
    out_dtype: ClassVar[DType | None] = None  # None: the input dtype; DType.bool for comparisons

    @staticmethod
    def fn(a: Any, b: Any) -> Any:
        raise NotImplementedError

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        a, b = tensor_types(self.name, in_types)
        dt = same_dtype(self.name, [a, b])
        if a.shape is None or b.shape is None:
            raise ValueError("unknown rank")
        return (TensorType(broadcast_shapes(self.name, a.shape, b.shape), self.out_dtype or dt),)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        out = np.asarray(self.fn(xs[0], xs[1]))
        dt = self.out_dtype.to_numpy() if self.out_dtype else np.result_type(xs[0], xs[1])
        return (out.astype(dt, copy=False),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        return (self.fn(xs[0], xs[1]),)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        a = rng.standard_normal((2, 3, 4)).astype(np.float32)
        b = rng.standard_normal((3, 1)).astype(np.float32)
        return [Example([a, b]), Example([a, a[0]])]


class Unary(OpDef):
    """Base of unary elementwise ops keeping the input's type."""

    min_inputs = max_inputs = 1
    elementwise = True

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        (a,) = tensor_types(self.name, in_types)
        return (a,)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        return [Example([rng.standard_normal((2, 5)).astype(np.float32)])]


@register
class Add(Binary):
    name = "add"
    commutative = True
    onnx = ("Add",)
    aten = ("aten.add.Tensor",)

    @staticmethod
    def fn(a: Any, b: Any) -> Any:
        return a + b


@register
class Mul(Binary):
    name = "mul"
    commutative = True
    onnx = ("Mul",)
    aten = ("aten.mul.Tensor",)

    @staticmethod
    def fn(a: Any, b: Any) -> Any:
        return a * b


@register
class Relu(Unary):
    name = "relu"
    onnx = ("Relu",)
    aten = ("aten.relu.default",)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        return (np.maximum(xs[0], np.zeros((), xs[0].dtype)),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        import torch

        return (torch.relu(xs[0]),)

    def symbolic(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        from ..subst.axioms import uf

        return (np.vectorize(uf("relu"), otypes=[object])(xs[0]),)
