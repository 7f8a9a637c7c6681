"""Optimize a PyTorch model with the Python API: a small BERT (random weights) from transformers.

    python examples/optimize_torch_model.py

Prints what changed and checks the optimized callable against the original module.
"""
from __future__ import annotations

import json

import torch

import graphopt


class Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        cfg = BertConfig(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=128, max_position_embeddings=64,
                         attn_implementation="eager")
        self.bert = BertModel(cfg).eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)[0]


def main() -> None:
    torch.manual_seed(0)
    model = Encoder()
    ids = torch.randint(0, 256, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.int64)
    om = graphopt.optimize(model, example_inputs=(ids, mask), target="cpu")
    print(graphopt.explain(om))
    print(json.dumps({"before": om.report["before"]["ops"], "after": om.report["after"]["ops"],
                      "check": om.report["check"]}, indent=1, default=str)[:2000])
    with torch.no_grad():
        ref, got = model(ids, mask), om(ids, mask)
    got = got[0] if isinstance(got, (tuple, list)) else got
    print("max abs difference vs the original module:", float((ref - got).abs().max()))


if __name__ == "__main__":
    main()
