"""A small transformer-shaped model for the remat tests and bench (random weights)."""
from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    """Pre-norm attention + GELU MLP with dropout on the attention weights and both branches."""

    def __init__(self, d: int, heads: int, p: float) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)
        self.drop = nn.Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln1(x)).split(d, -1)
        q, k, v = (z.view(b, t, h, d // h).transpose(1, 2) for z in (q, k, v))
        a = (q @ k.transpose(-1, -2)) * (d // h) ** -0.5
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        a = self.drop(a.masked_fill(causal, float("-inf")).softmax(-1))
        y = (a @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.drop(self.proj(y))
        return x + self.drop(self.fc2(nn.functional.gelu(self.fc1(self.ln2(x)))))


def transformer(blocks: int, d: int = 16, heads: int = 2, p: float = 0.1) -> nn.Sequential:
    """``blocks`` blocks of width ``d``."""
    return nn.Sequential(*(Block(d, heads, p) for _ in range(blocks)))
