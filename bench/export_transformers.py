"""Export transformers models (random weights) to ONNX for the benchmarks.

    python -m bench.export_transformers bert-base /tmp/bert.onnx [--seq 128] [--layers 12]
    python -m bench.export_transformers gpt2 /tmp/gpt2.onnx
    python -m bench.export_transformers llama /tmp/llama.onnx

BERT-base: 12 layers, hidden 768, 12 heads, sequence 128, batch 1, exported by torch.onnx
(the TorchScript exporter, opset 17, static shapes). Nothing is downloaded: configs are built in
code and weights are seeded random.
"""
from __future__ import annotations

import argparse
from typing import Any

import torch


class _Encoder(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          return_dict=False)[0]


class _LM(_Encoder):
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                          return_dict=False)[0]


def build(name: str, layers: int | None = None, hidden: int | None = None,
          heads: int | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "bert-base":
        from transformers import BertConfig, BertModel

        cfg = BertConfig(vocab_size=30522, hidden_size=hidden or 768,
                         num_hidden_layers=layers or 12, num_attention_heads=heads or 12,
                         intermediate_size=4 * (hidden or 768), attn_implementation="eager")
        return _Encoder(BertModel(cfg, add_pooling_layer=False).eval())
    if name == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=hidden or 768,
                         n_layer=layers or 12, n_head=heads or 12, attn_implementation="eager")
        return _LM(GPT2LMHeadModel(cfg).eval())
    if name == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(vocab_size=32000, hidden_size=hidden or 512, intermediate_size=1376,
                          num_hidden_layers=layers or 8, num_attention_heads=heads or 8,
                          num_key_value_heads=4, max_position_embeddings=512,
                          attn_implementation="eager")
        return _LM(LlamaForCausalLM(cfg).eval())
    raise SystemExit(f"unknown model {name!r} (bert-base, gpt2, llama)")


def export(name: str, path: str, seq: int = 128, layers: int | None = None,
           hidden: int | None = None, heads: int | None = None, vocab: int = 30522) -> Any:
    model = build(name, layers, hidden, heads)
    ids = torch.randint(0, min(vocab, 1000), (1, seq))
    mask = torch.ones(1, seq, dtype=torch.int64)
    with torch.no_grad():
        torch.onnx.export(model, (ids, mask), path, input_names=["input_ids", "attention_mask"],
                          output_names=["out"], opset_version=17, dynamo=False)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=["bert-base", "gpt2", "llama"])
    p.add_argument("out")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--heads", type=int, default=None)
    a = p.parse_args()
    export(a.model, a.out, a.seq, a.layers, a.hidden, a.heads)
    print(a.out)


if __name__ == "__main__":
    main()
