"""Export transformers models (random weights) to ONNX for the benchmarks.

    python -m bench.export_transformers bert-base /tmp/bert.onnx [--seq 128] [--layers 12]
    python -m bench.export_transformers gpt2 /tmp/gpt2.onnx
    python -m bench.export_transformers llama /tmp/llama.onnx
    python -m bench.export_transformers vit /tmp/vit.onnx --dynamo

BERT-base: 12 layers, hidden 768, 12 heads, sequence 128, batch 1, exported by torch.onnx
(the TorchScript exporter, opset 17, static shapes; ``--dynamo``: the torch.export-based exporter,
opset 18). ViT takes one [1, 3, 32 * patches, ...] image (``seq``: patches + 1 tokens, rounded
to a square grid of 16-pixel patches). Nothing is downloaded: configs are built in code and
weights are seeded random.
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


class _Vision(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values, return_dict=False)[0]


class _LM(_Encoder):
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                          return_dict=False)[0]


def build(name: str, layers: int | None = None, hidden: int | None = None,
          heads: int | None = None, image_size: int = 224,
          trained_like: bool = False) -> torch.nn.Module:
    """Model ``name`` with seeded random weights. ``trained_like``: every 1-D parameter (biases,
    norm weights) moved off its initial value by N(0, 0.02), as in a trained checkpoint
    (transformers initializes biases to zero, and cleanup removes an add of zeros, so an export
    of a fresh model has no bias adds at all)."""
    torch.manual_seed(0)
    model = _build(name, layers, hidden, heads, image_size)
    if trained_like:
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 1:
                    p.add_(torch.randn_like(p) * 0.02)
    return model


def _build(name: str, layers: int | None, hidden: int | None, heads: int | None,
           image_size: int) -> torch.nn.Module:
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
                          num_key_value_heads=max(1, (heads or 8) // 2),
                          max_position_embeddings=512,
                          attn_implementation="eager")
        return _LM(LlamaForCausalLM(cfg).eval())
    if name == "vit":
        from transformers import ViTConfig, ViTModel

        h = hidden or 768
        cfg = ViTConfig(hidden_size=h, num_hidden_layers=layers or 12,
                        num_attention_heads=heads or 12, intermediate_size=4 * h,
                        image_size=image_size, patch_size=16, attn_implementation="eager")
        return _Vision(ViTModel(cfg, add_pooling_layer=False).eval())
    raise SystemExit(f"unknown model {name!r} ({', '.join(MODELS)})")


MODELS = ("bert-base", "gpt2", "llama", "vit")


def vit_image_size(seq: int) -> int:
    """The image side whose 16-pixel patches give about ``seq`` - 1 tokens (a square grid)."""
    side = max(1, int(round((max(seq - 1, 1)) ** 0.5)))
    return 16 * side


def export(name: str, path: str, seq: int = 128, layers: int | None = None,
           hidden: int | None = None, heads: int | None = None, vocab: int = 30522,
           dynamo: bool = False, trained_like: bool = False) -> Any:
    """Export model ``name`` to ``path`` with static shapes: the TorchScript exporter at opset
    17, or (``dynamo``) the torch.export-based one at opset 18 (weights inside the file).
    ``trained_like``: see ``build``."""
    if name == "vit":
        size = vit_image_size(seq)
        model = build(name, layers, hidden, heads, image_size=size, trained_like=trained_like)
        args: tuple[torch.Tensor, ...] = (torch.randn(1, 3, size, size),)
        names = ["pixel_values"]
    else:
        model = build(name, layers, hidden, heads, trained_like=trained_like)
        args = (torch.randint(0, min(vocab, 1000), (1, seq)),
                torch.ones(1, seq, dtype=torch.int64))
        names = ["input_ids", "attention_mask"]
    with torch.no_grad():
        if dynamo:
            prog = torch.onnx.export(model, args, input_names=names, output_names=["out"],
                                     opset_version=18, dynamo=True, verbose=False)
            prog.save(path, external_data=False)
        else:
            torch.onnx.export(model, args, path, input_names=names, output_names=["out"],
                              opset_version=17, dynamo=False)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=list(MODELS))
    p.add_argument("out")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--dynamo", action="store_true", help="the torch.export-based exporter")
    p.add_argument("--trained-like", action="store_true",
                   help="biases and norm weights off their initial values (see build)")
    a = p.parse_args()
    export(a.model, a.out, a.seq, a.layers, a.hidden, a.heads, dynamo=a.dynamo,
           trained_like=a.trained_like)
    print(a.out)


if __name__ == "__main__":
    main()
