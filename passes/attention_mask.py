"""Mask algebra of the attention matcher (``attention_flash.py``), and the small layout builders
the attention passes share.

A mask seen on the score chain is one ``MaskTerm`` (a bool keep mask with its fill, or an
additive term with the scales applied after it). ``MaskSet`` collects the terms of a block as
leaves: ``and`` chains are split, all-true leaves dropped, a constant lower-triangular leaf
(evaluated when constant folding left it as an expression) becomes ``causal``, a constant
additive tensor holding only 0 and one very negative value becomes a keep mask with that fill.
``settle`` decides the finite-fill causal leaves once every term is known, ``combine`` makes
the one mask input of the fused op (bool when every masked position gets -inf, additive
otherwise), and ``dead_rows_mean`` is the fix-up for query rows whose keys are all masked when
a joint causal + padding mask was split (see attention_flash.py's docstring for why each choice
is exact).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from graphopt.ir.node import Node, Value, constant
from graphopt.ir.types import Dim, DType, TensorType
from graphopt.rewrite.context import const_array, scalar_const, shape_of

NEG_LIMIT = -1e4  # a fill at or below this masks a score out
HUGE_FILL = -(2.0 ** 127)  # f32 scores s with |s| < 2^103 round s + fill to fill exactly
MASK_EVAL_MAX = 1 << 26  # elements: mask leaves computed from constants are evaluated up to this
_MASK_LEAF_OPS = ("less", "less_equal", "greater", "greater_equal", "equal", "and", "or", "not",
                  "sub", "add", "expand", "reshape", "unsqueeze", "cast")

Ctx = tuple[Dim, ...]


# ---- small builders that simplify as they go ---------------------------------------------------

def dtype_of(v: Value) -> DType:
    t = v.type
    assert isinstance(t, TensorType)
    return t.dtype


def build(op: str, inputs: Sequence[Value], like: Node | None = None, **attrs: object) -> Value:
    """One new node's first output (origin taken from ``like``)."""
    return Node.build(op, tuple(inputs), attrs, like.origin if like is not None else None).out


def reshape_to(v: Value, shape: tuple[Dim, ...], like: Node | None = None) -> Value:
    """``v`` reshaped to ``shape``, looking through reshapes (identity when already so)."""
    while v.node.op == "reshape":
        v = v.node.inputs[0]
    if shape_of(v) == tuple(shape):
        return v
    return build("reshape", [v], like or v.node, shape=tuple(shape))


def transpose_to(v: Value, perm: tuple[int, ...], like: Node | None = None) -> Value:
    """``transpose(v, perm)``, composed with a transpose below it (identity dropped)."""
    if v.node.op == "transpose":
        inner = v.node.attrs["perm"]
        perm = tuple(inner[p] for p in perm)
        v = v.node.inputs[0]
    if perm == tuple(range(len(perm))):
        return v
    return build("transpose", [v], like or v.node, perm=perm)


# ---- mask terms --------------------------------------------------------------------------------

@dataclass
class MaskTerm:
    """One mask applied to the scores at a point of the chain whose shape is ``ctx``.

    kind "keep": ``value`` is bool; scores where it is False get ``fill`` (-inf or very negative).
    kind "add": ``value`` is added to the scores (times ``mult``, the scales applied after it).
    """

    kind: str
    value: Value
    ctx: Ctx
    fill: float = -math.inf
    mult: float = 1.0
    negate: bool = False  # keep: the mask is ``not value``


_LEAF_MEMO: dict[tuple[int, int], tuple[Node, np.ndarray | None]] = {}


def const_leaf(v: Value, depth: int = 4) -> np.ndarray | None:
    """A mask leaf's value when it is a constant, or a small expression over constants that
    constant folding left unfolded because of its size (a causal mask ``arange[:, None] >=
    arange[None, :]`` at long sequences): evaluated node by node with the reference interpreter
    (``NumpyInterpreter.run_node``), bounded in size; not through the constant folder, which
    would store these intermediates as constants.
    Evaluations are remembered (the matcher's dry build and the rebuild ask twice)."""
    a = const_array(v)
    if a is not None or depth <= 0:
        return a
    n = v.node
    t = v.type
    if n.op not in _MASK_LEAF_OPS or not isinstance(t, TensorType) or t.shape is None or \
            not all(isinstance(d, int) for d in t.shape) or \
            int(np.prod(t.shape, dtype=np.int64)) > MASK_EVAL_MAX:
        return None
    key = (id(n), v.index)
    hit = _LEAF_MEMO.get(key)
    if hit is not None and hit[0] is n:
        return hit[1]
    xs = [const_leaf(i, depth - 1) for i in n.inputs]
    out: np.ndarray | None = None
    if all(x is not None for x in xs):
        from graphopt.ir.interp import NumpyInterpreter

        out = np.asarray(NumpyInterpreter().run_node(n, xs)[v.index])
    if len(_LEAF_MEMO) >= 8:
        _LEAF_MEMO.clear()
    _LEAF_MEMO[key] = (n, out)
    return out


def and_leaves(v: Value) -> list[Value]:
    if v.node.op == "and":
        return and_leaves(v.node.inputs[0]) + and_leaves(v.node.inputs[1])
    return [v]


def is_tril(arr: np.ndarray, ctx: Ctx) -> bool:
    """``arr`` is the top-left aligned lower-triangular keep mask over ``ctx``'s last two axes."""
    S, T = ctx[-2], ctx[-1]
    if not (isinstance(S, int) and isinstance(T, int)) or arr.ndim < 2:
        return False
    if arr.shape[-2:] != (S, T):
        return False
    tril = np.tril(np.ones((S, T), dtype=bool))
    return bool(np.all(arr.astype(bool) == tril))


def fill_mask(keep: Value, fill: float, like: Node) -> Value:
    """The additive mask ``where(keep, 0, fill)`` in f32 (cast to the scores' type later)."""
    zero = constant(np.zeros((), np.float32))
    return build("where", [keep, zero, constant(np.asarray(fill, np.float32))], like)


@dataclass
class MaskSet:
    """The mask terms of one block, as leaves."""

    causal: bool = False  # from a -inf fill (exact whatever else masks the row)
    keeps: list[tuple[Value, Ctx]] = field(default_factory=list)  # -inf fills
    adds: list[tuple[Value, Ctx]] = field(default_factory=list)
    # causal leaves with a finite fill: causal only if nothing else masks (see settle)
    soft_causal: list[tuple[Value, Ctx, float]] = field(default_factory=list)
    # where(tril and others, 0, fill) with a huge fill: (tril, others, ctx, fill), see settle
    joint_causal: list[tuple[Value, Value, Ctx, float]] = field(default_factory=list)
    # keep masks (over ctx) whose all-false rows must give mean(v): the joint causal split
    dead_rows: list[tuple[Value, Ctx]] = field(default_factory=list)

    def add_keep(self, keep: Value, ctx: Ctx, fill: float, like: Node) -> None:
        """Scores where ``keep`` is False get ``fill``."""
        leaves = []
        tril = None
        for leaf in and_leaves(keep):
            arr = const_leaf(leaf)
            if arr is not None and arr.dtype == np.bool_:
                if arr.all():
                    continue
                if is_tril(arr, ctx):
                    tril = leaf
                    continue
            leaves.append(leaf)
        if tril is not None:
            if fill == -math.inf:
                self.causal = True
            elif not leaves:
                self.soft_causal.append((tril, ctx, fill))
        if not leaves:
            return
        k = leaves[0]
        for leaf in leaves[1:]:
            k = build("and", [k, leaf], like)
        if tril is not None and fill != -math.inf:
            self.joint_causal.append((tril, k, ctx, fill))  # one finite fill: causal + padding
            return
        if fill == -math.inf:
            self.keeps.append((k, ctx))
        else:
            self.adds.append((fill_mask(k, fill, like), ctx))

    def add_additive(self, v: Value, ctx: Ctx, mult: float, like: Node) -> None:
        """``v * mult`` is added to the scores."""
        n = v.node
        if n.op == "add":
            for i in n.inputs:
                self.add_additive(i, ctx, mult, like)
            return
        if n.op == "where":
            c, a, b = n.inputs
            za, zb = scalar_const(a), scalar_const(b)
            if za == 0.0 and zb is not None and zb <= NEG_LIMIT:
                self.add_keep(c, ctx, zb * mult, n)
                return
            if zb == 0.0 and za is not None and za <= NEG_LIMIT:
                self.add_keep(build("not", [c], n), ctx, za * mult, n)
                return
        arr = const_array(v)
        if arr is not None and arr.dtype.kind == "f":
            if not arr.any():
                return
            neg = arr[arr != 0]
            if neg.size and np.all(neg == neg.reshape(-1)[0]) and \
                    neg.reshape(-1)[0] <= NEG_LIMIT:
                keep = constant(arr == 0)
                self.add_keep(keep, ctx, float(neg.reshape(-1)[0]) * mult, n)
                return
        if mult != 1.0:
            v = build("mul", [v, constant(np.asarray(mult, dtype_of(v).to_numpy()))], like)
        self.adds.append((v, ctx))

    def settle(self, like: Node, split_joint: bool = False) -> None:
        """Decide the finite-fill causal leaves once every mask term is known.

        * ``soft_causal`` (the tril alone under a finite fill): ``causal=True`` when it is the
          only mask term, else the additive ``where(tril, 0, fill)`` (exact for rows the other
          terms mask entirely).
        * ``joint_causal`` (``where(tril and others, 0, fill)``): with ``split_joint``, a fill of
          at most ``HUGE_FILL`` and no other mask term, ``causal=True`` plus the additive
          ``where(others, 0, fill)`` and a dead-row fix-up (a row whose keys are all masked
          gives mean(v) over every key, as softmax of equal scores s + fill == fill does in the
          original); otherwise the term stays whole.
        """
        alone = (len(self.soft_causal) + len(self.joint_causal) == 1 and not self.keeps
                 and not self.adds)
        if self.soft_causal:
            if alone:
                self.causal = True
            else:
                self.adds += [(fill_mask(tril, fill, like), ctx)
                              for tril, ctx, fill in self.soft_causal]
            self.soft_causal = []
        for tril, others, ctx, fill in self.joint_causal:
            both = build("and", [others, tril], like)
            if split_joint and alone and fill <= HUGE_FILL:
                self.causal = True
                self.adds.append((fill_mask(others, fill, like), ctx))
                self.dead_rows.append((both, ctx))
            else:
                self.adds.append((fill_mask(both, fill, like), ctx))
        self.joint_causal = []

    def combine(self, full: Ctx, dt: DType, like: Node) -> Value | None:
        """The one mask input over ``full`` ([B, H, S, T]): bool when every term is a -inf
        keep mask, else additive in ``dt`` (keep masks become -inf where False)."""
        keeps = [place(v, c, full, like) for v, c in self.keeps]
        adds = [place(v, c, full, like) for v, c in self.adds]
        keep = keeps[0] if keeps else None
        for k in keeps[1:]:
            keep = build("and", [keep, k], like)  # type: ignore[list-item]
        if not adds:
            return keep
        total = None
        for a in adds:
            if dtype_of(a) != dt:
                a = build("cast", [a], like, to=dt)
            total = a if total is None else build("add", [total, a], like)
        assert total is not None
        if keep is not None:
            npdt = dt.to_numpy()
            ninf = build("where", [keep, constant(np.zeros((), npdt)),
                                   constant(np.asarray(-np.inf, npdt))], like)
            total = build("add", [total, ninf], like)
        return total


def place(v: Value, ctx: Ctx, full: Ctx, like: Node) -> Value:
    """A mask given relative to a chain tensor of shape ``ctx`` as a mask over ``full``
    ([B, H, S, T])."""
    if tuple(ctx) == tuple(full) and len(shape_of(v)) <= 4:
        return v
    if shape_of(v) != tuple(ctx):
        v = build("expand", [v], like, shape=tuple(ctx))
    return reshape_to(v, full, like)


def dead_rows_mean(out: Value, keep: Value, ctx: Ctx, full: Ctx, v4: Value, like: Node
                   ) -> Value:
    """``out`` [B, H, S, Dv] with every query row whose ``keep`` row is all False replaced by
    the mean of v over all keys (what softmax of equal scores gives)."""
    B, H, S, T = full
    k = place(keep, ctx, full, like)  # bool, broadcastable to [B, H, S, T]
    kf = build("cast", [k], like, to=DType.f32)
    rank = len(shape_of(kf))
    anyk = build("reduce_max", [kf], like, axes=(rank - 1,), keepdims=True)
    dead = build("equal", [anyk, constant(np.zeros((), np.float32))], like)
    vm = build("reduce_mean", [v4], like, axes=(2,), keepdims=True)  # [B, Hkv, 1, Dv]
    hkv, dv = shape_of(v4)[1], shape_of(v4)[3]
    if hkv != H:  # GQA: query head h reads kv head h // (H / Hkv)
        g = H // hkv  # type: ignore[operator]
        vm = reshape_to(vm, (B, hkv, 1, 1, dv), like)
        vm = build("expand", [vm], like, shape=(B, hkv, g, 1, dv))
        vm = reshape_to(vm, (B, H, 1, dv), like)
    if dtype_of(vm) != dtype_of(out):
        vm = build("cast", [vm], like, to=dtype_of(out))
    return build("where", [dead, vm, out], like)
