"""The clipping search of int4 groups: never worse than the full range on the weights, and it
carries into GPTQ and AWQ, which stay ahead of round-to-nearest on correlated activations."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from graphopt.quant import numerics as nx
from graphopt.quant.awq import awq_search
from graphopt.quant.gptq import gptq_quantize


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(1, 6), st.sampled_from([4, 8, 16]), st.integers(0, 9999))
def test_clip_never_increases_the_weight_error(k: int, n: int, g: int, seed: int) -> None:
    w = np.random.default_rng(seed).standard_normal((k, n)).astype(np.float32)
    full = nx.quantize_zeropoint(w, 4, axis=0, group_size=g)
    clipped = nx.quantize_zeropoint(w, 4, axis=0, group_size=g, clip=True)
    e_full = ((full.dequantize() - w) ** 2).sum()
    e_clip = ((clipped.dequantize() - w) ** 2).sum()
    assert e_clip <= e_full * (1 + 1e-6) + 1e-12


def test_data_aware_methods_beat_rtn() -> None:
    rng = np.random.default_rng(0)
    k, n = 256, 128
    w = (0.02 * rng.standard_normal((k, n))).astype(np.float32)
    mix = np.eye(k) + 0.5 * rng.standard_normal((k, k)) / np.sqrt(k)
    x = (rng.standard_normal((512, k)) @ mix).astype(np.float32)
    x[:, :4] *= 8.0  # a few large channels
    ref = x @ w
    rtn = nx.sqnr_db(ref, x @ nx.quantize_zeropoint(w, 4, axis=0, group_size=64,
                                                     clip=True).dequantize())
    h = 2.0 * x.T.astype(np.float64) @ x / len(x)
    gptq = nx.sqnr_db(ref, x @ gptq_quantize(w, h, 4, 64, clip=True).dequantize())
    s, qt = awq_search(w, x, 4, 64, clip=True)
    awq = nx.sqnr_db(ref, (x / s) @ qt.dequantize())
    assert gptq > rtn + 1.0 and awq >= rtn, (rtn, gptq, awq)
