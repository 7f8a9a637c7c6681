"""Local transformers model folders (``save_pretrained``) -> graphopt: the module, inputs and
dynamic axes ``resolve_folder`` builds, and the ONNX ``graphopt.optimize`` writes from them
matching the model in ONNX Runtime (dynamic shapes: at other sizes than the example's)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import graphopt
from graphopt.errors import FrontendError
from graphopt.frontends.hf_folder import guess_task, is_model_folder, load_folder, resolve_folder

VOCAB = 128


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    d = tmp_path_factory.mktemp("gpt2")
    GPT2LMHeadModel(cfg).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=32)
    d = tmp_path_factory.mktemp("bert")
    BertForMaskedLM(cfg).save_pretrained(d)
    return d


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _tokens(batch: int, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, VOCAB, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.int64)
    mask[0, seq - 3:] = 0
    return ids, mask


def test_resolve_gpt2_folder(gpt2_dir: Path) -> None:
    module, example, axes = resolve_folder(gpt2_dir, batch=2, seq=8)
    assert type(module).__name__ == "TextModel" and module.task == "causal-lm"
    assert [tuple(x.shape) for x in example] == [(2, 8), (2, 8)]
    assert int(example[0].max()) < VOCAB and example[1][-1, -1] == 0  # padded last row
    assert axes == {"input_ids": {0: "batch", 1: "seq"},
                    "attention_mask": {0: "batch", 1: "seq"}}
    _, _, axes1 = resolve_folder(gpt2_dir, batch=1, seq=8)  # size 1 would be specialized
    assert axes1 == {"input_ids": {1: "seq"}, "attention_mask": {1: "seq"}}
    assert resolve_folder(gpt2_dir, dynamic=False)[2] is None


def test_gpt2_folder_dynamic_onnx_matches_the_model(gpt2_dir: Path, tmp_path: Path) -> None:
    model, example = load_folder(gpt2_dir, batch=2, seq=8)
    assert example is None
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in model.graph.input}
    assert dims == {"input_ids": ["batch", "seq"], "attention_mask": ["batch", "seq"]}
    om = graphopt.optimize(model, budget=0)
    out = tmp_path / "gpt2.onnx"
    om.save(out)
    module = resolve_folder(gpt2_dir)[0]
    for batch, seq in ((3, 11), (1, 5)):  # not the example's sizes
        ids, mask = _tokens(batch, seq)
        with torch.no_grad():
            expected = module(ids, mask)
        got = _ort(out, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
        assert len(got) == len(expected) == 1
        np.testing.assert_allclose(got[0], expected[0].numpy(), atol=1e-4, rtol=1e-4)


def test_bert_folder_static_through_the_torch_frontend(bert_dir: Path, tmp_path: Path) -> None:
    module, example = load_folder(bert_dir, batch=2, seq=8, dynamic=False)
    assert module.task == "masked-lm" and example is not None
    om = graphopt.optimize(module, example, budget=0)
    assert om.report["after"]["nodes"] < om.report["before"]["nodes"]
    out = tmp_path / "bert.onnx"
    om.save(out)
    ids, mask = _tokens(2, 8)
    with torch.no_grad():
        expected = module(ids, mask)
    got = _ort(out, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e.numpy(), atol=1e-4, rtol=1e-4)


def test_task_given_or_guessed(bert_dir: Path) -> None:
    assert guess_task(["GPT2LMHeadModel"]) == "causal-lm"
    assert guess_task(["BertForSequenceClassification"]) == "sequence-classification"
    assert guess_task(["T5ForConditionalGeneration"]) == "seq2seq-lm"
    assert guess_task(["BertModel"]) == "feature-extraction"
    assert guess_task(["Wav2Vec2Processor"]) is None and guess_task(None) is None
    module, example, _ = resolve_folder(bert_dir, task="feature-extraction", seq=8)
    assert type(module.model).__name__ == "BertModel"  # AutoModel, not the saved MLM head
    with torch.no_grad():
        outs = module(*example)
    assert [tuple(o.shape) for o in outs] == [(2, 8, 32), (2, 32)]


def test_folder_errors(bert_dir: Path, tmp_path: Path) -> None:
    assert is_model_folder(bert_dir) and not is_model_folder(tmp_path)
    with pytest.raises(FrontendError, match="config.json"):
        resolve_folder(tmp_path)
    with pytest.raises(FrontendError, match="unknown task"):
        resolve_folder(bert_dir, task="translation-ish")
    with pytest.raises(FrontendError, match="positions"):
        resolve_folder(bert_dir, seq=64)
    cfg = json.loads((bert_dir / "config.json").read_text())
    del cfg["architectures"]
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FrontendError, match="--task"):
        resolve_folder(bare)
    with pytest.raises(FrontendError, match="from_pretrained failed"):
        resolve_folder(bare, task="masked-lm")  # no weights in the folder
