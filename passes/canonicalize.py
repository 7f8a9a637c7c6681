"""Canonical forms the fusion patterns rely on, so each pattern needs few variants.

Rewrites (each counted in the stats under its name):

* ``div_to_mul``        x / c  -> x * (1/c)       float dtypes only, c constant. NOT bit-exact:
  the reciprocal is rounded once, so results can differ from the division by about one ulp
  (exact when c is a power of two). Allowed within the numeric check's tolerance; never applied
  to integer dtypes, where it would be wrong. Switch off with ``Canonicalize(div_to_mul=False)``.
* ``sub_to_add``        x - c  -> x + (-c)        float dtypes, c constant (exact in IEEE).
* ``transpose_pair``    transpose(transpose(x, p), q) -> transpose(x, p∘q) (dropped when the
  composite is the identity).
* ``reshape_pair``      reshape(reshape(x, s), t) -> reshape(x, t).
* ``cast_pair``         cast(cast(x, T1), T2) -> cast(x, T2) when x's dtype -> T1 is lossless
  (every value of x's dtype is exact in T1), and -> x when T2 is x's dtype.
* ``squeeze_to_reshape`` / ``unsqueeze_to_reshape``  when the output shape is static.
* ``const_right``       a commutative binary op with a constant on the left gets it on the right.
* ``neg_neg``           neg(neg(x)) -> x.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.node import ConstData, Node, Value, constant
from graphopt.ir.types import DType, TensorType
from graphopt.rewrite.passes import Pass, PassResult

from .cleanup import const_array

# dtypes numpy computes in (bf16 constants have no numpy form and are left alone)
_NP_FLOATS = {DType.f16, DType.f32, DType.f64}
_MAX_REWRITES_PER_NODE = 16

Rule = Callable[[Node, "Canonicalize"], "Value | None"]


def _dtype(v: Value) -> DType | None:
    t = v.type
    return t.dtype if isinstance(t, TensorType) else None


def _build(op: str, inputs: Sequence[Value], attrs: dict[str, Any], like: Node) -> Value:
    return Node.build(op, tuple(inputs), attrs, like.origin).out


def _div_to_mul(n: Node, c: "Canonicalize") -> Value | None:
    if not c.div_to_mul or n.op != "div" or _dtype(n.out) not in _NP_FLOATS:
        return None
    b = const_array(n.inputs[1])
    if b is None:
        return None
    with np.errstate(all="ignore"):
        r = np.asarray(np.reciprocal(b.astype(b.dtype, copy=True)), dtype=b.dtype)
    return _build("mul", [n.inputs[0], constant(ConstData(r), origin=n.origin)], {}, n)


def _sub_to_add(n: Node, c: "Canonicalize") -> Value | None:
    if n.op != "sub" or _dtype(n.out) not in _NP_FLOATS:
        return None
    b = const_array(n.inputs[1])
    if b is None:
        return None
    neg = np.asarray(np.negative(b), dtype=b.dtype)
    return _build("add", [n.inputs[0], constant(ConstData(neg), origin=n.origin)], {}, n)


def _transpose_pair(n: Node, c: "Canonicalize") -> Value | None:
    inner = n.inputs[0].node if n.inputs else None
    if n.op != "transpose" or inner is None or inner.op != "transpose":
        return None
    p, q = inner.attrs["perm"], n.attrs["perm"]
    perm = tuple(p[k] for k in q)
    x = inner.inputs[0]
    if perm == tuple(range(len(perm))):
        return x
    return _build("transpose", [x], {"perm": perm}, n)


def _reshape_pair(n: Node, c: "Canonicalize") -> Value | None:
    inner = n.inputs[0].node if n.inputs else None
    if n.op != "reshape" or inner is None or inner.op != "reshape":
        return None
    x = inner.inputs[0]
    if x.type == n.out_types[0]:
        return x
    return _build("reshape", [x], {"shape": n.attrs["shape"]}, n)


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


def _cast_pair(n: Node, c: "Canonicalize") -> Value | None:
    inner = n.inputs[0].node if n.inputs else None
    if n.op != "cast" or inner is None or inner.op != "cast":
        return None
    x = inner.inputs[0]
    src, mid = _dtype(x), inner.attrs["to"]
    if src is None or not lossless(src, mid):
        return None
    if n.attrs["to"] == src:
        return x
    return _build("cast", [x], {"to": n.attrs["to"]}, n)


def _squeeze_to_reshape(n: Node, c: "Canonicalize") -> Value | None:
    if n.op not in ("squeeze", "unsqueeze"):
        return None
    t = n.out_types[0]
    if not isinstance(t, TensorType) or not t.is_static:
        return None
    return _build("reshape", [n.inputs[0]], {"shape": tuple(t.shape or ())}, n)


def _const_right(n: Node, c: "Canonicalize") -> Value | None:
    from graphopt.ops.registry import get_op

    if n.op in ("input", "constant", "opaque") or len(n.inputs) != 2:
        return None
    a, b = n.inputs
    if a.node.op != "constant" or b.node.op == "constant" or not get_op(n.op).commutative:
        return None
    return Node.build(n.op, (b, a), n.attrs, n.origin).out


def _neg_neg(n: Node, c: "Canonicalize") -> Value | None:
    if n.op == "neg" and n.inputs[0].node.op == "neg":
        return n.inputs[0].node.inputs[0]
    return None


RULES: dict[str, Rule] = {
    "div_to_mul": _div_to_mul,
    "sub_to_add": _sub_to_add,
    "transpose_pair": _transpose_pair,
    "reshape_pair": _reshape_pair,
    "cast_pair": _cast_pair,
    "squeeze_to_reshape": _squeeze_to_reshape,
    "const_right": _const_right,
    "neg_neg": _neg_neg,
}


class Canonicalize(Pass):
    name = "canonicalize"

    def __init__(self, div_to_mul: bool = True, rules: Sequence[str] | None = None) -> None:
        self.div_to_mul = div_to_mul
        names = list(RULES) if rules is None else list(rules)
        unknown = [r for r in names if r not in RULES]
        if unknown:
            raise ValueError(f"unknown canonicalize rules {unknown}; known: {sorted(RULES)}")
        self.rules = [(r, RULES[r]) for r in names]

    def run(self, g: Graph) -> PassResult:
        stats: dict[str, int] = {}

        def rewrite(n: Node) -> Sequence[Value] | None:
            if len(n.out_types) != 1 or n.op in ("input", "constant", "opaque"):
                return None
            cur: Value = n.out
            for _ in range(_MAX_REWRITES_PER_NODE):
                node = cur.node
                if node.op in ("input", "constant", "opaque") or len(node.out_types) != 1:
                    break
                for name, rule in self.rules:
                    new = rule(node, self)
                    if new is not None:
                        key = "unsqueeze_to_reshape" if (
                            name == "squeeze_to_reshape" and node.op == "unsqueeze") else name
                        stats[key] = stats.get(key, 0) + 1
                        cur = new
                        break
                else:
                    break
            if cur == n.out:
                return None
            if cur.type != n.out_types[0]:
                from graphopt.errors import PassError

                raise PassError(f"rewrite changed type {n.out_types[0]} -> {cur.type}",
                                where=f"node {n.op} #{n.uid}" + (
                                    f" [{n.origin}]" if n.origin else ""))
            return (cur,)

        out = g.map_nodes(rewrite)
        return PassResult(out, bool(stats), stats)
