"""Decode-step latency of a Llama-shaped decoder (random weights) in ONNX Runtime on this CPU:
float vs graphopt's quantization modes (int4 first).

    python -m bench.quantize_decoder                   # int4 and int4+head, 8 layers
    python -m bench.quantize_decoder --modes int4,int4:gptq,nf4,int8 --json /tmp/decoder.json
    python -m bench.quantize_decoder --layers 2 --repeats 20  # quick

The model: ``transformers.LlamaForCausalLM`` from a ``LlamaConfig`` (hidden 1024, intermediate
2816, ``--layers`` 8, 16 heads, 4 key/value heads, head dim 64, vocab 32000, untied LM head,
eager attention), seeded random weights. One decode step is exported with
``torch.onnx.export(dynamo=True)`` (opset 21; batch and past length dynamic):

    input_ids [B, 1], attention_mask [B, P+1], past_key_values.{i}.key / .value [B, 4, P, 64]
    -> logits [B, 1, 32000], present.{i}.key / .value [B, 4, P+1, 64]

The past comes from the torch model itself: a random prompt of P tokens is prefilled
(``use_cache=True``) and the next input token is the prompt's greedy next token. Calibration
(``--calibration-batches``, default 4), the check inside ``graphopt.optimize`` and the
measurements use different prompts.

Rows (each ``MODE`` is ``mode[:method][/gGROUP][+head]``, e.g. ``int4:gptq``, ``int4/g32``,
``int4+head`` = ``quantize_lm_head=True``; the LM head stays float otherwise):

    float      the exported decode step
    graphopt   graphopt.optimize(path, target="cpu") without quantization (its fusions alone)
    MODE       graphopt.optimize(path, target="cpu", quantize=mode, ...) -> om.save

Columns: latency of one step (B=1, ``--past`` 128): median in ms, spread (interquartile range
over median) and the fastest run (less sensitive to other load on a shared machine), all rows'
runs interleaved in one process; speed ratio of the medians vs float and vs graphopt (> 1:
faster); logits SQNR (dB) vs float over ``--eval-prompts`` prompts and how often the greedy
next token agrees with float's; model size on disk (ONNX file plus external data) and its ratio
to float; bits per weight of the quantized layers counted from the written file (the int8
embedding table included, ``bench.quantize.weight_bits``) and of the quantized linears alone
(graphopt's report); the quantized ops ORT runs after its own graph optimizations (from
``optimized_model_filepath``) and the linears it still runs as float MatMul/Gemm with a constant
weight (the LM head unless ``+head``); graphopt's per-layer report. Sessions: CPU, default
graph optimizations, ``--threads`` 2 intra-op threads, ``session.intra_op.allow_spinning`` = "0".

The error budget: with these random weights each 4-bit linear's own output is at about 20 dB
SQNR and the errors compound over the layers (the logits of the 8-layer model are at 12.5-13.5
dB for int4 rtn, gptq, awq and nf4 alike), so graphopt's default 4-bit budget (20 dB on every
output) rejects them. ``--max-error`` (default 0 dB) is passed to ``optimize`` so that the
latency can be measured; the logits SQNR and the greedy-token agreement are in the table.
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import logging
import math
import os
import re
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import onnx
import torch

from bench.quant_forms import median_spread, session, sqnr_db
from bench.quantize import QUANT_OPS, _f, _finite, report_summary, weight_bits
from bench.transformer_fusions import run_times


@dataclass(frozen=True)
class Shape:
    """The decoder's sizes (``transformers.LlamaConfig`` fields)."""
    hidden: int = 1024
    intermediate: int = 2816
    layers: int = 8
    heads: int = 16
    kv_heads: int = 4
    vocab: int = 32000

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


@dataclass
class Row:
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    ms: float = math.nan
    spread: float = math.nan
    best_ms: float = math.nan
    vs_float: float = math.nan
    vs_graphopt: float = math.nan
    sqnr_db: float = math.nan
    top1_agree: float = math.nan
    file_mb: float = math.nan
    size_ratio: float = math.nan
    bits_per_weight: float = math.nan
    linear_bits: float = math.nan
    quantized_layers: int = 0
    ort_ops: str = ""
    float_linears: int = 0
    report: dict[str, Any] = field(default_factory=dict)
    seconds_to_build: float = math.nan
    error: str = ""


# ---- the model and its decode step ---------------------------------------------------------------

def llama(shape: Shape) -> torch.nn.Module:
    """A randomly initialised LlamaForCausalLM (seed 0) of ``shape``, eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=shape.vocab, hidden_size=shape.hidden,
                      intermediate_size=shape.intermediate, num_hidden_layers=shape.layers,
                      num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
                      max_position_embeddings=4096, tie_word_embeddings=False,
                      attn_implementation="eager")
    return LlamaForCausalLM(cfg).eval()


def _cache_arg(model: torch.nn.Module) -> str:
    """The keyword the model's forward takes its KV cache by (``cache`` in transformers 5.24,
    ``past_key_values`` before)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _returned_cache(out: Any) -> Any:
    return out.cache if hasattr(out, "cache") else out.past_key_values


class DecodeStep(torch.nn.Module):
    """One decode step with the cache as flat tensors: (input_ids, attention_mask, k0, v0, k1,
    v1, ...) -> (logits, present k0, present v0, ...)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.cache_arg = _cache_arg(model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for i in range(len(past) // 2):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True,
                         return_dict=True, **{self.cache_arg: cache})
        present = _returned_cache(out)
        flat = [out.logits]
        for layer in present.layers:
            flat += [layer.keys, layer.values]
        return tuple(flat)


def io_names(layers: int) -> tuple[list[str], list[str]]:
    """The decode step's input and output names (onnxruntime-genai's Llama spelling)."""
    ins = ["input_ids", "attention_mask"] + [f"past_key_values.{i}.{kv}" for i in range(layers)
                                             for kv in ("key", "value")]
    outs = ["logits"] + [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    return ins, outs


def export_step(model: torch.nn.Module, shape: Shape, path: str) -> None:
    """Export one decode step to ``path`` (torch.onnx dynamo exporter, opset 21, external
    data), batch and past length dynamic (traced at B=2, P=16: size-1 dims get specialised)."""
    b, p = 2, 16
    ids = torch.zeros(b, 1, dtype=torch.int64)
    mask = torch.ones(b, p + 1, dtype=torch.int64)
    past = tuple(torch.randn(b, shape.kv_heads, p, shape.head_dim)
                 for _ in range(2 * shape.layers))
    bd, pd = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("past", min=1, max=4000)
    dyn = {"input_ids": {0: bd}, "attention_mask": {0: bd, 1: pd + 1},
           "past": tuple({0: bd, 2: pd} for _ in past)}
    ins, outs = io_names(shape.layers)
    with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):  # the exporter's progress
        torch.onnx.export(DecodeStep(model), (ids, mask, *past), path, input_names=ins,
                          output_names=outs, dynamic_shapes=dyn, opset_version=21,
                          dynamo=True, external_data=True)


def decode_feed(model: torch.nn.Module, shape: Shape, seed: int, past: int,
                batch: int = 1) -> dict[str, np.ndarray]:
    """Decode-step inputs after a prefill: a random prompt of ``past`` tokens run through the
    torch model with a cache; the step's token is the prompt's greedy next token."""
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, shape.vocab, (batch, past), generator=g)
    with torch.no_grad():
        out = model(input_ids=prompt, attention_mask=torch.ones_like(prompt), use_cache=True,
                    return_dict=True)
    feed = {"input_ids": out.logits[:, -1:].argmax(-1).numpy().astype(np.int64),
            "attention_mask": np.ones((batch, past + 1), np.int64)}
    names = io_names(shape.layers)[0][2:]
    tensors = [t for layer in _returned_cache(out).layers for t in (layer.keys, layer.values)]
    feed.update({n: t.numpy().astype(np.float32) for n, t in zip(names, tensors)})
    return feed


# ---- the variants ------------------------------------------------------------------------------

VARIANT = re.compile(r"^(?P<mode>[a-z0-9-]+)(?::(?P<method>[a-z]+))?(?:/g(?P<group>\d+))?"
                     r"(?P<head>\+head)?$")


def variant_options(spec: str) -> dict[str, Any]:
    """``optimize`` keyword arguments of a row spec ``mode[:method][/gGROUP][+head]``."""
    m = VARIANT.match(spec)
    if m is None:
        raise SystemExit(f"bad mode spec {spec!r}: mode[:method][/gGROUP][+head], e.g. "
                         f"int4, int4:gptq, int4/g32, int4+head")
    opts: dict[str, Any] = {"quantize": m["mode"]}
    if m["method"]:
        opts["method"] = m["method"]
    if m["group"]:
        opts["group_size"] = int(m["group"])
    if m["head"]:
        opts["quantize_lm_head"] = True
    return opts


def graphopt_model(src: str, dst: str, options: dict[str, Any], calibration: list[dict],
                   check_feed: dict[str, np.ndarray], max_error: float) -> dict[str, Any]:
    """graphopt.optimize(src, target="cpu", **options) saved to ``dst``; its quantization
    report ({} without quantization)."""
    import graphopt

    extra: dict[str, Any] = {}
    if "quantize" in options:
        extra = {"calibration": calibration, "max_error": max_error}
    om = graphopt.optimize(src, target="cpu", inputs=check_feed, **options, **extra)
    om.save(dst)
    rep = om.report.get("quantization", {})
    if not isinstance(rep, dict):
        return {"report": str(rep)}
    return {k: v for k, v in rep.items() if k != "passes"}  # the passes' lists run long


# ---- measuring ---------------------------------------------------------------------------------

def disk_mb(path: str) -> float:
    """MB of an ONNX file and the external data files it names."""
    m = onnx.load(path, load_external_data=False)
    names = {e.value for t in m.graph.initializer for e in t.external_data if e.key == "location"}
    folder = os.path.dirname(path)
    return (os.path.getsize(path) + sum(os.path.getsize(os.path.join(folder, n))
                                        for n in names)) / 2**20


def ort_graph_facts(optimized: str) -> tuple[str, int]:
    """From the graph ORT runs: its quantized ops with counts, and the number of MatMul / Gemm
    nodes whose weight (input 1) is a float initializer."""
    g = onnx.load(optimized, load_external_data=False).graph
    floats = {t.name for t in g.initializer
              if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}
    counts = Counter(n.op_type for n in g.node if n.op_type in QUANT_OPS)
    linears = sum(1 for n in g.node
                  if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in floats)
    return " ".join(f"{op}x{c}" for op, c in counts.most_common()), linears


def accuracy(sessions: list[Any], feeds: list[dict[str, np.ndarray]]
             ) -> list[tuple[float, float]]:
    """Per session: logits SQNR vs the first session over all ``feeds`` and the fraction of
    feeds (rows) whose greedy next token agrees with the first session's."""
    logits = [np.concatenate([s.run(["logits"], f)[0] for f in feeds]) for s in sessions]
    ref = logits[0]
    return [(sqnr_db(ref, y), float(np.mean(ref.argmax(-1) == y.argmax(-1)))) for y in logits]


def bench(a: argparse.Namespace) -> tuple[list[Row], dict[str, Any]]:
    shape = Shape(layers=a.layers)
    model = llama(shape)
    t0 = time.perf_counter()
    calibration = [decode_feed(model, shape, 1000 + i, a.past)
                   for i in range(a.calibration_batches)]
    check_feed = decode_feed(model, shape, 2000, a.past)
    evals = [decode_feed(model, shape, 3000 + i, a.past) for i in range(a.eval_prompts)]
    timing = decode_feed(model, shape, 4000, a.past)
    facts: dict[str, Any] = {"shape": asdict(shape), "seconds_prefill": time.perf_counter() - t0}
    rows = [Row("float"), Row("graphopt")] + [Row(m, variant_options(m)) for m in a.modes
                                              if m]
    with tempfile.TemporaryDirectory() as tmp:
        paths: dict[str, str] = {}
        for r in rows:
            os.makedirs(os.path.join(tmp, r.name))
            dst = os.path.join(tmp, r.name, "model.onnx")
            t0 = time.perf_counter()
            try:
                if r.name == "float":
                    export_step(model, shape, dst)
                else:
                    r.report = graphopt_model(paths["float"], dst, r.options, calibration,
                                              check_feed, a.max_error)
                paths[r.name] = dst
            except Exception as e:  # noqa: BLE001 - reported in the table
                r.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                if r.name == "float":
                    raise
            r.seconds_to_build = time.perf_counter() - t0
        del model
        live: list[tuple[Row, Any]] = []
        for r in rows:
            if r.name not in paths:
                continue
            try:
                opt = os.path.join(tmp, f"{r.name}.ort.onnx")
                s = session(paths[r.name], threads=a.threads, optimized_path=opt)
                s.run(None, check_feed)
            except Exception as e:  # noqa: BLE001 - reported in the table
                r.error = f"ORT: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
                continue
            r.ort_ops, r.float_linears = ort_graph_facts(opt)
            r.file_mb = disk_mb(paths[r.name])
            r.bits_per_weight, r.quantized_layers = weight_bits(onnx.load(paths[r.name]))
            r.linear_bits = float(r.report.get("summary", {}).get("quantized_linear_bits_per_weight",
                                                                    math.nan))
            live.append((r, s))
        for (r, _), (sq, agree) in zip(live, accuracy([s for _, s in live], evals)):
            r.sqnr_db, r.top1_agree = sq, agree
        for (r, _), ts in zip(live, run_times([s for _, s in live], timing, a.repeats,
                                              warmup=3)):
            med, r.spread = median_spread(ts)
            r.ms, r.best_ms = med * 1e3, min(ts) * 1e3
    base, gopt = rows[0], rows[1]
    for r in rows:
        r.vs_float = base.ms / r.ms
        r.vs_graphopt = gopt.ms / r.ms
        r.size_ratio = r.file_mb / base.file_mb
    return rows, facts


# ---- output ------------------------------------------------------------------------------------

# (header, right-aligned, cell of a row)
COLUMNS: list[tuple[str, bool, Callable[[Row], str]]] = [
    ("model", False, lambda r: r.name),
    ("ms/step", True, lambda r: _f(r.ms, ".1f")),
    ("IQR/med", True, lambda r: _f(r.spread, ".0%")),
    ("min ms", True, lambda r: _f(r.best_ms, ".1f")),
    ("vs float", True, lambda r: _f(r.vs_float, ".2f") + "x"),
    ("vs graphopt", True, lambda r: _f(r.vs_graphopt, ".2f") + "x"),
    ("logits SQNR dB", True, lambda r: _f(r.sqnr_db, ".1f")),
    ("top-1 agree", True, lambda r: _f(r.top1_agree, ".0%")),
    ("MB", True, lambda r: _f(r.file_mb, ".0f")),
    ("size", True, lambda r: _f(r.size_ratio, ".2f")),
    ("bits/weight", True, lambda r: _f(r.bits_per_weight, ".2f")),
    ("linear bits", True, lambda r: _f(r.linear_bits, ".2f")),
    ("q layers", True, lambda r: str(r.quantized_layers)),
    ("ORT quant ops", False, lambda r: r.ort_ops),
    ("float linears", True, lambda r: str(r.float_linears)),
    ("graphopt report", False, lambda r: report_summary(r.report)),
    ("build s", True, lambda r: _f(r.seconds_to_build, ".0f")),
]


def print_table(rows: list[Row], a: argparse.Namespace) -> None:
    s = Shape(layers=a.layers)
    print(f"Llama decoder: hidden {s.hidden}, intermediate {s.intermediate}, {s.layers} layers, "
          f"{s.heads} heads / {s.kv_heads} kv heads, vocab {s.vocab}; one decode step, batch 1, "
          f"{a.past} past tokens; {a.threads} threads; {a.repeats} interleaved runs each; "
          f"accuracy over {a.eval_prompts} prompts; max_error {a.max_error} dB")
    print("| " + " | ".join(h for h, _, _ in COLUMNS) + " |")
    print("|" + "|".join("---:" if right else "---" for _, right, _ in COLUMNS) + "|")
    for r in rows:
        cells = ([r.name, f"FAILED: {r.error}"] + [""] * (len(COLUMNS) - 2) if r.error
                 else [cell(r) for _, _, cell in COLUMNS])
        print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--past", type=int, default=128, help="past tokens of the measured step")
    ap.add_argument("--modes", default="int4,int4+head",
                    type=lambda s: [m for m in s.split(",") if m],
                    help="comma-separated mode[:method][/gGROUP][+head] (int4, int4:gptq, "
                         "int4:awq, int4/g32, nf4, int8, int8-weight, ...; empty: float only)")
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calibration-batches", type=int, default=4)
    ap.add_argument("--eval-prompts", type=int, default=8)
    ap.add_argument("--max-error", type=float, default=0.0,
                    help="output SQNR budget in dB passed to optimize (see the docstring)")
    ap.add_argument("--json", default=None, help="write the rows here")
    a = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()
    rows, facts = bench(a)
    facts["seconds_total"] = time.perf_counter() - t0
    print_table(rows, a)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(_finite({"config": vars(a), "facts": facts,
                               "rows": [asdict(r) for r in rows]}), f, indent=1, default=str)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
