"""Weight-only int8 / int4 matmul in the interpreter against dequantize-then-matmul."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from graphopt.codegen.triton import cache
from graphopt.codegen.triton.kernels.quant_matmul import (QuantSpec, emit_quant_matmul,
                                                          quant_pattern)
from graphopt.ir.node import constant, op
from graphopt.ir.types import DType
from tests.codegen.helpers import TORCH, close, inp


def _pack_int4(q: torch.Tensor) -> torch.Tensor:
    """[K, N] ints in -8..7 -> [ceil(K/2), N] uint8, even k in the low nibble."""
    K, N = q.shape
    u = (q + 8).to(torch.uint8)
    if K % 2:
        u = torch.cat([u, torch.full((1, N), 8, dtype=torch.uint8)])
    return u[0::2] | (u[1::2] << 4)


@pytest.mark.parametrize("dt", [DType.f32, DType.f16])
@pytest.mark.parametrize("bits,group", [(8, None), (4, 32), (4, None)])
def test_quant_matmul(dt: DType, bits: int, group: int | None) -> None:
    M, K, N = 19, 96, 45
    g = torch.Generator().manual_seed(bits)
    lo, hi = (-128, 127) if bits == 8 else (-8, 7)
    q = torch.randint(lo, hi + 1, (K, N), generator=g)
    G = group or K
    scale = (torch.rand(K // G, N, generator=g) * 0.05 + 0.01).to(TORCH[dt])
    x = torch.randn(M, K, generator=g).to(TORCH[dt])
    w = q.to(torch.int8) if bits == 8 else _pack_int4(q)
    mod = cache.load(emit_quant_matmul(QuantSpec(dt, bits)), interpret=True)
    got = mod.launch(x, w, scale)[0]
    deq = (q.float() * scale.float().repeat_interleave(G, 0)).to(TORCH[dt])
    close(got, (x.float() @ deq.float()).to(got.dtype), dt)


def test_pattern_in_ir() -> None:
    x = inp("x", (4, 16))
    w = constant(np.random.default_rng(0).integers(-128, 127, (16, 8)).astype(np.int8))
    s = constant(np.full((8,), 0.02, np.float32))
    mm = op("matmul", x.out, op("mul", op("cast", w, to=DType.f32), s))
    m = quant_pattern(mm.node)
    assert m is not None and m.weight == w and [a.op for a in m.absorbed] == ["cast", "mul"]
    assert quant_pattern(op("matmul", x.out, op("cast", w, to=DType.f32)).node) is None
