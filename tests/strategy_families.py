"""More op families for ``tests.strategies.graphs``: the shapes real models have, so that the
fusion passes, the canonical forms and the search's rules have something to fire on.

* ``motif``: the lhs of a hand-written rule (``passes/rules/*.rules``: the spellings each fusion,
  canonical form, cleanup and search rule accepts) spliced in whole; its operands are values of
  the same type from the pool or fresh graph inputs. The family grows with the rule files.
* ``example``: one node of a registered op on one of its own declared examples (conv, pad, tile,
  split, layer_norm, rotary_embedding, ...): float operands become graph inputs or pool values
  of that type, integer and bool operands stay the example's constants (valid indices, sizes).
* ``projections``: 2-3 constant-weight matmuls of one value, with bias adds (matmul_fusion and
  merge_parallel's input), and matmul chains through an activation.
* ``attention``: q, k, v projections of one value, scores scaled by a mul or a div, an optional
  additive mask, softmax over the keys, times v.
* ``norm``: layer norm and RMS norm spelled out over the last axis; ``gelu``: the erf and tanh
  spellings and silu as x * sigmoid(x).
* ``integer`` / ``boolean``: int32 / int64 and bool values (fresh inputs, argmax, casts of
  comparisons) through arithmetic, integer division and mod by positive constants, reductions,
  logic and where; ``gather``: gather with indices that are a fresh integer input (the check
  draws them inside the table) or constant indices, negative ones included.

Every builder returns None when a combination is rejected by ``Node.build``, as in strategies.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
from hypothesis import strategies as st

from graphopt.errors import GraphOptError
from graphopt.ir.graph import Graph
from graphopt.ir.node import ConstData, Node, Value, constant
from graphopt.ir.types import DType, TensorType
from tests.strategies import (FAMILIES, Ctx, _float_values, _tt, graphs, pick, registered,
                              static_shape)

# ops no random graph uses: collectives and sharding need ranks, opaque and input are not ops
NOT_RANDOM = frozenset({"all_gather", "all_reduce", "reduce_scatter", "shard", "opaque", "input",
                        "constant"})
# example ops whose float operands keep the example's values (a domain: log of a positive, ...)
KEEP_EXAMPLE_VALUES = frozenset({"log", "sqrt", "rsqrt", "pow", "reciprocal", "div", "mod",
                                 "quantize_linear", "dequantize_linear",
                                 "dynamic_quantize_linear", "matmul_integer", "batch_norm"})
INT_DTYPES = (DType.i32, DType.i64)


class _Skip(Exception):
    """A node the op rejected: the family builds nothing this time."""


def _b(op: str, inputs: list[Value], attrs: dict[str, Any] | None = None) -> Value:
    try:
        return Node.build(op, inputs, attrs or {}).outputs[0]
    except GraphOptError as e:
        raise _Skip(str(e)) from e


def _const(a: np.ndarray) -> Value:
    return constant(ConstData(np.asarray(a)))


def _scalar(x: float, like: Value) -> Value:
    return _const(np.asarray(x, dtype=_tt(like).dtype.to_numpy()))


def _weights(draw: Any, shape: tuple[int, ...], dtype: DType) -> Value:
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    return _const((rng.standard_normal(shape) / np.sqrt(max(shape[0], 1))).astype(
        dtype.to_numpy()))


def _skipping(fn: Callable[[Any, Ctx], Value]) -> Callable[[Any, Ctx], "Value | None"]:
    def run(draw: Any, ctx: Ctx) -> Value | None:
        try:
            return fn(draw, ctx)
        except _Skip:
            return None
    return run


def _operand(draw: Any, ctx: Ctx, t: TensorType) -> Value | None:
    """A pool value of type ``t`` or a fresh input of it (None when neither can be had)."""
    same = [v for v in ctx.pool if v.type == t]
    if same and draw(st.booleans()):
        return draw(st.sampled_from(same))
    return ctx.new_input(t) or (draw(st.sampled_from(same)) if same else None)


def _float_with_last(ctx: Ctx, min_rank: int = 1) -> list[Value]:
    """Float pool values of rank >= min_rank whose last dim is static and > 0."""
    out = []
    for v in _float_values(ctx.pool):
        shape = _tt(v).shape or ()
        if len(shape) >= min_rank and isinstance(shape[-1], int) and shape[-1] > 0:
            out.append(v)
    return out


# ---- motif: a rule's lhs spliced in -----------------------------------------------------------

@lru_cache(maxsize=None)
def motifs() -> tuple[tuple[str, Graph], ...]:
    """(rule name, lhs graph) of every hand-written rule whose lhs uses only random-graph ops."""
    import graphopt.passes
    from graphopt.subst.rulefile import load_dir

    rules = load_dir(Path(graphopt.passes.__file__).parent / "rules")
    reg = registered()
    out = []
    for r in rules:
        ops = {n.op for n in r.lhs.nodes} - {"input", "constant"}
        if ops and ops <= reg and not ops & NOT_RANDOM:
            out.append((r.name, r.lhs))
    return tuple(out)


def _motif(draw: Any, ctx: Ctx) -> Value:
    name, lhs = draw(st.sampled_from(motifs()))
    env: dict[tuple[int, int], Value] = {}
    for n in lhs.inputs:
        t = n.out_types[0]
        if not isinstance(t, TensorType):
            raise _Skip(name)
        v = _operand(draw, ctx, t)
        if v is None:
            raise _Skip(f"{name}: no operand of type {t}")
        env[(id(n), 0)] = v
    for n in lhs.nodes:
        if n.op == "input":
            continue
        try:
            new = n.with_inputs([env[(id(v.node), v.index)] for v in n.inputs])
        except GraphOptError as e:
            raise _Skip(str(e)) from e
        for i, o in enumerate(new.outputs):
            env[(id(n), i)] = o
    outs = [env[(id(v.node), v.index)] for v in lhs.outputs]
    ctx.pool.extend(outs[:-1])
    return outs[-1]


# ---- example: an op on its own declared sample -------------------------------------------------

@lru_cache(maxsize=None)
def example_ops() -> tuple[str, ...]:
    from graphopt.ops.registry import get_op

    out = []
    for op in sorted(registered() - NOT_RANDOM):
        if any(True for _ in get_op(op).examples(np.random.default_rng(0))):
            out.append(op)
    return tuple(out)


@lru_cache(maxsize=None)
def _examples(op: str) -> tuple[Any, ...]:
    from graphopt.ops.registry import get_op

    return tuple(get_op(op).examples(np.random.default_rng(0)))


def _example(draw: Any, ctx: Ctx) -> Value:
    op = draw(st.sampled_from(example_ops()))
    ex = draw(st.sampled_from(_examples(op)))
    ins: list[Value] = []
    for a in ex.inputs:
        arr = np.asarray(a)
        dt = DType.from_numpy(arr.dtype)
        v: Value | None = None
        if dt.is_float and op not in KEEP_EXAMPLE_VALUES and draw(st.integers(0, 3)) > 0:
            v = _operand(draw, ctx, TensorType(tuple(arr.shape), dt))
        ins.append(v if v is not None else _const(arr))
    try:
        n = Node.build(op, ins, dict(ex.attrs))
    except GraphOptError as e:
        raise _Skip(str(e)) from e
    ctx.pool.extend(n.outputs[:-1])
    return n.outputs[-1]


# ---- projections, attention, norms, activations -----------------------------------------------

def _with_last_dim(draw: Any, ctx: Ctx) -> tuple[Value, TensorType, int]:
    """A float pool value with a static last dim, its type and that dim."""
    cands = _float_with_last(ctx)
    if not cands:
        raise _Skip("no float value with a static last dim")
    x = pick(draw, cands)
    t = _tt(x)
    return x, t, int(t.shape[-1])  # type: ignore[index]


def _projections(draw: Any, ctx: Ctx) -> Value:
    x, t, k = _with_last_dim(draw, ctx)
    outs = []
    for _ in range(draw(st.integers(2, 3))):
        y = _b("matmul", [x, _weights(draw, (k, draw(st.integers(1, 4))), t.dtype)])
        if draw(st.booleans()):
            n = int(_tt(y).shape[-1])  # type: ignore[index]
            y = _b("add", [y, _weights(draw, (n,), t.dtype)])
        outs.append(y)
    if draw(st.booleans()):  # a chain: the last projection through an activation and on
        act = draw(st.sampled_from(("relu", "gelu", "silu", "tanh")))
        h = _b(act, [outs[-1]])
        n = int(_tt(h).shape[-1])  # type: ignore[index]
        outs[-1] = _b("matmul", [h, _weights(draw, (n, draw(st.integers(1, 4))), t.dtype)])
    ctx.pool.extend(outs[:-1])
    return outs[-1]


def _attention(draw: Any, ctx: Ctx) -> Value:
    cands = _float_with_last(ctx, min_rank=2)
    x = pick(draw, cands) if cands else ctx.new_input(
        TensorType((draw(st.integers(1, 5)), draw(st.integers(1, 4))), DType.f32))
    if x is None:
        raise _Skip("no rank-2 value")
    t = _tt(x)
    d = int(t.shape[-1])  # type: ignore[index]
    h = draw(st.integers(1, 4))
    q, k, v = (_b("matmul", [x, _weights(draw, (d, h), t.dtype)]) for _ in range(3))
    rank = t.rank
    perm = tuple(range(rank - 2)) + (rank - 1, rank - 2)
    s = _b("matmul", [q, _b("transpose", [k], {"perm": perm})])
    how = draw(st.sampled_from(("mul", "div", "none")))
    if how == "mul":
        s = _b("mul", [s, _scalar(1.0 / np.sqrt(h), s)])
    elif how == "div":
        s = _b("div", [s, _scalar(float(np.sqrt(h)), s)])
    seq = (_tt(s).shape or ())[-1]
    if isinstance(seq, int) and draw(st.booleans()):  # a causal additive mask
        m = np.triu(np.full((seq, seq), -1e4), 1).astype(t.dtype.to_numpy())
        s = _b("add", [s, _const(m)])
    p = _b("softmax", [s], {"axis": rank - 1})
    return _b("matmul", [p, v])


def _norm(draw: Any, ctx: Ctx) -> Value:
    x, t, n = _with_last_dim(draw, ctx)
    last = t.rank - 1
    mean = {"axes": (last,), "keepdims": True}
    eps = _scalar(draw(st.sampled_from((1e-5, 1e-6, 0.0625))), x)
    if draw(st.booleans()):  # layer norm
        c = _b("sub", [x, _b("reduce_mean", [x], mean)])
        sq = _b("mul", [c, c]) if draw(st.booleans()) else _b("pow", [c, _scalar(2.0, x)])
        var = _b("add", [_b("reduce_mean", [sq], mean), eps])
        y = _b("div", [c, _b("sqrt", [var])]) if draw(st.booleans()) else \
            _b("mul", [c, _b("rsqrt", [var])])
    else:  # RMS norm
        var = _b("add", [_b("reduce_mean", [_b("mul", [x, x])], mean), eps])
        y = _b("mul", [x, _b("rsqrt", [var])]) if draw(st.booleans()) else \
            _b("div", [x, _b("sqrt", [var])])
    if draw(st.booleans()):
        y = _b("mul", [y, _weights(draw, (n,), t.dtype)])
    if draw(st.booleans()):
        y = _b("add", [y, _weights(draw, (n,), t.dtype)])
    return y


def _gelu(draw: Any, ctx: Ctx) -> Value:
    fl = _float_values(ctx.pool)
    if not fl:
        raise _Skip("no float value")
    x = pick(draw, fl)
    form = draw(st.sampled_from(("erf", "erf_div", "tanh", "silu")))
    if form == "silu":
        s = _b("sigmoid", [x])
        return _b("mul", [x, s] if draw(st.booleans()) else [s, x])
    half, one = _scalar(0.5, x), _scalar(1.0, x)
    if form in ("erf", "erf_div"):
        inner = _b("mul", [x, _scalar(0.70710678, x)]) if form == "erf" else \
            _b("div", [x, _scalar(1.4142135, x)])
        g = _b("add", [_b("erf", [inner]), one])
    else:
        cube = _b("pow", [x, _scalar(3.0, x)]) if draw(st.booleans()) else \
            _b("mul", [_b("mul", [x, x]), x])
        inner = _b("mul", [_b("add", [x, _b("mul", [cube, _scalar(0.044715, x)])]),
                           _scalar(0.7978846, x)])
        g = _b("add", [_b("tanh", [inner]), one])
    if draw(st.booleans()):
        return _b("mul", [_b("mul", [x, half]), g])
    return _b("mul", [_b("mul", [x, g]), half])


# ---- integers, bools, gather -------------------------------------------------------------------

def _values_of(ctx: Ctx, pred: Callable[[DType], bool]) -> list[Value]:
    return [v for v in ctx.pool if isinstance(v.type, TensorType) and pred(v.type.dtype)]


def _int_source(draw: Any, ctx: Ctx) -> Value:
    """A new integer value: a fresh input, an argmax / argmin, or a cast comparison."""
    how = draw(st.sampled_from(("input", "arg", "compare")))
    if how == "input":
        shape = tuple(draw(st.sampled_from((d, 1))) for d in ctx.base)
        v = ctx.new_input(TensorType(shape, draw(st.sampled_from(INT_DTYPES))))
        if v is not None:
            return v
    fl = [v for v in _float_values(ctx.pool) if _tt(v).rank >= 1]
    if how == "arg" and fl:
        x = pick(draw, fl)
        return _b(draw(st.sampled_from(("argmax", "argmin"))), [x],
                  {"axis": draw(st.integers(0, _tt(x).rank - 1)),
                   "keepdims": draw(st.booleans())})
    a = pick(draw, _float_values(ctx.pool))
    b = pick(draw, _float_values(ctx.pool, _tt(a).dtype))
    c = _b(draw(st.sampled_from(("less", "greater", "equal"))), [a, b])
    return _b("cast", [c], {"to": draw(st.sampled_from(INT_DTYPES))})


def _integer(draw: Any, ctx: Ctx) -> Value:
    ints = _values_of(ctx, lambda d: d.is_int)
    if not ints or draw(st.integers(0, 3)) == 0:
        return _int_source(draw, ctx)
    a = pick(draw, ints)
    dt = _tt(a).dtype
    same = [v for v in ints if _tt(v).dtype == dt]
    op = draw(st.sampled_from(("add", "sub", "mul", "maximum", "minimum", "neg", "abs",
                               "div", "mod", "reduce", "to_float", "where")))
    if op in ("add", "sub", "mul", "maximum", "minimum"):
        return _b(op, [a, pick(draw, same)])
    if op in ("neg", "abs"):
        return _b(op, [a])
    if op in ("div", "mod"):  # by a positive constant: no division by zero
        k = _const(np.asarray(draw(st.integers(1, 5)), dtype=dt.to_numpy()))
        return _b(op, [a, k], {"fmod": 0} if op == "mod" else {})
    if op == "reduce":
        if _tt(a).rank == 0:
            raise _Skip("scalar")
        return _b(draw(st.sampled_from(("reduce_sum", "reduce_max", "reduce_min"))), [a],
                  {"axes": (draw(st.integers(0, _tt(a).rank - 1)),),
                   "keepdims": draw(st.booleans())})
    if op == "to_float":
        return _b("cast", [a], {"to": DType.f32})
    bools = _values_of(ctx, lambda d: d == DType.bool)
    if not bools:
        raise _Skip("no condition")
    return _b("where", [pick(draw, bools), a, pick(draw, same)])


def _boolean(draw: Any, ctx: Ctx) -> Value:
    bools = _values_of(ctx, lambda d: d == DType.bool)
    if not bools or draw(st.integers(0, 2)) == 0:
        if draw(st.booleans()):
            shape = tuple(draw(st.sampled_from((d, 1))) for d in ctx.base)
            v = ctx.new_input(TensorType(shape, DType.bool))
            if v is not None:
                return v
        a = pick(draw, _float_values(ctx.pool))
        b = pick(draw, _float_values(ctx.pool, _tt(a).dtype))
        return _b(draw(st.sampled_from(("less", "greater_equal", "equal"))), [a, b])
    a = pick(draw, bools)
    op = draw(st.sampled_from(("and", "or", "xor", "not", "where", "to_float")))
    if op == "not":
        return _b("not", [a])
    if op in ("and", "or", "xor"):
        return _b(op, [a, pick(draw, bools)])
    if op == "to_float":
        return _b("cast", [a], {"to": draw(st.sampled_from((DType.f32, DType.i64)))})
    x = pick(draw, _float_values(ctx.pool))
    y = pick(draw, _float_values(ctx.pool, _tt(x).dtype))
    return _b("where", [a, x, y])


def _gather(draw: Any, ctx: Ctx) -> Value:
    tables = [v for v in _float_values(ctx.pool)
              if _tt(v).rank >= 1 and static_shape(v) is not None and 0 not in static_shape(v)]
    if draw(st.booleans()) or not tables:
        rows = draw(st.integers(2, 6))
        table = _weights(draw, (rows, draw(st.integers(1, 4))), DType.f32)
    else:
        table = pick(draw, tables)
    shape = static_shape(table)
    assert shape is not None
    axis = draw(st.integers(0, len(shape) - 1))
    dim = shape[axis]
    idx_shape = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    dt = draw(st.sampled_from(INT_DTYPES))
    idx: Value | None = None
    if draw(st.booleans()):
        idx = ctx.new_input(TensorType(idx_shape, dt))
    if idx is None:
        rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
        idx = _const(rng.integers(-dim, dim, size=idx_shape).astype(dt.to_numpy()))
    return _b("gather", [table, idx], {"axis": axis})


EXTENDED_BUILDERS: dict[str, Callable[[Any, Ctx], "Value | None"]] = {
    name: _skipping(fn) for name, fn in {
        "motif": _motif, "example": _example, "projections": _projections,
        "attention": _attention, "norm": _norm, "gelu": _gelu, "integer": _integer,
        "boolean": _boolean, "gather": _gather,
    }.items()
}
EXTENDED_FAMILIES = tuple(EXTENDED_BUILDERS)
ALL_FAMILIES = FAMILIES + EXTENDED_FAMILIES


def model_graphs(max_ops: int = 10, zero_dims: bool = False) -> st.SearchStrategy[Graph]:
    """Random graphs over every family (strategies' and these), symbolic batch dims allowed and
    up to three more inputs than ``graphs``' float ones. zero_dims: base shapes may have empty
    dims (reductions and softmax over an empty axis, empty matmuls)."""
    return graphs(max_inputs=3, min_ops=2, max_ops=max_ops, families=ALL_FAMILIES,
                  symbolic=True, extra_inputs=3, min_dim=0 if zero_dims else 1)

