"""Values without numeric ranges: 0/1 masks, string tensors, ONNX sequences and optionals."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..ir.types import DType, OpaqueType
from .needs import Shape, inputs_needed

WORDS = ("a", "b", "c", "alpha", "beta", "gamma", "Hello", "world", "x1", "", "onnx", "Graph")
SEQ_LEN = (1, 4)  # sequences hold 1..3 tensors
SEQ_DIM = (1, 5)  # dims a sequence's element type leaves open


def mask(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """A random 0/1 mask with at least one 1 in every row (last axis)."""
    m = rng.integers(0, 2, size=shape).astype(bool)
    if m.ndim == 0:
        return np.array(True)
    if m.shape[-1] == 0:
        return m
    rows = m.reshape(-1, m.shape[-1])
    keep = rng.integers(0, m.shape[-1], size=rows.shape[0])
    rows[np.arange(rows.shape[0]), keep] = True
    return rows.reshape(shape)


def draw_strings(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """A string tensor (numpy object array of str) of short words."""
    words = np.array(WORDS, dtype=object)
    return np.asarray(words[rng.integers(0, len(words), size=shape)], dtype=object)


@dataclass(frozen=True)
class SeqPlan:
    """What every sequence of one generation shares: its length and the shape of elements whose
    type leaves it open (SequenceMap zips sequences; ConcatFromSequence and elementwise bodies
    need one shape)."""

    length: int
    shape: tuple[int, ...]

    @staticmethod
    def draw(rng: np.random.Generator) -> "SeqPlan":
        return SeqPlan(int(rng.integers(*SEQ_LEN)),
                       tuple(int(d) for d in rng.integers(*SEQ_DIM, size=2)))


def draw_opaque(name: str, t: OpaqueType, rng: np.random.Generator, sizes: Mapping[str, int],
                plan: SeqPlan) -> Any:
    """A value of an ONNX sequence or optional type (its ``TypeProto``): a list of tensors, or
    the optional's element. Maps and types of unknown element type raise ``InputsNeeded``."""
    import onnx

    tp = onnx.TypeProto()
    tp.ParseFromString(t.proto)
    return _of_type(name, tp, rng, sizes, plan)


def _of_type(name: str, tp: Any, rng: np.random.Generator, sizes: Mapping[str, int],
             plan: SeqPlan) -> Any:
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        return _tensor(name, tp.tensor_type, rng, sizes, plan.shape)
    if kind == "sequence_type":
        return [_of_type(name, tp.sequence_type.elem_type, rng, sizes, plan)
                for _ in range(plan.length)]
    if kind == "optional_type":
        return _of_type(name, tp.optional_type.elem_type, rng, sizes, plan)
    raise inputs_needed(name, f"the check draws no values of ONNX type {kind or 'unknown'}")


def _tensor(name: str, tt: Any, rng: np.random.Generator, sizes: Mapping[str, int],
            open_shape: tuple[int, ...]) -> np.ndarray:
    """A tensor of an ONNX tensor type: ``open_shape`` when the type has no shape; dims it
    leaves open get a symbol's size when the graph's inputs gave that symbol one, else the
    open shape's dim at that position (1..4)."""
    dt = DType.from_onnx(tt.elem_type)
    shape = open_shape
    if tt.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else
                      sizes.get(d.dim_param, open_shape[i % len(open_shape)])
                      for i, d in enumerate(tt.shape.dim))
    if dt == DType.string:
        return draw_strings(rng, shape)
    if dt == DType.bool:
        return rng.integers(0, 2, size=shape).astype(bool)
    if dt.is_int:
        return rng.integers(1, 8, size=shape).astype(dt.to_numpy())
    if dt in (DType.f16, DType.f32, DType.f64):
        return rng.standard_normal(shape).astype(dt.to_numpy())
    raise inputs_needed(name, f"the check draws no sequence elements of dtype {dt.value}")
