"""numerics: absmax / zero-point quantization in the three ONNX layouts (hand-computed cases
and hypothesis properties: error within the analytic bounds, finer granularity never has a
larger bound, codes within range), activation quantizers, SQNR, cosine, sizes, errors."""
from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphopt.errors import GraphOptError
from graphopt.quant.numerics import (QuantizedTensor, cosine, dynamic_quantize_u8, encode,
                                     expand, feature_absmax, matmul_error_bound,
                                     matmul_error_bound_w8a8, quantize_absmax,
                                     quantize_activation, quantize_per_token_int8,
                                     quantize_zeropoint, sqnr_db)
from tests.quant.strategies import activations, f32_slack, weights

SEED_X = np.array([[1.5, 0, -1.1], [2, 0.5, -0.1], [1.2, 1.7, -0.5]], dtype=np.float32)


def test_absmax_seed_example() -> None:
    # s = 127 / max|X| = 63.5 in the lecture's notation; ONNX stores its inverse as the scale
    qt = quantize_absmax(SEED_X)
    assert qt.q.dtype == np.int8 and qt.scale.dtype == np.float32 and qt.scale.shape == ()
    np.testing.assert_array_equal(qt.q, [[95, 0, -70], [127, 32, -6], [76, 108, -32]])
    assert qt.scale == np.float32(2 / 127) and qt.zero_point == 0 and qt.symmetric
    np.testing.assert_allclose(qt.dequantize(), [[1.496, 0, -1.102], [2, 0.504, -0.094],
                                                 [1.197, 1.701, -0.504]], atol=6e-4)


def test_zeropoint_seed_example_int8() -> None:
    # the lecture maps [min, max] = [-1.1, 2] onto [-128, 127]: scale 3.1 / 255, z = round(-128
    # + 1.1 / scale) = -38; 0.5 / scale = 41.13 gives code 3 (the lecture's -3 is a typo)
    qt = quantize_zeropoint(SEED_X, bits=8, unsigned=False)
    assert qt.q.dtype == np.int8 and qt.zero_point.dtype == np.int8
    assert qt.zero_point == -38 and qt.scale == np.float32(3.1 / 255)
    np.testing.assert_array_equal(qt.q, [[85, -38, -128], [127, 3, -46], [61, 102, -79]])
    np.testing.assert_allclose(qt.dequantize(), [[1.495, 0, -1.094], [2.006, 0.498, -0.097],
                                                 [1.204, 1.702, -0.498]], atol=6e-4)


def test_zeropoint_u8_makes_real_zero_exact() -> None:
    w = np.array([[0.0, 0.3], [1.0, 0.7]], np.float32)  # all >= 0: the range is [0, 1]
    qt = quantize_zeropoint(w, bits=8)
    assert qt.q.dtype == np.uint8 and qt.zero_point == 0 and qt.scale == np.float32(1 / 255)
    np.testing.assert_array_equal(qt.q, [[0, 76], [255, 178]])  # 0.3*255 = 76.5 -> 76 (even)
    neg = quantize_zeropoint(-w, bits=8)  # range [-1, 0]: zero is code 255
    assert neg.zero_point == 255 and neg.dequantize()[0, 0] == 0.0


def test_per_channel_and_blocked_layouts() -> None:
    w = np.arange(1, 21, dtype=np.float32).reshape(10, 2) * np.array([1, -0.1], np.float32)
    pc = quantize_absmax(w, bits=8, axis=1)
    assert pc.scale.shape == (2,) and pc.axis == 1 and pc.block_size == 0
    np.testing.assert_allclose(pc.scale, [19 / 127, 2.0 / 127], rtol=1e-7)
    bl = quantize_zeropoint(w, bits=4, group_size=4)  # K = 10: blocks of 4, 4 and 2 rows
    assert bl.q.dtype == ml_dtypes.uint4 and bl.zero_point.dtype == ml_dtypes.uint4
    assert bl.scale.shape == (3, 2) and bl.axis == 0 and bl.block_size == 4
    # column 0, last (partial) block: rows 8, 9 = 17, 19; the range is [0, 19]
    assert bl.scale[2, 0] == np.float32(19 / 15) and bl.zero_point[2, 0] == 0
    # column 1, first block: -0.2, -0.4, -0.6, -0.8: range [-0.8, 0], zero is code 15
    assert bl.scale[0, 1] == pytest.approx(0.8 / 15, rel=1e-6) and int(bl.zero_point[0, 1]) == 15
    np.testing.assert_array_equal(bl.expanded()[0][:, 0], np.repeat(bl.scale[:, 0], 4)[:10])


def test_axis0_per_row_and_symmetric_int4_range() -> None:
    w = np.array([[-8.0, 3.0, 1.0], [0.5, -0.2, 0.0]], np.float32)
    qt = quantize_absmax(w, bits=4, axis=0)  # scales 8/7 and 0.5/7; -8 is never reached
    assert qt.q.dtype == ml_dtypes.int4 and qt.scale.shape == (2,) and qt.axis == 0
    np.testing.assert_array_equal(qt.q.astype(np.int32), [[-7, 3, 1], [7, -3, 0]])
    np.testing.assert_allclose(qt.scale, [8 / 7, 0.5 / 7], rtol=1e-7)


def test_all_zero_groups_get_scale_one() -> None:
    w = np.zeros((6, 3), np.float32)
    w[0, 0] = 2.0
    for qt in (quantize_absmax(w, 4, group_size=4), quantize_zeropoint(w, 4, group_size=4),
               quantize_zeropoint(w, 8, axis=1, unsigned=False), quantize_absmax(np.zeros(5))):
        assert np.all(np.isfinite(qt.scale)) and np.all(qt.scale > 0)
        np.testing.assert_array_equal(qt.dequantize(), w if qt.q.shape == w.shape else 0.0)
    assert quantize_absmax(w, 4, group_size=4).scale[1, 0] == 1.0


def test_encode_rounds_half_to_even_and_saturates() -> None:
    x = np.array([0.25, 0.75, 1.25, -0.25, -0.75, 200.0, -200.0], np.float32)
    qt = encode(x, np.float32(0.5), np.int8(0))
    np.testing.assert_array_equal(qt.q, [0, 2, 2, 0, -2, 127, -128])
    qu = encode(x, np.float32(0.5), np.uint8(10))
    np.testing.assert_array_equal(qu.q, [10, 12, 12, 10, 8, 255, 0])


def test_dynamic_quantize_u8_hand_example() -> None:
    x = np.array([[-1.0, 0.0], [2.0, 0.5]], np.float32)
    qt = dynamic_quantize_u8(x)
    scale = np.float32(3.0) / np.float32(255)
    assert qt.scale == scale and qt.zero_point == 85  # rint(1 / (3/255)) = rint(85.0)
    np.testing.assert_array_equal(qt.q, [[0, 85], [255, 127]])  # 0.5 / scale = 42.49999 -> 42
    pos = dynamic_quantize_u8(np.array([1.0, 3.0], np.float32))  # range widened to [0, 3]
    assert pos.zero_point == 0 and pos.q[1] == 255
    zero = dynamic_quantize_u8(np.zeros(4, np.float32))
    assert zero.scale == 1.0 and zero.zero_point == 0


def test_per_token_int8() -> None:
    x = np.array([[1.0, -2.0], [0.0, 0.0], [0.5, 0.25]], np.float32)
    qt = quantize_per_token_int8(x)
    assert qt.axis == 0 and qt.scale.shape == (3,) and qt.q.dtype == np.int8
    np.testing.assert_array_equal(qt.q, [[64, -127], [0, 0], [127, 64]])  # 63.5, 63.5 -> 64
    np.testing.assert_allclose(qt.scale, [2 / 127, 1.0, 0.5 / 127], rtol=1e-7)
    with pytest.raises(GraphOptError, match="per-token"):
        quantize_per_token_int8(np.zeros((2, 3, 4)))
    assert quantize_activation(x, "per_token").q.shape == x.shape
    with pytest.raises(GraphOptError, match="unknown activation"):
        quantize_activation(x, "per_row")


def test_sqnr_and_cosine() -> None:
    ref = np.array([3.0, 4.0])
    assert sqnr_db(ref, ref) == math.inf
    assert sqnr_db(ref, [3.0, 3.0]) == pytest.approx(10 * math.log10(25.0))
    assert sqnr_db([0.0, 0.0], [1.0, 0.0]) == -math.inf
    c = cosine([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]],
               [[0.0, 2.0], [2.0, 2.0], [0.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(c, [0.0, 1.0, 1.0, 0.0])


def test_sizes() -> None:
    w = np.ones((256, 8), np.float32)
    g = quantize_zeropoint(w, bits=4, group_size=128)  # 4 + (32 + 4) / 128 bits per weight
    assert g.nbytes() == 256 * 8 / 2 + 2 * 8 * 4 + 2 * 8 / 2
    assert g.bits_per_weight() == pytest.approx(4 + 36 / 128)
    s = quantize_absmax(w, bits=8, axis=1)  # symmetric: no zero points stored
    assert s.nbytes() == 256 * 8 + 8 * 4 and s.bits == 8 and s.granularity == "channel"


def test_per_channel_can_lose_to_per_tensor_in_max_error() -> None:
    # a finer scale has a smaller bound, not always a smaller error: here the tensor scale
    # 1.27 / 127 = 0.01 hits 0.5 and 0.3 exactly, column 1's own scale 0.5 / 127 does not
    w = np.array([[1.27, 0.5], [0.0, 0.3]], np.float32)
    tensor, channel = quantize_absmax(w), quantize_absmax(w, axis=1)
    assert np.abs(w - channel.dequantize()).max() > 10 * np.abs(w - tensor.dequantize()).max()
    assert np.all(channel.error_bound() <= tensor.error_bound())


def test_bad_requests() -> None:
    w = np.ones((4, 4))
    with pytest.raises(GraphOptError, match="3-bit"):
        quantize_absmax(w, bits=3)
    with pytest.raises(GraphOptError, match="axis 2"):
        quantize_absmax(w, axis=2)
    with pytest.raises(GraphOptError, match="non-finite"):
        quantize_zeropoint(np.array([1.0, np.nan]))
    with pytest.raises(GraphOptError, match="group_size"):
        quantize_zeropoint(w, group_size=-1)
    with pytest.raises(GraphOptError, match="differ in shape"):
        encode(w, np.ones(4, np.float32), np.int8(0), axis=1)


# ---- properties -----------------------------------------------------------------------------

LAYOUTS = st.sampled_from([("tensor", None, 0), ("channel", 1, 0), ("block", 0, 1),
                           ("block", 0, 3), ("block", 0, 8), ("block", 0, 64)])


def _quantize(w: np.ndarray, fn: str, bits: int, layout: tuple[str, int | None, int]
              ) -> QuantizedTensor:
    _, axis, g = layout
    if fn == "absmax":
        return quantize_absmax(w, bits, axis=axis, group_size=g)
    return quantize_zeropoint(w, bits, axis=axis, group_size=g, unsigned=fn == "zp-unsigned")


@settings(max_examples=150, deadline=None)
@given(weights(), st.sampled_from(["absmax", "zp-unsigned", "zp-signed"]),
       st.sampled_from([4, 8]), LAYOUTS)
def test_dequantization_error_within_half_a_step(w: np.ndarray, fn: str, bits: int,
                                                 layout: tuple[str, int | None, int]) -> None:
    qt = _quantize(w, fn, bits, layout)
    assert qt.granularity == layout[0]
    deq = qt.dequantize()
    scale = qt.expanded()[0]
    assert np.all(np.abs(w - deq) <= qt.error_bound() + f32_slack(w, deq, scale))
    codes = qt.q.astype(np.int32)
    if fn == "absmax":  # symmetric range, zero point 0
        assert np.all(np.abs(codes) <= 2 ** (bits - 1) - 1) and not np.any(qt.zero_point)
    # zero is exact, and the parameters round-trip through encode unchanged
    assert np.all(deq[w == 0] == 0)
    again = encode(w, qt.scale, qt.zero_point, qt.axis, qt.block_size)
    np.testing.assert_array_equal(again.q.astype(np.int32), codes)


@settings(max_examples=100, deadline=None)
@given(weights(), st.sampled_from(["absmax", "zp-unsigned"]), st.sampled_from([4, 8]),
       st.integers(1, 16))
def test_finer_granularity_never_has_a_larger_bound(w: np.ndarray, fn: str, bits: int,
                                                    g: int) -> None:
    tensor = _quantize(w, fn, bits, ("tensor", None, 0))
    channel = _quantize(w, fn, bits, ("channel", 1, 0))
    block = _quantize(w, fn, bits, ("block", 0, g))
    # an all-zero group has scale 1 (and no error at all): compare the others
    live_col = np.any(w != 0, axis=0, keepdims=True)
    sums = np.add.reduceat(np.abs(w), np.arange(0, len(w), g), axis=0)
    live_block = np.repeat(sums > 0, g, axis=0)[:len(w)]
    assert np.all((channel.error_bound() <= tensor.error_bound()) | ~live_col)
    assert np.all((block.error_bound() <= channel.error_bound()) | ~live_block)
    assert np.all(channel.dequantize()[:, ~live_col[0]] == 0)
    err = np.abs(w - channel.dequantize())
    assert err.max() <= float(tensor.scale) / 2 + f32_slack(w, w, tensor.scale).max()


@settings(max_examples=100, deadline=None)
@given(st.data(), weights(max_k=24), st.sampled_from([4, 8]), LAYOUTS)
def test_matmul_error_within_bound(data: st.DataObject, w: np.ndarray, bits: int,
                                   layout: tuple[str, int | None, int]) -> None:
    x = data.draw(activations(w.shape[0]))
    qt = _quantize(w, "zp-unsigned", bits, layout)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    err = np.abs(x64 @ w64 - x64 @ qt.dequantize().astype(np.float64))
    slack = np.abs(x64) @ f32_slack(w, qt.dequantize(), qt.expanded()[0])
    assert np.all(err <= matmul_error_bound(x, qt) + slack)


@settings(max_examples=100, deadline=None)
@given(st.data(), weights(max_k=24), st.sampled_from(["dynamic_u8", "per_token", "per_tensor"]))
def test_w8a8_matmul_error_within_bound(data: st.DataObject, w: np.ndarray, mode: str) -> None:
    x = data.draw(activations(w.shape[0]))
    qt = quantize_absmax(w, 8, axis=1)
    qx = quantize_activation(x, mode)
    xq = qx.dequantize().astype(np.float64)
    wq = qt.dequantize().astype(np.float64)
    err = np.abs(x.astype(np.float64) @ w.astype(np.float64) - xq @ wq)
    bound = matmul_error_bound_w8a8(x, qt, qx.scale)
    slack = (np.abs(x) @ f32_slack(w, wq, qt.expanded()[0])
             + f32_slack(x, xq, qx.expanded()[0]) @ np.abs(wq))
    assert np.all(err <= bound + slack)
    assert np.all(np.abs(x - xq) <= qx.error_bound() + f32_slack(x, xq, qx.expanded()[0]))


def test_expand_and_feature_absmax() -> None:
    p = np.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(expand(p, (3, 2), 0, 2), [[1, 2], [1, 2], [3, 4]])
    np.testing.assert_array_equal(expand(np.array([5.0, 6.0]), (2, 2), 0, 0), [[5], [6]])
    x = np.array([[[1.0, -3.0]], [[-2.0, 0.5]]])
    np.testing.assert_array_equal(feature_absmax(x), [2.0, 3.0])
