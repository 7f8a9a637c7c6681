"""The decode attention as com.microsoft GroupQueryAttention (graphopt.kv.contrib.lower_decode,
``optimize(kv_cache=True, allow_contrib_ops=True)``).

Hand-built decode graphs (one cached attention in the shape ``derive`` builds) check the
lowering block by block against the reference interpreter on the unlowered graph: padded
batches (left padding, holes, query rows with no key at all), chunks of several new tokens
after a past, a sliding window, a kv-head repeat between the cache and the attention; and the
blocks the kernel cannot express exactly stay ``attention`` with the reason. The transformers
models (GPT-2, Llama with GQA, Mistral with a sliding window) check the whole path: the written
decode model holds one GroupQueryAttention per layer, its logits equal the portable decode
model's (padding positions included), ``om.generate`` equals transformers' greedy ``generate``
and onnxruntime-genai runs the saved folder to the same tokens.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import graphopt
from graphopt.check import run_graph
from graphopt.frontends import onnx_export
from graphopt.ir.graph import Graph
from graphopt.ir.node import Value, constant, input_node, op
from graphopt.ir.types import DType, TensorType
from graphopt.kv import glue
from graphopt.kv import contrib
from graphopt.kv.contrib import lower_decode
from graphopt.kv.spec import IO, CacheSpec
from tests import models

B, S, T, P = "batch_size", "sequence_length", "total_sequence_length", "past_sequence_length"
F32 = DType.f32


# ---- hand-built decode graphs ------------------------------------------------------------------

def _heads(x: Value, h: int, d: int) -> Value:
    """[B, S, h*d] -> [B, h, S, d]."""
    return op("transpose", op("reshape", x, shape=(B, S, h, d)), perm=(0, 2, 1, 3))


def _mask(ids: Value, amask: Value, window: int | None, padding: bool, causal: bool) -> Value:
    """The canonical decode mask of ``derive`` (keep[b, 0, i, j]); causal=False: every key."""
    total = glue.length(amask, 1)
    past = op("sub", total, glue.length(ids, 1))
    kcol = op("unsqueeze", glue.arange(constant(np.array(0, np.int64)), total, T), axes=(0,))
    qrow = op("unsqueeze", glue.arange(past, total, S), axes=(1,))
    keep = op("less_equal", kcol, qrow) if causal else \
        op("greater_equal", kcol, constant(np.zeros((1, 1), np.int64)))
    if window is not None:
        keep = op("and", keep, op("greater", kcol, op("sub", qrow, constant(
            np.array(window, np.int64)))))
    keep = op("unsqueeze", keep, axes=(0, 1))
    if padding:
        real = op("unsqueeze", op("cast", amask, to=DType.bool), axes=(1, 2))
        keep = op("and", keep, real)
    return keep


def _repeat(x: Value, hkv: int, n: int, d: int, interleave: bool) -> Value:
    """Each kv head n times: kv head c // n (interleave, transformers' repeat_kv) or c % n."""
    if interleave:
        y = op("expand", op("unsqueeze", x, axes=(2,)), shape=(B, hkv, n, T, d))
    else:
        y = op("expand", op("unsqueeze", x, axes=(1,)), shape=(B, n, hkv, T, d))
    return op("reshape", y, shape=(B, hkv * n, T, d))


def decode_graph(heads: int = 4, kv_heads: int = 2, head: int = 8, *, window: int | None = None,
                 padding: bool = True, causal: bool = True, repeat: str | None = None,
                 cached: bool = True, dtype: DType = F32) -> tuple[Graph, CacheSpec]:
    """One attention over concat(past, new) (``cached``; else over that plus 0) with the
    canonical mask; outputs: the attention output [B, S, H*D] and the presents.
    repeat: "interleave" / "tile" kv heads up to the query heads before the attention."""
    i64 = DType.i64
    ids = input_node("input_ids", TensorType((B, S), i64))
    amask = input_node("attention_mask", TensorType((B, T), i64))
    xs = [input_node(f"x{c}", TensorType((B, S, h * head), dtype))
          for c, h in zip("qkv", (heads, kv_heads, kv_heads))]
    pasts = [input_node(IO.past_key(0), TensorType((B, kv_heads, P, head), dtype)),
             input_node(IO.past_value(0), TensorType((B, kv_heads, P, head), dtype))]
    q = _heads(xs[0].out, heads, head)
    full = []
    for x, past in zip(xs[1:], pasts):
        new = _heads(x.out, kv_heads, head)
        kv = glue.append(past.out, new, 2, T)
        full.append(kv if cached else op("add", kv, constant(np.zeros((), dtype.to_numpy()))))
    read = full
    if repeat is not None:
        read = [_repeat(v, kv_heads, heads // kv_heads, head, repeat == "interleave")
                for v in full]
    mask = _mask(ids.out, amask.out, window, padding, causal)
    att = op("attention", q, read[0], read[1], mask, scale=None, causal=False)
    out = op("reshape", op("transpose", att, perm=(0, 2, 1, 3)), shape=(B, S, heads * head))
    spec = CacheSpec(num_layers=1, num_kv_heads=kv_heads, num_heads=heads, head_size=head,
                     hidden_size=heads * head, vocab_size=8, window=window,
                     dtype="float16" if dtype == DType.f16 else "float32")
    g = Graph([ids, amask, *xs, *pasts], [out, *full], ["out", IO.present_key(0),
                                                        IO.present_value(0)], name="decode")
    return g, spec


def _feeds(g: Graph, past: int, new: int, amask: np.ndarray, seed: int = 0
           ) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    b = amask.shape[0]
    feeds: dict[str, np.ndarray] = {"input_ids": np.zeros((b, new), np.int64),
                                    "attention_mask": amask}
    for n in g.inputs:
        name, t = n.attrs["name"], n.out_types[0]
        if name not in feeds:
            shape = tuple(b if d == B else new if d == S else past if d == P else d
                          for d in t.shape)  # type: ignore[union-attr]
            dt = t.dtype.to_numpy()  # type: ignore[union-attr]
            feeds[name] = rng.standard_normal(shape).astype(dt)
    return feeds


def _op_types(g: Graph) -> list[str]:
    return [n.op_type for n in onnx.load_from_string(onnx_export.to_bytes(g)).graph.node]


def _gqa_node(g: Graph) -> onnx.NodeProto:
    model = onnx.load_from_string(onnx_export.to_bytes(g))
    (node,) = [n for n in model.graph.node if n.op_type == "GroupQueryAttention"]
    return node


def _input(node: onnx.NodeProto, name: str) -> str:
    """The node's input by the schema's input name ("" when absent)."""
    k = contrib.gqa_inputs().index(name)
    return node.input[k] if k < len(node.input) else ""


# (past, new, attention_mask): prefill with a left-padded row (its first query rows see no key),
# one new token, a chunk of 3 new tokens after a past with holes
MASKS = [
    (0, 5, np.array([[1, 1, 1, 1, 1], [0, 0, 0, 1, 1]])),
    (6, 1, np.array([[1] * 7, [0, 0, 1, 1, 1, 1, 1]])),
    (6, 3, np.array([[1] * 9, [0, 1, 1, 0, 1, 1, 0, 1, 1]])),
]


def _assert_lowered_equal(g: Graph, spec: CacheSpec, masks: Any = MASKS) -> Graph:
    low, count, notes = lower_decode(g, spec)
    assert (count, notes) == (1, [])
    assert "GroupQueryAttention" in _op_types(low) and "Attention" not in _op_types(low)
    assert "Concat" not in _op_types(low)  # the presents are the kernel's
    for past, new, amask in masks:
        feeds = _feeds(g, past, new, amask.astype(np.int64))
        want = run_graph(g, feeds, "numpy")
        got = run_graph(low, feeds, "onnx")
        for w, x, name in zip(want, got, g.output_names):
            np.testing.assert_allclose(x, w, rtol=1e-5, atol=1e-5, err_msg=name)
    return low


@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (4, 4), (8, 1)])
def test_padded_decode_attention_lowers_exactly(heads: int, kv_heads: int) -> None:
    g, spec = decode_graph(heads, kv_heads)
    low = _assert_lowered_equal(g, spec)
    node = _gqa_node(low)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["num_heads"] == heads and attrs["kv_num_heads"] == kv_heads
    assert "local_window_size" not in attrs
    assert _input(node, "attention_bias"), "the padding goes in as attention_bias"


def test_float16_lowers_exactly() -> None:
    g, spec = decode_graph(dtype=DType.f16)
    _assert_lowered_equal(g, spec)


def test_rows_without_keys_are_zero_like_attention() -> None:
    g, spec = decode_graph()
    low, _, _ = lower_decode(g, spec)
    past, new, amask = MASKS[0]
    (out, _, _) = run_graph(low, _feeds(g, past, new, amask), "onnx")
    assert np.all(out[1, :3] == 0) and np.all(np.abs(out[1, 3:]) > 0)


def test_sliding_window_goes_to_local_window_size() -> None:
    g, spec = decode_graph(window=3)
    low = _assert_lowered_equal(g, spec, MASKS + [(0, 7, np.ones((2, 7), np.int64))])
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in _gqa_node(low).attribute}
    assert attrs["local_window_size"] == 3


def test_unpadded_mask_needs_no_bias() -> None:
    g, spec = decode_graph(padding=False, window=2)
    low = _assert_lowered_equal(g, spec, [(0, 5, np.ones((2, 5), np.int64)),
                                          (6, 3, np.ones((2, 9), np.int64))])
    node = _gqa_node(low)
    assert not _input(node, "attention_bias")
    assert _input(node, "query_seqlens") and _input(node, "seqlens_k")
    assert "ReduceMax" not in _op_types(low)  # no rows without keys to zero


def test_kv_head_repeat_in_gqa_order_lowers() -> None:
    g, spec = decode_graph(4, 2, repeat="interleave")
    _assert_lowered_equal(g, spec)


def _kept(g: Graph, spec: CacheSpec) -> str:
    low, count, notes = lower_decode(g, spec)
    assert count == 0 and low is g and len(notes) == 1
    assert "kept as attention" in notes[0]
    return notes[0]


@pytest.mark.parametrize("kw,why", [
    ({"repeat": "tile"}, "not a kv-head repeat in GroupQueryAttention's order"),
    ({"head": 4}, "head size 4"),
    ({"causal": False}, "keeps keys outside the causal window"),
    ({"cached": False}, "do not come from a cache append"),
])
def test_blocks_the_kernel_cannot_express_stay(kw: dict[str, Any], why: str) -> None:
    g, spec = decode_graph(**kw)
    assert why in _kept(g, spec)


def test_an_onnx_runtime_without_query_seqlens_keeps_everything(
        monkeypatch: pytest.MonkeyPatch) -> None:
    old = tuple(x for x in contrib.gqa_inputs() if x != "query_seqlens")
    monkeypatch.setattr(contrib, "gqa_inputs", lambda: old)
    g, spec = decode_graph()
    low, count, notes = lower_decode(g, spec)
    assert (low, count) == (g, 0) and "no input query_seqlens" in notes[0]


def test_mask_narrower_than_the_kernel_window_goes_in_the_bias() -> None:
    g, _ = decode_graph(window=2)
    _, spec = decode_graph()  # the spec knows no window: the kernel is causal, the bias windows
    _assert_lowered_equal(g, spec)


def test_mask_wider_than_the_spec_window_stays() -> None:
    g, _ = decode_graph(window=5)
    _, spec = decode_graph(window=2)
    assert "keeps keys outside the causal window" in _kept(g, spec)


# ---- transformers models -----------------------------------------------------------------------

HF = {"gpt2": models.gpt2, "llama": models.llama, "mistral": models.mistral}
NEW = 20


@pytest.fixture(scope="module", params=sorted(HF))
def built(request: pytest.FixtureRequest) -> tuple[str, Any, dict[bool, graphopt.OptimizedModel]]:
    """(family, transformers model, {allow_contrib_ops: the kv_cache model})."""
    module, inputs, _ = HF[request.param]("sdpa")
    oms = {c: graphopt.optimize(module, example_inputs=inputs, budget=0, kv_cache=True,
                                max_length=64, allow_contrib_ops=c) for c in (False, True)}
    return request.param, module, oms


def _prompts() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One unpadded prompt [1, 7]; a batch of 2 with row 1 left-padded by 3."""
    one = torch.randint(0, 128, (1, 7), generator=torch.Generator().manual_seed(0))
    two = torch.randint(1, 128, (2, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(two)
    mask[1, :3] = 0
    two[1, :3] = 0
    return one, two, mask


def _hf_generate(module: Any, ids: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    hf = module.inner
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    with torch.no_grad():
        return hf.generate(ids, attention_mask=mask, max_new_tokens=NEW,
                           do_sample=False).numpy()


def test_decode_model_holds_one_gqa_per_layer(built: Any) -> None:
    name, module, oms = built
    om = oms[True]
    types = [n.op_type for n in onnx.load_from_string(om.kv.decode_bytes).graph.node]
    layers = om.kv.derivation.spec.num_layers
    assert types.count("GroupQueryAttention") == layers
    assert "Attention" not in types
    rep = om.report["kv_cache"]
    assert rep["check"]["ok"]
    assert f"{layers} decode attention(s) -> com.microsoft GroupQueryAttention" in rep["notes"]
    if name == "mistral":
        node = next(n for n in onnx.load_from_string(om.kv.decode_bytes).graph.node
                    if n.op_type == "GroupQueryAttention")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["local_window_size"] == module.inner.config.sliding_window


def _run(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def test_logits_equal_the_portable_decode_model(built: Any) -> None:
    _, _, oms = built
    spec = oms[True].kv.derivation.spec
    sess = {c: ort.InferenceSession(om.kv.decode_bytes, providers=["CPUExecutionProvider"])
            for c, om in oms.items()}
    _, ids, mask = _prompts()
    amask = mask.numpy().astype(np.int64)
    pos = np.maximum(np.cumsum(amask, 1) - 1, 0)
    empty = np.zeros((2, spec.num_kv_heads, 0, spec.head_size), np.float32)
    feeds = {"input_ids": ids.numpy(), "attention_mask": amask, "position_ids": pos,
             **{p: empty for p in IO.pasts(spec)}}
    out = {c: _run(s, feeds) for c, s in sess.items()}  # the padded prompt, padding rows too
    _assert_same(out, spec, "prompt")
    total = amask.shape[1]
    feeds = {"input_ids": np.array([[5, 6, 7], [8, 9, 10]]),  # then 3 new tokens per row
             "attention_mask": np.concatenate([amask, np.ones((2, 3), np.int64)], axis=1),
             "position_ids": pos[:, -1:] + np.arange(1, 4),
             **{p: out[False][q] for p, q in zip(IO.pasts(spec), IO.presents(spec))}}
    assert feeds["attention_mask"].shape[1] == total + 3
    _assert_same({c: _run(s, feeds) for c, s in sess.items()}, spec, "3 new tokens")


def _assert_same(out: dict[bool, dict[str, np.ndarray]], spec: CacheSpec, what: str) -> None:
    for name in IO.outputs(spec):
        np.testing.assert_allclose(out[True][name], out[False][name], rtol=1e-4, atol=1e-5,
                                   err_msg=f"{what}: {name}")


def test_generate_equals_transformers(built: Any) -> None:
    _, module, oms = built
    one, two, mask = _prompts()
    om = oms[True]
    np.testing.assert_array_equal(om.generate(one, max_new_tokens=NEW).numpy(),
                                  _hf_generate(module, one, torch.ones_like(one)))
    np.testing.assert_array_equal(om.generate(two, attention_mask=mask,
                                              max_new_tokens=NEW).numpy(),
                                  _hf_generate(module, two, mask))


def test_genai_runs_the_folder_to_transformers_tokens(built: Any, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime_genai")
    from graphopt.kv.folder import run_genai

    name, module, oms = built
    one, two, mask = _prompts()
    out = tmp_path / "out"
    oms[True].save(str(out))
    np.testing.assert_array_equal(run_genai(out, one.numpy(), NEW),
                                  _hf_generate(module, one, torch.ones_like(one)))
    if name != "mistral":
        # genai right-pads a batch; with Mistral's window over cache slots the padding slots
        # then sit inside the window, so genai's tokens differ from transformers' for the
        # portable decode model too: not a property of the lowering
        rows = [two[0].tolist(), two[1, 3:].tolist()]
        np.testing.assert_array_equal(run_genai(out, rows, NEW),
                                      _hf_generate(module, two, mask))
