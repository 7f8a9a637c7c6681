"""Mixed precision: when the quantized model misses its output budget on the check's inputs,
the layers whose quantization costs the output most move up a ladder of finer forms.

Noise is measured, not guessed: the float graph and the quantized graph run on the check's
inputs (exported, in ONNX Runtime; the reference interpreter for torch-only graphs), and for
each float output ``o`` the noise ``sum (y_q - y)^2`` is divided by what the budget allows,
``sum y^2 / 10^(B / 10)``; the model meets the budget when the largest of these ratios is at
most 1. When it does not, each quantized layer's own contribution is measured by quantizing it
alone (one run per layer); noise powers of independent rounding errors add, so the layers are
promoted, largest contribution first, until the sum of what is left (promoted layers counted
at an estimated fraction of their old noise) is below ``TARGET``; then the model is measured
again, the promoted layers' new contributions are measured, and so on for ``MAX_ROUNDS``.

The ladder: int4 / nf4 -> int8 weight-only -> float; W8A8 per tensor -> per token -> int8
weight-only -> float; static W8A8 / LLM.int8 -> int8 weight-only -> float; embedding tables ->
float. The numeric check that follows is still the judge: a model that misses the budget after
the last round is reported with its worst layers and not written.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..ir.graph import Graph
from .calibration import run_any as _run
from .config import QuantConfig
from .plan import LayerPlan

LADDER = {"int4": "int8-weight", "nf4": "int8-weight", "w8a8-dynamic": "w8a8-per-token",
          "w8a8-per-token": "int8-weight", "w8a8-static": "int8-weight",
          "llm-int8": "int8-weight", "int8-weight": "float", "embedding-int8": "float"}
# the fraction of a layer's noise expected to remain one step up the ladder (for the
# prediction only: promoted layers are measured again)
REMAINS = {"int8-weight": 0.01, "w8a8-per-token": 0.5, "float": 0.0}
TARGET = 0.7
MAX_ROUNDS = 4


def finer(p: LayerPlan) -> LayerPlan:
    """The plan one step up the ladder."""
    from . import numerics as nx

    nxt = LADDER[p.form]
    was = f"promoted from {p.form} (mixed precision: its output noise)"
    if nxt == "float":
        return LayerPlan(p.layer, reason=f"kept float: {was}")
    if nxt == "w8a8-per-token":
        return replace(p, form=nxt, detail=f"int8 per token, {was}", sqnr_db=None,
                       check_sqnr_db=None)
    qt = nx.quantize_absmax(p.layer.weight.astype(np.float32), bits=8, axis=1)
    return LayerPlan(p.layer, "int8-weight", qt, detail=f"int8 per channel, {was}")


class NoiseMeter:
    """Normalized output noise of candidate graphs against the float graph's outputs."""

    def __init__(self, g: Graph, feeds: Mapping[str, np.ndarray], min_db: float) -> None:
        self.feeds = dict(feeds)
        ref = _run(g, self.feeds)
        self.float_idx = [i for i, y in enumerate(ref) if np.asarray(y).dtype.kind == "f"]
        self.ref = [np.asarray(ref[i], np.float64) for i in self.float_idx]
        self.allowed = [max(float(np.sum(y[np.isfinite(y)] ** 2)), 1e-30) / 10 ** (min_db / 10)
                        for y in self.ref]
        self.runs = 0

    def __call__(self, g: Graph) -> float:
        self.runs += 1
        outs = _run(g, self.feeds)
        worst = 0.0
        for i, y, a in zip(self.float_idx, self.ref, self.allowed):
            d = np.asarray(outs[i], np.float64) - y
            fin = np.isfinite(d)
            if not fin.all():
                return float("inf")
            worst = max(worst, float(np.sum(d ** 2)) / a)
        return worst


def fit_budget(g: Graph, plans: Sequence[LayerPlan], cfg: QuantConfig, target: str,
               feeds: Mapping[str, np.ndarray], res: Any, say: Callable[[str], None]
               ) -> tuple[list[LayerPlan], Any, dict[str, Any] | None]:
    """(plans, rewritten result, report section or None when nothing had to change)."""
    from .stage import apply_plans

    meter = NoiseMeter(g, feeds, cfg.min_sqnr_db)
    if not meter.float_idx:
        return list(plans), res, None
    total = meter(res.graph)
    if total <= 1.0:
        return list(plans), res, None
    plans = list(plans)
    first = total
    noise: dict[int, float] = {}
    promoted: list[dict[str, Any]] = []
    for rnd in range(MAX_ROUNDS):
        todo = [i for i, p in enumerate(plans) if p.quantized and i not in noise]
        for k, i in enumerate(todo):
            say(f"mixed precision: round {rnd + 1}, measuring layer {k + 1}/{len(todo)}")
            alone = [p if j == i else LayerPlan(p.layer, reason="measured alone")
                     for j, p in enumerate(plans)]
            noise[i] = meter(apply_plans(g, alone, target).graph)
        ranked = sorted((i for i, p in enumerate(plans) if p.quantized),
                        key=lambda i: -noise[i])
        left = sum(noise[i] for i in ranked)
        step = []
        for i in ranked:
            if left <= TARGET:
                break
            nxt = LADDER[plans[i].form]
            left -= noise[i] * (1.0 - REMAINS[nxt])
            step.append(i)
        if not step:
            break
        for i in step:
            old = plans[i]
            plans[i] = finer(old)
            promoted.append({"name": old.layer.name, "from": old.form,
                             "to": plans[i].form if plans[i].quantized else "float",
                             "output_noise": round(noise.pop(i), 4), "round": rnd + 1})
        res = apply_plans(g, plans, target)
        total = meter(res.graph)
        say(f"mixed precision: round {rnd + 1}: {len(step)} layers promoted, output noise "
            f"{total:.2f} of the budget")
        if total <= 1.0:
            break
    return plans, res, {
        "before": {"noise_of_budget": round(first, 4),
                   "sqnr_db": round(cfg.min_sqnr_db - 10 * float(np.log10(first)), 2)},
        "after": {"noise_of_budget": round(total, 4),
                  "sqnr_db": round(cfg.min_sqnr_db - 10 * float(np.log10(max(total, 1e-30))),
                                   2)},
        "promoted": promoted, "model_runs": meter.runs}

