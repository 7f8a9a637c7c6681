"""The verifier: true rules are proven, planted wrong rules are rejected (numeric and z3)."""
from __future__ import annotations

import pytest

from graphopt.subst.rulefile import loads
from graphopt.subst.verify import verify_rule
from graphopt.subst.verify_z3 import prove

from tests.subst.planted import PLANTED, rule_text
from tests.subst.samples import MERGE_MATMULS, RELU_TWICE

TRUE_RULES = RELU_TWICE + MERGE_MATMULS + """
rule true-matmul-assoc
lhs:
graph lhs(%x: f32[5,7], %y: f32[7,11], %z: f32[11,13]) {
  %0: f32[5,11] = matmul(%x, %y)
  %1: f32[5,13] = matmul(%0, %z)
  return %1 as "o0"
}
rhs:
graph rhs(%x: f32[5,7], %y: f32[7,11], %z: f32[11,13]) {
  %0: f32[7,13] = matmul(%y, %z)
  %1: f32[5,13] = matmul(%x, %0)
  return %1 as "o0"
}
end
rule true-softmax-transpose
lhs:
graph lhs(%x: f32[5,7]) {
  %0: f32[7,5] = transpose(%x) {perm=(1, 0)}
  %1: f32[7,5] = softmax(%0) {axis=0}
  return %1 as "o0"
}
rhs:
graph rhs(%x: f32[5,7]) {
  %0: f32[5,7] = softmax(%x) {axis=1}
  %1: f32[7,5] = transpose(%0) {perm=(1, 0)}
  return %1 as "o0"
}
end
"""


@pytest.mark.parametrize("rule", loads(TRUE_RULES), ids=lambda r: r.name)
def test_true_rules_are_proven(rule) -> None:
    v = verify_rule(rule)
    assert v.ok, v.reason
    assert prove(rule, {"a": 2, "b": 3, "c": 2, "d": 3}).proved


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_planted_wrong_rule_rejected(name: str) -> None:
    (rule,) = loads(rule_text(name))
    v = verify_rule(rule)
    assert not v.ok, f"planted wrong rule {name} was accepted"


@pytest.mark.parametrize("name", ["matmul_swapped_operands", "relu_through_sub", "exp_of_sum",
                                  "gelu_additive", "concat_wrong_axis", "softmax_wrong_axis",
                                  "transpose_3d_not_inverse", "split_outputs_swapped"])
def test_z3_alone_rejects(name: str) -> None:
    """z3 is not vacuous: without the float pre-test it still refuses the wrong rule."""
    (rule,) = loads(rule_text(name))
    pf = prove(rule, {"a": 2, "b": 3})
    assert not pf.proved
    assert pf.reason


def test_planted_count() -> None:
    assert len(PLANTED) >= 10


def test_z3_interpreter_collects_domains_and_reads_named_constants() -> None:
    """The verifier's interpreter: softmax rows' domain conditions are collected, a scalar
    constant within the tolerance of a named constant is read as it (and recorded)."""
    import math

    import numpy as np

    from graphopt.ir.graph import Graph
    from graphopt.ir.node import constant, input_node, op
    from graphopt.ir.types import DType, TensorType
    from graphopt.ops.symbolic import named_constant
    from graphopt.subst.verify_z3 import Z3Interpreter, symbolic_inputs

    x = input_node("x", TensorType((2, 3), DType.f32))
    half = constant(np.float32(1 / math.sqrt(2)))
    g = Graph([x], [op("mul", op("softmax", x.out, axis=1), half)])
    domain: list = []
    it = Z3Interpreter(domain, {"1/sqrt(2)": 1 / math.sqrt(2)}, 1e-6)
    (out,) = it.run(g, symbolic_inputs(g))
    assert len(domain) == 2  # one condition per softmax row
    assert list(it.snapped.values()) == [1 / math.sqrt(2)]
    assert str(named_constant("1/sqrt(2)")) in str(out[0, 0])
    (plain,) = Z3Interpreter().run(g, symbolic_inputs(g))
    assert "sqrt" not in str(plain[0, 0])
