"""transformers models with random weights for the tensor-parallel tests and bench: GPT-2, BERT
and a Llama-shaped stack with grouped-query attention. Every parameter (biases and norm
weights included) is drawn at random, so no rewrite can lean on zeros or ones."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tests.models import _DecoderLM, _Encoder, _hf


def randomize(m: nn.Module, seed: int = 0, scale: float = 0.02) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return m


def ids(batch: int, seq: int, vocab: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, seq), generator=g)


def mask(batch: int, seq: int) -> torch.Tensor:
    m = torch.ones(batch, seq, dtype=torch.int64)
    if batch > 1:
        m[-1, : seq // 4] = 0  # a left-padded row
    return m


def gpt2(hidden: int = 128, layers: int = 2, heads: int = 4, vocab: int = 512,
         seq: int = 16, batch: int = 2) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=vocab, n_positions=max(64, seq), n_embd=hidden, n_layer=layers,
                     n_head=heads)
    m = randomize(_DecoderLM(_hf(GPT2LMHeadModel, cfg, "sdpa")))
    return m, (ids(batch, seq, vocab), mask(batch, seq))


def bert(hidden: int = 128, layers: int = 2, heads: int = 4, vocab: int = 512,
         seq: int = 16, batch: int = 2) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=4 * hidden,
                     max_position_embeddings=max(64, seq))
    m = randomize(_Encoder(_hf(BertModel, cfg, "sdpa")))
    return m, (ids(batch, seq, vocab), mask(batch, seq))


def llama(hidden: int = 128, layers: int = 2, heads: int = 8, kv_heads: int = 4,
          vocab: int = 512, seq: int = 16, batch: int = 2, **kw: Any
          ) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Llama-shaped: RMSNorm, rotary, SiLU-gated MLP, grouped-query attention."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=kw.pop(
        "intermediate", 3 * hidden), num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, max_position_embeddings=max(64, seq), **kw)
    m = randomize(_DecoderLM(_hf(LlamaForCausalLM, cfg, "sdpa")))
    return m, (ids(batch, seq, vocab), mask(batch, seq))


def param_bytes(m: nn.Module) -> int:
    """Bytes of the module's parameters, each tied tensor once."""
    seen: set[int] = set()
    total = 0
    for p in m.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * p.element_size()
    return total
