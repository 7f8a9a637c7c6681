"""Residual add + norm -> com.microsoft SkipLayerNormalization / SkipSimplifiedLayerNormalization:
the forms ONNX Runtime accepts (sum output, bias, skip broadcast), the reasons a place is not
lowered, mode auto keeping everything (slower on this CPU), and BERT (layer_norm), GPT-2
(pre-norm: the residual stream reads the sum output) and Llama (rms_norm) lowered, equal in ONNX
Runtime; nothing is emitted without allow_contrib_ops."""
from __future__ import annotations

import pytest

from graphopt.check import check_graphs
from graphopt.ir.graph import Graph
from graphopt.ir.text import parse
from graphopt.passes.skip_norm_fusion import SkipNormFusion, find_skip_norm

SKIP_OPS = ("opaque:SkipLayerNormalization", "opaque:SkipSimplifiedLayerNormalization")


def _contrib(g: Graph) -> dict[str, int]:
    return {k: v for k, v in g.op_counts().items() if k in SKIP_OPS}


def _params(h: int) -> str:
    g = ", ".join(f"{0.5 + i / h:.3f}" for i in range(h))
    b = ", ".join(f"{-0.2 + i / (2 * h):.3f}" for i in range(h))
    return (f"  %g: f32[{h}] = constant() {{data=dense<f32[{h}]>[{g}]}}\n"
            f"  %b: f32[{h}] = constant() {{data=dense<f32[{h}]>[{b}]}}\n")


def _run(src: str, want: dict[str, int], sum_outputs: int = 0) -> Graph:
    g = parse(src)
    res = SkipNormFusion("always").run(g)
    assert res.changed and res.stats.get("skip_norm_not_fused", 0) == 0, res.stats
    assert _contrib(res.graph) == want, res.graph.op_counts()
    assert "add" not in res.graph.op_counts(), res.graph.to_text()
    ops = [n for n in res.graph.nodes if n.op == "opaque"]
    assert sum(len(n.out_types) == 2 for n in ops) == sum_outputs
    check_graphs(g, res.graph, rtol=1e-5, atol=1e-5)  # the contrib node runs in ONNX Runtime
    return res.graph


def test_layer_norm_with_residual_use_reads_the_sum_output() -> None:
    _run(f"""graph t(%x: f32[2,3,8], %r: f32[2,3,8]) {{
{_params(8)}  %s: f32[2,3,8] = add(%x, %r)
  %y: f32[2,3,8] = layer_norm(%s, %g, %b) {{axis=2, epsilon=1e-5}}
  %o: f32[2,3,8] = mul(%y, %s)
  return %o as "o", %s as "stream"
}}""", {"opaque:SkipLayerNormalization": 1}, sum_outputs=1)


def test_rms_norm_and_layer_norm_without_scale() -> None:
    _run(f"""graph t(%x: f32[6,8], %r: f32[6,8]) {{
{_params(8)}  %s: f32[6,8] = add(%r, %x)
  %y: f32[6,8] = rms_norm(%s, %g) {{axis=1, epsilon=1e-6}}
  %s2: f32[6,8] = add(%y, %x)
  %z: f32[6,8] = layer_norm(%s2) {{axis=1, epsilon=1e-5}}
  return %z as "o"
}}""", {"opaque:SkipSimplifiedLayerNormalization": 1, "opaque:SkipLayerNormalization": 1})


def test_bias_is_folded_and_batch_broadcast_skip_accepted() -> None:
    g = _run(f"""graph t(%m: f32[2,3,8], %pos: f32[3,8], %p1: f32[1,3,8]) {{
{_params(8)}  %mb: f32[2,3,8] = add(%m, %b)
  %s: f32[2,3,8] = add(%pos, %mb)
  %y: f32[2,3,8] = layer_norm(%s, %g, %b) {{axis=2, epsilon=1e-5}}
  %s2: f32[2,3,8] = add(%p1, %y)
  %z: f32[2,3,8] = layer_norm(%s2, %g) {{axis=2, epsilon=1e-5}}
  return %z as "o"
}}""", {"opaque:SkipLayerNormalization": 2})
    cands, _ = find_skip_norm(g, "always")
    assert cands == []  # nothing left to lower


@pytest.mark.parametrize("src, culprit, reason", [
    ("""graph t(%x: f32[2,2,3,8], %r: f32[2,2,3,8], %g: f32[8]) {
  %s: f32[2,2,3,8] = add(%x, %r)
  %y: f32[2,2,3,8] = layer_norm(%s, %g) {axis=3, epsilon=1e-5}
  return %y as "y"
}""", "layer_norm", "rank 4"),
    ("""graph t(%x: f32[2,3,8], %r: f32[2,3,8], %g: f32[3,8]) {
  %s: f32[2,3,8] = add(%x, %r)
  %y: f32[2,3,8] = layer_norm(%s, %g) {axis=1, epsilon=1e-5}
  return %y as "y"
}""", "layer_norm", "not over the last axis"),
    ("""graph t(%x: f32[2,3,8], %r: f32[2,1,8], %g: f32[8]) {
  %s: f32[2,3,8] = add(%x, %r)
  %y: f32[2,3,8] = layer_norm(%s, %g) {axis=2, epsilon=1e-5}
  return %y as "y"
}""", "add", "[1, S, H] / [S, H]"),
    ("""graph t(%x: f32[2,3,8], %r: f32[2,3,8], %w: f32[8]) {
  %s: f32[2,3,8] = add(%x, %r)
  %g: f32[8] = exp(%w)
  %y: f32[2,3,8] = rms_norm(%s, %g) {axis=2, epsilon=1e-5}
  %o: f32[2,3,8] = add(%y, %s)
  return %o as "y"
}""", "exp", "computed in the graph"),
    ("""graph t(%x: f64[2,3,8], %r: f64[2,3,8], %g: f64[8]) {
  %s: f64[2,3,8] = add(%x, %r)
  %y: f64[2,3,8] = rms_norm(%s, %g) {axis=2, epsilon=1e-5}
  return %y as "y"
}""", "rms_norm", "dtype f64"),
])
def test_not_lowered_names_node_and_condition(src: str, culprit: str, reason: str) -> None:
    cands, found = find_skip_norm(parse(src), "always")
    assert not found and len(cands) == 1
    c = cands[0]
    assert c.kind == "skip_norm" and not c.fused and c.rule == "skip_norm_fusion"
    assert c.culprit is not None and c.culprit.op == culprit, c.describe()
    assert reason in c.condition, c.describe()


def test_mode_auto_keeps_every_place_with_the_measured_reason() -> None:
    g = parse("""graph t(%x: f32[2,3,8], %r: f32[2,3,8], %w: f32[8]) {
  %s: f32[2,3,8] = add(%x, %r)
  %y: f32[2,3,8] = rms_norm(%s, %w) {axis=2, epsilon=1e-5}
  %z: f32[2,3,8] = layer_norm(%s, %w) {axis=2, epsilon=1e-5}
  return %y as "y", %z as "z"
}""")
    res = SkipNormFusion().run(g)
    assert not res.changed and res.stats["skip_norm_not_fused"] == 2
    assert all("slower" in n and "ms" in n for n in res.stats["notes"]), res.stats["notes"]
    # "always": the second norm of the same sum is reported, not lowered twice
    res = SkipNormFusion("always").run(g)
    assert _contrib(res.graph) == {"opaque:SkipSimplifiedLayerNormalization": 1}
    assert "already fused" in res.stats["notes"][0]
    check_graphs(g, res.graph, rtol=1e-5, atol=1e-5)


# ---- real models --------------------------------------------------------------------------------

# name, frontend -> (SkipLayerNormalization, SkipSimplifiedLayerNormalization, with sum output)
MODELS = {
    ("bert", "onnx_legacy"): (5, 0, 0),  # post-norm: LayerNorm(x + sublayer(x)), embeddings too
    ("bert", "torch"): (5, 0, 0),
    ("gpt2", "onnx_dynamo"): (5, 0, 4),  # pre-norm: the residual stream reads the sum output
    ("llama", "torch"): (0, 4, 3),  # rms_norm after residual adds (the first norm has none)
    ("llama", "onnx_legacy"): (0, 4, 3),
    ("llama", "onnx_dynamo"): (0, 4, 3),
}


@pytest.mark.parametrize("name, frontend", sorted(MODELS))
def test_models_lowered_and_equal_in_onnx_runtime(name: str, frontend: str) -> None:
    from graphopt.frontends.onnx_export import to_model
    from graphopt.passes.fusions import fusion_passes
    from graphopt.rewrite.passes import Pipeline
    from tests.passes.test_attention_flash import _close, _model, _onnx, _ort, _simplify

    m, ins, names, ref = _model(name)
    if frontend == "torch":
        from graphopt.frontends.fx import from_module

        g = from_module(m, ins)
    else:
        from graphopt.frontends.onnx import load

        g = load(_onnx(name, dynamo=frontend == "onnx_dynamo"))
    g = _simplify(Pipeline(fusion_passes("cpu")).run(_simplify(g)).graph)
    assert not _contrib(g)  # without allow_contrib_ops nothing is emitted
    ln, rms, with_sum = MODELS[(name, frontend)]
    # what fusion_passes("cpu", allow_contrib_ops=True) runs: mode auto keeps every place
    auto = SkipNormFusion().run(g)
    assert not auto.changed and auto.stats["skip_norm_not_fused"] == ln + rms
    res = SkipNormFusion("always").run(g)
    assert res.stats["skip_layer_norm"] == ln and res.stats["skip_simplified_layer_norm"] == rms
    assert res.stats["skip_norm_not_fused"] == 0, res.stats.get("notes")
    out = _simplify(res.graph)
    assert sum(len(n.out_types) == 2 for n in out.nodes if n.op == "opaque"
               and n.attrs["op_type"].startswith("Skip")) == with_sum
    feeds = {k: x.numpy() for k, x in zip(g.input_names, ins)}
    model = to_model(out, opset=23)
    assert sum(n.domain == "com.microsoft" for n in model.graph.node) == ln + rms
    _close(_ort(model, feeds), ref)


def test_contrib_pipeline_reports_skip_norm_places() -> None:
    from graphopt.frontends.fx import from_module
    from graphopt.passes.fusions import fusion_passes
    from graphopt.rewrite.passes import Pipeline
    from tests.passes.test_attention_flash import _model, _simplify

    m, ins, _, _ = _model("llama")
    g = _simplify(from_module(m, ins))
    res = Pipeline(fusion_passes("cpu", allow_contrib_ops=True)).run(g)
    assert res.stats["skip_norm_not_fused"] == 4 and not _contrib(res.graph)
    res = Pipeline(fusion_passes("cpu", allow_contrib_ops=False)).run(g)
    assert "skip_norm_not_fused" not in res.stats
    assert not any(k.startswith("opaque:Skip") for k in res.graph.op_counts())
