"""Linear quantization of tensors in the layouts ONNX QuantizeLinear / DequantizeLinear use.

A quantized tensor is integer codes ``q`` plus a f32 ``scale`` and a ``zero_point`` of the codes'
dtype, with

    dequantize(q) = (q - zero_point) * scale            (scale, zero_point broadcast)
    quantize(w)   = saturate(rint(w / scale) + zero_point)   (rint: half to even, as ONNX)

in one of three granularities, named by ONNX's ``axis`` / ``block_size`` attributes:

* per tensor: ``scale`` has shape ``()`` (``axis`` is irrelevant: 1, ONNX's default, is kept,
  and an exporter leaves the attribute out);
* per channel: ``scale`` has shape ``[w.shape[axis]]``; for a linear layer ``y = x @ W`` with
  ``W [K, N]`` the output channels are ``axis=1`` (one scale per column);
* blocked: blocks of ``block_size`` consecutive elements along ``axis`` (for ``W [K, N]``:
  ``axis=0``, groups of ``g`` input features within one column); ``scale`` has the input's shape
  with ``shape[axis]`` replaced by ``ceil(shape[axis] / block_size)``; the last block may be
  partial.

Parameters are chosen from the range of each group, always widened to contain 0 so that the
real zero is exactly representable (and so that padding a partial block with zeros changes
nothing):

* symmetric ("absmax"): ``scale = max|w| / (2^(b-1) - 1)``, zero point 0, codes in
  ``[-(2^(b-1) - 1), 2^(b-1) - 1]``;
* affine ("zero point"): ``scale = (hi - lo) / (qmax - qmin)`` with ``lo = min(0, min w)``,
  ``hi = max(0, max w)``, ``zero_point = rint(qmin - lo / scale)`` (in ``[qmin, qmax]``).

An all-zero group gets scale 1 (never 0 or NaN). Everything is computed from the f32 value of
the input (the dtype ONNX quantizes), so ``encode`` gives bit for bit what QuantizeLinear gives
for the same parameters.

Error facts (exact arithmetic): every element is within ``scale / 2`` of its dequantized value
(a value that saturates lies within ``scale / 2`` of the end of the range, because the range
covers the data up to the zero point's rounding), hence for ``y = x @ W``

    |x @ W - x @ deq(W)| <= |x| @ (scale / 2)                               (weight only)
    |x @ W - deq(x) @ deq(W)| <= (s_x / 2) * sum_k |deq(W)_kn| + |x| @ (scale / 2)   (W8A8)

Evaluating the forms in f32 adds rounding of relative size ~1e-7 per operation on top.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import GraphOptError

F32 = np.float32
TINY = float(np.finfo(np.float32).tiny)  # the smallest scale used (a nonzero group never gets 0)
BITS = (4, 8)
WHERE = "quant"


def code_dtype(bits: int, unsigned: bool) -> np.dtype:
    """The numpy dtype of ``bits``-bit codes: int8 / uint8, or ml_dtypes int4 / uint4."""
    if bits == 8:
        return np.dtype(np.uint8 if unsigned else np.int8)
    if bits == 4:
        import ml_dtypes

        return np.dtype(ml_dtypes.uint4 if unsigned else ml_dtypes.int4)
    raise GraphOptError(f"{bits}-bit codes are not supported (ONNX has 4- and 8-bit integer "
                        f"types; choose bits from {BITS})", where=WHERE)


def code_bits(dtype: np.dtype) -> int:
    """8 for int8 / uint8, 4 for int4 / uint4."""
    name = np.dtype(dtype).name
    if name in ("int8", "uint8"):
        return 8
    if name in ("int4", "uint4"):
        return 4
    raise GraphOptError(f"{name} is not a quantized code dtype", where=WHERE)


def code_range(dtype: np.dtype) -> tuple[int, int]:
    """(qmin, qmax) of a code dtype: the range ONNX QuantizeLinear saturates to."""
    bits = code_bits(dtype)
    if np.dtype(dtype).name.startswith("u"):
        return 0, 2 ** bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def expand(param: np.ndarray, shape: tuple[int, ...], axis: int, block_size: int) -> np.ndarray:
    """A per-tensor / per-channel / blocked parameter broadcast against a tensor of ``shape``
    (what DequantizeLinear does with its scale and zero point)."""
    param = np.asarray(param)
    if param.ndim == 0:
        return param
    if block_size:
        return np.repeat(param, block_size, axis=axis).take(np.arange(shape[axis]), axis=axis)
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return param.reshape(view)


@dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """Codes plus the f32 scale and zero point exactly as ONNX DequantizeLinear consumes them
    (see the module docstring for the layouts). ``symmetric``: the zero point is 0 by
    construction, so an exported form may leave it out (DequantizeLinear's default)."""

    q: np.ndarray  # codes: int8 / uint8 / ml_dtypes.int4 / ml_dtypes.uint4
    scale: np.ndarray  # f32: () per tensor, [n] per channel, blocked: shape with ceil'd axis
    zero_point: np.ndarray  # the shape of scale, the dtype of q
    axis: int = 1  # ONNX's axis attribute (per channel: the channel axis; blocked: the block axis)
    block_size: int = 0  # 0 unless blocked
    symmetric: bool = False
    # clipped ranges (``quantize_zeropoint(clip=True)``): per group (the scale's shape), how far
    # the farthest value lies beyond half a step from its dequantization (it saturated)
    clip_excess: np.ndarray | None = None

    @property
    def bits(self) -> int:
        return code_bits(self.q.dtype)

    @property
    def granularity(self) -> str:
        """"tensor", "channel" or "block"."""
        if self.block_size:
            return "block"
        return "tensor" if np.ndim(self.scale) == 0 else "channel"

    def expanded(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, zero point as f32), each broadcast against ``q``."""
        shape = self.q.shape
        return (expand(self.scale, shape, self.axis, self.block_size),
                expand(self.zero_point.astype(F32), shape, self.axis, self.block_size))

    def dequantize(self) -> np.ndarray:
        """(q - zero_point) * scale in f32, as DequantizeLinear computes it."""
        scale, zp = self.expanded()
        return ((self.q.astype(F32) - zp) * scale).astype(F32)

    def error_bound(self) -> np.ndarray:
        """Per element, the largest |w - dequantize()| for the w this was quantized from, in
        exact arithmetic: half a step, ``scale / 2`` (f32 rounding adds ~1e-7 relative), plus
        the group's saturation excess when its range was clipped."""
        half = self.expanded()[0] / F32(2)
        if self.clip_excess is not None:
            half = half + expand(self.clip_excess.astype(F32), self.q.shape, self.axis,
                                 self.block_size)
        return np.broadcast_to(half, self.q.shape)

    def nbytes(self) -> float:
        """Stored size: codes at their bit width (a 4-bit code counts half a byte), f32 scales,
        and zero points at the codes' width (none when symmetric)."""
        code = self.q.size * self.bits / 8
        zps = 0.0 if self.symmetric else self.zero_point.size * self.bits / 8
        return code + 4.0 * np.size(self.scale) + zps

    def bits_per_weight(self) -> float:
        return 8.0 * self.nbytes() / self.q.size


# ---- parameters -----------------------------------------------------------------------------

def as_f32(w: Any, what: str = "tensor") -> np.ndarray:
    """``w`` as a finite f32 array (quantization parameters of inf / NaN mean nothing)."""
    a = np.asarray(w, dtype=F32)
    if not np.all(np.isfinite(a)):
        raise GraphOptError(f"cannot quantize a {what} with non-finite values", where=WHERE)
    return a


def check_layout(shape: tuple[int, ...], axis: int | None, group_size: int
                 ) -> tuple[int | None, int]:
    """The normalized (axis, block size) of a request; blocked defaults to axis 0."""
    if group_size < 0:
        raise GraphOptError(f"group_size must be >= 0, got {group_size}", where=WHERE)
    if group_size and axis is None:
        axis = 0
    if axis is not None:
        if not shape:
            raise GraphOptError("a scalar can only be quantized per tensor (axis=None)",
                                where=WHERE)
        if not -len(shape) <= axis < len(shape):
            raise GraphOptError(f"axis {axis} is out of range for shape {list(shape)}",
                                where=WHERE)
        axis %= len(shape)
    return axis, group_size


def group_range(w: np.ndarray, axis: int | None, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) per group: lo = min(0, min w), hi = max(0, max w), in the scale's shape.
    Per tensor when axis is None; per channel along axis; blocked along axis when group_size."""
    w64 = w.astype(np.float64)
    if axis is None:
        return w64.min(initial=0.0), w64.max(initial=0.0)
    if not group_size:
        other = tuple(a for a in range(w.ndim) if a != axis)
        return w64.min(axis=other, initial=0.0), w64.max(axis=other, initial=0.0)
    moved = np.moveaxis(w64, axis, 0)
    n = moved.shape[0]
    blocks = max(1, math.ceil(n / group_size))
    pad = np.zeros((blocks * group_size - n,) + moved.shape[1:])
    grouped = np.concatenate([moved, pad]).reshape((blocks, group_size) + moved.shape[1:])
    lo = grouped.min(axis=1, initial=0.0)
    hi = grouped.max(axis=1, initial=0.0)
    return np.moveaxis(lo, 0, axis), np.moveaxis(hi, 0, axis)


def symmetric_params(lo: np.ndarray, hi: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(scale f32, zero point 0) of absmax quantization: scale = max|w| / (2^(b-1) - 1)."""
    absmax = np.maximum(hi, -lo)
    return _guard(absmax / (2 ** (bits - 1) - 1), absmax), np.zeros(np.shape(absmax))


def affine_params(lo: np.ndarray, hi: np.ndarray, qmin: int, qmax: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(scale f32, zero point as float integers) of affine quantization onto [qmin, qmax]:
    scale = (hi - lo) / (qmax - qmin), zero_point = rint(qmin - lo / scale)."""
    scale = _guard((hi - lo) / (qmax - qmin), hi - lo)
    zp = np.clip(np.rint(qmin - lo / scale.astype(np.float64)), qmin, qmax)
    return scale, zp


def _guard(scale: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """f32 scales: 1 for an all-zero group, at least the smallest normal f32 otherwise."""
    s = np.asarray(scale, dtype=np.float64)
    return np.where(np.asarray(spread) == 0, 1.0, np.maximum(s, TINY)).astype(F32)


def encode(w: Any, scale: Any, zero_point: Any, axis: int | None = None, block_size: int = 0,
           symmetric: bool = False) -> QuantizedTensor:
    """QuantizeLinear: saturate(rint(w / scale) + zero_point) onto the zero point's dtype's full
    range, with the given parameters (``zero_point`` must already have the code dtype)."""
    w32 = as_f32(w)
    scale = np.asarray(scale, dtype=F32)
    zp = np.asarray(zero_point)
    qmin, qmax = code_range(zp.dtype)
    if scale.shape != zp.shape:
        raise GraphOptError(f"scale {list(scale.shape)} and zero point {list(zp.shape)} differ "
                            "in shape", where=WHERE)
    ax = 1 if axis is None else axis
    s = expand(scale, w32.shape, ax, block_size)
    z = expand(zp.astype(F32), w32.shape, ax, block_size)
    q = np.clip(np.rint(w32 / s) + z, qmin, qmax)
    return QuantizedTensor(q.astype(np.int32).astype(zp.dtype), scale, zp, ax, block_size,
                           symmetric)


def quantize_absmax(w: Any, bits: int = 8, axis: int | None = None, group_size: int = 0
                    ) -> QuantizedTensor:
    """Symmetric quantization to signed ``bits``-bit codes in [-(2^(b-1)-1), 2^(b-1)-1], zero
    point 0: per tensor (axis None), per channel (``axis``), or in blocks of ``group_size`` along
    ``axis`` (default 0: for W [K, N], groups of input features within each column)."""
    w32 = as_f32(w, "weight")
    axis, g = check_layout(w32.shape, axis, group_size)
    scale, zp = symmetric_params(*group_range(w32, axis, g), bits)
    return encode(w32, scale, zp.astype(code_dtype(bits, False)), axis, g, symmetric=True)


def quantize_zeropoint(w: Any, bits: int = 8, axis: int | None = None, group_size: int = 0,
                       unsigned: bool = True, clip: bool = False) -> QuantizedTensor:
    """Affine quantization with a rounded zero point (u8 / u4 codes, or int8 / int4 when not
    ``unsigned``); granularity as for ``quantize_absmax``. The real zero is exactly
    representable (it is code ``zero_point``). ``clip`` (2-D weights blocked along axis 0):
    each group's range is shrunk by the factor of ``CLIP_GRID`` that minimizes the group's
    squared error (``mse_params``) instead of covering every value."""
    w32 = as_f32(w, "weight")
    axis, g = check_layout(w32.shape, axis, group_size)
    dtype = code_dtype(bits, unsigned)
    if clip and w32.ndim == 2 and axis == 0 and g:
        scale, zp = mse_params(w32, g, *code_range(dtype))
        qt = encode(w32, scale, zp.astype(np.int32).astype(dtype), axis, g)
        return replace(qt, clip_excess=clip_excess(w32, qt))
    scale, zp = affine_params(*group_range(w32, axis, g), *code_range(dtype))
    return encode(w32, scale, zp.astype(np.int32).astype(dtype), axis, g)


def clip_excess(w: np.ndarray, qt: QuantizedTensor) -> np.ndarray:
    """Per group of a blocked-along-axis-0 [K, N] layout: max(0, max |w - deq| - scale / 2)."""
    k, n = w.shape
    g = qt.block_size
    err = np.abs(w.astype(np.float64) - qt.dequantize()) - qt.expanded()[0] / 2.0
    blocks = max(1, math.ceil(k / g))
    pad = np.zeros((blocks * g, n))
    pad[:k] = np.maximum(err, 0.0)
    return pad.reshape(blocks, g, n).max(axis=1).astype(F32)


# range shrink factors tried by the clipping search (1.0 first: never worse than the full range)
CLIP_GRID = tuple(float(r) for r in np.linspace(1.0, 0.6, 21))


def mse_params(w: np.ndarray, group_size: int, qmin: int, qmax: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Affine (scale, zero point) per group of ``group_size`` rows of each column of W [K, N]
    ([ceil(K/g), N] each), the range [lo, hi] shrunk by the factor of ``CLIP_GRID`` with the
    least squared dequantization error of the group (values beyond the shrunk range saturate;
    trading their error for a finer step is what pays for bell-shaped weights)."""
    w64 = np.asarray(w, dtype=np.float64)
    k, n = w64.shape
    blocks = max(1, math.ceil(k / group_size))
    grouped = np.zeros((blocks * group_size, n))
    grouped[:k] = w64
    grouped = grouped.reshape(blocks, group_size, n)
    lo = grouped.min(axis=1, initial=0.0)
    hi = grouped.max(axis=1, initial=0.0)
    best_err = np.full((blocks, n), np.inf)
    best_s = np.ones((blocks, n), dtype=F32)
    best_z = np.zeros((blocks, n))
    for r in CLIP_GRID:
        scale, zp = affine_params(lo * r, hi * r, qmin, qmax)
        s64 = scale.astype(np.float64)[:, None, :]
        q = np.clip(np.rint(grouped / s64) + zp[:, None, :], qmin, qmax)
        err = (((q - zp[:, None, :]) * s64 - grouped) ** 2).sum(axis=1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_s = np.where(better, scale, best_s)
        best_z = np.where(better, zp, best_z)
    return best_s.astype(F32), best_z


# ---- activations ----------------------------------------------------------------------------

def dynamic_quantize_u8(x: Any) -> QuantizedTensor:
    """ONNX DynamicQuantizeLinear: per tensor u8 with scale = (max(0, max x) - min(0, min x)) /
    255 and zero point saturate(rint(-min(0, min x) / scale)); an all-zero x gets scale 1 (as in
    ONNX Runtime). The one difference: a range under 255 times the smallest normal f32 gets that
    smallest normal as its scale, not a subnormal one."""
    x32 = as_f32(x, "activation")
    lo = F32(min(0.0, float(x32.min(initial=0.0))))
    hi = F32(max(0.0, float(x32.max(initial=0.0))))
    scale = F32((hi - lo) / F32(255)) if hi > lo else F32(1.0)
    scale = F32(max(scale, TINY))
    zp = np.uint8(np.clip(np.rint(-lo / scale), 0, 255))
    return encode(x32, np.asarray(scale), np.asarray(zp))


def quantize_per_token_int8(x: Any) -> QuantizedTensor:
    """Symmetric int8 per row of a 2-D x [M, K]: scale = max|row| / 127 (ONNX axis 0)."""
    x32 = as_f32(x, "activation")
    if x32.ndim != 2:
        raise GraphOptError(f"per-token quantization takes x [M, K], got shape {list(x32.shape)}"
                            " (flatten the leading axes first)", where=WHERE)
    return quantize_absmax(x32, bits=8, axis=0)


def quantize_per_tensor_int8(x: Any) -> QuantizedTensor:
    """Symmetric int8 over the whole tensor: scale = max|x| / 127."""
    return quantize_absmax(x, bits=8)


ACTIVATION_MODES = ("dynamic_u8", "per_token", "per_tensor")


def quantize_activation(x: Any, mode: str) -> QuantizedTensor:
    """x quantized at run time as ``mode`` says: "dynamic_u8" (DynamicQuantizeLinear), "per_token"
    (int8 per row) or "per_tensor" (int8 absmax)."""
    if mode == "dynamic_u8":
        return dynamic_quantize_u8(x)
    if mode == "per_token":
        return quantize_per_token_int8(x)
    if mode == "per_tensor":
        return quantize_per_tensor_int8(x)
    raise GraphOptError(f"unknown activation quantization {mode!r}; one of {ACTIVATION_MODES}",
                        where=WHERE)


def feature_absmax(x: Any) -> np.ndarray:
    """max |x| per feature (last axis) over every other axis: calibration statistics [K]."""
    a = np.abs(np.asarray(x, dtype=np.float64))
    return a.reshape(-1, a.shape[-1]).max(axis=0, initial=0.0)


# ---- error measures and bounds --------------------------------------------------------------

def sqnr_db(reference: Any, approx: Any) -> float:
    """10 log10(sum ref^2 / sum (ref - approx)^2), in float64; inf when equal, -inf when the
    reference is zero and the approximation is not."""
    ref = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(approx, dtype=np.float64)) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def cosine(a: Any, b: Any) -> np.ndarray:
    """Cosine similarity per row (along the last axis), float64; two zero rows count as 1, one
    zero row against a nonzero one as 0."""
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    dot = np.sum(a64 * b64, axis=-1)
    na = np.linalg.norm(a64, axis=-1)
    nb = np.linalg.norm(b64, axis=-1)
    both_zero = (na == 0) & (nb == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(na * nb > 0, dot / (na * nb), 0.0)
    return np.where(both_zero, 1.0, c)


def matmul_error_bound(x: Any, qt: Any) -> np.ndarray:
    """Elementwise bound on |x @ W - x @ deq(W)| for W quantized as ``qt`` (anything with an
    ``error_bound()`` per weight: QuantizedTensor, nf4.NF4Tensor): sum_k |x_k| * e_kn."""
    return np.abs(np.asarray(x, dtype=np.float64)) @ np.asarray(qt.error_bound(), np.float64)


def matmul_error_bound_w8a8(x: Any, qt: Any, x_scale: Any) -> np.ndarray:
    """Elementwise bound on |x @ W - deq(q(x)) @ deq(W)| when x is also quantized with step
    ``x_scale`` (scalar per tensor, or [M] per row of x [M, K]) and covers x's range (dynamic
    quantization): (s_x / 2) * sum_k |deq(W)_kn| + sum_k |x_k| * e_kn."""
    x64 = np.asarray(x, dtype=np.float64)
    xs = np.asarray(x_scale, dtype=np.float64)
    if xs.ndim == 1:
        xs = xs.reshape((-1,) + (1,) * (x64.ndim - 1))
    col = np.abs(np.asarray(qt.dequantize(), dtype=np.float64)).sum(axis=0)
    return (xs / 2.0) * col + matmul_error_bound(x64, qt)
