"""The cost model's predicted tensor-parallel speedup for a 7B-shaped Llama at batch-1 decode,
against gpt-fast's published number.

gpt-fast README (A100-80GB power-limited to 330 W, Llama-2-7B, bf16, decode compiled with
``torch.compile(mode="reduce-overhead")``, batch 1): 104.9 tok/s on one GPU, 168.84 tok/s with
tensor parallelism on 2 GPUs: 1.61x. Not re-measured here (no GPU).

The model: ``transformers.LlamaForCausalLM`` with Llama-2-7B's shapes (hidden 4096, 32 heads, 32
kv heads, intermediate 11008, vocab 32000, untied head) in f16, one new token (input_ids [1, 1],
no past). The full model (6.7e9 parameters) is not built: 1- and 2-layer models with the same
layer shapes are lifted and prepared as ``graphopt.shard`` prepares a model (simplify, fuse,
unmerge projections), their weights are then replaced by zero-stride numpy views of one row
(``np.broadcast_to``; the rank projection keeps them views, so pricing a plan copies no weight
bytes), and each graph gets the searched plan (``Evaluator(graph, 2, "a100")`` + ``search``,
memory term at its default). The cost model is a sum over kernels, so every time extrapolates
linearly in the layer count: t(L) = t(1) + (L - 1) (t(2) - t(1)).

Attention over the KV cache: the lifted step has no past, so its attention reads one key. The
cache read of a real decode step is added after the fact as bytes at the device's memory
bandwidth: 2 (k, v) x layers x kv heads x head dim x positions x 2 bytes, split by heads over the
ranks (the plan splits attention by heads). gpt-fast's benchmark (its README: a 5-token prompt;
generate.py: 200 new tokens) keeps a static cache of prompt + new = 205 positions and attends
over all of them (masked) at every step, so positions = 205.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

GPT_FAST = {"source": "gpt-fast README (pytorch-labs/gpt-fast): A100-80GB power-limited to 330 W, "
                      "Llama-2-7B, bf16, batch 1; not re-measured here",
            "one_gpu_tok_s": 104.9, "two_gpu_tok_s": 168.8}
LLAMA_7B = {"hidden": 4096, "layers": 32, "heads": 32, "kv_heads": 32, "intermediate": 11008,
            "vocab": 32000}
CACHE_POSITIONS = 205  # gpt-fast's static cache: a 5-token prompt + 200 new tokens


@dataclass
class Priced:
    """One lifted graph (``layers`` layers) under its searched plan, in seconds per token."""

    layers: int
    one_device: float
    per_rank: float
    collectives: float  # per rank, the link time of its collectives
    launches_one: float  # launch overhead inside one_device
    launches_rank: float  # launch overhead inside per_rank
    counts: dict[str, int]
    plan: dict[str, int]  # split kind -> weights
    moves: list[str] = field(default_factory=list)
    plans_priced: int = 0


def llama_graph(layers: int, device: str) -> Any:
    """The prepared graph of a 7B-shaped Llama with ``layers`` layers, weights as views."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from graphopt.ir.node import ConstData, Node
    from graphopt.pipeline import resolve_source
    from graphopt.tp.stage import prepare
    from tests.models import _DecoderLM, _hf

    s = LLAMA_7B
    cfg = LlamaConfig(vocab_size=s["vocab"], hidden_size=s["hidden"],
                      intermediate_size=s["intermediate"], num_hidden_layers=layers,
                      num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"],
                      max_position_embeddings=4096)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        with torch.device("meta"):
            m = _DecoderLM(_hf(LlamaForCausalLM, cfg, "sdpa"))
        m = m.to_empty(device="cpu")
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in m.parameters():  # rows of random values: no rewrite sees zeros or ones
                p.copy_((torch.randn(p.shape[-1], generator=gen) * 0.02).expand(p.shape))
    finally:
        torch.set_default_dtype(old)
    src = resolve_source(m, (torch.tensor([[7]]), torch.ones(1, 1, dtype=torch.int64)))
    _, g = prepare(src, device)

    def as_view(n: Node) -> Any:
        if n.op != "constant" or not n.attrs["data"].has_array:
            return None
        a = np.asarray(n.attrs["data"].array)
        if a.ndim < 2 or a.size < 64:
            return None
        return Node.build("constant", [], {"data": ConstData(
            np.broadcast_to(a[(0,) * (a.ndim - 1)], a.shape))}, n.origin).outputs

    return g.map_nodes(as_view)


def price(layers: int, world: int, device: str) -> Priced:
    """The searched plan of the ``layers``-layer graph and its times."""
    from graphopt.cost.model import Kind
    from graphopt.tp.plan import Evaluator, plan_table, search, weight_slots
    from graphopt.tp.ranks import COLLECTIVES

    g = llama_graph(layers, device)
    ev = Evaluator(g, world, device)
    slots = weight_slots(g, world)
    best, log = search(ev, slots)
    one = ev({})
    launch = ev.device.launch_overhead

    def launches(graph: Any) -> float:
        gc = ev.model.graph_cost(graph, detail=True)
        return sum(r.launches * launch for r in gc.detail or [] if r.kind != Kind.COLLECTIVE)

    slow = int(np.argmax(best.times))
    rank = best.ranks[slow]
    colls = [n for n in rank.nodes if n.op in COLLECTIVES]
    counts: dict[str, int] = {}
    for n in colls:
        counts[n.op] = counts.get(n.op, 0) + 1
    plan: dict[str, int] = {}
    for row in plan_table(g, slots, best.splits):
        plan[row["split"]] = plan.get(row["split"], 0) + 1
    return Priced(layers, one.times[0], best.times[slow],
                  sum(ev.model.collective_time(n) for n in colls), launches(one.ranks[0]),
                  launches(rank), counts, plan, log.moves, log.evaluations)


def extrapolate(p1: Priced, p2: Priced, layers: int) -> dict[str, float]:
    """t(L) = t(1) + (L - 1) (t(2) - t(1)) for every time and count."""
    def lin(a: float, b: float) -> float:
        return a + (layers - 1) * (b - a)

    out = {k: lin(getattr(p1, k), getattr(p2, k)) for k in
           ("one_device", "per_rank", "collectives", "launches_one", "launches_rank")}
    for k in set(p1.counts) | set(p2.counts):
        out[f"count_{k}"] = lin(p1.counts.get(k, 0), p2.counts.get(k, 0))
    return out


def cache_read_s(layers: int, positions: int, mem_bandwidth: float) -> float:
    """Seconds one device spends reading a KV cache of ``positions`` positions (f16)."""
    s = LLAMA_7B
    head_dim = s["hidden"] // s["heads"]
    return 2 * layers * s["kv_heads"] * head_dim * positions * 2 / mem_bandwidth


def predict_7b(world: int = 2, device: str = "a100") -> dict[str, Any]:
    """The prediction (see the module doc): per layer count, the extrapolated 32 layers, the
    speedup with and without the cache read, and gpt-fast's published ratio."""
    from graphopt.cost.devices import get_device

    p1, p2 = price(1, world, device), price(2, world, device)
    L = LLAMA_7B["layers"]
    t = extrapolate(p1, p2, L)
    kv = cache_read_s(L, CACHE_POSITIONS, get_device(device).mem_bandwidth)
    published = GPT_FAST["two_gpu_tok_s"] / GPT_FAST["one_gpu_tok_s"]
    speedup = t["one_device"] / t["per_rank"]
    with_kv = (t["one_device"] + kv) / (t["per_rank"] + kv / world)
    return {"priced": [p1, p2], "extrapolated": t, "layers": L, "world": world,
            "device": device, "speedup": speedup, "cache_read_s": kv,
            "speedup_with_cache": with_kv, "published": published,
            "ratio": speedup / published, "ratio_with_cache": with_kv / published}


def print_prediction(r: dict[str, Any]) -> None:
    t = r["extrapolated"]
    us = 1e6
    print(f"\n7B-shaped Llama (hidden 4096, 32 layers, 32 heads / 32 kv heads, intermediate 11008, "
          f"vocab 32000, f16), batch-1 decode of one token, {r['world']} x {r['device']}; "
          f"cost model, searched plan; linear in layers from the 1- and 2-layer graphs")
    print("| graph | one device us | per rank us | of which collectives us | launch overhead us "
          "(one / rank) | collectives | plan | speedup |")
    print("|---|---:|---:|---:|---:|---|---|---:|")
    for p in r["priced"]:
        print(f"| {p.layers} layer{'s' if p.layers > 1 else ''} | {p.one_device * us:.1f} | "
              f"{p.per_rank * us:.1f} | {p.collectives * us:.1f} | {p.launches_one * us:.0f} / "
              f"{p.launches_rank * us:.0f} | "
              f"{', '.join(f'{k} {v}' for k, v in sorted(p.counts.items()))} | "
              f"{', '.join(f'{v} {k}' for k, v in sorted(p.plan.items()))} | "
              f"{p.one_device / p.per_rank:.2f}x |")
    counts = ", ".join(f"{k[6:]} {v:g}" for k, v in sorted(t.items()) if k.startswith("count_"))
    print(f"| {r['layers']} layers (extrapolated) | {t['one_device'] * us:.0f} | "
          f"{t['per_rank'] * us:.0f} | {t['collectives'] * us:.0f} | "
          f"{t['launches_one'] * us:.0f} / {t['launches_rank'] * us:.0f} | {counts} | | "
          f"**{r['speedup']:.2f}x** |")
    print(f"| + KV cache read, {CACHE_POSITIONS} positions | "
          f"{(t['one_device'] + r['cache_read_s']) * us:.0f} | "
          f"{(t['per_rank'] + r['cache_read_s'] / r['world']) * us:.0f} | | | | | "
          f"{r['speedup_with_cache']:.2f}x |")
    bare = (t["one_device"] - t["launches_one"]) / (t["per_rank"] - t["launches_rank"])
    print(f"| without the launch overhead (decomposition, not a prediction) | "
          f"{(t['one_device'] - t['launches_one']) * us:.0f} | "
          f"{(t['per_rank'] - t['launches_rank']) * us:.0f} | | 0 / 0 | | | {bare:.2f}x |")
    print(f"predicted {r['speedup']:.2f}x ({1 / t['one_device']:.0f} -> {1 / t['per_rank']:.0f} "
          f"tok/s) vs published {r['published']:.2f}x ({GPT_FAST['one_gpu_tok_s']} -> "
          f"{GPT_FAST['two_gpu_tok_s']} tok/s, {GPT_FAST['source']}): ratio {r['ratio']:.2f} "
          f"({r['ratio_with_cache']:.2f} with the cache read); within 20%: "
          f"{abs(r['ratio'] - 1) <= 0.2}")
