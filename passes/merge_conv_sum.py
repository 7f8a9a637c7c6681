"""Search rule: the sum of two convs of different inputs becomes one conv of their concatenation.

``conv(a, wa) + conv(b, wb)`` is ``conv(concat(a, b, axis=1), concat(wa', wb', axis=1))``: a conv
sums over its input channels, so stacking the inputs' channels and the kernels' input channels
sums the two convs (TASO's "concat through conv", read right to left; the conv analogue of
``merge_matmul_sum``). Both convs are ungrouped with the same strides and dilations (1); kernels
of different sizes are aligned first (``merge_grouped_conv.aligned_kernels``). With biases the
merged conv's bias is ``ba + bb``.

In NasNet-A the two branches of a cell's add are separable convs (depthwise, then pointwise):
this rule makes the two pointwise convs one, reading the concatenation of the two depthwise
outputs, which ``merge_grouped_conv`` then turns into one grouped conv.
"""
from __future__ import annotations

from typing import Any

from graphopt.ir.node import Value, op as build
from graphopt.passes.merge_grouped_conv import aligned_kernels, kernel_shape, stackable
from graphopt.rewrite.match import Match, MatchFail
from graphopt.rewrite.passes import RewritePass
from graphopt.rewrite.pattern import attr, op
from graphopt.rewrite.rule import PatternRule, rule

PASS = "search"


def _attrs(tag: str) -> dict[str, Any]:
    return dict(strides=attr(f"s{tag}"), pads=attr(f"p{tag}"), dilations=attr(f"d{tag}"),
                group=1)


def _lhs(a: Any, wa: Any, b: Any, wb: Any) -> Any:
    return op.add(op.conv(a, wa, **_attrs("a")), op.conv(b, wb, **_attrs("b")))


def _lhs_bias(a: Any, wa: Any, ba: Any, b: Any, wb: Any, bb: Any) -> Any:
    return op.add(op.conv(a, wa, ba, **_attrs("a")), op.conv(b, wb, bb, **_attrs("b")))


def _check(m: Match) -> "MatchFail | None":
    at = m.attrs
    root = m.roots[0]
    if at["sa"] != at["sb"]:
        return m.fail(f"strides {at['sa']} and {at['sb']} differ", root)
    if any(d != 1 for d in (*at["da"], *at["db"])):
        return m.fail("dilated convolution", root)
    if any(v.type != root.type for v in root.node.inputs):
        return m.fail("the add broadcasts", root)
    if kernel_shape(m["wa"]) is None or kernel_shape(m["wb"]) is None:
        return m.fail("kernel shapes are not static", m["wa"])
    return stackable(m)


def _rhs(m: Match) -> Value:
    at = m.attrs
    got = aligned_kernels(m["wa"], at["pa"], m["wb"], at["pb"])
    assert not isinstance(got, str)
    wa, wb, pads = got
    ins = [build("concat", m["a"], m["b"], axis=1), build("concat", wa, wb, axis=1)]
    if "ba" in m.values:
        ins.append(build("add", m["ba"], m["bb"]))
    return build("conv", *ins, strides=at["sa"], pads=pads, dilations=at["da"], group=1)


RULES: list[PatternRule] = [
    rule(name, lhs, _rhs, _check, source=__name__, kind="search", pass_name=PASS)
    for name, lhs in (("merge_conv_sum", _lhs), ("merge_conv_bias_sum", _lhs_bias))
]


class MergeConvSum(RewritePass):
    """Replay pass: both sum merges, once wherever they match (the search applies them only
    where the cost model says so)."""

    name = "merge_conv_sum"
    rules = tuple(RULES)
