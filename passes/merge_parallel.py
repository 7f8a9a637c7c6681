"""Hand-written search rules: merge parallel ops that share an input (TASO's signature rewrites).

Each rule is exact up to floating-point reassociation and is used by the cost-model search
(``graphopt.search``), which applies it only where the target's cost model says it pays:

* ``merge_matmul_shared_lhs``: ``x@w1, x@w2 -> split(x @ concat(w1, w2))`` (BERT's q/k/v
  projections, NasRNN's gates); the concat of constant weights folds away after the search.
  The merged form is built by ``merge_matmuls``, which ``matmul_fusion`` uses too.
* ``merge_matmul_sum``: ``x@w1 + h@w2 -> concat(x, h) @ concat(w1, w2)`` (an RNN cell's
  input and state projections).
* ``merge_conv_shared_input`` (with and without bias): two convs of one input with the same
  kernel size and attrs -> one conv with the output channels of both, split (Inception,
  SqueezeNet); ``merge_conv[_bias]_shared_input_<act>`` the same for two convs each followed by
  the activation ``act`` (relu, sigmoid, tanh): ``split(act(conv))`` in one step;
  ``merge_conv[_bias]_shared_input_partial_<act>`` when only the first has it:
  ``split(where(mask, act(y), y))`` of the merged conv ``y``, a per-channel choice.
* ``enlarge_conv_kernel`` (with and without bias): a 1x1 conv as a 3x3 conv with a zero ring
  (TASO's enlarge: worse alone, it lets a 1x1 and a 3x3 conv of one input merge; SqueezeNet).
* ``merge_bias_after_split``: ``split(y)#0 + b0, split(y)#1 + b1 -> split(y + concat(b0, b1))``
  (the biases of merged projections), ``<unary>_through_split`` for pointwise activations,
  and ``concat_of_split`` (``concat(split(y)) -> y``).

Two-way splits only: merging three ops takes two steps (the inner split feeds the outer one).
The rules belong to the search (``pass_name="search"``); ``MergeParallel`` applies them all
once, wherever they match (no cost model), so that their text-IR statements
(``rules/merge_parallel.rules``) replay through ``pass_by_name("merge_parallel")``.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from graphopt.ir.node import ConstData, Node, Origin, Value, constant, op as build, op_multi
from graphopt.ir.types import TensorType
from graphopt.rewrite.context import const_array
from graphopt.rewrite.match import Match, MatchFail
from graphopt.rewrite.passes import RewritePass
from graphopt.rewrite.pattern import attr, op
from graphopt.rewrite.rule import Builder, Check, Rule, rule

PASS = "search"


ACTIVATIONS = ("relu", "sigmoid", "tanh")  # the activations merges carry through


def _shape(v: Value) -> tuple[Any, ...] | None:
    t = v.type
    return t.shape if isinstance(t, TensorType) else None


def _static(v: Value) -> bool:
    s = _shape(v)
    return s is not None and all(isinstance(d, int) for d in s)


def _concat(vals: Sequence[Value], axis: int, fold: bool, origin: Origin | None) -> Value:
    """``concat(vals, axis)``; computed now when ``fold`` and every value is a constant."""
    arrays = [const_array(v) for v in vals]
    if fold and all(a is not None for a in arrays):
        data = np.concatenate(arrays, axis=axis)  # type: ignore[arg-type]
        return constant(ConstData(data), origin=origin)
    return Node.build("concat", tuple(vals), {"axis": axis}, origin).out


def merge_matmuls(x: Value, weights: Sequence[Value], biases: Sequence[Value | None] = (),
                  origin: Origin | None = None, fold: bool = False) -> list[Value]:
    """The merged form of matmuls ``x @ w_i`` (+ ``b_i``) that share ``x``: one per member,
    ``split(x @ concat(w_i) [+ concat(b_i)])`` along the last axis (members without a bias get
    zeros when another has one). ``fold``: concatenate constant weights and biases now (the
    fusion pass, which prices the merged form as it will run); otherwise as ``concat`` nodes,
    folded by cleanup afterwards (the search, which would copy weights for every graph it
    tries)."""
    shapes = [_shape(w) or () for w in weights]
    widths = tuple(int(s[-1]) for s in shapes)
    y = Node.build("matmul", (x, _concat(weights, len(shapes[0]) - 1, fold, origin)), {},
                   origin).out
    if any(b is not None for b in biases):
        t = weights[0].type
        assert isinstance(t, TensorType)
        bs = [b if b is not None else
              constant(ConstData(np.zeros(n, t.dtype.to_numpy())), origin=origin)
              for b, n in zip(biases, widths)]
        y = Node.build("add", (y, _concat(bs, 0, fold, origin)), {}, origin).out
    rank = len(_shape(y) or ())
    return list(Node.build("split", (y,), {"axis": rank - 1, "sizes": widths}, origin).outputs)


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
    return merge_matmuls(m["x"], [m["w1"], m["w2"]])


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


def _conv_rhs(m: Match, act: str | None = None) -> list[Value]:
    w = build("concat", m["w1"], m["w2"], axis=0)
    ins = [m["x"], w]
    if "b1" in m.values:
        ins.append(build("concat", m["b1"], m["b2"], axis=0))
    y = build("conv", *ins, strides=m.attrs["s"], pads=m.attrs["p"], dilations=m.attrs["d"],
              group=1)
    if act is not None:
        y = build(act, y)
    c1, c2 = (_shape(m["w1"]) or ())[0], (_shape(m["w2"]) or ())[0]
    return list(op_multi("split", y, axis=1, sizes=(c1, c2)))


def _conv_pair_act(act: str, bias: bool) -> Rule:
    """``merge_conv[_bias]_shared_input`` of two convs each followed by ``act`` (TASO's conv
    with a fused activation): one step to ``split(act(conv))``, where merging first and then
    moving the activations through the split is a detour through a slower graph."""
    def lhs(x: Any, w1: Any, w2: Any) -> Any:
        return op(act, op.conv(x, w1, **_CONV_ATTRS)), op(act, op.conv(x, w2, **_CONV_ATTRS))

    def lhs_bias(x: Any, w1: Any, b1: Any, w2: Any, b2: Any) -> Any:
        return (op(act, op.conv(x, w1, b1, **_CONV_ATTRS)),
                op(act, op.conv(x, w2, b2, **_CONV_ATTRS)))

    name = f"merge_conv{'_bias' if bias else ''}_shared_input_{act}"
    return _search(name, lhs_bias if bias else lhs, lambda m: _conv_rhs(m, act), _conv_check)


def _conv_partial_act(act: str, bias: bool) -> Rule:
    """Two convs of one input, only the first followed by ``act``: one conv, its channels
    chosen per channel between ``act`` of them and themselves (``where`` over a constant
    per-channel mask, an epilogue of the conv), split. Inception's pool branch, whose 1x1 conv
    moved before the pool (``conv_through_avg_pool``), merges so with the block's other 1x1
    convs."""
    def lhs(x: Any, w1: Any, w2: Any) -> Any:
        return op(act, op.conv(x, w1, **_CONV_ATTRS)), op.conv(x, w2, **_CONV_ATTRS)

    def lhs_bias(x: Any, w1: Any, b1: Any, w2: Any, b2: Any) -> Any:
        return op(act, op.conv(x, w1, b1, **_CONV_ATTRS)), op.conv(x, w2, b2, **_CONV_ATTRS)

    def check(m: Match) -> "MatchFail | None":
        if m.roots[0].node.inputs[0] == m.roots[1]:
            return m.fail("the plain conv is the activated one", m.roots[1])
        return _conv_check(m)

    def rhs(m: Match) -> list[Value]:
        y = _conv_rhs(m)[0].node.inputs[0]  # the merged conv, before its split
        c1, c2 = (_shape(m["w1"]) or ())[0], (_shape(m["w2"]) or ())[0]
        rank = len(_shape(y) or ())
        mask = np.array([True] * c1 + [False] * c2).reshape((c1 + c2,) + (1,) * (rank - 2))
        z = build("where", constant(ConstData(mask)), build(act, y), y)
        return list(op_multi("split", z, axis=1, sizes=(c1, c2)))

    name = f"merge_conv{'_bias' if bias else ''}_shared_input_partial_{act}"
    return _search(name, lhs_bias if bias else lhs, rhs, check)


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

    return _search(f"{name}_through_split", lhs, rhs, _two_way)


def _concat_split(y: Any) -> Any:
    s = op.split(y, axis=attr("a"))
    return op.concat(s.out(0), s.out(1), axis=attr("a"))


def _search(name: str, lhs: Callable[..., Any], rhs: Builder, check: Check) -> Rule:
    return rule(name, lhs, rhs, check, source=__name__, kind="search", pass_name=PASS)


RULES: list[Rule] = [
    _search("merge_matmul_shared_lhs", _mm_shared_lhs, _mm_shared_lhs_rhs, _mm_shared_lhs_check),
    _search("merge_matmul_sum", _mm_sum, _mm_sum_rhs, _mm_sum_check),
    # before the plain conv merges: the replay sweep gives a place to the first rule matching it
    *[_conv_pair_act(a, bias) for a in ACTIVATIONS for bias in (False, True)],
    *[_conv_partial_act(a, bias) for a in ACTIVATIONS for bias in (False, True)],
    _search("merge_conv_shared_input", _conv_pair, _conv_rhs, _conv_check),
    _search("merge_conv_bias_shared_input", _conv_pair_bias, _conv_rhs, _conv_check),
    _search("enlarge_conv_kernel", _enlarge, _enlarge_rhs, _enlarge_check),
    _search("enlarge_conv_bias_kernel", _enlarge_bias, _enlarge_rhs, _enlarge_check),
    _search("merge_bias_after_split", _bias_split, _bias_split_rhs, _bias_split_check),
    _search("concat_of_split", _concat_split, lambda m: m["y"], _two_way),
    *[_unary_through_split(u) for u in ("relu", "sigmoid", "tanh", "gelu")],
]


class MergeParallel(RewritePass):
    """Every search rule of this module applied once wherever it matches, in one sweep (a place
    taken by an earlier rule is left to it): the rules' replay pass. The search itself applies
    them only where the cost model says the result is faster."""

    name = "merge_parallel"
    rules = tuple(RULES)
