"""The ONNX frontend's lowerings of op types that are no op of graphopt's (Dropout, Shape, Size,
Range, ConstantOfShape; ``frontends/onnx_lowering.py``): faithful to ONNX Runtime, constants where
the inputs are static or constant, Unsupported (the node stays opaque) otherwise."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.ops.frontend_fakes import check_onnx_node, lift_onnx
from graphopt.frontends.onnx_lift import lifters
from graphopt.ir.node import constant, input_node
from graphopt.ir.types import DType, TensorType
from graphopt.ops.registry import Unsupported, ops_for_onnx

I64 = np.int64
RNG = np.random.default_rng(7)


def t(*shape: Any, dt: DType = DType.f32) -> TensorType:
    return TensorType(tuple(shape), dt)


def v(name: str, *shape: Any, dt: DType = DType.f32) -> Any:
    return input_node(name, t(*shape, dt=dt)).out


def r(rng: np.random.Generator, *s: int) -> np.ndarray:
    return rng.standard_normal(s).astype(np.float32)


@pytest.mark.parametrize("op_type", ["Dropout", "Shape", "Size", "Range", "ConstantOfShape"])
def test_lowered_types_belong_to_the_frontend(op_type: str) -> None:
    assert ops_for_onnx(op_type) == []  # no op declares them
    assert [name for name, _ in lifters(op_type)] == [f"{op_type} lowering"]


def test_onnx_shape_size_fold() -> None:
    g = check_onnx_node("Shape", [r(RNG, 2, 3, 4)], {}, 13)
    assert g.outputs[0].node.op == "constant"
    check_onnx_node("Shape", [r(RNG, 2, 3, 4)], {"start": 1, "end": -1}, 15)
    check_onnx_node("Size", [r(RNG, 2, 3, 4)], {}, 13)
    # only the static part of a symbolic shape folds
    x = v("x", "b", 3, 4)
    (c,) = lift_onnx("Shape", [x], {"start": 1}, 15)
    np.testing.assert_array_equal(c.node.attrs["data"].array, [3, 4])
    with pytest.raises(Unsupported, match="symbolic"):
        lift_onnx("Shape", [x], {}, 13)


@pytest.mark.parametrize("start,limit,delta,dt", [(0, 5, 1, I64), (7, -2, -3, np.int32),
                                                  (0.5, 2.0, 0.4, np.float32), (3, 3, 1, I64)])
def test_onnx_range_folds(start: float, limit: float, delta: float, dt: Any) -> None:
    arrays = [np.array(start, dt), np.array(limit, dt), np.array(delta, dt)]
    g = check_onnx_node("Range", arrays, {}, 13, consts=(0, 1, 2))
    assert g.outputs[0].node.op == "constant"


def test_onnx_constant_of_shape_folds() -> None:
    from onnx import numpy_helper

    val = numpy_helper.from_array(np.array([3], np.int32))
    check_onnx_node("ConstantOfShape", [np.array([2, 3], I64)], {}, 13, consts=(0,))
    g = check_onnx_node("ConstantOfShape", [np.array([2, 0, 3], I64)], {"value": val}, 13,
                        consts=(0,))
    assert g.outputs[0].type == t(2, 0, 3, dt=DType.i32)


def test_onnx_dropout_inference_is_identity() -> None:
    x = r(RNG, 2, 3)
    g = check_onnx_node("Dropout", [x], {"ratio": 0.3}, 10)
    assert g.outputs[0].node.op == "input"
    check_onnx_node("Dropout", [x, np.array(0.5, np.float32), np.array(False)], {}, 13,
                    consts=(1, 2))
    with pytest.raises(Unsupported, match="mask"):
        lift_onnx("Dropout", [v("x", 2, 3)], {}, 13, num_outputs=2)
    with pytest.raises(Unsupported, match="training"):
        lift_onnx("Dropout", [v("x", 2, 3), None, constant(np.array(True))], {}, 13)
