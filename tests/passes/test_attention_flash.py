"""Attention recognition: the reasons given when a block is not fused (rule, culprit node,
condition), exactness of the finite-fill causal choices for fully masked rows, causal masks left
unfolded, and every attention block of the test model families fused from torch.export and from
ONNX files of both torch exporters (static and dynamic axes). The spellings the matcher accepts
are stated, proven and replayed as rules: passes/rules/attention_flash.rules
(tests/passes/test_rules.py)."""
from __future__ import annotations

import functools
import io
import logging
import warnings

import numpy as np
import pytest


from graphopt.ir.text import parse
from graphopt.passes.attention_flash import AttentionFlash
from graphopt.rewrite.passes import Pipeline

CAUSAL4 = ("true, false, false, false, true, true, false, false, "
           "true, true, true, false, true, true, true, true")


LOWEST = "-3.4028234663852886e+38"


@pytest.mark.parametrize("combine, fill, causal", [
    ("alone", LOWEST, True),  # finite-fill causal mask alone: every row keeps key 0
    # where(tril and pad, 0, min): causal + padding mask + dead rows -> mean(v) over all keys
    ("and", LOWEST, True),
    ("and", "-1e9", False),  # s + fill does not round to fill: the mask is kept whole
    ("add", LOWEST, False),  # where(tril, s, min) + where(pad, 0, min): causal becomes additive
])
def test_finite_fill_causal_stays_exact_for_fully_masked_rows(combine: str, fill: str,
                                                              causal: bool) -> None:
    from graphopt.check import check_graphs

    body = {
        "alone": """  %sm: f32[2,2,4,4] = where(%tril, %s, %lo)
  %p: f32[2,2,4,4] = softmax(%sm) {axis=3}""",
        "and": """  %both: bool[2,1,4,4] = and(%tril, %pad)
  %sm: f32[2,2,4,4] = where(%both, %s, %lo)
  %p: f32[2,2,4,4] = softmax(%sm) {axis=3}""",
        "add": """  %sm: f32[2,2,4,4] = where(%tril, %s, %lo)
  %z: f32[] = constant() {data=dense<f32[]>[0.0]}
  %padm: f32[2,1,1,4] = where(%pad, %z, %lo)
  %sp: f32[2,2,4,4] = add(%sm, %padm)
  %p: f32[2,2,4,4] = softmax(%sp) {axis=3}""",
    }[combine]
    g = parse(f"""
graph t(%q: f32[2,2,4,8], %k: f32[2,2,4,8], %v: f32[2,2,4,8], %pad: bool[2,1,1,4]) {{
  %kt: f32[2,2,8,4] = transpose(%k) {{perm=(0, 1, 3, 2)}}
  %s: f32[2,2,4,4] = matmul(%q, %kt)
  %tril: bool[4,4] = constant() {{data=dense<bool[4,4]>[{CAUSAL4}]}}
  %lo: f32[] = constant() {{data=dense<f32[]>[{fill}]}}
{body}
  %o: f32[2,2,4,8] = matmul(%p, %v)
  return %o as "y"
}}""")
    res = AttentionFlash().run(g)
    assert res.stats["attention_fused"] == 1
    att = [n for n in res.graph.nodes if n.op == "attention"]
    assert att[0].attrs["causal"] == causal
    # the dead-row fix-up (mean of v) exists exactly when causal was split out of a joint mask
    assert ("reduce_mean" in res.graph.op_counts()) == (combine == "and" and causal)
    # batch 0 is left-padded by 2: its query rows 0 and 1 see only padded keys
    pad = np.array([[[[False, False, True, True]]], [[[True, True, True, True]]]])
    rng = np.random.default_rng(1)
    feeds = {**{n: rng.standard_normal((2, 2, 4, 8)).astype(np.float32) for n in "qkv"},
             "pad": pad}
    check_graphs(g, res.graph, inputs=feeds)


def test_causal_mask_left_unfolded_is_evaluated() -> None:
    """At long sequences constant folding leaves ``arange <= arange[:, None]`` unfolded (size
    limit); the matcher evaluates such constant expressions to prove causality."""
    g = parse("""
graph t(%q: f32[1,2,4,8], %k: f32[1,2,4,8], %v: f32[1,2,4,8]) {
  %kt: f32[1,2,8,4] = transpose(%k) {perm=(0, 1, 3, 2)}
  %s: f32[1,2,4,4] = matmul(%q, %kt)
  %j: i64[1,4] = constant() {data=dense<i64[1,4]>[0, 1, 2, 3]}
  %i: i64[4,1] = constant() {data=dense<i64[4,1]>[0, 1, 2, 3]}
  %m: bool[4,4] = less_equal(%j, %i)
  %ninf: f32[] = constant() {data=dense<f32[]>[-inf]}
  %sm: f32[1,2,4,4] = where(%m, %s, %ninf)
  %p: f32[1,2,4,4] = softmax(%sm) {axis=3}
  %o: f32[1,2,4,8] = matmul(%p, %v)
  return %o as "y"
}""")
    from graphopt.check import check_graphs

    res = AttentionFlash().run(g)
    assert res.graph.op_counts() == {"attention": 1}
    assert next(n for n in res.graph.nodes if n.op == "attention").attrs["causal"]
    check_graphs(g, res.graph)


@pytest.mark.parametrize("src, culprit_op, reason", [
    # the probabilities are also an output (output_attentions=True)
    ("""graph t(%q: f32[1,1,3,4], %k: f32[1,1,4,3], %v: f32[1,1,3,4]) {
  %s: f32[1,1,3,3] = matmul(%q, %k)
  %p: f32[1,1,3,3] = softmax(%s) {axis=3}
  %o: f32[1,1,3,4] = matmul(%p, %v)
  return %o as "y", %p as "probs"
}""", "softmax", "have 2 users"),
    # the scale is an input, not a constant
    ("""graph t(%q: f32[1,1,3,4], %k: f32[1,1,4,3], %v: f32[1,1,3,4], %c: f32[]) {
  %s: f32[1,1,3,3] = matmul(%q, %k)
  %ss: f32[1,1,3,3] = mul(%s, %c)
  %p: f32[1,1,3,3] = softmax(%ss) {axis=3}
  %o: f32[1,1,3,4] = matmul(%p, %v)
  return %o as "y"
}""", "mul", "non-constant"),
    # logit soft-capping: tanh on the scores is not attention's meaning
    ("""graph t(%q: f32[1,1,3,4], %k: f32[1,1,4,3], %v: f32[1,1,3,4]) {
  %s: f32[1,1,3,3] = matmul(%q, %k)
  %t: f32[1,1,3,3] = tanh(%s)
  %p: f32[1,1,3,3] = softmax(%t) {axis=3}
  %o: f32[1,1,3,4] = matmul(%p, %v)
  return %o as "y"
}""", "tanh", "score path reaches tanh"),
    # softmax over the query axis
    ("""graph t(%q: f32[1,1,3,4], %k: f32[1,1,4,3], %v: f32[1,1,3,4]) {
  %s: f32[1,1,3,3] = matmul(%q, %k)
  %p: f32[1,1,3,3] = softmax(%s) {axis=2}
  %o: f32[1,1,3,4] = matmul(%p, %v)
  return %o as "y"
}""", "softmax", "not the last axis"),
    # a where whose fill is not very negative is not a mask
    ("""graph t(%q: f32[1,1,3,4], %k: f32[1,1,4,3], %v: f32[1,1,3,4], %m: bool[3,3]) {
  %s: f32[1,1,3,3] = matmul(%q, %k)
  %z: f32[] = constant() {data=dense<f32[]>[0.0]}
  %w: f32[1,1,3,3] = where(%m, %s, %z)
  %p: f32[1,1,3,3] = softmax(%w) {axis=3}
  %o: f32[1,1,3,4] = matmul(%p, %v)
  return %o as "y"
}""", "where", "very negative"),
])
def test_not_fused_names_rule_node_and_condition(src: str, culprit_op: str, reason: str) -> None:
    g = parse(src)
    res = AttentionFlash().run(g)
    assert not res.changed and len(res.candidates) == 1
    c = res.candidates[0]
    assert not c.matched and c.rule == "attention_flash" and c.kind == "attention"
    assert c.culprit is not None and c.culprit.op == culprit_op, c.describe()
    assert reason in c.reason, c.describe()
    assert res.stats["attention_not_fused"] == 1 and res.stats["attention_fused"] == 0
    assert "notes" not in res.stats and "NOT fused" in c.describe()


# ---- real model families, three frontends -------------------------------------------------------

# name -> (attention blocks, causal ones, GQA ones). The decoders get padded attention masks
# (tests/models.py) combined with the causal mask under the fill finfo.min: causal=True with a
# padding mask and a fix-up for fully masked rows (mean of v over every key, attention_flash.py).
EXPECTED = {
    "gpt2": (2, 2, 0),
    "bert": (2, 0, 0),
    "llama": (2, 2, 2),
    "mistral": (2, 0, 2),  # sliding window: the band mask stays explicit
    # encoder self, decoder self, decoder cross; the decoder's causal mask shares its row with
    # the relative position bias (another additive term), so it stays inside the mask: exact for
    # fully masked rows only that way
    "t5": (6, 0, 0),
    "vit": (2, 0, 0),
}
FRONTENDS = ("torch", "onnx_legacy", "onnx_dynamo")


@functools.lru_cache(maxsize=None)
def _model(name: str):  # -> (module, inputs, names, reference numpy outputs)
    import torch

    from tests import models

    warnings.filterwarnings("ignore")
    m, ins, names = models.build(name)
    with torch.no_grad():
        ref = tuple(r.numpy() for r in m(*ins))
    return m, ins, names, ref


def _onnx(name: str, dynamo: bool):
    import onnx
    import torch

    m, ins, names, _ = _model(name)
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if dynamo:
                return torch.onnx.export(m, ins, dynamo=True, input_names=list(names),
                                         verbose=False).model_proto
            f = io.BytesIO()
            torch.onnx.export(m, ins, f, dynamo=False, input_names=list(names),
                              opset_version=17)
            return onnx.load_from_string(f.getvalue())
    finally:
        logging.disable(logging.NOTSET)


def _simplify(g):
    from graphopt.pipeline import default_passes

    return Pipeline(default_passes(), fixed_point=True).run(g).graph


def _ort(model, feeds):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"]).run(None, feeds)


def _close(got, ref, tol: float = 1e-4) -> None:
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        err = float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-12))
        assert err <= tol, f"relative error {err:.3g}"


@pytest.mark.parametrize("frontend", FRONTENDS)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_attention_block_is_fused(name: str, frontend: str) -> None:
    from graphopt.frontends.onnx_export import to_model

    m, ins, names, ref = _model(name)
    if frontend == "torch":
        from graphopt.frontends.fx import from_module

        g = from_module(m, ins)
    else:
        from graphopt.frontends.onnx import load

        proto = _onnx(name, dynamo=frontend == "onnx_dynamo")
        g = load(proto)
    g = _simplify(g)
    res = Pipeline([AttentionFlash()]).run(g)
    fused = _simplify(res.graph)
    n, causal, gqa = EXPECTED[name]
    assert res.stats["attention_fused"] == n, [c.describe() for c in res.candidates]
    assert res.stats["attention_not_fused"] == 0, [c.describe() for c in res.candidates]
    counts = fused.op_counts()
    assert counts.get("attention") == n and "softmax" not in counts, counts
    att = [x for x in fused.nodes if x.op == "attention"]
    assert sum(x.attrs["causal"] for x in att) == causal
    assert sum(x.inputs[0].type.shape[1] != x.inputs[1].type.shape[1] for x in att) == gqa
    feeds = {k: x.numpy() for k, x in zip(g.input_names, ins)}
    model = to_model(fused, opset=23)
    # one ONNX Attention per block (f32 models: additive masks export through Attention too)
    assert sum(nd.op_type == "Attention" for nd in model.graph.node) == n
    assert not any(nd.op_type == "Softmax" for nd in model.graph.node)
    _close(_ort(model, feeds), ref)
    if frontend == "torch":
        import torch

        from graphopt.frontends.torch_export import to_callable

        with torch.no_grad():
            out = to_callable(fused)(*ins)
        _close([o.numpy() for o in out], ref)


@pytest.mark.parametrize("name, causal, gqa", [("llama_sdpa", 2, 2), ("gpt2_sdpa", 2, 0)])
def test_sdpa_attention_is_refined(name: str, causal: int, gqa: int) -> None:
    import torch

    from graphopt.frontends.fx import from_module
    from graphopt.frontends.torch_export import to_callable

    m, ins, names, ref = _model(name)
    g = _simplify(from_module(m, ins))
    res = Pipeline([AttentionFlash()]).run(g)
    assert res.stats["attention_refined"] == 2
    assert res.stats["attention_causal"] == causal and res.stats["attention_gqa"] == gqa
    with torch.no_grad():
        out = to_callable(_simplify(res.graph))(*ins)
    _close([o.numpy() for o in out], ref)


@pytest.mark.parametrize("name", ["llama_sdpa", "gpt2_sdpa", "bert_sdpa"])
def test_sdpa_nan_guard_from_dynamo_export_is_fused(name: str) -> None:
    # the dynamo exporter decomposes SDPA with a bool mask into softmax + where(isnan(p), 0, p)
    import graphopt

    proto = _onnx(name, dynamo=True)
    assert any(nd.op_type == "IsNaN" for nd in proto.graph.node)
    om = graphopt.optimize(proto, budget=0)  # with the numeric check against the original
    counts = om.graph.op_counts()
    assert counts.get("attention") == 2 and "softmax" not in counts and "isnan" not in counts
    assert om.report["check"]["ok"]


# ---- dynamic-axes exports (symbolic batch and sequence) -----------------------------------------

# name -> attention blocks. With a symbolic sequence the causal mask is computed at run time
# (Range / comparisons), not a constant tril, so it stays an explicit mask: causal=False.
DYNAMIC = {"gpt2": 2, "bert": 2, "llama": 2}


def _onnx_dynamic(name: str, dynamo: bool):
    import onnx
    import torch

    m, ins, names, _ = _model(name)
    axes = {n: {0: "batch", 1: "seq"} for n in names}
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if dynamo:
                from torch.export import Dim

                batch, seq = Dim("batch", max=64), Dim("seq", max=512)
                shapes = {n: {0: batch, 1: seq} for n in names}
                return torch.onnx.export(m, ins, dynamo=True, input_names=list(names),
                                         dynamic_shapes=shapes, verbose=False).model_proto
            f = io.BytesIO()
            torch.onnx.export(m, ins, f, dynamo=False, input_names=list(names),
                              dynamic_axes=axes, opset_version=17)
            return onnx.load_from_string(f.getvalue())
    finally:
        logging.disable(logging.NOTSET)


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
@pytest.mark.parametrize("name", sorted(DYNAMIC))
def test_dynamic_axes_exports_are_fused(name: str, dynamo: bool) -> None:
    from graphopt.frontends.onnx import load
    from graphopt.frontends.onnx_export import to_model

    m, ins, names, ref = _model(name)
    g = _simplify(load(_onnx_dynamic(name, dynamo)))
    assert any(not isinstance(d, int) for d in g.inputs[0].attrs["type"].shape)
    res = Pipeline([AttentionFlash()]).run(g)
    n = DYNAMIC[name]
    assert res.stats["attention_fused"] == n, [c.describe() for c in res.candidates]
    assert res.stats["attention_not_fused"] == 0, [c.describe() for c in res.candidates]
    fused = _simplify(res.graph)
    att = [x for x in fused.nodes if x.op == "attention"]
    assert len(att) == n and "softmax" not in fused.op_counts()
    assert all(not isinstance(x.inputs[0].type.shape[2], int) for x in att)  # symbolic S
    # numerics at the source opset (attention as its composition): opset 23 is refused by the
    # exporter while an opaque Shape of the source opset remains (see docs/fusions.md)
    model = to_model(fused)
    feeds = {k: x.numpy() for k, x in zip(g.input_names, ins)}
    _close(_ort(model, feeds), ref)
    # another batch and length runs too (the shapes really are symbolic)
    short = {k: v[:1, :5] for k, v in feeds.items()}
    import torch

    with torch.no_grad():
        want = [r.numpy() for r in m(*(torch.from_numpy(short[k]) for k in g.input_names))]
    _close(_ort(model, short), want)
