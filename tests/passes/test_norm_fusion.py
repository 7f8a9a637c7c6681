"""RMSNorm fusion: every spelling of x * (mean(x^2) + eps)^(-1/2) [* w] that remains after
default_passes (rsqrt, pow -0.5, 1 / sqrt, reciprocal(sqrt), x / sqrt, the float16 casts) fused
into golden IR with unchanged results, the reasons a place is not fused, and every RMSNorm of
Llama fused from torch.export and from ONNX files of both torch exporters (f32 and f16)."""
from __future__ import annotations

import functools
import io
import logging
import warnings

import numpy as np
import pytest

from graphopt.ir.text import parse
from graphopt.passes.norm_fusion import RmsNormFusion, find_rms
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


# ---- every spelling of the root, as small graphs ------------------------------------------------

CONSTS = """  %one: f32[] = constant() {data=dense<f32[]>[1.0]}
  %half: f32[] = constant() {data=dense<f32[]>[0.5]}
  %mhalf: f32[] = constant() {data=dense<f32[]>[-0.5]}
"""

# spelling -> lines computing %n = x / sqrt(%a) from %a = mean(x*x) + eps
SPELLINGS = {
    "rsqrt * x": """  %r: f32[2,3,1] = rsqrt(%a)
  %n: f32[2,3,4] = mul(%r, %x)""",
    "pow -0.5": """  %r: f32[2,3,1] = pow(%a, %mhalf)
  %n: f32[2,3,4] = mul(%x, %r)""",
    "legacy onnx: 1 / sqrt": """  %s: f32[2,3,1] = sqrt(%a)
  %r: f32[2,3,1] = div(%one, %s)
  %n: f32[2,3,4] = mul(%x, %r)""",
    "dynamo onnx: reciprocal(sqrt)": """  %s: f32[2,3,1] = sqrt(%a)
  %r: f32[2,3,1] = reciprocal(%s)
  %n: f32[2,3,4] = mul(%x, %r)""",
    "x / sqrt": """  %s: f32[2,3,1] = sqrt(%a)
  %n: f32[2,3,4] = div(%x, %s)""",
    "x / pow 0.5": """  %s: f32[2,3,1] = pow(%a, %half)
  %n: f32[2,3,4] = div(%x, %s)""",
    "reciprocal(pow 0.5)": """  %s: f32[2,3,1] = pow(%a, %half)
  %r: f32[2,3,1] = reciprocal(%s)
  %n: f32[2,3,4] = mul(%r, %x)""",
    "1 / pow 0.5": """  %s: f32[2,3,1] = pow(%a, %half)
  %r: f32[2,3,1] = div(%one, %s)
  %n: f32[2,3,4] = mul(%x, %r)""",
}


def _rms_src(root: str, square: str = "mul(%x, %x)", weight: bool = True) -> str:
    w = """  %w: f32[4] = constant() {data=dense<f32[4]>[1.0, 2.0, 0.5, -1.0]}
  %y: f32[2,3,4] = mul(%w, %n)
  return %y as "y\"""" if weight else '  return %n as "y"'
    return f"""
graph t(%x: f32[2,3,4]) {{
{CONSTS}  %sq: f32[2,3,4] = {square}
  %m: f32[2,3,1] = reduce_mean(%sq) {{axes=(2,), keepdims=true}}
  %eps: f32[] = constant() {{data=dense<f32[]>[0.0625]}}
  %a: f32[2,3,1] = add(%m, %eps)
{root}
{w}
}}"""


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_every_spelling_is_fused(spelling: str) -> None:
    assert_rewrite(RmsNormFusion(), _rms_src(SPELLINGS[spelling]), """
graph t(%x: f32[2,3,4]) {
  %w: f32[4] = constant() {data=dense<f32[4]>[1.0, 2.0, 0.5, -1.0]}
  %0: f32[2,3,4] = rms_norm(%x, %w) {axis=2, epsilon=0.0625}
  return %0 as "y"
}""", {"rms_norm_fused": 1})


def test_without_weight_scale_is_ones() -> None:
    assert_rewrite(RmsNormFusion(), _rms_src(SPELLINGS["x / sqrt"], "pow(%x, %two)", False)
                   .replace(CONSTS, CONSTS + '  %two: f32[] = constant() {data=dense<f32[]>[2.0]}\n'),
                   """
graph t(%x: f32[2,3,4]) {
  %0: f32[4] = constant() {data=dense<f32[4]>[1.0, 1.0, 1.0, 1.0]}
  %1: f32[2,3,4] = rms_norm(%x, %0) {axis=2, epsilon=0.0625}
  return %1 as "y"
}""", {"rms_norm_fused": 1})


@pytest.mark.parametrize("wshape, folded", [("1,1,4", True), ("3,4", False)])
def test_weight_of_size_n_is_folded_other_weights_stay(wshape: str, folded: bool) -> None:
    # a [1,1,N] weight becomes the [N] scale; a [S,N] one is not a per-channel scale: kept
    data = ", ".join(["1.0, 2.0, 0.5, -1.0"] * (3 if wshape == "3,4" else 1))
    src = _rms_src(SPELLINGS["x / sqrt"]).replace(
        "%w: f32[4] = constant() {data=dense<f32[4]>[1.0, 2.0, 0.5, -1.0]}",
        f"%w: f32[{wshape}] = constant() {{data=dense<f32[{wshape}]>[{data}]}}")
    w = f"  %w: f32[{wshape}] = constant() {{data=dense<f32[{wshape}]>[{data}]}}"
    golden = f"""
graph t(%x: f32[2,3,4]) {{
{w}
  %0: f32[4] = reshape(%w) {{shape=(4,)}}
  %1: f32[2,3,4] = rms_norm(%x, %0) {{axis=2, epsilon=0.0625}}
  return %1 as "y"
}}""" if folded else f"""
graph t(%x: f32[2,3,4]) {{
  %0: f32[4] = constant() {{data=dense<f32[4]>[1.0, 1.0, 1.0, 1.0]}}
  %1: f32[2,3,4] = rms_norm(%x, %0) {{axis=2, epsilon=0.0625}}
{w}
  %2: f32[2,3,4] = mul(%w, %1)
  return %2 as "y"
}}"""
    assert_rewrite(RmsNormFusion(), src, golden, {"rms_norm_fused": 1})


def _f16_src(cast_back: bool) -> str:
    tail = """  %nh: f16[2,3,4] = cast(%n) {to=dtype:f16}
  %w: f16[4] = constant() {data=dense<f16[4]>[1.0, 2.0, 0.5, -1.0]}
  %y: f16[2,3,4] = mul(%w, %nh)
  return %y as "y\"""" if cast_back else '  return %n as "y"'
    return f"""
graph t(%x0: f16[2,3,4]) {{
  %x: f32[2,3,4] = cast(%x0) {{to=dtype:f32}}
  %sq: f32[2,3,4] = mul(%x, %x)
  %m: f32[2,3,1] = reduce_mean(%sq) {{axes=(2,), keepdims=true}}
  %eps: f32[] = constant() {{data=dense<f32[]>[0.0625]}}
  %a: f32[2,3,1] = add(%m, %eps)
  %s: f32[2,3,1] = sqrt(%a)
  %r: f32[2,3,1] = reciprocal(%s)
  %n: f32[2,3,4] = mul(%x, %r)
{tail}
}}"""


def test_float16_casts_around_the_norm_fuse_into_one_f16_rms_norm() -> None:
    # HF LlamaRMSNorm in half precision: x.to(f32), normalized, .to(f16), * weight (f16)
    assert_rewrite(RmsNormFusion(), _f16_src(cast_back=True), """
graph t(%x0: f16[2,3,4]) {
  %w: f16[4] = constant() {data=dense<f16[4]>[1.0, 2.0, 0.5, -1.0]}
  %0: f16[2,3,4] = rms_norm(%x0, %w) {axis=2, epsilon=0.0625}
  return %0 as "y"
}""", {"rms_norm_fused": 1})


def test_float16_cast_without_cast_back_fuses_in_float32() -> None:
    assert_rewrite(RmsNormFusion(), _f16_src(cast_back=False), """
graph t(%x0: f16[2,3,4]) {
  %x: f32[2,3,4] = cast(%x0) {to=dtype:f32}
  %0: f32[4] = constant() {data=dense<f32[4]>[1.0, 1.0, 1.0, 1.0]}
  %1: f32[2,3,4] = rms_norm(%x, %0) {axis=2, epsilon=0.0625}
  return %1 as "y"
}""", {"rms_norm_fused": 1})


def test_bfloat16_casts_fuse_with_a_cast_ones_scale() -> None:
    # bfloat16 has no numpy form: the ones scale is a cast of f32 ones; compared in torch
    import torch

    from graphopt.frontends.torch_export import to_callable

    src = _f16_src(cast_back=False).replace("f16", "bf16").replace(
        '  return %n as "y"', '  %nh: bf16[2,3,4] = cast(%n) {to=dtype:bf16}\n  return %nh as "y"')
    g = parse(src)
    res = Pipeline([RmsNormFusion()]).run(g)
    assert res.stats["rms_norm_fused"] == 1
    (norm,) = [n for n in res.graph.nodes if n.op == "rms_norm"]
    assert norm.inputs[0] == g.inputs[0].out and norm.inputs[1].node.op == "cast"
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    want, got = to_callable(g)(x)[0].float(), to_callable(res.graph)(x)[0].float()
    assert float((want - got).abs().max() / want.abs().max()) < 1e-2


# ---- places that are not RMSNorms: one candidate each, with the reason ---------------------------

NOT_FUSED = [
    # (spelling, edits of its source, culprit op, condition)
    ("rsqrt * x", [("axes=(2,)", "axes=(1,)"), ("f32[2,3,1]", "f32[2,1,4]")], "reduce_mean",
     "not the last axis"),
    ("pow -0.5", [("add(%m, %eps)", "add(%m, %m)")], "add",
     "epsilon is not a non-negative scalar"),
    ("legacy onnx: 1 / sqrt", [("div(%one, %s)", "div(%half, %s)")], "div",
     "divides something other than x or 1"),
    ("dynamo onnx: reciprocal(sqrt)", [("mul(%x, %r)", "mul(%sq, %r)")], "reciprocal",
     "not used only to scale x"),
    ("x / sqrt", [("mul(%x, %x)", "add(%x, %x)")], "add", "mean of something other than x*x"),
    ("x / pow 0.5", [("[0.0625]", "[-0.0625]")], "add", "epsilon is not a non-negative scalar"),
    ("reciprocal(pow 0.5)", [("mul(%x, %x)", "mul(%x, %one)")], "mul",
     "mean of something other than x*x"),
    ("1 / pow 0.5", [("%m: f32[2,3,1] = reduce_mean(%sq) {axes=(2,), keepdims=true}",
                      "%m0: f32[2,3] = reduce_mean(%sq) {axes=(2,)}\n"
                      "  %m: f32[2,3,1] = reshape(%m0) {shape=(2, 3, 1)}")], "reshape",
     "not a keepdims mean"),
]


@pytest.mark.parametrize("spelling, edits, culprit_op, condition", NOT_FUSED,
                         ids=[s for s, *_ in NOT_FUSED])
def test_not_fused_names_node_and_condition(spelling: str, edits: list[tuple[str, str]],
                                            culprit_op: str, condition: str) -> None:
    src = _rms_src(SPELLINGS[spelling])
    for old, new in edits:
        assert old in src
        src = src.replace(old, new)
    g = parse(src)
    cands, found = find_rms(g)
    assert not found and len(cands) == 1
    c = cands[0]
    assert not c.fused and c.culprit is not None and c.culprit.op == culprit_op, c.describe()
    assert condition in c.condition, c.describe()
    res = RmsNormFusion().run(g)
    assert not res.changed and res.stats["rms_norm_not_fused"] == 1
    assert condition in res.stats["notes"][0]


def test_root_used_twice_is_reported() -> None:
    src = _rms_src(SPELLINGS["x / sqrt"]).replace('return %y as "y"',
                                                  'return %y as "y", %s as "s"')
    cands, found = find_rms(parse(src))
    assert not found and len(cands) == 1 and cands[0].culprit.op == "sqrt"
    assert "2 users" in cands[0].condition


def test_squares_and_other_roots_are_not_anchors() -> None:
    # pow(x, 2) and pow(x, 3) are not roots; a lone sqrt is one candidate with its reason
    g = parse("""
graph t(%x: f32[2,4]) {
  %two: f32[] = constant() {data=dense<f32[]>[2.0]}
  %three: f32[] = constant() {data=dense<f32[]>[3.0]}
  %a: f32[2,4] = pow(%x, %two)
  %b: f32[2,4] = pow(%a, %three)
  %s: f32[2,4] = sqrt(%b)
  return %s as "y"
}""")
    cands, found = find_rms(g)
    assert not found and [c.anchor.op for c in cands] == ["sqrt"]
    assert "other than mean + eps" in cands[0].condition


# ---- Llama: torch.export and both torch ONNX exporters --------------------------------------------

FRONTENDS = ("torch", "onnx_legacy", "onnx_dynamo")
LLAMA_NORMS = 5  # 2 per layer (input, post-attention) + the final norm


@functools.lru_cache(maxsize=None)
def _llama(half: bool):  # -> (module, inputs, names, reference numpy outputs)
    import torch

    from tests import models

    warnings.filterwarnings("ignore")
    m, ins, names = models.build("llama")
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # non-trivial norm weights, so the weight multiply is fused too
        for mod in m.modules():
            if type(mod).__name__ == "LlamaRMSNorm":
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=gen) + 0.5)
        if half:
            m = m.half()
        ref = tuple(r.float().numpy() for r in m(*ins))
    return m, ins, names, ref


def _graph(frontend: str, half: bool):
    import onnx
    import torch

    from graphopt.frontends.fx import from_module
    from graphopt.frontends.onnx import load

    m, ins, names, _ = _llama(half)
    if frontend == "torch":
        return from_module(m, ins)
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if frontend == "onnx_dynamo":
                return load(torch.onnx.export(m, ins, dynamo=True, input_names=list(names),
                                              verbose=False).model_proto)
            f = io.BytesIO()
            torch.onnx.export(m, ins, f, dynamo=False, input_names=list(names),
                              opset_version=17)
            return load(onnx.load_from_string(f.getvalue()))
    finally:
        logging.disable(logging.NOTSET)


@pytest.mark.parametrize("half", [False, True], ids=["f32", "f16"])
@pytest.mark.parametrize("frontend", FRONTENDS)
def test_llama_norms_fused(frontend: str, half: bool) -> None:
    from graphopt.check import check_graphs
    from graphopt.frontends.onnx_export import to_model
    from tests.passes.test_attention_flash import _close, _ort, _simplify

    m, ins, names, ref = _llama(half)
    g = _simplify(_graph(frontend, half))
    res = Pipeline([RmsNormFusion()]).run(g)
    assert res.stats["rms_norm_fused"] == LLAMA_NORMS, res.stats.get("notes")
    assert res.stats["rms_norm_not_fused"] == 0, res.stats.get("notes")
    out = _simplify(res.graph)
    counts = out.op_counts()
    assert counts.get("rms_norm") == LLAMA_NORMS, counts
    assert not {"rsqrt", "sqrt", "reciprocal", "div", "reduce_mean"} & set(counts), counts
    norms = [n for n in out.nodes if n.op == "rms_norm"]
    assert all(n.out_types[0].dtype.value == ("f16" if half else "f32") for n in norms)
    assert all(n.inputs[1].node.op == "constant" for n in norms)
    feeds = {k: x.numpy() for k, x in zip(g.input_names, ins)}
    check_graphs(g, out, inputs=feeds)
    model = to_model(out, opset=23)
    assert sum(nd.op_type == "RMSNormalization" for nd in model.graph.node) == LLAMA_NORMS
    assert not any(nd.op_type in ("Sqrt", "Reciprocal", "ReduceMean") for nd in model.graph.node)
    _close(_ort(model, feeds), ref, 5e-3 if half else 1e-4)
    if frontend == "torch" and not half:
        import torch

        from graphopt.frontends.torch_export import to_callable

        with torch.no_grad():
            got = to_callable(out)(*ins)[0]
        assert float(np.abs(got.numpy() - ref[0]).max() / np.abs(ref[0]).max()) < 1e-5
