"""Split-KV decode attention in the interpreter: one query row over a long cache, GQA, masks,
per-batch valid lengths, head dims 64 and 24."""
from __future__ import annotations

from typing import Any

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


def test_a_few_query_rows_with_a_row_mask() -> None:
    """The KV-cache decode graph's attention: s new rows over P + s keys, GQA, bool mask
    [B, 1, s, T] (causal from the past length, padding of row 1), a fully masked row gives 0."""
    B, H, Hkv, S, P, D = 2, 4, 2, 3, 70, 16
    T = P + S
    g = torch.Generator().manual_seed(5)
    q = torch.randn(B, H, S, D, generator=g)
    k, v = (torch.randn(B, Hkv, T, D, generator=g) for _ in range(2))
    keep = torch.arange(T)[None, :] <= (P + torch.arange(S))[:, None]
    pad = torch.ones(B, T, dtype=torch.bool)
    pad[1, :P + 1] = False  # row 1: its first query row sees no real key
    mask = keep[None, None] & pad[:, None, None, :]
    mod = cache.load(emit_decode_attention(AttnSpec(DType.f32, D, False, "bool")), interpret=True)
    got = mod.launch(q, k, v, mask)[0]
    want = _ref([q, k, v, mask])
    close(got, want, DType.f32)
    assert got[1, :, 0].abs().max() == 0


def test_decode_selection_rows() -> None:
    kv = inp("kv", (1, 2, "total", 16))
    few, many = inp("q", (1, 2, 4, 16)), inp("q9", (1, 2, 9, 16))
    new = inp("qs", (1, 2, "new", 16))

    def why(q: Any) -> str | None:
        return decode_unsupported(op("attention", q.out, kv.out, kv.out, scale=None,
                                     causal=False).node)

    assert why(few) is None and why(new) is None
    assert "at most" in why(many)
    assert "as many query rows as keys" in why(kv)
