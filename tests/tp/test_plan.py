"""The sharding search on small models: Megatron's MLP pairing comes out of the price, an
opaque op in the path and a hidden size that does not divide get plans with reasons, a model too
small to pay for communication stays replicated, and every plan is checked against the model."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import graphopt
from graphopt.tp.report import format_report


class MLP(nn.Module):
    """Two residual MLP blocks after a LayerNorm; ``act`` between the linears."""

    def __init__(self, h: int, act: str = "gelu") -> None:
        super().__init__()
        self.ln = nn.LayerNorm(h)
        self.a, self.b = nn.Linear(h, 4 * h), nn.Linear(4 * h, h)
        self.c, self.d = nn.Linear(h, 4 * h), nn.Linear(4 * h, h)
        self.act = act

    def f(self, y: torch.Tensor) -> torch.Tensor:
        return torch.special.i0(0.01 * y) if self.act == "i0" else nn.functional.gelu(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.b(self.f(self.a(self.ln(x))))
        return x + self.d(self.f(self.c(self.ln(x))))


def _mlp(h: int, act: str = "gelu") -> tuple[nn.Module, tuple[torch.Tensor]]:
    torch.manual_seed(0)
    return MLP(h, act).eval(), (torch.randn(2, 64, h),)


def _splits(plan: graphopt.ShardPlan) -> dict[str, str]:
    return {r["weight"]: r["split"] for r in plan.report["plan"]}


def test_megatron_pairing_comes_out_of_the_search() -> None:
    m, x = _mlp(512)
    plan = graphopt.shard(m, x, world_size=2, target="cpu")
    s = _splits(plan)
    assert [s[k] for k in sorted(s)] == ["column", "row", "column", "row"], s
    rep = plan.report
    assert rep["summary"]["collectives"] == {"all_reduce": 2}
    assert all(c["why"].startswith("adds the partial sums") for c in rep["collectives"])
    assert rep["summary"]["max_rank_param_fraction"] <= 0.52
    assert rep["check"] and all(c["ok"] for c in rep["check"])
    assert rep["search"]["moves"]  # the plan is the search's, from all replicated
    assert rep["summary"]["estimated_speedup"] > 1.0
    text = format_report(rep)
    assert "column" in text and "all_reduce" in text


def test_rank_modules_hold_only_their_blocks() -> None:
    m, x = _mlp(256)
    plan = graphopt.shard(m, x, world_size=2, target="cpu")
    total = sum(p.numel() * p.element_size() for p in m.parameters())
    for r in range(2):
        mod = plan.module(r)
        held = sum(b.numel() * b.element_size() for b in mod.buffers())
        assert held <= 0.52 * total, (r, held, total)
    with pytest.raises(graphopt.GraphOptError, match="rank must be in"):
        plan.module(2)


def test_an_opaque_op_in_the_path_is_named() -> None:
    m, x = _mlp(512, act="i0")  # aten.i0 is no op of graphopt's: an opaque node
    plan = graphopt.shard(m, x, world_size=2, target="cpu")
    whys = " ".join(c["why"] for c in plan.report["collectives"])
    assert "aten.i0" in whys and "opaque" in whys
    assert plan.report["check"] and all(c["ok"] for c in plan.report["check"])


def test_hidden_size_that_does_not_divide() -> None:
    from tests.tp.models import gpt2

    m, ex = gpt2(hidden=90, heads=3, vocab=512, seq=8, layers=1)  # 90 % 4 != 0
    plan = graphopt.shard(m, ex, world_size=4, target="cpu")
    rows = {r["weight"]: r for r in plan.report["plan"]}
    qkv = [r for k, r in rows.items() if "c_attn" in k]
    assert qkv and all(r["split"] == "replicated" for r in qkv)
    assert all("no axis of [90, 90] splits into 4 equal blocks" in r["why_not"] for r in qkv)
    assert plan.report["check"] and all(c["ok"] for c in plan.report["check"])


def test_a_model_too_small_to_pay_for_communication_stays_whole() -> None:
    m, x = _mlp(16)
    plan = graphopt.shard(m, x, world_size=2, target="a100")
    rep = plan.report
    assert rep["summary"]["split_weights"] == 0
    assert rep["summary"]["collectives_per_step"] == 0
    assert "no split pays" in rep["summary"]["note"]
    # every replicated weight says what splitting it would cost
    assert all("would cost +" in r["why_not"] for r in rep["plan"])


def test_bad_world_size() -> None:
    m, x = _mlp(16)
    with pytest.raises(graphopt.GraphOptError, match="world_size must be an int >= 2"):
        graphopt.shard(m, x, world_size=1)
