"""Every op's Triton expression (``OpDef.triton_format`` / ``triton_expr``), run as a one-node
kernel in the interpreter, against the op's own torch semantics (so the kernels and the op
catalog cannot drift apart)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from graphopt.codegen.triton import cache
from graphopt.codegen.triton.exprs import fusible
from graphopt.codegen.triton.kernels.pointwise import emit_pointwise
from graphopt.codegen.triton.region import Region
from graphopt.ir.node import Node, constant, op
from graphopt.ir.types import DType
from graphopt.ops.registry import all_ops
from tests.codegen.helpers import close, inp, rand, reference

SHAPE = (3, 5)
POSITIVE = {"log", "sqrt", "rsqrt", "pow"}
ATTRS: dict[str, dict] = {"leaky_relu": {"alpha": 0.1}, "elu": {"alpha": 0.7},
                          "hard_sigmoid": {"alpha": 0.2, "beta": 0.5},
                          "clip": {"min": -0.5, "max": 0.75}, "gelu": {"approximate": "none"}}


def _case(name: str) -> tuple[Node, list[Node], list[torch.Tensor]]:
    """(node, input nodes, input tensors); a second operand broadcasts along dim 0."""
    logical = name in ("and", "or", "xor", "not")
    dt = DType.bool if logical else DType.f32
    a = inp("a", SHAPE, dt)
    ta = rand(SHAPE, dt, 1, positive=name in POSITIVE)
    if name == "where":
        c, b = inp("c", SHAPE, DType.bool), inp("b", (5,))
        n = op("where", c.out, a.out, b.out).node
        return n, [c, a, b], [rand(SHAPE, DType.bool, 3), ta, rand((5,), DType.f32, 2)]
    if name == "pow":
        return op("pow", a.out, constant(np.float32(3.0))).node, [a], [ta]
    if name == "cast":
        return op("cast", a.out, to=DType.f16).node, [a], [ta]
    if name in ("add", "sub", "mul", "div", "maximum", "minimum", "equal", "less", "less_equal",
                "greater", "greater_equal", "and", "or", "xor"):
        b = inp("b", (5,), dt)
        tb = rand((5,), dt, 2)
        if name == "equal":
            tb = ta[1].clone()
        return op(name, a.out, b.out).node, [a, b], [ta, tb]
    return op(name, a.out, **ATTRS.get(name, {})).node, [a], [ta]


GENERATED = sorted(name for name, op in all_ops().items() if op.has_triton_expr)


@pytest.mark.parametrize("name", GENERATED)
def test_emitter_matches_op_semantics(name: str) -> None:
    n, ins, ts = _case(name)
    assert fusible(n) is None, fusible(n)
    r = Region("pointwise", [n], [n.outputs[0]], None, tuple(n.out_types[0].shape))
    ks = emit_pointwise(r)
    mod = cache.load(ks, interpret=True)
    feeds = {id(i): t for i, t in zip(ins, ts)}
    got = mod.launch(*[feeds[id(v.node)] for v in ks.inputs])[0]
    want = reference([n.outputs[0]], feeds)[0]
    out_dt = n.out_types[0].dtype
    if out_dt == DType.bool:
        assert torch.equal(got, want)
    else:
        close(got, want, DType.f16 if out_dt == DType.f16 else DType.f32)


def test_fusible_reasons() -> None:
    a = inp("a", (4,), DType.i64)
    assert "dtype i64" in fusible(op("neg", a.out).node)
    x = inp("x", (4,))
    assert "no Triton expression" in fusible(op("reshape", x.out, shape=(2, 2)).node)
    assert "pow exponent" in fusible(op("pow", x.out, constant(np.float32(2.7))).node)
    assert fusible(op("pow", x.out, constant(np.float32(2.0))).node) is None
