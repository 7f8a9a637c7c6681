"""Hypothesis strategies that build random, well-typed IR graphs from the op registry.

A graph is a DAG over 1-3 float inputs of small static shapes that broadcast against each other,
plus small constants (random, zeros, ones, twos, halves: the values cleanup and canonicalize
look for). Each step picks an op family, draws operands from the values built so far and attrs
from the op's own ``examples`` (unary ops with attrs) or from the operand's type (reshape
targets, transpose perms, reduce axes, ...); ``Node.build`` infers the type, and a combination
it rejects is simply not added, so every graph is well typed by construction. Ops that are not
registered are skipped, so the strategies grow with the registry.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import numpy as np
from hypothesis import strategies as st

from graphopt.errors import GraphOptError
from graphopt.ir.graph import Graph
from graphopt.ir.node import ConstData, Node, Value, constant, input_node
from graphopt.ir.types import Dim, DType, TensorType

FLOAT_BINARY = ("add", "sub", "mul", "div", "maximum", "minimum", "pow")
FLOAT_UNARY = ("neg", "abs", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "erf", "sin",
               "cos", "floor", "ceil", "sign", "silu", "softplus", "identity", "reciprocal",
               "rsqrt", "gelu", "leaky_relu", "elu", "hard_sigmoid", "clip", "round")
COMPARE = ("equal", "less", "greater", "less_equal", "greater_equal")
REDUCE = ("reduce_sum", "reduce_mean", "reduce_max", "reduce_min")
SHAPE = ("reshape", "transpose", "unsqueeze", "squeeze", "concat", "slice", "expand")
FAMILIES = ("binary", "unary", "matmul", "reduce", "shape", "where", "cast", "softmax")


@lru_cache(maxsize=None)
def registered() -> frozenset[str]:
    from graphopt.ops.registry import all_ops

    return frozenset(all_ops())


def available(names: tuple[str, ...]) -> list[str]:
    reg = registered()
    return [n for n in names if n in reg]


@lru_cache(maxsize=None)
def example_attrs(op: str) -> tuple[dict[str, Any], ...]:
    """Distinct attrs of the op's examples (its declared samples)."""
    from graphopt.ops.registry import get_op

    seen: list[dict[str, Any]] = []
    for ex in get_op(op).examples(np.random.default_rng(0)):
        a = dict(ex.attrs)
        if a not in seen:
            seen.append(a)
    return tuple(seen) or ({},)


def _tt(v: Value) -> TensorType:
    t = v.type
    assert isinstance(t, TensorType) and t.shape is not None
    return t


def static_shape(v: Value) -> tuple[int, ...] | None:
    """The value's shape when every dim is an int, else None (a symbolic dim)."""
    shape = _tt(v).shape or ()
    return None if any(isinstance(d, str) for d in shape) else tuple(int(d) for d in shape)


def _float_values(pool: list[Value], dtype: DType | None = None) -> list[Value]:
    return [v for v in pool if isinstance(v.type, TensorType) and v.type.dtype.is_float
            and (dtype is None or v.type.dtype == dtype)]


def pick(draw: Any, cands: list[Value]) -> Value:
    """One of ``cands``, most often one of the newest (so random graphs grow deep, not wide)."""
    if draw(st.integers(0, 3)) < 3:
        return draw(st.sampled_from(cands[-2:]))
    return draw(st.sampled_from(cands))


def _try(op: str, inputs: list[Value], attrs: dict[str, Any] | None = None) -> Value | None:
    try:
        n = Node.build(op, inputs, attrs or {})
    except GraphOptError:
        return None
    return n.outputs[0]


@st.composite
def base_shapes(draw: Any, max_rank: int = 3, max_dim: int = 4, min_dim: int = 1
                ) -> tuple[int, ...]:
    rank = draw(st.integers(1, max_rank))
    return tuple(draw(st.integers(min_dim, max_dim)) for _ in range(rank))


@st.composite
def related_shape(draw: Any, base: tuple[int, ...]) -> tuple[int, ...]:
    """A shape that broadcasts with ``base``: a suffix of it with some dims set to 1."""
    k = draw(st.integers(0, len(base)))
    suffix = base[len(base) - k:]
    return tuple(1 if draw(st.booleans()) and draw(st.booleans()) else d for d in suffix)


def concrete(shape: tuple[Dim, ...]) -> tuple[int, ...]:
    """A shape with its symbolic dims set to 1 (a constant that broadcasts against them)."""
    return tuple(1 if isinstance(d, str) else int(d) for d in shape)


_CONST_KINDS = ("normal", "zeros", "ones", "twos", "halves", "positive")


@st.composite
def constants(draw: Any, base: tuple[int, ...], dtype: DType = DType.f32) -> Value:
    shape = concrete(draw(related_shape(base)))
    kind = draw(st.sampled_from(_CONST_KINDS))
    seed = draw(st.integers(0, 2 ** 16))
    rng = np.random.default_rng(seed)
    if kind == "normal":
        a = rng.standard_normal(shape)
    elif kind == "positive":
        a = np.abs(rng.standard_normal(shape)) + 0.5
    else:
        a = np.full(shape, {"zeros": 0.0, "ones": 1.0, "twos": 2.0, "halves": 0.5}[kind])
    return constant(ConstData(np.asarray(a, dtype=dtype.to_numpy())))


# ---- op families -------------------------------------------------------------------------------

# ops whose operand must be positive to stay clear of NaN (backends disagree on how NaN flows
# through reductions, so the strategies keep NaN out; infinities still occur)
POSITIVE_DOMAIN = ("log", "sqrt", "rsqrt")


def _positive(x: Value) -> Value | None:
    """|x| + 0.5: a positive value computed from ``x``."""
    t = x.type
    assert isinstance(t, TensorType)
    a = _try("abs", [x])
    half = constant(ConstData(np.asarray(0.5, dtype=t.dtype.to_numpy())))
    return _try("add", [a, half]) if a is not None else None


def _binary(draw: Any, pool: list[Value]) -> Value | None:
    ops = available(FLOAT_BINARY)
    fl = _float_values(pool)
    if not ops or not fl:
        return None
    a = pick(draw, fl)
    same = _float_values(pool, _tt(a).dtype)
    b = pick(draw, same)
    op = draw(st.sampled_from(ops))
    if draw(st.booleans()):
        a, b = b, a
    if op == "pow":
        pa = _positive(a)
        if pa is None:
            return None
        a = pa
    return _try(op, [a, b])


def _unary(draw: Any, pool: list[Value]) -> Value | None:
    ops = available(FLOAT_UNARY)
    fl = _float_values(pool)
    if not ops or not fl:
        return None
    op = draw(st.sampled_from(ops))
    attrs = draw(st.sampled_from(example_attrs(op)))
    x: Value | None = pick(draw, fl)
    if op in POSITIVE_DOMAIN and x is not None:
        x = _positive(x)
    return _try(op, [x], attrs) if x is not None else None


def _matmul(draw: Any, pool: list[Value]) -> Value | None:
    if "matmul" not in registered():
        return None
    fl = [v for v in _float_values(pool) if _tt(v).rank >= 1]
    if not fl:
        return None
    x = pick(draw, fl)
    k = (_tt(x).shape or (1,))[-1]
    if isinstance(k, str):
        return None
    n = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    w = constant(ConstData(rng.standard_normal((k, n)).astype(_tt(x).dtype.to_numpy())))
    return _try("matmul", [x, w])


def _reduce(draw: Any, pool: list[Value]) -> Value | None:
    ops = available(REDUCE)
    fl = [v for v in _float_values(pool) if _tt(v).rank >= 1]
    if not ops or not fl:
        return None
    x = pick(draw, fl)
    rank = _tt(x).rank
    axes = tuple(sorted(draw(st.sets(st.integers(0, rank - 1), min_size=1, max_size=rank))))
    return _try(draw(st.sampled_from(ops)), [x], {"axes": axes, "keepdims": draw(st.booleans())})


def _softmax(draw: Any, pool: list[Value]) -> Value | None:
    ops = available(("softmax", "log_softmax"))
    fl = [v for v in _float_values(pool) if _tt(v).rank >= 1]
    if not ops or not fl:
        return None
    x = pick(draw, fl)
    axis = draw(st.integers(0, _tt(x).rank - 1))
    return _try(draw(st.sampled_from(ops)), [x], {"axis": axis})


def _shape(draw: Any, pool: list[Value]) -> Value | None:
    ops = available(SHAPE)
    fl = _float_values(pool)
    if not ops or not fl:
        return None
    op = draw(st.sampled_from(ops))
    x = pick(draw, fl)
    static = static_shape(x)
    shape = tuple(_tt(x).shape or ())
    rank = len(shape)
    if op in ("reshape", "slice") and static is None:
        return None
    if op == "reshape":
        n = int(np.prod(shape)) if shape else 1
        cands = [(n,), (1, n), tuple(reversed(shape)), shape + (1,)]
        if rank >= 2:
            cands.append(shape[:-2] + (shape[-2] * shape[-1],))
        return _try(op, [x], {"shape": draw(st.sampled_from(cands))})
    if op == "transpose":
        perm = tuple(draw(st.permutations(list(range(rank)))))
        return _try(op, [x], {"perm": perm})
    if op == "unsqueeze":
        return _try(op, [x], {"axes": (draw(st.integers(0, rank)),)})
    if op == "squeeze":
        ones = tuple(i for i, d in enumerate(shape) if d == 1)
        return _try(op, [x], {"axes": ones}) if ones else None
    if op == "concat":
        if rank == 0:
            return None
        others = [v for v in fl if v.type == x.type]
        axis = draw(st.integers(0, rank - 1))
        ins = [x] + [draw(st.sampled_from(others)) for _ in range(draw(st.integers(0, 2)))]
        return _try(op, ins, {"axis": axis})
    if op == "slice":
        if rank == 0:
            return None
        ax = draw(st.integers(0, rank - 1))
        d = shape[ax]
        start = draw(st.integers(0, max(d - 1, 0)))
        end = draw(st.integers(start + 1, d)) if d > start else d
        step = draw(st.sampled_from((1, 1, 2)))
        return _try(op, [x], {"starts": (start,), "ends": (end,), "axes": (ax,),
                              "steps": (step,)})
    if op == "expand":
        new = tuple(draw(st.sampled_from((d, 3))) if d == 1 else d for d in shape)
        if draw(st.booleans()):
            new = (2,) + new
        return _try(op, [x], {"shape": new})
    return None


def _where(draw: Any, pool: list[Value]) -> Value | None:
    cmp = available(COMPARE)
    if not cmp or "where" not in registered():
        return None
    fl = _float_values(pool)
    a = pick(draw, fl)
    b = pick(draw, _float_values(pool, _tt(a).dtype))
    cond = _try(draw(st.sampled_from(cmp)), [a, b])
    if cond is None:
        return None
    return _try("where", [cond, draw(st.sampled_from([a, b])), b])


def _cast(draw: Any, pool: list[Value]) -> Value | None:
    if "cast" not in registered():
        return None
    x = pick(draw, _float_values(pool))
    to = draw(st.sampled_from((DType.f64, DType.f32, DType.f16)))
    return _try("cast", [x], {"to": to})


_BUILDERS: dict[str, Callable[[Any, list[Value]], "Value | None"]] = {
    "binary": _binary, "unary": _unary, "matmul": _matmul, "reduce": _reduce,
    "shape": _shape, "where": _where, "cast": _cast, "softmax": _softmax,
}


@dataclass
class Ctx:
    """What a family builds from: the values so far (``pool``), the graph's inputs (a family may
    add one, up to ``max_inputs``) and the base shape the first input has."""

    pool: list[Value]
    inputs: list[Node]
    base: tuple[Dim, ...]
    max_inputs: int

    def new_input(self, t: TensorType) -> Value | None:
        """A fresh graph input of type ``t`` (None once the graph has ``max_inputs``)."""
        if len(self.inputs) >= self.max_inputs:
            return None
        n = input_node(f"x{len(self.inputs)}", t)
        self.inputs.append(n)
        return n.out


def _pool_only(fn: Callable[[Any, list[Value]], "Value | None"]
               ) -> Callable[[Any, Ctx], "Value | None"]:
    return lambda draw, ctx: fn(draw, ctx.pool)


def builders() -> dict[str, Callable[[Any, Ctx], "Value | None"]]:
    """Every family by name: the pool-only ones here, the rest in tests/strategy_families.py."""
    from tests.strategy_families import EXTENDED_BUILDERS

    out = {k: _pool_only(f) for k, f in _BUILDERS.items()}
    out.update(EXTENDED_BUILDERS)
    return out


@st.composite
def graphs(draw: Any, max_inputs: int = 3, min_ops: int = 2, max_ops: int = 8,
           families: tuple[str, ...] = FAMILIES, symbolic: bool = False,
           extra_inputs: int = 0, min_dim: int = 1) -> Graph:
    """A random well-typed graph with f32 inputs and 1-2 outputs. symbolic: the first input's
    leading dim may be the symbol ``batch`` (rank >= 2). extra_inputs: how many more inputs the
    families may add (integer indices, bool masks, a motif's operands). min_dim: 0 lets the
    base shape have empty dims."""
    base: tuple[Dim, ...] = draw(base_shapes(min_dim=min_dim))
    if symbolic and len(base) >= 2 and draw(st.integers(0, 3)) == 0:
        base = ("batch",) + base[1:]
    n_in = draw(st.integers(1, max_inputs))
    inputs = [input_node(f"x{i}", TensorType(base if i == 0 else draw(related_shape(base)),
                                             DType.f32)) for i in range(n_in)]
    pool: list[Value] = [n.out for n in inputs]
    for _ in range(draw(st.integers(0, 2))):
        pool.append(draw(constants(base)))
    ctx = Ctx(pool, inputs, base, n_in + extra_inputs)
    table = builders()
    built: list[Value] = []
    for _ in range(draw(st.integers(min_ops, max_ops))):
        fam = draw(st.sampled_from(families))
        v = table[fam](draw, ctx)
        if v is not None:
            pool.append(v)
            built.append(v)
    if not built:  # every draw was rejected: one elementwise op keeps the graph non-trivial
        built.append(Node.build("add", [pool[0], pool[0]]).out)
    outs = [built[-1]]
    if len(built) > 1 and draw(st.booleans()):
        other = draw(st.sampled_from(built[:-1]))
        if other != outs[0]:
            outs.append(other)
    return Graph(ctx.inputs, outs, [f"y{i}" for i in range(len(outs))], name="random")


def feeds_for(g: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard-normal inputs for a graph from ``graphs()``."""
    from graphopt.check import make_inputs

    return make_inputs(g, seed)
