"""LLM.int8(): a mixed-precision matmul that keeps the outlier input features in float.

Input features whose calibration magnitude exceeds a threshold (6.0 in the paper) are the
outlier columns of x; since column k of x meets only row k of W,

    x @ W = x[:, cols] @ W[cols] + x[:, rest] @ W[rest]

and the first product stays float while the second is int8 "vector-wise": x[:, rest] symmetric
per row, W[rest] symmetric per column, the int32 product rescaled by the outer product of the
two scale vectors.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import GraphOptError
from .numerics import F32, as_f32, quantize_absmax

WHERE = "quant.llm_int8"


def outlier_columns(x_absmax: Any, threshold: float = 6.0) -> np.ndarray:
    """Sorted int64 indices of the input features whose calibration max |x| exceeds
    ``threshold``."""
    return np.flatnonzero(np.asarray(x_absmax, dtype=np.float64) > threshold).astype(np.int64)


def int8_vectorwise_matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x [M, K] @ w [K, N] through int8: x per row, w per column (absmax), int32 accumulation,
    times s_x[:, None] * s_w[None, :]; f32 [M, N]."""
    qx = quantize_absmax(x, bits=8, axis=0)
    qw = quantize_absmax(w, bits=8, axis=1)
    acc = qx.q.astype(np.int32) @ qw.q.astype(np.int32)
    return (acc.astype(F32) * (qx.scale[:, None] * qw.scale[None, :])).astype(F32)


def llm_int8_matmul(x: Any, w: Any, cols: Any) -> np.ndarray:
    """The reference LLM.int8() product of x [M, K] and W [K, N] with outlier features ``cols``:
    x[:, cols] @ W[cols] in f32 plus the int8 vector-wise product of the other features."""
    x32 = as_f32(x, "activation")
    w32 = as_f32(w, "weight")
    if x32.ndim != 2 or w32.ndim != 2 or x32.shape[1] != w32.shape[0]:
        raise GraphOptError(f"LLM.int8 takes x [M, K] and W [K, N], got {list(x32.shape)} and "
                            f"{list(w32.shape)}", where=WHERE)
    k = w32.shape[0]
    outliers = np.zeros(k, dtype=bool)
    outliers[np.asarray(cols, dtype=np.int64)] = True
    y = x32[:, outliers] @ w32[outliers]
    if not outliers.all():
        y = y + int8_vectorwise_matmul(x32[:, ~outliers], w32[~outliers])
    return y.astype(F32)
