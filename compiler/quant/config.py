"""What the user asked to quantize, and how: ``QuantConfig`` and its validation.

Modes (``optimize(..., quantize=MODE)``, ``graphopt optimize --quantize MODE``):

=============== ==================================================================================
``int8``        W8A8 dynamic: weights int8 per output channel (absmax), activations quantized at
                run time (``activations``: ``per-tensor`` u8 as ONNX DynamicQuantizeLinear,
                ``per-token`` symmetric int8 per row, or ``auto``, the default: per layer,
                per tensor unless per token is over 3 dB better on the calibration data);
                integer matmul, rescaled to float
``int8-weight`` weight-only int8 per output channel; activations stay float
``int4``        weight-only 4-bit, group-wise along the input dim (``group_size``, default 128)
                with zero points; ``method`` rtn (round to nearest), gptq (Hessian from the
                calibration data) or awq (activation-aware channel scaling)
``nf4``         weight-only NF4 codes in blocks of 64 with double-quantized scales (8-bit,
                super-blocks of 256)
``smoothquant`` per-channel smoothing folded into the op before each linear (alpha searched per
                layer on the calibration data), then static W8A8 (activation scales calibrated)
``llm-int8``    activation columns over ``threshold`` (6.0 on the calibration data) through a
                float matmul, the rest int8 (per-token activations, per-channel weights), summed
=============== ==================================================================================

Embedding tables are quantized weight-only int8 per row in every mode (``embeddings=False``
keeps them float); the LM head (a final projection onto the vocabulary) stays float unless
``lm_head=True``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from ..errors import GraphOptError

MODES = ("int8", "int8-weight", "int4", "nf4", "smoothquant", "llm-int8")
METHODS = ("rtn", "gptq", "awq")
ACTIVATIONS = ("auto", "per-tensor", "per-token")
FOUR_BIT = ("int4", "nf4")
WEIGHT_ONLY = ("int8-weight", "int4", "nf4")
# the check's budget: output SQNR vs the float model (dB), per mode
DEFAULT_MIN_SQNR_DB = {"int8": 30.0, "int8-weight": 30.0, "smoothquant": 30.0, "llm-int8": 30.0,
                       "int4": 20.0, "nf4": 20.0}
# modes whose parameters depend on the activations: generated inputs give a warning
NEEDS_DATA = ("smoothquant", "llm-int8")
NF4_BLOCK = 64
NF4_SUPER_BLOCK = 256


class QuantError(GraphOptError):
    """A quantization request that cannot be carried out (bad mode, nothing to quantize,
    calibration data that does not fit the model)."""


@dataclass(frozen=True)
class QuantConfig:
    mode: str
    group_size: int = 128
    method: str = "rtn"
    max_error_db: float | None = None  # None: the mode's default budget
    activations: str = "auto"
    embeddings: bool = True
    lm_head: bool = False
    threshold: float = 6.0  # llm-int8 outlier threshold
    alphas: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # smoothquant search grid
    calibration_rows: int = 2048  # activation rows kept per layer for GPTQ / AWQ / SmoothQuant
    # W8A8 modes: a layer is quantized only where the target's cost model prices the integer
    # form at most the float one (False: every layer; tests at tiny sizes)
    use_cost_model: bool = True
    # weight-only modes (their point is size): layers with fewer weights stay float
    min_weight_elements: int = 4096
    # a model that misses its budget on the check inputs gets the layers that cost its output
    # most moved to finer forms (compiler/quant/mixed.py); False: report the miss as is
    mixed_precision: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def min_sqnr_db(self) -> float:
        return DEFAULT_MIN_SQNR_DB[self.mode] if self.max_error_db is None else self.max_error_db

    @property
    def weight_bits(self) -> int:
        return 4 if self.mode in FOUR_BIT else 8

    @property
    def needs_data(self) -> bool:
        return self.mode in NEEDS_DATA or self.method in ("gptq", "awq")

    def describe(self) -> str:
        bits = f"{self.mode}"
        if self.mode == "int4":
            bits += f" g{self.group_size} {self.method}"
        if self.mode == "int8":
            bits += f" ({self.activations} activations)"
        return bits


def make_config(mode: Any, *, group_size: int | None = None, method: str | None = None,
                max_error: float | None = None, activations: str | None = None,
                embeddings: bool | None = None, lm_head: bool | None = None,
                mixed_precision: bool | None = None, **extra: Any) -> QuantConfig:
    """A validated config from user arguments (``QuantError`` naming the bad one)."""
    if isinstance(mode, QuantConfig):
        return mode
    m = str(mode).lower().replace("_", "-")
    if m not in MODES:
        raise QuantError(f"unknown quantization mode {mode!r}; valid: {', '.join(MODES)}",
                         where="quantize")
    cfg = QuantConfig(m)
    if group_size is not None:
        if int(group_size) < 16 or int(group_size) & (int(group_size) - 1):
            raise QuantError(f"group size must be a power of two >= 16, got {group_size}",
                             where="group_size")
        cfg = replace(cfg, group_size=int(group_size))
    if method is not None:
        if method not in METHODS:
            raise QuantError(f"unknown method {method!r}; valid: {', '.join(METHODS)}",
                             where="method")
        if method != "rtn" and m != "int4":
            raise QuantError(f"method {method} applies to mode int4, not {m}", where="method")
        cfg = replace(cfg, method=method)
    if max_error is not None:
        cfg = replace(cfg, max_error_db=float(max_error))
    if activations is not None:
        if activations not in ACTIVATIONS:
            raise QuantError(f"unknown activation granularity {activations!r}; valid: "
                             f"{', '.join(ACTIVATIONS)}", where="activations")
        cfg = replace(cfg, activations=activations)
    if embeddings is not None:
        cfg = replace(cfg, embeddings=bool(embeddings))
    if lm_head is not None:
        cfg = replace(cfg, lm_head=bool(lm_head))
    if mixed_precision is not None:
        cfg = replace(cfg, mixed_precision=bool(mixed_precision))
    known = {"threshold", "alphas", "calibration_rows", "use_cost_model", "min_weight_elements"}
    bad = sorted(set(extra) - known)
    if bad:
        raise QuantError(f"unknown quantization option(s) {bad}", where="quantize")
    return replace(cfg, **extra) if extra else cfg
