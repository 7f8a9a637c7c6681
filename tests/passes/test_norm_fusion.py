"""RMSNorm fusion: the reasons a place is not fused (rule, culprit node, condition), the
bfloat16 form (compared in torch), and every RMSNorm of Llama fused from torch.export and from
ONNX files of both torch exporters (f32 and f16). The spellings it accepts (rsqrt, pow -0.5,
1 / sqrt, reciprocal(sqrt), x / sqrt, the squares, weights, the float16 casts) are the rules of
passes/rules/rms_norm_fusion.rules, proven and replayed by tests/passes/test_rules.py."""
from __future__ import annotations

import functools
import io
import logging
import warnings

import numpy as np
import pytest

from graphopt.ir.text import parse
from graphopt.passes.norm_fusion import RmsNormFusion
from graphopt.rewrite.passes import Pipeline

# ---- spellings of the root, as small graphs (the fused forms: rules/rms_norm_fusion.rules) -----

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
    res = RmsNormFusion().run(parse(src))
    assert not res.changed and len(res.candidates) == 1
    c = res.candidates[0]
    assert not c.matched and c.rule == "rms_norm_fusion" and c.kind == "rms_norm"
    assert c.culprit is not None and c.culprit.op == culprit_op, c.describe()
    assert condition in c.reason and "NOT fused" in c.describe(), c.describe()
    assert res.stats["rms_norm_not_fused"] == 1 and res.stats["rms_norm_fused"] == 0


def test_root_used_twice_is_reported() -> None:
    src = _rms_src(SPELLINGS["x / sqrt"]).replace('return %y as "y"',
                                                  'return %y as "y", %s as "s"')
    res = RmsNormFusion().run(parse(src))
    assert not res.changed and len(res.candidates) == 1
    c = res.candidates[0]
    assert not c.matched and c.culprit is not None and c.culprit.op == "sqrt"
    assert "2 users" in c.reason


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
    res = RmsNormFusion().run(g)
    assert not res.changed and [c.anchor.op for c in res.candidates] == ["sqrt"]
    assert "other than mean + eps" in res.candidates[0].reason


def test_fused_candidate_names_spelling_and_weight() -> None:
    res = RmsNormFusion().run(parse(_rms_src(SPELLINGS["dynamo onnx: reciprocal(sqrt)"])))
    (c,) = res.candidates
    assert c.matched and c.spelling == "x * reciprocal(sqrt)" and "with weight" in c.detail
    assert res.stats["rms_norm_fused"] == 1


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
    notes = [c.describe() for c in res.candidates if not c.matched]
    assert res.stats["rms_norm_fused"] == LLAMA_NORMS, notes
    assert res.stats["rms_norm_not_fused"] == 0, notes
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
