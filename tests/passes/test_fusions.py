"""fusion_passes: the pass list per target and contrib-op permission, and the whole list on a
long-sequence attention block (lowered to a contrib op only when allowed)."""
from __future__ import annotations

import pytest

from graphopt.ir.text import parse
from graphopt.passes.fusions import fusion_passes
from graphopt.rewrite.passes import Pipeline


@pytest.mark.parametrize("target, contrib, names", [
    ("cpu", False, ["attention_flash", "rms_norm_fusion", "gelu_fusion", "rotary_fusion",
                    "matmul_fusion", "silu_fusion", "attention_chunking"]),
    ("cpu", True, ["attention_flash", "rms_norm_fusion", "gelu_fusion", "rotary_fusion",
                   "matmul_fusion", "silu_fusion", "ort_contrib_attention", "skip_norm_fusion",
                   "attention_chunking"]),
    # every target gets the same passes; the target's cost model decides each place
    ("h100", True, ["attention_flash", "rms_norm_fusion", "gelu_fusion", "rotary_fusion",
                    "matmul_fusion", "silu_fusion", "ort_contrib_attention", "skip_norm_fusion",
                    "attention_chunking"]),
])
def test_pass_list(target: str, contrib: bool, names: list[str]) -> None:
    ps = fusion_passes(target, contrib)
    assert [p.name for p in ps] == names
    assert next(p for p in ps if p.name == "matmul_fusion").device == target
    for p in ps:
        if p.name in ("ort_contrib_attention", "skip_norm_fusion", "attention_chunking"):
            assert p.options["target"] == target, p.name


def test_gpu_target_keeps_long_blocks_whole_and_says_why() -> None:
    g = parse("""
graph t(%q: f32[1,2,4096,8], %k: f32[1,2,4096,8], %v: f32[1,2,4096,8]) {
  %y: f32[1,2,4096,8] = attention(%q, %k, %v) {causal=true, scale=none}
  return %y as "y"
}""")
    res = Pipeline(fusion_passes("h100", True)).run(g)
    assert res.graph.op_counts() == {"attention": 1}
    why = {c.kind: c.reason for c in res.candidates if not c.matched}
    assert "contrib_attention" in why and "attention_chunks" in why, why


def test_long_unmasked_causal_block_goes_to_gqa_only_when_allowed() -> None:
    from graphopt.check import check_graphs
    from graphopt.passes.ort_attention import OrtContribAttention

    g = parse("""
graph t(%q: f32[1,2,1024,8], %k: f32[1,2,1024,8], %v: f32[1,2,1024,8]) {
  %y: f32[1,2,1024,8] = attention(%q, %k, %v) {causal=true, scale=none}
  return %y as "y"
}""")
    plain = Pipeline(fusion_passes("cpu", False)).run(g).graph
    assert plain.op_counts() == {"attention": 1}  # contrib ops not allowed: never lowered
    # allowed: timed on this host; which form wins is this machine's business, both are quoted
    res = Pipeline(fusion_passes("cpu", True)).run(g)
    (c,) = [c for c in res.candidates if c.kind == "contrib_attention"]
    assert "GroupQueryAttention" in c.describe() and " ms" in c.describe(), c.describe()
    # the decision itself, with a cost that prices the contrib form faster
    lowered = OrtContribAttention("auto", options={
        "cost": lambda h: 0.5 if any(n.op == "opaque" for n in h.nodes) else 1.0}).run(g)
    assert lowered.stats["contrib_gqa"] == 1
    assert "attention" not in lowered.graph.op_counts()
    check_graphs(g, lowered.graph)
