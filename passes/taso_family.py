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
