"""Position computations the KV-cache derivation replaces by position_ids: a learned table read
with a 1-D arange (nanoGPT), and the position-table limit (a segment table is no limit)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graphopt


class Nano(nn.Module):
    """nanoGPT-style: ``wpe(arange(t))`` [t, C] broadcast over the batch, causal SDPA, no mask,
    and a 2-row segment table read with a constant index (no position table)."""

    def __init__(self, vocab: int = 64, width: int = 32, heads: int = 4, layers: int = 2,
                 positions: int = 48) -> None:
        super().__init__()
        self.heads = heads
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(positions, width)
        self.wtt = nn.Embedding(2, width)
        self.qkv = nn.ModuleList(nn.Linear(width, 3 * width) for _ in range(layers))
        self.proj = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor]:
        b, t = input_ids.shape
        pos = torch.arange(0, t, dtype=torch.long)
        seg = self.wtt(torch.zeros(1, dtype=torch.long))
        x = self.wte(input_ids) + self.wpe(pos) + seg
        for qkv, proj in zip(self.qkv, self.proj):
            q, k, v = qkv(x).split(x.shape[-1], dim=2)
            q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + proj(y.transpose(1, 2).reshape(b, t, -1))
        return (self.head(self.ln(x)),)


@pytest.fixture(scope="module")
def nano() -> tuple[nn.Module, graphopt.OptimizedModel]:
    torch.manual_seed(0)
    m = Nano().eval()
    ids = torch.randint(0, 64, (2, 8))
    return m, graphopt.optimize(m, example_inputs=(ids,), budget=0, kv_cache=True)


def test_one_dim_arange_table_becomes_position_ids(nano: tuple) -> None:
    m, om = nano
    rep = om.report["kv_cache"]
    assert any("table[arange(S)] -> table[position_ids]" in n for n in rep["notes"])
    assert rep["check"]["ok"]
    x = torch.randint(0, 64, (1, 5), generator=torch.Generator().manual_seed(3))
    out = om.generate(x, max_new_tokens=20)
    with torch.no_grad():
        for _ in range(20):  # greedy without a cache: the module on the whole prefix each step
            x = torch.cat([x, m(x)[0][:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, x)


def test_position_table_limits_length_but_token_types_do_not(nano: tuple) -> None:
    _, om = nano
    # 48 learned positions; the 2-row segment table is read by a constant, not by positions
    assert om.kv.derivation.spec.context_length == 48
    assert any("clipped to the model's position table (48)" in n
               for n in om.report["kv_cache"]["notes"])
