"""torch.compile with graphopt's backend against inductor and eager, on CPU.

    python -m bench.torch_compile [--models bert-base-4l gpt2] [--seq 128] [--runs 30]
                                  [--threads N]

Models (random weights, nothing downloaded; bench.export_transformers.build): BERT-base with 4
layers (hidden 768, 12 heads) and GPT-2 small (12 layers, hidden 768, LM head), batch 1,
``--seq`` tokens, eager attention, inference (``torch.no_grad``). For each model the same
module runs eagerly, under ``torch.compile(backend="inductor")`` and under
``torch.compile(backend=graphopt_backend)`` (default options: target cpu, the default search
budget), once with the default runtime (the optimized graph's torch callable) and once with
``runtime="onnxruntime"`` (its ONNX export in ONNX Runtime, torch's thread count), and, to
tell graphopt's rewrites from ONNX Runtime's own speed, "onnxruntime alone": the model exported
by torch.onnx and run in ONNX Runtime (its default graph optimizations) without graphopt.
Compile time is the wall time of the first call (Dynamo's capture plus the backend; for
graphopt: export, rewrites, search and the numeric check). Speed: after two warm-up calls of
each, ``--runs`` rounds of one call of each (interleaved, so load changes hit all alike);
median and quartiles per row, and eager's median / the row's median (above 1: faster than
eager). The table says whether graphopt compiled every captured graph or fell back, and each
row's largest output difference from eager.

Results (docs/torch_compile.md; 2 shared cores, load 12-14, --threads 1, 25 rounds): eager /
this for BERT-4L and GPT-2: inductor 1.01x / 1.11x, graphopt (torch) 1.00x / 1.08x, graphopt
(onnxruntime) 2.06x / 2.35x, onnxruntime alone 2.03x / 2.49x; spreads 10-25%.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from bench.export_transformers import build
from graphopt.bench_cmd import interleaved_seconds, quartiles_ms

MODELS = {"bert-base-4l": ("bert-base", 4), "gpt2": ("gpt2", None)}


@dataclass
class Row:
    model: str
    runner: str
    compile_s: float
    median_ms: float
    q1_ms: float
    q3_ms: float
    vs_eager: float
    max_diff: float
    note: str


def _compiled(model: torch.nn.Module, backend: Any, example: tuple[torch.Tensor, ...],
              options: dict[str, Any] | None = None) -> tuple[Callable[[], Any], float, Any]:
    torch._dynamo.reset()
    fn = torch.compile(model, backend=backend, options=options)
    t0 = time.perf_counter()
    out = fn(*example)
    return (lambda: fn(*example)), time.perf_counter() - t0, out


def _plain_ort(model: torch.nn.Module, example: tuple[torch.Tensor, ...]
               ) -> tuple[Callable[[], Any], float, Any]:
    """The baseline that separates graphopt's rewrites from ONNX Runtime's speed: the model
    exported by torch.onnx (TorchScript exporter, opset 17) and run in ONNX Runtime with its
    default graph optimizations and torch's thread count; no graphopt."""
    import io

    import onnxruntime as ort

    t0 = time.perf_counter()
    buf = io.BytesIO()
    torch.onnx.export(model, example, buf, input_names=["input_ids", "attention_mask"],
                      opset_version=17, dynamo=False)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = torch.get_num_threads()
    model.eval()  # the exporter restores the wrapper's mode recursively (it was train)
    sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
    feeds = {"input_ids": example[0].numpy(), "attention_mask": example[1].numpy()}
    out = torch.from_numpy(sess.run(None, feeds)[0])
    return (lambda: sess.run(None, feeds)), time.perf_counter() - t0, out


def rows_for(name: str, seq: int, runs: int) -> list[Row]:
    from graphopt.dynamo import RECORDS, graphopt_backend

    family, layers = MODELS[name]
    model = build(family, layers=layers).eval()  # the builder leaves the wrapper in train mode
    g = torch.Generator().manual_seed(0)
    example = (torch.randint(0, 1000, (1, seq), generator=g),
               torch.ones(1, seq, dtype=torch.int64))
    with torch.no_grad():
        ref = model(*example)
        runners: dict[str, tuple[Callable[[], Any], float, Any]] = {
            "eager": ((lambda: model(*example)), 0.0, ref)}
        runners["inductor"] = _compiled(model, "inductor", example)
        runners["onnxruntime alone"] = _plain_ort(model, example)
        assert not any(m.training for m in model.modules())  # no dropout in any runner
        notes: dict[str, str] = {}
        for runner, runtime in (("graphopt", "torch"), ("graphopt (onnxruntime)", "onnxruntime")):
            RECORDS.clear()
            runners[runner] = _compiled(model, graphopt_backend, example, {"runtime": runtime})
            notes[runner] = ", ".join(r.status + (f" ({r.reason})" if r.reason else "")
                                      for r in RECORDS) or "no graph captured"
        # each compiled function was called once already; the interleaved rounds follow
        samples = interleaved_seconds([r[0] for r in runners.values()], runs, warmup=2)
    eager_ms = quartiles_ms(samples[0])[0]
    rows = []
    for (runner, (_, compile_s, out)), ts in zip(runners.items(), samples):
        med, q1, q3 = quartiles_ms(ts)
        rows.append(Row(name, runner, compile_s, med, q1, q3, eager_ms / med,
                        float((out - ref).abs().max()), notes.get(runner, "")))
    return rows


def table(rows: list[Row]) -> str:
    out = ["| model | runner | compile s | median ms | q1..q3 ms | eager / this | max diff "
           "vs eager | captured graphs |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        out.append(f"| {r.model} | {r.runner} | {r.compile_s:.1f} | {r.median_ms:.1f} | "
                   f"{r.q1_ms:.1f}..{r.q3_ms:.1f} | {r.vs_eager:.2f}x | {r.max_diff:.1e} | "
                   f"{r.note} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's, one per core)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 1, "
          f"seq {a.seq}, {a.runs} interleaved rounds", flush=True)
    rows: list[Row] = []
    for name in a.models:
        rows += rows_for(name, a.seq, a.runs)
        print(table(rows), flush=True)


if __name__ == "__main__":
    main()
