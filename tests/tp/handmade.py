"""Rank programs built by hand for a world of 2 (or more) ranks, with their numpy references.

``mlp_programs``: a Megatron MLP (column-split W1, relu, row-split W2, one all_reduce, then a
replicated bias) and a reduce_scatter of a row-split matmul whose blocks are summed and
all-reduced. ``gather_programs``: a column-split matmul whose blocks an all_gather concatenates.
Each returns (rank programs, global weights, reference(x) -> {output name: array}).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.node import constant, input_node, op
from graphopt.ir.types import DType, TensorType

IN, FFN, OUT3, OUT_G = 8, 16, 8, 8  # each divides by 2 and 4
X_TYPE = TensorType(("b", IN), DType.f32)

Reference = Callable[[np.ndarray], dict[str, np.ndarray]]


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    r = np.random.default_rng(seed)
    return {"w1": r.standard_normal((IN, FFN)).astype(np.float32),
            "w2": r.standard_normal((FFN, IN)).astype(np.float32),
            "b2": r.standard_normal((IN,)).astype(np.float32),
            "w3": r.standard_normal((IN, OUT3)).astype(np.float32),
            "wg": r.standard_normal((IN, OUT_G)).astype(np.float32)}


def block(w: np.ndarray, axis: int, rank: int, world: int) -> np.ndarray:
    """Rank ``rank``'s block of ``w`` along ``axis`` (a copy: a rank owns its shard)."""
    return np.ascontiguousarray(np.split(w, world, axis=axis)[rank])


def mlp_program(w: dict[str, np.ndarray], rank: int, world: int) -> Graph:
    x_in = input_node("x", X_TYPE)
    x = x_in.out
    h = op("relu", op("matmul", x, constant(block(w["w1"], 1, rank, world))))
    y = op("add", op("all_reduce", op("matmul", h, constant(block(w["w2"], 0, rank, world))),
                     world_size=world), constant(w["b2"]))
    xs = op("shard", x, axis=1, rank=rank, world_size=world)
    part = op("matmul", xs, constant(block(w["w3"], 0, rank, world)))
    mine = op("reduce_scatter", part, world_size=world, axis=1)
    z = op("all_reduce", op("reduce_sum", mine, axes=(1,), keepdims=False), world_size=world)
    return Graph([x_in], [y, z], ["y", "z"], name=f"mlp_rank{rank}")


def mlp_programs(world: int = 2, seed: int = 0) -> tuple[list[Graph], dict[str, np.ndarray],
                                                         Reference]:
    w = weights(seed)

    def reference(x: np.ndarray) -> dict[str, np.ndarray]:
        y = np.maximum(x @ w["w1"], 0) @ w["w2"] + w["b2"]
        return {"y": y, "z": (x @ w["w3"]).sum(axis=1)}

    return [mlp_program(w, r, world) for r in range(world)], w, reference


def gather_programs(world: int = 2, seed: int = 0) -> tuple[list[Graph], dict[str, np.ndarray],
                                                            Reference]:
    w = weights(seed)
    graphs = []
    for r in range(world):
        x_in = input_node("x", X_TYPE)
        y = op("all_gather", op("matmul", x_in.out, constant(block(w["wg"], 1, r, world))),
               world_size=world, axis=1)
        graphs.append(Graph([x_in], [y], ["y"], name=f"gather_rank{r}"))
    return graphs, w, lambda x: {"y": x @ w["wg"]}


def mlp_counts(batch: int) -> dict[str, object]:
    """The collectives one rank of ``mlp_program`` issues per forward and their payload bytes
    (a rank's operand, f32: the same on any number of ranks)."""
    return {"all_reduce": 2, "all_gather": 0, "reduce_scatter": 1,
            "bytes": {"all_reduce": 4 * (batch * IN + batch), "all_gather": 0,
                      "reduce_scatter": 4 * batch * OUT3}}
