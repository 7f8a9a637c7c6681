"""GPTQ: beats round-to-nearest on correlated inputs, equals it when the Hessian is diagonal,
matches a plain (non-lazy) implementation of the same update, handles dead inputs, keeps RTN's
layout and code range, and rejects bad Hessians."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphopt.errors import GraphOptError
from graphopt.quant.gptq import gptq_quantize, hessian, inverse_hessian_factor
from graphopt.quant.numerics import (affine_params, group_range, quantize_absmax,
                                     quantize_zeropoint, sqnr_db)
from tests.quant.strategies import weights


def _layer(k: int = 96, n: int = 48, rows: int = 768, seed: int = 0
           ) -> tuple[np.ndarray, np.ndarray]:
    """Correlated inputs x = z @ A and a random weight W [k, n]."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, k)) / np.sqrt(k)
    x = (rng.standard_normal((rows, k)) @ a).astype(np.float32)
    return x, rng.standard_normal((k, n)).astype(np.float32)


@pytest.mark.parametrize("group_size,act_order", [(32, False), (0, False), (32, True),
                                                  (24, False)])
def test_beats_round_to_nearest_on_correlated_inputs(group_size: int, act_order: bool) -> None:
    x, w = _layer()
    y = x.astype(np.float64) @ w
    qt = gptq_quantize(w, hessian(x), bits=4, group_size=group_size, block=32,
                       act_order=act_order)
    rtn = quantize_zeropoint(w, 4, axis=0 if group_size else 1, group_size=group_size)
    assert (qt.scale.shape, qt.axis, qt.block_size) == (rtn.scale.shape, rtn.axis,
                                                        rtn.block_size)
    assert qt.q.dtype == rtn.q.dtype and qt.zero_point.dtype == rtn.zero_point.dtype
    gain = sqnr_db(y, x @ qt.dequantize()) - sqnr_db(y, x @ rtn.dequantize())
    assert gain > 1.5, gain


def test_diagonal_hessian_is_round_to_nearest() -> None:
    _, w = _layer(k=40, n=6)
    for g in (0, 16):
        qt = gptq_quantize(w, np.diag(np.linspace(0.5, 2.0, 40)), bits=4, group_size=g,
                           block=8)
        rtn = quantize_zeropoint(w, 4, axis=0 if g else 1, group_size=g)
        np.testing.assert_array_equal(qt.q.astype(np.int32), rtn.q.astype(np.int32))
        np.testing.assert_array_equal(qt.scale, rtn.scale)


def _plain_gptq(w: np.ndarray, h: np.ndarray, g: int, damp: float = 0.01) -> np.ndarray:
    """GPTQ without lazy batches: each row's error is pushed into every later row at once."""
    w = w.astype(np.float64).copy()
    k = w.shape[0]
    h = h + damp * np.mean(np.diag(h)) * np.eye(k)
    u = inverse_hessian_factor(h)
    codes = np.empty(w.shape, np.int32)
    for i in range(k):
        if i % g == 0:
            scale, zp = affine_params(*group_range(w[i:i + g], axis=1, group_size=0), 0, 15)
            s = scale.astype(np.float64)
        q = np.clip(np.rint(w[i] / s) + zp, 0, 15)
        e = (w[i] - (q - zp) * s) / u[i, i]
        w[i + 1:] -= np.outer(u[i, i + 1:], e)
        codes[i] = q
    return codes


def test_lazy_blocks_match_the_plain_update() -> None:
    x, w = _layer(k=50, n=10, rows=300, seed=4)
    h = hessian(x)
    for block in (7, 16, 64):  # groups of 12 start inside blocks of 7 and 16
        qt = gptq_quantize(w, h, bits=4, group_size=12, block=block)
        np.testing.assert_array_equal(qt.q.astype(np.int32), _plain_gptq(w, h, 12))


def test_dead_inputs() -> None:
    x, w = _layer(k=48, n=8, rows=256, seed=2)
    x[:, [3, 20]] = 0.0
    h = hessian(x)
    assert h[3, 3] == 0 and h[20, 20] == 0
    qt = gptq_quantize(w, h, bits=4, group_size=16)
    deq = qt.dequantize()
    assert np.all(np.isfinite(deq))
    y = x.astype(np.float64) @ w
    rtn = quantize_zeropoint(w, 4, group_size=16)
    assert sqnr_db(y, x @ deq) > sqnr_db(y, x @ rtn.dequantize())
    # nothing is propagated into a dead row: it is rounded to nearest with its group's scale
    scale, zp = qt.expanded()
    for r in (3, 20):
        expect = np.clip(np.rint(w[r] / scale[r]) + zp[r], 0, 15)
        np.testing.assert_array_equal(qt.q[r].astype(np.int32), expect)
    all_dead = gptq_quantize(w, np.zeros((48, 48)), bits=4, group_size=16)
    np.testing.assert_array_equal(all_dead.q.astype(np.int32), rtn.q.astype(np.int32))


def test_hessian_accumulates_batches() -> None:
    x, _ = _layer(k=8, n=2, rows=60)
    np.testing.assert_allclose(hessian([x[:25], x[25:].reshape(5, 7, 8)]), hessian(x),
                               rtol=1e-12)
    np.testing.assert_allclose(hessian(x), 2 * x.T.astype(np.float64) @ x / 60, rtol=1e-12)


def test_bad_arguments() -> None:
    w = np.ones((4, 2), np.float32)
    with pytest.raises(GraphOptError, match=r"\[4, 4\]"):
        gptq_quantize(w, np.eye(3))
    with pytest.raises(GraphOptError, match="positive definite"):
        gptq_quantize(w, -np.eye(4), damp=0.0)
    with pytest.raises(GraphOptError, match="no calibration"):
        hessian([])


@settings(max_examples=40, deadline=None)
@given(weights(max_k=24, max_n=5), st.sampled_from([4, 8]), st.sampled_from([0, 1, 5, 8]),
       st.booleans(), st.booleans(), st.integers(0, 2 ** 32 - 1))
def test_codes_in_range(w: np.ndarray, bits: int, g: int, act_order: bool, symmetric: bool,
                        seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3 * w.shape[0], w.shape[0])) * rng.uniform(0, 3, w.shape[0])
    qt = gptq_quantize(w, hessian(x), bits=bits, group_size=g, block=4, act_order=act_order,
                       symmetric=symmetric)
    codes = qt.q.astype(np.int32)
    if symmetric:
        assert np.all(np.abs(codes) <= 2 ** (bits - 1) - 1) and not np.any(qt.zero_point)
        ref = quantize_absmax(w, bits, axis=0 if g else 1, group_size=g)
    else:
        assert np.all((codes >= 0) & (codes <= 2 ** bits - 1))
        ref = quantize_zeropoint(w, bits, axis=0 if g else 1, group_size=g)
    assert qt.q.dtype == ref.q.dtype and qt.scale.shape == ref.scale.shape
    assert np.all(np.isfinite(qt.dequantize()))
