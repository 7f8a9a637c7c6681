"""Search rule: the sum of two grouped-then-dense conv chains of one input becomes one chain.

``conv(conv(x, wa, group=g), va) + conv(conv(x, wb, group=g), vb)`` (two separable convs of
``x``, NasNet-A's ``sep(prev, 5) + sep(prev, 3)``) is ``conv(conv(x, wi, group=g), vi)``:

* ``wi`` stacks the two grouped kernels group by group (group k's output channels are ``wa``'s
  ``ma`` channels of group k, then ``wb``'s ``mb``): the grouped conv computes both branches'
  channels, interleaved by group;
* ``vi`` stacks the dense kernels' input channels in that same interleaved order, so the dense
  conv sums both branches' products (a conv sums over its input channels).

Both grouped convs have the same group count, input, strides and dilations (1); their kernels are
aligned first (``merge_grouped_conv.aligned_kernels``); the dense convs are ungrouped with the
same attributes (and aligned kernels). With one input and no channel concatenation the result is
two kernels where the branches took four; ``merge_conv_sum`` + ``merge_grouped_conv`` reach the
same only through a concatenated input. The interleaved kernels are reshapes and concatenations of
the weights, folded after the search.
"""
from __future__ import annotations

from typing import Any

from graphopt.ir.node import Value, op as build
from graphopt.passes.merge_grouped_conv import aligned_kernels, kernel_shape
from graphopt.rewrite.match import Match, MatchFail
from graphopt.rewrite.passes import RewritePass
from graphopt.rewrite.pattern import attr, op
from graphopt.rewrite.rule import PatternRule, rule

PASS = "search"


def _attrs(tag: str, group: Any) -> dict[str, Any]:
    return dict(strides=attr(f"s{tag}"), pads=attr(f"p{tag}"), dilations=attr(f"d{tag}"),
                group=group)


def _lhs(x: Any, wa: Any, va: Any, wb: Any, vb: Any) -> Any:
    ya = op.conv(x, wa, **_attrs("a", attr("ga")))
    yb = op.conv(x, wb, **_attrs("b", attr("gb")))
    return op.add(op.conv(ya, va, **_attrs("c", 1)), op.conv(yb, vb, **_attrs("d", 1)))


def _check(m: Match) -> "MatchFail | None":
    at = m.attrs
    root = m.roots[0]
    if at["ga"] != at["gb"]:
        return m.fail(f"group counts {at['ga']} and {at['gb']} differ", root)
    if at["sa"] != at["sb"] or at["sc"] != at["sd"]:
        return m.fail("strides differ", root)
    if any(d != 1 for k in ("da", "db", "dc", "dd") for d in at[k]):
        return m.fail("dilated convolution", root)
    if any(v.type != root.type for v in root.node.inputs):
        return m.fail("the add broadcasts", root)
    if any(kernel_shape(m[k]) is None for k in ("wa", "wb", "va", "vb")):
        return m.fail("kernel shapes are not static", m["wa"])
    for got in (aligned_kernels(m["wa"], at["pa"], m["wb"], at["pb"]),
                aligned_kernels(m["va"], at["pc"], m["vb"], at["pd"])):
        if isinstance(got, str):
            return m.fail(got, root)
    return None


def _interleave(a: Value, b: Value, groups: int, axis: int) -> Value:
    """``a`` and ``b`` (channel axis ``axis``, ``groups`` blocks each) stacked block by block:
    block k of the result is block k of ``a`` followed by block k of ``b``."""
    sa, sb = kernel_shape(a), kernel_shape(b)
    assert sa is not None and sb is not None
    ra = build("reshape", a, shape=sa[:axis] + (groups, sa[axis] // groups) + sa[axis + 1:])
    rb = build("reshape", b, shape=sb[:axis] + (groups, sb[axis] // groups) + sb[axis + 1:])
    both = build("concat", ra, rb, axis=axis + 1)
    return build("reshape", both, shape=sa[:axis] + (sa[axis] + sb[axis],) + sa[axis + 1:])


def _rhs(m: Match) -> Value:
    at = m.attrs
    g = int(at["ga"])
    inner = aligned_kernels(m["wa"], at["pa"], m["wb"], at["pb"])
    outer = aligned_kernels(m["va"], at["pc"], m["vb"], at["pd"])
    assert not isinstance(inner, str) and not isinstance(outer, str)
    wa, wb, pads_in = inner
    va, vb, pads_out = outer
    y = build("conv", m["x"], _interleave(wa, wb, g, 0), strides=at["sa"], pads=pads_in,
              dilations=at["da"], group=g)
    return build("conv", y, _interleave(va, vb, g, 1), strides=at["sc"], pads=pads_out,
                 dilations=at["dc"], group=1)


RULES: list[PatternRule] = [
    rule("merge_separable_sum", _lhs, _rhs, _check, source=__name__, kind="search",
         pass_name=PASS),
]


class MergeSeparableSum(RewritePass):
    """The rule of this module applied once wherever it matches (its replay pass; the search
    applies it where the cost model says the result is faster)."""

    name = "merge_separable_sum"
    rules = tuple(RULES)
