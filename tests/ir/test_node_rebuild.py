"""``Node.with_inputs`` over inputs of the same types reuses the node's attrs and output types
(no inference): for every op's examples the result is the very node ``Node.build`` makes; other
types are inferred again; impure nodes stay unshared."""
from __future__ import annotations

import numpy as np
import pytest

from graphopt.errors import ShapeError
from graphopt.ir.node import Node, input_node, op
from graphopt.ir.types import DType, TensorType
from graphopt.ops.registry import all_ops, get_op

OPS = sorted(all_ops())


def _inputs(arrays: list[np.ndarray], tag: str) -> list[Node]:
    return [input_node(f"{tag}{k}", TensorType(tuple(a.shape), DType.from_numpy(a.dtype)))
            for k, a in enumerate(arrays)]


@pytest.mark.parametrize("name", OPS)
def test_rebuild_on_same_types_is_what_build_makes(name: str) -> None:
    opdef = get_op(name)
    exs = opdef.examples(np.random.default_rng(0))
    if not exs or not opdef.pure:
        pytest.skip(f"{name}: no examples or impure")
    for ex in exs:
        arrays = [np.asarray(a) for a in ex.inputs]
        n = Node.build(name, [i.out for i in _inputs(arrays, "a")], ex.attrs)
        other = [i.out for i in _inputs(arrays, "b")]  # same types, different nodes
        rebuilt = n.with_inputs(other)
        assert rebuilt is Node.build(name, other, n.attrs)  # same attrs, types: interned
        assert rebuilt.out_types == n.out_types and rebuilt.attrs == n.attrs


def test_same_types_do_not_infer(monkeypatch: pytest.MonkeyPatch) -> None:
    f32 = TensorType((2, 3), DType.f32)
    x, y = input_node("x", f32).out, input_node("y", f32).out
    n = op("add", x, x).node
    opdef = get_op("add")

    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("inferred again")

    monkeypatch.setattr(type(opdef), "checked_infer", refuse)
    m = n.with_inputs([y, y])
    assert m.inputs == (y, y) and m.out_types == n.out_types
    assert n.with_inputs([y, y]) is m  # found in the intern table


def test_other_types_are_inferred() -> None:
    x = input_node("x", TensorType((2, 3), DType.f32)).out
    z = input_node("z", TensorType((4, 3), DType.f32)).out
    n = op("relu", x).node
    assert n.with_inputs([z]).out_types == (TensorType((4, 3), DType.f32),)
    w = input_node("w", TensorType((4, 3), DType.i64)).out
    with pytest.raises(ShapeError):
        op("matmul", x, x).node.with_inputs([w, w])  # ill-typed: refused as build refuses


def test_impure_nodes_are_rebuilt_unshared() -> None:
    impure = [k for k in OPS if not get_op(k).pure and get_op(k).examples(
        np.random.default_rng(0))]
    if not impure:
        pytest.skip("no impure op with examples")
    ex = get_op(impure[0]).examples(np.random.default_rng(0))[0]
    arrays = [np.asarray(a) for a in ex.inputs]
    n = Node.build(impure[0], [i.out for i in _inputs(arrays, "a")], ex.attrs)
    other = [i.out for i in _inputs(arrays, "b")]
    a, b = n.with_inputs(other), n.with_inputs(other)
    assert a is not b and a.out_types == n.out_types and a.origin == n.origin
