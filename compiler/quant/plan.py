"""Per-layer quantization decisions: the only inexact step.

For each layer (``layers.find_layers``) the planner chooses scales and rounds the weights
(``compiler/quant`` numerics: absmax, zero-point, GPTQ, AWQ, NF4, SmoothQuant, LLM.int8), decides
whether the layer is quantized at all (LM head, cost model, shapes the form needs) and measures
the layer's own output error on the calibration activations:

    SQNR_layer = 10 log10(sum (X W)^2 / sum (X W - Y_q)^2)

where ``Y_q`` is what the quantized layer computes from the same float input ``X`` (activation
quantization included). The rewrite rules then only build what the plan says
(``passes/quantize.py``), and the exact lowering rules (proven) take it to integer kernels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import numerics as nx
from .layers import Layer


@dataclass
class LayerPlan:
    layer: Layer
    form: str = "float"  # "float" | "w8a8-dynamic" | "w8a8-per-token" | "w8a8-static" |
    # "int8-weight" | "int4" | "nf4" | "embedding-int8" | "llm-int8"
    weight: Any = None  # numerics.QuantizedTensor or nf4.NF4Tensor
    act_scale: float | None = None  # static activation scale (w8a8-static)
    smooth: np.ndarray | None = None  # per input channel s: x / s, diag(s) W (smoothquant, awq)
    outliers: np.ndarray | None = None  # llm-int8: input columns kept float
    rest_weight: Any = None  # llm-int8: the quantized W[rest]
    outlier_weight: np.ndarray | None = None  # llm-int8: W[outliers], float
    sqnr_db: float | None = None  # the layer's own output SQNR on the calibration rows
    check_sqnr_db: float | None = None  # ... and on the check's inputs
    reason: str = ""  # why the layer stays float
    detail: str = ""

    @property
    def quantized(self) -> bool:
        return self.form != "float"

    @property
    def bytes_before(self) -> int:
        return int(self.layer.weight.nbytes)

    @property
    def bytes_after(self) -> float:
        if not self.quantized:
            return float(self.bytes_before)
        if self.form == "llm-int8":
            assert self.outlier_weight is not None
            return float(self.rest_weight.nbytes()) + float(self.outlier_weight.nbytes)
        return float(self.weight.nbytes())

    def bits_per_weight(self) -> float | None:
        if not self.quantized:
            return None
        return 8.0 * self.bytes_after / self.layer.weight.size

    def to_dict(self) -> dict[str, Any]:
        lay = self.layer
        d: dict[str, Any] = {"name": lay.name, "kind": "lm_head" if lay.lm_head else lay.kind,
                             "shape": list(lay.shape), "mode": self.form,
                             "bytes_before": self.bytes_before,
                             "bytes_after": round(self.bytes_after, 1)}
        if self.quantized:
            d["bits_per_weight"] = round(float(self.bits_per_weight() or 0.0), 3)
            for key, v in (("sqnr_db", self.check_sqnr_db if self.check_sqnr_db is not None
                            else self.sqnr_db), ("calibration_sqnr_db", self.sqnr_db)):
                d[key] = None if v is None else round(float(v), 2)
            if self.detail:
                d["detail"] = self.detail
        else:
            d["left_float"] = self.reason
        return d


def quantized_output(p: LayerPlan, x: np.ndarray) -> np.ndarray:
    """What the planned linear computes from float input rows x [n, K]: the numpy twin of the
    fake-quant form passes/quantize.py builds (activation quantization included)."""
    if p.form == "llm-int8":
        assert p.outliers is not None and p.outlier_weight is not None
        rest = np.setdiff1d(np.arange(x.shape[-1]), p.outliers)
        return (nx.quantize_per_token_int8(x[:, rest]).dequantize() @ p.rest_weight.dequantize()
                + x[:, p.outliers] @ p.outlier_weight)
    xs = x if p.smooth is None else x / p.smooth[None, :]
    if p.form == "w8a8-dynamic":
        xs = nx.dynamic_quantize_u8(xs).dequantize()
    elif p.form == "w8a8-per-token":
        xs = nx.quantize_per_token_int8(xs).dequantize()
    elif p.form == "w8a8-static":  # int8 codes stored as u8 with zero point 128, as in the IR
        assert p.act_scale is not None
        xs = nx.encode(xs, np.float32(p.act_scale), np.uint8(128)).dequantize()
    return xs @ p.weight.dequantize()


def layer_sqnr(p: LayerPlan, x: np.ndarray) -> float:
    """The layer's own output SQNR on input rows x: float x @ W against ``quantized_output``."""
    return nx.sqnr_db(x @ p.layer.weight.astype(np.float32), quantized_output(p, x))


def summarize(plans: Sequence[LayerPlan]) -> dict[str, Any]:
    """Totals over the plans: bytes, bits per weight of the quantized linears, layer counts."""
    q = [p for p in plans if p.quantized]
    lin = [p for p in q if p.layer.kind == "linear"]
    before = sum(p.bytes_before for p in plans)
    after = sum(p.bytes_after for p in plans)
    out: dict[str, Any] = {
        "layers": len(plans), "quantized": len(q), "left_float": len(plans) - len(q),
        "weight_bytes_before": before, "weight_bytes_after": round(after, 1),
        "weight_ratio": round(before / after, 3) if after else None}
    if lin:
        out["quantized_linear_bits_per_weight"] = round(
            8.0 * sum(p.bytes_after for p in lin) / sum(p.layer.weight.size for p in lin), 3)
    def measured(p: LayerPlan) -> float | None:
        return p.check_sqnr_db if p.check_sqnr_db is not None else p.sqnr_db

    sq = [p for p in q if measured(p) is not None]
    if sq:
        worst = min(sq, key=lambda p: measured(p) or 0.0)
        out["worst_layer"] = {"name": worst.layer.name,
                              "sqnr_db": round(float(measured(worst) or 0.0), 2)}
    return out
