import numpy as np
import pytest

from graphopt.errors import VerifyError
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node, constant, input_node, op
from graphopt.ir.types import DType, TensorType
from graphopt.ir.verify import verify

T = TensorType((2, 2), DType.f32)


def test_clean_graph_verifies() -> None:
    x = input_node("x", T)
    verify(Graph([x], [op("relu", op("add", x.out, constant(np.ones((2, 2), np.float32))))]))


def test_stray_input_is_reported_with_context() -> None:
    x = input_node("x", T)
    y = input_node("y", T)
    g = Graph([x], [op("add", x.out, y.out)])
    with pytest.raises(VerifyError, match="not a graph input"):
        verify(g)


def test_tampered_types_are_caught() -> None:
    x = input_node("x", T)
    r = op("relu", x.out)
    g = Graph([x], [op("relu", r)])
    object.__setattr__(r.node, "out_types", (TensorType((3, 3), DType.f32),))
    with pytest.raises(VerifyError) as e:
        verify(g)
    assert "relu" in str(e.value) and ">>" in str(e.value)
    assert isinstance(r.node, Node)
