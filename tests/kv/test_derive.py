"""The KV-cache derivation end to end (graphopt.kv.derive through ``optimize(kv_cache=True)``):
legal decoders from torch and from no-cache ONNX exports of both torch exporters get a decode
graph whose cached run matches the original (the derivation check), with the cache layout and
mask facts of the model; everything a cache cannot take is refused with the node and the
reason, and the CLI then writes nothing."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import onnx
import pytest

import graphopt
from graphopt.ir.types import TensorType
from graphopt.kv.derive import derive
from graphopt.kv.seqaxis import KVCacheError
from graphopt.pipeline import lift, resolve_source
from tests import models
from tests.kv import decoders

MAX_LENGTH = 64
HF: dict[str, Callable[..., models.Built]] = {"gpt2": models.gpt2, "llama": models.llama,
                                              "mistral": models.mistral}
SOURCES = ("torch", "legacy", "dynamo")


def _optimize(built: models.Built, source: str, **kw: Any) -> graphopt.OptimizedModel:
    module, inputs, names = built
    if source == "torch":
        return graphopt.optimize(module, example_inputs=inputs, budget=0, kv_cache=True,
                                 max_length=MAX_LENGTH, **kw)
    proto = decoders.export(module, inputs, names, source)
    return graphopt.optimize(proto, budget=0, kv_cache=True, max_length=MAX_LENGTH, **kw)


def _expected(name: str, module: Any) -> dict[str, Any]:
    """The cache layout the transformers config implies."""
    c = module.inner.config
    if name == "gpt2":
        return {"layers": c.n_layer, "heads": c.n_head, "kv_heads": c.n_head,
                "head_size": c.n_embd // c.n_head, "window": None,
                "context_length": min(MAX_LENGTH, c.n_positions)}
    return {"layers": c.num_hidden_layers, "heads": c.num_attention_heads,
            "kv_heads": c.num_key_value_heads, "head_size": c.hidden_size // c.num_attention_heads,
            "window": getattr(c, "sliding_window", None), "context_length": MAX_LENGTH}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("name", sorted(HF))
def test_legal_decoder_derivation(name: str, source: str) -> None:
    built = HF[name]("sdpa")
    om = _optimize(built, source)
    rep = om.report["kv_cache"]
    want = _expected(name, built[0])
    assert {k: rep[k] for k in want} == want
    if name == "mistral":
        assert rep["window"] == built[0].inner.config.sliding_window == 4
    if name == "llama":  # GQA: the cache holds the 2 kv heads, not the 4 query heads
        assert rep["kv_heads"] == 2 < rep["heads"] == 4
    # the report names every attention with its measured mask
    w = f"window {want['window']}" if want["window"] else "all earlier tokens"
    assert len(rep["masks"]) == want["layers"]
    for m in rep["masks"]:
        assert m.startswith("node attention #") and \
            m.endswith(f": causal, {w}, padding from attention_mask"), m
    assert any(n.endswith("arange(S) positions -> position_ids") for n in rep["notes"])
    if name == "gpt2":
        assert "max_length 64 clipped to the model's position table (32)" in rep["notes"]
    # the derivation check ran on the exported decode model: prefill + decode steps
    assert rep["check"]["ok"] and rep["check"]["chunks"][0] > 1
    assert rep["check"]["max_abs"] < 1e-3
    _decode_io(om, want)


def _decode_io(om: graphopt.OptimizedModel, want: dict[str, Any]) -> None:
    """The decode graph has the contract's inputs and outputs, the cache in BNSH with the kv
    heads only."""
    dec = om.kv.derivation.decode
    types = dict(zip(dec.input_names, dec.input_types))
    n = want["layers"]
    assert list(dec.input_names) == ["input_ids", "attention_mask", "position_ids"] + [
        f"past_key_values.{i}.{kv}" for i in range(n) for kv in ("key", "value")]
    assert list(dec.output_names) == ["logits"] + [
        f"present.{i}.{kv}" for i in range(n) for kv in ("key", "value")]
    past = types["past_key_values.0.key"]
    assert isinstance(past, TensorType)
    assert past.shape == ("batch_size", want["kv_heads"], "past_sequence_length",
                          want["head_size"])
    assert dict(zip(dec.output_names, dec.output_types))["present.0.value"].shape == (
        "batch_size", want["kv_heads"], "total_sequence_length", want["head_size"])


@pytest.mark.parametrize("variant,window,padding", [("causal", None, True),
                                                    ("window", decoders.WINDOW, True),
                                                    ("no_padding", None, False)])
def test_handmade_legal_decoders(variant: str, window: int | None, padding: bool) -> None:
    module, inputs, _ = decoders.tiny(variant)
    g = lift(resolve_source(module, inputs), dynamic=True)
    d = derive(g, 32)
    (facts,) = d.masks.values()
    assert (facts.window, facts.padding) == (window, padding)
    assert d.spec.window == window and d.spec.num_layers == 1
    assert d.spec.num_heads == d.spec.num_kv_heads == decoders.HEADS
    assert d.spec.context_length == 32  # the position table (32 rows) bounds it too
    om = graphopt.optimize(module, example_inputs=inputs, budget=0, kv_cache=True,
                           max_length=32)
    assert om.report["kv_cache"]["check"]["ok"]


# ---- refusals ----------------------------------------------------------------------------------

REFUSED: dict[str, tuple[Callable[[], models.Built], list[str]]] = {
    # name: (builder, fragments the error must hold: the node, then the reason)
    "bert": (lambda: models.bert("sdpa"),  # its pooler reads token 0: refused first
             ["node gather #", "gather moves data along the sequence axis"]),
    "bert_encoder": (decoders.bert_encoder,
                     ["node attention #", "the attention is not causal: a query sees a later "
                      "key (bidirectional)"]),
    "cumsum": (lambda: decoders.tiny("cumsum"),
               ["node opaque aten.cumsum", "cannot tell whether it mixes positions"]),
    "mean": (lambda: decoders.tiny("mean"),
             ["node reduce_mean #", "reduce_mean reduces along the sequence axis"]),
    "conv": (lambda: decoders.tiny("conv"),
             ["node opaque aten.convolution", "cannot tell whether it mixes positions"]),
    "softmax_seq": (lambda: decoders.tiny("softmax_seq"),
                    ["node softmax #", "softmax reduces along the sequence axis"]),
    "bidirectional": (lambda: decoders.tiny("bidirectional"),
                      ["node attention #", "the attention is not causal"]),
    "alibi": (lambda: decoders.tiny("alibi"),
              ["node attention #", "the attention mask adds a bias to kept scores (ALiBi"]),
    "extra_input": (decoders.extra_input,
                    ["node input #", "input 'segment_ids' is not one a generation loop feeds"]),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_with_node_and_reason(name: str) -> None:
    build, fragments = REFUSED[name]
    with pytest.raises(KVCacheError) as e:
        _optimize(build(), "torch")
    msg = str(e.value)
    assert "the KV-cache rewrite is illegal for this model" in msg
    for f in fragments:
        assert f in msg, (f, msg)
    if name != "extra_input":  # a node of the module's code: its source line is named
        assert ".py:" in msg


def test_static_sequence_export_is_refused() -> None:
    module, inputs, names = decoders.tiny("causal")
    proto = decoders.export(module, inputs, names, "static")
    with pytest.raises(KVCacheError, match=r"sequence axis of 'input_ids' is static \(6\).*"
                                           r"dynamic sequence length"):
        graphopt.optimize(proto, budget=0, kv_cache=True)


def _cli_optimize(src: onnx.ModelProto, tmp: Path, capsys: Any) -> tuple[int, str, Path]:
    from graphopt.cli import main

    path = tmp / "in.onnx"
    onnx.save(src, str(path))
    out = tmp / "out_dir"
    code = main(["optimize", str(path), "-o", str(out), "--kv-cache", "--max-length", "32",
                 "--budget", "0"])
    return code, capsys.readouterr().err, out


@pytest.mark.parametrize("case", ["bert", "mean", "static"])
def test_cli_refusal_writes_nothing(case: str, tmp_path: Path, capsys: Any) -> None:
    from graphopt.cli import EXIT_USAGE

    if case == "bert":
        module, inputs, names = decoders.bert_encoder()
    else:
        module, inputs, names = decoders.tiny("causal" if case == "static" else case)
    proto = decoders.export(module, inputs, names, "static" if case == "static" else "legacy")
    code, err, out = _cli_optimize(proto, tmp_path, capsys)
    assert code == EXIT_USAGE, err
    reason = {"bert": "the attention is not causal", "mean": "reduce_mean reduces along the "
              "sequence axis", "static": "is static"}[case]
    assert reason in err and ("node " in err or case == "static"), err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]


def test_cli_legal_decoder_writes_the_folder(tmp_path: Path, capsys: Any) -> None:
    """The counterpart of the refusals: the same command on a legal decoder writes DIR."""
    module, inputs, names = decoders.tiny("causal")
    code, err, out = _cli_optimize(decoders.export(module, inputs, names, "legacy"), tmp_path,
                                   capsys)
    assert code == 0, err
    assert (out / "model.onnx").is_file()
