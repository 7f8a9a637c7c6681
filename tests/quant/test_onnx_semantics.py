"""The codes and parameters the numerics produce mean in ONNX Runtime what they mean here:
QuantizeLinear with our scale / zero point gives our codes (ties included), DequantizeLinear of
our codes gives our dequantization bit for bit, in every layout (per tensor, per channel, blocked
with a partial last block, 8 and 4 bits), and DynamicQuantizeLinear gives
``dynamic_quantize_u8``."""
from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt.quant.numerics import (QuantizedTensor, dynamic_quantize_u8, encode,
                                     quantize_absmax, quantize_zeropoint)

OPSET = 21  # blocked quantization and 4-bit types


def _run(nodes: list[Any], inits: list[Any], outputs: list[tuple[str, int]],
         x: np.ndarray | None = None) -> list[np.ndarray]:
    inputs = [] if x is None else [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                 x.shape)]
    g = helper.make_graph(nodes, "g", inputs,
                          [helper.make_tensor_value_info(n, t, None) for n, t in outputs],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {} if x is None else {"x": x})


def _attrs(qt: QuantizedTensor) -> dict[str, int]:
    if qt.granularity == "tensor":
        return {}
    return {"axis": qt.axis, **({"block_size": qt.block_size} if qt.block_size else {})}


def _params(qt: QuantizedTensor) -> list[Any]:
    return [numpy_helper.from_array(qt.scale, "s"), numpy_helper.from_array(qt.zero_point, "z")]


def _wide(qt: QuantizedTensor) -> int:
    """The 8-bit type 4-bit codes are cast to (ORT's Python API does not return 4-bit tensors)."""
    return TensorProto.UINT8 if qt.q.dtype.name.startswith("u") else TensorProto.INT8


W = (np.random.default_rng(0).standard_normal((37, 5)) * [1, 3, 0.01, 10, 0]).astype(np.float32)
CASES = [("absmax", dict(bits=8)), ("absmax", dict(bits=8, axis=1)),
         ("absmax", dict(bits=8, axis=0)), ("zeropoint", dict(bits=8)),
         ("zeropoint", dict(bits=8, axis=1, unsigned=False)),
         ("zeropoint", dict(bits=4, group_size=8)), ("absmax", dict(bits=4, group_size=16)),
         ("zeropoint", dict(bits=4, axis=1, unsigned=False)),
         ("zeropoint", dict(bits=8, axis=1, group_size=2))]  # blocks along N: 2, 2 and 1


@pytest.mark.parametrize("fn,kw", CASES)
def test_quantize_and_dequantize_linear_agree(fn: str, kw: dict[str, Any]) -> None:
    qt = (quantize_absmax if fn == "absmax" else quantize_zeropoint)(W, **kw)
    q = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **_attrs(qt))
    cast = helper.make_node("Cast", ["q"], ["q8"], to=_wide(qt))
    (codes,) = _run([q, cast], _params(qt), [("q8", _wide(qt))], W)
    np.testing.assert_array_equal(codes.astype(np.int32), qt.q.astype(np.int32))
    dq = helper.make_node("DequantizeLinear", ["c", "s", "z"], ["y"], **_attrs(qt))
    (y,) = _run([dq], [numpy_helper.from_array(qt.q, "c")] + _params(qt),
                [("y", TensorProto.FLOAT)])
    np.testing.assert_array_equal(y, qt.dequantize())


def test_ties_round_half_to_even_like_ort() -> None:
    x = np.array([[0.25, 0.75, 1.25, -0.25, -0.75, -1.25, 2.25, 300.0]], np.float32)
    for zp in (np.int8(0), np.uint8(3)):
        qt = encode(x, np.float32(0.5), zp)
        q = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])
        (codes,) = _run([q], _params(qt), [("q", helper.np_dtype_to_tensor_dtype(zp.dtype))], x)
        np.testing.assert_array_equal(codes, qt.q)


@pytest.mark.parametrize("x", [
    np.random.default_rng(1).standard_normal((9, 7)).astype(np.float32) * 3,
    np.array([[1.0, 3.0, 0.5]], np.float32), np.array([[-1.0, -3.0]], np.float32),
    np.zeros((2, 3), np.float32)], ids=["random", "positive", "negative", "zeros"])
def test_dynamic_quantize_linear_agrees(x: np.ndarray) -> None:
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"])
    q, s, z = _run([node], [], [("q", TensorProto.UINT8), ("s", TensorProto.FLOAT),
                                ("z", TensorProto.UINT8)], x)
    qt = dynamic_quantize_u8(x)
    assert s == qt.scale and z == qt.zero_point
    np.testing.assert_array_equal(q, qt.q)
