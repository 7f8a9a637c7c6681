"""Hypothesis strategies for the quantization tests: weight matrices W [K, N] of bounded floats
with a random magnitude per column (so per-channel scales differ), activations x [M, K], and
the rounding slack of evaluating a quantized form in f32."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

VALUES = st.floats(-1.0, 1.0, width=32, allow_subnormal=False)


@st.composite
def weights(draw: st.DrawFn, max_k: int = 40, max_n: int = 8) -> np.ndarray:
    """f32 [K, N]: entries in [-1, 1] times a per-column magnitude 10^[-3, 3]; sometimes a
    column or a row of zeros."""
    k = draw(st.integers(1, max_k))
    n = draw(st.integers(1, max_n))
    w = draw(hnp.arrays(np.float32, (k, n), elements=VALUES))
    mags = draw(hnp.arrays(np.float64, (n,), elements=st.floats(-3, 3)))
    w = (w * 10.0 ** mags).astype(np.float32)
    if draw(st.booleans()):
        w[:, draw(st.integers(0, n - 1))] = 0
    if draw(st.booleans()):
        w[draw(st.integers(0, k - 1))] = 0
    return w


def activations(k: int, max_m: int = 6) -> st.SearchStrategy[np.ndarray]:
    """f32 [M, K] with entries in [-8, 8]."""
    return hnp.arrays(np.float32, st.tuples(st.integers(1, max_m), st.just(k)),
                      elements=st.floats(-8.0, 8.0, width=32, allow_subnormal=False))


def f32_slack(w: np.ndarray, deq: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """What f32 evaluation may add to an exact-arithmetic rounding bound: a few ulps of the
    values and of the code range times the scale."""
    return 1e-6 * (np.abs(w) + np.abs(deq)) + 1e-4 * scale
