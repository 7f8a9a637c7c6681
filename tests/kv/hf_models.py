"""Tiny transformers decoders (random weights) for the KV-cache tests, their no-cache ONNX
exports and transformers' own greedy generation as the reference.

Every builder returns a ``tests.models._DecoderLM`` (input_ids, attention_mask -> (logits,));
the transformers model is ``.inner``. Position tables are long enough for a prompt + 64 new
tokens (``POSITIONS``). Mistral's sliding window (``MISTRAL_WINDOW``) is shorter than that, so
the window matters.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from tests.models import VOCAB, _DecoderLM, _hf, _padded_mask, _tokens

POSITIONS = 128
MISTRAL_WINDOW = 16
EXPORTERS = ("legacy", "dynamo")
INPUT_NAMES = ("input_ids", "attention_mask")


def _small(**kw: Any) -> dict[str, Any]:
    """The sizes every family shares: hidden 32, 2 layers, 4 heads over 2 key/value heads."""
    base = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": POSITIONS}
    base.update(kw)
    return base


def gpt2(attn: str = "sdpa", positions: int = POSITIONS) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=VOCAB, n_positions=positions, n_embd=32, n_layer=2, n_head=2)
    return _DecoderLM(_hf(GPT2LMHeadModel, cfg, attn))


def llama(attn: str = "sdpa", positions: int = POSITIONS) -> nn.Module:
    """Grouped-query attention: 4 query heads over 2 key/value heads."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**_small(max_position_embeddings=positions))
    return _DecoderLM(_hf(LlamaForCausalLM, cfg, attn))


def mistral(attn: str = "sdpa", positions: int = POSITIONS, window: int = MISTRAL_WINDOW,
            hidden: int = 32) -> nn.Module:
    """Sliding-window attention (keys j with i - window < j <= i), GQA 4 over 2."""
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(**_small(max_position_embeddings=positions, sliding_window=window,
                                 hidden_size=hidden, intermediate_size=2 * hidden))
    return _DecoderLM(_hf(MistralForCausalLM, cfg, attn))


def qwen2(attn: str = "sdpa", positions: int = POSITIONS) -> nn.Module:
    """Qwen2: Llama-like with biased q/k/v projections, GQA 4 over 2."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(**_small(max_position_embeddings=positions))
    return _DecoderLM(_hf(Qwen2ForCausalLM, cfg, attn))


FAMILIES: dict[str, Callable[..., nn.Module]] = {
    "gpt2": gpt2, "llama": llama, "mistral": mistral, "qwen2": qwen2}


def example_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids [2, 8], attention_mask with the last row right-padded) to trace with."""
    return _tokens(1), _padded_mask()


def export_onnx(module: nn.Module, path: Path, exporter: str) -> Path:
    """The module without a cache as ONNX at ``path`` by torch's ``legacy`` (TorchScript, opset
    17) or ``dynamo`` exporter; batch and sequence axes dynamic."""
    inputs = example_inputs()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "legacy":
            torch.onnx.export(module, inputs, str(path), input_names=list(INPUT_NAMES),
                              output_names=["logits"], opset_version=17, dynamo=False,
                              dynamic_axes={n: {0: "batch", 1: "seq"} for n in INPUT_NAMES})
        elif exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=64)
            seq = torch.export.Dim("seq", min=2, max=4096)
            prog = torch.onnx.export(module, inputs, input_names=list(INPUT_NAMES),
                                     output_names=["logits"], dynamo=True, verbose=False,
                                     dynamic_shapes={n: {0: batch, 1: seq} for n in INPUT_NAMES})
            prog.save(str(path))
        else:
            raise ValueError(f"unknown exporter {exporter!r}; expected one of {EXPORTERS}")
    return path


def hf_generate(module: nn.Module, ids: torch.Tensor, mask: torch.Tensor | None,
                max_new_tokens: int) -> torch.Tensor:
    """transformers' greedy ``generate`` with its cache (prompt + new ids), no stop token,
    padding id 0."""
    hf = module.inner if isinstance(module, _DecoderLM) else module
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    if mask is None:
        mask = torch.ones_like(ids)
    with torch.no_grad():
        return hf.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                           do_sample=False)


def left_padded(rows: list[list[int]], width: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) [B, width]: prompts left-padded with 0 to ``width`` (default the longest)."""
    n = max(len(r) for r in rows) if width is None else width
    ids = torch.zeros((len(rows), n), dtype=torch.int64)
    mask = torch.zeros((len(rows), n), dtype=torch.int64)
    for b, r in enumerate(rows):
        ids[b, n - len(r):] = torch.tensor(r)
        mask[b, n - len(r):] = 1
    return ids, mask


def prompt_rows(seed: int, lengths: tuple[int, ...], vocab: int = VOCAB) -> list[list[int]]:
    """Random prompts (ids 1..vocab-1) of the given lengths."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, vocab, (n,), generator=g).tolist() for n in lengths]


def greedy_consistent(module: nn.Module, ids: torch.Tensor, mask: torch.Tensor | None,
                      prompt_length: int) -> torch.Tensor:
    """Which generated ids (columns ``prompt_length``..) are the greedy choice of the module
    (input_ids, attention_mask -> (logits,)) run once without a cache over the whole sequence,
    its own masks (causal, sliding window, padding) applied: bool [B, new]. All true <=> greedy
    generation rerunning the model on every prefix makes the same ids (a causal model's logits
    at t depend on tokens <= t only)."""
    if mask is None:
        mask = torch.ones_like(ids)
    full = torch.ones_like(ids)
    full[:, :prompt_length] = mask[:, :prompt_length]
    with torch.no_grad():
        logits = module(ids, full)[0]
    return logits[:, prompt_length - 1:-1].argmax(-1) == ids[:, prompt_length:]
