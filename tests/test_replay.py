"""Replaying a hand-written rule through its pass: the pass must turn the lhs into exactly the
rhs; a rule whose rhs is not what the pass makes, or whose pass is unknown, is reported."""
from __future__ import annotations

from graphopt.replay import replay
from graphopt.subst.rulefile import loads

RULE = """rule t.gelu
kind: fusion
pass: gelu_fusion
doc: test
lhs:
graph lhs(%x: f32[3]) {
  %0: f32[] = constant() {data=dense<f32[]>[0.70710677]}
  %1: f32[3] = mul(%x, %0)
  %2: f32[3] = erf(%1)
  %3: f32[] = constant() {data=dense<f32[]>[1.0]}
  %4: f32[3] = add(%2, %3)
  %5: f32[] = constant() {data=dense<f32[]>[0.5]}
  %6: f32[3] = mul(%x, %5)
  %7: f32[3] = mul(%6, %4)
  return %7 as "o0"
}
rhs:
graph rhs(%x: f32[3]) {
  %0: f32[3] = gelu(%x) {approximate="APPROX"}
  return %0 as "o0"
}
end
"""


def test_replay_accepts_what_the_pass_makes_and_names_what_differs() -> None:
    (good,) = loads(RULE.replace("APPROX", "none"))
    assert replay(good) is None
    (wrong,) = loads(RULE.replace("APPROX", "tanh"))
    why = replay(wrong)
    assert why is not None and 'approximate="none"' in why and "the rule says" in why
    (unknown,) = loads(RULE.replace("APPROX", "none").replace("pass: gelu_fusion",
                                                              "pass: no_such_pass"))
    assert "unknown pass 'no_such_pass'" in (replay(unknown) or "")
