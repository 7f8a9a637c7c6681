"""What the readers of an input require of its values, and drawing a value that meets all of it.

A ``Need`` is one reader's requirement: a range (integers ``[lo, hi)``, floats ``[lo, hi]``;
bounds may be arrays, per position, broadcast from the value's last axis), values pairwise
distinct modulo ``unique_mod`` (axes of a tensor of that rank), or a joint generator ``draw``
for values whose elements must agree with each other (a reshape target that factors the element
count, split sizes summing to a dim). ``draw_value`` intersects the needs of one input and draws
inside them; when they cannot be met it raises ``InputsNeeded``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import GraphOptError

Shape = tuple[int, ...]
Draw = Callable[[np.random.Generator, Shape], np.ndarray]
INT_DEFAULT_RANGE = (1, 8)
DRAW_TRIES = 32

HOW_TO_PASS = ("pass the check's inputs yourself: --inputs FILE.npz (graphopt optimize), "
               "inputs={name: array} (graphopt.optimize), or turn the check off")


class InputsNeeded(GraphOptError):
    """The check cannot generate valid values for an input: the user must pass inputs. Not a
    ``CheckError`` (nothing was found to differ): the CLI reports it as a usage error."""


def inputs_needed(name: str, why: str) -> InputsNeeded:
    """The one-line error for input ``name`` (why it cannot be generated, how to pass it)."""
    return InputsNeeded(f"cannot generate valid values ({why}); {HOW_TO_PASS}",
                        where=f"input {name!r}")


class Unmeetable(Exception):
    """A reader's requirement no value of the input's type can meet (e.g. more distinct axes
    than the tensor has); the message says which."""


@dataclass(frozen=True)
class Need:
    """One reader's requirement on an input's values (see the module docstring)."""

    why: str
    lo: Any = None
    hi: Any = None
    unique_mod: int | None = None
    draw: Draw | None = None

    @property
    def positional(self) -> bool:
        """Does it depend on where an element sits (not only on its value)?"""
        return (self.draw is not None or self.unique_mod is not None or np.ndim(self.lo) > 0
                or np.ndim(self.hi) > 0)

    def elementwise(self) -> "Need | None":
        """What still holds for each element alone (reached through ops that move elements):
        the loosest scalar range; None when nothing does."""
        lo = None if self.lo is None else np.min(self.lo)
        hi = None if self.hi is None else np.max(self.hi)
        if lo is None and hi is None:
            return None
        return Need(self.why, lo, hi)

    def reshaped(self, at: Shape, to: Shape) -> "Need":
        """The need stated for the value as its reader sees it (shape ``at``) restated for the
        input (shape ``to``, same elements in the same order)."""
        if at == to:
            return self

        def move(b: Any) -> Any:
            return b if b is None or np.ndim(b) == 0 else np.broadcast_to(b, at).reshape(to)

        draw = self.draw
        if draw is not None:
            inner = draw
            draw = lambda rng, shape: np.asarray(inner(rng, at)).reshape(to)  # noqa: E731
        return replace(self, lo=move(self.lo), hi=move(self.hi), draw=draw)


def meets(v: np.ndarray, n: Need, integer: bool) -> bool:
    """Does the value ``v`` meet ``n``?"""
    if n.lo is not None and not np.all(v >= n.lo):
        return False
    if n.hi is not None and not np.all(v < n.hi if integer else v <= n.hi):
        return False
    if n.unique_mod:
        return len({int(x) % n.unique_mod for x in v.ravel()}) == v.size
    return True


def draw_value(name: str, dtype: np.dtype, shape: Shape, needs: Sequence[Need],
               rng: np.random.Generator) -> np.ndarray:
    """A value of ``dtype[shape]`` meeting every need (numbers only; the caller handles the
    inputs without needs)."""
    integer = np.issubdtype(dtype, np.integer) or dtype == np.bool_
    why = "; ".join(dict.fromkeys(n.why for n in needs))
    draws = [n for n in needs if n.draw is not None]
    if draws:
        for _ in range(DRAW_TRIES):
            v = np.asarray(draws[0].draw(rng, shape)).astype(dtype)
            if v.shape == shape and all(meets(v, n, integer) for n in needs):
                return v
        raise inputs_needed(name, f"no value found that is {why}")
    lo, hi = _bounds(needs, shape)
    unique = [n.unique_mod for n in needs if n.unique_mod]
    if unique:
        return _distinct(name, why, dtype, shape, lo, hi, min(unique), rng)
    if integer:
        lo = np.broadcast_to(np.asarray(0 if lo is None else lo, np.int64), shape)
        hi = np.broadcast_to(np.asarray(lo + INT_DEFAULT_RANGE[1] if hi is None else hi,
                                        np.int64), shape)
        if np.any(lo >= hi):
            raise inputs_needed(name, f"the ranges of what it must be conflict: {why}")
        return rng.integers(lo, hi, size=shape).astype(dtype) if shape else \
            np.asarray(rng.integers(lo, hi)).astype(dtype)
    z = np.abs(rng.standard_normal(shape))
    if lo is not None and hi is not None:
        if np.any(np.asarray(lo) > np.asarray(hi)):
            raise inputs_needed(name, f"the ranges of what it must be conflict: {why}")
        v = lo + rng.uniform(0.0, 1.0, shape) * (np.asarray(hi) - np.asarray(lo))
    elif lo is not None:
        v = lo + z
    else:
        v = hi - z
    return np.asarray(v).astype(dtype)


def _bounds(needs: Sequence[Need], shape: Shape) -> tuple[Any, Any]:
    """The intersection of the needs' ranges (None: unbounded on that side)."""
    lo: Any = None
    hi: Any = None
    for n in needs:
        if n.lo is not None:
            lo = n.lo if lo is None else np.maximum(lo, n.lo)
        if n.hi is not None:
            hi = n.hi if hi is None else np.minimum(hi, n.hi)
    return lo, hi


def _distinct(name: str, why: str, dtype: np.dtype, shape: Shape, lo: Any, hi: Any, mod: int,
              rng: np.random.Generator) -> np.ndarray:
    """Pairwise distinct values modulo ``mod`` in [lo, hi) (scalar bounds: axes)."""
    lo_s = int(np.max(lo)) if lo is not None else 0
    hi_s = int(np.min(hi)) if hi is not None else mod
    k = int(np.prod(shape)) if shape else 1
    pool: dict[int, int] = {}
    for v in range(lo_s, hi_s):
        pool.setdefault(v % mod, v)
    if len(pool) < k:
        raise inputs_needed(name, f"{k} distinct values are needed but only {len(pool)} "
                                  f"exist ({why})")
    pick = rng.choice(np.array(sorted(pool.values()), np.int64), size=k, replace=False)
    return pick.reshape(shape).astype(dtype)
