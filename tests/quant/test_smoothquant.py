"""SmoothQuant: the scales' formula and its guards, smoothing is exact in float, the search
returns what it measured and beats no smoothing on activations with outlier channels."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphopt.errors import GraphOptError
from graphopt.quant.numerics import quantize_absmax, sqnr_db
from graphopt.quant.smoothquant import ALPHAS, smooth_scales, smoothquant_search, w8a8_output
from tests.quant.strategies import weights


def test_scales_formula_and_guards() -> None:
    x_absmax = np.array([16.0, 1.0, 0.0, 4.0])
    w = np.array([[0.25, -1.0], [4.0, 0.5], [1.0, 1.0], [0.0, 0.0]])
    s = smooth_scales(x_absmax, w, 0.5)  # sqrt(16) / sqrt(1), sqrt(1) / sqrt(4), dead, dead
    np.testing.assert_allclose(s, [4.0, 0.5, 1.0, 1.0])
    assert s.dtype == np.float32
    np.testing.assert_allclose(smooth_scales(x_absmax, w, 1.0), [16.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(smooth_scales(x_absmax, w, 0.0), [1.0, 0.25, 1.0, 1.0])
    with pytest.raises(GraphOptError, match="features"):
        smooth_scales(np.ones(3), w, 0.5)


def _outlier_layer(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((256, 64)).astype(np.float32)
    x[:, [3, 17, 50]] *= 60.0
    return x, (rng.standard_normal((64, 32)) * 0.05).astype(np.float32)


def test_smoothing_is_exact_in_float() -> None:
    x, w = _outlier_layer()
    s = smooth_scales(np.abs(x).max(axis=0), w, 0.5)
    np.testing.assert_allclose((x / s) @ (w * s[:, None]), x @ w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("activation", ["per_tensor", "per_token", "dynamic_u8"])
def test_search_beats_no_smoothing(activation: str) -> None:
    x, w = _outlier_layer()
    y = x.astype(np.float64) @ w
    res = smoothquant_search(x, w, activation=activation)
    alpha, s, err = res
    assert alpha in ALPHAS and alpha > 0 and s.shape == (64,)
    qt = quantize_absmax(w * s[:, None], 8, axis=1)
    assert err == pytest.approx(np.mean((y - w8a8_output(x / s, qt, activation)) ** 2))
    plain = w8a8_output(x, quantize_absmax(w, 8, axis=1), activation)
    assert sqnr_db(y, w8a8_output(x / s, qt, activation)) > sqnr_db(y, plain) + 3.0


def test_single_alpha_and_bad_shapes() -> None:
    x, w = _outlier_layer(1)
    res = smoothquant_search(x.reshape(4, 64, 64), w, alphas=[0.5])
    assert res.alpha == 0.5
    np.testing.assert_array_equal(res.scales, smooth_scales(np.abs(x).max(axis=0), w, 0.5))
    with pytest.raises(GraphOptError, match="SmoothQuant takes"):
        smoothquant_search(x[:, :10], w)
    with pytest.raises(GraphOptError, match="no alphas"):
        smoothquant_search(x, w, alphas=[])


@settings(max_examples=30, deadline=None)
@given(weights(max_k=16, max_n=4), st.integers(0, 2 ** 32 - 1))
def test_search_is_the_minimum_over_its_grid(w: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((8, w.shape[0])) * rng.uniform(0, 10, w.shape[0]))
    alphas = (0.0, 0.3, 0.7, 1.0)
    res = smoothquant_search(x, w, alphas=alphas)
    assert np.all(np.isfinite(res.scales)) and np.all(res.scales > 0)
    errs = [smoothquant_search(x, w, alphas=[a]).error for a in alphas]
    assert res.error == min(errs) and res.alpha == alphas[errs.index(min(errs))]
