"""Greedy generation with graphopt's derived KV cache vs generating without a cache vs
transformers' own cached ``generate``, on this CPU, all in one process.

    python -m bench.kv_cache                      # GPT-2-small shapes, 4 layers, 32 + 256 tokens
    python -m bench.kv_cache --quick              # 64 new tokens, fewer repeats
    python -m bench.kv_cache --threads 1 --json /tmp/kv.json

The model: ``transformers.GPT2LMHeadModel`` (n_embd 768, ``--layers`` 4, 12 heads, vocab 50257,
n_positions 1024, SDPA attention), seeded random weights, wrapped as input_ids, attention_mask ->
logits (no cache), and its ONNX export (TorchScript exporter, batch and sequence axes
dynamic). A random prompt of ``--prompt`` 32 tokens, batch 1, ``--new`` 256 new tokens,
greedy, no stop token. Rows (each one whole generation, runs interleaved round-robin):

    graphopt cached      graphopt.optimize(export, kv_cache=True) -> its decode model (decoder
                         with past) in an ONNX Runtime session of ``--threads`` intra-op threads,
                         driven by ``graphopt.kv.generate.generate`` (the loop ``om.generate``
                         runs: IOBinding, presents bound as the next step's past)
    graphopt static cache  the same with ``cache="static"``: buffers of max_length slots bound as
                         both past and present, written in place (TensorScatter)
    om.generate          graphopt cached through ``om.generate`` itself (its own session: ONNX
                         Runtime's default thread count and options)
    om.generate (torch module)  the same, optimized from the torch module instead of the export
    om.generate (torch module, backend=torch)  the decode graph as a torch callable (torch ops,
                         a preallocated cache)
    graphopt no cache    graphopt.optimize(export) (the same rewrites, no kv_cache) saved to ONNX
                         and rerun in ONNX Runtime on the whole sequence at every step
    hf no cache          transformers ``generate(use_cache=False)``
    hf cached            transformers ``generate`` with its dynamic cache

torch runs with ``torch.set_num_threads(--threads)`` and ORT sessions with as many intra-op
threads (one inter-op thread each). Columns: seconds per generation (median, interquartile range /
median, fastest), ms per new token (median / new), graphopt cached's speedup over the row (> 1:
graphopt faster), whether the row's ids equal graphopt cached's (else the first differing new
token). A second table: per-token latency of one decode step at past lengths
``--positions`` (a generation from the prompt past the last position, the time between
consecutive tokens, averaged over the 9 steps around each position, median over
``--latency-repeats`` runs) and the ratio to the first position, for the cached generators
(transformers': the time between its streamer's calls).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from bench.quant_forms import median_spread
from bench.quantize import _f, _finite
from graphopt.bench_cmd import interleaved_seconds

HALF_WINDOW = 4  # steps on each side of a measured position


GPT2_SMALL = {"n_embd": 768, "n_head": 12, "vocab_size": 50257, "n_positions": 1024}


@dataclass
class Row:
    name: str
    seconds: float = math.nan
    spread: float = math.nan
    best_seconds: float = math.nan
    ms_per_token: float = math.nan
    speedup: float = math.nan       # this row's time / graphopt cached's
    same_ids: str = ""


@dataclass
class Latency:
    name: str
    ms: dict[int, float] = field(default_factory=dict)     # position -> ms per token
    ratio: dict[int, float] = field(default_factory=dict)  # position -> ms / ms at the first


# ---- the model ---------------------------------------------------------------------------------

class Decoder(torch.nn.Module):
    """input_ids, attention_mask -> (logits,) of a transformers causal LM, without a cache."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                ) -> tuple[torch.Tensor]:
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                         return_dict=False)
        return (out[0],)


def gpt2(layers: int) -> torch.nn.Module:
    """A randomly initialised GPT2LMHeadModel (seed 0) of GPT-2-small sizes with ``layers``
    layers, eval mode, SDPA attention, generation config greedy with no eos (pad id 0)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=layers, attn_implementation="sdpa", **GPT2_SMALL)
    m = GPT2LMHeadModel(cfg).eval()
    m.generation_config.eos_token_id = None
    m.generation_config.pad_token_id = 0
    return m


def ort_session(model: bytes | str, threads: int) -> Any:
    """An ORT CPU session: default graph optimizations, ``threads`` intra-op threads, one
    inter-op thread."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


# ---- the generators ----------------------------------------------------------------------------

class Stamps:
    """Wall-clock time of every new token: a ``progress(done, total)`` callback for graphopt and
    a streamer (``put`` / ``end``) for transformers, whose first ``put`` is the prompt."""

    def __init__(self, skip_first_put: bool) -> None:
        self.times: list[float] = []
        self._skip = skip_first_put

    def __call__(self, done: int, total: int) -> None:
        self.times.append(time.perf_counter())

    def put(self, value: Any) -> None:
        if self._skip:
            self._skip = False
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass

    def step_ms(self) -> np.ndarray:
        """ms of each decode step: entry j fed the token at position prompt + j."""
        return np.diff(np.asarray(self.times)) * 1e3


def no_cache_generate(session: Any, prompt: np.ndarray, n: int) -> np.ndarray:
    """Greedy generation rerunning the no-cache model on the whole sequence at every step."""
    ids = np.zeros((prompt.shape[0], prompt.shape[1] + n), np.int64)
    ids[:, :prompt.shape[1]] = prompt
    mask = np.ones_like(ids)
    for t in range(prompt.shape[1], ids.shape[1]):
        (logits,) = session.run(["logits"], {"input_ids": ids[:, :t],
                                             "attention_mask": mask[:, :t]})
        ids[:, t] = logits[:, -1].argmax(-1)
    return ids


def hf_generate(hf: torch.nn.Module, prompt: torch.Tensor, n: int, use_cache: bool,
                streamer: Any = None) -> torch.Tensor:
    with torch.no_grad():
        return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                           do_sample=False, use_cache=use_cache, streamer=streamer)


@dataclass
class Built:
    """The optimized models (with a cache from the ONNX export and from the torch module), ORT
    sessions of the decode model and of the no-cache model, and facts about them."""
    om: Any                # graphopt.optimize(export, kv_cache=True)
    om_torch: Any          # graphopt.optimize(module, kv_cache=True)
    cached: Any            # ORT session of om's decode model, --threads
    static: Any            # ORT session of the static-cache decode model, --threads
    no_cache: Any          # ORT session of graphopt.optimize(export) (no cache), --threads
    facts: dict[str, Any]


def export(module: torch.nn.Module, path: str) -> None:
    """The no-cache module as ONNX (torch's TorchScript exporter, opset 17), batch and sequence
    axes dynamic."""
    names = ["input_ids", "attention_mask"]
    example = (torch.zeros(2, 8, dtype=torch.int64), torch.ones(2, 8, dtype=torch.int64))
    with torch.no_grad():
        torch.onnx.export(module, example, path, input_names=names, output_names=["logits"],
                          opset_version=17, dynamo=False,
                          dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names})


def build(module: torch.nn.Module, a: argparse.Namespace, tmp: str) -> Built:
    import onnx

    import graphopt

    src = os.path.join(tmp, "decoder.onnx")
    need = max(a.prompt + a.new, max(a.positions) + HALF_WINDOW + 2)
    t0 = time.perf_counter()
    export(module, src)
    t1 = time.perf_counter()
    om = graphopt.optimize(src, budget=0, kv_cache=True, max_length=need)
    om_static = graphopt.optimize(src, budget=0, kv_cache=True, cache="static",
                                  max_length=need)
    t2 = time.perf_counter()
    plain = graphopt.optimize(src, budget=0)
    path = os.path.join(tmp, "no_cache.onnx")
    plain.save(path)
    t3 = time.perf_counter()
    g = torch.Generator().manual_seed(1)
    example = (torch.randint(0, GPT2_SMALL["vocab_size"], (2, 8), generator=g),
               torch.ones(2, 8, dtype=torch.int64))
    om_torch = graphopt.optimize(module, example_inputs=example, budget=0, kv_cache=True,
                                 max_length=need)
    t4 = time.perf_counter()
    decode = onnx.load_from_string(om.kv.decode_bytes)
    facts = {"seconds_export": t1 - t0, "seconds_optimize_kv_dynamic_and_static": t2 - t1,
             "seconds_optimize_plain": t3 - t2, "seconds_optimize_kv_torch": t4 - t3,
             "max_length": need, "spec": asdict(om.kv.derivation.spec),
             "decode_nodes": len(decode.graph.node),
             "decode_ops": dict(Counter(n.op_type for n in decode.graph.node).most_common()),
             "no_cache_nodes": len(onnx.load(path, load_external_data=False).graph.node),
             "kv_check": om.report["kv_cache"].get("check")}
    return Built(om, om_torch, ort_session(om.kv.decode_bytes, a.threads),
                 ort_session(om_static.kv.static_bytes, a.threads), ort_session(path, a.threads),
                 facts)


# ---- measuring ---------------------------------------------------------------------------------

def first_difference(ids: np.ndarray, ref: np.ndarray, prompt: int) -> str:
    if ids.shape == ref.shape and (ids == ref).all():
        return "yes"
    if ids.shape != ref.shape:
        return f"no (shape {list(ids.shape)})"
    return f"no (new token {int(np.argwhere(ids != ref)[0, 1]) - prompt})"


def generation_rows(b: Built, hf: torch.nn.Module, prompt: torch.Tensor,
                    a: argparse.Namespace) -> tuple[list[Row], dict[str, np.ndarray]]:
    p_np = prompt.numpy()
    cached = stepped(b, hf, prompt, a.new)
    fns: dict[str, Callable[[], Any]] = {
        "graphopt cached": lambda: cached["graphopt cached"](None),
        "graphopt static cache": lambda: cached["graphopt static cache"](None),
        "om.generate": lambda: b.om.generate(prompt, max_new_tokens=a.new),
        "om.generate (torch module)": lambda: b.om_torch.generate(prompt, max_new_tokens=a.new),
        "om.generate (torch module, backend=torch)":
            lambda: cached["graphopt torch backend"](None),
        "graphopt no cache": lambda: no_cache_generate(b.no_cache, p_np, a.new),
        "hf cached": lambda: cached["hf cached"](None)}
    if not a.skip_hf_no_cache:
        fns["hf no cache"] = lambda: hf_generate(hf, prompt, a.new, use_cache=False)
    outs = {name: np.asarray(f()) for name, f in fns.items()}  # also the warm-up
    times = interleaved_seconds(list(fns.values()), a.repeats, warmup=0)
    rows = []
    ref = outs["graphopt cached"]
    for (name, _), ts in zip(fns.items(), times):
        r = Row(name)
        r.seconds, r.spread = median_spread(ts)
        r.best_seconds = min(ts)
        r.ms_per_token = r.seconds / a.new * 1e3
        r.same_ids = first_difference(outs[name], ref, a.prompt)
        rows.append(r)
    for r in rows:
        r.speedup = r.seconds / rows[0].seconds
    return rows, outs


def stepped(b: Built, hf: torch.nn.Module, prompt: torch.Tensor, n: int
            ) -> dict[str, Callable[[Stamps | None], Any]]:
    """The cached generators of ``n`` new tokens, each taking a Stamps (or None) that records
    the time of every new token."""
    from graphopt.kv.generate import generate

    spec, p_np = b.om.kv.derivation.spec, prompt.numpy()
    return {
        "graphopt cached": lambda s: generate(b.cached, spec, p_np, max_new_tokens=n,
                                              progress=s),
        "graphopt static cache": lambda s: generate(b.static, spec, p_np, max_new_tokens=n,
                                                    cache="static", progress=s),
        "graphopt torch backend": lambda s: b.om_torch.generate(prompt, max_new_tokens=n,
                                                                backend="torch", progress=s),
        "hf cached": lambda s: hf_generate(hf, prompt, n, use_cache=True, streamer=s),
    }


def latency_rows(b: Built, hf: torch.nn.Module, prompt: torch.Tensor,
                 a: argparse.Namespace) -> list[Latency]:
    """Per-token latency at each of ``a.positions`` (past length of the step), the runs of the
    generators interleaved."""
    n = max(a.positions) + HALF_WINDOW + 2 - a.prompt
    gens = stepped(b, hf, prompt, n)
    runs: dict[str, list[np.ndarray]] = {name: [] for name in gens}
    for _ in range(a.latency_repeats):
        for name, f in gens.items():
            s = Stamps(skip_first_put=name.startswith("hf"))
            f(s)
            runs[name].append(s.step_ms())
    out = []
    for name, steps in runs.items():
        lat = Latency(name)
        for p in a.positions:
            j = p - a.prompt
            lat.ms[p] = statistics.median(
                float(np.mean(s[j - HALF_WINDOW:j + HALF_WINDOW + 1])) for s in steps)
        first = lat.ms[a.positions[0]]
        lat.ratio = {p: ms / first for p, ms in lat.ms.items()}
        out.append(lat)
    return out


# ---- output ------------------------------------------------------------------------------------

def print_tables(rows: list[Row], lats: list[Latency], facts: dict[str, Any],
                 a: argparse.Namespace) -> None:
    s = GPT2_SMALL
    print(f"GPT-2: n_embd {s['n_embd']}, {a.layers} layers, {s['n_head']} heads, "
          f"vocab {s['vocab_size']}, "
          f"random weights; batch 1, prompt {a.prompt} + {a.new} new tokens, greedy; "
          f"{a.threads} threads (torch.set_num_threads, ORT intra-op); {a.repeats} interleaved "
          f"runs each; decode model {facts['decode_nodes']} ONNX nodes")
    print("| generation | s | IQR/med | min s | ms/token | graphopt cached speedup | "
          "same ids |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r.name} | {_f(r.seconds, '.2f')} | {_f(r.spread, '.0%')} | "
              f"{_f(r.best_seconds, '.2f')} | {_f(r.ms_per_token, '.1f')} | "
              f"{_f(r.speedup, '.2f')}x | {r.same_ids} |")
    ps = a.positions
    print(f"\nper-token latency of a decode step (ms, mean of the {2 * HALF_WINDOW + 1} steps "
          f"around each past length, median of {a.latency_repeats} runs)")
    print("| generation | " + " | ".join(f"@{p}" for p in ps) + " | "
          + " | ".join(f"@{p}/@{ps[0]}" for p in ps[1:]) + " |")
    print("|---|" + "---:|" * (2 * len(ps) - 1))
    for lat in lats:
        print(f"| {lat.name} | " + " | ".join(_f(lat.ms[p], ".2f") for p in ps) + " | "
              + " | ".join(_f(lat.ratio[p], ".2f") for p in ps[1:]) + " |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--prompt", type=int, default=32, help="prompt tokens")
    ap.add_argument("--new", type=int, default=256, help="new tokens per generation")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--positions", default="64,512",
                    type=lambda s: sorted(int(p) for p in s.split(",") if p),
                    help="past lengths whose per-token latency is measured")
    ap.add_argument("--latency-repeats", type=int, default=3)
    ap.add_argument("--skip-hf-no-cache", action="store_true",
                    help="leave out transformers' generate(use_cache=False) (the slowest row)")
    ap.add_argument("--quick", action="store_true",
                    help="64 new tokens, 2 repeats, latency at 64 and 256 once, no hf no-cache")
    ap.add_argument("--json", default=None, help="write the rows here")
    a = ap.parse_args(argv)
    if a.quick:
        a.new, a.repeats, a.latency_repeats = 64, 2, 1
        a.positions, a.skip_hf_no_cache = [64, 256], True
    if a.positions[0] - HALF_WINDOW <= a.prompt:
        ap.error(f"--positions must lie beyond the prompt + {HALF_WINDOW}")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    hf = gpt2(a.layers)
    vocab = GPT2_SMALL["vocab_size"]
    prompt = torch.randint(0, vocab, (1, a.prompt), generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        b = build(Decoder(hf).eval(), a, tmp)
        rows, _ = generation_rows(b, hf, prompt, a)
        lats = latency_rows(b, hf, prompt, a)
    b.facts["seconds_total"] = time.perf_counter() - t0
    print_tables(rows, lats, b.facts, a)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(_finite({"config": vars(a), "facts": b.facts,
                               "rows": [asdict(r) for r in rows],
                               "latency": [asdict(x) for x in lats]}), f, indent=1, default=str)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
