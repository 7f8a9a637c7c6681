"""AWQ: the scales' formula, alpha 0 is round to nearest, the search beats it when a few input
channels carry large activations, dead channels, code range (hypothesis)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphopt.errors import GraphOptError
from graphopt.quant.awq import awq_scales, awq_search, feature_absmean
from graphopt.quant.numerics import quantize_zeropoint, sqnr_db
from tests.quant.strategies import weights


def test_scales_formula() -> None:
    mean = np.array([4.0, 1.0, 0.25, 0.0])
    s = awq_scales(mean, 0.5)  # [2, 1, 0.5, 0.01] / sqrt(2 * 0.01)
    np.testing.assert_allclose(s, np.array([2.0, 1.0, 0.5, 0.01]) / np.sqrt(0.02), rtol=1e-6)
    np.testing.assert_array_equal(awq_scales(mean, 0.0), np.ones(4, np.float32))
    np.testing.assert_allclose(feature_absmean(np.array([[[1.0, -2.0]], [[-3.0, 0.0]]])),
                               [2.0, 1.0])


def test_grid_of_one_is_round_to_nearest() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 8)).astype(np.float32)
    s, qt = awq_search(w, rng.standard_normal((32, 64)), bits=4, group_size=16, grid=1)
    np.testing.assert_array_equal(s, np.ones(64, np.float32))
    rtn = quantize_zeropoint(w, 4, group_size=16)
    np.testing.assert_array_equal(qt.q.astype(np.int32), rtn.q.astype(np.int32))


def test_beats_round_to_nearest_with_salient_channels() -> None:
    rng = np.random.default_rng(1)
    k, n = 128, 64
    x = rng.standard_normal((512, k)).astype(np.float32)
    x[:, [5, 40, 77, 100]] *= 30.0
    w = rng.standard_normal((k, n)).astype(np.float32)
    y = x.astype(np.float64) @ w
    s, qt = awq_search(w, x, bits=4, group_size=32)
    assert s.dtype == np.float32 and s.shape == (k,)
    assert np.all(s[[5, 40, 77, 100]] > np.median(s))  # the salient channels are scaled up
    rtn = quantize_zeropoint(w, 4, group_size=32)
    awq_db = sqnr_db(y, (x / s) @ qt.dequantize())
    assert awq_db > sqnr_db(y, x @ rtn.dequantize()) + 1.0
    # qt holds diag(s) W: undoing s leaves each weight within its (scaled) half step
    err = np.abs(qt.dequantize() / s[:, None] - w)
    assert np.all(err <= qt.error_bound() / s[:, None] * (1 + 1e-5) + 1e-6 * np.abs(w))


def test_dead_channels_and_bad_shapes() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 16))
    x[:, 3] = 0.0
    s, qt = awq_search(rng.standard_normal((16, 4)), x, bits=4, group_size=8)
    assert np.all(np.isfinite(s)) and np.all(s > 0) and np.all(np.isfinite(qt.dequantize()))
    with pytest.raises(GraphOptError, match="AWQ takes"):
        awq_search(np.ones((16, 4)), np.ones((3, 15)))


@settings(max_examples=30, deadline=None)
@given(weights(max_k=24, max_n=4), st.sampled_from([0, 4, 8]), st.booleans(),
       st.integers(0, 2 ** 32 - 1))
def test_codes_in_range_and_never_worse_than_rtn(w: np.ndarray, g: int, symmetric: bool,
                                                 seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((16, w.shape[0])) * rng.uniform(0, 20, w.shape[0])
    s, qt = awq_search(w, x, bits=4, group_size=g, grid=5, symmetric=symmetric)
    codes = qt.q.astype(np.int32)
    assert np.all((codes >= -7) & (codes <= 7)) if symmetric else np.all((codes >= 0) &
                                                                         (codes <= 15))
    grid1 = awq_search(w, x, bits=4, group_size=g, grid=1, symmetric=symmetric)
    y = x @ w.astype(np.float64)
    err = np.mean((y - (x / s) @ qt.dequantize().astype(np.float64)) ** 2)
    err_rtn = np.mean((y - x @ grid1.qt.dequantize().astype(np.float64)) ** 2)
    assert err <= err_rtn * (1 + 1e-6) + 1e-12
