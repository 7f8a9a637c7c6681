"""GELU fusion: golden IR for the exact (erf) and tanh spellings, reasons when not fused, and the
GELUs of BERT (exact) and GPT-2 (tanh) fused from ONNX and torch.export."""
from __future__ import annotations

import pytest

from graphopt.ir.text import parse
from graphopt.passes.gelu_fusion import GeluFusion
from tests.passes.golden import assert_rewrite


def test_exact_gelu_bert_spelling() -> None:
    # x * 0.5 * (1 + erf(x * 0.70710678)): div by sqrt(2) canonicalized to mul
    assert_rewrite(GeluFusion(), """
graph t(%x: f32[2,3,8]) {
  %c: f32[] = constant() {data=dense<f32[]>[0.70710678]}
  %u: f32[2,3,8] = mul(%x, %c)
  %e: f32[2,3,8] = erf(%u)
  %one: f32[] = constant() {data=dense<f32[]>[1.0]}
  %a: f32[2,3,8] = add(%e, %one)
  %h: f32[] = constant() {data=dense<f32[]>[0.5]}
  %xh: f32[2,3,8] = mul(%x, %h)
  %y: f32[2,3,8] = mul(%xh, %a)
  return %y as "y"
}""", """
graph t(%x: f32[2,3,8]) {
  %0: f32[2,3,8] = gelu(%x) {approximate="none"}
  return %0 as "y"
}""", {"gelu_fused": 1})


def test_tanh_gelu_gpt2_spelling() -> None:
    # 0.5 * x * (1 + tanh(0.7978845608 * (x + 0.044715 * pow(x, 3)))), product grouped last
    assert_rewrite(GeluFusion(), """
graph t(%x: f32[2,8]) {
  %three: f32[] = constant() {data=dense<f32[]>[3.0]}
  %x3: f32[2,8] = pow(%x, %three)
  %k: f32[] = constant() {data=dense<f32[]>[0.044715]}
  %kx3: f32[2,8] = mul(%x3, %k)
  %in: f32[2,8] = add(%x, %kx3)
  %s: f32[] = constant() {data=dense<f32[]>[0.7978845608]}
  %u: f32[2,8] = mul(%in, %s)
  %t: f32[2,8] = tanh(%u)
  %one: f32[] = constant() {data=dense<f32[]>[1.0]}
  %a: f32[2,8] = add(%t, %one)
  %xa: f32[2,8] = mul(%x, %a)
  %h: f32[] = constant() {data=dense<f32[]>[0.5]}
  %y: f32[2,8] = mul(%xa, %h)
  return %y as "y"
}""", """
graph t(%x: f32[2,8]) {
  %0: f32[2,8] = gelu(%x) {approximate="tanh"}
  return %0 as "y"
}""", {"gelu_fused": 1})


@pytest.mark.parametrize("src, culprit_op, reason", [
    # tanh of x alone is not a GELU
    ("""graph t(%x: f32[4]) {
  %t: f32[4] = tanh(%x)
  %one: f32[] = constant() {data=dense<f32[]>[1.0]}
  %a: f32[4] = add(%t, %one)
  %h: f32[] = constant() {data=dense<f32[]>[0.5]}
  %xh: f32[4] = mul(%x, %h)
  %y: f32[4] = mul(%xh, %a)
  return %y as "y"
}""", "tanh", "argument is not"),
    # wrong outer constant (0.25)
    ("""graph t(%x: f32[4]) {
  %c: f32[] = constant() {data=dense<f32[]>[0.70710678]}
  %u: f32[4] = mul(%x, %c)
  %e: f32[4] = erf(%u)
  %one: f32[] = constant() {data=dense<f32[]>[1.0]}
  %a: f32[4] = add(%e, %one)
  %h: f32[] = constant() {data=dense<f32[]>[0.25]}
  %xh: f32[4] = mul(%x, %h)
  %y: f32[4] = mul(%xh, %a)
  return %y as "y"
}""", "mul", "x and 0.5"),
    # erf also read elsewhere
    ("""graph t(%x: f32[4]) {
  %e: f32[4] = erf(%x)
  %one: f32[] = constant() {data=dense<f32[]>[1.0]}
  %a: f32[4] = add(%e, %one)
  %h: f32[] = constant() {data=dense<f32[]>[0.5]}
  %xh: f32[4] = mul(%x, %h)
  %y: f32[4] = mul(%xh, %a)
  return %y as "y", %e as "e"
}""", "erf", "only added to 1"),
])
def test_not_fused_names_rule_node_and_condition(src: str, culprit_op: str, reason: str) -> None:
    g = parse(src)
    res = GeluFusion().run(g)
    assert not res.changed and len(res.candidates) == 1
    c = res.candidates[0]
    assert not c.matched and c.rule == "gelu_fusion" and c.culprit is not None
    assert c.culprit.op == culprit_op and reason in c.reason, c.describe()
    assert res.stats["gelu_not_fused"] == 1


def test_plain_tanh_is_no_candidate() -> None:
    g = parse("""graph t(%x: f32[4]) {
  %t: f32[4] = tanh(%x)
  return %t as "y"
}""")
    res = GeluFusion().run(g)
    assert res.candidates == () and not res.changed


@pytest.mark.parametrize("name, frontend, approx", [
    ("bert", "onnx_legacy", "none"),
    ("gpt2", "onnx_legacy", "tanh"),
    ("gpt2", "torch", "tanh"),
])
def test_model_gelus_are_fused(name: str, frontend: str, approx: str) -> None:
    from graphopt.frontends.onnx_export import to_model
    from graphopt.rewrite.passes import Pipeline
    from tests.passes.test_attention_flash import _close, _model, _onnx, _ort, _simplify

    m, ins, names, ref = _model(name)
    if frontend == "torch":
        from graphopt.frontends.fx import from_module

        g = from_module(m, ins)
    else:
        from graphopt.frontends.onnx import load

        g = load(_onnx(name, dynamo=False))
    g = _simplify(g)
    res = Pipeline([GeluFusion()]).run(g)
    assert res.stats["gelu_fused"] == 2, res.stats  # one per layer
    assert res.stats.get("gelu_not_fused", 0) == 0, res.stats.get("notes")
    fused = _simplify(res.graph)
    counts = fused.op_counts()
    assert ("erf" if approx == "none" else "tanh") not in counts, counts
    assert all(n.attrs["approximate"] == approx for n in fused.nodes if n.op == "gelu")
    model = to_model(fused, opset=20)
    assert sum(n.op_type == "Gelu" for n in model.graph.node) == 2
    feeds = {k: x.numpy() for k, x in zip(g.input_names, ins)}
    _close(_ort(model, feeds), ref)
