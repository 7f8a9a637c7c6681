"""GPTQ: rounding W [K, N] row by row (input feature by input feature) so that x @ W, not W,
stays close, compensating each row's rounding error in the rows not yet quantized.

With the layer's Hessian ``H = 2 X^T X / n`` (X the calibration inputs [n, K]) damped by
``damp * mean(diag H)`` on the diagonal, and ``U`` the upper Cholesky factor of ``H^-1``
(``H^-1 = U^T U``), row i is quantized with its group's parameters and its error
``e = (w_i - deq(q_i)) / U_ii`` is spread over the later rows, ``w_j -= U_ij e`` (j > i). Updates
are lazy: inside a block of rows they are applied at once, to the rows after the block only when
the block ends (one matrix product per block).

Group parameters (affine with zero point, or symmetric) are chosen when the group starts, from
the rows as updated so far, exactly as ``numerics`` chooses them for round-to-nearest; block
ends are placed at group starts so that the rows of a new group are up to date. With
``act_order`` the rows are visited in decreasing order of diag(H); the groups stay the contiguous
blocks of K of the layout, so their parameters are fixed before the pass from the unmodified
weights ("static groups"). An input that is zero on all calibration rows (diag H = 0) gets a
unit diagonal: its row is rounded to nearest and nothing is propagated from or to it.

The result is a ``numerics.QuantizedTensor`` in the layout round-to-nearest gives for the same
arguments: blocked along axis 0 with ``block_size = group_size`` (u4 codes and zero points for 4
bits), or per output channel (axis 1) when ``group_size`` is 0.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from ..errors import GraphOptError
from .numerics import (F32, QuantizedTensor, affine_params, as_f32, code_dtype, code_range,
                       group_range, mse_params, symmetric_params)

WHERE = "quant.gptq"


def hessian(x: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
    """2 X^T X / n (float64 [K, K]) over calibration inputs: one array [..., K] or several
    (batches), every leading index a row."""
    batches = [x] if isinstance(x, np.ndarray) else list(x)
    if not batches:
        raise GraphOptError("no calibration inputs for the Hessian", where=WHERE)
    k = batches[0].shape[-1]
    h = np.zeros((k, k))
    n = 0
    for b in batches:
        rows = np.asarray(b, dtype=np.float64).reshape(-1, k)
        h += rows.T @ rows
        n += rows.shape[0]
    return 2.0 * h / max(n, 1)


def inverse_hessian_factor(h: np.ndarray) -> np.ndarray:
    """Upper-triangular U with U^T U = H^-1 (H symmetric positive definite)."""
    from scipy.linalg import solve_triangular

    try:
        lower = np.linalg.cholesky(h)
        linv = solve_triangular(lower, np.eye(h.shape[0]), lower=True)
        return np.linalg.cholesky(linv.T @ linv).T
    except np.linalg.LinAlgError as e:
        raise GraphOptError("the damped Hessian is not positive definite; raise damp",
                            where=WHERE) from e


def _boundaries(k: int, block: int, group_size: int) -> list[int]:
    """Where lazy-update blocks start and end: every ``block`` rows and at every group start."""
    cuts = set(range(0, k, block)) | (set(range(0, k, group_size)) if group_size else set())
    return sorted(cuts) + [k]


def gptq_quantize(w: Any, h: Any, bits: int = 4, group_size: int = 128, damp: float = 0.01,
                  block: int = 128, act_order: bool = False, symmetric: bool = False,
                  clip: bool = False) -> QuantizedTensor:
    """W [K, N] quantized by GPTQ against the Hessian ``h`` [K, K] (``hessian(x)``): ``bits``-bit
    codes with a zero point (u4 / u8) or symmetric (int4 / int8), in groups of ``group_size``
    rows per column (0: per output channel). See the module docstring."""
    w64 = as_f32(w, "weight").astype(np.float64)
    if w64.ndim != 2:
        raise GraphOptError(f"GPTQ takes W [K, N], got shape {list(w64.shape)}", where=WHERE)
    k, n = w64.shape
    h = np.array(h, dtype=np.float64)
    if h.shape != (k, k) or not np.all(np.isfinite(h)):
        raise GraphOptError(f"the Hessian must be a finite [{k}, {k}] matrix, got shape "
                            f"{list(h.shape)}", where=WHERE)
    if group_size < 0 or block <= 0 or damp < 0:
        raise GraphOptError(f"need group_size >= 0, block > 0, damp >= 0 (got {group_size}, "
                            f"{block}, {damp})", where=WHERE)
    dtype = code_dtype(bits, unsigned=not symmetric)
    qmax = 2 ** (bits - 1) - 1
    qmin, qmax = (-qmax, qmax) if symmetric else code_range(dtype)
    g = group_size

    dead = np.flatnonzero(np.diag(h) == 0)
    h[dead, dead] = 1.0
    h[np.diag_indices(k)] += damp * float(np.mean(np.diag(h)))
    perm = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(k)

    groups = math.ceil(k / g) if g else 1
    scale = np.ones((groups, n), dtype=F32)
    zp = np.zeros((groups, n))

    def choose(j: int, rows: np.ndarray) -> None:
        if clip and not symmetric:  # the group's range by the least squared error (numerics)
            sc, z = mse_params(rows, rows.shape[0], qmin, qmax)
            scale[j], zp[j] = sc[0], z[0]
            return
        lo, hi = group_range(rows, axis=1, group_size=0)
        scale[j], zp[j] = (symmetric_params(lo, hi, bits) if symmetric
                           else affine_params(lo, hi, qmin, qmax))

    static = act_order or not g
    if static:
        for j in range(groups):
            choose(j, w64[j * g:(j + 1) * g] if g else w64)

    wp = w64[perm]
    u = inverse_hessian_factor(h[np.ix_(perm, perm)])
    codes = np.empty((k, n), dtype=np.int32)
    bounds = _boundaries(k, block, 0 if static else g)
    for i1, i2 in zip(bounds[:-1], bounds[1:]):
        if not static and i1 % g == 0:
            choose(i1 // g, wp[i1:i1 + g])
        err = np.empty((i2 - i1, n))
        for i in range(i1, i2):
            j = perm[i] // g if g else 0
            s = scale[j].astype(np.float64)
            q = np.clip(np.rint(wp[i] / s) + zp[j], qmin, qmax)
            e = (wp[i] - (q - zp[j]) * s) / u[i, i]
            wp[i + 1:i2] -= np.outer(u[i, i + 1:i2], e)
            err[i - i1] = e
            codes[i] = q
        wp[i2:] -= u[i1:i2, i2:].T @ err

    out = np.empty_like(codes)
    out[perm] = codes
    zps = zp.astype(np.int32).astype(dtype)
    if g:
        return QuantizedTensor(out.astype(dtype), scale, zps, 0, g, symmetric)
    return QuantizedTensor(out.astype(dtype), scale[0], zps[0], 1, 0, symmetric)
