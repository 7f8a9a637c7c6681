"""The TASO family's hand-written search rules beyond ``merge_parallel``, in one list:
``pipeline.search_rules`` adds them to the search's rule set.

* ``merge_grouped_conv``: ``concat(conv(a), conv(b))`` -> one grouped conv of ``concat(a, b)``
  (or one conv of ``a`` when ``a`` is ``b``), kernels of different sizes aligned;
* ``merge_conv_sum``: ``conv(a) + conv(b)`` -> one conv of ``concat(a, b)``;
* ``merge_separable_sum``: the sum of two grouped-then-dense conv chains of one input -> one chain;
* ``conv_through_pool``: a 1x1 conv of an average pool -> the pool of the conv;
* ``merge_gates``: RNN gate projections with the same activation -> one matmul of
  ``concat(x, h)``.
"""
from __future__ import annotations

from graphopt.passes import conv_through_pool, merge_conv_sum, merge_gates, merge_grouped_conv
from graphopt.passes import merge_separable_sum
from graphopt.rewrite.rule import PatternRule

RULES: list[PatternRule] = [*merge_grouped_conv.RULES, *merge_conv_sum.RULES,
                            *merge_separable_sum.RULES, *conv_through_pool.RULES,
                            *merge_gates.RULES]

# hand-written rules the backtracking search leaves out (``pipeline.search_rules(g,
# "backtrack")``): merge_matmul_sum's first merge in an RNN cell is priced by the search's
# neighbourhood estimate at -1 launch where the built graph gains nothing (the new concat(x, h)
# is a kernel), ties with the gate merges (estimated -1 launch, built -2) and, queued first, walks
# the search into one matmul per gate: NasRNN 37.7% with it, 52.5% without (docs/taso_family.md).
# The gate rules cover its uses there; the e-graph mode, where the gate rules have no egglog
# form, keeps it.
NOT_IN_BACKTRACKING = frozenset({"merge_matmul_sum"})

# rules whose result ONNX Runtime's CPU provider runs slower than what they replace, which the
# analytic CPU model does not price: the merged separable chain's grouped conv has two output
# channels per group (5x5 kernels where one branch was 3x3), which leaves MLAS's depthwise path:
# NasNet-A optimized for cpu ran 1.6-2.2x slower in ONNX Runtime 1.32 on this CPU with these
# rules, 0.90x without (bench/cost_search.py's latency table). Left out on CPU targets.
SLOW_ON_CPU = frozenset(r.name for r in merge_separable_sum.RULES)


def rules_for(target: str | None) -> list[PatternRule]:
    """The rules of this family the search uses on ``target`` (None: all): CPU targets leave out
    ``SLOW_ON_CPU``."""
    from graphopt.cost.devices import get_device

    if target is None or get_device(target).kind != "cpu":
        return list(RULES)
    return [r for r in RULES if r.name not in SLOW_ON_CPU]


def left_out(target: str | None, mode: str | None) -> dict[str, str]:
    """The rules of this family the search leaves out for ``target`` and search ``mode``, each
    with the reason (for the search report)."""
    out = {}
    if mode == "backtrack":
        out.update({n: "misleads the backtracking search's neighbourhood estimate "
                       "(docs/taso_family.md)" for n in sorted(NOT_IN_BACKTRACKING)})
    if target is not None and len(rules_for(target)) < len(RULES):
        out.update({n: "ONNX Runtime's CPU provider runs the merged grouped conv slower "
                       "(measured)" for n in sorted(SLOW_ON_CPU)})
    return out
