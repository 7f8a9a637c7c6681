"""The quantization rules' verifier guard: a wrong scale or zero point planted in a shipped
lowering rule is refuted, and the plan-driven exact rules (smoothing, the LLM.int8 column split)
are proven on instances."""
from __future__ import annotations

from pathlib import Path

import pytest

from graphopt.passes import RULES_DIR
from graphopt.subst.rulefile import SubstRule, load_file, loads
from graphopt.subst.verify import verify_rule

SHIPPED = {r.name: r for r in load_file(Path(RULES_DIR) / "quant_lowering.rules")}


def _planted(name: str, old: str, new: str) -> SubstRule:
    r = SHIPPED[name]
    text = Path(RULES_DIR, "quant_lowering.rules").read_text()
    start = text.index(f"rule {name}\n")
    block = text[start:text.index("\nend\n", start) + 5]
    rhs_at = block.index("rhs:")
    assert old in block[rhs_at:], old
    wrong = block[:rhs_at] + block[rhs_at:].replace(old, new, 1)
    (rule,) = loads(wrong.replace(f"rule {name}", f"rule {name}.planted"), "planted")
    return SubstRule(rule.name, rule.lhs, rule.rhs, r.source, rule.meta)


PLANTED = [
    # the weight scale of one column halved
    ("quant_lowering.matmul_integer", "dense<f32[2]>[0.5, 0.25]", "dense<f32[2]>[0.5, 0.125]"),
    # the activation zero point off by one
    ("quant_lowering.matmul_integer_rows", "dense<u8[]>[128]", "dense<u8[]>[127]"),
    # a row scale taken from the wrong table
    ("quant_lowering.gather_rows", "dense<f32[8]>[0.5, 0.25, 2.0, 1.0, 0.125, 4.0, 0.75, 1.5]",
     "dense<f32[8]>[0.25, 0.25, 2.0, 1.0, 0.125, 4.0, 0.75, 1.5]"),
]


@pytest.mark.parametrize("name,old,new", PLANTED, ids=[p[0] for p in PLANTED])
def test_planted_wrong_scale_or_zero_point_is_refuted(name: str, old: str, new: str) -> None:
    assert verify_rule(SHIPPED[name], timeout_ms=20000).ok
    v = verify_rule(_planted(name, old, new), timeout_ms=20000)
    assert not v.ok and v.stage == "numeric", v


SMOOTH = """rule smoothing.linears
kind: canonical
pass: smoothing
doc: x @ W = (x * (1/s)) @ (diag(s) W), s = [2, 0.5, 4]
lhs:
graph lhs(%x: f32[2,3]) {
  %0: f32[3,2] = constant() {data=dense<f32[3,2]>[1.0, 2.0, -3.0, 0.5, 0.25, -1.0]}
  %1: f32[2,2] = matmul(%x, %0)
  return %1 as "y"
}
rhs:
graph rhs(%x: f32[2,3]) {
  %0: f32[3] = constant() {data=dense<f32[3]>[0.5, 2.0, 0.25]}
  %1: f32[2,3] = mul(%x, %0)
  %2: f32[3,2] = constant() {data=dense<f32[3,2]>[2.0, 4.0, -1.5, 0.25, 1.0, -4.0]}
  %3: f32[2,2] = matmul(%1, %2)
  return %3 as "y"
}
end
"""

SPLIT = """rule llm_int8.split
kind: canonical
pass: llm_int8_split
doc: x @ W = x[:, [1]] @ W[[1]] + x[:, [0, 2]] @ W[[0, 2]]
lhs:
graph lhs(%x: f32[2,3]) {
  %0: f32[3,2] = constant() {data=dense<f32[3,2]>[1.0, 2.0, -3.0, 0.5, 0.25, -1.0]}
  %1: f32[2,2] = matmul(%x, %0)
  return %1 as "y"
}
rhs:
graph rhs(%x: f32[2,3]) {
  %0: i64[1] = constant() {data=dense<i64[1]>[1]}
  %1: f32[2,1] = gather(%x, %0) {axis=1}
  %2: f32[1,2] = constant() {data=dense<f32[1,2]>[-3.0, 0.5]}
  %3: f32[2,2] = matmul(%1, %2)
  %4: i64[2] = constant() {data=dense<i64[2]>[0, 2]}
  %5: f32[2,2] = gather(%x, %4) {axis=1}
  %6: f32[2,2] = constant() {data=dense<f32[2,2]>[1.0, 2.0, 0.25, -1.0]}
  %7: f32[2,2] = matmul(%5, %6)
  %8: f32[2,2] = add(%3, %7)
  return %8 as "y"
}
end
"""


@pytest.mark.parametrize("text", [SMOOTH, SPLIT], ids=["smoothing", "llm_int8_split"])
def test_plan_driven_exact_rules_are_proven(text: str) -> None:
    (r,) = loads(text, "quant")
    v = verify_rule(r, timeout_ms=20000)
    assert v.ok and v.method in ("normalize", "solver"), v
    wrong = text.replace("[0.5, 2.0, 0.25]", "[0.5, 2.0, 0.5]").replace(
        "dense<i64[2]>[0, 2]", "dense<i64[2]>[0, 1]")
    (w,) = loads(wrong, "quant")
    assert not verify_rule(w, timeout_ms=20000).ok
