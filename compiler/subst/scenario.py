"""Scenarios: an op set plus a few input tensors of small symbolic shapes to enumerate over.

TASO enumerates one op set over one set of inputs. Enumerating every op over every input at 4 ops
is far too many graphs for Python, and most of them mix ops that have nothing to say to each
other, so the generator runs several focused scenarios (TASO's linear-algebra core, a
convolution one, an elementwise one and transformer ones) and merges their rules.

Shapes use dim variables (``a``, ``b``, ... see dims.py); each op spec lists the attributes it
is tried with for given input types.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from ..ir.types import TensorType
from ..rewrite.dims import VAR_PRIMES, DimExpr, representable

AttrGen = Callable[[tuple[TensorType, ...]], list[dict[str, Any]]]


def _none(ts: tuple[TensorType, ...]) -> list[dict[str, Any]]:
    return [{}]


@dataclass(frozen=True)
class OpSpec:
    """One op of a scenario: its name, how many inputs it takes here, and its attr choices
    (whether its operands commute is the op's own ``commutative``)."""

    op: str
    arity: int
    attrs: AttrGen = _none
    # restrict the input positions to values of these ranks (None: any)
    ranks: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    inputs: tuple[tuple[str, tuple[str | int, ...]], ...]  # (name, shape in dim vars / literals)
    ops: tuple[OpSpec, ...]
    max_outputs: int = 2
    # small dim values for the z3 proof and extra float test shapes (var -> size)
    proof_dims: dict[str, int] = field(default_factory=dict)
    test_dims: tuple[dict[str, int], ...] = ()
    # most ops per graph this scenario is enumerated to (None: whatever --max-ops says); wide
    # scenarios stop at 3 so that --max-ops 4 fits the time budget
    max_ops: int | None = None

    def ops_limit(self, requested: int) -> int:
        return requested if self.max_ops is None else min(requested, self.max_ops)

    def input_types(self) -> list[tuple[str, TensorType]]:
        from ..ir.types import DType

        out = []
        for name, shape in self.inputs:
            dims = tuple(VAR_PRIMES[d] if isinstance(d, str) else d for d in shape)
            out.append((name, TensorType(dims, DType.f32)))
        return out

    @property
    def op_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.op for s in self.ops))


# ---- attr generators ----------------------------------------------------------------------------

def transpose_perms(max_rank: int = 4, only_last_two: bool = False) -> AttrGen:
    def gen(ts: tuple[TensorType, ...]) -> list[dict[str, Any]]:
        r = len(ts[0].shape or ())
        if r < 2 or r > max_rank:
            return []
        if only_last_two:
            return [{"perm": tuple(range(r - 2)) + (r - 1, r - 2)}]
        ident = tuple(range(r))
        return [{"perm": p} for p in itertools.permutations(range(r)) if p != ident]
    return gen


def axes_of(rank_axes: Callable[[int], list[int]], key: str = "axis") -> AttrGen:
    def gen(ts: tuple[TensorType, ...]) -> list[dict[str, Any]]:
        r = len(ts[0].shape or ())
        return [{key: a} for a in rank_axes(r)]
    return gen


def all_axes(r: int) -> list[int]:
    return list(range(r))


def last_axis(r: int) -> list[int]:
    return [r - 1] if r else []


def split_halves(axes: Callable[[int], list[int]] = all_axes) -> AttrGen:
    """Split an even dim into two equal halves (undoes a concat of two equal tensors)."""
    def gen(ts: tuple[TensorType, ...]) -> list[dict[str, Any]]:
        shape = ts[0].shape or ()
        out = []
        for a in axes(len(shape)):
            d = shape[a]
            if isinstance(d, int) and d % 2 == 0 and representable(d // 2) and \
                    not DimExpr.of(d).is_literal:
                out.append({"axis": a, "sizes": (d // 2, d // 2)})
        return out
    return gen


def reduce_axes(keepdims: bool = True, axes: Callable[[int], list[int]] = all_axes) -> AttrGen:
    def gen(ts: tuple[TensorType, ...]) -> list[dict[str, Any]]:
        r = len(ts[0].shape or ())
        return [{"axes": (a,), "keepdims": keepdims} for a in axes(r)]
    return gen


def layer_norm_last(ts: tuple[TensorType, ...]) -> list[dict[str, Any]]:
    r = len(ts[0].shape or ())
    return [{"axis": r - 1, "epsilon": 1e-5}] if r else []


def merge_split_reshapes(ts: tuple[TensorType, ...]) -> list[dict[str, Any]]:
    """Reshapes that merge two adjacent dims or split a merged dim back into dim variables."""
    shape = ts[0].shape or ()
    out: list[dict[str, Any]] = []
    for i in range(len(shape) - 1):
        a, b = shape[i], shape[i + 1]
        if isinstance(a, int) and isinstance(b, int) and a > 1 and b > 1:
            out.append({"shape": shape[:i] + (a * b,) + shape[i + 2:]})
    for i, d in enumerate(shape):
        if not isinstance(d, int):
            continue
        e = DimExpr.of(d)
        if e.coef == 1 and len(e.vars) == 2:
            p, q = (VAR_PRIMES[v] for v in e.vars)
            for x, y in ((p, q), (q, p)):
                out.append({"shape": shape[:i] + (x, y) + shape[i + 1:]})
    return out


def conv_same(kernels: tuple[int, ...] = (1, 3)) -> AttrGen:
    """Stride-1 convolutions padded to keep the spatial size (the weight fixes the kernel)."""
    def gen(ts: tuple[TensorType, ...]) -> list[dict[str, Any]]:
        if len(ts) < 2 or len(ts[1].shape or ()) != 4:
            return []
        k = ts[1].shape[2]  # type: ignore[index]
        if not isinstance(k, int) or k not in kernels or ts[1].shape[3] != k:  # type: ignore
            return []
        p = (k - 1) // 2
        return [{"strides": (1, 1), "pads": (p, p, p, p), "dilations": (1, 1), "group": 1}]
    return gen


def pool_same(ts: tuple[TensorType, ...]) -> list[dict[str, Any]]:
    if len(ts[0].shape or ()) != 4:
        return []
    return [{"kernel": (3, 3), "strides": (1, 1), "pads": (1, 1, 1, 1), "dilations": (1, 1),
             "ceil_mode": False}]


def avg_pool_same(ts: tuple[TensorType, ...]) -> list[dict[str, Any]]:
    return [dict(a, count_include_pad=True) for a in pool_same(ts)]


# ---- the scenarios ------------------------------------------------------------------------------

EW_BINARY = ("add", "sub", "mul")


def _ops(*specs: OpSpec) -> tuple[OpSpec, ...]:
    return specs


LINALG = Scenario(
    name="linalg",
    inputs=(("x", ("a", "b")), ("y", ("b", "c")), ("z", ("b", "c")), ("s", ())),
    ops=_ops(
        OpSpec("matmul", 2),
        OpSpec("add", 2),
        OpSpec("mul", 2),
        OpSpec("transpose", 1, transpose_perms(2)),
        OpSpec("concat", 2, axes_of(all_axes)),
        OpSpec("split", 1, split_halves()),
        OpSpec("relu", 1),
    ),
    proof_dims={"a": 2, "b": 3, "c": 2},
    test_dims=({"a": 3, "b": 2, "c": 4},),
)

ELEMENTWISE = Scenario(
    name="elementwise",
    inputs=(("x", ("a", "b")), ("y", ("a", "b")), ("z", ("a", "b")), ("s", ())),
    ops=_ops(
        OpSpec("add", 2),
        OpSpec("sub", 2),
        OpSpec("mul", 2),
        OpSpec("neg", 1),
        OpSpec("relu", 1),
    ),
    proof_dims={"a": 1, "b": 2},
    test_dims=({"a": 3, "b": 2},),
)

CONV = Scenario(
    name="conv",
    inputs=(("x", ("a", "b", "c", "c")), ("w", ("b", "b", 3, 3)), ("v", ("b", "b", 3, 3)),
            ("u", ("b", "b", 1, 1)), ("s", ())),
    ops=_ops(
        OpSpec("conv", 2, conv_same()),
        OpSpec("add", 2),
        OpSpec("mul", 2),
        OpSpec("relu", 1),
        OpSpec("concat", 2, axes_of(lambda r: [0, 1] if r == 4 else [])),
        OpSpec("split", 1, split_halves(lambda r: [0, 1] if r == 4 else [])),
        OpSpec("max_pool", 1, pool_same),
        OpSpec("avg_pool", 1, avg_pool_same),
    ),
    proof_dims={"a": 1, "b": 2, "c": 3},
    test_dims=({"a": 2, "b": 3, "c": 4},),
)

ATTENTION = Scenario(
    name="attention",
    inputs=(("x", ("a", "b", "c")), ("w", ("c", "c")), ("v", ("c", "c")), ("s", ())),
    ops=_ops(
        OpSpec("matmul", 2),
        OpSpec("add", 2),
        OpSpec("mul", 2),
        OpSpec("transpose", 1, transpose_perms(3, only_last_two=True)),
        OpSpec("concat", 2, axes_of(last_axis)),
        OpSpec("split", 1, split_halves(last_axis)),
        OpSpec("softmax", 1, axes_of(last_axis)),
        OpSpec("gelu", 1, lambda ts: [{"approximate": "none"}]),
        OpSpec("reshape", 1, merge_split_reshapes),
    ),
    proof_dims={"a": 2, "b": 2, "c": 3},
    test_dims=({"a": 1, "b": 3, "c": 2},),
)

NORM = Scenario(
    name="norm",
    inputs=(("x", ("a", "b", "c")), ("y", ("a", "b", "c")), ("g", ("c",)), ("s", ())),
    ops=_ops(
        OpSpec("add", 2),
        OpSpec("mul", 2),
        OpSpec("transpose", 1, transpose_perms(3)),
        OpSpec("layer_norm", 1, layer_norm_last),
        OpSpec("reduce_sum", 1, reduce_axes(True)),
        OpSpec("exp", 1),
        OpSpec("softmax", 1, axes_of(all_axes)),
    ),
    proof_dims={"a": 1, "b": 2, "c": 3},
    test_dims=({"a": 2, "b": 3, "c": 2},),
)

MATMUL = Scenario(
    name="matmul",
    inputs=(("x", ("a", "b")), ("y", ("b", "c")), ("z", ("b", "c"))),
    ops=_ops(
        OpSpec("matmul", 2),
        OpSpec("add", 2),
        OpSpec("transpose", 1, transpose_perms(2)),
        OpSpec("concat", 2, axes_of(all_axes)),
        OpSpec("split", 1, split_halves()),
        OpSpec("relu", 1),
    ),
    proof_dims={"a": 2, "b": 3, "c": 2},
    test_dims=({"a": 3, "b": 2, "c": 4},),
)

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    MATMUL,
    replace(LINALG, max_ops=3),
    replace(ELEMENTWISE, max_ops=3),
    replace(CONV, max_ops=3),
    replace(ATTENTION, max_ops=3),
    replace(NORM, max_ops=3),
)}
