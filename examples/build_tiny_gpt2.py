"""Build the shipped example model: a 2-layer GPT-2 (random weights) exported by torch's legacy
ONNX exporter, with dynamic batch and sequence dims.

    python examples/build_tiny_gpt2.py examples/tiny_gpt2.onnx

The legacy exporter writes Constant/Identity/Cast chains and unfused attention: a good target for
graphopt's cleanup. Needs `transformers` (pip install -e '.[test]').
"""
from __future__ import annotations

import sys

import torch


class _LM(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          use_cache=False, return_dict=False)[0]


def build(path: str) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=256, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                     attn_implementation="eager")
    model = _LM(GPT2LMHeadModel(cfg).eval())
    ids = torch.randint(0, 256, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.int64)
    torch.onnx.export(model, (ids, mask), path, input_names=["input_ids", "attention_mask"],
                      output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                    "attention_mask": {0: "batch", 1: "seq"},
                                    "logits": {0: "batch", 1: "seq"}})


if __name__ == "__main__":
    build(sys.argv[1] if len(sys.argv) > 1 else "examples/tiny_gpt2.onnx")
