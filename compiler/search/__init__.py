"""Rewrite search: TASO's cost-ordered backtracking (``backtrack``), budgets (``budget``), the
rule set (``ruleset``) and the pipeline step (``stage``)."""
