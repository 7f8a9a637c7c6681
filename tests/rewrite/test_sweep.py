"""The sweep driver: a match claims its roots (a second rule on the same place is told which rule
took it), replacements are built over the already rebuilt inputs (nested rewrites compose), a
match without roots is a report, a MatchFail raised deep in a matcher becomes the candidate's
reason, and a rule that refines types may replace a symbolic dim with a known one."""
from __future__ import annotations

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.node import Node, Value, constant, input_node, op
from graphopt.ir.text import parse
from graphopt.ir.types import DType, TensorType
from graphopt.rewrite.context import MatchContext
from graphopt.rewrite.driver import sweep
from graphopt.rewrite.match import Match, MatchFail, fail
from graphopt.rewrite.passes import RewritePass
from graphopt.rewrite.rule import Rule

G = """graph t(%x: f32[4]) {
  %0: f32[4] = neg(%x)
  %1: f32[4] = neg(%0)
  %2: f32[4] = exp(%1)
  return %2 as "y"
}"""


class NegNeg(Rule):
    """neg(neg(x)) -> x (anchored at the outer neg)."""

    name = "neg_neg"
    place = "double_negation"
    anchors = frozenset({"neg"})

    def match(self, n: Node, ctx: MatchContext) -> Match | MatchFail | None:
        inner = n.inputs[0].node
        if inner.op != "neg":
            return None
        return Match(roots=[n.out], data=inner.inputs[0])

    def build(self, m: Match) -> Value:
        return m.tr(m.data)


class ExpToRelu(Rule):
    """exp(a) -> relu(a) (not exact: only to see what the driver hands the builder)."""

    name = "exp_to_relu"
    place = "exp"
    anchors = frozenset({"exp"})

    def match(self, n: Node, ctx: MatchContext) -> Match:
        return Match(roots=[n.out], data=n.inputs[0])

    def build(self, m: Match) -> Value:
        return op("relu", m.tr(m.data))


def test_replacements_are_built_over_rebuilt_inputs() -> None:
    out = sweep(parse(G), [NegNeg(), ExpToRelu()])
    # exp's input was neg(neg(x)), rewritten in the same sweep: relu reads x itself
    assert out.graph.op_counts() == {"relu": 1}
    assert out.applied == {"neg_neg": 1, "exp_to_relu": 1}
    assert [(c.kind, c.matched) for c in out.candidates] == [("double_negation", True),
                                                              ("exp", True)]


def test_a_place_is_claimed_by_the_first_rule() -> None:
    class Other(NegNeg):
        name = "other_neg_neg"

    out = sweep(parse(G), [NegNeg(), Other()])
    second = [c for c in out.candidates if c.rule == "other_neg_neg"]
    assert len(second) == 1 and not second[0].matched
    assert "already rewritten by neg_neg" in second[0].reason
    assert out.applied == {"neg_neg": 1}


def test_report_only_and_deep_fails() -> None:
    class Report(Rule):
        name = "report"
        place = "exp"
        anchors = frozenset({"exp"})

        def match(self, n: Node, ctx: MatchContext) -> Match:
            return Match(detail="already fine")  # no roots: nothing to rewrite

    class Deep(Rule):
        name = "deep"
        place = "neg"
        anchors = frozenset({"neg"})

        def match(self, n: Node, ctx: MatchContext) -> Match:
            self.helper(n)
            raise AssertionError("unreachable")

        def helper(self, n: Node) -> None:
            raise fail("the helper refused", n.inputs[0])

    g = parse(G)
    res = RewritePass("t", [Report(), Deep()]).run(g)
    assert not res.changed and res.graph is g
    rep = [c for c in res.candidates if c.rule == "report"]
    assert len(rep) == 1 and rep[0].matched and rep[0].detail == "already fine"
    deep = [c for c in res.candidates if c.rule == "deep"]
    assert len(deep) == 2 and all(not c.matched and c.reason == "the helper refused"
                                  for c in deep)
    assert deep[0].culprit is not None
    assert res.stats["exp_fused"] == 1 and res.stats["neg_not_fused"] == 2


def test_refining_types_only_when_the_rule_says_so() -> None:
    # a value of type f32[n] replaced by a known f32[4] (a folded NonZero, say)
    x = input_node("x", TensorType(("n",), DType.f32))
    g = Graph([x], [op("relu", x.out)])

    class Known(Rule):
        name = "known"
        anchors = frozenset({"relu"})

        def match(self, n: Node, ctx: MatchContext) -> Match:
            return Match(roots=[n.out])

        def build(self, m: Match) -> Value:
            return constant(np.zeros(4, np.float32))

    class Refining(Known):
        name = "refining"
        refines_types = True

    m = Known().match(g.outputs[0].node, MatchContext(g))
    refused = Known().replacement(m)
    assert isinstance(refused, MatchFail) and "differs" in refused.reason
    (v,) = Refining().replacement(m)
    assert v.type == TensorType((4,), DType.f32)
    wrong_rank = Refining()
    wrong_rank.build = lambda m: constant(np.zeros((2, 2), np.float32))  # type: ignore
    assert isinstance(wrong_rank.replacement(m), MatchFail)
