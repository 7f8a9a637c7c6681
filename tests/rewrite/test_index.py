"""The incremental match index: failed checks keep their reasons; multi-root matches joined
through users come back in the pattern's root order."""
from __future__ import annotations

from graphopt.ir.graph import Graph
from graphopt.ir.node import input_node, op as build
from graphopt.ir.types import DType, TensorType
from graphopt.rewrite.index import Matcher
from graphopt.rewrite.match import Match, match_roots_with
from graphopt.rewrite.pattern import op, var
from graphopt.rewrite.rule import rule
from graphopt.rewrite.trace import Tracer


def _x(name: str = "x"):
    return input_node(name, TensorType((4,), DType.f32))


def test_failed_checks_are_counted_per_reason_and_traced() -> None:
    x = _x()
    g = Graph([x], [build("exp", build("exp", x.out))])
    r = rule("exp_to_abs", lambda a: op.exp(a), lambda m: build("abs", m["a"]),
             lambda m: m.fail("the input is an exp", m["a"]) if m["a"].node.op == "exp"
             else None)
    tracer = Tracer()
    ix = Matcher([r], tracer)
    found = list(ix.matches(g))
    assert [m["a"].node.op for _, m in found] == ["input"]
    assert ix.failures == {("exp_to_abs", "the input is an exp"): 1}
    (c,) = tracer.failures()
    assert c.rule == "exp_to_abs" and c.reason == "the input is an exp"
    assert c.anchor is g.outputs[0].node and c.culprit is g.outputs[0].node.inputs[0].node


def test_multi_root_matches_keep_the_pattern_order_from_any_first_root() -> None:
    x = _x()
    a, b = build("relu", x.out), build("exp", x.out)
    roots = (op.relu(var("u")), op.exp(var("u")))

    def candidates(i: int, m: Match) -> list:
        return [a.node] if i == 0 else [b.node]

    for first in (0, 1):
        (m,) = list(match_roots_with(roots, candidates, first))
        assert [v.node.op for v in m.roots] == ["relu", "exp"]
