"""Opaque ONNX nodes with a torch form (Shape, Range, Concat) run as torch ops in the torch
semantics, and agree with ONNX Runtime running the same node."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from graphopt.ir.node import Node, input_node
from graphopt.ir.types import DType, TensorType
from graphopt.kv.glue import onnx_op
from graphopt.ops import opaque
from graphopt.ops.onnx_torch import torch_form
from graphopt.ops.registry import get_op
from graphopt.ops.symbols import symbol_values


def _node(op_type: str, in_types: list[TensorType], out: TensorType, **attrs: Any) -> Node:
    ins = [input_node(f"x{i}", t).out for i, t in enumerate(in_types)]
    return onnx_op(op_type, ins, [out], **attrs)[0].node


def _both(n: Node, xs: list[torch.Tensor], monkeypatch: pytest.MonkeyPatch
          ) -> tuple[torch.Tensor, np.ndarray]:
    """(the torch aspect's output with ONNX Runtime forbidden, ONNX Runtime's output)."""
    want = opaque.run_onnx_node([x.numpy() for x in xs], n.attrs)[0]

    def no_ort(*a: Any, **k: Any) -> None:
        raise AssertionError("ran in ONNX Runtime")

    with monkeypatch.context() as m:
        m.setattr(opaque, "run_onnx_node", no_ort)
        (got,) = get_op("opaque").torch(xs, n.attrs)
    return got, want


F32, I64 = DType.f32, DType.i64


@pytest.mark.parametrize("start,end", [(1, 2), (0, None), (-2, None)])
def test_shape(start: int, end: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    attrs = {"start": start} if end is None else {"start": start, "end": end}
    n = _node("Shape", [TensorType(("b", "s", 4), F32)], TensorType(("k",), I64), **attrs)
    got, want = _both(n, [torch.zeros(2, 5, 4)], monkeypatch)
    assert got.dtype == torch.int64 and got.tolist() == want.tolist()


def test_range_length_from_bound_symbol_or_values(monkeypatch: pytest.MonkeyPatch) -> None:
    scalar = TensorType((), I64)
    n = _node("Range", [scalar] * 3, TensorType(("n",), I64))
    xs = [torch.tensor(7), torch.tensor(-4), torch.tensor(-3)]
    got, want = _both(n, xs, monkeypatch)  # "n" unbound: length from the values
    assert got.tolist() == want.tolist() == [7, 4, 1, -2]
    xs = [torch.tensor(3), torch.tensor(9), torch.tensor(1)]
    with symbol_values({"n": 6}):
        got, want = _both(n, xs, monkeypatch)
    assert got.tolist() == want.tolist() == list(range(3, 9))


def test_concat_keeps_views(monkeypatch: pytest.MonkeyPatch) -> None:
    t = TensorType(("b", 2, "p", 3), F32)
    n = _node("Concat", [t, t], TensorType(("b", 2, "q", 3), F32), axis=2)
    buf = torch.randn(2, 2, 9, 3)
    xs = [buf[:, :, :4], torch.randn(2, 2, 1, 3)]  # a cache view, as the torch loop passes
    got, want = _both(n, xs, monkeypatch)
    np.testing.assert_array_equal(got.numpy(), want)


def test_ops_without_a_form_still_run_in_onnx_runtime() -> None:
    n = _node("Mod", [TensorType((3,), I64)] * 2, TensorType((3,), I64))
    assert torch_form(n.attrs) is None
    got = get_op("opaque").torch([torch.tensor([7, 8, 9]), torch.tensor([4, 4, 4])], n.attrs)[0]
    assert got.tolist() == [3, 0, 1]
