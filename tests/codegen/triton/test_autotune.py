"""Autotuning: signatures, the per-device cache file, choice of the fastest config."""
from __future__ import annotations

import types

import pytest
import torch

from graphopt.codegen.triton.autotune import Autotuner, signature


def test_signature_depends_on_shape_dtype_strides() -> None:
    a = torch.zeros(4, 6)
    assert signature([a]) != signature([a.t()])
    assert signature([a]) != signature([a.half()])
    assert signature([a, 3]) == signature([torch.ones(4, 6), 3])


def test_cached_choice_is_reused(tmp_path, monkeypatch) -> None:
    calls: list[int] = []
    mod = types.SimpleNamespace(CONFIGS=[{"B": 1}, {"B": 2}], __name__="fake")

    def tune(self, module, args):  # noqa: ANN001 - stands in for GPU timing
        calls.append(1)
        return module.CONFIGS[1]

    monkeypatch.setattr(Autotuner, "tune", tune)
    t = Autotuner("Fake GPU", tmp_path / "fake.json")
    assert t.config("k", mod, [torch.zeros(2)]) == {"B": 2}
    assert t.config("k", mod, [torch.zeros(2)]) == {"B": 2}
    assert len(calls) == 1
    t2 = Autotuner("Fake GPU", tmp_path / "fake.json")  # read back from the file
    assert t2.config("k", mod, [torch.zeros(2)]) == {"B": 2} and len(calls) == 1


@pytest.mark.gpu
def test_tune_on_gpu() -> None:
    from graphopt.codegen.triton import cache
    from graphopt.codegen.triton.kernels.flash_attention import AttnSpec, emit_flash_attention
    from graphopt.ir.types import DType

    mod = cache.load(emit_flash_attention(AttnSpec(DType.f16, 64)), interpret=False)
    q = torch.randn(1, 2, 256, 64, device="cuda", dtype=torch.float16)
    cfg = Autotuner(torch.cuda.get_device_name()).tune(mod, [q, q, q])
    assert cfg in mod.CONFIGS
