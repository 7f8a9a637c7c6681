"""Quantization benchmark: a BERT-base-shaped encoder (random weights) in ONNX Runtime on this
CPU, float vs ``onnxruntime.quantization.quantize_dynamic`` vs graphopt's quantization modes.

    python -m bench.quantize                       # 4 layers, sequence 128, mode int8
    python -m bench.quantize --modes int8,int4,nf4 --repeats 30 --json /tmp/quant.json
    python -m bench.quantize --modes smoothquant --calibration calib.npz --max-error 30

The model: hidden 768, 12 heads, intermediate 3072, vocab 30522, ``--layers`` layers, batch 1,
sequence ``--seq``, exported like ``bench/export_transformers.py`` (torch.onnx, opset 17).
Rows:

    float      the exported model
    ort-dyn    quantize_dynamic(float, out, weight_type=QInt8), its defaults otherwise
    MODE       graphopt.optimize(path, target="cpu", quantize=MODE, ...), saved with om.save

Columns: latency median (ms) and spread (interquartile range / median) with all rows' runs
interleaved in one process; speed ratio vs ort-dyn and vs float (> 1: this row is faster);
output SQNR (dB) of the last hidden state vs float on the same inputs; file size and its ratio
to float; bits per weight of the quantized layers, counted from the written file (the bytes of
the initializers each layer's weight is computed from -- codes, scales, zero points -- over the
layer's weight count); the quantized ops ORT runs (after its own graph optimizations); and, for
graphopt rows, the layer counts of ``om.report["quantization"]``.
Sessions: CPU, default graph optimizations, 2 intra-op threads, intra-op spinning off (see
``bench/quant_forms.py``).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from bench.quant_forms import median_spread, session, sqnr_db
from bench.transformer_fusions import run_times

VOCAB = 30522
# weight inputs of the ops that multiply by a weight (op type -> input indices)
WEIGHT_INPUTS: dict[str, tuple[int, ...]] = {
    "MatMul": (1,), "Gemm": (1,), "Gather": (0,), "MatMulInteger": (1, 3),
    "MatMulIntegerToFloat": (1, 3, 5), "DynamicQuantizeMatMul": (1, 2, 3),
    "MatMulNBits": (1, 2, 3), "MatMulBnb4": (1, 2), "QLinearMatMul": (3, 4, 5),
}
CODE_TYPES = {TensorProto.INT8, TensorProto.UINT8, TensorProto.INT4, TensorProto.UINT4,
              TensorProto.INT16, TensorProto.UINT16}
INDEX_TYPES = {TensorProto.INT32, TensorProto.INT64}  # shapes and axes, not weight data
QUANT_OPS = ("DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulInteger", "MatMulNBits",
             "MatMulBnb4", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearMatMul")


@dataclass
class Row:
    name: str
    ms: float = math.nan
    spread: float = math.nan
    vs_ort_dyn: float = math.nan
    vs_float: float = math.nan
    sqnr_db: float = math.nan
    file_mb: float = math.nan
    size_ratio: float = math.nan
    bits_per_weight: float = math.nan
    linear_bits: float = math.nan  # the same over the linears only (embedding Gathers left out)
    quantized_layers: int = 0
    ort_ops: str = ""
    report: dict[str, Any] = field(default_factory=dict)
    seconds_to_build: float = math.nan
    error: str = ""


# ---- counting the quantized weights of a written file ------------------------------------------

def _tensor_bytes(t: onnx.TensorProto) -> int:
    """Bytes of an initializer as stored (4-bit types packed two per byte)."""
    n = math.prod(t.dims)
    if t.data_type in (TensorProto.INT4, TensorProto.UINT4):
        return (n + 1) // 2
    return n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def _constant_cone(name: str, inits: dict[str, onnx.TensorProto],
                   producers: dict[str, onnx.NodeProto], memo: dict[str, frozenset[str] | None]
                   ) -> frozenset[str] | None:
    """The initializers a value is computed from when it is computed from initializers only
    (None when it depends on a graph input)."""
    if name in memo:
        return memo[name]
    memo[name] = None  # cycles cannot occur in a valid graph; this guards the recursion
    if name in inits:
        memo[name] = frozenset([name])
    elif name in producers:
        node, cone = producers[name], frozenset()
        for i in node.input:
            if not i:
                continue
            sub = _constant_cone(i, inits, producers, memo)
            if sub is None:
                return None
            cone |= sub
        memo[name] = cone
    return memo[name]


def weight_bits(model: onnx.ModelProto, skip: tuple[str, ...] = ()) -> tuple[float, int]:
    """(bits per weight, number of layers) over the layers whose weight is stored quantized:
    the layers (MatMul, Gemm, Gather, and the quantized matmul ops) whose weight inputs are
    computed from initializers only, at least one of them integer codes. A layer's weight
    count is K * N for MatMulNBits / MatMulBnb4 and the element count of its largest code
    initializer otherwise; its bytes are those of all its weight initializers except int32 /
    int64 ones (shapes, axes). Initializers shared by layers count once. Scales applied after
    an integer matmul (MatMulInteger's output Mul) are outside the weight's inputs and not
    counted. ``skip``: op types left out (Gather: the linears only)."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    memo: dict[str, frozenset[str] | None] = {}
    used: set[str] = set()
    count, layers = 0, 0
    for n in g.node:
        idx = WEIGHT_INPUTS.get(n.op_type)
        if idx is None or n.op_type in skip:
            continue
        cone: frozenset[str] = frozenset()
        for i in idx:
            if i < len(n.input) and n.input[i]:
                sub = _constant_cone(n.input[i], inits, producers, memo)
                if sub is None:
                    cone = frozenset()
                    break
                cone |= sub
        codes = [inits[c] for c in cone if inits[c].data_type in CODE_TYPES]
        if not codes:
            continue
        attrs = {a.name: a.i for a in n.attribute}
        count += (attrs["K"] * attrs["N"] if "K" in attrs and "N" in attrs
                  else max(math.prod(t.dims) for t in codes))
        used |= {c for c in cone if inits[c].data_type not in INDEX_TYPES}
        layers += 1
    if not count:
        return math.nan, 0
    return 8.0 * sum(_tensor_bytes(inits[c]) for c in used) / count, layers


def ort_ops(path: str, tmp: str) -> str:
    """The quantized ops in the graph ORT runs (after its graph optimizations), with counts."""
    opt = os.path.join(tmp, os.path.basename(path) + ".ort.onnx")
    session(path, optimized_path=opt)
    counts = Counter(n.op_type for n in onnx.load(opt).graph.node if n.op_type in QUANT_OPS)
    return " ".join(f"{op}x{c}" for op, c in counts.most_common())


# ---- building the rows -------------------------------------------------------------------------

def export_float(path: str, layers: int, seq: int) -> None:
    from bench.export_transformers import export

    export("bert-base", path, seq=seq, layers=layers)


def ort_dynamic(src: str, dst: str) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(src, dst, weight_type=QuantType.QInt8)


def graphopt_quantized(src: str, dst: str, mode: str, options: dict[str, Any],
                       contrib: bool) -> dict[str, Any]:
    """graphopt.optimize(src, target="cpu", quantize=mode, **options) saved to ``dst``; its
    quantization report."""
    import graphopt

    om = graphopt.optimize(src, target="cpu", quantize=mode, allow_contrib_ops=contrib,
                           **options)
    om.save(dst)
    rep = om.report.get("quantization", {})
    return rep if isinstance(rep, dict) else {"report": str(rep)}


def report_summary(rep: dict[str, Any]) -> str:
    """'quantized/left float' layer counts and the lowest layer SQNR of a graphopt report."""
    layers = rep.get("layers")
    if not isinstance(layers, list):
        return ""
    quant = [l for l in layers if isinstance(l, dict) and "left_float" not in l]
    left = len(layers) - len(quant)
    sq = [float(l["sqnr_db"]) for l in quant if isinstance(l.get("sqnr_db"), (int, float))]
    return f"{len(quant)} q / {left} float" + (f", min layer {min(sq):.1f} dB" if sq else "")


def feeds_for(seq: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"input_ids": rng.integers(0, VOCAB, (1, seq)).astype(np.int64),
            "attention_mask": np.ones((1, seq), np.int64)}


def bench(a: argparse.Namespace) -> list[Row]:
    options: dict[str, Any] = {}
    if a.group_size is not None:
        options["group_size"] = a.group_size
    if a.method is not None:
        options["method"] = a.method
    if a.calibration is not None:
        options["calibration"] = a.calibration
    if a.max_error is not None:
        options["max_error"] = a.max_error
    modes = [m for m in a.modes.split(",") if m]
    feeds = feeds_for(a.seq)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"float": os.path.join(tmp, "float.onnx"), "ort-dyn": os.path.join(tmp, "ort.onnx")}
        rows = {name: Row(name) for name in ["float", "ort-dyn"] + modes}
        t0 = time.perf_counter()
        export_float(paths["float"], a.layers, a.seq)
        rows["float"].seconds_to_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        ort_dynamic(paths["float"], paths["ort-dyn"])
        rows["ort-dyn"].seconds_to_build = time.perf_counter() - t0
        for mode in modes:
            dst = os.path.join(tmp, f"graphopt-{mode}.onnx")
            t0 = time.perf_counter()
            try:
                rows[mode].report = graphopt_quantized(paths["float"], dst, mode, options,
                                                       a.contrib)
                paths[mode] = dst
            except Exception as e:  # noqa: BLE001 - reported in the table
                rows[mode].error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            rows[mode].seconds_to_build = time.perf_counter() - t0
        sessions, ref = [], None
        for name, path in paths.items():
            row = rows[name]
            try:
                s = session(path)
                y = s.run(None, feeds)[0]
                row.ort_ops = ort_ops(path, tmp)
            except Exception as e:  # noqa: BLE001 - reported in the table
                row.error = f"ORT: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
                continue
            ref = y if ref is None else ref
            row.sqnr_db = sqnr_db(ref, y)
            row.file_mb = os.path.getsize(path) / 2**20
            written = onnx.load(path)
            row.bits_per_weight, row.quantized_layers = weight_bits(written)
            row.linear_bits = weight_bits(written, skip=("Gather",))[0]
            sessions.append((row, s))
        for (row, _), ts in zip(sessions, run_times([s for _, s in sessions], feeds, a.repeats,
                                                    warmup=2)):
            med, row.spread = median_spread(ts)
            row.ms = med * 1e3
    base, dyn = rows["float"], rows["ort-dyn"]
    for row in rows.values():
        row.vs_float = base.ms / row.ms
        row.vs_ort_dyn = dyn.ms / row.ms
        row.size_ratio = row.file_mb / base.file_mb
    return list(rows.values())


def _f(x: float, fmt: str) -> str:
    return "-" if isinstance(x, float) and math.isnan(x) else ("exact" if x == math.inf
                                                               else format(x, fmt))


def print_table(rows: list[Row], a: argparse.Namespace) -> None:
    print(f"BERT-base shapes, {a.layers} layers, sequence {a.seq}, batch 1; "
          f"{a.repeats} interleaved runs each")
    print("| model | ms | IQR/med | vs ort-dyn | vs float | SQNR dB | file MB | size | "
          "bits/weight | linears bits/w | q layers | ORT quant ops | graphopt report | build s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for r in rows:
        if r.error:
            print(f"| {r.name} | FAILED: {r.error} ||||||||||||")
            continue
        print(f"| {r.name} | {_f(r.ms, '.1f')} | {_f(r.spread, '.0%')} "
              f"| {_f(r.vs_ort_dyn, '.2f')}x | {_f(r.vs_float, '.2f')}x | {_f(r.sqnr_db, '.1f')} "
              f"| {_f(r.file_mb, '.1f')} | {_f(r.size_ratio, '.2f')} "
              f"| {_f(r.bits_per_weight, '.2f')} | {_f(r.linear_bits, '.2f')} "
              f"| {r.quantized_layers} | {r.ort_ops} "
              f"| {report_summary(r.report)} | {_f(r.seconds_to_build, '.0f')} |")


def _finite(x: Any) -> Any:
    """``x`` with NaN and infinite floats as None (strict JSON)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--modes", default="int8",
                    help="comma-separated graphopt modes: int8, int8-weight, int4, nf4, "
                         "smoothquant, llm-int8 (empty: baselines only)")
    ap.add_argument("--group-size", type=int, default=None)
    ap.add_argument("--method", default=None, help="rtn, gptq or awq")
    ap.add_argument("--calibration", default=None, help=".npz of calibration inputs")
    ap.add_argument("--max-error", type=float, default=None, help="dB, passed as max_error")
    ap.add_argument("--contrib", action="store_true",
                    help="graphopt may emit com.microsoft ops (allow_contrib_ops)")
    ap.add_argument("--json", default=None, help="write the rows here")
    a = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    rows = bench(a)
    print_table(rows, a)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(_finite({"config": vars(a), "rows": [asdict(r) for r in rows]}), f,
                      indent=1, default=str)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
