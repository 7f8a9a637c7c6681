"""Quantization on the torch path: a BERT-base encoder (4 layers, random weights) run by torch on
this CPU, float eager vs torch.ao dynamic quantization vs graphopt's torch callables.

    python -m bench.quantize_torch                  # 4 layers, sequence 128, 2 threads
    python -m bench.quantize_torch --repeats 50 --threads 1 --json /tmp/qt.json

The model: ``bench/export_transformers.build("bert-base", layers)`` (hidden 768, 12 heads,
intermediate 3072, eager attention, the last hidden state), inputs ids and mask [1, seq].
Rows, all run under ``torch.no_grad()`` with their runs interleaved in one process:

    float eager        the module itself
    torch.ao dynamic   torch.ao.quantization.quantize_dynamic(module, {nn.Linear}, qint8)
    graphopt float     graphopt.optimize(module).torch_module()
    graphopt int8      graphopt.optimize(module, quantize="int8").torch_module(): the lowered
                       int8 linears as fused kernels (graphopt.frontends.torch_quant)

and, to show what the fast path buys, the two graphopt graphs run node by node by the
interpreter (``to_callable(g, fast=False)``). Columns: latency median (ms) and spread
(interquartile range / median), speed ratio vs float eager (> 1: faster), output SQNR (dB) vs
float eager on the same inputs, steps run per call (graph nodes for node by node; plan steps,
constants excluded, for the fast path).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch

from bench.export_transformers import build
from bench.quant_forms import median_spread, sqnr_db
from graphopt.bench_cmd import interleaved_seconds


@dataclass
class Row:
    name: str
    ms: float = math.nan
    spread: float = math.nan
    vs_eager: float = math.nan
    sqnr_db: float = math.nan
    steps: int = 0
    note: str = ""


def plan_steps(mod: Any) -> int:
    return len(mod.plan.steps) if getattr(mod, "plan", None) is not None else \
        sum(n.op != "input" for n in mod.graph.nodes)


def rows_for(layers: int, seq: int, reps: int) -> tuple[list[Row], dict[str, Any]]:
    import graphopt
    from graphopt.frontends.torch_export import to_callable

    model = build("bert-base", layers=layers)
    torch.manual_seed(1)
    ids = torch.randint(0, 30522, (1, seq))
    mask = torch.ones(1, seq, dtype=torch.int64)
    t0 = time.perf_counter()
    om_f = graphopt.optimize(model, example_inputs=(ids, mask))
    om_q = graphopt.optimize(model, example_inputs=(ids, mask), quantize="int8")
    build_s = time.perf_counter() - t0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ao = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear},
                                                    torch.qint8)
    q_fast = om_q.torch_module()
    mods: list[tuple[str, Any, str]] = [
        ("float eager", model, ""),
        ("torch.ao dynamic", ao, "quantize_dynamic({Linear}, qint8)"),
        ("graphopt float", om_f.torch_module(), ""),
        ("graphopt int8", q_fast, f"{len(q_fast.plan.regions)} fused linears, "
                                  f"{len(q_fast.plan.fallbacks)} node by node"),
        ("graphopt float, node by node", to_callable(om_f.graph, fast=False), "interpreter"),
        ("graphopt int8, node by node", to_callable(om_q.graph, fast=False), "interpreter"),
    ]
    with torch.no_grad():
        ref = model(ids, mask).numpy()
        rows = []
        for name, m, note in mods:
            y = m(ids, mask)
            steps = plan_steps(m) if hasattr(m, "graph") else 0
            rows.append(Row(name, sqnr_db=sqnr_db(ref, y.numpy()), steps=steps, note=note))
        ts = interleaved_seconds([lambda m=m: m(ids, mask) for _, m, _ in mods], reps, warmup=2)
    for r, t in zip(rows, ts):
        med, spread = median_spread(t)
        r.ms, r.spread = med * 1e3, spread
    for r in rows:
        r.vs_eager = rows[0].ms / r.ms
    info = {"build_seconds": round(build_s, 1),
            "regions": [str(r) for r in q_fast.plan.regions],
            "fallbacks": [str(f) for f in q_fast.plan.fallbacks],
            "quantized_layers": om_q.report["quantization"]["summary"]}
    return rows, info


def table(rows: list[Row]) -> str:
    head = (f"{'row':30s} {'ms':>8s} {'spread':>7s} {'x eager':>8s} {'SQNR dB':>8s} "
            f"{'steps':>6s}  note")
    lines = [head, "-" * len(head)]
    for r in rows:
        sq = "inf" if math.isinf(r.sqnr_db) else f"{r.sqnr_db:.1f}"
        steps = str(r.steps) if r.steps else "-"
        lines.append(f"{r.name:30s} {r.ms:8.2f} {r.spread * 100:6.0f}% {r.vs_eager:8.2f} {sq:>8s} "
                     f"{steps:>6s}  {r.note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    rows, info = rows_for(args.layers, args.seq, args.repeats)
    load = os.getloadavg()[0]
    print(f"BERT-base {args.layers} layers, seq {args.seq}, {args.threads} threads, "
          f"{args.repeats} interleaved runs, torch {torch.__version__}, quantized engine "
          f"{torch.backends.quantized.engine}, load average {load:.1f} on {os.cpu_count()} CPUs")
    print(table(rows))
    print(f"graphopt int8: {len(info['regions'])} fused linears, "
          f"{len(info['fallbacks'])} node by node")
    for f in info["fallbacks"]:
        print(f"  node by node: {f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": [asdict(r) for r in rows], **info}, fh, indent=1)


if __name__ == "__main__":
    main()
