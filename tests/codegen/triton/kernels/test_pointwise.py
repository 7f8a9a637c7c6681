"""Fused pointwise kernels in the interpreter: chains with broadcasting, several outputs, fp32 and
fp16, sizes that need masking, strided inputs and symbolic dims."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from graphopt.codegen.triton import cache
from graphopt.codegen.triton.kernels.pointwise import emit_pointwise
from graphopt.codegen.triton.region import Region
from graphopt.ir.node import constant, op
from graphopt.ir.types import DType
from tests.codegen.helpers import args_for, TORCH, close, inp, rand, reference


def _chain(dt: DType, shape: tuple, bshape: tuple):
    a, b = inp("a", shape, dt), inp("b", bshape, dt)
    c = constant(np.linspace(-1, 1, shape[-1]).astype(dt.to_numpy()))
    x = op("add", a.out, b.out)
    y = op("mul", x, c)
    z = op("tanh", y)
    w = op("gelu", op("sub", z, x), approximate="tanh")
    return (a, b), [x.node, y.node, z.node, w.node.inputs[0].node, w.node], [x, w]


@pytest.mark.parametrize("dt", [DType.f32, DType.f16])
@pytest.mark.parametrize("shape,bshape", [((3, 5, 7), (5, 1)), ((1031,), (1,)),
                                          ((2, 600), (2, 1))])
def test_chain_two_outputs(dt: DType, shape: tuple, bshape: tuple) -> None:
    (a, b), nodes, outs = _chain(dt, shape, bshape)
    ks = emit_pointwise(Region("pointwise", nodes, outs, None, shape))
    assert "@triton.jit" in ks.source and "def launch(" in ks.source
    mod = cache.load(ks, interpret=True)
    feeds = {id(a): rand(shape, dt, 1), id(b): rand(bshape, dt, 2)}
    got = mod.launch(*args_for(ks.inputs, feeds))
    want = reference(outs, feeds)
    for g, w in zip(got, want):
        close(g, w, dt)


def test_strided_input_and_symbolic_dims() -> None:
    a, b = inp("a", ("n", 6)), inp("b", (6,))
    x = op("mul", op("add", a.out, b.out), b.out)
    r = Region("pointwise", [x.node.inputs[0].node, x.node], [x], None, ("n", 6))
    ks = emit_pointwise(r)
    assert "torch.broadcast_shapes" in ks.source  # the index space comes from the inputs
    mod = cache.load(ks, interpret=True)
    ta = torch.randn(6, 9).t()  # a transposed view: [9, 6], not contiguous
    tb = torch.randn(6)
    got = mod.launch(*[{id(a): ta, id(b): tb}[id(v.node)] for v in ks.inputs])[0]
    close(got, (ta + tb) * tb, DType.f32)


def test_same_region_same_file() -> None:
    (_, _), nodes, outs = _chain(DType.f32, (4, 4), (4, 1))
    k1 = emit_pointwise(Region("pointwise", nodes, outs, None, (4, 4)))
    k2 = emit_pointwise(Region("pointwise", nodes, outs, None, (4, 4)))
    assert k1.name == k2.name and k1.name.startswith("pointwise_")
    assert cache.write(k1).name == f"{k1.name}.py"


def test_bool_mask_chain() -> None:
    m1, m2 = inp("m1", (2, 1, 8), DType.bool), inp("m2", (1, 8, 8), DType.bool)
    x = op("and", m1.out, m2.out)
    ks = emit_pointwise(Region("pointwise", [x.node], [x], None, (2, 8, 8)))
    mod = cache.load(ks, interpret=True)
    t1, t2 = rand((2, 1, 8), DType.bool, 1), rand((1, 8, 8), DType.bool, 2)
    got = mod.launch(t1, t2)[0]
    assert got.dtype == TORCH[DType.bool] and torch.equal(got, t1 & t2)
