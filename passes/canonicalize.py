"""Canonical forms the fusion patterns rely on, so each pattern needs few variants.

Every rewrite is an engine rule (``kind="canonical"``) applied by ``Canonicalize``, a
``RewritePass`` in local mode (bottom-up, each node again until no rule applies); each is counted
in the stats under its rule name, and stated as text-IR rules in ``rules/canonicalize.rules``:

* ``div_to_mul``        x / c  -> x * (1/c)       float dtypes only, c constant. NOT bit-exact:
  the reciprocal is rounded once, so results can differ from the division by about one ulp
  (exact when c is a power of two). Allowed within the numeric check's tolerance; never applied
  to integer dtypes, where it would be wrong. Switch off with ``Canonicalize(div_to_mul=False)``.
* ``sub_to_add``        x - c  -> x + (-c)        float dtypes, c constant (exact in IEEE).
* ``transpose_pair``    transpose(transpose(x, p), q) -> transpose(x, p∘q) (dropped when the
  composite is the identity).
* ``reshape_pair``      reshape(reshape(x, s), t) -> reshape(x, t) (x when t is x's shape).
* ``cast_pair``         cast(cast(x, T1), T2) -> cast(x, T2) when x's dtype -> T1 is lossless
  (every value of x's dtype is exact in T1), and -> x when T2 is x's dtype.
* ``squeeze_to_reshape`` / ``unsqueeze_to_reshape``  when the output shape is static.
* ``const_right``       a commutative binary op with a constant on the left gets it on the right.
* ``neg_neg``           neg(neg(x)) -> x.

Local rules report no candidates (they have no ``place``): a node that is not in canonical form
has nothing to explain.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from graphopt.ir.node import ConstData, Node, Value, constant
from graphopt.ir.types import DType, TensorType
from graphopt.rewrite.context import MatchContext, const_array
from graphopt.rewrite.match import Match, MatchFail
from graphopt.rewrite.passes import RewritePass
from graphopt.rewrite.pattern import op
from graphopt.rewrite.rule import Rule, rule

# dtypes numpy computes in (bf16 constants have no numpy form and are left alone)
_NP_FLOATS = {DType.f16, DType.f32, DType.f64}
PASS = "canonicalize"


def _dtype(v: Value) -> DType | None:
    t = v.type
    return t.dtype if isinstance(t, TensorType) else None


def _like(m: Match, op_name: str, inputs: Sequence[Value], attrs: dict[str, Any]) -> Value:
    """A new node in place of the match's root (keeping its origin)."""
    return Node.build(op_name, tuple(inputs), attrs, m.roots[0].node.origin).out


def _canonical(name: str, lhs: Any, rhs: Any, check: Any = None, error: str = "") -> Rule:
    return rule(name, lhs, rhs, check, source=__name__, kind="canonical", pass_name=PASS,
                exact=not error, error=error)


# ---- x / c, x - c ---------------------------------------------------------------------------------

def _float_const_divisor(m: Match) -> "MatchFail | None":
    if _dtype(m.roots[0]) not in _NP_FLOATS:
        return m.fail("not a float dtype numpy computes in", m.roots[0])
    if const_array(m["c"]) is None:
        return m.fail("the right operand is not a constant", m["c"])
    return None


def _with_const(m: Match, op_name: str, fn: Any) -> Value:
    """``op_name(x, fn(c))``, ``fn(c)`` computed now in c's dtype."""
    c = const_array(m["c"])
    assert c is not None
    with np.errstate(all="ignore"):
        new = np.asarray(fn(c.astype(c.dtype, copy=True)), dtype=c.dtype)
    origin = m.roots[0].node.origin
    return _like(m, op_name, [m["x"], constant(ConstData(new), origin=origin)], {})


DIV_TO_MUL = _canonical("div_to_mul", lambda x, c: op.div(x, c),
                        lambda m: _with_const(m, "mul", np.reciprocal), _float_const_divisor,
                        error="the reciprocal 1/c is rounded once: at most 2 ulp of the dtype "
                              "from the division (exact when c is a power of two)")
SUB_TO_ADD = _canonical("sub_to_add", lambda x, c: op.sub(x, c),
                        lambda m: _with_const(m, "add", np.negative), _float_const_divisor)


# ---- pairs of shape ops and casts -----------------------------------------------------------------

def _inner(m: Match) -> Node:
    """The inner node of a pair pattern ``f(g(x))``."""
    return m.roots[0].node.inputs[0].node


def _transpose_pair(m: Match) -> Value:
    p, q = _inner(m).attrs["perm"], m.roots[0].node.attrs["perm"]
    perm = tuple(p[k] for k in q)
    if perm == tuple(range(len(perm))):
        return m["x"]
    return _like(m, "transpose", [m["x"]], {"perm": perm})


def _reshape_pair(m: Match) -> Value:
    x = m["x"]
    if x.type == m.roots[0].type:
        return x
    return _like(m, "reshape", [x], {"shape": m.roots[0].node.attrs["shape"]})


_INT_BITS = {DType.i8: 8, DType.i16: 16, DType.i32: 32, DType.i64: 64}
_UINT_BITS = {DType.u8: 8, DType.u16: 16, DType.u32: 32, DType.u64: 64}
_MANTISSA = {DType.f16: 11, DType.bf16: 8, DType.f32: 24, DType.f64: 53}  # incl. implicit bit
_EXPONENT_MAX = {DType.f16: 15, DType.bf16: 127, DType.f32: 127, DType.f64: 1023}


def lossless(src: DType, dst: DType) -> bool:
    """True when every value of ``src`` is exactly representable in ``dst``."""
    if src == dst or src == DType.bool:
        return True
    if src in _MANTISSA and dst in _MANTISSA:
        return _MANTISSA[dst] >= _MANTISSA[src] and _EXPONENT_MAX[dst] >= _EXPONENT_MAX[src]
    if src in _INT_BITS:
        if dst in _INT_BITS:
            return _INT_BITS[dst] >= _INT_BITS[src]
        if dst in _MANTISSA:  # magnitudes up to 2**(bits-1) must be exact
            return _MANTISSA[dst] >= _INT_BITS[src] - 1
        return False
    if src in _UINT_BITS:
        if dst in _UINT_BITS:
            return _UINT_BITS[dst] >= _UINT_BITS[src]
        if dst in _INT_BITS:
            return _INT_BITS[dst] > _UINT_BITS[src]
        if dst in _MANTISSA:
            return _MANTISSA[dst] >= _UINT_BITS[src]
    return False


def _cast_pair_check(m: Match) -> "MatchFail | None":
    src, mid = _dtype(m["x"]), _inner(m).attrs["to"]
    if src is None or not lossless(src, mid):
        return m.fail(f"the first cast ({src} -> {mid}) may round", _inner(m))
    return None


def _cast_pair(m: Match) -> Value:
    x, to = m["x"], m.roots[0].node.attrs["to"]
    return x if _dtype(x) == to else _like(m, "cast", [x], {"to": to})


TRANSPOSE_PAIR = _canonical("transpose_pair", lambda x: op.transpose(op.transpose(x)),
                            _transpose_pair)
RESHAPE_PAIR = _canonical("reshape_pair", lambda x: op.reshape(op.reshape(x)), _reshape_pair)
CAST_PAIR = _canonical("cast_pair", lambda x: op.cast(op.cast(x)), _cast_pair, _cast_pair_check)


def _static_out(m: Match) -> "MatchFail | None":
    t = m.roots[0].type
    if not isinstance(t, TensorType) or not t.is_static:
        return m.fail("the output shape is not static", m.roots[0])
    return None


def _to_reshape(m: Match) -> Value:
    t = m.roots[0].type
    assert isinstance(t, TensorType)
    return _like(m, "reshape", [m["x"]], {"shape": tuple(t.shape or ())})


SQUEEZE_TO_RESHAPE = _canonical("squeeze_to_reshape", lambda x: op.squeeze(x), _to_reshape,
                                _static_out)
UNSQUEEZE_TO_RESHAPE = _canonical("unsqueeze_to_reshape", lambda x: op.unsqueeze(x),
                                  _to_reshape, _static_out)
NEG_NEG = _canonical("neg_neg", lambda x: op.neg(op.neg(x)), lambda m: m["x"])


# ---- constants on the right ----------------------------------------------------------------------

def _commutative_binary_ops() -> frozenset[str]:
    from graphopt.ops.registry import all_ops

    return frozenset(name for name, d in all_ops().items() if d.commutative)


class ConstRight(Rule):
    """A commutative binary op with a constant on the left (and none on the right) gets its
    operands swapped. A rule of its own, not a pattern: a pattern of a commutative op matches
    both operand orders, and this rule is about the order."""

    name = "const_right"
    kind = "canonical"
    pass_name = PASS

    def __init__(self) -> None:
        self.anchors = _commutative_binary_ops()

    def match(self, n: Node, ctx: MatchContext) -> Match | None:
        if len(n.inputs) != 2:
            return None
        a, b = n.inputs
        if a.node.op != "constant" or b.node.op == "constant":
            return None
        return Match(roots=[n.out], data=(a, b))

    def build(self, m: Match) -> Value:
        a, b = m.data
        n = m.roots[0].node
        return Node.build(n.op, (m.tr(b), m.tr(a)), n.attrs, n.origin).out


# name -> rule; the order is the order rules are tried on a node
RULES: dict[str, Rule] = {r.name: r for r in (
    DIV_TO_MUL, SUB_TO_ADD, TRANSPOSE_PAIR, RESHAPE_PAIR, CAST_PAIR, SQUEEZE_TO_RESHAPE,
    UNSQUEEZE_TO_RESHAPE, ConstRight(), NEG_NEG)}


class Canonicalize(RewritePass):
    """The canonical forms (all of ``RULES``, or the ``rules`` named; ``div_to_mul=False`` leaves
    divisions alone)."""

    name = PASS
    mode = "local"

    def __init__(self, div_to_mul: bool = True, rules: Sequence[str] | None = None) -> None:
        names = list(RULES) if rules is None else list(rules)
        unknown = [r for r in names if r not in RULES]
        if unknown:
            raise ValueError(f"unknown canonicalize rules {unknown}; known: {sorted(RULES)}")
        self.div_to_mul = div_to_mul
        super().__init__()
        self.rules = [RULES[r] for r in names if div_to_mul or r != "div_to_mul"]
