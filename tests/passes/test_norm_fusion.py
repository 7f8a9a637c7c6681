"""RMSNorm fusion: golden IR and the Llama / T5 norms fused with unchanged results."""
from __future__ import annotations

from graphopt.passes.norm_fusion import RmsNormFusion, find_rms
from graphopt.ir.text import parse
from graphopt.rewrite.passes import Pipeline
from tests.passes.golden import assert_rewrite


def test_rms_norm_with_weight() -> None:
    assert_rewrite(RmsNormFusion(), """
graph t(%x: f32[2,4]) {
  %two: f32[] = constant() {data=dense<f32[]>[2.0]}
  %sq: f32[2,4] = pow(%x, %two)
  %m: f32[2,1] = reduce_mean(%sq) {axes=(1,), keepdims=true}
  %eps: f32[] = constant() {data=dense<f32[]>[0.0625]}
  %a: f32[2,1] = add(%m, %eps)
  %r: f32[2,1] = rsqrt(%a)
  %n: f32[2,4] = mul(%x, %r)
  %w: f32[4] = constant() {data=dense<f32[4]>[1.0, 2.0, 0.5, -1.0]}
  %y: f32[2,4] = mul(%n, %w)
  return %y as "y"
}""", """
graph t(%x: f32[2,4]) {
  %w: f32[4] = constant() {data=dense<f32[4]>[1.0, 2.0, 0.5, -1.0]}
  %0: f32[2,4] = rms_norm(%x, %w) {axis=1, epsilon=0.0625}
  return %0 as "y"
}""", {"rms_norm_fused": 1})


def test_mean_over_wrong_axis_is_reported() -> None:
    g = parse("""
graph t(%x: f32[2,4]) {
  %sq: f32[2,4] = mul(%x, %x)
  %m: f32[1,4] = reduce_mean(%sq) {axes=(0,), keepdims=true}
  %eps: f32[] = constant() {data=dense<f32[]>[1e-06]}
  %a: f32[1,4] = add(%m, %eps)
  %r: f32[1,4] = rsqrt(%a)
  %n: f32[2,4] = mul(%x, %r)
  return %n as "y"
}""")
    cands, found = find_rms(g)
    assert not found and len(cands) == 1
    assert cands[0].culprit is not None and cands[0].culprit.op == "reduce_mean"
    assert "not the last axis" in cands[0].condition


def test_llama_norms_fused() -> None:
    import warnings

    import torch

    from graphopt.frontends.fx import from_module
    from graphopt.frontends.torch_export import to_callable
    from graphopt.pipeline import default_passes
    from tests import models

    warnings.filterwarnings("ignore")
    m, ins, _ = models.build("llama")
    simp = Pipeline(default_passes(), fixed_point=True)
    g = simp.run(from_module(m, ins)).graph
    res = Pipeline([RmsNormFusion()]).run(g)
    assert res.stats["rms_norm_fused"] == 5  # 2 per layer + final
    out_g = simp.run(res.graph).graph
    assert "rsqrt" not in out_g.op_counts()
    with torch.no_grad():
        ref = m(*ins)[0]
        out = to_callable(out_g)(*ins)[0]
    assert float((ref - out).abs().max() / ref.abs().max()) < 1e-5
