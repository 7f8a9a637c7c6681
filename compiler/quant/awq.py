"""AWQ: activation-aware per-input-channel scaling before weight-only quantization.

The layer x @ W is computed as (x / s) @ Q(diag(s) W): input features that carry large
activations get their weight rows scaled up before rounding, so their relative rounding error
shrinks, and the activations are divided by the same s (folded into the op before the layer).
The scales are ``s_k = mean|x_k|^alpha``, normalized by sqrt(max s * min s) (and at least 1e-4
before normalizing, so a dead input keeps a finite scale), with alpha in
{0, 1/grid, ..., (grid-1)/grid} chosen by the mean squared error of the layer's output on the
calibration inputs. alpha = 0 is s = 1, plain round to nearest, so on the calibration data the
search is never worse than it.

Quantization of diag(s) W is ``numerics.quantize_zeropoint`` (u4 with zero points, groups of
``group_size`` along K) unless ``symmetric``.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

from ..errors import GraphOptError
from .numerics import F32, QuantizedTensor, as_f32, quantize_absmax, quantize_zeropoint

WHERE = "quant.awq"
MIN_SCALE = 1e-4


class AWQResult(NamedTuple):
    scales: np.ndarray  # f32 [K]: the layer is (x / scales) @ qt.dequantize()
    qt: QuantizedTensor  # diag(scales) @ W quantized


def feature_absmean(x: Any) -> np.ndarray:
    """mean |x| per feature (last axis) over every other axis, float64 [K]."""
    a = np.abs(np.asarray(x, dtype=np.float64))
    return a.reshape(-1, a.shape[-1]).mean(axis=0)


def awq_scales(x_absmean: np.ndarray, alpha: float) -> np.ndarray:
    """f32 [K]: mean|x_k|^alpha (at least 1e-4), divided by sqrt(max * min)."""
    s = np.maximum(np.asarray(x_absmean, dtype=np.float64), MIN_SCALE) ** alpha
    return (s / np.sqrt(s.max() * s.min())).astype(F32)


def _output_mse(rows: np.ndarray, n: int) -> Callable[[np.ndarray], float]:
    """delta [K, N] -> mean((rows @ delta)^2): the output error of x @ W - (x / s) @ deq, which
    is x @ (W - deq / s). Through the Gram matrix rows^T rows when there are more rows than
    features (K^2 N per alpha instead of n K N)."""
    count = rows.shape[0] * n
    if rows.shape[0] <= rows.shape[1]:
        return lambda delta: float(np.sum((rows @ delta) ** 2)) / count
    gram = rows.T @ rows
    return lambda delta: float(np.sum(delta * (gram @ delta))) / count


def _quantize(w: np.ndarray, bits: int, group_size: int, symmetric: bool,
              clip: bool = False) -> QuantizedTensor:
    axis = 0 if group_size else 1
    if symmetric:
        return quantize_absmax(w, bits, axis=axis, group_size=group_size)
    return quantize_zeropoint(w, bits, axis=axis, group_size=group_size, clip=clip)


def awq_search(w: Any, x: Any, bits: int = 4, group_size: int = 128, grid: int = 20,
               symmetric: bool = False, clip: bool = False) -> AWQResult:
    """The AWQ scales s [K] for W [K, N] on calibration inputs x [..., K], and diag(s) W
    quantized (``bits``, groups of ``group_size`` along K, 0: per output channel). ``clip``:
    the chosen scales and s = 1 are quantized again with the clipping search
    (``numerics.mse_params``) and the better of the two by output error is returned (the grid
    itself runs without it: 20 searches of the clip grid per layer would cost too much)."""
    w32 = as_f32(w, "weight")
    x32 = as_f32(x, "activation")
    if w32.ndim != 2 or x32.shape[-1] != w32.shape[0]:
        raise GraphOptError(f"AWQ takes W [K, N] and x [..., K], got {list(w32.shape)} and "
                            f"{list(x32.shape)}", where=WHERE)
    if grid < 1:
        raise GraphOptError(f"grid must be >= 1, got {grid}", where=WHERE)
    rows = x32.reshape(-1, w32.shape[0]).astype(np.float64)
    mse = _output_mse(rows, w32.shape[1])
    mean = feature_absmean(rows)
    best: tuple[float, AWQResult] | None = None
    for i in range(grid):
        s = awq_scales(mean, i / grid)
        qt = _quantize(w32 * s[:, None], bits, group_size, symmetric)
        err = mse(w32 - qt.dequantize().astype(np.float64) / s[:, None])
        if best is None or err < best[0]:
            best = (err, AWQResult(s, qt))
    assert best is not None
    if clip and not symmetric:
        ones = np.ones(w32.shape[0], dtype=F32)
        finals = []
        for s in (best[1].scales, ones):
            qt = _quantize(w32 * s[:, None], bits, group_size, symmetric, clip=True)
            finals.append((mse(w32 - qt.dequantize().astype(np.float64) / s[:, None]),
                           AWQResult(np.asarray(s, dtype=F32), qt)))
        return min(finals, key=lambda t: t[0])[1]
    return best[1]
