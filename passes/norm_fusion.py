"""RMSNorm composition -> one ``rms_norm`` op.

Anchor: every root of a mean of squares, i.e. every ``rsqrt``, ``sqrt`` and ``pow`` by a scalar
constant +-0.5 (one candidate each). Matched meaning, y = x * (mean(x*x) + eps)^(-1/2) [* w],
in every spelling that remains after ``default_passes()`` (canonicalize puts constants on the
right and turns ``x / c`` into ``x * (1/c)`` only for a constant ``c``, so the roots stay):

    a    = add(reduce_mean(pow(x, 2) | mul(x, x), axes=(last,), keepdims), eps)
    inv  = rsqrt(a) | pow(a, -0.5)                       (torch.export: rsqrt)
         | div(1, r) | reciprocal(r)                     (legacy ONNX: Div(1, Sqrt);
           with r = sqrt(a) | pow(a, 0.5)                 dynamo ONNX: Reciprocal(Sqrt))
    norm = mul(x, inv) | div(x, r)                       (either operand order for mul)
    [ then mul(norm, w) with a constant (or graph input) weight w of size N ]

``eps`` must be a non-negative scalar constant, the mean a keepdims mean over the last axis only.
Mixed precision (HF LlamaRMSNorm / T5LayerNorm in float16 / bfloat16):
``x = cast(x0, f32)`` normalized, then ``cast(norm, x0's dtype)`` [* w] fuses into
``rms_norm(x0, w)``, whose meaning for those dtypes is exactly that (statistics in float32, the
normalized value rounded to the input type before the scale, docs/ops.md). Without the cast back
the norm fuses in float32 on the cast value.

The rewrite changes only float rounding (x / sqrt vs x * (1/sqrt), the order of the weight
multiply). The weight multiply is folded into ``rms_norm``'s scale (ones when absent). LayerNorm
needs no rule here: both frontends already lift it to ``layer_norm`` (ONNX LayerNormalization,
aten native_layer_norm). Every accepted spelling is a rule of ``rules/rms_norm_fusion.rules``.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from graphopt.ir.node import ConstData, Node, Value, constant
from graphopt.ir.types import DType, TensorType
from graphopt.rewrite.context import MatchContext, scalar_const
from graphopt.rewrite.match import Match, fail
from graphopt.rewrite.passes import RewritePass
from graphopt.rewrite.rule import Rule

_LOW = (DType.f16, DType.bf16)  # rms_norm computes their statistics in float32


class RmsMatch(NamedTuple):
    x: Value  # the rms_norm input (x0 of the cast form)
    eps: float
    out: Node  # the node whose output rms_norm replaces
    weight: Value | None  # shape (N,) or (1, ..., 1, N); None: ones
    spelling: str


def _float_scalar(v: Value) -> float | None:
    """A one-element float constant's value (integer constants are no exponents / epsilons)."""
    c = scalar_const(v)
    t = v.type
    return c if c is not None and isinstance(t, TensorType) and t.dtype.is_float else None


def _other(n: Node, v: Value) -> Value:
    a, b = n.inputs
    return b if a == v else a


def root_kind(n: Node) -> str | None:
    """``sqrt`` for sqrt(a) / pow(a, 0.5), ``rsqrt`` for rsqrt(a) / pow(a, -0.5), else None."""
    if n.op in ("sqrt", "rsqrt"):
        return n.op
    if n.op == "pow":
        e = _float_scalar(n.inputs[1])
        if e == 0.5:
            return "sqrt"
        if e == -0.5:
            return "rsqrt"
    return None


def _mean_square(root: Node) -> tuple[Value, float]:
    """(x, eps) of root = f(mean(x*x) + eps)."""
    add = root.inputs[0].node
    if add.op != "add":
        raise fail(f"{root.op} of something other than mean + eps", add)
    eps = _float_scalar(add.inputs[1])
    if eps is None or not eps >= 0 or math.isinf(eps):
        raise fail("epsilon is not a non-negative scalar constant", add)
    mean = add.inputs[0].node
    if mean.op != "reduce_mean" or not mean.attrs["keepdims"]:
        raise fail("not a keepdims mean of squares", mean)
    sq = mean.inputs[0].node
    if sq.op == "pow" and _float_scalar(sq.inputs[1]) == 2.0:
        x = sq.inputs[0]
    elif sq.op == "mul" and sq.inputs[0] == sq.inputs[1]:
        x = sq.inputs[0]
    else:
        raise fail("mean of something other than x*x", sq)
    t = x.type
    if not isinstance(t, TensorType) or not t.shape or not isinstance(t.shape[-1], int):
        raise fail("x has no static last axis", sq)
    last = len(t.shape) - 1
    if tuple(mean.attrs["axes"]) != (last,):
        raise fail(f"mean over axes {mean.attrs['axes']}, not the last axis", mean)
    if add.out_types[0] != mean.out_types[0]:
        raise fail("epsilon broadcasts the mean to another shape", add)
    return x, eps


def _normalizing(root: Node, x: Value, ctx: MatchContext) -> tuple[Node, str]:
    """The node computing x / sqrt(a) from the root, and the spelling."""
    kind = root_kind(root)
    name = root.op if root.op != "pow" else f"pow(., {'-' if kind == 'rsqrt' else ''}0.5)"
    if kind == "rsqrt":
        inv, spelling = root, f"x * {name}"
    else:
        u, _ = ctx.only_user(root, name)
        if u.op == "reciprocal":
            inv, spelling = u, f"x * reciprocal({name})"
        elif u.op == "div" and u.inputs[1] == root.out and u.inputs[0] != root.out:
            if u.inputs[0] == x:
                return u, f"x / {name}"
            if _float_scalar(u.inputs[0]) != 1.0:
                raise fail(f"divides something other than x or 1 by {name}", u)
            inv, spelling = u, f"x * (1 / {name})"
        else:
            raise fail(f"{name} is neither inverted (reciprocal, 1 / .) nor divides x", u)
    us = ctx.users_of(inv)
    norm = next((u for u, i in us if i >= 0 and u.op == "mul" and _other(u, inv.out) == x),
                None)
    if norm is None or len(us) != 1:
        raise fail(f"{inv.op} is not used only to scale x", inv)
    return norm, spelling


def _weight(out: Node, n: int, ctx: MatchContext) -> tuple[Node, Value] | None:
    """(the weight multiply, w) when ``out``'s only user multiplies it by a size-N weight."""
    us = ctx.users_of(out)
    if len(us) != 1 or us[0][1] < 0 or us[0][0].op != "mul":
        return None
    wmul = us[0][0]
    w = _other(wmul, out.out)
    t = w.type
    if w == out.out or w.node.op not in ("constant", "input") or not isinstance(t, TensorType):
        return None
    ot = out.out_types[0]
    assert isinstance(ot, TensorType) and ot.shape is not None
    if (t.dtype != ot.dtype or not t.is_static or not t.shape or t.shape[-1] != n
            or len(t.shape) > len(ot.shape) or any(d != 1 for d in t.shape[:-1])
            or wmul.out_types[0] != ot):
        return None
    return wmul, w


def match_rms(root: Node, ctx: MatchContext) -> RmsMatch:
    """The RMSNorm rooted at ``root`` (a sqrt / rsqrt / pow by +-0.5); MatchFail when it is
    not."""
    x, eps = _mean_square(root)
    norm, spelling = _normalizing(root, x, ctx)
    if norm.out_types[0] != x.type:
        raise fail("the normalized value's type differs from x's", norm)
    t = x.type
    assert isinstance(t, TensorType) and t.shape is not None
    src, out = x, norm
    if x.node.op == "cast":
        x0 = x.node.inputs[0]
        dt0 = x0.type.dtype if isinstance(x0.type, TensorType) else None
        us = ctx.users_of(norm)
        if (dt0 in _LOW and t.dtype == DType.f32 and len(us) == 1 and us[0][1] >= 0
                and us[0][0].op == "cast" and us[0][0].attrs["to"] == dt0):
            src, out = x0, us[0][0]
            spelling += f" in f32, cast from/to {dt0.value}"
    n = t.shape[-1]
    assert isinstance(n, int)
    wm = _weight(out, n, ctx)
    if wm is not None:
        return RmsMatch(src, eps, wm[0], wm[1], spelling)
    return RmsMatch(src, eps, out, None, spelling)


def _ones(n: int, dt: DType) -> Value:
    try:
        return constant(ConstData(np.ones(n, dt.to_numpy())))
    except TypeError:  # bfloat16 has no numpy form
        return Node.build("cast", (constant(ConstData(np.ones(n, np.float32))),),
                          {"to": dt}).out


def _scale(w: Value | None, n: int, dt: DType) -> Value:
    if w is None:
        return _ones(n, dt)
    t = w.type
    if isinstance(t, TensorType) and t.shape == (n,):
        return w
    return Node.build("reshape", (w,), {"shape": (n,)}).out


class RmsNormRule(Rule):
    """x * (mean(x*x) + eps)^(-1/2) [* w] in any spelling of the root -> rms_norm(x, w)."""

    name = "rms_norm_fusion"
    place = "rms_norm"
    place_title = "RMSNorm compositions"
    anchors = frozenset({"rsqrt", "sqrt", "pow"})
    pass_name = "rms_norm_fusion"

    def match(self, n: Node, ctx: MatchContext) -> Match | None:
        if root_kind(n) is None:
            return None  # a pow by another exponent (a square, a cube) is no root
        m = match_rms(n, ctx)
        w = "with weight" if m.weight is not None else "no weight"
        return Match(roots=[m.out.out], data=m, detail=f"epsilon={m.eps:g}, {w}",
                     spelling=m.spelling)

    def build(self, m: Match) -> Value:
        rm: RmsMatch = m.data
        xt = m.tr(rm.x)
        t = xt.type
        assert isinstance(t, TensorType) and t.shape is not None
        n = t.shape[-1]
        assert isinstance(n, int)
        w = m.tr(rm.weight) if rm.weight is not None else None
        return Node.build("rms_norm", (xt, _scale(w, n, t.dtype)),
                          {"axis": len(t.shape) - 1, "epsilon": rm.eps}, rm.out.origin).out


class RmsNormFusion(RewritePass):
    """Fuse RMSNorm compositions into one ``rms_norm`` node."""

    name = "rms_norm_fusion"
    rules = (RmsNormRule(),)
