"""``graphopt bench IN.onnx [OUT.onnx ...]``: latency of ONNX models in ONNX Runtime on this
machine, so a user can see the gain of an optimization themselves.

Every model gets one ONNX Runtime session (CPU, default graph optimizations, the same thread
settings for all) and the same inputs: read from an ``.npz`` file / a dict, or generated for the
first model by graphopt's input generation (``check.coerce_inputs``: valid token ids, masks,
normal floats; symbolic dims at the check's sizes). After ``warmup`` calls of each model the
timed calls are interleaved (one call of each model per round, ``runs`` rounds), so a change in
the machine's load hits every model alike. A row gives the median and the quartiles of the
model's calls, its ratio to the first model (first median / this median: above 1 is faster) and
the largest difference of its outputs from the first model's (when they have the same shapes).
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import GraphOptError


@dataclass
class BenchRow:
    """One model's latency (milliseconds per call)."""

    name: str  # the path as given
    median_ms: float
    q1_ms: float  # first quartile of the timed calls
    q3_ms: float  # third quartile
    runs: int
    ratio: float  # the first model's median / this median (the first row: 1.0)
    max_diff: float | None  # largest |output - first model's output|; None: not comparable

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median."""
        return (self.q3_ms - self.q1_ms) / self.median_ms if self.median_ms > 0 else 0.0


def interleaved_seconds(fns: Sequence[Callable[[], Any]], runs: int, warmup: int
                        ) -> list[list[float]]:
    """Seconds of ``runs`` calls of each function: ``warmup`` untimed calls of each first,
    then rounds of one call of each in turn."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, out in zip(fns, samples):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return samples


def quartiles_ms(seconds: Sequence[float]) -> tuple[float, float, float]:
    """(median, first quartile, third quartile) of the samples, in milliseconds."""
    ms = [s * 1e3 for s in seconds]
    if len(ms) < 2:
        return ms[0], ms[0], ms[0]
    q1, q2, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    return statistics.median(ms), q1, q3


def session(path: str, threads: int | None) -> Any:
    """An ONNX Runtime CPU session of ``path`` (default graph optimizations); threads: the
    intra-op thread count (None: ONNX Runtime's default), inter-op 1, sequential execution."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    if threads is not None:
        if threads < 1:
            raise GraphOptError(f"threads must be >= 1, got {threads}", where="bench")
        so.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ONNX Runtime's own error types vary by version
        raise GraphOptError(f"ONNX Runtime cannot load it: {str(e).strip().splitlines()[0]}",
                            where=path) from e


def bench_inputs(path: str, inputs: "Mapping[str, Any] | str | os.PathLike[str] | None"
                 ) -> dict[str, np.ndarray]:
    """The feeds for the model at ``path``: ``inputs`` checked against its inputs (a dict or an
    ``.npz`` path), or generated when None."""
    from .check import coerce_inputs
    from .frontends import onnx as onnx_frontend

    return coerce_inputs(onnx_frontend.load(path), inputs, seed=0)


def _feeds_for(sess: Any, feeds: Mapping[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
    want = [i.name for i in sess.get_inputs()]
    missing = [n for n in want if n not in feeds]
    if missing:
        raise GraphOptError(f"the inputs lack {missing} (given: {sorted(feeds)}): the models "
                            f"take different inputs", where=path)
    return {n: feeds[n] for n in want}


def _max_diff(ref: Sequence[Any], got: Sequence[Any]) -> float | None:
    if len(ref) != len(got):
        return None
    worst = 0.0
    for a, b in zip(ref, got):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype.kind not in "fiub" or b.dtype.kind not in "fiub":
            return None
        if a.size:
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
    return worst


def bench_models(paths: Sequence[str | os.PathLike[str]],
                 inputs: "Mapping[str, Any] | str | os.PathLike[str] | None" = None,
                 runs: int = 50, warmup: int = 5, threads: int | None = None) -> list[BenchRow]:
    """Time each ONNX model in ONNX Runtime on the same inputs, calls interleaved (see the
    module docstring); one row per model, in the order given."""
    if not paths:
        raise GraphOptError("nothing to bench: give one or more .onnx files", where="bench")
    if runs < 1 or warmup < 0:
        raise GraphOptError(f"runs must be >= 1 and warmup >= 0 (got {runs}, {warmup})",
                            where="bench")
    names = [os.fspath(p) for p in paths]
    for p in names:
        if not os.path.exists(p):
            raise GraphOptError("no such file", where=p)
        if not p.endswith(".onnx"):
            raise GraphOptError("graphopt bench times ONNX models (.onnx)", where=p)
    feeds = bench_inputs(names[0], inputs)
    sessions = [session(p, threads) for p in names]
    bound = [_feeds_for(s, feeds, p) for s, p in zip(sessions, names)]
    outputs = [s.run(None, f) for s, f in zip(sessions, bound)]  # also: does each one run
    fns = [lambda s=s, f=f: s.run(None, f) for s, f in zip(sessions, bound)]
    samples = interleaved_seconds(fns, runs, max(warmup - 1, 0))
    rows: list[BenchRow] = []
    for name, ts, out in zip(names, samples, outputs):
        med, q1, q3 = quartiles_ms(ts)
        base = rows[0].median_ms if rows else med
        rows.append(BenchRow(name, med, q1, q3, len(ts), base / med if med > 0 else float("nan"),
                             _max_diff(outputs[0], out)))
    return rows


def format_table(rows: Sequence[BenchRow]) -> str:
    """The rows as a plain-text table: model, median, quartiles, spread, ratio, max diff."""
    head = ["model", "median ms", "q1..q3 ms", "spread", "vs first", "max |diff|"]
    body = [[r.name, f"{r.median_ms:.3f}", f"{r.q1_ms:.3f}..{r.q3_ms:.3f}",
             f"{100 * r.spread:.1f}%", f"{r.ratio:.2f}x",
             "-" if r.max_diff is None else f"{r.max_diff:.2e}"] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(x.ljust(w) if i == 0 else x.rjust(w)
                       for i, (x, w) in enumerate(zip(line, widths))) for line in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    runs = rows[0].runs if rows else 0
    return "\n".join(lines) + f"\n({runs} interleaved runs each; vs first: the first model's " \
                              f"median / this median, above 1 is faster)"


def add_parser(sub: Any) -> None:
    """The ``bench`` subcommand (``graphopt bench IN.onnx [OUT.onnx ...]``)."""
    b = sub.add_parser("bench", help="latency of ONNX models in ONNX Runtime on this machine "
                                     "(interleaved runs, median and spread)")
    b.add_argument("models", nargs="+", metavar="MODEL.onnx",
                   help="models to time; ratios are against the first")
    b.add_argument("--inputs", default=None, metavar="X.npz",
                   help="inputs (one array per input name; default: generated for the first "
                        "model as the check generates them)")
    b.add_argument("--runs", type=int, default=50, help="timed calls of each model (50)")
    b.add_argument("--warmup", type=int, default=5, help="untimed calls of each model first (5)")
    b.add_argument("--threads", type=int, default=None,
                   help="ONNX Runtime intra-op threads (default: ONNX Runtime's)")
    b.set_defaults(func=cmd_bench)


def cmd_bench(args: Any) -> int:
    """Run ``bench_models`` on the parsed arguments and print the table; 0 when done."""
    rows = bench_models(args.models, args.inputs, args.runs, args.warmup, args.threads)
    print(format_table(rows))
    return 0
