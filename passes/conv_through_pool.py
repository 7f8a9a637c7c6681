"""Search rule: a pointwise (1x1) conv of an average pool becomes the pool of the conv.

``conv(avg_pool(x), w)`` with a 1x1, stride-1, unpadded, ungrouped conv is
``avg_pool(conv(x, w))``: the conv mixes channels at each position and the pool averages
positions of each channel, both linear, so they commute. With a bias ``b`` it still holds when
every average is a true mean (``count_include_pad`` off, or no padding): the mean of ``y + b`` is
``mean(y) + b``.

What it buys: the conv now reads the pool's input ``x``, which other 1x1 convs of the block often
read too (Inception's branches: ``merge_conv_shared_input`` then makes them one conv), and the
pool runs over the conv's output channels instead of its input channels.
"""
from __future__ import annotations

from typing import Any

from graphopt.ir.node import Value, op as build
from graphopt.rewrite.match import Match, MatchFail
from graphopt.rewrite.passes import RewritePass
from graphopt.rewrite.pattern import attr, op
from graphopt.rewrite.rule import PatternRule, rule

PASS = "search"

_POOL = dict(kernel=attr("k"), strides=attr("ps"), pads=attr("pp"), dilations=attr("pd"),
             ceil_mode=attr("pc"), count_include_pad=attr("pi"))
_CONV = dict(strides=attr("s"), pads=attr("p"), dilations=attr("d"), group=1)


def _lhs(x: Any, w: Any) -> Any:
    return op.conv(op.avg_pool(x, **_POOL), w, **_CONV)


def _lhs_bias(x: Any, w: Any, b: Any) -> Any:
    return op.conv(op.avg_pool(x, **_POOL), w, b, **_CONV)


def _check(m: Match) -> "MatchFail | None":
    at = m.attrs
    root = m.roots[0]
    t = m["w"].type
    shape = getattr(t, "shape", None)
    if shape is None or any(k != 1 for k in shape[2:]):
        return m.fail("not a 1x1 convolution", root)
    if any(s != 1 for s in at["s"]) or any(at["p"]) or any(d != 1 for d in at["d"]):
        return m.fail("strided, padded or dilated convolution", root)
    if "b" in m.values and at["pi"] and any(at["pp"]):
        return m.fail("bias with count_include_pad: padded averages are not means", root)
    return None


def _rhs(m: Match) -> Value:
    at = m.attrs
    ins = [m["x"], m["w"]] + ([m["b"]] if "b" in m.values else [])
    y = build("conv", *ins, strides=at["s"], pads=at["p"], dilations=at["d"], group=1)
    return build("avg_pool", y, kernel=at["k"], strides=at["ps"], pads=at["pp"],
                 dilations=at["pd"], ceil_mode=at["pc"], count_include_pad=at["pi"])


RULES: list[PatternRule] = [
    rule("conv_through_avg_pool", _lhs, _rhs, _check, source=__name__, kind="search",
         pass_name=PASS),
    rule("conv_bias_through_avg_pool", _lhs_bias, _rhs, _check, source=__name__,
         kind="search", pass_name=PASS),
]


class ConvThroughPool(RewritePass):
    """Replay pass: a 1x1 conv moved through every average pool it reads, once (the search
    moves it only where the cost model says so)."""

    name = "conv_through_pool"
    rules = tuple(RULES)
