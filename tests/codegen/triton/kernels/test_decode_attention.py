"""Split-KV decode attention in the interpreter: one query row over a long cache, GQA, masks,
per-batch valid lengths, head dims 64 and 24."""
from __future__ import annotations

import pytest
import torch

from graphopt.codegen.triton import cache
from graphopt.codegen.triton.kernels.decode_attention import (decode_unsupported,
                                                              emit_decode_attention)
from graphopt.codegen.triton.kernels.flash_attention import AttnSpec
from graphopt.ir.node import Attrs, op
from graphopt.ir.types import DType
from graphopt.ops.registry import get_op
from tests.codegen.helpers import TORCH, close, inp


def _ref(xs: list[torch.Tensor]) -> torch.Tensor:
    return get_op("attention").torch([x if x.dtype == torch.bool else x.float() for x in xs],
                                     Attrs({"scale": None, "causal": False}))[0]


@pytest.mark.parametrize("dt", [DType.f32, DType.f16])
@pytest.mark.parametrize("D,Hkv,mask", [(64, 2, "none"), (24, 1, "bool"), (64, 4, "additive")])
def test_decode(dt: DType, D: int, Hkv: int, mask: str) -> None:
    B, H, T = 2, 4, 203
    g = torch.Generator().manual_seed(D + Hkv)
    t = TORCH[dt]
    xs = [torch.randn(B, H, 1, D, generator=g).to(t), torch.randn(B, Hkv, T, D, generator=g).to(t),
          torch.randn(B, Hkv, T, D, generator=g).to(t)]
    if mask == "bool":
        xs.append(torch.rand(B, 1, 1, T, generator=g) > 0.5)
    elif mask == "additive":
        xs.append(torch.randn(B, H, 1, T, generator=g).to(t))
    mod = cache.load(emit_decode_attention(AttnSpec(dt, D, False, mask)), interpret=True)
    for cfg in mod.CONFIGS[:2]:
        got = mod.launch(*xs, config=cfg)[0]
        close(got, _ref(xs).to(got.dtype), dt)


def test_kv_len_reads_only_the_filled_cache() -> None:
    B, H, T, D = 2, 2, 150, 64
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, n, D, generator=g) for n in (1, T, T))
    lens = torch.tensor([150, 77], dtype=torch.int32)
    k[1, :, 77:] = float("nan")  # garbage past the valid length must not be read into the result
    v[1, :, 77:] = float("nan")
    mod = cache.load(emit_decode_attention(AttnSpec(DType.f32, D)), interpret=True)
    got = mod.launch(q, k, v, kv_len=lens)[0]
    close(got[0:1], _ref([q[0:1], k[0:1], v[0:1]]), DType.f32)
    close(got[1:2], _ref([q[1:2], k[1:2, :, :77], v[1:2, :, :77]]), DType.f32)


def test_decode_selection() -> None:
    q, kv = inp("q", (1, 2, 1, 64)), inp("kv", (1, 2, 128, 64))
    assert decode_unsupported(op("attention", kv.out, kv.out, kv.out, scale=None,
                                 causal=False).node) is not None
    assert decode_unsupported(op("attention", q.out, kv.out, kv.out, scale=None,
                                 causal=False).node) is None
    assert "causal" in decode_unsupported(op("attention", q.out, kv.out, kv.out, scale=None,
                                             causal=True).node)
