"""Rewrite search: TASO's cost-ordered backtracking (``backtrack``) over the incremental match
index (``graphopt.rewrite.index``), candidate pricing (``delta``), windows for large graphs
(``windows``), results (``result``), budgets (``budget``), the generated rule set (``ruleset``)
and the pipeline step (``stage``)."""

MODES = ("backtrack", "egraph")  # search modes: backtracking (the default), equality saturation
