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

Engine form: ``AttentionRule`` (anchor softmax, place "attention") and ``AttentionRefineRule``
(anchor attention) are matcher hooks; the sweep driver records every softmax as a candidate
(matched, or the reason and culprit node) and rebuilds the graph once. Every spelling above is a
rule of ``passes/rules/attention_flash.rules`` (proven, or float-tested where only floating point
makes it exact, and replayed through this pass); the mask algebra is ``attention_mask.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

from graphopt.errors import GraphOptError
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node, Value
from graphopt.ir.types import Dim, DType, TensorType, dim_product
from graphopt.rewrite.context import MatchContext, Users, scalar_const, shape_of
from graphopt.rewrite.match import Match, fail
from graphopt.rewrite.passes import RewritePass, Stats
from graphopt.rewrite.rule import Rule
from graphopt.rewrite.trace import Candidate

from .attention_mask import (NEG_LIMIT, MaskSet, MaskTerm, build, dead_rows_mean, dtype_of,
                             reshape_to, transpose_to)

RULE = "attention_flash"
REFINE_RULE = "attention_refine"
_MAX_CHAIN = 64

Tr = Callable[[Value], Value]


def _identity(v: Value) -> Value:
    return v


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

    @property
    def spelling(self) -> str:
        """The ops of the block from Q K^T to P V, in data order."""
        return " > ".join(n.op for n in [self.qk, *self.chain, self.pv])


def _users_count(users: Users, n: Node) -> int:
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


def _walk_scores(x: Value, users: Users
                 ) -> tuple[Node, float, list[MaskTerm], list[Node]]:
    """From the softmax input back to the Q K^T matmul."""
    scale = 1.0
    terms: list[MaskTerm] = []
    chain: list[Node] = []
    cur = x
    for _ in range(_MAX_CHAIN):
        n = cur.node
        if _users_count(users, n) != 1:
            raise fail(f"score tensor {n.op} has {_users_count(users, n)} users "
                       f"(needed only by the softmax)", n)
        if n.op == "matmul":
            if any(i.node.op == "constant" for i in n.inputs):
                raise fail("score matmul has a constant operand (a linear layer, not "
                           "Q K^T)", n)
            return n, scale, terms, chain
        chain.append(n)
        ctx = shape_of(cur)
        if n.op == "mul":
            a, b = n.inputs
            c = scalar_const(b) if scalar_const(a) is None else scalar_const(a)
            if c is None:
                raise fail("score multiplied by a non-constant or non-scalar factor", n)
            if not c > 0:
                raise fail(f"score scale {c} is not positive", n)
            scale *= c
            cur = a if scalar_const(a) is None else b
        elif n.op == "add":
            a, b = n.inputs
            ra, rb = _reaches_matmul(a), _reaches_matmul(b)
            if ra == rb:
                raise fail("cannot tell the scores from the mask in this add "
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
                raise fail("where on the scores without a very negative constant fill "
                           f"(<= {NEG_LIMIT:g})", n)
        elif n.op == "cast":
            src = n.inputs[0].type
            if not (isinstance(src, TensorType) and src.dtype.is_float
                    and n.attrs["to"].is_float):
                raise fail("non-float cast on the scores", n)
            cur = n.inputs[0]
        elif n.op == "reshape":
            if shape_of(n.inputs[0])[-2:] != shape_of(cur)[-2:]:
                raise fail("reshape on the scores changes the query/key axes", n)
            cur = n.inputs[0]
        elif n.op == "identity":
            cur = n.inputs[0]
        else:
            raise fail(f"score path reaches {n.op} (not a matmul, scale, mask, cast or "
                       f"reshape)", n)
    raise fail("score chain too long", x.node)


def _nan_guard(p: Node, us: list[tuple[Node, int]], users: Users) -> list[Node] | None:
    """``[isnan, where]`` when the only users of ``p`` are ``isnan(p)`` and
    ``where(isnan(p), 0, p)`` (the isnan read by that where alone): the guard zeroes the NaN
    rows a softmax over all -inf gives, which the fused op gives as 0 too."""
    if len(us) != 2 or any(pos < 0 for _, pos in us):
        return None
    isnan = next((u for u, pos in us if u.op == "isnan"), None)
    where = next((u for u, pos in us if u.op == "where"), None)
    if isnan is None or where is None or len(users.get(isnan, [])) != 1:
        return None
    c, a, b = where.inputs
    if c != isnan.out or b != p.out or scalar_const(a) != 0.0 or where.out_types != p.out_types:
        return None
    return [isnan, where]


def _walk_probs(sm: Node, users: Users) -> tuple[Node, list[Node]]:
    """From the softmax forward to the P V matmul."""
    cur = sm
    chain: list[Node] = []
    for _ in range(_MAX_CHAIN):
        us = users.get(cur, [])
        guard = _nan_guard(cur, us, users)
        if guard is not None:  # where(isnan(p), 0, p): torch's SDPA decomposition
            chain += guard
            cur = guard[-1]
            continue
        if len(us) != 1:
            raise fail(f"attention probabilities ({cur.op}) have {len(us)} users "
                       f"(needed only by the P V matmul)", cur)
        u, pos = us[0]
        if pos < 0:
            raise fail("attention probabilities are a graph output", cur)
        if u.op == "matmul":
            if pos != 0:
                raise fail("probabilities are the right operand of the matmul", u)
            if u.inputs[1].node.op == "constant":
                raise fail("probabilities multiply a constant (not values)", u)
            return u, chain
        if u.op == "reshape":
            if shape_of(u.inputs[0])[-2:] != shape_of(u.out)[-2:]:
                raise fail("reshape of the probabilities changes the query/key axes", u)
        elif u.op == "cast":
            if not (u.attrs["to"].is_float):
                raise fail("non-float cast of the probabilities", u)
        elif u.op != "identity":
            raise fail(f"probabilities feed {u.op}, not the P V matmul", u)
        chain.append(u)
        cur = u
    raise fail("probability chain too long", sm)


def match_attention(sm: Node, users: Users) -> AttentionMatch:
    """Match one attention block around softmax ``sm``; raises MatchFail with the reason."""
    x = sm.inputs[0]
    rank = len(shape_of(x))
    if rank < 2 or sm.attrs["axis"] != rank - 1:
        raise fail(f"softmax over axis {sm.attrs['axis']} of a rank-{rank} tensor, not the "
                   f"last axis", sm)
    if not dtype_of(x).is_float:
        raise fail("softmax over a non-float tensor", sm)
    qk, scale, terms, chain = _walk_scores(x, users)
    pv, pchain = _walk_probs(sm, users)
    a, b = qk.inputs
    p, v = pv.inputs
    sa, sb, sv, sp = shape_of(a), shape_of(b), shape_of(v), shape_of(pv.out)
    if len(sa) < 2 or len(sb) < 2 or len(sv) < 2:
        raise fail("score matmul on vectors", qk)
    S, T = shape_of(qk.out)[-2:]
    if shape_of(x)[-2:] != (S, T):
        raise fail("softmax input does not have the score matmul's query/key axes", sm)
    if sv[-2] != T:
        raise fail(f"values have {sv[-2]} rows, keys {T}", pv)
    if S == 0 or T == 0:  # ONNX Runtime's Attention kernel rejects empty sequences
        raise fail(f"{S} queries and {T} keys: an empty sequence", qk)
    # the head layout: from a 4-D tensor of the chain, else batch 1 with the batch as heads
    shapes = [shape_of(x), shape_of(qk.out), sp] + [t.ctx for t in terms]
    four = [s for s in shapes if len(s) == 4]
    if four:
        B, H = four[0][:2]
    elif len(shape_of(qk.out)) == 3:
        B, H = 1, shape_of(qk.out)[0]
    else:
        B, H = 1, 1
    BH = dim_product([B, H])
    for s, who in ((shape_of(x), sm), (shape_of(qk.out), qk), (sp, pv), (sa, qk)):
        if dim_product(list(s[:-2])) != BH:
            raise fail(f"batch dims {list(s[:-2])} are not the {B}x{H} batch x heads of "
                       f"the block", who)
    if len(sp) == 4 and tuple(sp[:2]) != (B, H):
        raise fail(f"output batch/heads {list(sp[:2])} differ from {B}x{H}", pv)
    mqa_k = mqa_v = False
    if dim_product(list(sb[:-2])) != BH:
        if len(sb) == 4 and sb[0] == B and sb[1] == 1:
            mqa_k = True
        else:
            raise fail(f"key batch dims {list(sb[:-2])} do not match {B}x{H}", qk)
    if dim_product(list(sv[:-2])) != BH:
        if len(sv) == 4 and sv[0] == B and sv[1] == 1:
            mqa_v = True
        else:
            raise fail(f"value batch dims {list(sv[:-2])} do not match {B}x{H}", pv)
    if not (dtype_of(a) == dtype_of(b) == dtype_of(v)) or not dtype_of(a).is_float:
        raise fail("query, key and value dtypes differ or are not float", qk)
    if isinstance(H, int) is False and (mqa_k or mqa_v):
        raise fail("MQA with a symbolic head count", qk)
    return AttentionMatch(sm, qk, pv, scale, terms, B, H, mqa_k, mqa_v,
                          chain[::-1] + [sm] + pchain)


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
    if c is None or not c > 0 or shape_of(base) != shape_of(cur):
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
        es, ss = shape_of(e), shape_of(src)
        if len(es) == 5 and len(ss) == 5 and ss[2] == 1 and ss[:2] == es[:2] \
                and ss[3:] == es[3:] and es[0] == B and es[3] == T and es[4] == D:
            return reshape_to(src, (B, es[1], T, D), n)
    return None


def _keys(b: Value, shape: tuple[Dim, ...], mqa: bool, like: Node) -> Value:
    """The keys as [B, H, T, D] from the right operand ``b`` ([.., D, T]) of Q K^T: ``b``'s
    last two axes swapped back (a transpose of the last two axes is looked through, so the
    3-D bmm form's keys are a reshape of the keys, not a transpose of a transpose)."""
    if mqa:
        return transpose_to(b, (0, 1, 3, 2), like)
    n, r = b.node, len(shape_of(b))
    if n.op == "transpose" and n.attrs["perm"] == (*range(r - 2), r - 1, r - 2):
        return reshape_to(n.inputs[0], shape, like)
    B, H, T, D = shape
    return transpose_to(reshape_to(b, (B, H, D, T), like), (0, 1, 3, 2), like)


def build_attention(mt: AttentionMatch, tr: Tr) -> Value:
    """The fused replacement of ``mt.pv``'s output (values translated by ``tr``)."""
    qk, pv = mt.qk, mt.pv
    like = mt.softmax
    B, H = mt.B, mt.H
    a, b = (tr(x) for x in qk.inputs)
    v = tr(pv.inputs[1])
    S, T = shape_of(qk.out)[-2:]
    D, Dv = shape_of(a)[-1], shape_of(v)[-1]
    q4 = reshape_to(a, (B, H, S, D), like)
    k4 = _keys(b, (B, H, T, D), mt.mqa_k, like)
    v4 = v if mt.mqa_v else reshape_to(v, (B, H, T, Dv), like)
    q4, qs = _unscale(q4)
    k4, ks = _unscale(k4)
    k4, v4 = _gqa(k4, v4, B, H, T, D, Dv)
    m = MaskSet()
    for t in mt.terms:
        val = tr(t.value)
        if t.kind == "keep":
            if t.negate:
                val = build("not", [val], like)
            m.add_keep(val, t.ctx, t.fill, like)
        else:
            m.add_additive(val, t.ctx, t.mult, like)
    m.settle(like, split_joint=dtype_of(q4) == DType.f32)
    full = (B, H, S, T)
    mask = m.combine(full, dtype_of(q4), like)
    ins = [q4, k4, v4] + ([mask] if mask is not None else [])
    out = build("attention", ins, like, scale=float(mt.scale * qs * ks), causal=m.causal)
    for keep, ctx in m.dead_rows:
        out = dead_rows_mean(out, keep, ctx, full, v4, like)
    want = pv.out_types[0]
    assert isinstance(want, TensorType)
    if dtype_of(out) != want.dtype:
        out = build("cast", [out], like, to=want.dtype)
    return reshape_to(out, tuple(want.shape or ()), pv)


def _gqa(k4: Value, v4: Value, B: Dim, H: Dim, T: Dim, D: Dim, Dv: Dim
         ) -> tuple[Value, Value]:
    """Repeated kv heads -> the un-repeated tensors (both or neither)."""
    if shape_of(k4)[1] != H or shape_of(v4)[1] != H:
        if shape_of(k4)[1] == shape_of(v4)[1]:
            return k4, v4
        # one side broadcast (MQA) and the other not: repeat explicitly
        k4 = k4 if shape_of(k4)[1] == H else build("expand", [k4], None, shape=(B, H, T, D))
        v4 = v4 if shape_of(v4)[1] == H else build("expand", [v4], None, shape=(B, H, T, Dv))
        return k4, v4
    uk, uv = _unrepeat(k4, B, T, D), _unrepeat(v4, B, T, Dv)
    if uk is not None and uv is not None and shape_of(uk)[1] == shape_of(uv)[1]:
        return uk, uv
    return k4, v4


# ---- refining existing attention nodes ---------------------------------------------------------

def refine_attention(n: Node, tr: Tr) -> Value | None:
    """An ``attention`` node with causal proven from its mask and repeated kv heads as GQA;
    None when nothing changes."""
    q, k, v = (tr(x) for x in n.inputs[:3])
    mask = tr(n.inputs[3]) if len(n.inputs) == 4 else None
    B, H, S, _ = shape_of(q)
    T, D, Dv = shape_of(k)[2], shape_of(k)[3], shape_of(v)[3]
    k2, v2 = _gqa(k, v, B, H, T, D, Dv)
    full = (B, H, S, T)
    causal = bool(n.attrs["causal"])
    new_mask = mask
    if mask is not None:
        m = MaskSet()
        if dtype_of(mask) == DType.bool:
            m.add_keep(mask, full, -math.inf, n)
        else:
            m.add_additive(mask, full, 1.0, n)
        m.settle(n)
        if m.causal and not causal:
            causal = True
            new_mask = m.combine(full, dtype_of(q), n)
        elif dtype_of(mask) == DType.bool:
            new_mask = m.combine(full, dtype_of(q), n)  # all-true leaves dropped
    if k2 is k and v2 is v and causal == bool(n.attrs["causal"]) and new_mask is mask:
        return None
    ins = [q, k2, v2] + ([new_mask] if new_mask is not None else [])
    return build("attention", ins, n, scale=n.attrs["scale"], causal=causal)


# ---- the rules and the pass --------------------------------------------------------------------

def _fused_node(out: Value) -> Node:
    """The ``attention`` node of a built replacement (below the output's cast / reshape and the
    dead-row fix-up)."""
    n = out.node
    while n.op != "attention":
        n = n.inputs[2 if n.op == "where" else 0].node
    return n


def _describe(n: Node, B: Dim) -> str:
    """What an ``attention`` node is: heads, causal, GQA, its mask input."""
    H, Hkv = shape_of(n.inputs[0])[1], shape_of(n.inputs[1])[1]
    bits = [f"{B}x{H} heads"]
    if n.attrs["causal"]:
        bits.append("causal")
    if H != Hkv:
        bits.append(f"GQA {H}/{Hkv} heads")
    if len(n.inputs) == 4:
        kind = "bool" if dtype_of(n.inputs[3]) == DType.bool else "additive"
        bits.append(f"{kind} mask")
    return ", ".join(bits)


class AttentionRule(Rule):
    """softmax(Q K^T * scale + masks) V, in every spelling the module docstring lists ->
    one ``attention`` node. Anchor: every softmax (a softmax that is not the middle of an
    attention block is a candidate that says why)."""

    name = RULE
    place = "attention"
    place_title = "attention blocks"
    anchors = frozenset({"softmax"})
    pass_name = "attention_flash"

    def match(self, n: Node, ctx: MatchContext) -> Match:
        mt = match_attention(n, ctx.users)
        try:  # a dry build over the graph as it is: what the fused op is, and that it builds
            att = _fused_node(build_attention(mt, _identity))
        except GraphOptError as e:
            raise fail(f"the fused op cannot be built: {e.one_line()}", n) from e
        detail = _describe(att, mt.B)
        if mt.terms:
            detail += f", {len(mt.terms)} mask term(s)"
        return Match(roots=[mt.pv.out], data=mt, detail=detail, spelling=mt.spelling)

    def build(self, m: Match) -> Value:
        return build_attention(m.data, m.tr)


class AttentionRefineRule(Rule):
    """An existing ``attention`` node (torch's scaled_dot_product_attention, ONNX Attention):
    causal proven from its mask, repeated key/value heads as GQA. A node with nothing to refine
    is no candidate."""

    name = REFINE_RULE
    place = "attention"
    place_title = "attention blocks"
    anchors = frozenset({"attention"})
    pass_name = "attention_flash"

    def match(self, n: Node, ctx: MatchContext) -> Match | None:
        r = refine_attention(n, _identity)
        if r is None:
            return None
        what = []
        if r.node.attrs["causal"] and not n.attrs["causal"]:
            what.append("causal proven from the mask")
        if shape_of(r.node.inputs[1])[1] != shape_of(n.inputs[1])[1]:
            what.append("repeated kv heads as GQA")
        if len(r.node.inputs) != len(n.inputs) or (
                len(n.inputs) == 4 and r.node.inputs[3] != n.inputs[3]):
            what.append("mask simplified")
        return Match(roots=[n.out], data=n, detail=_describe(r.node, shape_of(n.inputs[0])[0]),
                     spelling="; ".join(what))

    def build(self, m: Match) -> Value:
        n: Node = m.data
        r = refine_attention(n, m.tr)
        return r if r is not None else n.with_inputs(tuple(m.tr(x) for x in n.inputs)).out


class AttentionFlash(RewritePass):
    """Fuse every recognized attention block into one ``attention`` node and refine the
    ``attention`` nodes already there. Stats: ``attention_fused`` / ``attention_not_fused``
    (softmax blocks), ``attention_refined``, and over the result ``attention_causal`` and
    ``attention_gqa``."""

    name = "attention_flash"
    rules = (AttentionRule(), AttentionRefineRule())

    def summarize(self, before: Graph, after: Graph, candidates: Sequence[Candidate]) -> Stats:
        att = [n for n in after.nodes if n.op == "attention"]
        return {
            "attention_fused": sum(1 for c in candidates if c.rule == RULE and c.matched),
            "attention_not_fused": sum(1 for c in candidates
                                       if c.rule == RULE and not c.matched),
            "attention_refined": sum(1 for c in candidates
                                     if c.rule == REFINE_RULE and c.matched),
            "attention_causal": sum(1 for n in att if n.attrs["causal"]),
            "attention_gqa": sum(1 for n in att
                                 if shape_of(n.inputs[0])[1] != shape_of(n.inputs[1])[1]),
        }
