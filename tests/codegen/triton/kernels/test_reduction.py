"""Row reductions (softmax, log_softmax, layer_norm, rms_norm) with fused prologue and epilogue,
in the interpreter: fp32 and fp16, rows that need masking, several rows per program."""
from __future__ import annotations

import pytest

from graphopt.codegen.triton import cache
from graphopt.codegen.triton.kernels.reduction import emit_reduction, reduction_unsupported
from graphopt.codegen.triton.region import Region
from graphopt.ir.node import op
from graphopt.ir.types import DType
from tests.codegen.helpers import args_for, close, inp, rand, reference

SHAPE = (3, 5, 37)


def _build(kind: str, dt: DType, shape: tuple = SHAPE, axis: int | None = None):
    a, r = inp("a", shape, dt), inp("r", shape, dt)
    n = shape[-1]
    x = op("add", a.out, r.out)  # prologue (also stored: a residual stream)
    ax = len(shape) - 1 if axis is None else axis
    params = []
    if kind in ("layer_norm", "rms_norm"):
        pshape = shape[ax:]
        s = inp("s", pshape, dt)
        params.append(s)
        if kind == "layer_norm":
            params.append(inp("b", pshape, dt))
        red = op(kind, x, *[p.out for p in params], axis=ax, epsilon=1e-5)
    else:
        red = op(kind, x, axis=ax)
    y = op("mul", op("relu", red), a.out)  # epilogue
    nodes = [x.node, red.node, y.node.inputs[0].node, y.node]
    return [a, r, *params], Region("reduction", nodes, [x, y], red.node, shape), [x, y], n


@pytest.mark.parametrize("dt", [DType.f32, DType.f16])
@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "layer_norm", "rms_norm"])
def test_reduction_with_prologue_and_epilogue(kind: str, dt: DType) -> None:
    ins, region, outs, _ = _build(kind, dt)
    ks = emit_reduction(region)
    mod = cache.load(ks, interpret=True)
    feeds = {id(n): rand(n.out_types[0].shape, dt, i + 1) for i, n in enumerate(ins)}
    for cfg in mod.CONFIGS[:2]:  # one and several rows per program
        got = mod.launch(*args_for(ks.inputs, feeds), config=cfg)
        for g, w in zip(got, reference(outs, feeds)):
            close(g, w, dt)


def test_layer_norm_over_two_trailing_dims() -> None:
    ins, region, outs, _ = _build("layer_norm", DType.f32, (4, 3, 10), axis=1)
    ks = emit_reduction(region)
    mod = cache.load(ks, interpret=True)
    feeds = {id(n): rand(n.out_types[0].shape, DType.f32, i) for i, n in enumerate(ins)}
    got = mod.launch(*args_for(ks.inputs, feeds))
    for g, w in zip(got, reference(outs, feeds)):
        close(g, w, DType.f32)


def test_unsupported_reasons() -> None:
    x = inp("x", (4, 6))
    assert "last axis" in reduction_unsupported(op("softmax", x.out, axis=0).node)
    y = inp("y", (2, "n"))
    assert "symbolic" in reduction_unsupported(op("softmax", y.out, axis=1).node)
    assert reduction_unsupported(op("softmax", x.out, axis=1).node) is None
