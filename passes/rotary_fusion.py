"""HF-style rotary position embedding (rotate_half RoPE) -> one ``rotary_embedding`` op.

Anchor: every ``add`` / ``sub`` of two ``mul`` s one of which multiplies a rotate-like concat (a
concat, or a reshaped one, with a negated piece). Matched meaning, operands in any order:

    add(mul(x, C), mul(rotate_half(x), S))
    rotate_half(x) = concat(neg(x2), x1, axis=-1)       (x1 = x[..., :D/2], x2 = x[..., D/2:])
    sub(mul(x, C), mul(concat(x2, neg(x1)), S))        (the same value, other spelling)

where the halves are ``slice`` s of x along the last axis or the two outputs of a ``split``.
Conditions (each failure is reported with its node):

* x is 4-D [B, H, S, D] with a static even D and the result has x's type (no broadcast of x);
* C and S broadcast against x as [B' or 1, 1, S or 1, D]: no per-head values;
* the two halves of C along the last axis are equal, and those of S: a constant is compared
  bit for bit; a computed value is proven equal structurally: walking elementwise ops (whose
  other operands are proven too, or have last dim 1), casts, unsqueeze / reshape / expand /
  transpose / slice / gather / squeeze / tile that keep the last axis, down to a constant or to
  ``concat(a, a, axis=-1)`` (the same value twice; HF's ``cat((freqs, freqs), -1)``).

Then C == cat(c, c) with c = C[..., :D/2], and the add is exactly
``rotary_embedding(x, c', s')`` with the caches c' = c viewed as [B', S, D/2] (built as IR
slice / reshape / expand nodes; constant folding folds them when C is constant).
Interleaved (adjacent pairs: stack + flatten) and partial rotary over part of the head written
on the full x are not this op; they are reported with the reason. Partial rotary written the HF
way (rotate a slice of the head, concat the rest) fuses: the slice is a full-width x.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from graphopt.ir.node import Node, Value
from graphopt.ir.types import Dim, TensorType
from graphopt.rewrite.context import MatchContext, const_array, scalar_const, shape_of
from graphopt.rewrite.match import Match, MatchFail, fail
from graphopt.rewrite.passes import RewritePass
from graphopt.rewrite.rule import Rule

_DEPTH = 32  # how far the equal-halves proof walks back

# shape ops that keep a value's last axis as the last axis (when their own check holds)
_LAST_AXIS_OPS = ("unsqueeze", "squeeze", "reshape", "expand", "transpose", "slice", "gather",
                  "tile", "concat")


def _ranked(v: Value) -> bool:
    t = v.type
    return isinstance(t, TensorType) and t.shape is not None


# ---- rotate_half --------------------------------------------------------------------------------

def _negated(v: Value) -> tuple[Value, bool]:
    """(base, sign flipped) through ``neg`` and ``mul`` by -1."""
    neg = False
    while True:
        n = v.node
        if n.op == "neg":
            v, neg = n.inputs[0], not neg
        elif n.op == "mul" and scalar_const(n.inputs[1]) == -1.0 and \
                shape_of(n.inputs[0]) == shape_of(v):
            v, neg = n.inputs[0], not neg
        else:
            return v, neg


def _rotate_like(v: Value) -> bool:
    """A concat (or a reshaped one) with a negated piece: what rotate_half and its interleaved
    cousin look like, so the add is a RoPE candidate."""
    n = v.node
    if n.op == "reshape":
        n = n.inputs[0].node
    if n.op != "concat" or len(n.inputs) < 2:
        return False
    for i in n.inputs:
        b = i.node.inputs[0] if i.node.op == "unsqueeze" else i
        if _negated(b)[1]:
            return True
    return False


def _half_of(v: Value) -> tuple[Value, int, Dim]:
    """(x, start, length) when ``v`` is x[..., start:start+length] along x's last axis."""
    n = v.node
    if n.op == "slice":
        x = n.inputs[0]
        r = len(shape_of(x))
        a = n.attrs
        if tuple(a["axes"]) == (r - 1,) and tuple(a["steps"]) == (1,):
            return x, int(a["starts"][0]), shape_of(v)[-1]
        raise fail(f"slice {dict(axes=a['axes'], steps=a['steps'])} is not a unit-step cut "
                   f"of the last axis only", n)
    if n.op == "split":
        x = n.inputs[0]
        if n.attrs["axis"] == len(shape_of(x)) - 1:
            sizes = [int(s) for s in n.attrs["sizes"]]
            return x, sum(sizes[:v.index]), sizes[v.index]
        raise fail(f"split along axis {n.attrs['axis']}, not the last axis", n)
    raise fail(f"a piece of the rotated operand is {n.op}, not a slice / split of x along "
               f"the last axis", n)


def match_rotate(r: Value, sub: bool) -> tuple[Value, str]:
    """(x, spelling) when ``r`` is rotate_half(x) (for an add) or its negation concat(x2, -x1)
    (for a sub)."""
    n = r.node
    if n.op == "reshape" and n.inputs[0].node.op == "concat":
        raise fail("rotated operand is a reshape of a stack (interleaved adjacent pairs, "
                   "GPT-J style), not rotate_half's concat of the two halves", n)
    if n.op != "concat":
        raise fail(f"rotated operand is {n.op}, not a concat", n)
    rank = len(shape_of(r))
    if n.attrs["axis"] != rank - 1:
        raise fail(f"concat along axis {n.attrs['axis']}, not the last axis", n)
    if len(n.inputs) != 2:
        raise fail(f"rotated concat has {len(n.inputs)} pieces, not 2 halves (partial "
                   f"rotary over part of the head?)", n)
    (b0, neg0), (b1, neg1) = (_negated(i) for i in n.inputs)
    x0, s0, l0 = _half_of(b0)
    x1, s1, l1 = _half_of(b1)
    if x0 != x1:
        raise fail("the two halves are cut from different tensors", n)
    x = x0
    d = shape_of(x)[-1]
    if not isinstance(d, int) or d % 2:
        raise fail(f"head size D={d} is not a static even number", n)
    h = d // 2
    if (s0, l0, s1, l1) != (h, h, 0, h):
        raise fail(f"pieces are x[..., {s0}:{s0 + l0}] and x[..., {s1}:{s1 + l1}], not "
                   f"x[..., {h}:{d}] and x[..., 0:{h}] (D={d})", n)
    if (neg0, neg1) != ((False, True) if sub else (True, False)):
        want = "(x2, -x1) under a sub" if sub else "(-x2, x1)"
        raise fail(f"signs of the halves are ({'-' if neg0 else '+'}x2, "
                   f"{'-' if neg1 else '+'}x1), not rotate_half's {want}", n)
    if rank != 4:
        raise fail(f"x has rank {rank}, not 4 [B, H, S, D]", n)
    cut = "split" if b0.node.op == "split" else "slice"
    form = "x*cos - cat(x2, -x1)*sin" if sub else "x*cos + cat(-x2, x1)*sin"
    return x, f"{form}, halves by {cut}"


# ---- equal halves of cos / sin ------------------------------------------------------------------

def _const_halves_equal(a: np.ndarray) -> bool:
    """Bit-for-bit equality of the two halves along the last axis."""
    h = a.shape[-1] // 2
    lo, hi = np.ascontiguousarray(a[..., :h]), np.ascontiguousarray(a[..., h:])
    return lo.tobytes() == hi.tobytes()


def halves_equal(v: Value, what: str, depth: int = _DEPTH,
                 memo: dict[Value, MatchFail | None] | None = None) -> None:
    """Prove ``v[..., :D/2] == v[..., D/2:]`` or raise MatchFail naming the node that stops it."""
    memo = {} if memo is None else memo
    if v in memo:
        err = memo[v]
        if err is not None:
            raise err
        return
    try:
        _halves_equal(v, what, depth, memo)
    except MatchFail as e:
        memo[v] = e
        raise
    memo[v] = None


def _halves_equal(v: Value, what: str, depth: int, memo: dict[Value, MatchFail | None]) -> None:
    if not _ranked(v):
        raise fail(f"{what} has no known shape", v.node)
    shp = shape_of(v)
    if not shp or shp[-1] == 1:
        return  # constant along the last axis (broadcast)
    n = v.node
    d = shp[-1]
    if not isinstance(d, int) or d % 2:
        raise fail(f"{what}: last dim {d} is not a static even number", n)
    if n.op == "constant":
        a = const_array(v)
        if a is None:
            raise fail(f"{what}: constant without numpy data", n)
        if not _const_halves_equal(a):
            raise fail(f"the two halves of {what} along the last axis differ (a constant "
                       f"that is not cat(c, c))", n)
        return
    if depth <= 0:
        raise fail(f"cannot prove the two halves of {what} equal: too deep", n)

    def rec(u: Value) -> None:
        halves_equal(u, what, depth - 1, memo)

    rank = len(shp)
    if n.op == "concat" and n.attrs["axis"] == rank - 1:
        ins = list(n.inputs)
        k = len(ins)
        if k % 2 == 0 and ins[:k // 2] == ins[k // 2:]:
            return  # cat(a, a): HF's cat((freqs, freqs), -1)
        raise fail(f"cannot prove the two halves of {what} equal: concat of {k} inputs along "
                   f"the last axis is not cat(a, a) of one value", n)
    from graphopt.ops.registry import get_op

    if get_op(n.op).elementwise:
        for u in n.inputs:
            rec(u)  # broadcast operands of last dim 1 (scales, casts of scalars) pass at once
        return
    if n.op == "expand" and (not shape_of(n.inputs[0]) or shape_of(n.inputs[0])[-1] == 1):
        return  # broadcast along the last axis
    if n.op in _LAST_AXIS_OPS and _keeps_last_axis(n, v):
        for u in n.inputs[:1] if n.op != "concat" else n.inputs:
            rec(u)
        return
    raise fail(f"cannot prove the two halves of {what} equal: {n.op} is not followed (only "
               f"elementwise ops and shape ops keeping the last axis, down to a constant or "
               f"concat(a, a))", n)


def _keeps_last_axis(n: Node, v: Value) -> bool:
    """Whether output ``v``'s last axis is exactly the first input's last axis (same positions)."""
    x = n.inputs[0]
    if not _ranked(x):
        return False
    xs, vs = shape_of(x), shape_of(v)
    if not xs or xs[-1] != vs[-1]:
        return False
    r = len(xs)
    a = n.attrs
    if n.op == "unsqueeze":
        return len(vs) - 1 not in a["axes"]
    if n.op == "squeeze":
        return r - 1 not in a["axes"]
    if n.op in ("reshape", "expand"):
        return True  # same last dim: each row of D elements stays one row
    if n.op == "transpose":
        return a["perm"][-1] == r - 1
    if n.op == "slice":
        return r - 1 not in a["axes"]
    if n.op == "gather":
        return a["axis"] != r - 1
    if n.op == "tile":
        return a["repeats"][-1] == 1
    if n.op == "concat":
        return a["axis"] != r - 1
    return False


# ---- the match ----------------------------------------------------------------------------------

class RotaryMatch(NamedTuple):
    x: Value
    cos: Value
    sin: Value
    spelling: str


def _products(n: Node) -> list[tuple[Node, Node]]:
    """(the x*C mul, the rotate*S mul) orders to try for add / sub ``n``."""
    a, b = (i.node for i in n.inputs)
    if a.op != "mul" or b.op != "mul":
        return []
    return [(a, b)] if n.op == "sub" else [(a, b), (b, a)]


def is_candidate(n: Node) -> bool:
    return n.op in ("add", "sub") and any(
        _rotate_like(r) for _, rs in _products(n) for r in rs.inputs)


def match_rotary(n: Node) -> RotaryMatch:
    """x, C, S when add / sub ``n`` is x*C + rotate_half(x)*S with the conditions above; the
    first failure (in the order the operand orders are tried) otherwise."""
    first: MatchFail | None = None
    for xc, rs in _products(n):
        for k in (0, 1):
            r, s = rs.inputs[k], rs.inputs[1 - k]
            if not _rotate_like(r):
                continue
            try:
                return _match(n, xc, r, s)
            except MatchFail as e:  # falsy: test against None
                first = e if first is None else first
    raise first if first is not None else fail("no product of a rotate_half(x)", n)


def _match(n: Node, xc: Node, r: Value, s: Value) -> RotaryMatch:
    x, spelling = match_rotate(r, n.op == "sub")
    if not x.type.dtype.is_float:  # type: ignore[union-attr]
        raise fail(f"x {x.type} is not floating point", n)
    if xc.inputs[0] == x:
        c = xc.inputs[1]
    elif xc.inputs[1] == x:
        c = xc.inputs[0]
    else:
        raise fail("the other product is not x times cos (x is the rotated tensor)", xc)
    if n.out_types[0] != x.type:
        raise fail(f"result {n.out_types[0]} is not of x's type {x.type} (cos / sin "
                   f"broadcast x)", n)
    for v, what in ((c, "cos"), (s, "sin")):
        cs = shape_of(v)
        pad = (1,) * (4 - len(cs)) + cs
        if pad[1] != 1:
            raise fail(f"{what} {v.type} varies along axis 1 (heads, or a [B, S, H, D] "
                       f"layout), not [B, 1, S, D]", v.node)
        halves_equal(v, what)
    return RotaryMatch(x, c, s, spelling)


# ---- the rewrite --------------------------------------------------------------------------------

def cache_of(v: Value, x: Value, batch: Dim) -> Value:
    """[batch, S, D/2] cache from ``v`` (broadcastable to [B or 1, 1, S, D], halves equal)."""
    b, _, s, d = shape_of(x)
    h = d // 2  # type: ignore[operator]
    vs = shape_of(v)
    pad = (1,) * (4 - len(vs)) + vs
    if vs and vs[-1] != 1:
        r = len(vs)
        v = Node.build("slice", (v,), {"axes": (r - 1,), "starts": (0,), "ends": (h,),
                                       "steps": (1,)}).out
    small = (pad[0], pad[2], 1 if pad[3] == 1 else h)
    if shape_of(v) != small:
        v = Node.build("reshape", (v,), {"shape": small}).out
    want = (batch, s, h)
    if small != want:
        v = Node.build("expand", (v,), {"shape": want}).out
    return v


class RotaryRule(Rule):
    """x*C + rotate_half(x)*S (any operand order; slice or split halves; or the sub form)
    -> rotary_embedding(x, c, s) with [B', S, D/2] caches."""

    name = "rotary_fusion"
    place = "rotary"
    place_title = "rotary embeddings"
    anchors = frozenset({"add", "sub"})
    pass_name = "rotary_fusion"

    def match(self, n: Node, ctx: MatchContext) -> Match | None:
        if not is_candidate(n):
            return None  # an add of products none of which multiplies a rotate-like concat
        rm = match_rotary(n)
        _, h, _, d = shape_of(rm.x)
        return Match(roots=[n.out], data=rm, detail=f"{h} heads, head size {d}",
                     spelling=rm.spelling)

    def build(self, m: Match) -> Value:
        rm: RotaryMatch = m.data
        xt, ct, st = m.tr(rm.x), m.tr(rm.cos), m.tr(rm.sin)
        pads = [(1,) * (4 - len(shape_of(v))) + shape_of(v) for v in (ct, st)]
        batch = shape_of(xt)[0] if any(p[0] != 1 for p in pads) else 1
        caches = [cache_of(v, xt, batch) for v in (ct, st)]
        return Node.build("rotary_embedding", (xt, *caches), {}, m.roots[0].node.origin).out


class RotaryFusion(RewritePass):
    """Fuse HF-style rotate_half RoPE into one ``rotary_embedding`` node."""

    name = "rotary_fusion"
    rules = (RotaryRule(),)
