"""Shared helpers of the codegen tests: tiny graphs, reference runs, tolerances."""
from __future__ import annotations

from typing import Any

import torch

from graphopt.ir.node import Node, Value, input_node
from graphopt.ir.types import DType, TensorType

TOL = {DType.f32: (1e-5, 1e-5), DType.f16: (2e-2, 2e-2)}
TORCH = {DType.f32: torch.float32, DType.f16: torch.float16, DType.bool: torch.bool}


def inp(name: str, shape: tuple, dt: DType = DType.f32) -> Node:
    return input_node(name, TensorType(shape, dt))


def rand(shape: tuple, dt: DType, seed: int = 0, positive: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dt == DType.bool:
        return torch.rand(shape, generator=g) > 0.4
    x = torch.randn(shape, generator=g)
    if positive:
        x = x.abs() + 0.5
    return x.to(TORCH[dt])


def reference(values: list[Value], feeds: dict[int, torch.Tensor]) -> list[torch.Tensor]:
    """Evaluate values with each op's torch aspect (fp32 for float inputs), from ``feeds`` keyed by
    id of input nodes."""
    from graphopt.frontends.fx import const_to_tensor
    from graphopt.ir.graph import toposort
    from graphopt.ops.registry import get_op

    env: dict[tuple[int, int], Any] = {}
    for n in toposort([v.node for v in values]):
        if n.op == "input":
            env[(id(n), 0)] = feeds[id(n)]
            continue
        if n.op == "constant":
            env[(id(n), 0)] = const_to_tensor(n.const)
            continue
        outs = get_op(n.op).torch([env[(id(v.node), v.index)] for v in n.inputs], n.attrs)
        for i, o in enumerate(outs):
            env[(id(n), i)] = o
    return [env[(id(v.node), v.index)] for v in values]


def close(got: torch.Tensor, want: torch.Tensor, dt: DType) -> None:
    rtol, atol = TOL[dt]
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    torch.testing.assert_close(got.float(), want.float(), rtol=rtol, atol=atol, equal_nan=True)


def args_for(values: list[Value], feeds: dict[int, torch.Tensor]) -> list[torch.Tensor]:
    """Launcher arguments: fed inputs, and constants as tensors."""
    from graphopt.frontends.fx import const_to_tensor

    return [const_to_tensor(v.node.const) if v.node.op == "constant" else feeds[id(v.node)]
            for v in values]
