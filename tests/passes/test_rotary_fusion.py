"""Rotary fusion: the fused op computes the original bit for bit in every operand order and
spelling (split, sub, mul by -1, casts and scales on cos), constant caches of batch 1 / B / rank 2
fold to [B', S, D/2] constants, the reasons when not fused (cos with different halves,
interleaved pairs, partial rotary, per-head cos, wrong halves, unprovable cos), and the q / k
rotaries of Llama and Mistral fused from torch.export and both ONNX exporters (static and dynamic
axes), checked against the original and in ONNX Runtime as RotaryEmbedding nodes. The spellings
as IR are the rules of passes/rules/rotary_fusion.rules (proven and replayed by
tests/passes/test_rules.py)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from graphopt.ir.graph import Graph
from graphopt.ir.interp import run
from graphopt.ir.text import parse
from graphopt.passes.rotary_fusion import RotaryFusion
from graphopt.rewrite.passes import Pipeline

RNG = np.random.default_rng(11)


def _feeds(g: Graph) -> dict[str, np.ndarray]:
    out = {}
    for n in g.inputs:
        t = n.attrs["type"]
        out[n.attrs["name"]] = RNG.standard_normal(tuple(t.shape)).astype(t.dtype.to_numpy())
    return out


def _notes(res: Any) -> list[str]:
    return [c.describe() for c in res.candidates if not c.matched]


def _bitwise_same(g: Graph, fused: Graph) -> None:
    """The fused graph computes the original's values bit for bit (same ops, same order)."""
    feeds = _feeds(g)
    for a, b in zip(run(g, **feeds), run(fused, **feeds)):
        np.testing.assert_array_equal(a, b)


HF = """
graph t(%x: f32[2,2,3,8], %f: f32[3,4]) {{
  %e: f32[3,8] = concat(%f, %f) {{axis=1}}
  %c: f32[3,8] = cos(%e)
  %c4: f32[1,1,3,8] = unsqueeze(%c) {{axes=(0, 1)}}
  %xc: f32[2,2,3,8] = mul({xc})
  %x2: f32[2,2,3,4] = slice(%x) {{axes=(3,), starts=(4,), ends=(8,), steps=(1,)}}
  %n: f32[2,2,3,4] = neg(%x2)
  %x1: f32[2,2,3,4] = slice(%x) {{axes=(3,), starts=(0,), ends=(4,), steps=(1,)}}
  %r: f32[2,2,3,8] = concat(%n, %x1) {{axis=3}}
  %s: f32[3,8] = sin(%e)
  %s4: f32[1,1,3,8] = unsqueeze(%s) {{axes=(0, 1)}}
  %rs: f32[2,2,3,8] = mul({rs})
  %y: f32[2,2,3,8] = add({y})
  return %y as "y"
}}"""


@pytest.mark.parametrize("xc, rs, y", [
    ("%x, %c4", "%r, %s4", "%xc, %rs"),  # HF's order
    ("%c4, %x", "%s4, %r", "%rs, %xc"),  # every operand order swapped
    ("%x, %c4", "%s4, %r", "%rs, %xc"),
])
def test_operand_orders(xc: str, rs: str, y: str) -> None:
    g = parse(HF.format(xc=xc, rs=rs, y=y))
    res = Pipeline([RotaryFusion()]).run(g)
    assert res.stats["rotary_fused"] == 1, res.stats
    assert res.graph.op_counts().get("rotary_embedding") == 1
    _bitwise_same(g, res.graph)


def _const(shape: tuple[int, ...], halves_equal: bool = True, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    half = rng.standard_normal(shape[:-1] + (shape[-1] // 2,)).astype(np.float32)
    a = np.concatenate([half, half if halves_equal else half + 1], axis=-1)
    vals = ", ".join(repr(float(v)) for v in a.reshape(-1))
    dims = ",".join(map(str, shape))
    return f"constant() {{data=dense<f32[{dims}]>[{vals}]}}"


def _body(cshape: tuple[int, ...], rot: str, comb: str = "add(%xc, %rs)", x: str = "2,2,3,8",
          cos: str | None = None, sin: str | None = None) -> str:
    cdims = ",".join(map(str, cshape))
    return f"""graph t(%x: f32[{x}]) {{
  %c: f32[{cdims}] = {cos or _const(cshape, seed=1)}
  %s: f32[{cdims}] = {sin or _const(cshape, seed=2)}
  %xc: f32[{x}] = mul(%x, %c)
{rot}
  %rs: f32[{x}] = mul(%r, %s)
  %y: f32[{x}] = {comb}
  return %y as "y"
}}"""


ROT_HALF = """  %x2: f32[2,2,3,4] = slice(%x) {axes=(3,), starts=(4,), ends=(8,), steps=(1,)}
  %n: f32[2,2,3,4] = neg(%x2)
  %x1: f32[2,2,3,4] = slice(%x) {axes=(3,), starts=(0,), ends=(4,), steps=(1,)}
  %r: f32[2,2,3,8] = concat(%n, %x1) {axis=3}"""
ROT_SPLIT = """  %x1: f32[2,2,3,4], %x2: f32[2,2,3,4] = split(%x) {axis=3, sizes=(4, 4)}
  %n: f32[2,2,3,4] = neg(%x2)
  %r: f32[2,2,3,8] = concat(%n, %x1) {axis=3}"""
ROT_SUB = """  %x1: f32[2,2,3,4], %x2: f32[2,2,3,4] = split(%x) {axis=3, sizes=(4, 4)}
  %n: f32[2,2,3,4] = neg(%x1)
  %r: f32[2,2,3,8] = concat(%x2, %n) {axis=3}"""
ROT_MINUS1 = """  %x2: f32[2,2,3,4] = slice(%x) {axes=(3,), starts=(4,), ends=(8,), steps=(1,)}
  %m1: f32[] = constant() {data=dense<f32[]>[-1.0]}
  %n: f32[2,2,3,4] = mul(%x2, %m1)
  %x1: f32[2,2,3,4] = slice(%x) {axes=(3,), starts=(0,), ends=(4,), steps=(1,)}
  %r: f32[2,2,3,8] = concat(%n, %x1) {axis=3}"""


@pytest.mark.parametrize("cshape, rot, comb, cache", [
    ((1, 1, 3, 8), ROT_HALF, "add(%xc, %rs)", (1, 3, 4)),  # HF constant caches (batch 1)
    ((2, 1, 3, 8), ROT_HALF, "add(%xc, %rs)", (2, 3, 4)),  # one cache per sequence
    ((3, 8), ROT_HALF, "add(%xc, %rs)", (1, 3, 4)),  # rank-2 [S, D]
    ((1, 1, 1, 8), ROT_HALF, "add(%xc, %rs)", (1, 3, 4)),  # one angle for every position
    ((1, 1, 3, 8), ROT_SPLIT, "add(%xc, %rs)", (1, 3, 4)),  # halves from a split
    ((1, 1, 3, 8), ROT_SUB, "sub(%xc, %rs)", (1, 3, 4)),  # x*c - cat(x2, -x1)*s
    ((1, 1, 3, 8), ROT_MINUS1, "add(%xc, %rs)", (1, 3, 4)),  # neg written as * -1
])
def test_spellings_and_constant_caches(cshape: tuple, rot: str, comb: str,
                                       cache: tuple) -> None:
    from graphopt.pipeline import default_passes

    g = parse(_body(cshape, rot, comb))
    res = Pipeline([RotaryFusion()]).run(g)
    assert res.stats["rotary_fused"] == 1, _notes(res)
    fused = Pipeline(default_passes(), fixed_point=True).run(res.graph).graph
    rot_nodes = [n for n in fused.nodes if n.op == "rotary_embedding"]
    assert len(rot_nodes) == 1 and "concat" not in fused.op_counts(), fused.to_text()
    # constant caches fold to [B', S, D/2] constants
    for v in rot_nodes[0].inputs[1:]:
        assert v.node.op == "constant" and tuple(v.type.shape) == cache
    _bitwise_same(g, fused)


def test_computed_cos_through_cast_and_scale() -> None:
    # transformers: cos = (cos(cat(freqs, freqs)) * attention_scaling).to(x.dtype)[:, None]
    g = parse("""graph t(%x: f32[2,2,3,8], %f: f64[2,3,4]) {
  %e: f64[2,3,8] = concat(%f, %f) {axis=2}
  %k: f64[] = constant() {data=dense<f64[]>[0.75]}
  %c0: f64[2,3,8] = cos(%e)
  %c1: f64[2,3,8] = mul(%c0, %k)
  %c2: f32[2,3,8] = cast(%c1) {to=dtype:f32}
  %c: f32[2,1,3,8] = unsqueeze(%c2) {axes=(1,)}
  %s0: f64[2,3,8] = sin(%e)
  %s1: f64[2,3,8] = mul(%s0, %k)
  %s2: f32[2,3,8] = cast(%s1) {to=dtype:f32}
  %s: f32[2,1,3,8] = unsqueeze(%s2) {axes=(1,)}
  %xc: f32[2,2,3,8] = mul(%x, %c)
""" + ROT_HALF + """
  %rs: f32[2,2,3,8] = mul(%r, %s)
  %y: f32[2,2,3,8] = add(%xc, %rs)
  return %y as "y"
}""")
    res = Pipeline([RotaryFusion()]).run(g)
    assert res.stats["rotary_fused"] == 1, _notes(res)
    _bitwise_same(g, res.graph)


def test_partial_rotary_hf_style_fuses_the_rotated_slice() -> None:
    # Phi / NeoX: rotate the first 4 of 8 dims (a full rotary of that slice), pass the rest
    g = parse("""graph t(%q: f32[1,2,3,8], %f: f32[3,2]) {
  %x: f32[1,2,3,4] = slice(%q) {axes=(3,), starts=(0,), ends=(4,), steps=(1,)}
  %p: f32[1,2,3,4] = slice(%q) {axes=(3,), starts=(4,), ends=(8,), steps=(1,)}
  %e: f32[3,4] = concat(%f, %f) {axis=1}
  %c: f32[3,4] = cos(%e)
  %s: f32[3,4] = sin(%e)
  %xc: f32[1,2,3,4] = mul(%x, %c)
  %x2: f32[1,2,3,2] = slice(%x) {axes=(3,), starts=(2,), ends=(4,), steps=(1,)}
  %n: f32[1,2,3,2] = neg(%x2)
  %x1: f32[1,2,3,2] = slice(%x) {axes=(3,), starts=(0,), ends=(2,), steps=(1,)}
  %r: f32[1,2,3,4] = concat(%n, %x1) {axis=3}
  %rs: f32[1,2,3,4] = mul(%r, %s)
  %y: f32[1,2,3,4] = add(%xc, %rs)
  %o: f32[1,2,3,8] = concat(%y, %p) {axis=3}
  return %o as "y"
}""")
    res = Pipeline([RotaryFusion()]).run(g)
    assert res.stats["rotary_fused"] == 1, _notes(res)
    _bitwise_same(g, res.graph)


# ---- not fused: the reason names the node and the condition ------------------------------------

INTERLEAVED = """  %e0: f32[2,2,3,4] = slice(%x) {axes=(3,), starts=(0,), ends=(8,), steps=(2,)}
  %o0: f32[2,2,3,4] = slice(%x) {axes=(3,), starts=(1,), ends=(8,), steps=(2,)}
  %n: f32[2,2,3,4] = neg(%o0)
  %a: f32[2,2,3,4,1] = unsqueeze(%n) {axes=(4,)}
  %b: f32[2,2,3,4,1] = unsqueeze(%e0) {axes=(4,)}
  %st: f32[2,2,3,4,2] = concat(%a, %b) {axis=4}
  %r: f32[2,2,3,8] = reshape(%st) {shape=(2, 2, 3, 8)}"""
PARTIAL = """  %x2: f32[2,2,3,2] = slice(%x) {axes=(3,), starts=(2,), ends=(4,), steps=(1,)}
  %n: f32[2,2,3,2] = neg(%x2)
  %x1: f32[2,2,3,2] = slice(%x) {axes=(3,), starts=(0,), ends=(2,), steps=(1,)}
  %pass: f32[2,2,3,4] = slice(%x) {axes=(3,), starts=(4,), ends=(8,), steps=(1,)}
  %r: f32[2,2,3,8] = concat(%n, %x1, %pass) {axis=3}"""
SWAPPED = """  %x2: f32[2,2,3,4] = slice(%x) {axes=(3,), starts=(4,), ends=(8,), steps=(1,)}
  %x1: f32[2,2,3,4] = slice(%x) {axes=(3,), starts=(0,), ends=(4,), steps=(1,)}
  %n: f32[2,2,3,4] = neg(%x1)
  %r: f32[2,2,3,8] = concat(%n, %x2) {axis=3}"""
WRONG_SIGN = """  %x1: f32[2,2,3,4], %x2: f32[2,2,3,4] = split(%x) {axis=3, sizes=(4, 4)}
  %n: f32[2,2,3,4] = neg(%x1)
  %r: f32[2,2,3,8] = concat(%x2, %n) {axis=3}"""


@pytest.mark.parametrize("src, culprit_op, reason", [
    # a constant cos whose halves differ (not cat(c, c))
    (_body((1, 1, 3, 8), ROT_HALF, cos=_const((1, 1, 3, 8), halves_equal=False)),
     "constant", "two halves of cos along the last axis differ"),
    # GPT-J interleaved pairs: stack((-x_odd, x_even), -1).flatten(-2)
    (_body((1, 1, 3, 8), INTERLEAVED), "reshape", "interleaved"),
    # partial rotary over the first 4 dims written on the whole x
    (_body((1, 1, 3, 8), PARTIAL), "concat", "3 pieces, not 2 halves"),
    # a per-head cos
    (_body((1, 2, 3, 8), ROT_HALF), "constant", "varies along axis 1"),
    # cat(-x1, x2): the halves in the wrong places
    (_body((1, 1, 3, 8), SWAPPED), "concat", "not x[..., 4:8] and x[..., 0:4]"),
    # cat(x2, -x1) under an add (the sub spelling's operand)
    (_body((1, 1, 3, 8), WRONG_SIGN), "concat", "signs of the halves"),
], ids=["cos-halves-differ", "interleaved", "partial", "per-head-cos", "swapped-halves",
        "wrong-signs"])
def test_not_fused_names_rule_node_and_condition(src: str, culprit_op: str, reason: str) -> None:
    res = RotaryFusion().run(parse(src))
    assert not res.changed and len(res.candidates) == 1
    c = res.candidates[0]
    assert not c.matched and c.rule == "rotary_fusion" and c.kind == "rotary"
    assert c.culprit is not None and c.culprit.op == culprit_op, c.describe()
    assert reason in c.reason and "NOT fused" in c.describe(), c.describe()
    assert res.stats["rotary_not_fused"] == 1 and res.stats["rotary_fused"] == 0


@pytest.mark.parametrize("cos, culprit_op, reason", [
    # cos is a graph input: nothing says its halves are equal
    ("input", "input", "cannot prove the two halves of cos equal: input"),
    # cat(f, g) of two different values
    ("cat", "concat", "not cat(a, a)"),
])
def test_computed_cos_needs_a_proof(cos: str, culprit_op: str, reason: str) -> None:
    head = "%x: f32[2,2,3,8], %c: f32[1,1,3,8]" if cos == "input" else \
        "%x: f32[2,2,3,8], %f: f32[3,4], %f2: f32[3,4]"
    cdef = "" if cos == "input" else """
  %e: f32[3,8] = concat(%f, %f2) {axis=1}
  %c: f32[3,8] = cos(%e)"""
    ct = "f32[1,1,3,8]" if cos == "input" else "f32[3,8]"
    g = parse(f"""graph t({head}) {{{cdef}
  %s: {ct} = {_const((1, 1, 3, 8)) if cos == "input" else _const((3, 8))}
  %xc: f32[2,2,3,8] = mul(%x, %c)
{ROT_HALF}
  %rs: f32[2,2,3,8] = mul(%r, %s)
  %y: f32[2,2,3,8] = add(%xc, %rs)
  return %y as "y"
}}""")
    res = RotaryFusion().run(g)
    assert not res.changed and len(res.candidates) == 1
    c = res.candidates[0]
    assert c.culprit is not None and c.culprit.op == culprit_op and reason in c.reason, \
        c.describe()


def test_add_of_plain_products_is_no_candidate() -> None:
    g = parse("""graph t(%a: f32[2,8], %b: f32[2,8]) {
  %p: f32[2,8] = mul(%a, %b)
  %q: f32[2,8] = mul(%b, %b)
  %y: f32[2,8] = add(%p, %q)
  return %y as "y"
}""")
    res = RotaryFusion().run(g)
    assert res.candidates == () and not res.changed


# ---- real models --------------------------------------------------------------------------------

MODELS = ("llama", "mistral")
FRONTENDS = ("torch", "onnx_legacy", "onnx_dynamo")
PER_MODEL = 4  # 2 layers x (q, k)


def _lift(name: str, frontend: str) -> Any:
    from tests.passes.test_attention_flash import _onnx, _onnx_dynamic, _simplify

    if frontend == "torch":
        from graphopt.frontends.fx import from_module
        from tests.passes.test_attention_flash import _model

        m, ins, _, _ = _model(name)
        return _simplify(from_module(m, ins))
    from graphopt.frontends.onnx import load

    dynamo = frontend.endswith("dynamo")
    proto = _onnx_dynamic(name, dynamo) if frontend.startswith("dynamic") else _onnx(name, dynamo)
    return _simplify(load(proto))


def _fuse_and_check(name: str, frontend: str) -> tuple[Graph, Graph]:
    from graphopt.check import check_graphs
    from graphopt.frontends.onnx_export import to_model
    from tests.passes.test_attention_flash import _close, _model, _ort, _simplify

    m, ins, names, ref = _model(name)
    g = _lift(name, frontend)
    res = Pipeline([RotaryFusion()]).run(g)
    assert res.stats["rotary_fused"] == PER_MODEL, _notes(res)
    assert res.stats["rotary_not_fused"] == 0, _notes(res)
    fused = _simplify(res.graph)
    counts = fused.op_counts()
    assert counts.get("rotary_embedding") == PER_MODEL and "neg" not in counts, counts
    check_graphs(g, fused)
    feeds = {k: x.numpy() for k, x in zip(g.input_names, ins)}
    model = to_model(fused, opset=23)
    assert sum(n.op_type == "RotaryEmbedding" for n in model.graph.node) == PER_MODEL
    assert not any(n.op_type == "Neg" for n in model.graph.node)
    _close(_ort(model, feeds), ref)
    return g, fused


@pytest.mark.parametrize("frontend", FRONTENDS)
@pytest.mark.parametrize("name", MODELS)
def test_model_rotaries_are_fused(name: str, frontend: str) -> None:
    _, fused = _fuse_and_check(name, frontend)
    if frontend == "torch":
        import torch

        from graphopt.frontends.torch_export import to_callable
        from tests.passes.test_attention_flash import _close, _model

        _, ins, _, ref = _model(name)
        with torch.no_grad():
            out = to_callable(fused)(*ins)
        _close([o.numpy() for o in out], ref)


@pytest.mark.parametrize("frontend", ["dynamic_legacy", "dynamic_dynamo"])
def test_dynamic_axes_llama_rotaries_are_fused(frontend: str) -> None:
    import torch

    from graphopt.frontends.onnx_export import to_model
    from tests.passes.test_attention_flash import _close, _model, _ort

    g, fused = _fuse_and_check("llama", frontend)
    assert any(not isinstance(d, int) for d in g.inputs[0].attrs["type"].shape)
    # cos / sin are computed at run time: the caches are too, of symbolic length
    rot = [n for n in fused.nodes if n.op == "rotary_embedding"]
    assert all(not isinstance(n.inputs[1].type.shape[1], int) for n in rot)
    assert all(n.inputs[1].node.op != "constant" for n in rot)
    # another batch and length runs too (symbolic batch: the batch-1 cache is expanded at run time)
    m, _, _, _ = _model("llama")
    model = to_model(fused, opset=23)
    feeds = {"input_ids": np.arange(15, dtype=np.int64).reshape(3, 5) % 100,
             "attention_mask": np.ones((3, 5), np.int64)}
    with torch.no_grad():
        want = [r.numpy() for r in m(*(torch.from_numpy(feeds[k]) for k in g.input_names))]
    _close(_ort(model, feeds), want)


def test_fusion_passes_and_explain_include_rotary() -> None:
    from graphopt.explanation import Explanation, explain_model
    from graphopt.passes.fusions import fusion_passes

    names = [p.name for p in fusion_passes("cpu")]
    assert names.index("rotary_fusion") > names.index("gelu_fusion")
    assert names.index("rotary_fusion") > names.index("rms_norm_fusion")
    ex = explain_model(_lift("llama", "onnx_legacy"))
    cs = ex.of_kind("rotary")
    assert len(cs) == PER_MODEL and all(c.matched for c in cs), [c.describe() for c in cs]
    assert all("heads, head size" in c.detail and "halves by" in c.spelling for c in cs)
    text = ex.text()
    assert f"rotary embeddings: {PER_MODEL} found, {PER_MODEL} fused, 0 not fused" in text
    assert "rotary embeddings" not in Explanation("x", "cpu", []).text()


def test_pipeline_raises_the_export_opset() -> None:
    from graphopt.pipeline import raise_opset_for_fused_ops

    g = parse(_body((1, 1, 3, 8), ROT_HALF))
    fused = RotaryFusion().run(g).graph
    assert raise_opset_for_fused_ops(fused).meta.opset("") == 23
