"""Constant folding as a rule of the engine: a node whose inputs are all constants becomes
constants, computed by the compiler's one folder (``graphopt.ir.fold.fold_node``: an op's numpy
aspect, or an allow-listed opaque ONNX node run in ONNX Runtime) under a size policy.

Run in local mode (bottom-up: chains fold in one pass) by ``passes/cleanup.py::ConstantFold``
and after the search (``search/stage.py``). Folding fires on most constant nodes of an imported
model, so only its refusals are reported as candidates (place "constant"): a result too large
for the policy, a large weight that other nodes keep reading (tied weights would be stored
twice), or an evaluation that failed. A result that contradicts its node's declared type is an
op bug and raises ``PassError``.
"""
from __future__ import annotations

from typing import Sequence

from ..errors import PassError
from ..ir.fold import FoldPolicy, NotFolded, fold_node, readers_of
from ..ir.node import Node, Value
from .context import MatchContext
from .match import Match, MatchFail
from .rule import Rule

# reason prefixes of the refusals, by NotFolded kind (stats count them)
REFUSALS = {"large": "too large", "shared": "shared weight", "error": "evaluation failed"}


class FoldRule(Rule):
    """constant subgraph -> its value."""

    name = "constant_fold"
    kind = "cleanup"  # type: ignore[assignment]
    place = "constant"
    place_title = "constant subgraphs not folded"
    report_matches = False
    refines_types = True  # a folded value knows its dims (NonZero's count, say)
    pass_name = "constant_fold"

    def __init__(self, policy: FoldPolicy = FoldPolicy()) -> None:
        self.policy = policy

    def match(self, n: Node, ctx: MatchContext) -> Match | MatchFail | None:
        readers = ctx.memo.get("fold.readers")
        if readers is None:
            readers = ctx.memo["fold.readers"] = readers_of(ctx.graph)
        res = fold_node(n, self.policy, readers)
        if res is None:
            return None
        if isinstance(res, NotFolded):
            if res.kind == "mismatch":
                raise PassError(res.reason, where=n.where)
            return MatchFail(f"{REFUSALS[res.kind]}: {res.reason}", n)
        return Match(roots=list(n.outputs), data=res)

    def build(self, m: Match) -> Sequence[Value]:
        return m.data
