"""GELU compositions -> one ``gelu`` op (exact and tanh approximation), recognized by meaning.

Anchor: every ``erf`` and ``tanh``. From it the matcher walks forwards:

    t = erf(u) | tanh(u);  a = add(t, 1);  y = product of a with x and constants 0.5

where the product may be written in any order and grouping (``x * 0.5 * a``, ``(x * a) * 0.5``,
``0.5 * (x * a)`` ...). Then ``u`` is read as a polynomial in ``x`` (through ``add``, ``sub``,
``mul``, ``neg`` and ``pow`` by a constant integer) and must be

* exact:  u = x / sqrt(2)                                  -> gelu {approximate="none"}
* tanh:   u = sqrt(2/pi) * (x + 0.044715 x^3)              -> gelu {approximate="tanh"}

(coefficients to a relative 1e-4), so the scale may sit before or after the cube and
``x*x*x``, ``pow(x, 3)`` and pre-multiplied coefficients all match. ONNX exports it as Gelu from
opset 20 (the same composition below).
"""
from __future__ import annotations

import math

from graphopt.ir.node import Node, Value
from graphopt.ir.types import TensorType
from graphopt.rewrite.context import MatchContext, scalar_const
from graphopt.rewrite.match import Match, fail
from graphopt.rewrite.passes import RewritePass
from graphopt.rewrite.rule import Rule

EXACT = {1: 1.0 / math.sqrt(2.0)}
TANH = {1: math.sqrt(2.0 / math.pi), 3: math.sqrt(2.0 / math.pi) * 0.044715}
_REL = 1e-4
_MAX_DEGREE = 3

Poly = dict[int, float]


def poly(v: Value, x: Value, depth: int = 12) -> Poly | None:
    """``v`` as a polynomial in ``x`` ({power: coefficient}) over scalar constants; None when it
    is not one (or its degree exceeds 3)."""
    if v == x:
        return {1: 1.0}
    c = scalar_const(v)
    if c is not None:
        return {0: c}
    if depth <= 0:
        return None
    n = v.node
    if n.op in ("add", "sub", "mul"):
        a, b = (poly(i, x, depth - 1) for i in n.inputs)
        if a is None or b is None:
            return None
        if n.op == "mul":
            out = _mul(a, b)
        else:
            sign = -1.0 if n.op == "sub" else 1.0
            out = dict(a)
            for p, cb in b.items():
                out[p] = out.get(p, 0.0) + sign * cb
        return out if max(out, default=0) <= _MAX_DEGREE else None
    if n.op == "neg":
        a = poly(n.inputs[0], x, depth - 1)
        return None if a is None else {p: -c for p, c in a.items()}
    if n.op == "pow":
        e = scalar_const(n.inputs[1])
        if e is None or e != int(e) or not 1 <= e <= _MAX_DEGREE:
            return None
        a = poly(n.inputs[0], x, depth - 1)
        return None if a is None else _power(a, int(e))
    return None


def _mul(a: Poly, b: Poly) -> Poly:
    out: Poly = {}
    for pa, ca in a.items():
        for pb, cb in b.items():
            out[pa + pb] = out.get(pa + pb, 0.0) + ca * cb
    return out


def _power(a: Poly, e: int) -> Poly | None:
    out: Poly = {0: 1.0}
    for _ in range(e):
        out = _mul(out, a)
    return out if max(out, default=0) <= _MAX_DEGREE else None


def _same(p: Poly, want: Poly) -> bool:
    keys = {k for k, c in p.items() if c != 0.0} | set(want)
    return all(abs(p.get(k, 0.0) - want.get(k, 0.0)) <= _REL * abs(want.get(k, 1.0))
               for k in keys)


def _factors(v: Value, out: list[Value]) -> None:
    """The factors of a product tree of ``mul`` nodes."""
    if v.node.op == "mul":
        for i in v.node.inputs:
            _factors(i, out)
    else:
        out.append(v)


def match_gelu(t: Node, ctx: MatchContext) -> Match:
    """The GELU around erf/tanh node ``t``: roots = the product that becomes gelu(x)."""
    us = ctx.users_of(t)
    if len(us) != 1 or us[0][0].op != "add" or us[0][1] < 0:
        raise fail(f"{t.op} is not only added to 1", t)
    add, pos = us[0]
    if scalar_const(add.inputs[1 - pos]) != 1.0:
        raise fail(f"{t.op} is added to something other than 1", add)
    cur = add
    factors: list[Value] = []
    for _ in range(4):
        us = ctx.users_of(cur)
        if len(us) != 1 or us[0][0].op != "mul" or us[0][1] < 0:
            raise fail(f"1 + {t.op} is not only multiplied by x and 0.5", cur)
        mul, pos = us[0]
        _factors(mul.inputs[1 - pos], factors)
        cur = mul
        consts = [scalar_const(f) for f in factors]
        vars_ = [f for f, c in zip(factors, consts) if c is None]
        scale = math.prod(c for c in consts if c is not None)
        if len(vars_) > 1:
            raise fail(f"1 + {t.op} is multiplied by more than one tensor", mul)
        if len(vars_) == 1 and abs(scale - 0.5) <= _REL * 0.5:
            x = vars_[0]
            break
    else:
        raise fail(f"no x * 0.5 factor found around 1 + {t.op}", cur)
    p = poly(t.inputs[0], x)
    want, approx = (EXACT, "none") if t.op == "erf" else (TANH, "tanh")
    if p is None or not _same(p, want):
        shape = "x / sqrt(2)" if t.op == "erf" else "sqrt(2/pi) (x + 0.044715 x^3)"
        raise fail(f"{t.op} argument is not {shape} (as a polynomial in x: {p})", t)
    if x.type != cur.out_types[0]:
        raise fail(f"x {x.type} and the product {cur.out_types[0]} differ in type "
                   f"(broadcast)", cur)
    xt = x.type
    if not isinstance(xt, TensorType) or not xt.dtype.is_float:
        raise fail("x is not a float tensor", cur)
    return Match(roots=[cur.out], data=(x, approx), detail=f"approximate={approx}",
                 spelling=f"{t.op}, {len(factors)} factor(s) around 1 + {t.op}")


def _plus_one(t: Node, ctx: MatchContext) -> bool:
    return any(u.op == "add" and pos >= 0 and scalar_const(u.inputs[1 - pos]) == 1.0
               for u, pos in ctx.users_of(t))


class GeluRule(Rule):
    """0.5 * x * (1 + erf(x / sqrt 2)) -> gelu(x); the tanh approximation likewise. A plain
    tanh / erf activation (not added to 1) is no candidate."""

    name = "gelu_fusion"
    place = "gelu"
    place_title = "GELU compositions"
    anchors = frozenset({"erf", "tanh"})
    pass_name = "gelu_fusion"

    def match(self, n: Node, ctx: MatchContext) -> Match | None:
        if not _plus_one(n, ctx):
            return None
        return match_gelu(n, ctx)

    def build(self, m: Match) -> Value:
        x, approx = m.data
        return Node.build("gelu", (m.tr(x),), {"approximate": approx},
                          m.roots[0].node.origin).out


class GeluFusion(RewritePass):
    """Fuse GELU compositions (exact and tanh) into one ``gelu`` node."""

    name = "gelu_fusion"
    rules = (GeluRule(),)
