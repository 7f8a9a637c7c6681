import numpy as np
import pytest
import torch

from graphopt.errors import GraphOptError
from graphopt.ir.graph import Graph
from graphopt.ir.interp import run
from graphopt.ir.node import input_node, op
from graphopt.ir.types import DType, TensorType


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
