"""Tensor parallelism: graphopt.shard's plans run under torchrun (gloo) on this CPU, and the cost
model's predicted speedup for a 7B-shaped Llama on 2 x A100 against gpt-fast's published one.

    python -m bench.tensor_parallel                   # everything (~4 minutes on 2 cores)
    python -m bench.tensor_parallel --quick           # 3 timing repeats, Llama with 2 layers
    python -m bench.tensor_parallel --skip-7b --json /tmp/tp.json

Models (``tests.tp.models``: transformers with every parameter drawn at random; batch 2,
sequence 64, the second row left-padded by 16 tokens, f32): GPT-2 (hidden 768, 12 heads, 2
layers, vocab 8192, LM head tied to the embedding), BERT (hidden 768, 12 heads, 2 layers,
intermediate 3072, vocab 8192; outputs the last hidden state and the pooler's) and a Llama stack
(hidden 768, 12 heads, 4 kv heads: grouped-query attention, intermediate 2048, 4 layers, vocab
8192, untied head). Each is sharded with ``graphopt.shard(model, inputs, world_size, "cpu",
check=False)`` and written with ``plan.save`` (which checks the programs read back from disk,
joined in the global view, against the torch model), then:

* run: ``graphopt.tp.run.run_distributed`` -- ``torchrun --nproc-per-node W -m graphopt.launch``,
  gloo, ``--count-collectives`` (torch.profiler's c10d events on every rank);
* max relative error: max |torchrun output - torch model output| / max |torch model output|,
  the worst output;
* all-reduces per layer: the all-reduces a rank issued, less those that add the partial sums of
  a vocabulary-parallel embedding, over the layer count;
* parameters per rank: the bytes of every constant of the largest rank program over the torch
  model's parameter bytes (tied tensors once);
* communication: the payload bytes a rank issued (its operand of each collective, as counted)
  against the Megatron formula, f32: all-reduces of b*s*h per layer twice (after attention's
  output projection and after the MLP) plus one for a vocabulary-parallel embedding, plus, with
  an LM head split by columns (vocabulary), the all-gather of the logits: a rank's block
  b*s*V/W;
* wall time of one step: ``bench.tp_step`` under torchrun: each repeat one sharded step on every
  rank (barrier to barrier) then the single-process torch model on rank 0 (interleaved, one torch
  thread per process; median and interquartile range / median). The machine has 2 cores, so 2
  ranks share them and 4 ranks oversubscribe them: a correctness run, not a speed claim.

The 7B prediction is ``bench.tp_predict`` (its docstring says how it is built and priced).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.quant_forms import median_spread

REPO = Path(__file__).resolve().parent.parent
SIZES = {"hidden": 768, "heads": 12, "vocab": 8192, "seq": 64, "batch": 2}
MODELS: dict[str, dict[str, Any]] = {
    "gpt2": {**SIZES, "layers": 2},
    "bert": {**SIZES, "layers": 2},
    "llama": {**SIZES, "layers": 4, "kv_heads": 4, "intermediate": 2048},
}
HAS_LM_HEAD = {"gpt2": True, "bert": False, "llama": True}
RUNS = (("gpt2", 2), ("bert", 2), ("llama", 2), ("gpt2", 4))


@dataclass
class Run:
    """One model on ``world`` ranks: the plan, the torchrun run, the timing."""

    model: str
    world: int
    config: dict[str, Any]
    plan: dict[str, int]  # split kind -> weights
    estimated_speedup: float
    max_rel_error: float
    counts: dict[str, int]  # rank 0's collectives by kind
    ranks_agree: bool  # every rank issued the same collectives and bytes
    plan_counts: dict[str, int]  # the collectives of the plan's report
    all_reduce_per_layer: float
    rank_param_fraction: float
    payload_bytes: dict[str, int]
    formula_bytes: dict[str, int]
    notes: list[str] = field(default_factory=list)
    tp_s: list[float] = field(default_factory=list)
    single_s: list[float] = field(default_factory=list)

    @property
    def bytes_equal(self) -> bool:
        return all(self.payload_bytes.get(k, 0) == v for k, v in self.formula_bytes.items()) \
            and all(self.formula_bytes.get(k, 0) == v for k, v in self.payload_bytes.items())


def megatron_bytes(name: str, cfg: dict[str, Any], world: int, vocab_embedding: bool
                   ) -> dict[str, int]:
    """A rank's payload bytes per forward step by the Megatron formula (see the module doc)."""
    bsh = cfg["batch"] * cfg["seq"] * cfg["hidden"] * 4
    out = {"all_reduce": (2 * cfg["layers"] + int(vocab_embedding)) * bsh}
    if HAS_LM_HEAD[name]:
        out["all_gather"] = cfg["batch"] * cfg["seq"] * cfg["vocab"] // world * 4
    return out


def embedding_all_reduces(report: dict[str, Any]) -> int:
    """The plan's all-reduces that follow a vocabulary-parallel embedding."""
    vocab = {r["weight"] for r in report["plan"] if r["split"] == "vocabulary rows"
             and "gather" in r["read_by"]}
    return sum(1 for c in report["collectives"] if c["op"] == "all_reduce" and c["weight"] in vocab)


def relative_error(got: dict[str, np.ndarray], names: list[str], ref: tuple[Any, ...]) -> float:
    worst = 0.0
    for name, r in zip(names, ref):
        w = r.detach().numpy()
        worst = max(worst, float(np.max(np.abs(got[name] - w)) / max(float(np.max(np.abs(w))),
                                                                         1e-30)))
    return worst


def time_steps(folder: Path, name: str, cfg: dict[str, Any], feed: dict[str, np.ndarray],
               world: int, reps: int, tmp: Path) -> dict[str, Any]:
    """``bench.tp_step`` under torchrun: the sharded step and the torch model, interleaved."""
    from graphopt.tp.run import torchrun

    x, out = tmp / f"{name}-{world}-inputs.npz", tmp / f"{name}-{world}-times.json"
    np.savez(x, **feed)
    torchrun(["-m", "bench.tp_step", str(folder), "--inputs", str(x), "--model", name,
              "--config", json.dumps(cfg), "--reps", str(reps), "--out", str(out)], world,
             cwd=REPO, timeout=600)
    return json.loads(out.read_text())


def shard_and_run(model: torch.nn.Module, example: tuple[torch.Tensor, ...], world: int,
                  folder: Path) -> tuple[Any, Any, dict[str, np.ndarray], float]:
    """(plan, torchrun result, inputs by name, max relative error vs the torch model):
    ``graphopt.shard`` (target cpu), ``plan.save`` (checked), ``run_distributed`` with the
    collectives counted."""
    import graphopt
    from graphopt.tp.run import run_distributed

    plan = graphopt.shard(model, example, world_size=world, target="cpu", check=False)
    out = plan.save(folder)
    feed = {k: x.numpy() for k, x in zip(plan.original.input_names, example)}
    res = run_distributed(out, world, feed, count_collectives=True)
    with torch.no_grad():
        ref = model(*example)
    ref = ref if isinstance(ref, tuple) else (ref,)
    return plan, res, feed, relative_error(res.outputs, list(plan.original.output_names), ref)


def run_model(name: str, cfg: dict[str, Any], world: int, reps: int, tmp: Path) -> Run:
    from graphopt.tp.plan import weight_bytes
    from tests.tp import models

    model, example = getattr(models, name)(**cfg)
    folder = tmp / f"{name}-{world}"
    plan, res, feed, err = shard_and_run(model, example, world, folder)
    rep = plan.report
    counts = res.counts or []
    kinds = ("all_reduce", "all_gather", "reduce_scatter")
    mine = {k: counts[0][k] for k in kinds if counts[0][k]}
    agree = all({k: c[k] for k in (*kinds, "bytes")} == {k: counts[0][k] for k in
                                                         (*kinds, "bytes")} for c in counts)
    emb = embedding_all_reduces(rep)
    ranks = [weight_bytes(plan.rank_graph(r)) for r in range(world)]
    notes = []
    formula = megatron_bytes(name, cfg, world, emb > 0)
    payload = {k: v for k, v in counts[0]["bytes"].items() if v}
    if payload != formula:
        notes.extend(sorted({f"{c['op']} {c['type']}: {c['why']}" for c in rep["collectives"]
                             if c["op"] != "all_reduce"}))
    times = time_steps(folder, name, cfg, feed, world, reps, tmp)
    return Run(name, world, cfg, dict(Counter(r["split"] for r in rep["plan"])),
               rep["summary"]["estimated_speedup"], err, mine, agree,
               dict(rep["summary"]["collectives"]), (mine.get("all_reduce", 0) - emb)
               / cfg["layers"], max(ranks) / models.param_bytes(model), payload, formula, notes,
               times["tp_s"], times["single_s"])


class OpaqueMLP(torch.nn.Module):
    """LayerNorm, then x + W2 i0(W1 x): ``torch.special.i0`` is no op of graphopt's (an opaque
    node), so a split W1 must be gathered before it."""

    def __init__(self, h: int) -> None:
        super().__init__()
        self.ln = torch.nn.LayerNorm(h)
        self.a, self.b = torch.nn.Linear(h, 4 * h), torch.nn.Linear(4 * h, h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(torch.special.i0(0.01 * self.a(self.ln(x))))


@dataclass
class Fallback:
    """A model the plan cannot fully split: what it replicates and why, and the run."""

    case: str
    world: int
    split: int
    replicated: int
    rank_param_fraction: float
    collectives: dict[str, int]
    max_rel_error: float
    reasons: list[str]


def fallback_cases(tmp: Path) -> list[Fallback]:
    """GPT-2 with hidden 765 (odd: no attention weight splits over 2 ranks) and an MLP with an
    opaque op between its linears, sharded, run under torchrun, their reasons collected."""
    from tests.tp import models

    torch.manual_seed(0)
    cases = [("gpt2 hidden 765, 9 heads", *models.gpt2(**{**MODELS["gpt2"], "hidden": 765,
                                                          "heads": 9})),
             ("MLP 768 with torch.special.i0", OpaqueMLP(768).eval(), (torch.randn(2, 64, 768),))]
    out = []
    for k, (label, model, example) in enumerate(cases):
        plan, res, _, err = shard_and_run(model, example, 2, tmp / f"fallback-{k}")
        rep = plan.report
        why = sorted({r["why_not"] for r in rep["plan"] if "no axis" in r.get("why_not", "")})
        why += sorted({f"{c['op']} {c['type']}: {c['why']}" for c in rep["collectives"]
                       if "opaque" in c["why"]})
        s = rep["summary"]
        out.append(Fallback(label, 2, s["split_weights"], s["replicated_weights"],
                            s["max_rank_param_fraction"], dict(s["collectives"]), err, why))
    return out


def _kinds(d: dict[str, int]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in sorted(d.items())) or "none"


def _kib(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v / 2**10:g} KiB" for k, v in sorted(d.items())) or "none"


def table(title: str, columns: str, rows: list[list[str]]) -> None:
    """A markdown table: ``columns`` "name:l | name:r | ..." (l: left, r: right aligned)."""
    cols = [c.strip().rsplit(":", 1) for c in columns.split("|")]
    print(f"\n{title}")
    print("| " + " | ".join(c for c, _ in cols) + " |")
    print("|" + "|".join("---:" if a == "r" else "---" for _, a in cols) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


def print_runs(runs: list[Run]) -> None:
    table("torchrun, gloo, this machine (2 cores): outputs, collectives, parameters",
          "model:l | ranks:r | layers:r | plan:l | max rel. error:r | all-reduces / layer:r | "
          "collectives / rank (plan):l | params / rank:r | payload bytes / rank:l | "
          "Megatron formula:l | equal:l",
          [[r.model, str(r.world), str(r.config["layers"]), _kinds(r.plan),
            f"{r.max_rel_error:.1e}", f"{r.all_reduce_per_layer:g}",
            f"{_kinds(r.counts)} ({_kinds(r.plan_counts)})"
            + ("" if r.ranks_agree else " RANKS DIFFER"), f"{r.rank_param_fraction:.1%}",
            _kib(r.payload_bytes), _kib(r.formula_bytes), "yes" if r.bytes_equal else "no"]
           for r in runs])
    for r in runs:
        for n in r.notes:
            print(f"  {r.model} x{r.world}: {n}")
    rows = []
    for r in runs:
        (t, ts), (s, ss) = median_spread(r.tp_s), median_spread(r.single_s)
        rows.append([r.model, str(r.world), f"{t * 1e3:.1f}", f"{ts:.0%}", f"{s * 1e3:.1f}",
                     f"{ss:.0%}", f"{s / t:.2f}x", f"{r.estimated_speedup:.2f}x"])
    table("wall time of one forward step (interleaved; one torch thread per process; 2 ranks "
          "share the 2 cores, 4 oversubscribe them: not a speed claim)",
          "model:l | ranks:r | sharded step ms:r | IQR/med:r | torch model ms (1 process):r | "
          "IQR/med:r | torch / sharded:r | cost model's estimate (cpu):r", rows)


def print_fallbacks(rows: list[Fallback]) -> None:
    table("what cannot be split stays replicated, with the report's reason (torchrun, gloo)",
          "model:l | ranks:r | weights split / replicated:l | params / rank:r | collectives:l | "
          "max rel. error:r | reasons in the report:l",
          [[f.case, str(f.world), f"{f.split} / {f.replicated}", f"{f.rank_param_fraction:.1%}",
            _kinds(f.collectives), f"{f.max_rel_error:.1e}", "; ".join(f.reasons)]
           for f in rows])


def main(argv: list[str] | None = None) -> None:
    from bench.tp_predict import predict_7b, print_prediction

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=10, help="timed steps per model")
    ap.add_argument("--quick", action="store_true", help="3 repeats, Llama with 2 layers")
    ap.add_argument("--skip-7b", action="store_true", help="no 7B prediction")
    ap.add_argument("--skip-cpu", action="store_true", help="only the 7B prediction")
    ap.add_argument("--json", default=None, help="write the rows here")
    a = ap.parse_args(argv)
    reps = 3 if a.quick else a.reps
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    runs: list[Run] = []
    falls: list[Fallback] = []
    if not a.skip_cpu:
        with tempfile.TemporaryDirectory(prefix="bench-tp-") as d:
            for name, world in RUNS:
                cfg = dict(MODELS[name])
                if a.quick and name == "llama":
                    cfg["layers"] = 2
                runs.append(run_model(name, cfg, world, reps, Path(d)))
                print(f"[{name} x{world} done]", flush=True)
            falls = fallback_cases(Path(d))
        print_runs(runs)
        print_fallbacks(falls)
    pred = None
    if not a.skip_7b:
        pred = predict_7b()
        print_prediction(pred)
    if a.json:
        out: dict[str, Any] = {"runs": [asdict(r) | {"bytes_equal": r.bytes_equal}
                                        for r in runs],
                               "fallbacks": [asdict(f) for f in falls]}
        if pred is not None:
            out["prediction_7b"] = {k: (v if k != "priced" else [asdict(p) for p in v])
                                    for k, v in pred.items()}
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
