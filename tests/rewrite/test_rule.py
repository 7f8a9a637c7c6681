from __future__ import annotations

import pytest

from graphopt.ir.node import op as build
from graphopt.ir.text import parse
from graphopt.rewrite.driver import matches
from graphopt.rewrite.match import MatchFail
from graphopt.rewrite.pattern import op
from graphopt.rewrite.rule import from_subst, reversible, rule
from graphopt.subst.rulefile import loads
from tests.subst.samples import RELU_TWICE

G = parse("""graph main(%a: f32[4,6], %b: f32[4,6]) {
  %0: f32[4,6] = relu(%a)
  %1: f32[4,6] = relu(%0)
  %2: f32[4,6] = add(%1, %b)
  return %2 as "y"
}""")


def test_handwritten_rule_with_check() -> None:
    def lhs(x):
        return op.relu(op.relu(x))

    def rhs(m):
        return build("relu", m["x"])

    def check(m):
        if m["x"].node.op == "input":
            return m.fail("input not allowed", m["x"])
        return None

    r = rule("relu_relu", lhs, rhs)
    (m,) = matches(G, r)
    vals = r.replacement(m)
    assert not isinstance(vals, MatchFail) and vals[0].node.op == "relu"
    r2 = rule("relu_relu_checked", lhs, rhs, check)
    (m2,) = list(__import__("graphopt.rewrite.match", fromlist=["x"]).match_roots(r2.lhs, G))
    f = r2.checked(m2)
    assert isinstance(f, MatchFail) and "input not allowed" in str(f)




def test_generated_rule_binds_dims() -> None:
    (sr,) = loads(RELU_TWICE)
    r = from_subst(sr)
    (m,) = matches(G, r)
    assert m.dims == {"a": 4, "b": 6}
    assert r.rhs_ops == 1 and r.lhs_ops == 2
    assert reversible(sr)


ONE_WAY = """
rule t-first
lhs:
graph lhs(%x: f32[5,7], %y: f32[5,7]) {
  %0: f32[10,7] = concat(%x, %y) {axis=0}
  %1: f32[5,7], %2: f32[5,7] = split(%0) {axis=0, sizes=(5, 5)}
  return %1 as "o0"
}
rhs:
graph rhs(%x: f32[5,7]) {
  %0: f32[5,7] = identity(%x)
  return %0 as "o0"
}
end
"""


def test_one_way_rule_cannot_reverse() -> None:
    (sr,) = loads(ONE_WAY)
    assert not reversible(sr)
    with pytest.raises(ValueError):
        from_subst(sr, reverse=True)
    assert from_subst(sr).lhs_ops == 2
