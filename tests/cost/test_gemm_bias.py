"""ONNX Runtime's CPU epilogues: a bias add joins a matmul only as Gemm's bias (a 2-D weight,
a bias over its columns); a batched matmul over per-head weights runs its add as a kernel."""
from __future__ import annotations

import numpy as np

from graphopt.cost.devices import get_device
from graphopt.cost.model import CostModel
from graphopt.ir.graph import Graph
from graphopt.ir.node import constant, input_node, op
from graphopt.ir.types import DType, TensorType

rng = np.random.default_rng(0)


def _c(*shape: int):  # type: ignore[no-untyped-def]
    return constant(rng.standard_normal(shape).astype(np.float32))


def test_bias_joins_a_2d_weight_matmul_only() -> None:
    cpu = CostModel(get_device("cpu"))
    x = input_node("x", TensorType((1, 8, 16), DType.f32))
    gemm = Graph([x], [op("add", op("matmul", x.out, _c(16, 12)), _c(12))])
    assert cpu.graph_cost(gemm).launches == 1
    x4 = op("reshape", x.out, shape=(1, 1, 8, 16))
    batched = Graph([x], [op("add", op("matmul", x4, _c(3, 16, 4)), _c(3, 1, 4))])
    assert cpu.graph_cost(batched).launches == 2
    # on a GPU target any same-shape pointwise op is an epilogue
    assert CostModel(get_device("h100")).graph_cost(batched).launches == 1
