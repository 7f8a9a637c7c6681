from typing import Any, Sequence

import numpy as np
import pytest
import torch

from graphopt.errors import GraphOptError, ShapeError
from graphopt.ir.graph import Graph
from graphopt.ir.interp import Env, NumpyInterpreter, run
from graphopt.ir.node import Node, constant, input_node, op
from graphopt.ir.types import DType, TensorType
from graphopt.ops.registry import OpDef


def _g() -> Graph:
    x = input_node("x", TensorType((3,), DType.f32))
    y = input_node("y", TensorType((3,), DType.f32))
    return Graph([x, y], [op("relu", op("add", x.out, y.out))])


def test_numpy_and_torch_backends_agree() -> None:
    a = np.array([1, -2, 3], np.float32)
    b = np.array([-4, 1, 0], np.float32)
    ref = run(_g(), a, b)[0]
    np.testing.assert_allclose(ref, [0, 0, 3])
    got = run(_g(), torch.from_numpy(a), y=torch.from_numpy(b), backend="torch")[0]
    np.testing.assert_allclose(got.numpy(), ref)


def test_missing_inputs_are_named() -> None:
    with pytest.raises(GraphOptError, match="y"):
        run(_g(), np.zeros(3, np.float32))


def _named(*names: str) -> Graph:
    ins = [input_node(n, TensorType((3,), DType.f32)) for n in names]
    out = ins[0].out
    for i in ins[1:]:
        out = op("sub", out, i.out)
    return Graph(ins, [out])


def test_inputs_named_like_runs_parameters() -> None:
    """Graph inputs named g, backend or inputs: g goes by keyword, all go in inputs=."""
    a, b, c = (np.array([1, 2, 3], np.float32) * k for k in (5, 2, 1))
    g = _named("g", "backend", "inputs")
    want = a - b - c
    np.testing.assert_array_equal(run(g, inputs={"g": a, "backend": b, "inputs": c})[0], want)
    np.testing.assert_array_equal(run(g, inputs=[a, b, c])[0], want)
    np.testing.assert_array_equal(run(g, a, b, c)[0], want)
    np.testing.assert_array_equal(run(_named("g", "x"), g=a, x=b)[0], a - b)
    with pytest.raises(GraphOptError, match="input named 'backend'"):
        run(g, g=a, backend=b, inputs=c)
    with pytest.raises(GraphOptError, match="input named 'inputs'"):
        run(_named("g", "inputs"), g=a, inputs=c)


def test_interpreter_takes_a_mapping_or_a_sequence() -> None:
    a = np.array([1, -2, 3], np.float32)
    b = np.array([-4, 1, 0], np.float32)
    ref = NumpyInterpreter().run(_g(), {"x": a, "y": b})[0]
    np.testing.assert_array_equal(NumpyInterpreter().run(_g(), (a, b))[0], ref)
    with pytest.raises(GraphOptError, match="has no input 'z'"):
        NumpyInterpreter().run(_g(), {"x": a, "y": b, "z": b})
    with pytest.raises(TypeError, match="mapping by name or a list"):
        NumpyInterpreter().run(_g(), a)


def test_errors_name_the_node_and_its_inputs() -> None:
    class Failing(NumpyInterpreter):
        def call_op(self, n: Node, opdef: OpDef, args: Sequence[Any]) -> Sequence[Any]:
            if n.op == "relu":
                raise RuntimeError("boom")
            return super().call_op(n, opdef, args)

    a = np.zeros(3, np.float32)
    with pytest.raises(GraphOptError, match=r"node relu #\d+: RuntimeError: boom "
                                            r"\(inputs: float32\[3\]\)"):
        Failing().run(_g(), [a, a])


def test_hooks_and_value_lifetimes() -> None:
    """A subclass sees every node through its hooks; a value is dropped after its last reader."""
    x = input_node("x", TensorType((3,), DType.f32))
    c = constant(np.ones(3, np.float32))
    h = op("add", op("relu", x.out), c)
    g = Graph([x], [op("mul", h, h)])
    seen: list[str] = []
    env_sizes: list[int] = []

    class Tracing(NumpyInterpreter):
        def placeholder(self, n: Node, value: Any) -> Any:
            seen.append(f"input {n.attrs['name']}")
            return value

        def constant(self, n: Node) -> Any:
            seen.append("constant")
            return n.const.array

        def call_op(self, n: Node, opdef: OpDef, args: Sequence[Any]) -> Sequence[Any]:
            seen.append(n.op)
            return super().call_op(n, opdef, args)

        def store(self, env: Env, n: Node, outs: Sequence[Any]) -> None:  # type: ignore[override]
            super().store(env, n, outs)
            env_sizes.append(len(env))

    it = Tracing()
    (got,) = it.run(g, [np.array([-1, 0, 2], np.float32)])
    np.testing.assert_array_equal(got, [1, 1, 9])
    assert seen[0] == "input x" and sorted(seen[1:]) == ["add", "constant", "mul", "relu"]
    assert max(env_sizes) <= 3  # x and the constant are gone once add has read them


def test_symbols_bound_from_the_inputs() -> None:
    x = input_node("x", TensorType(("b", 6), DType.f32))
    g = Graph([x], [op("reshape", x.out, shape=("b", 2, 3))])
    a = np.arange(12, dtype=np.float32).reshape(2, 6)
    assert run(g, a)[0].shape == (2, 2, 3)
    assert tuple(run(g, torch.from_numpy(a), backend="torch")[0].shape) == (2, 2, 3)
    with pytest.raises(ShapeError, match="graph main: input of type"):
        run(g, a.reshape(-1))
