"""NF4 (4-bit NormalFloat, QLoRA) weights with optionally double-quantized block scales.

The 16 NF4 values are quantiles of N(0, 1) normalized to [-1, 1] with an exact zero (QLoRA,
asymmetric variant): 8 positive values ``Q(p)`` at 9 evenly spaced probabilities from
``offset`` down to 1/2 (the last, 1/2, dropped), 7 negative ones ``-Q(p)`` at 8 probabilities
from ``offset`` to 1/2 (the last dropped), and 0; everything divided by the largest value. The
offset ``((1 - 1/32) + (1 - 1/30)) / 2`` is the mean of the outermost probabilities the paper
uses for 16 and 15 quantiles, and makes the table match the published one.

Layout, for W [K, N] (y = x @ W): the blocks are ``block`` consecutive input features of one
column, as in the blocked layout of ``numerics`` (ONNX axis 0):

* ``codes``: uint4 [K, N], indices into ``NF4_TABLE``;
* ``absmax``: f32 [ceil(K / block), N], the largest |w| of each block (1 for an all-zero block);
* ``W ~ NF4_TABLE[codes] * repeat(absmax, block, axis=0)[:K]``
  (in ONNX: Gather(table, Cast(codes, int32)) times the block scales, e.g. Reshape to
  [K/block, block, N] and Mul by absmax[:, None, :]).

Double quantization re-quantizes the absmax values, flattened in C order (``absmax.ravel()``,
[ceil(K/block) * N]), to u8 codes with an affine f32 scale and u8 zero point per super-block of
``super_block`` consecutive values (last super-block partial): the 1-D blocked form of ONNX
DequantizeLinear (axis 0, block_size super_block), reshaped back to [ceil(K/block), N]. A u8
zero point keeps 0 inside the range, so for positive absmax values the zero point comes out 0.
With blocks of 64 and super-blocks of 256 this stores 4 + 8/64 + 40/(64*256) = 4.127 bits per
weight.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from ..errors import GraphOptError
from .numerics import F32, QuantizedTensor, as_f32, expand, quantize_zeropoint

WHERE = "quant.nf4"
NF4_OFFSET = ((1 - 1 / 32) + (1 - 1 / 30)) / 2


@lru_cache(maxsize=1)
def nf4_table() -> np.ndarray:
    """The 16 NF4 values, ascending, f32 (index 7 is exactly 0, index 0 is -1, 15 is 1)."""
    from scipy.special import ndtri  # the normal quantile function (scipy.stats.norm.ppf)

    pos = ndtri(np.linspace(NF4_OFFSET, 0.5, 9)[:-1])
    neg = -ndtri(np.linspace(NF4_OFFSET, 0.5, 8)[:-1])
    values = np.sort(np.concatenate([pos, neg, [0.0]]))
    table = (values / values.max()).astype(F32)
    table.flags.writeable = False
    return table


def __getattr__(name: str) -> Any:
    if name == "NF4_TABLE":  # computed on first use, so importing this module stays light
        return nf4_table()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _half_gaps() -> np.ndarray:
    """Per code, half the larger distance to a neighbouring code inside [-1, 1]: the most a
    value in [-1, 1] that rounds to this code can be away from it."""
    t = nf4_table().astype(np.float64)
    gaps = np.diff(t)
    left = np.concatenate([[0.0], gaps])
    right = np.concatenate([gaps, [0.0]])
    return np.maximum(left, right) / 2.0


class NF4Codes(NamedTuple):
    codes: np.ndarray  # uint4 [K, N]
    absmax: np.ndarray  # f32 [ceil(K / block), N]


class DoubleQuant(NamedTuple):
    codes: np.ndarray  # u8 [ceil(K / block) * N]: absmax.ravel() quantized
    scale: np.ndarray  # f32 [ceil(len / super_block)]
    zero_point: np.ndarray  # u8, like scale


def _check_block(block: int, what: str) -> None:
    if block <= 0:
        raise GraphOptError(f"{what} must be positive, got {block}", where=WHERE)


def _check_2d(w: np.ndarray) -> None:
    if w.ndim != 2:
        raise GraphOptError(f"NF4 takes a weight W [K, N], got shape {list(w.shape)}",
                            where=WHERE)


def nearest_code(v: np.ndarray) -> np.ndarray:
    """Index of the nearest NF4 value for each v (values beyond [-1, 1] take the end codes);
    a value exactly between two codes takes the upper one."""
    t = nf4_table().astype(np.float64)
    mids = (t[1:] + t[:-1]) / 2.0
    return np.searchsorted(mids, np.asarray(v, dtype=np.float64), side="right")


def block_absmax(w: np.ndarray, block: int) -> np.ndarray:
    """f32 [ceil(K / block), N]: max |w| per block of ``block`` rows in each column, 1 for an
    all-zero block."""
    k, n = w.shape
    nb = max(1, math.ceil(k / block))
    padded = np.zeros((nb * block, n))
    padded[:k] = np.abs(w)
    amax = padded.reshape(nb, block, n).max(axis=1)
    return np.where(amax == 0, 1.0, amax).astype(F32)


def encode_nf4(w: np.ndarray, absmax: np.ndarray, block: int) -> np.ndarray:
    """uint4 [K, N]: the nearest NF4 code of w / absmax of its block (a block whose absmax is 0,
    possible after double quantization, dequantizes to 0 whatever its codes)."""
    import ml_dtypes

    scale = expand(absmax.astype(np.float64), w.shape, 0, block)
    v = w.astype(np.float64) / np.where(scale > 0, scale, 1.0)
    return nearest_code(v).astype(np.uint8).astype(ml_dtypes.uint4)


def quantize_nf4(w: Any, block: int = 64) -> NF4Codes:
    """NF4 codes [K, N] (nearest value of w / absmax of its block) and the absmax of each block
    of ``block`` rows of one column, [ceil(K / block), N] f32 (see the module docstring)."""
    w32 = as_f32(w, "weight")
    _check_2d(w32)
    _check_block(block, "the NF4 block size")
    absmax = block_absmax(w32, block)
    return NF4Codes(encode_nf4(w32, absmax, block), absmax)


def dequantize_nf4(codes: np.ndarray, absmax: np.ndarray, block: int) -> np.ndarray:
    """f32 [K, N]: NF4_TABLE[codes] * the absmax of each code's block."""
    vals = nf4_table()[np.asarray(codes).astype(np.int64)]
    return (vals * expand(np.asarray(absmax, dtype=F32), vals.shape, 0, block)).astype(F32)


def _absmax_qt(absmax: np.ndarray, super_block: int) -> QuantizedTensor:
    """The flat absmax values as a 1-D blocked u8 QuantizedTensor (axis 0)."""
    _check_block(super_block, "the super-block size")
    flat = np.asarray(absmax, dtype=F32).ravel()
    return quantize_zeropoint(flat, bits=8, axis=0, group_size=super_block, unsigned=True)


def double_quantize(absmax: Any, super_block: int = 256) -> DoubleQuant:
    """The block absmax values, flattened in C order, as u8 codes with an affine f32 scale and
    u8 zero point per super-block of ``super_block`` consecutive values."""
    qt = _absmax_qt(np.asarray(absmax), super_block)
    return DoubleQuant(qt.q, qt.scale, qt.zero_point)


def dequantize_absmax(dq: DoubleQuant, shape: tuple[int, ...], super_block: int = 256
                      ) -> np.ndarray:
    """The absmax values back, f32 of ``shape`` ([ceil(K / block), N])."""
    qt = QuantizedTensor(np.asarray(dq.codes), np.asarray(dq.scale, dtype=F32),
                         np.asarray(dq.zero_point), 0, super_block)
    return qt.dequantize().reshape(shape)


@dataclass(frozen=True, eq=False)
class NF4Tensor:
    """An NF4 weight W [K, N] (layout in the module docstring). ``absmax`` holds the block
    scales actually used; when they are double-quantized, ``absmax_q`` holds their stored form
    and ``absmax`` equals its dequantization."""

    codes: np.ndarray  # uint4 [K, N]
    absmax: np.ndarray  # f32 [ceil(K / block), N]
    block: int
    absmax_q: DoubleQuant | None = None
    super_block: int = 0

    def dequantize(self) -> np.ndarray:
        return dequantize_nf4(self.codes, self.absmax, self.block)

    def error_bound(self) -> np.ndarray:
        """Per element, the largest |w - dequantize()| in exact arithmetic for the w this was
        made from: absmax * half the gap around the chosen code, plus, when the absmax is
        double-quantized, half its step (a value up to that much over the stored absmax
        saturates at the end code)."""
        shape = self.codes.shape
        a = expand(self.absmax.astype(np.float64), shape, 0, self.block)
        bound = a * _half_gaps()[np.asarray(self.codes).astype(np.int64)]
        if self.absmax_q is not None:
            step = expand(np.asarray(self.absmax_q.scale, np.float64), (self.absmax.size,), 0,
                          self.super_block).reshape(self.absmax.shape)
            bound = bound + expand(step / 2.0, shape, 0, self.block)
        return bound

    def nbytes(self) -> float:
        """Codes at 4 bits, plus the absmax: f32 each, or u8 codes with a f32 scale and u8 zero
        point per super-block when double-quantized. The 16-value table is not counted (one
        per model)."""
        code = self.codes.size * 0.5
        if self.absmax_q is None:
            return code + 4.0 * self.absmax.size
        dq = self.absmax_q
        return code + dq.codes.size + 4.0 * dq.scale.size + dq.zero_point.size

    def bits_per_weight(self) -> float:
        return 8.0 * self.nbytes() / self.codes.size


def nf4_tensor(w: Any, block: int = 64, super_block: int = 256) -> NF4Tensor:
    """W [K, N] as NF4 with block scales double-quantized in super-blocks of ``super_block``
    (0: f32 block scales). The codes are chosen against the scales as stored (the dequantized
    absmax), so every code is the nearest one for the value the weight is dequantized with."""
    w32 = as_f32(w, "weight")
    _check_2d(w32)
    _check_block(block, "the NF4 block size")
    absmax = block_absmax(w32, block)
    if not super_block:
        return NF4Tensor(encode_nf4(w32, absmax, block), absmax, block)
    dq = double_quantize(absmax, super_block)
    used = dequantize_absmax(dq, absmax.shape, super_block)
    return NF4Tensor(encode_nf4(w32, used, block), used, block, dq, super_block)

