"""Transformer fusion benchmark: ONNX Runtime latency on this CPU of (a) the exported model,
(b) ONNX Runtime's transformers optimizer output, (c) graphopt's output (``graphopt.optimize``,
target cpu, numeric check on), all measured in one process with runs interleaved; and the peak memory of one attention block at sequence 2048 vs 4096, unfused vs fused.

    python bench/transformer_fusions.py            # BERT-base, GPT-2 small, Llama-style, ViT-base
    python bench/transformer_fusions.py --quick    # tiny configs (a smoke run)
    python bench/transformer_fusions.py --memory   # attention peak memory only
    python bench/transformer_fusions.py --contrib  # graphopt may emit com.microsoft ops

Models are built from transformers configs with random weights (nothing is downloaded).
"""
from __future__ import annotations

import argparse
import io
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(name: str, quick: bool, seq: int) -> tuple[Any, tuple, list[str], str]:
    """(module, example inputs, input names, ORT optimizer model type)."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=128) if quick else {}
    ids = torch.randint(0, 1000, (1, seq))
    mask = torch.ones(1, seq, dtype=torch.int64)
    if name == "bert":
        cfg = tf.BertConfig(vocab_size=1000, **small)
        m, kind, ins = tf.BertModel(cfg), "bert", (ids, mask)
        names = ["input_ids", "attention_mask"]
    elif name == "gpt2":
        cfg = tf.GPT2Config(vocab_size=1000, **({"n_embd": 64, "n_layer": 2, "n_head": 4}
                                                  if quick else {}))
        m, kind, ins = tf.GPT2Model(cfg), "gpt2", (ids, mask)
        names = ["input_ids", "attention_mask"]
    elif name == "llama":
        cfg = tf.LlamaConfig(vocab_size=1000, hidden_size=64 if quick else 768,
                             intermediate_size=128 if quick else 2048,
                             num_hidden_layers=2 if quick else 12,
                             num_attention_heads=4 if quick else 12,
                             num_key_value_heads=2 if quick else 4, max_position_embeddings=4096)
        m, kind, ins = tf.LlamaModel(cfg), "gpt2", (ids, mask)
        names = ["input_ids", "attention_mask"]
    elif name == "vit":
        cfg = tf.ViTConfig(image_size=64 if quick else 224, patch_size=16, **small)
        m, kind = tf.ViTModel(cfg), "vit"
        ins, names = (torch.randn(1, 3, cfg.image_size, cfg.image_size),), ["pixel_values"]
    else:
        raise SystemExit(f"unknown model {name}")
    m.config._attn_implementation = "eager"
    m.eval()

    class Wrap(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = m

        def forward(self, *a: Any) -> Any:
            kw = dict(zip(names, a))
            if name in ("gpt2", "llama"):
                kw["use_cache"] = False
            return self.m(**kw, return_dict=False)[0]

    return Wrap().eval(), ins, names, kind


def export(m: Any, ins: tuple, names: list[str]) -> Any:
    import onnx
    import torch

    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, ins, f, dynamo=False, input_names=names, opset_version=17)
    return onnx.load_from_string(f.getvalue())


def graphopt_model(proto: Any, contrib: bool = False) -> Any:
    """What users get: ``graphopt.optimize`` (fuse, search, numeric check) for target cpu."""
    import graphopt

    return graphopt.optimize(proto, target="cpu", allow_contrib_ops=contrib).onnx_model()


def ort_optimized(proto: Any, kind: str, heads: int, hidden: int) -> Any:
    from onnxruntime.transformers import optimizer

    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "m.onnx")
        import onnx

        onnx.save(proto, p)
        opt = optimizer.optimize_model(p, model_type=kind, num_heads=heads, hidden_size=hidden,
                                       opt_level=1)
        return opt.model


def session(proto: Any) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def latency(sess: Any, feeds: dict[str, np.ndarray], reps: int) -> float:
    return latencies([sess], feeds, reps)[0]


def latencies(sessions: list[Any], feeds: dict[str, np.ndarray], reps: int) -> list[float]:
    """Median seconds per run of each session, runs interleaved round-robin."""
    return [statistics.median(t) for t in run_times(sessions, feeds, reps)]


def run_times(sessions: list[Any], feeds: dict[str, np.ndarray], reps: int,
              warmup: int = 1) -> list[list[float]]:
    """Seconds of each of ``reps`` runs of every session (after ``warmup`` runs each), runs
    interleaved round-robin so that drift in the machine's load hits every session alike."""
    for s in sessions:
        for _ in range(warmup):
            s.run(None, feeds)
    ts: list[list[float]] = [[] for _ in sessions]
    for _ in range(reps):
        for i, s in enumerate(sessions):
            t0 = time.perf_counter()
            s.run(None, feeds)
            ts[i].append(time.perf_counter() - t0)
    return ts


def count(proto: Any, *types: str) -> int:
    return sum(1 for n in proto.graph.node if n.op_type in types)


def bench_models(models: list[str], quick: bool, seq: int, reps: int, contrib: bool) -> None:
    rows = []
    for name in models:
        m, ins, names, kind = build(name, quick, seq)
        cfg = m.m.config
        proto = export(m, ins, names)
        feeds = {n: x.numpy() for n, x in zip(names, ins)}
        ours = graphopt_model(proto, contrib)
        try:
            theirs = ort_optimized(proto, kind, cfg.num_attention_heads, cfg.hidden_size)
        except Exception as e:  # noqa: BLE001 - reported in the table
            print(f"{name}: ORT transformers optimizer failed: {e}", file=sys.stderr)
            theirs = None
        ref = session(proto).run(None, feeds)[0]
        got = session(ours).run(None, feeds)[0]
        err = float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12))
        sessions = [session(proto), session(ours)] + ([session(theirs)] if theirs is not None else [])
        t_orig, t_ours, *t_rest = latencies(sessions, feeds, reps)
        t_ort = t_rest[0] if t_rest else math.nan
        rows.append((name, t_orig, t_ort, t_ours, err,
                     count(ours, "Attention", "MultiHeadAttention", "GroupQueryAttention"),
                     count(theirs, "Attention", "MultiHeadAttention", "GroupQueryAttention")
                     if theirs is not None else -1))
    print(f"{'model':8} {'orig ms':>9} {'ortopt ms':>10} {'graphopt ms':>12} "
          f"{'orig/ours':>10} {'ortopt/ours':>12} {'rel err':>9} {'attn ours/ort':>14}")
    for name, a, b, c, err, na, nb in rows:
        print(f"{name:8} {a * 1e3:9.2f} {b * 1e3:10.2f} {c * 1e3:12.2f} {a / c:10.2f} "
              f"{b / c:12.2f} {err:9.1e} {na:>6}/{nb:<6}")
    ok = [r for r in rows if not math.isnan(r[2])]
    if rows:
        g1 = math.exp(sum(math.log(r[1] / r[3]) for r in rows) / len(rows))
        print(f"geomean original/graphopt: {g1:.2f}")
    if ok:
        g2 = math.exp(sum(math.log(r[2] / r[3]) for r in ok) / len(ok))
        print(f"geomean ortopt/graphopt:   {g2:.2f} (>= 1: graphopt at least as fast)")


# ---- attention peak memory ------------------------------------------------------------------

VARIANTS = ("unfused", "attention", "chunked", "contrib")


def _attention_model(seq: int, variant: str, heads: int = 4, dim: int = 64) -> Any:
    """One causal attention block [1, H, S, D] as ONNX: the MatMul/Softmax composition
    (unfused), one standard Attention node (opset 23), standard Attention split into query chunks
    (passes/attention_chunking.py, what target cpu gets), or ONNX Runtime's GroupQueryAttention
    (contrib, as passes/ort_attention.py lowers it)."""
    from graphopt.frontends.onnx_export import to_model
    from graphopt.ir.graph import Graph
    from graphopt.ir.node import Node, input_node
    from graphopt.ir.types import DType, TensorType

    t = TensorType((1, heads, seq, dim), DType.f32)
    q, k, v = (input_node(n, t) for n in "qkv")
    y = Node.build("attention", (q.out, k.out, v.out), {"scale": None, "causal": True}).out
    g = Graph([q, k, v], [y], ["y"])
    if variant == "contrib":
        from graphopt.passes.ort_attention import OrtContribAttention

        g = OrtContribAttention("always").run(g).graph
    if variant == "chunked":  # chunks bounded by the host's cache, as target cpu's pass bounds
        # them; given explicitly so that building the model times nothing (the peak-memory
        # child measures from after the build)
        from graphopt.cost.devices import get_device
        from graphopt.passes.attention_chunking import AttentionChunking

        g = AttentionChunking(budget_bytes=get_device("cpu").cache_bytes).run(g).graph
    return to_model(g, opset=23 if variant != "unfused" else 18)


def _hwm_kib() -> int:
    """Peak resident memory of this process (VmHWM: per address space, so unlike ru_maxrss it
    does not start at the parent's peak after fork + exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def _peak_child(seq: int, variant: str) -> None:
    proto = _attention_model(seq, variant)
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal((1, 4, seq, 64)).astype(np.float32) for n in "qkv"}
    base = _hwm_kib()
    sess = session(proto)
    sess.run(None, feeds)
    peak = _hwm_kib()
    print(max(peak - base, 1))  # KiB above the loaded session


def peak_memory() -> None:
    res: dict[tuple[str, int], int] = {}
    for variant in VARIANTS:
        for seq in (2048, 4096):
            out = subprocess.run([sys.executable, __file__, "--peak-child", str(seq), variant],
                                 capture_output=True, text=True,
                                 check=True, env={**os.environ, "PYTHONPATH": ROOT})
            res[(variant, seq)] = int(out.stdout.strip().splitlines()[-1])
    ms: dict[tuple[str, int], float] = {}
    rng = np.random.default_rng(0)
    for seq in (2048, 4096):  # latency in this process, variants interleaved per length
        feeds = {n: rng.standard_normal((1, 4, seq, 64)).astype(np.float32) for n in "qkv"}
        sessions = {v: session(_attention_model(seq, v)) for v in VARIANTS}
        for v in VARIANTS:
            ms[(v, seq)] = latency(sessions[v], feeds, 3) * 1e3
    print(f"{'causal attention block':30} {'S=2048 MiB':>11} {'S=4096 MiB':>11} {'growth':>7} "
          f"{'S=2048 ms':>10} {'S=4096 ms':>10}")
    for variant, label in zip(VARIANTS, ("unfused (MatMul/Softmax)", "fused: ONNX Attention",
                                         "fused: Attention, query chunks",
                                         "fused: com.microsoft GQA")):
        a, b = res[(variant, 2048)], res[(variant, 4096)]
        print(f"{label:30} {a / 1024:11.1f} {b / 1024:11.1f} {b / a:7.2f}x "
              f"{ms[(variant, 2048)]:10.1f} {ms[(variant, 4096)]:10.1f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--models", nargs="+", default=["bert", "gpt2", "llama", "vit"])
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--contrib", action="store_true",
                    help="allow com.microsoft contrib ops in graphopt's output")
    ap.add_argument("--peak-child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    if a.peak_child:
        _peak_child(int(a.peak_child[0]), a.peak_child[1])
        return
    if not a.memory:
        bench_models(a.models, a.quick, a.seq if not a.quick else 32, a.reps, a.contrib)
    peak_memory()


if __name__ == "__main__":
    main()
