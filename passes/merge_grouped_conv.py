"""Search rule: two convs whose outputs are concatenated by channel become one grouped conv.

``concat(conv(a, wa, group=ga), conv(b, wb, group=gb), axis=1)`` is
``conv(concat(a, b, axis=1), concat(wa', wb', axis=0), group=ga + gb)`` when both convs have the
same channels per group (input and output), strides and dilations (1). Each group of the merged
conv reads only its own block of input channels, so the groups of ``a``'s conv see ``a`` and those
of ``b``'s see ``b`` (``a`` and ``b`` may be the same value: two depthwise convs of one input).
When ``a`` is ``b`` and neither conv is grouped, the result is one ungrouped conv of ``a`` over
the stacked kernels (no concatenated input): the 1x3 and 3x1 convs of Inception-v3's last blocks.
Kernels of different sizes are first brought to one size (``aligned_kernels``): a kernel grown by
a zero border, with the padding grown by the same amount, computes the same outputs (TASO's
kernel enlargement, for any size and border). This is how TASO merges the separable convs of
NasNet-A: after ``merge_conv_sum`` has turned the sum of two pointwise convs into one conv of the
concatenated depthwise outputs, this rule makes the two depthwise convs one.

Variants match the two convs each followed by the same activation (TASO's conv with a fused
activation: ``concat(relu(conv), relu(conv))`` -> ``relu(conv)``). The concatenated weights and
padded kernels are constants that the search's constant folding
computes once (they cost nothing in the cost model).
"""
from __future__ import annotations

from typing import Any

from graphopt.ir.node import Value, op as build
from graphopt.passes.merge_parallel import ACTIVATIONS
from graphopt.ir.types import TensorType
from graphopt.rewrite.match import Match, MatchFail
from graphopt.rewrite.passes import RewritePass
from graphopt.rewrite.pattern import attr, op
from graphopt.rewrite.rule import PatternRule, rule

PASS = "search"

Pads = tuple[int, ...]


def _conv_attrs(tag: str) -> dict[str, Any]:
    return dict(strides=attr(f"s{tag}"), pads=attr(f"p{tag}"), dilations=attr(f"d{tag}"),
                group=attr(f"g{tag}"))


def kernel_shape(w: Value) -> tuple[int, ...] | None:
    """The static shape of a conv weight ``[M, C/group, *kernel]``, or None."""
    t = w.type
    if not isinstance(t, TensorType) or t.shape is None or len(t.shape) < 3:
        return None
    if not all(isinstance(d, int) for d in t.shape):
        return None
    return tuple(int(d) for d in t.shape)


def aligned_kernels(wa: Value, pa: Pads, wb: Value, pb: Pads
                    ) -> "tuple[Value, Value, Pads] | str":
    """Kernels ``wa`` (conv padding ``pa``) and ``wb`` (``pb``) brought to one kernel size and
    one padding: the smaller kernel of each spatial axis grows by a zero border whose sides are
    the padding differences (valid at dilation 1 and any stride). Returns the two weights and the
    common padding, or why they cannot be aligned."""
    sa, sb = kernel_shape(wa), kernel_shape(wb)
    if sa is None or sb is None or len(sa) != len(sb):
        return "kernels are not static of one rank"
    nd = len(sa) - 2
    grow_a, grow_b = [0] * (2 * nd), [0] * (2 * nd)
    pads = list(pa)
    for i in range(nd):
        lo, hi = pb[i] - pa[i], pb[nd + i] - pa[nd + i]
        if lo + hi != sb[2 + i] - sa[2 + i]:
            return f"kernels {list(sa[2:])} and {list(sb[2:])} are not centred alike " \
                   f"(pads {list(pa)} and {list(pb)})"
        if lo < 0 or hi < 0:  # b is the smaller one on this axis (or shifted the other way)
            if lo > 0 or hi > 0:
                return f"kernels {list(sa[2:])} and {list(sb[2:])} overlap crosswise"
            grow_b[i], grow_b[nd + i] = -lo, -hi
        else:
            grow_a[i], grow_a[nd + i] = lo, hi
            pads[i], pads[nd + i] = pb[i], pb[nd + i]
    return _grown(wa, grow_a, nd), _grown(wb, grow_b, nd), tuple(pads)


def _grown(w: Value, border: list[int], nd: int) -> Value:
    """``w`` with a zero border (``border``: begin per spatial axis, then end) around its
    kernel."""
    if not any(border):
        return w
    pads = (0, 0, *border[:nd], 0, 0, *border[nd:])
    return build("pad", w, pads=pads, mode="constant", value=0.0)


def _lhs(a: Any, wa: Any, b: Any, wb: Any) -> Any:
    return op.concat(op.conv(a, wa, **_conv_attrs("a")), op.conv(b, wb, **_conv_attrs("b")),
                     axis=1)


def _lhs_bias(a: Any, wa: Any, ba: Any, b: Any, wb: Any, bb: Any) -> Any:
    return op.concat(op.conv(a, wa, ba, **_conv_attrs("a")),
                     op.conv(b, wb, bb, **_conv_attrs("b")), axis=1)


def _activated(act: str, bias: bool) -> Any:
    """The pattern with ``act`` applied to both convs (TASO's conv with a fused activation)."""
    def lhs(a: Any, wa: Any, b: Any, wb: Any) -> Any:
        return op.concat(op(act, op.conv(a, wa, **_conv_attrs("a"))),
                         op(act, op.conv(b, wb, **_conv_attrs("b"))), axis=1)

    def lhs_bias(a: Any, wa: Any, ba: Any, b: Any, wb: Any, bb: Any) -> Any:
        return op.concat(op(act, op.conv(a, wa, ba, **_conv_attrs("a"))),
                         op(act, op.conv(b, wb, bb, **_conv_attrs("b"))), axis=1)

    return lhs_bias if bias else lhs


def _check(m: Match) -> "MatchFail | None":
    at = m.attrs
    if at["sa"] != at["sb"]:
        return m.fail(f"strides {at['sa']} and {at['sb']} differ", m.roots[0])
    if any(d != 1 for d in (*at["da"], *at["db"])):
        return m.fail("dilated convolution", m.roots[0])
    sa, sb = kernel_shape(m["wa"]), kernel_shape(m["wb"])
    if sa is None or sb is None:
        return m.fail("kernel shapes are not static", m["wa"])
    ga, gb = int(at["ga"]), int(at["gb"])
    if sa[1] != sb[1]:
        return m.fail(f"input channels per group differ ({sa[1]} and {sb[1]})", m["wa"])
    shared = m["a"] == m["b"] and ga == gb == 1
    if not shared and sa[0] // ga != sb[0] // gb:
        return m.fail(f"output channels per group differ ({sa[0] // ga} and {sb[0] // gb})",
                      m["wa"])
    return stackable(m)


def stackable(m: Match) -> "MatchFail | None":
    """Why the inputs ``a``, ``b`` and kernels ``wa``, ``wb`` (paddings ``pa``, ``pb``) of a
    match cannot be stacked by channel into one conv, or None: the inputs must agree outside the
    channels and the kernels must align (``aligned_kernels``)."""
    ta, tb = m["a"].type, m["b"].type
    assert isinstance(ta, TensorType) and isinstance(tb, TensorType)
    if ta.shape is None or tb.shape is None or ta.shape[0] != tb.shape[0] or \
            ta.shape[2:] != tb.shape[2:]:
        return m.fail(f"inputs {ta} and {tb} differ outside the channels", m["a"])
    got = aligned_kernels(m["wa"], m.attrs["pa"], m["wb"], m.attrs["pb"])
    if isinstance(got, str):
        return m.fail(got, m["wa"])
    return None


def _merged(m: Match) -> Value:
    at = m.attrs
    got = aligned_kernels(m["wa"], at["pa"], m["wb"], at["pb"])
    assert not isinstance(got, str)
    wa, wb, pads = got
    a, b, ga, gb = m["a"], m["b"], int(at["ga"]), int(at["gb"])
    shared = a == b and ga == gb == 1  # one input, ungrouped: one conv of it, no concat
    ins = [a if shared else build("concat", a, b, axis=1), build("concat", wa, wb, axis=0)]
    if "ba" in m.values:
        ins.append(build("concat", m["ba"], m["bb"], axis=0))
    return build("conv", *ins, strides=at["sa"], pads=pads, dilations=at["da"],
                 group=1 if shared else ga + gb)


def _search(name: str, lhs: Any, act: str | None = None) -> PatternRule:
    def rhs(m: Match) -> Value:
        y = _merged(m)
        return y if act is None else build(act, y)

    return rule(name, lhs, rhs, _check, source=__name__, kind="search", pass_name=PASS)



RULES: list[PatternRule] = [
    _search("merge_grouped_conv", _lhs),
    _search("merge_grouped_conv_bias", _lhs_bias),
    *[_search(f"merge_grouped_conv{'_bias' if bias else ''}_{act}", _activated(act, bias), act)
      for act in ACTIVATIONS for bias in (False, True)],
]


class MergeGroupedConv(RewritePass):
    """The rules of this module applied once wherever they match (their replay pass; the search
    applies them where the cost model says the result is faster)."""

    name = "merge_grouped_conv"
    rules = tuple(RULES)
