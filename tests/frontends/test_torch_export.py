"""Tests of IR -> torch callable (graphopt.frontends.torch_export)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from graphopt import parse
from graphopt.errors import GraphOptError
from graphopt.frontends.fx import OUT_SPEC_KEY, tensor_to_const
from graphopt.frontends.fx_outputs import dumps_out_spec
from graphopt.frontends.torch_export import to_callable
from graphopt.ir.graph import Graph, GraphMeta
from graphopt.ir.node import constant, input_node, op
from graphopt.ir.types import DType, TensorType

TEXT = """graph main(%x: f32[2,3], %y: f32[2,3]) {
  %0: f32[2,3] = add(%x, %y)
  %1: f32[2,3] = relu(%0)
  %2: f32[2,3] = mul(%1, %x)
  return %2 as "z", %0 as "s"
}"""


def test_positional_and_keyword_inputs() -> None:
    f = to_callable(parse(TEXT))
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    z, s = f(x, y)
    torch.testing.assert_close(z, torch.relu(x + y) * x)
    torch.testing.assert_close(s, x + y)
    z2, _ = f(y=y, x=x)
    torch.testing.assert_close(z2, z)
    z3, _ = f(x, y=y)
    torch.testing.assert_close(z3, z)
    with torch.no_grad():
        z4, _ = f(x, y)
    assert not z4.requires_grad
    torch.testing.assert_close(z4, z)


def test_binding_errors_name_the_inputs() -> None:
    f = to_callable(parse(TEXT))
    x = torch.randn(2, 3)
    with pytest.raises(GraphOptError, match=r"missing inputs \['y'\]"):
        f(x)
    with pytest.raises(GraphOptError, match="no input 'w'"):
        f(x, x, w=x)
    with pytest.raises(GraphOptError, match="'x' given twice"):
        f(x, x, x=x)
    with pytest.raises(GraphOptError, match=r"input 'y' must be f32\[2,3\], got float64\[2, 3\]"):
        f(x, x.double())
    with pytest.raises(GraphOptError, match=r"input 'x' must be f32\[2,3\], got float32\[3, 3\]"):
        f(torch.randn(3, 3), x)


def test_constants_are_buffers_converted_once() -> None:
    x = input_node("x", TensorType((4,), DType.f32))
    w = np.arange(4, dtype=np.float32)
    out = op("mul", op("add", x.out, constant(w)), constant(np.float32(2.0)))
    g = Graph([x], [out])
    f = to_callable(g)
    bufs = dict(f.named_buffers())
    assert len(bufs) == 2
    first = next(iter(bufs.values()))
    r = f(torch.ones(4))
    assert isinstance(r, torch.Tensor)  # one output, no spec: a tensor
    torch.testing.assert_close(r, (torch.ones(4) + torch.from_numpy(w)) * 2)
    f(torch.ones(4))
    assert next(iter(dict(f.named_buffers()).values())) is first
    f.to(torch.float64)  # buffers follow .to(); inputs are then checked against the IR type
    with pytest.raises(GraphOptError, match="input 'x'"):
        f(torch.ones(4, dtype=torch.float64))


def test_bf16_constant() -> None:
    x = input_node("x", TensorType((3,), DType.bf16))
    c = torch.tensor([1.5, -2.0, 0.25], dtype=torch.bfloat16)
    out = op("mul", x.out, constant(tensor_to_const(c)))
    f = to_callable(Graph([x], [out]))
    got = f(torch.full((3,), 2.0, dtype=torch.bfloat16))
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, c * 2)


def test_output_structure_from_meta() -> None:
    from torch.utils import _pytree as pytree

    g = parse(TEXT)
    _, spec = pytree.tree_flatten({"z": 0, "rest": [0]})
    g = Graph(g.inputs, g.outputs, g.output_names,
              meta=GraphMeta(metadata=((OUT_SPEC_KEY, dumps_out_spec(spec)),)))
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    out = to_callable(g)(x, y)
    assert set(out) == {"z", "rest"}
    torch.testing.assert_close(out["rest"][0], x + y)


def test_runtime_error_names_the_node() -> None:
    x = input_node("x", TensorType((2, 3), DType.f32))
    g = Graph([x], [op("relu", x.out)])
    f = to_callable(g, check_inputs=False)
    with pytest.raises(GraphOptError, match=r"node relu #\d+.*inputs: complex64\[2, 3\]"):
        f(torch.ones(2, 3, dtype=torch.complex64))


def test_the_callable_is_a_torch_interpreter() -> None:
    """One node walk: the module is a TorchInterpreter; its inputs may be named anything."""
    from graphopt.ir.interp import TorchInterpreter

    g_in = input_node("g", TensorType((3,), DType.f32))
    b_in = input_node("backend", TensorType((3,), DType.f32))
    f = to_callable(Graph([g_in, b_in], [op("sub", g_in.out, b_in.out)]))
    assert isinstance(f, TorchInterpreter)
    a, b = torch.randn(3), torch.randn(3)
    torch.testing.assert_close(f(g=a, backend=b), a - b)
    torch.testing.assert_close(f.run(f.graph, {"g": a, "backend": b})[0], a - b)


def test_out_spec_round_trip_with_named_tuples() -> None:
    import collections

    from torch.utils import _pytree as pytree

    from graphopt.errors import FrontendError
    from graphopt.frontends.fx_outputs import loads_out_spec

    Pair = collections.namedtuple("Pair", "a b")
    x = torch.randn(2, 4)
    tree = {"k": torch.topk(x, 2), "rest": [Pair(x, (x,)), torch.linalg.lu_factor_ex(x @ x.T)]}
    leaves, spec = pytree.tree_flatten(tree)
    back = loads_out_spec(dumps_out_spec(spec))
    assert back == spec
    rebuilt = pytree.tree_unflatten(leaves, back)
    assert type(rebuilt["k"]) is torch.return_types.topk
    assert type(rebuilt["rest"][0]) is Pair and type(rebuilt["rest"][1]).__name__ == \
        "linalg_lu_factor_ex"
    with pytest.raises(FrontendError, match="unknown format"):
        loads_out_spec('[1, {"type": "builtins.tuple"}]')


def test_structure_diff_names_the_first_difference() -> None:
    from graphopt.frontends.fx_outputs import structure_diff

    x = torch.randn(3, 2)
    t = torch.topk(x, 1)
    assert structure_diff(t, torch.return_types.topk((t.values, t.indices))) is None
    assert "is a builtins.tuple, expected a torch.return_types.topk" in \
        structure_diff(t, tuple(t))
    assert "output.indices has dtype torch.int32" in structure_diff(
        t, torch.return_types.topk((t.values, t.indices.int())))
    assert "output[1] has shape [], expected [1]" in structure_diff(
        [x, x[0, :1]], [x, x[0, 0]])
    assert "keys ['b', 'a']" in structure_diff({"a": x, "b": x}, {"b": x, "a": x})
    assert "3 items, expected 2" in structure_diff((x, x), (x, x, x))
    assert "layout" in structure_diff(x, x.to_sparse())
    assert "is a numpy.ndarray" in structure_diff(x, x.numpy())
    assert structure_diff((1, float("nan")), (1, float("nan"))) is None
    assert "is 2, expected 1" in structure_diff((1,), (2,))


def test_check_torch_refuses_a_different_structure() -> None:
    """The candidate computes the right values but returns a tuple where the module returns a
    list: a CheckError naming the difference."""
    from graphopt.check import check_torch
    from graphopt.errors import CheckError
    from graphopt.frontends.fx import from_module

    class AsTuple(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple:
            return x + 1, torch.relu(x)

    class AsList(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> list:
            return [x + 1, torch.relu(x)]

    x = torch.randn(4)
    g = from_module(AsTuple(), (x,))
    check_torch(AsTuple(), g, (x,))
    with pytest.raises(CheckError, match="output is a builtins.tuple, expected a builtins.list"):
        check_torch(AsList(), g, (x,))


def test_check_torch_runs_both_from_one_rng_state() -> None:
    """Random ops called in the same order agree: both sides start from the seeded RNG, and the
    caller's RNG state is left as it was."""
    from graphopt.check import check_torch
    from graphopt.frontends.fx import from_module

    class Noisy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.randn_like(x)

    x = torch.randn(16)
    g = from_module(Noisy(), (x,))
    state = torch.get_rng_state()
    res = check_torch(Noisy(), g, (x,), seed=3)
    assert res.ok and torch.equal(torch.get_rng_state(), state)
