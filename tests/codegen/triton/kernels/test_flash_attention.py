"""Flash attention in the interpreter against the attention op's reference: fp32/fp16, causal,
GQA, bool and additive masks (with fully masked rows), head dims 64, 16 and 24 (masked)."""
from __future__ import annotations

import pytest
import torch

from graphopt.codegen.triton import cache
from graphopt.codegen.triton.kernels.flash_attention import (AttnSpec, attention_unsupported,
                                                             emit_flash_attention)
from graphopt.ir.node import Attrs, op
from graphopt.ir.types import DType
from graphopt.ops.registry import get_op
from tests.codegen.helpers import TORCH, close, inp

CASES = [  # B, H, Hkv, S, T, D, causal, mask
    (1, 2, 2, 37, 37, 64, False, "none"),
    (2, 4, 2, 19, 23, 16, True, "none"),
    (1, 2, 1, 17, 29, 24, False, "bool"),
    (2, 2, 2, 9, 70, 64, True, "additive"),
    (1, 4, 1, 70, 70, 64, True, "bool"),
]


def _inputs(case: tuple, dt: DType) -> list[torch.Tensor]:
    B, H, Hkv, S, T, D, causal, mask = case
    g = torch.Generator().manual_seed(S * T)
    t = TORCH[dt]
    xs = [torch.randn(B, H, S, D, generator=g).to(t), torch.randn(B, Hkv, T, D, generator=g).to(t),
          torch.randn(B, Hkv, T, D, generator=g).to(t)]
    if mask == "bool":
        m = torch.rand(B, 1, S, T, generator=g) > 0.3
        m[0, 0, 3, :] = False  # a row with every key masked: zeros
        xs.append(m)
    elif mask == "additive":
        m = torch.randn(1, 1, S, T, generator=g).to(t)
        m[0, 0, 2, :] = float("-inf")
        xs.append(m)
    return xs


@pytest.mark.parametrize("dt", [DType.f32, DType.f16])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[6] and 'causal' or 'full'}-{c[7]}-d{c[5]}-"
                                              f"gqa{c[1] // c[2]}" for c in CASES])
def test_flash_attention(case: tuple, dt: DType) -> None:
    causal, mask = case[6], case[7]
    mod = cache.load(emit_flash_attention(AttnSpec(dt, case[5], causal, mask)), interpret=True)
    xs = _inputs(case, dt)
    got = mod.launch(*xs)[0]
    ref = get_op("attention").torch([x if x.dtype == torch.bool else x.float() for x in xs],
                                    Attrs({"scale": None, "causal": causal}))[0]
    close(got, ref.to(got.dtype), dt)
    if mask != "none":  # the fully masked row is zeros, like the reference
        row = 3 if mask == "bool" else 2
        assert torch.all(got[0, 0, row] == 0)


def test_explicit_scale_and_block_sizes() -> None:
    case = (1, 2, 2, 33, 45, 64, False, "none")
    mod = cache.load(emit_flash_attention(AttnSpec(DType.f32, 64, False, "none", 0.3)),
                     interpret=True)
    xs = _inputs(case, DType.f32)
    ref = get_op("attention").torch(xs, Attrs({"scale": 0.3, "causal": False}))[0]
    for cfg in mod.CONFIGS[:4]:
        close(mod.launch(*xs, config=cfg)[0], ref, DType.f32)


def test_source_is_specialized() -> None:
    a = emit_flash_attention(AttnSpec(DType.f16, 128, True, "none")).source
    b = emit_flash_attention(AttnSpec(DType.f16, 128, False, "bool")).source
    assert "rn[None, :] <= rm[:, None]" in a and "tl.minimum(T, (pid_m + 1) * BLOCK_M)" in a
    assert "Mk" in b and "<= rm" not in b
    assert "tl.exp2" in a and "acc / l_i" in a  # online softmax, normalized once at the end


def test_unsupported() -> None:
    q = inp("q", (1, 2, 4, 8), DType.f64)
    n = op("attention", q.out, q.out, q.out, scale=None, causal=False).node
    assert "f16/bf16/f32 only" in attention_unsupported(n)
    assert "not attention" in attention_unsupported(op("neg", q.out).node)
