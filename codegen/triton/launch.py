"""Helpers the generated launchers import (kept tiny: the kernels themselves are generated)."""
from __future__ import annotations

from typing import Any, Sequence


def bstrides(t: Any, shape: Sequence[int]) -> tuple[int, ...]:
    """Element strides of tensor ``t`` numpy-broadcast into ``shape`` (0 along broadcast dims)."""
    return tuple(t.expand(tuple(shape)).stride())


def next_pow2(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
