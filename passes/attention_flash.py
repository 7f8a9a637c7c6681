"""Attention -> one fused ``attention`` op (flash attention), recognized by meaning.

Anchor: every ``softmax`` over the last axis. From it the matcher walks

* backwards through the *score chain* to the Q K^T matmul: scalar scales (``mul`` by a positive
  constant; canonicalize has turned ``div`` into ``mul``), additive masks (``add`` of a tensor
  that does not come from the matmul), boolean masks (``where(keep, x, fill)`` / ``where(drop,
  fill, x)`` with a very negative constant fill: masked_fill), float casts, identities (dropout at
  inference) and reshapes that keep the last two axes (3-D ``bmm`` forms);
* forwards through reshapes / casts / identities to the P V matmul.

Queries, keys and values are then re-expressed as [B, H, S, D] tensors (B, H read off a 4-D
tensor of the chain, else batch 1 and the flattened batch as heads), looking through layout ops
(reshape / transpose compositions simplify), pre-scaled queries or keys (``mul`` by a constant
folded into the scale) and GQA / MQA key-value head repetition (``reshape(expand(reshape(k)))``
as transformers' ``repeat_kv`` writes it, or a broadcast head axis of 1).

Masks are decomposed into ``and`` / ``add`` leaves; a constant leaf that is exactly the
lower-triangular keep mask (top-left aligned) becomes ``causal=True``; everything else stays an
explicit mask input (bool when every masked position gets -inf, additive otherwise, so finite
fills such as ``finfo.min`` keep their exact meaning). Sliding-window masks stay explicit masks.

Existing ``attention`` nodes (from ``scaled_dot_product_attention``) are refined the same way:
causal proven from their mask, repeated key/value heads turned into GQA.

Finite fills and causal: a query row whose keys are *all* masked by a finite fill (e.g. a
left-padded query under a causal mask, fill ``finfo.min``) averages over every key in the
original, where ``causal=True`` would average over the causally visible keys only. So:

* a lower-triangular leaf with a -inf fill is ``causal=True`` (exact whatever else masks);
* alone under a finite fill it is ``causal=True`` too (every row keeps key 0);
* transformers' ``where(causal and padding, 0, finfo.min)`` as the only mask term (f32 scores,
  fill <= -2^127, so s + fill rounds to fill for every realistic score) becomes ``causal=True``,
  the padding mask ``where(padding, 0, fill)``, and a fix-up: rows whose joint keep mask is all
  False output mean(v) over every key, which is what softmax of equal scores gives;
* otherwise (other mask terms such as T5's position bias, a smaller fill, f16 scores) it stays
  inside the mask: ``where(and(..), 0, fill)`` whole, or a separate finite causal term as the
  additive ``where(tril, 0, fill)``; every row then sums exactly what the original sums.

graphopt's numeric check generates such padded rows, so a wrong choice here fails the check.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.node import Node, Value, constant
from graphopt.ir.types import Dim, DType, TensorType, dim_product
from graphopt.rewrite.passes import Pass, PassResult

from .cleanup import const_array
from .fusion_report import Candidate, NoMatch, add_notes, rebuild

RULE = "attention_flash"
REFINE_RULE = "attention_refine"
NEG_LIMIT = -1e4  # a fill at or below this masks a score out
_MAX_CHAIN = 64

Tr = Callable[[Value], Value]


# ---- small builders that simplify as they go ---------------------------------------------------

def _shape(v: Value) -> tuple[Dim, ...]:
    t = v.type
    if not isinstance(t, TensorType) or t.shape is None:
        raise NoMatch(f"value of type {t} has no known shape", v.node)
    return t.shape


def _dtype(v: Value) -> DType:
    t = v.type
    assert isinstance(t, TensorType)
    return t.dtype


def _build(op: str, inputs: Sequence[Value], like: Node | None = None, **attrs: object) -> Value:
    return Node.build(op, tuple(inputs), attrs, like.origin if like is not None else None).out


def reshape_to(v: Value, shape: tuple[Dim, ...], like: Node | None = None) -> Value:
    """``v`` reshaped to ``shape``, looking through reshapes (identity when already so)."""
    while v.node.op == "reshape":
        v = v.node.inputs[0]
    if _shape(v) == tuple(shape):
        return v
    return _build("reshape", [v], like or v.node, shape=tuple(shape))


def transpose_to(v: Value, perm: tuple[int, ...], like: Node | None = None) -> Value:
    """``transpose(v, perm)``, composed with a transpose below it (identity dropped)."""
    if v.node.op == "transpose":
        inner = v.node.attrs["perm"]
        perm = tuple(inner[p] for p in perm)
        v = v.node.inputs[0]
    if perm == tuple(range(len(perm))):
        return v
    return _build("transpose", [v], like or v.node, perm=perm)


def scalar_const(v: Value) -> float | None:
    a = const_array(v)
    if a is None or a.size != 1 or a.dtype == object or a.dtype.kind not in "fiu":
        return None
    return float(a.reshape(()))


# ---- mask terms --------------------------------------------------------------------------------

@dataclass
class MaskTerm:
    """One mask applied to the scores at a point of the chain whose shape is ``ctx``.

    kind "keep": ``value`` is bool; scores where it is False get ``fill`` (-inf or very negative).
    kind "add": ``value`` is added to the scores (times ``mult``, the scales applied after it).
    """

    kind: str
    value: Value
    ctx: tuple[Dim, ...]
    fill: float = -math.inf
    mult: float = 1.0
    negate: bool = False  # keep: the mask is ``not value``


@dataclass
class AttentionMatch:
    softmax: Node
    qk: Node
    pv: Node
    scale: float
    terms: list[MaskTerm]
    B: Dim
    H: Dim
    mqa_k: bool = False
    mqa_v: bool = False
    chain: list[Node] = field(default_factory=list)


def users_with_outputs(g: Graph) -> dict[Node, list[tuple[Node, int]]]:
    """``g.users()`` plus one ``(node, -1)`` entry per graph output the node feeds."""
    users = g.users()
    for v in g.outputs:
        users.setdefault(v.node, []).append((v.node, -1))
    return users


def _users_count(users: dict[Node, list[tuple[Node, int]]], n: Node) -> int:
    return len(users.get(n, ()))


def _reaches_matmul(v: Value, depth: int = 16) -> bool:
    """True when a non-weight matmul is reachable backwards through score-chain ops."""
    stack = [(v, 0)]
    seen: set[int] = set()
    while stack:
        x, d = stack.pop()
        n = x.node
        if id(n) in seen or d > depth:
            continue
        seen.add(id(n))
        if n.op == "matmul":
            if all(i.node.op != "constant" for i in n.inputs):
                return True
            continue
        if n.op in ("add", "mul", "where", "cast", "reshape", "identity", "transpose"):
            stack.extend((i, d + 1) for i in n.inputs)
    return False


def _walk_scores(x: Value, users: dict[Node, list[tuple[Node, int]]]
                 ) -> tuple[Node, float, list[MaskTerm], list[Node]]:
    """From the softmax input back to the Q K^T matmul."""
    scale = 1.0
    terms: list[MaskTerm] = []
    chain: list[Node] = []
    cur = x
    for _ in range(_MAX_CHAIN):
        n = cur.node
        if _users_count(users, n) != 1:
            raise NoMatch(f"score tensor {n.op} has {_users_count(users, n)} users "
                          f"(needed only by the softmax)", n)
        if n.op == "matmul":
            if any(i.node.op == "constant" for i in n.inputs):
                raise NoMatch("score matmul has a constant operand (a linear layer, not "
                              "Q K^T)", n)
            return n, scale, terms, chain
        chain.append(n)
        ctx = _shape(cur)
        if n.op == "mul":
            a, b = n.inputs
            c = scalar_const(b) if scalar_const(a) is None else scalar_const(a)
            if c is None:
                raise NoMatch("score multiplied by a non-constant or non-scalar factor", n)
            if not c > 0:
                raise NoMatch(f"score scale {c} is not positive", n)
            scale *= c
            cur = a if scalar_const(a) is None else b
        elif n.op == "add":
            a, b = n.inputs
            ra, rb = _reaches_matmul(a), _reaches_matmul(b)
            if ra == rb:
                raise NoMatch("cannot tell the scores from the mask in this add "
                              f"({'both' if ra else 'neither'} operand(s) come from a matmul)",
                              n)
            chain_v, mask_v = (a, b) if ra else (b, a)
            terms.append(MaskTerm("add", mask_v, ctx, mult=scale))
            cur = chain_v
        elif n.op == "where":
            c, a, b = n.inputs
            fa, fb = scalar_const(a), scalar_const(b)
            if fb is not None and fb <= NEG_LIMIT:
                terms.append(MaskTerm("keep", c, ctx, fill=fb * scale))
                cur = a
            elif fa is not None and fa <= NEG_LIMIT:
                terms.append(MaskTerm("keep", c, ctx, fill=fa * scale, negate=True))
                cur = b
            else:
                raise NoMatch("where on the scores without a very negative constant fill "
                              f"(<= {NEG_LIMIT:g})", n)
        elif n.op == "cast":
            src = n.inputs[0].type
            if not (isinstance(src, TensorType) and src.dtype.is_float
                    and n.attrs["to"].is_float):
                raise NoMatch("non-float cast on the scores", n)
            cur = n.inputs[0]
        elif n.op == "reshape":
            if _shape(n.inputs[0])[-2:] != _shape(cur)[-2:]:
                raise NoMatch("reshape on the scores changes the query/key axes", n)
            cur = n.inputs[0]
        elif n.op == "identity":
            cur = n.inputs[0]
        else:
            raise NoMatch(f"score path reaches {n.op} (not a matmul, scale, mask, cast or "
                          f"reshape)", n)
    raise NoMatch("score chain too long", x.node)


def _walk_probs(sm: Node, users: dict[Node, list[tuple[Node, int]]]) -> tuple[Node, list[Node]]:
    """From the softmax forward to the P V matmul."""
    cur = sm
    chain: list[Node] = []
    for _ in range(_MAX_CHAIN):
        us = users.get(cur, [])
        if len(us) != 1:
            raise NoMatch(f"attention probabilities ({cur.op}) have {len(us)} users "
                          f"(needed only by the P V matmul)", cur)
        u, pos = us[0]
        if pos < 0:
            raise NoMatch("attention probabilities are a graph output", cur)
        if u.op == "matmul":
            if pos != 0:
                raise NoMatch("probabilities are the right operand of the matmul", u)
            if u.inputs[1].node.op == "constant":
                raise NoMatch("probabilities multiply a constant (not values)", u)
            return u, chain
        if u.op == "reshape":
            if _shape(u.inputs[0])[-2:] != _shape(u.out)[-2:]:
                raise NoMatch("reshape of the probabilities changes the query/key axes", u)
        elif u.op == "cast":
            if not (u.attrs["to"].is_float):
                raise NoMatch("non-float cast of the probabilities", u)
        elif u.op != "identity":
            raise NoMatch(f"probabilities feed {u.op}, not the P V matmul", u)
        chain.append(u)
        cur = u
    raise NoMatch("probability chain too long", sm)


def match_attention(sm: Node, users: dict[Node, list[tuple[Node, int]]]) -> AttentionMatch:
    """Match one attention block around softmax ``sm``; raises NoMatch with the reason."""
    x = sm.inputs[0]
    rank = len(_shape(x))
    if rank < 2 or sm.attrs["axis"] != rank - 1:
        raise NoMatch(f"softmax over axis {sm.attrs['axis']} of a rank-{rank} tensor, not the "
                      f"last axis", sm)
    if not _dtype(x).is_float:
        raise NoMatch("softmax over a non-float tensor", sm)
    qk, scale, terms, chain = _walk_scores(x, users)
    pv, pchain = _walk_probs(sm, users)
    a, b = qk.inputs
    p, v = pv.inputs
    sa, sb, sv, sp = _shape(a), _shape(b), _shape(v), _shape(pv.out)
    if len(sa) < 2 or len(sb) < 2 or len(sv) < 2:
        raise NoMatch("score matmul on vectors", qk)
    S, T = _shape(qk.out)[-2:]
    if _shape(x)[-2:] != (S, T):
        raise NoMatch("softmax input does not have the score matmul's query/key axes", sm)
    if sv[-2] != T:
        raise NoMatch(f"values have {sv[-2]} rows, keys {T}", pv)
    # the head layout: from a 4-D tensor of the chain, else batch 1 with the batch as heads
    shapes = [_shape(x), _shape(qk.out), sp] + [t.ctx for t in terms]
    four = [s for s in shapes if len(s) == 4]
    if four:
        B, H = four[0][:2]
    elif len(_shape(qk.out)) == 3:
        B, H = 1, _shape(qk.out)[0]
    else:
        B, H = 1, 1
    BH = dim_product([B, H])
    for s, who in ((_shape(x), sm), (_shape(qk.out), qk), (sp, pv), (sa, qk)):
        if dim_product(list(s[:-2])) != BH:
            raise NoMatch(f"batch dims {list(s[:-2])} are not the {B}x{H} batch x heads of "
                          f"the block", who)
    if len(sp) == 4 and tuple(sp[:2]) != (B, H):
        raise NoMatch(f"output batch/heads {list(sp[:2])} differ from {B}x{H}", pv)
    mqa_k = mqa_v = False
    if dim_product(list(sb[:-2])) != BH:
        if len(sb) == 4 and sb[0] == B and sb[1] == 1:
            mqa_k = True
        else:
            raise NoMatch(f"key batch dims {list(sb[:-2])} do not match {B}x{H}", qk)
    if dim_product(list(sv[:-2])) != BH:
        if len(sv) == 4 and sv[0] == B and sv[1] == 1:
            mqa_v = True
        else:
            raise NoMatch(f"value batch dims {list(sv[:-2])} do not match {B}x{H}", pv)
    if not (_dtype(a) == _dtype(b) == _dtype(v)) or not _dtype(a).is_float:
        raise NoMatch("query, key and value dtypes differ or are not float", qk)
    if isinstance(H, int) is False and (mqa_k or mqa_v):
        raise NoMatch("MQA with a symbolic head count", qk)
    return AttentionMatch(sm, qk, pv, scale, terms, B, H, mqa_k, mqa_v,
                          chain + [sm] + pchain)


# ---- building the fused op ---------------------------------------------------------------------

def _unscale(v: Value) -> tuple[Value, float]:
    """``v`` = layout ops over ``mul(x, c)`` with a positive scalar constant c -> (layout ops
    over x, c); else (v, 1)."""
    path: list[Node] = []
    cur = v
    while cur.node.op in ("reshape", "transpose"):
        path.append(cur.node)
        cur = cur.node.inputs[0]
    n = cur.node
    if n.op != "mul":
        return v, 1.0
    a, b = n.inputs
    c, base = (scalar_const(b), a) if scalar_const(b) is not None else (scalar_const(a), b)
    if c is None or not c > 0 or _shape(base) != _shape(cur):
        return v, 1.0
    out = base
    for node in reversed(path):
        out = (reshape_to(out, node.attrs["shape"], node) if node.op == "reshape"
               else transpose_to(out, node.attrs["perm"], node))
    return out, c


def _unrepeat(x: Value, B: Dim, T: Dim, D: Dim) -> Value | None:
    """[B, H, T, D] made by repeating kv heads (reshape(expand([B, Hkv, 1, T, D]))) ->
    [B, Hkv, T, D]; None when ``x`` is not such a repetition."""
    n = x.node
    if n.op != "reshape":
        return None
    e = n.inputs[0]
    if e.node.op == "expand":
        src = e.node.inputs[0]
        es, ss = _shape(e), _shape(src)
        if len(es) == 5 and len(ss) == 5 and ss[2] == 1 and ss[:2] == es[:2] \
                and ss[3:] == es[3:] and es[0] == B and es[3] == T and es[4] == D:
            return reshape_to(src, (B, es[1], T, D), n)
    return None


MASK_EVAL_MAX = 1 << 26  # elements: mask leaves computed from constants are evaluated up to this
_MASK_LEAF_OPS = ("less", "less_equal", "greater", "greater_equal", "equal", "and", "or", "not",
                  "sub", "add", "expand", "reshape", "unsqueeze", "cast")


def _const_leaf(v: Value, depth: int = 4) -> np.ndarray | None:
    """A mask leaf's value when it is a constant, or a small expression over constants that
    constant folding left unfolded because of its size (a causal mask ``arange[:, None] >=
    arange[None, :]`` at long sequences): evaluated with the ops' numpy forms, bounded in size."""
    a = const_array(v)
    if a is not None or depth <= 0:
        return a
    n = v.node
    t = v.type
    if n.op not in _MASK_LEAF_OPS or not isinstance(t, TensorType) or t.shape is None or \
            not all(isinstance(d, int) for d in t.shape) or \
            int(np.prod(t.shape, dtype=np.int64)) > MASK_EVAL_MAX:
        return None
    xs = [_const_leaf(i, depth - 1) for i in n.inputs]
    if any(x is None for x in xs):
        return None
    from graphopt.ops.registry import get_op

    out = get_op(n.op).numpy(xs, n.attrs)
    return np.asarray(out[v.index])


def _and_leaves(v: Value) -> list[Value]:
    if v.node.op == "and":
        return _and_leaves(v.node.inputs[0]) + _and_leaves(v.node.inputs[1])
    return [v]


def _is_tril(arr: np.ndarray, ctx: tuple[Dim, ...]) -> bool:
    S, T = ctx[-2], ctx[-1]
    if not (isinstance(S, int) and isinstance(T, int)) or arr.ndim < 2:
        return False
    if arr.shape[-2:] != (S, T):
        return False
    tril = np.tril(np.ones((S, T), dtype=bool))
    return bool(np.all(arr.astype(bool) == tril))


@dataclass
class _Mask:
    causal: bool = False  # from a -inf fill (exact whatever else masks the row)
    keeps: list[tuple[Value, tuple[Dim, ...]]] = field(default_factory=list)  # -inf fills
    adds: list[tuple[Value, tuple[Dim, ...]]] = field(default_factory=list)
    # causal leaves with a finite fill: causal only if nothing else masks (see _settle)
    soft_causal: list[tuple[Value, tuple[Dim, ...], float]] = field(default_factory=list)
    # where(tril and others, 0, fill) with a huge fill: (tril, others, ctx, fill), see _settle
    joint_causal: list[tuple[Value, Value, tuple[Dim, ...], float]] = field(default_factory=list)
    # keep masks (over ctx) whose all-false rows must give mean(v): the joint causal split
    dead_rows: list[tuple[Value, tuple[Dim, ...]]] = field(default_factory=list)


HUGE_FILL = -(2.0 ** 127)  # f32 scores s with |s| < 2^103 round s + fill to fill exactly


def _fill_mask(keep: Value, fill: float, like: Node) -> Value:
    """The additive mask ``where(keep, 0, fill)`` in f32 (cast to the scores' type later)."""
    zero = constant(np.zeros((), np.float32))
    return _build("where", [keep, zero, constant(np.asarray(fill, np.float32))], like)


def _settle(m: _Mask, like: Node, split_joint: bool = False) -> None:
    """Decide the finite-fill causal leaves once every mask term is known.

    * ``soft_causal`` (the tril alone under a finite fill): ``causal=True`` when it is the only
      mask term, else the additive ``where(tril, 0, fill)`` (exact for rows the other terms
      mask entirely).
    * ``joint_causal`` (``where(tril and others, 0, fill)``): with ``split_joint``, a fill of at
      most ``HUGE_FILL`` and no other mask term, ``causal=True`` plus the additive
      ``where(others, 0, fill)`` and a dead-row fix-up (a row whose keys are all masked gives
      mean(v) over every key, as softmax of equal scores s + fill == fill does in the original);
      otherwise the term stays whole.
    """
    alone = len(m.soft_causal) + len(m.joint_causal) == 1 and not m.keeps and not m.adds
    if m.soft_causal:
        if alone:
            m.causal = True
        else:
            m.adds += [(_fill_mask(tril, fill, like), ctx) for tril, ctx, fill in m.soft_causal]
        m.soft_causal = []
    for tril, others, ctx, fill in m.joint_causal:
        both = _build("and", [others, tril], like)
        if split_joint and alone and fill <= HUGE_FILL:
            m.causal = True
            m.adds.append((_fill_mask(others, fill, like), ctx))
            m.dead_rows.append((both, ctx))
        else:
            m.adds.append((_fill_mask(both, fill, like), ctx))
    m.joint_causal = []


def _add_keep(m: _Mask, keep: Value, ctx: tuple[Dim, ...], fill: float, like: Node) -> None:
    leaves = []
    tril = None
    for leaf in _and_leaves(keep):
        arr = _const_leaf(leaf)
        if arr is not None and arr.dtype == np.bool_:
            if arr.all():
                continue
            if _is_tril(arr, ctx):
                tril = leaf
                continue
        leaves.append(leaf)
    if tril is not None:
        if fill == -math.inf:
            m.causal = True
        elif not leaves:
            m.soft_causal.append((tril, ctx, fill))
    if not leaves:
        return
    k = leaves[0]
    for leaf in leaves[1:]:
        k = _build("and", [k, leaf], like)
    if tril is not None and fill != -math.inf:
        m.joint_causal.append((tril, k, ctx, fill))  # one finite fill over causal and padding
        return
    if fill == -math.inf:
        m.keeps.append((k, ctx))
    else:
        m.adds.append((_fill_mask(k, fill, like), ctx))


def _add_additive(m: _Mask, v: Value, ctx: tuple[Dim, ...], mult: float, like: Node) -> None:
    n = v.node
    if n.op == "add":
        for i in n.inputs:
            _add_additive(m, i, ctx, mult, like)
        return
    if n.op == "where":
        c, a, b = n.inputs
        za, zb = scalar_const(a), scalar_const(b)
        if za == 0.0 and zb is not None and zb <= NEG_LIMIT:
            _add_keep(m, c, ctx, zb * mult, n)
            return
        if zb == 0.0 and za is not None and za <= NEG_LIMIT:
            _add_keep(m, _build("not", [c], n), ctx, za * mult, n)
            return
    arr = const_array(v)
    if arr is not None and arr.dtype.kind == "f":
        if not arr.any():
            return
        neg = arr[arr != 0]
        if neg.size and np.all(neg == neg.reshape(-1)[0]) and neg.reshape(-1)[0] <= NEG_LIMIT:
            keep = constant(arr == 0)
            _add_keep(m, keep, ctx, float(neg.reshape(-1)[0]) * mult, n)
            return
    if mult != 1.0:
        v = _build("mul", [v, constant(np.asarray(mult, _dtype(v).to_numpy()))], like)
    m.adds.append((v, ctx))


def _place(v: Value, ctx: tuple[Dim, ...], full: tuple[Dim, ...], like: Node) -> Value:
    """A mask given relative to a chain tensor of shape ``ctx`` as a mask over ``full``
    ([B, H, S, T])."""
    if tuple(ctx) == tuple(full) and len(_shape(v)) <= 4:
        return v
    if _shape(v) != tuple(ctx):
        v = _build("expand", [v], like, shape=tuple(ctx))
    return reshape_to(v, full, like)


def _combine_mask(m: _Mask, full: tuple[Dim, ...], dt: DType, like: Node) -> Value | None:
    keeps = [_place(v, c, full, like) for v, c in m.keeps]
    adds = [_place(v, c, full, like) for v, c in m.adds]
    keep = keeps[0] if keeps else None
    for k in keeps[1:]:
        keep = _build("and", [keep, k], like)  # type: ignore[list-item]
    if not adds:
        return keep
    total = None
    for a in adds:
        if _dtype(a) != dt:
            a = _build("cast", [a], like, to=dt)
        total = a if total is None else _build("add", [total, a], like)
    assert total is not None
    if keep is not None:
        npdt = dt.to_numpy()
        ninf = _build("where", [keep, constant(np.zeros((), npdt)),
                                constant(np.asarray(-np.inf, npdt))], like)
        total = _build("add", [total, ninf], like)
    return total


def build_attention(mt: AttentionMatch, tr: Tr) -> Value:
    """The fused replacement of ``mt.pv``'s output (values translated by ``tr``)."""
    qk, pv = mt.qk, mt.pv
    like = mt.softmax
    B, H = mt.B, mt.H
    a, b = (tr(x) for x in qk.inputs)
    v = tr(pv.inputs[1])
    S, T = _shape(qk.out)[-2:]
    D, Dv = _shape(a)[-1], _shape(v)[-1]
    q4 = reshape_to(a, (B, H, S, D), like)
    kt4 = b if mt.mqa_k else reshape_to(b, (B, H, D, T), like)
    k4 = transpose_to(kt4, (0, 1, 3, 2), like)
    v4 = v if mt.mqa_v else reshape_to(v, (B, H, T, Dv), like)
    q4, qs = _unscale(q4)
    k4, ks = _unscale(k4)
    k4, v4 = _gqa(k4, v4, B, H, T, D, Dv)
    m = _Mask()
    for t in mt.terms:
        val = tr(t.value)
        if t.kind == "keep":
            if t.negate:
                val = _build("not", [val], like)
            _add_keep(m, val, t.ctx, t.fill, like)
        else:
            _add_additive(m, val, t.ctx, t.mult, like)
    _settle(m, like, split_joint=_dtype(q4) == DType.f32)
    full = (B, H, S, T)
    mask = _combine_mask(m, full, _dtype(q4), like)
    ins = [q4, k4, v4] + ([mask] if mask is not None else [])
    out = _build("attention", ins, like, scale=float(mt.scale * qs * ks), causal=m.causal)
    for keep, ctx in m.dead_rows:
        out = _dead_rows_mean(out, keep, ctx, full, v4, like)
    want = pv.out_types[0]
    assert isinstance(want, TensorType)
    if _dtype(out) != want.dtype:
        out = _build("cast", [out], like, to=want.dtype)
    return reshape_to(out, tuple(want.shape or ()), pv)


def _dead_rows_mean(out: Value, keep: Value, ctx: tuple[Dim, ...], full: tuple[Dim, ...],
                    v4: Value, like: Node) -> Value:
    """``out`` [B, H, S, Dv] with every query row whose ``keep`` row is all False replaced by
    the mean of v over all keys (what softmax of equal scores gives)."""
    B, H, S, T = full
    k = _place(keep, ctx, full, like)  # bool, broadcastable to [B, H, S, T]
    kf = _build("cast", [k], like, to=DType.f32)
    rank = len(_shape(kf))
    anyk = _build("reduce_max", [kf], like, axes=(rank - 1,), keepdims=True)
    dead = _build("equal", [anyk, constant(np.zeros((), np.float32))], like)
    vm = _build("reduce_mean", [v4], like, axes=(2,), keepdims=True)  # [B, Hkv, 1, Dv]
    hkv, dv = _shape(v4)[1], _shape(v4)[3]
    if hkv != H:  # GQA: query head h reads kv head h // (H / Hkv)
        g = H // hkv  # type: ignore[operator]
        vm = reshape_to(vm, (B, hkv, 1, 1, dv), like)
        vm = _build("expand", [vm], like, shape=(B, hkv, g, 1, dv))
        vm = reshape_to(vm, (B, H, 1, dv), like)
    if _dtype(vm) != _dtype(out):
        vm = _build("cast", [vm], like, to=_dtype(out))
    return _build("where", [dead, vm, out], like)


def _gqa(k4: Value, v4: Value, B: Dim, H: Dim, T: Dim, D: Dim, Dv: Dim
         ) -> tuple[Value, Value]:
    """Repeated kv heads -> the un-repeated tensors (both or neither)."""
    if _shape(k4)[1] != H or _shape(v4)[1] != H:
        if _shape(k4)[1] == _shape(v4)[1]:
            return k4, v4
        # one side broadcast (MQA) and the other not: repeat explicitly
        k4 = k4 if _shape(k4)[1] == H else _build("expand", [k4], None, shape=(B, H, T, D))
        v4 = v4 if _shape(v4)[1] == H else _build("expand", [v4], None, shape=(B, H, T, Dv))
        return k4, v4
    uk, uv = _unrepeat(k4, B, T, D), _unrepeat(v4, B, T, Dv)
    if uk is not None and uv is not None and _shape(uk)[1] == _shape(uv)[1]:
        return uk, uv
    return k4, v4


# ---- refining existing attention nodes ---------------------------------------------------------

def refine_attention(n: Node, tr: Tr) -> Value | None:
    """An ``attention`` node with causal proven from its mask and repeated kv heads as GQA;
    None when nothing changes."""
    q, k, v = (tr(x) for x in n.inputs[:3])
    mask = tr(n.inputs[3]) if len(n.inputs) == 4 else None
    B, H, S, _ = _shape(q)
    T, D, Dv = _shape(k)[2], _shape(k)[3], _shape(v)[3]
    k2, v2 = _gqa(k, v, B, H, T, D, Dv)
    full = (B, H, S, T)
    causal = bool(n.attrs["causal"])
    new_mask = mask
    if mask is not None:
        m = _Mask()
        if _dtype(mask) == DType.bool:
            _add_keep(m, mask, full, -math.inf, n)
        else:
            _add_additive(m, mask, full, 1.0, n)
        _settle(m, n)
        if m.causal and not causal:
            causal = True
            new_mask = _combine_mask(m, full, _dtype(q), n)
        elif _dtype(mask) == DType.bool:
            new_mask = _combine_mask(m, full, _dtype(q), n)  # all-true leaves dropped
    if k2 is k and v2 is v and causal == bool(n.attrs["causal"]) and new_mask is mask:
        return None
    ins = [q, k2, v2] + ([new_mask] if new_mask is not None else [])
    return _build("attention", ins, n, scale=n.attrs["scale"], causal=causal)


# ---- the pass ----------------------------------------------------------------------------------

def _describe(mt: AttentionMatch) -> str:
    bits = [f"{mt.B}x{mt.H} heads"]
    if mt.terms:
        bits.append(f"{len(mt.terms)} mask term(s)")
    return ", ".join(bits)


def find_attention(g: Graph) -> tuple[list[Candidate], dict[int, AttentionMatch]]:
    """Every attention block of ``g``: fused candidates (matched or already ``attention``) and
    the failed ones with their reason. Returns the matches by id of their P V matmul."""
    users = users_with_outputs(g)
    cands: list[Candidate] = []
    matches: dict[int, AttentionMatch] = {}
    for n in g.nodes:
        if n.op == "attention":
            cands.append(Candidate("attention", "frontend", n, True,
                                   detail="scaled_dot_product_attention / Attention in the "
                                          "source"))
        elif n.op == "softmax":
            try:
                mt = match_attention(n, users)
            except NoMatch as e:
                cands.append(Candidate("attention", RULE, n, False, e.condition, e.node))
                continue
            if id(mt.pv) in matches:
                cands.append(Candidate("attention", RULE, n, False,
                                       "P V matmul already claimed by another block", mt.pv))
                continue
            matches[id(mt.pv)] = mt
            cands.append(Candidate("attention", RULE, n, True, detail=_describe(mt)))
    return cands, matches


class AttentionFlash(Pass):
    """Fuse every recognized attention block into one ``attention`` node."""

    name = "attention_flash"

    def run(self, g: Graph) -> PassResult:
        cands, matches = find_attention(g)
        builders: dict[int, Callable[[Tr], Sequence[Value]]] = {}
        for key, mt in matches.items():
            builders[key] = (lambda m: lambda tr: (build_attention(m, tr),))(mt)
        refined = 0
        for n in g.nodes:
            if n.op == "attention":
                def refine(tr: Tr, node: Node = n) -> Sequence[Value]:
                    nonlocal refined
                    r = refine_attention(node, tr)
                    if r is None:
                        return node.with_inputs(tuple(tr(x) for x in node.inputs)).outputs
                    refined += 1
                    return (r,)
                builders[id(n)] = refine
        out = rebuild(g, builders) if builders else g
        stats: dict[str, object] = {"attention_fused": len(matches),
                                    "attention_refined": refined,
                                    "attention_not_fused": sum(1 for c in cands if not c.fused)}
        att = [n for n in out.nodes if n.op == "attention"]
        stats["attention_causal"] = sum(1 for n in att if n.attrs["causal"])
        stats["attention_gqa"] = sum(1 for n in att
                                     if _shape(n.inputs[0])[1] != _shape(n.inputs[1])[1])
        add_notes(stats, cands)
        return PassResult(out, bool(matches) or refined > 0, stats)
