"""SmoothQuant: move activation outliers into the weights before W8A8 quantization.

x @ W = (x / s) @ (diag(s) W) for any positive s [K]; with

    s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)

(X_j: input feature j over the calibration rows, W_j: row j of W) the largest activation and
weight magnitudes of feature j both become max|X_j|^(1-alpha) * max|W_j|^alpha, so both are
easier to quantize. A feature whose activations or weights are all zero keeps s = 1 (nothing to
migrate; dividing by a zero maximum would not be defined).

``smoothquant_search`` picks alpha by the mean squared output error of the W8A8 layer
(x / s quantized at run time as ``numerics.quantize_activation`` says, diag(s) W symmetric int8
per output channel) on the calibration inputs.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

from ..errors import GraphOptError
from .numerics import (F32, QuantizedTensor, as_f32, feature_absmax, quantize_absmax,
                       quantize_activation)

WHERE = "quant.smoothquant"
ALPHAS = tuple(round(0.05 * i, 2) for i in range(21))  # 0.0, 0.05, ..., 1.0


class SmoothQuantResult(NamedTuple):
    alpha: float
    scales: np.ndarray  # f32 [K]: the layer is (x / scales) @ (diag(scales) W)
    error: float  # mean squared output error of the W8A8 layer at this alpha


def smooth_scales(x_absmax: Any, w: Any, alpha: float) -> np.ndarray:
    """f32 [K]: max|X_j|^alpha / max|W_j|^(1 - alpha), 1 where either maximum is 0."""
    xa = np.asarray(x_absmax, dtype=np.float64)
    wa = np.max(np.abs(np.asarray(w, dtype=np.float64)), axis=1, initial=0.0)
    if xa.shape != wa.shape:
        raise GraphOptError(f"x_absmax has {xa.shape[0] if xa.ndim else 0} features, W has "
                            f"{wa.shape[0]} rows", where=WHERE)
    live = (xa > 0) & (wa > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(live, xa ** alpha / wa ** (1.0 - alpha), 1.0)
    return s.astype(F32)


def w8a8_output(x: np.ndarray, qt: QuantizedTensor, activation: str) -> np.ndarray:
    """deq(q(x)) @ deq(W) in float64: the W8A8 layer's output for rows x [M, K]."""
    xq = quantize_activation(x, activation).dequantize()
    return xq.astype(np.float64) @ qt.dequantize().astype(np.float64)


def smoothquant_search(x: Any, w: Any, alphas: Sequence[float] = ALPHAS,
                       activation: str = "per_tensor") -> SmoothQuantResult:
    """The alpha (from ``alphas``) whose smoothing gives the smallest mean squared error of the
    W8A8 layer on calibration inputs x [..., K] for W [K, N], with its scales and error."""
    w32 = as_f32(w, "weight")
    x32 = as_f32(x, "activation")
    if w32.ndim != 2 or x32.shape[-1] != w32.shape[0]:
        raise GraphOptError(f"SmoothQuant takes W [K, N] and x [..., K], got "
                            f"{list(w32.shape)} and {list(x32.shape)}", where=WHERE)
    if not len(alphas):
        raise GraphOptError("no alphas to search", where=WHERE)
    rows = x32.reshape(-1, w32.shape[0])
    ref = rows.astype(np.float64) @ w32.astype(np.float64)
    amax = feature_absmax(rows)
    best: SmoothQuantResult | None = None
    for alpha in alphas:
        s = smooth_scales(amax, w32, float(alpha))
        qt = quantize_absmax(w32 * s[:, None], bits=8, axis=1)
        err = float(np.mean((ref - w8a8_output(rows / s, qt, activation)) ** 2))
        if best is None or err < best.error:
            best = SmoothQuantResult(float(alpha), s, err)
    assert best is not None
    return best
