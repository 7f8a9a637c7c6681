"""Matmul with fused epilogues in the interpreter: 2-D, folded leading dims, batched, transposed
weights read by stride, fp32 and fp16, odd sizes."""
from __future__ import annotations

import pytest


from graphopt.codegen.triton import cache
from graphopt.codegen.triton.kernels.matmul import emit_matmul, matmul_unsupported
from graphopt.codegen.triton.region import Region
from graphopt.ir.node import op
from graphopt.ir.types import DType
from tests.codegen.helpers import args_for, close, inp, rand, reference


@pytest.mark.parametrize("dt", [DType.f32, DType.f16])
def test_bias_gelu_residual_epilogue(dt: DType) -> None:
    a, w, b, res = inp("a", (2, 17, 70), dt), inp("w", (70, 47), dt), inp("b", (47,), dt), \
        inp("res", (2, 17, 47), dt)
    mm = op("matmul", a.out, w.out)
    y1 = op("add", mm, b.out)
    y2 = op("gelu", y1, approximate="none")
    y3 = op("add", y2, res.out)
    region = Region("matmul", [mm.node, y1.node, y2.node, y3.node], [y1, y3], mm.node,
                    (2, 17, 47))
    ks = emit_matmul(region)
    mod = cache.load(ks, interpret=True)
    tw = rand((47, 70), dt, 2).t()  # transposed weight: read by stride, no copy
    feeds = {id(a): rand((2, 17, 70), dt, 1), id(w): tw, id(b): rand((47,), dt, 3),
             id(res): rand((2, 17, 47), dt, 4)}
    got = mod.launch(*args_for(ks.inputs, feeds))
    want = reference([y1, y3], {k: v.float() for k, v in feeds.items()})
    for g, w_ in zip(got, want):
        close(g, w_.to(g.dtype), dt)


@pytest.mark.parametrize("dt", [DType.f32, DType.f16])
def test_batched(dt: DType) -> None:
    a, b = inp("a", (2, 3, 9, 40), dt), inp("b", (2, 3, 40, 33), dt)
    mm = op("matmul", a.out, b.out)
    ks = emit_matmul(Region("matmul", [mm.node], [mm], mm.node, (2, 3, 9, 33)))
    mod = cache.load(ks, interpret=True)
    ta, tb = rand((2, 3, 9, 40), dt, 1), rand((2, 3, 40, 33), dt, 2)
    got = mod.launch(ta, tb)[0]
    close(got, (ta.float() @ tb.float()).to(got.dtype), dt)


@pytest.mark.parametrize("ash,bsh", [((2, 1, 9, 40), (3, 40, 33)),  # per-head weights
                                     ((9, 40), (3, 40, 33)),
                                     ((2, 3, 9, 40), (1, 40, 33)),
                                     ((2, 2, 3, 9, 40), (3, 40, 33))])  # three batch levels
def test_broadcast_batch_dims(ash: tuple[int, ...], bsh: tuple[int, ...]) -> None:
    dt = DType.f32
    a, w, bias = inp("a", ash, dt), inp("w", bsh, dt), inp("bias", (33,), dt)
    mm = op("matmul", a.out, w.out)
    y = op("add", mm, bias.out)
    shape = mm.type.shape  # type: ignore[union-attr]
    assert matmul_unsupported(mm.node) is None
    ks = emit_matmul(Region("matmul", [mm.node, y.node], [y], mm.node, shape))
    mod = cache.load(ks, interpret=True)
    ta, tw, tb = rand(ash, dt, 1), rand(bsh, dt, 2), rand((33,), dt, 3)
    got = mod.launch(*args_for(ks.inputs, {id(a): ta, id(w): tw, id(bias): tb}))[0]
    assert tuple(got.shape) == tuple(shape)
    close(got, ta @ tw + tb, dt)


def test_unsupported() -> None:
    a = inp("a", (2, 3, 4), DType.f32)
    v = inp("v", (4,), DType.f32)
    assert "1-D" in matmul_unsupported(op("matmul", a.out, v.out).node)
    i = inp("i", (3, 4), DType.i64)
    j = inp("j", (4, 2), DType.i64)
    assert "float operands" in matmul_unsupported(op("matmul", i.out, j.out).node)
