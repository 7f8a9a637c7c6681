"""Benchmarks of graphopt's generated Triton kernels (GPU only).

    python bench/triton_kernels.py [--out docs/codegen_bench.md] [--quick]

* flash attention forward vs ``scaled_dot_product_attention`` (flash backend): sequence 1k-8k,
  head dim 64/128, fp16/bf16, causal and not, in TFLOP/s (4*B*H*S*T*D flops, halved for causal);
* fused LayerNorm / softmax: achieved bandwidth (bytes read + written / time) vs the device's
  peak (``graphopt.cost.devices``);
* a GPT-2-style model end to end: graphopt kernels vs eager and ``torch.compile``.

Prints a markdown table (and writes it with --out) naming the device.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable


def _bench(fn: Callable[[], Any]) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=25, rep=100)) * 1e-3  # seconds


def _peak_bandwidth(name: str) -> tuple[str, float]:
    from graphopt.cost.devices import get_device

    n = name.lower()
    for key in ("h200", "h100", "a100"):
        if key in n:
            return key, float(get_device(key).mem_bandwidth)
    raise SystemExit(f"no bandwidth profile for device {name!r} (add one to graphopt.cost)")


def bench_attention(quick: bool) -> list[str]:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from graphopt.codegen.triton import cache
    from graphopt.codegen.triton.autotune import Autotuner
    from graphopt.codegen.triton.kernels.flash_attention import AttnSpec, emit_flash_attention
    from graphopt.ir.types import DType

    rows = ["| dtype | causal | seq | head dim | graphopt TFLOP/s | SDPA flash TFLOP/s | ratio |",
            "|---|---|---|---|---|---|---|"]
    tuner = Autotuner(torch.cuda.get_device_name())
    seqs = (1024, 4096) if quick else (1024, 2048, 4096, 8192)
    for dt, tdt in ((DType.f16, torch.float16), (DType.bf16, torch.bfloat16)):
        for causal in (False, True):
            for D in (64, 128):
                for S in seqs:
                    B, H = max(1, 16384 // S), 2048 // D
                    q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=tdt)
                               for _ in range(3))
                    mod = cache.load(emit_flash_attention(AttnSpec(dt, D, causal)), False)
                    cfg = tuner.config(f"bench-fa-{dt.value}-{causal}-{D}", mod, [q, k, v])
                    t_g = _bench(lambda: mod.launch(q, k, v, config=cfg))
                    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                        t_s = _bench(lambda: torch.nn.functional.scaled_dot_product_attention(
                            q, k, v, is_causal=causal))
                    flops = 4 * B * H * S * S * D * (0.5 if causal else 1.0)
                    g, s = flops / t_g / 1e12, flops / t_s / 1e12
                    rows.append(f"| {dt.value} | {causal} | {S} | {D} | {g:.1f} | {s:.1f} | "
                                f"{g / s:.2f} |")
    return rows


def bench_reductions(quick: bool) -> list[str]:
    import numpy as np
    import torch

    from graphopt.codegen.runtime import compile_graph
    from graphopt.ir.graph import Graph
    from graphopt.ir.node import constant, input_node, op
    from graphopt.ir.types import DType, TensorType

    key, peak = _peak_bandwidth(torch.cuda.get_device_name())
    rows = [f"| kernel | shape | GB/s | fraction of {key} peak ({peak / 1e9:.0f} GB/s) |",
            "|---|---|---|---|"]
    shapes = ((8192, 4096),) if quick else ((8192, 1024), (8192, 4096), (4096, 16384))
    for M, N in shapes:
        x = input_node("x", TensorType((M, N), DType.f16))
        s = constant(np.ones(N, np.float16))
        for name, y in (("layer_norm", op("layer_norm", x.out, s, s, axis=1, epsilon=1e-5)),
                        ("softmax", op("softmax", x.out, axis=1))):
            m = compile_graph(Graph([x], [y]), key).cuda()
            t = torch.randn(M, N, device="cuda", dtype=torch.float16)
            m(t)
            sec = _bench(lambda: m(t))
            gbs = 2 * M * N * 2 / sec / 1e9
            rows.append(f"| {name} | {M}x{N} f16 | {gbs:.0f} | {gbs * 1e9 / peak:.2f} |")
    return rows


def bench_model() -> list[str]:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    import graphopt

    cfg = GPT2Config(n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=1024)
    cfg._attn_implementation = "sdpa"
    model = GPT2LMHeadModel(cfg).eval().half().cuda()

    class LM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor]:
            return (self.m(input_ids=ids, use_cache=False, return_dict=False)[0],)

    lm = LM().eval()
    ids = torch.randint(0, 50257, (4, 512), device="cuda")
    om = graphopt.optimize(lm, (ids,), target=_peak_bandwidth(torch.cuda.get_device_name())[0],
                           check=False)
    ours = om.torch_module(kernels=True).cuda()
    compiled = torch.compile(lm)
    with torch.no_grad():
        ours(ids)
        compiled(ids)
        t = {"eager": _bench(lambda: lm(ids)), "torch.compile": _bench(lambda: compiled(ids)),
             "graphopt": _bench(lambda: ours(ids))}
    rows = ["| GPT-2 small fp16, batch 4 x 512 | ms | speedup vs eager |", "|---|---|---|"]
    rows += [f"| {k} | {v * 1e3:.2f} | {t['eager'] / v:.2f} |" for k, v in t.items()]
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    ap.add_argument("--quick", action="store_true", help="fewer sizes")
    ap.add_argument("--no-model", action="store_true", help="skip the end-to-end model")
    a = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("bench/triton_kernels.py needs a CUDA GPU; none is available", file=sys.stderr)
        return 2
    lines = [f"# graphopt Triton kernels on {torch.cuda.get_device_name()}", "",
             "## Flash attention forward", "", *bench_attention(a.quick), "",
             "## Fused row reductions", "", *bench_reductions(a.quick), ""]
    if not a.no_model:
        lines += ["## End to end", "", *bench_model(), ""]
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
