from __future__ import annotations

from graphopt.ir.text import parse
from graphopt.rewrite.match import MatchFail, explain_no_match, match_roots
from graphopt.rewrite.pattern import attr, op, var

G = parse("""graph main(%a: f32[4,6], %b: f32[6,6], %c: f32[6,6]) {
  %0: f32[4,6] = matmul(%a, %b)
  %1: f32[4,6] = matmul(%a, %c)
  %2: f32[4,6] = add(%1, %0)
  %3: f32[6,4] = transpose(%2) {perm=(1, 0)}
  return %3 as "y"
}""")


def test_commutative_and_shared_vars() -> None:
    x, w1, w2 = var("x"), var("w1"), var("w2")
    pat = op.add(op.matmul(x, w1), op.matmul(x, w2))
    ms = list(match_roots([pat], G))
    # add commutes: both orders match, binding w1/w2 the two ways
    assert len(ms) == 2
    assert {m["w1"].node.attrs["name"] for m in ms} == {"b", "c"}
    assert all(m["x"].node.attrs["name"] == "a" for m in ms)


def test_attr_vars_and_constants() -> None:
    assert len(list(match_roots([op.transpose(var("x"), perm=attr("p"))], G))) == 1
    assert list(match_roots([op.transpose(var("x"), perm=(0, 1))], G)) == []


def test_multi_root() -> None:
    x, w1, w2 = var("x"), var("w1"), var("w2")
    ms = list(match_roots([op.matmul(x, w1), op.matmul(x, w2)], G))
    assert len(ms) == 2 and all(m.roots[0] != m.roots[1] for m in ms)


def test_fail_reason() -> None:
    n = [n for n in G.nodes if n.op == "transpose"][0]
    f = explain_no_match([op.relu(var("x"))], n)
    assert isinstance(f, MatchFail) and not f and "relu" in str(f)
