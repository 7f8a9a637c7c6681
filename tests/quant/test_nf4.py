"""NF4: the table against the values published with QLoRA, nearest-code encoding, the block
layout, double quantization of the block scales, the bits per weight, and the per-element error
bound (hypothesis)."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphopt.errors import GraphOptError
from graphopt.quant import nf4
from graphopt.quant.nf4 import (dequantize_absmax, dequantize_nf4, double_quantize, nf4_table,
                                nf4_tensor, quantize_nf4)
from tests.quant.strategies import weights

# QLoRA (Dettmers et al. 2023), appendix E: the NF4 data type's values
PUBLISHED = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
             -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
             0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
             0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
             0.7229568362236023, 1.0]


def test_table_matches_published_values() -> None:
    t = nf4_table()
    assert t.dtype == np.float32 and t.shape == (16,)
    np.testing.assert_allclose(t, PUBLISHED, atol=1e-4)
    assert t[7] == 0.0 and t[0] == -1.0 and t[15] == 1.0
    assert np.all(np.diff(t) > 0)
    assert nf4.NF4_TABLE is t


def test_codes_are_the_nearest_values() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((130, 3)).astype(np.float32)  # 3 blocks of 64, the last of 2
    codes, absmax = quantize_nf4(w, block=64)
    assert codes.dtype == ml_dtypes.uint4 and codes.shape == w.shape
    assert absmax.dtype == np.float32 and absmax.shape == (3, 3)
    np.testing.assert_array_equal(absmax[2], np.abs(w[128:]).max(axis=0))
    scaled = w / np.repeat(absmax, 64, axis=0)[:130]
    brute = np.argmin(np.abs(scaled[..., None] - nf4_table().astype(np.float64)), axis=-1)
    np.testing.assert_array_equal(codes.astype(np.int64), brute)
    # each block's largest magnitude is exactly +-1 times its absmax
    deq = dequantize_nf4(codes, absmax, 64)
    for b in range(3):
        col = np.abs(w[b * 64:(b + 1) * 64]).argmax(axis=0)
        np.testing.assert_array_equal(np.abs(deq[b * 64 + col, range(3)]), absmax[b])


def test_zero_blocks_and_exact_zero() -> None:
    w = np.zeros((128, 2), np.float32)
    w[70, 1] = -3.0
    codes, absmax = quantize_nf4(w, block=64)
    np.testing.assert_array_equal(absmax, [[1.0, 1.0], [1.0, 3.0]])
    np.testing.assert_array_equal(dequantize_nf4(codes, absmax, 64), w)


def test_double_quantization_layout_and_error() -> None:
    rng = np.random.default_rng(1)
    absmax = rng.uniform(0.01, 2.0, size=(9, 70)).astype(np.float32)  # 630 values: 3 supers
    dq = double_quantize(absmax, super_block=256)
    assert dq.codes.dtype == np.uint8 and dq.codes.shape == (630,)
    assert dq.scale.dtype == np.float32 and dq.scale.shape == (3,)
    assert dq.zero_point.dtype == np.uint8 and np.all(dq.zero_point == 0)  # positive values
    flat = absmax.ravel()
    np.testing.assert_allclose(dq.scale[2], flat[512:].max() / 255, rtol=1e-6)
    back = dequantize_absmax(dq, absmax.shape, 256)
    step = np.repeat(dq.scale, 256)[:630].reshape(absmax.shape)
    assert np.all(np.abs(back - absmax) <= step / 2 * (1 + 1e-5))


def test_bits_per_weight_with_double_quantization() -> None:
    w = np.random.default_rng(2).standard_normal((1024, 64)).astype(np.float32)
    t = nf4_tensor(w, block=64, super_block=256)
    assert t.bits_per_weight() <= 4.13
    assert t.bits_per_weight() == pytest.approx(4 + 8 / 64 + 40 / (64 * 256))
    assert nf4_tensor(w, block=64, super_block=0).bits_per_weight() == pytest.approx(4.5)


def test_double_quantized_tensor_uses_stored_scales() -> None:
    w = np.random.default_rng(3).standard_normal((256, 8)).astype(np.float32)
    t = nf4_tensor(w)
    assert t.absmax_q is not None
    np.testing.assert_array_equal(t.absmax, dequantize_absmax(t.absmax_q, t.absmax.shape))
    # the codes are the nearest ones against the scales used
    scaled = w / np.repeat(t.absmax, 64, axis=0)
    brute = np.argmin(np.abs(scaled[..., None] - nf4_table().astype(np.float64)), axis=-1)
    np.testing.assert_array_equal(t.codes.astype(np.int64), brute)
    rel = np.abs(w - t.dequantize()).mean() / np.abs(w).mean()
    assert rel < 0.1  # NF4 on normal weights: about 8% mean relative error


def test_bad_arguments() -> None:
    with pytest.raises(GraphOptError, match=r"W \[K, N\]"):
        quantize_nf4(np.ones(64))
    with pytest.raises(GraphOptError, match="block size must be positive"):
        quantize_nf4(np.ones((64, 2)), block=0)


@settings(max_examples=80, deadline=None)
@given(weights(max_k=70), st.sampled_from([1, 4, 16, 64]), st.sampled_from([0, 1, 3, 256]))
def test_error_within_bound(w: np.ndarray, block: int, super_block: int) -> None:
    t = nf4_tensor(w, block=block, super_block=super_block)
    deq = t.dequantize()
    slack = 1e-6 * (np.abs(w) + np.abs(deq))
    assert np.all(np.abs(w - deq) <= t.error_bound() + slack)
    assert np.all(t.codes.astype(np.int32) <= 15)
    assert np.all(deq[w == 0] == 0)
