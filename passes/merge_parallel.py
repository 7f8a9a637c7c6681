"""Hand-written search rules: merge parallel ops that share an input (TASO's signature rewrites).

Each rule is exact up to floating-point reassociation and is used by the cost-model search
(``graphopt.search``), which applies it only where the target's cost model says it pays:

* ``merge_matmul_shared_lhs``: ``x@w1, x@w2 -> split(x @ concat(w1, w2))`` (BERT's q/k/v
  projections, NasRNN's gates); the concat of constant weights folds away after the search.
* ``merge_matmul_sum``: ``x@w1 + h@w2 -> concat(x, h) @ concat(w1, w2)`` (an RNN cell's
  input and state projections).
* ``merge_conv_shared_input`` (with and without bias): two convs of one input with the same
  kernel size and attrs -> one conv with the output channels of both, split (Inception,
  SqueezeNet).
* ``enlarge_conv_kernel`` (with and without bias): a 1x1 conv as a 3x3 conv with a zero ring
  (TASO's enlarge: worse alone, it lets a 1x1 and a 3x3 conv of one input merge; SqueezeNet).
* ``merge_bias_after_split``: ``split(y)#0 + b0, split(y)#1 + b1 -> split(y + concat(b0, b1))``
  (the biases of merged projections), ``<unary>_through_split`` for pointwise activations,
  and ``concat_of_split`` (``concat(split(y)) -> y``).

Two-way splits only: merging three ops takes two steps (the inner split feeds the outer one).
"""
from __future__ import annotations

from typing import Any

from graphopt.ir.node import Value, op as build, op_multi
from graphopt.ir.types import TensorType
from graphopt.rewrite.match import Match, MatchFail
from graphopt.rewrite.pattern import attr, op
from graphopt.rewrite.rule import Rule, rule


def _shape(v: Value) -> tuple[Any, ...] | None:
    t = v.type
    return t.shape if isinstance(t, TensorType) else None


def _static(v: Value) -> bool:
    s = _shape(v)
    return s is not None and all(isinstance(d, int) for d in s)


# ---- matmuls ------------------------------------------------------------------------------------

def _mm_shared_lhs(x: Any, w1: Any, w2: Any) -> Any:
    return op.matmul(x, w1), op.matmul(x, w2)


def _mm_shared_lhs_check(m: Match) -> "MatchFail | None":
    s1, s2 = _shape(m["w1"]), _shape(m["w2"])
    if s1 is None or s2 is None or len(s1) < 2 or len(s2) < 2:
        return m.fail("weights are not matrices", m["w1"])
    if s1[:-1] != s2[:-1]:
        return m.fail(f"weights {list(s1)} and {list(s2)} differ outside the last dim", m["w1"])
    if not (_static(m["w1"]) and _static(m["w2"])):
        return m.fail("weight widths are symbolic", m["w1"])
    return None


def _mm_shared_lhs_rhs(m: Match) -> list[Value]:
    w1, w2 = m["w1"], m["w2"]
    y = build("matmul", m["x"], build("concat", w1, w2, axis=len(_shape(w1) or ()) - 1))
    n1, n2 = (_shape(w1) or ())[-1], (_shape(w2) or ())[-1]
    return list(op_multi("split", y, axis=len(_shape(y) or ()) - 1, sizes=(n1, n2)))


def _mm_sum(x: Any, w1: Any, h: Any, w2: Any) -> Any:
    return op.add(op.matmul(x, w1), op.matmul(h, w2))


def _mm_sum_check(m: Match) -> "MatchFail | None":
    sx, sh, s1, s2 = (_shape(m[k]) for k in ("x", "h", "w1", "w2"))
    if None in (sx, sh, s1, s2):
        return m.fail("unknown ranks")
    assert sx is not None and sh is not None and s1 is not None and s2 is not None
    if len(s1) != 2 or len(s2) != 2 or s1[1] != s2[1]:
        return m.fail("weights are not matrices of one width", m["w1"])
    if len(sx) < 2 or sx[:-1] != sh[:-1]:
        return m.fail(f"inputs {list(sx)} and {list(sh)} differ outside the last dim", m["x"])
    root = m.roots[0]
    if any(_shape(v) != _shape(root) for v in root.node.inputs):
        return m.fail("the add broadcasts", m.roots[0])
    return None


def _mm_sum_rhs(m: Match) -> Value:
    x = m["x"]
    ax = len(_shape(x) or ()) - 1
    return build("matmul", build("concat", x, m["h"], axis=ax),
                 build("concat", m["w1"], m["w2"], axis=0))


# ---- convs --------------------------------------------------------------------------------------

_CONV_ATTRS = dict(strides=attr("s"), pads=attr("p"), dilations=attr("d"), group=attr("g"))


def _conv_pair(x: Any, w1: Any, w2: Any) -> Any:
    return op.conv(x, w1, **_CONV_ATTRS), op.conv(x, w2, **_CONV_ATTRS)


def _conv_pair_bias(x: Any, w1: Any, b1: Any, w2: Any, b2: Any) -> Any:
    return op.conv(x, w1, b1, **_CONV_ATTRS), op.conv(x, w2, b2, **_CONV_ATTRS)


def _conv_check(m: Match) -> "MatchFail | None":
    if m.attrs["g"] != 1:
        return m.fail("grouped convolution", m.roots[0])
    s1, s2 = _shape(m["w1"]), _shape(m["w2"])
    if s1 is None or s2 is None or s1[1:] != s2[1:]:
        return m.fail("kernels differ in size", m["w1"])
    if not (_static(m["w1"]) and _static(m["w2"])):
        return m.fail("symbolic kernel shape", m["w1"])
    return None


def _conv_rhs(m: Match) -> list[Value]:
    w = build("concat", m["w1"], m["w2"], axis=0)
    ins = [m["x"], w]
    if "b1" in m.values:
        ins.append(build("concat", m["b1"], m["b2"], axis=0))
    y = build("conv", *ins, strides=m.attrs["s"], pads=m.attrs["p"], dilations=m.attrs["d"],
              group=1)
    c1, c2 = (_shape(m["w1"]) or ())[0], (_shape(m["w2"]) or ())[0]
    return list(op_multi("split", y, axis=1, sizes=(c1, c2)))


def _enlarge(x: Any, w: Any) -> Any:
    return op.conv(x, w, **_CONV_ATTRS)


def _enlarge_bias(x: Any, w: Any, b: Any) -> Any:
    return op.conv(x, w, b, **_CONV_ATTRS)


def _enlarge_check(m: Match) -> "MatchFail | None":
    sw = _shape(m["w"])
    if sw is None or len(sw) != 4 or tuple(sw[2:]) != (1, 1):
        return m.fail("not a 1x1 2-D convolution", m.roots[0])
    if any(m.attrs["p"]) or tuple(m.attrs["d"]) != (1, 1):
        return m.fail("padded or dilated", m.roots[0])
    return None


def _enlarge_rhs(m: Match) -> Value:
    """1x1 -> 3x3 with a zero ring and padding 1: the same outputs at every stride."""
    w = build("pad", m["w"], pads=(0, 0, 1, 1, 0, 0, 1, 1), mode="constant", value=0.0)
    ins = [m["x"], w] + ([m["b"]] if "b" in m.values else [])
    return build("conv", *ins, strides=m.attrs["s"], pads=(1, 1, 1, 1), dilations=(1, 1),
                 group=m.attrs["g"])


# ---- splits -------------------------------------------------------------------------------------

def _split_of(m: Match) -> Any:
    """The split node of a split pattern (the one reading ``y``)."""
    y = m["y"]
    for v in m.roots[0].node.inputs:
        n = v.node
        if n.op == "split" and n.inputs[0].node is y.node and n.inputs[0].index == y.index:
            return n
    raise AssertionError("split pattern matched without a split")


def _two_way(m: Match) -> "MatchFail | None":
    s = _split_of(m)
    if len(s.attrs["sizes"]) != 2:
        return m.fail("split into more than two pieces", s)
    return None


def _bias_split(y: Any, b0: Any, b1: Any) -> Any:
    s = op.split(y, axis=attr("a"))
    return op.add(s.out(0), b0), op.add(s.out(1), b1)


def _bias_split_check(m: Match) -> "MatchFail | None":
    f = _two_way(m)
    if f is not None:
        return f
    y, a = m["y"], m.attrs["a"]
    sy = _shape(y)
    assert sy is not None
    if a != len(sy) - 1:
        return m.fail("split is not on the last axis", y)
    sizes = _split_of(m).attrs["sizes"]
    for k, root, n in (("b0", m.roots[0], sizes[0]), ("b1", m.roots[1], sizes[1])):
        sb = _shape(m[k])
        piece = sy[:-1] + (n,)
        if sb is None or len(sb) != 1 or _shape(root) != piece:
            return m.fail("bias is not a vector over the last axis", m[k])
    return None


def _bias_split_rhs(m: Match) -> list[Value]:
    y, a = m["y"], m.attrs["a"]
    s = _split_of(m)
    z = build("add", y, build("concat", m["b0"], m["b1"], axis=0))
    return list(op_multi("split", z, axis=a, sizes=s.attrs["sizes"]))


def _unary_through_split(name: str) -> Rule:
    def lhs(y: Any) -> Any:
        s = op.split(y, axis=attr("a"))
        return op(name, s.out(0)), op(name, s.out(1))

    def rhs(m: Match) -> list[Value]:
        s = _split_of(m)
        return list(op_multi("split", build(name, m["y"]), axis=m.attrs["a"],
                             sizes=s.attrs["sizes"]))

    return rule(f"{name}_through_split", lhs, rhs, _two_way, source=__name__)


def _concat_split(y: Any) -> Any:
    s = op.split(y, axis=attr("a"))
    return op.concat(s.out(0), s.out(1), axis=attr("a"))


RULES: list[Rule] = [
    rule("merge_matmul_shared_lhs", _mm_shared_lhs, _mm_shared_lhs_rhs, _mm_shared_lhs_check,
         source=__name__),
    rule("merge_matmul_sum", _mm_sum, _mm_sum_rhs, _mm_sum_check, source=__name__),
    rule("merge_conv_shared_input", _conv_pair, _conv_rhs, _conv_check, source=__name__),
    rule("merge_conv_bias_shared_input", _conv_pair_bias, _conv_rhs, _conv_check,
         source=__name__),
    rule("enlarge_conv_kernel", _enlarge, _enlarge_rhs, _enlarge_check, source=__name__),
    rule("enlarge_conv_bias_kernel", _enlarge_bias, _enlarge_rhs, _enlarge_check,
         source=__name__),
    rule("merge_bias_after_split", _bias_split, _bias_split_rhs, _bias_split_check,
         source=__name__),
    rule("concat_of_split", _concat_split, lambda m: m["y"], _two_way, source=__name__),
    *[_unary_through_split(u) for u in ("relu", "sigmoid", "tanh", "gelu")],
]
