"""Run-time values of symbolic dims, for ops whose attrs hold dims (reshape, expand).

A graph with symbolic dims (``batch``, ``seq``, ``batch*seq``) runs on concrete arrays; ops such as
``reshape {shape=(batch, seq, 12, 64)}`` need the symbols' values to build the concrete shape.
Whoever runs a graph binds them once from the graph inputs::

    with symbol_values(bind_symbols(g.input_types, arrays)):
        ...  # run the nodes

Without a binding, ops fall back on what the data itself tells (one unknown reshape dim is
inferred like -1; an expand dim equal to the input's dim is kept) and raise a clear error when
that is not enough.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator, Mapping, Sequence

from ..errors import ShapeError
from ..ir.types import Dim, TensorType, ValueType, dim_factors

_VALUES: contextvars.ContextVar[Mapping[str, int]] = contextvars.ContextVar(
    "graphopt_symbol_values", default={})


@contextlib.contextmanager
def symbol_values(values: Mapping[str, int]) -> Iterator[None]:
    """Bind symbol names to ints for the ops run inside the block (nests; inner wins)."""
    merged = dict(_VALUES.get())
    merged.update(values)
    tok = _VALUES.set(merged)
    try:
        yield
    finally:
        _VALUES.reset(tok)


def bound_symbols() -> Mapping[str, int]:
    return _VALUES.get()


def bind_symbols(types: Sequence[ValueType], values: Sequence[Any]) -> dict[str, int]:
    """Symbol values read off concrete inputs: ``types[i]`` is the declared type of an input,
    ``values[i]`` its value (numpy array, torch tensor, python scalar or nested list). Plain
    symbols are bound; a conflicting value raises ShapeError. Compound dims (``a*b``) are not
    solved for."""
    import numpy as np

    out: dict[str, int] = {}
    for t, x in zip(types, values):
        if not isinstance(t, TensorType) or t.shape is None:
            continue
        shp = tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
        if len(shp) != len(t.shape):
            raise ShapeError(f"input of type {t} got an array of shape {list(shp)}")
        for d, n in zip(t.shape, shp):
            if isinstance(d, str) and "*" not in d:
                if out.get(d, int(n)) != int(n):
                    raise ShapeError(f"symbol {d!r} is bound to both {out[d]} and {int(n)}")
                out[d] = int(n)
    return out


def eval_dim(d: Dim, values: Mapping[str, int] | None = None) -> int | None:
    """The int value of a dim under the bound symbols (None when a factor is unbound)."""
    if isinstance(d, int):
        return d
    vals = bound_symbols() if values is None else values
    coef, syms = dim_factors(d)
    n = coef
    for s in syms:
        if s not in vals:
            return None
        n *= vals[s]
    return n
