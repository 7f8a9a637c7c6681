"""The issue's criteria on transformers models with random weights (GPT-2, BERT, a Llama-shaped
stack with grouped-query attention), 2 ranks on gloo under real torchrun (and 4 for Llama):
outputs equal the single-process model within 1e-5 relative, exactly 2 all-reduces per layer in
the forward pass (counted by the profiler hook on the process group), each rank holds <= 52%
(<= 27% on 4 ranks) of the model's parameter bytes, and the all-reduce bytes are Megatron's:
2 all-reduces of b*s*h per layer, plus one for a vocabulary-parallel embedding."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import graphopt
from graphopt.tp.run import run_distributed
from tests.tp import models

# sizes where splitting pays on the cpu target (the plan is the search's, not forced)
SIZES = {"hidden": 512, "layers": 2, "vocab": 4096, "seq": 32, "batch": 2}
CASES = [("gpt2", {"heads": 8}, 2), ("bert", {"heads": 8}, 2),
         ("llama", {"heads": 8, "kv_heads": 4}, 2), ("llama", {"heads": 8, "kv_heads": 4}, 4)]


def _build(name: str, kw: dict[str, Any]) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    return getattr(models, name)(**SIZES, **kw)


@pytest.fixture(scope="module", params=CASES, ids=[f"{c[0]}-tp{c[2]}" for c in CASES])
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> dict[str, Any]:
    name, kw, world = request.param
    m, ex = _build(name, kw)
    plan = graphopt.shard(m, ex, world_size=world, target="cpu")
    out = plan.save(tmp_path_factory.mktemp(f"{name}{world}") / "shard")
    feeds = {"input_ids": ex[0].numpy(), "attention_mask": ex[1].numpy()}
    res = run_distributed(out, world, feeds, count_collectives=True, timeout=600)
    with torch.no_grad():
        want = [t.numpy() for t in m(*ex)]
    return {"name": name, "world": world, "plan": plan, "res": res, "want": want,
            "model": m, "folder": Path(out)}


def test_outputs_match_the_single_process_model(run: dict[str, Any]) -> None:
    got = [run["res"].outputs[n] for n in run["plan"].original.output_names]
    for g, w in zip(got, run["want"]):
        rel = np.max(np.abs(g - w)) / np.max(np.abs(w))
        assert rel <= 1e-5, f"{run['name']}: max relative error {rel:.3g}"


def test_two_all_reduces_per_layer(run: dict[str, Any]) -> None:
    rep = run["plan"].report
    by_layer = rep["collectives_by_layer"]
    assert by_layer["layers"] == SIZES["layers"]
    assert by_layer["per_layer"] == {"all_reduce": 2}
    emb = _embedding_split(rep)
    counted = run["res"].counts
    assert len(counted) == run["world"]
    for c in counted:  # every rank issued the same collectives
        assert c["all_reduce"] == 2 * SIZES["layers"] + (emb == "vocabulary rows"), (emb, c)
    splits = {r["weight"]: r["split"] for r in rep["plan"]}
    # Megatron's pairing: the first projections by columns, the second by rows
    for key, want in _projections(run["name"]).items():
        got = [s for w, s in splits.items() if key in w]
        assert got and all(s == want for s in got), (key, got)


def test_parameter_bytes_per_rank(run: dict[str, Any]) -> None:
    total = models.param_bytes(run["model"])
    limit = {2: 0.52, 4: 0.27}[run["world"]]
    for rank_info in _shard_json(run["folder"])["ranks"]:
        assert rank_info["param_bytes"] <= limit * total, (rank_info, total)


def test_all_reduce_bytes_are_megatrons(run: dict[str, Any]) -> None:
    b, s, h = SIZES["batch"], SIZES["seq"], SIZES["hidden"]
    per = b * s * h * 4  # one f32 activation
    emb = _embedding_split(run["plan"].report) == "vocabulary rows"
    want = (2 * SIZES["layers"] + emb) * per
    for c in run["res"].counts:
        assert c["bytes"]["all_reduce"] == want


def _embedding_split(rep: dict[str, Any]) -> str:
    rows = [r for r in rep["plan"] if "gather" in r["read_by"] and r["shape"][0] == SIZES["vocab"]]
    assert len(rows) == 1, rows
    return rows[0]["split"]


def _projections(name: str) -> dict[str, str]:
    if name == "gpt2":
        return {"c_attn": "column", "attn_c_proj": "row", "c_fc": "column", "mlp_c_proj": "row"}
    if name == "bert":
        return {"query": "column", "key": "column", "value": "column",
                "attention_output_dense": "row", "intermediate_dense": "column",
                "_0_output_dense": "row", "_1_output_dense": "row"}
    return {"q_proj": "column", "k_proj": "column", "v_proj": "column", "o_proj": "row",
            "gate_proj": "column", "up_proj": "column", "down_proj": "row"}


def _shard_json(folder: Path) -> dict[str, Any]:
    import json

    return json.loads((folder / "shard.json").read_text())
