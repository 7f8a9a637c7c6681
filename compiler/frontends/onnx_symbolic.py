"""Symbolic values of small integer tensors during ONNX import.

Models exported with dynamic axes compute reshape / expand targets at run time:
``Shape -> Gather -> Unsqueeze -> Concat -> Reshape``. The importer follows such chains here: a
0-D or 1-D integer tensor whose elements are known as dims (ints, symbols such as ``seq``, products
such as ``batch*seq``) gets a ``SymValue``; op importers read it through ``ImportCtx.dims(i)`` and
turn the target into IR attrs (symbols included), so the chain itself becomes dead code.

Elements are ``int`` (any sign: a reshape target holds -1), ``str`` (a dim symbol or product of
symbols, always >= 0) or ``None`` (unknown). Sums of symbols are not representable: they are
unknown.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..ir.types import Dim, DType, TensorType, ValueType, dim_divide, dim_product

__all__ = ["SymValue", "Elem", "from_const", "propagate", "range_length", "tracks",
           "MAX_ELEMS"]

Elem = int | str | None
MAX_ELEMS = 64  # longer int tensors are not shape computations


@dataclass(frozen=True)
class SymValue:
    """A 0-D (``shape == ()``) or 1-D int / bool tensor with per-element knowledge."""

    dtype: DType
    shape: tuple[int, ...]
    elems: tuple[Elem, ...]

    def __post_init__(self) -> None:
        n = self.shape[0] if self.shape else 1
        if len(self.shape) > 1 or len(self.elems) != n:
            raise ValueError(f"SymValue shape {self.shape} with {len(self.elems)} elements")

    @property
    def known(self) -> bool:
        return all(e is not None for e in self.elems)

    def dims(self) -> tuple[Dim, ...] | None:
        """All elements (flattened; a 0-D value gives one), or None when one is unknown."""
        if not self.known:
            return None
        return tuple(self.elems)  # type: ignore[arg-type]

    def ints(self) -> np.ndarray | None:
        """The concrete array when every element is an int (else None)."""
        if not all(isinstance(e, int) for e in self.elems):
            return None
        try:
            np_dt = self.dtype.to_numpy()
            arr = np.array(self.elems, dtype=np.int64)
        except (TypeError, OverflowError):  # no numpy dtype, or beyond int64
            return None
        return arr.astype(np_dt).reshape(self.shape)

    @property
    def is_scalar_like(self) -> bool:
        return self.shape in ((), (1,))


_INT_TYPES = {DType.i8, DType.i16, DType.i32, DType.i64, DType.u8, DType.u16, DType.u32,
              DType.u64}


def from_const(arr: np.ndarray) -> SymValue | None:
    """A small int / bool constant as a fully known SymValue."""
    a = np.asarray(arr)
    if a.ndim > 1 or a.size > MAX_ELEMS or a.dtype.kind not in "iub":
        return None
    dt = DType.from_numpy(a.dtype)
    return SymValue(dt, tuple(int(d) for d in a.shape), tuple(int(x) for x in a.reshape(-1)))


# ---- element arithmetic -------------------------------------------------------------------------

def _nonneg(e: Elem) -> bool:
    return isinstance(e, str) or (isinstance(e, int) and e >= 0)


def _mul(a: Elem, b: Elem) -> Elem:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    if a == 0 or b == 0:
        return 0
    if a is None or b is None or not (_nonneg(a) and _nonneg(b)):
        return None
    return dim_product([a, b])


def _div(a: Elem, b: Elem) -> Elem:
    if a is None or b is None or b == 0:
        return None
    if isinstance(a, int) and isinstance(b, int):
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b > 0) else -q  # integer Div truncates toward zero
    if not (_nonneg(a) and _nonneg(b)):
        return None
    return dim_divide(a, b)


def _add(a: Elem, b: Elem) -> Elem:
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    if a == 0:
        return b
    if b == 0:
        return a
    return None


def _sub(a: Elem, b: Elem) -> Elem:
    if isinstance(a, int) and isinstance(b, int):
        return a - b
    if b == 0:
        return a
    if a is not None and a == b:
        return 0
    return None


def _equal(a: Elem, b: Elem) -> Elem:
    if a is None or b is None:
        return None
    if isinstance(a, int) and isinstance(b, int):
        return int(a == b)
    if a == b:
        return 1
    # a symbol is >= 0: it never equals a negative int
    if (isinstance(a, int) and a < 0) or (isinstance(b, int) and b < 0):
        return 0
    return None


def _max(a: Elem, b: Elem) -> Elem:
    if isinstance(a, int) and isinstance(b, int):
        return max(a, b)
    if a is not None and a == b:
        return a
    for x, y in ((a, b), (b, a)):
        if isinstance(x, str) and isinstance(y, int) and y <= 0:
            return x
    return None


def _min(a: Elem, b: Elem) -> Elem:
    if isinstance(a, int) and isinstance(b, int):
        return min(a, b)
    if a is not None and a == b:
        return a
    for x, y in ((a, b), (b, a)):
        if isinstance(x, str) and isinstance(y, int) and y <= 0:
            return y
    return None


_BINARY: dict[str, Callable[[Elem, Elem], Elem]] = {
    "Mul": _mul, "Div": _div, "Add": _add, "Sub": _sub, "Equal": _equal, "Max": _max,
    "Min": _min,
}


def _broadcast(vals: Sequence[SymValue]) -> tuple[tuple[int, ...], list[tuple[Elem, ...]]] | None:
    """Shapes () / (1,) / (n,) broadcast elementwise; rows of aligned elements."""
    shape: tuple[int, ...] = ()
    for v in vals:
        if v.shape and (not shape or shape == (1,)):
            shape = v.shape
        elif v.shape and v.shape != (1,) and v.shape != shape:
            return None
    n = shape[0] if shape else 1
    cols = [v.elems * n if len(v.elems) == 1 else v.elems for v in vals]
    return shape, list(zip(*cols))


# ---- propagation --------------------------------------------------------------------------------

def _axes(attrs: dict[str, Any], ins: Sequence[SymValue | None], i: int) -> list[int] | None:
    if "axes" in attrs:
        return [int(a) for a in attrs["axes"]]
    if i < len(ins) and ins[i] is not None:
        arr = ins[i].ints()  # type: ignore[union-attr]
        return None if arr is None else [int(a) for a in arr.reshape(-1)]
    return None


def propagate(op_type: str, attrs: dict[str, Any], ins: Sequence[SymValue | None],
              in_types: Sequence[ValueType | None], n_out: int) -> list[SymValue | None] | None:
    """The SymValues of a default-domain node's outputs (None: nothing is known).

    ``ins``: the inputs' SymValues (None where unknown or absent), ``in_types``: their IR types
    (Shape / Size read dims from these)."""
    fn = _RULES.get(op_type)
    if fn is None or n_out != 1:
        return None
    try:
        out = fn(attrs, list(ins), list(in_types))
    except (ValueError, TypeError, IndexError, KeyError, OverflowError, ZeroDivisionError):
        return None
    if out is None or len(out.elems) > MAX_ELEMS or all(e is None for e in out.elems):
        return None
    return [out]


def _shape(attrs: dict[str, Any], ins: list[SymValue | None], tys: list[ValueType | None]
           ) -> SymValue | None:
    t = tys[0] if tys else None
    if not isinstance(t, TensorType) or t.shape is None:
        return None
    r = len(t.shape)
    start = int(attrs.get("start", 0))
    end = int(attrs.get("end", r))
    start = min(max(start + r if start < 0 else start, 0), r)
    end = min(max(end + r if end < 0 else end, 0), r)
    dims = t.shape[start:end]
    return SymValue(DType.i64, (len(dims),), tuple(dims))


def _size(attrs: dict[str, Any], ins: list[SymValue | None], tys: list[ValueType | None]
          ) -> SymValue | None:
    t = tys[0] if tys else None
    if not isinstance(t, TensorType) or t.shape is None:
        return None
    return SymValue(DType.i64, (), (dim_product(t.shape),))


def _gather(attrs: dict[str, Any], ins: list[SymValue | None], tys: list[ValueType | None]
            ) -> SymValue | None:
    x, idx = ins[0], ins[1]
    if x is None or idx is None or len(x.shape) != 1 or int(attrs.get("axis", 0)) not in (0, -1):
        return None
    arr = idx.ints()
    if arr is None:
        return None
    n = x.shape[0]
    picked = []
    for i in arr.reshape(-1):
        i = int(i)
        if not -n <= i < n:
            return None
        picked.append(x.elems[i])
    return SymValue(x.dtype, idx.shape, tuple(picked))


def _slice(attrs: dict[str, Any], ins: list[SymValue | None], tys: list[ValueType | None]
           ) -> SymValue | None:
    x = ins[0]
    if x is None or len(x.shape) != 1:
        return None
    if "starts" in attrs:  # Slice-1
        starts, ends = list(attrs["starts"]), list(attrs["ends"])
        axes = list(attrs.get("axes", [0]))
        steps = [1]
    else:
        vals = []
        for i in range(1, 5):
            v = ins[i] if i < len(ins) else None
            if v is None:
                if i < 3:
                    return None
                vals.append(None)
                continue
            a = v.ints()
            if a is None:
                return None
            vals.append([int(e) for e in a.reshape(-1)])
        starts, ends, axes, steps = vals[0], vals[1], vals[2] or [0], vals[3] or [1]
    if len(starts) != 1 or len(ends) != 1 or axes not in ([0], [-1]) or len(steps) != 1:
        return None
    s, e, st = int(starts[0]), int(ends[0]), int(steps[0])
    if st == 0:
        return None
    n = x.shape[0]
    # ONNX clamping matches Python slicing for these ranges; huge ints mean "to the end"
    clip = 2 * n + 1
    s = max(min(s, clip), -clip)
    e = max(min(e, clip), -clip)
    picked = x.elems[slice(s, e, st)]
    return SymValue(x.dtype, (len(picked),), tuple(picked))


def _squeeze(attrs: dict[str, Any], ins: list[SymValue | None], tys: list[ValueType | None]
             ) -> SymValue | None:
    x = ins[0]
    if x is None or x.shape != (1,):
        return None
    axes = _axes(attrs, ins, 1)
    if axes is not None and axes not in ([0], [-1]):
        return None
    return SymValue(x.dtype, (), x.elems)


def _unsqueeze(attrs: dict[str, Any], ins: list[SymValue | None], tys: list[ValueType | None]
               ) -> SymValue | None:
    x = ins[0]
    if x is None or x.shape != ():
        return None
    axes = _axes(attrs, ins, 1)
    if axes not in ([0], [-1]):
        return None
    return SymValue(x.dtype, (1,), x.elems)


def _concat(attrs: dict[str, Any], ins: list[SymValue | None], tys: list[ValueType | None]
            ) -> SymValue | None:
    if int(attrs.get("axis", 0)) not in (0, -1):
        return None
    elems: list[Elem] = []
    dt = None
    for k, v in enumerate(ins):
        t = tys[k] if k < len(tys) else None
        if v is None:
            # an unknown piece of known length keeps the others known
            if not isinstance(t, TensorType) or t.shape is None or len(t.shape) != 1 or \
                    not isinstance(t.shape[0], int):
                return None
            elems.extend([None] * t.shape[0])
            continue
        if len(v.shape) != 1:
            return None
        dt = dt or v.dtype
        elems.extend(v.elems)
    if dt is None:
        return None
    return SymValue(dt, (len(elems),), tuple(elems))


def _cast(attrs: dict[str, Any], ins: list[SymValue | None], tys: list[ValueType | None]
          ) -> SymValue | None:
    x = ins[0]
    if x is None:
        return None
    to = DType.from_onnx(int(attrs["to"]))
    if to in _INT_TYPES:
        return SymValue(to, x.shape, x.elems)
    if to == DType.bool:  # a symbol may be 0: its truth is unknown
        return SymValue(to, x.shape, tuple(int(bool(e)) if isinstance(e, int) else None
                                           for e in x.elems))
    if to.is_float and all(isinstance(e, int) for e in x.elems):
        return SymValue(to, x.shape, x.elems)  # known ints: the importer makes it a constant
    return None


def _identity(attrs: dict[str, Any], ins: list[SymValue | None], tys: list[ValueType | None]
              ) -> SymValue | None:
    return ins[0]


def _reshape(attrs: dict[str, Any], ins: list[SymValue | None], tys: list[ValueType | None]
             ) -> SymValue | None:
    x = ins[0]
    tgt = ins[1] if len(ins) > 1 else None
    if x is None or tgt is None:
        return None
    arr = tgt.ints()
    if arr is None:
        return None
    t = [int(d) for d in arr.reshape(-1)]
    n = len(x.elems)
    if t == []:
        return SymValue(x.dtype, (), x.elems) if n == 1 else None
    if len(t) == 1 and t[0] in (-1, n) or (len(t) == 1 and t[0] == 0 and x.shape == (n,)):
        return SymValue(x.dtype, (n,), x.elems)
    return None


def _binary(op_type: str) -> Callable[..., SymValue | None]:
    fn = _BINARY[op_type]

    def rule(attrs: dict[str, Any], ins: list[SymValue | None], tys: list[ValueType | None]
             ) -> SymValue | None:
        a, b = ins[0], ins[1]
        if a is None or b is None:
            return None
        if op_type != "Equal" and (a.dtype not in _INT_TYPES or b.dtype != a.dtype):
            return None
        bc = _broadcast([a, b])
        if bc is None:
            return None
        shape, rows = bc
        dt = DType.bool if op_type == "Equal" else a.dtype
        return SymValue(dt, shape, tuple(fn(x, y) for x, y in rows))
    return rule


def _neg(attrs: dict[str, Any], ins: list[SymValue | None], tys: list[ValueType | None]
         ) -> SymValue | None:
    x = ins[0]
    if x is None:
        return None
    return SymValue(x.dtype, x.shape, tuple(-e if isinstance(e, int) else None for e in x.elems))


def _where(attrs: dict[str, Any], ins: list[SymValue | None], tys: list[ValueType | None]
           ) -> SymValue | None:
    c, a, b = ins[0], ins[1], ins[2]
    if c is None or a is None or b is None or a.dtype != b.dtype:
        return None
    bc = _broadcast([c, a, b])
    if bc is None:
        return None
    shape, rows = bc
    return SymValue(a.dtype, shape, tuple(None if k is None else (x if k else y)
                                          for k, x, y in rows))


def _constant_of_shape(attrs: dict[str, Any], ins: list[SymValue | None],
                       tys: list[ValueType | None]) -> SymValue | None:
    s = ins[0]
    if s is None or s.shape != (1,) or not isinstance(s.elems[0], int):
        return None
    n = s.elems[0]
    value = attrs.get("value")
    v = np.zeros((1,), np.float32) if value is None else np.asarray(value).reshape(-1)
    if v.size != 1 or v.dtype.kind not in "iub" or n > MAX_ELEMS:
        return None
    return SymValue(DType.from_numpy(v.dtype), (n,), (int(v[0]),) * n)


_RULES: dict[str, Callable[..., SymValue | None]] = {
    "Shape": _shape, "Size": _size, "Gather": _gather, "Slice": _slice, "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze, "Concat": _concat, "Cast": _cast, "Identity": _identity,
    "Reshape": _reshape, "Neg": _neg, "Where": _where, "ConstantOfShape": _constant_of_shape,
    **{k: _binary(k) for k in _BINARY},
}


def tracks(op_type: str) -> bool:
    """Whether ``propagate`` has a rule for this (default-domain) ONNX op type."""
    return op_type in _RULES


def range_length(ins: Sequence[SymValue | None]) -> Dim | None:
    """The length of ``Range(start, limit, delta)`` when it is a known dim."""
    if len(ins) < 3 or any(v is None or v.shape not in ((), (1,)) for v in ins[:3]):
        return None
    start, limit, delta = (v.elems[0] for v in ins[:3])  # type: ignore[union-attr]
    if isinstance(start, int) and isinstance(limit, int) and isinstance(delta, int) and delta:
        return max(0, -(-(limit - start) // delta))
    if start == 0 and delta == 1 and isinstance(limit, str):
        return limit
    return None
