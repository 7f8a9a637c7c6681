"""The quantize step of ``optimize``: find layers -> calibrate -> plan (the inexact step) ->
rewrite (smoothing / outlier split, exact; quantize, inexact; integer lowering, exact) ->
cleanup. Returns the graph and the report section ``report["quantization"]``."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..ir.graph import Graph
from ..ir.node import ConstData, constant, input_node, op
from ..ir.types import TensorType
from .config import WEIGHT_ONLY, QuantConfig, QuantError
from .layers import Layer, find_layers
from .plan import LayerPlan, layer_sqnr, summarize


def quantize_step(g: Graph, cfg: QuantConfig, target: str = "cpu", calibration: Any = None,
                  progress: Callable[[str], None] | None = None,
                  check_feeds: "dict[str, np.ndarray] | None" = None
                  ) -> tuple[Graph, dict[str, Any], list[Any]]:
    """Returns the quantized graph, the report section and the rewrite passes' records (their
    candidates: every layer quantized, or why not). ``check_feeds``: the inputs the numeric check will run on; each layer's own output SQNR
    is measured on them too (the report's ``sqnr_db``; ``calibration_sqnr_db`` beside it)."""
    from .calibration import collect, load_batches
    from .planner import plan_layers

    say = progress or (lambda msg: None)
    layers = find_layers(g)
    if not layers:
        raise QuantError("nothing to quantize: the model has no matmul with a constant 2-D "
                         "float weight and no embedding table (gather of a constant 2-D "
                         "float table)", where=f"graph {g.name}")
    say(f"calibrating {sum(lay.kind == 'linear' for lay in layers)} linears")
    batches, source = load_batches(g, calibration, cfg)
    stats = collect(g, layers, batches, cfg)
    say(f"planning {len(layers)} layers ({cfg.describe()})")
    plans = plan_layers(layers, stats, cfg, cost=_probe(cfg, target),
                        progress=lambda msg: say(f"planning {msg}"))
    if not any(p.quantized for p in plans):
        why = "; ".join(sorted({p.reason for p in plans}))
        raise QuantError(f"nothing to quantize: every layer stays float ({why})",
                         where=f"graph {g.name}")
    say("rewriting")
    res = apply_plans(g, plans, target)
    mixed: dict[str, Any] | None = None
    if cfg.mixed_precision and check_feeds is not None:
        from .mixed import fit_budget

        plans, res, mixed = fit_budget(g, plans, cfg, target, check_feeds, res, say)
        if not any(p.quantized for p in plans):
            from ..errors import CheckError

            assert mixed is not None
            raise CheckError(
                f"the output SQNR budget {cfg.min_sqnr_db:g} dB cannot be met with any layer "
                f"quantized ({cfg.mode}: {mixed['before']['sqnr_db']} dB with every planned "
                f"layer; mixed precision moved all {len(mixed['promoted'])} to float); lower "
                f"the budget with max_error / --max-error", where=f"graph {g.name}")
    # each quantized linear's own SQNR, measured after mixed precision settled its form: on the
    # calibration rows (a promoted layer's new form too) and on the check's inputs
    check_rows = collect(g, [p.layer for p in plans if p.quantized], [check_feeds], cfg) \
        if check_feeds is not None else {}
    for p in plans:
        if not (p.quantized and p.layer.kind == "linear"):
            continue
        if p.sqnr_db is None and id(p.layer.node) in stats:
            p.sqnr_db = layer_sqnr(p, stats[id(p.layer.node)].rows)
        if id(p.layer.node) in check_rows:
            p.check_sqnr_db = layer_sqnr(p, check_rows[id(p.layer.node)].rows)
    out = res.graph
    report = {"mode": cfg.mode, "config": _config_dict(cfg), "calibration": source,
              "min_sqnr_db": cfg.min_sqnr_db,
              "layers": [p.to_dict() for p in plans], "summary": summarize(plans)}
    if mixed is not None:
        report["mixed_precision"] = mixed
    return out, report, list(res.records)


def apply_plans(g: Graph, plans: Sequence[LayerPlan], target: str) -> Any:
    """Rewrite ``g`` as the plans say: smoothing and outlier splits (exact), quantize.layer
    (inexact), the integer lowerings (exact), cleanup. Returns the PipelineResult."""
    from graphopt.passes.quant_lowering import QuantLowering, cleanup_after_quantize
    from graphopt.passes.quantize import (FoldScaleIntoNorm, Quantize, Smoothing,
                                          SplitOutliers, plan_key)

    from ..rewrite.passes import Pipeline

    by_key: dict[tuple[int, str], LayerPlan] = {}
    smooth: dict[int, tuple[np.ndarray, ConstData]] = {}
    split: dict[int, tuple[np.ndarray, np.ndarray, ConstData, ConstData]] = {}
    for p in plans:
        lay = p.layer
        key = plan_key(lay.weight_node.const, lay.kind)
        if p.smooth is not None:
            cd = ConstData((lay.weight * p.smooth[:, None]).astype(lay.weight.dtype))
            smooth[id(lay.weight_node.const)] = (p.smooth, cd)
            by_key[plan_key(cd, "linear")] = p
        elif p.form == "llm-int8":
            cols = np.asarray(p.outliers, np.int64)
            rest = np.setdiff1d(np.arange(lay.shape[0]), cols).astype(np.int64)
            w_out = ConstData(np.ascontiguousarray(lay.weight[cols]))
            w_rest = ConstData(np.ascontiguousarray(lay.weight[rest]))
            split[id(lay.weight_node.const)] = (cols, rest, w_out, w_rest)
            by_key[plan_key(w_rest, "linear")] = LayerPlan(
                lay, "w8a8-per-token", p.rest_weight, sqnr_db=p.sqnr_db, detail=p.detail)
        else:
            by_key[key] = p
    passes: list[Any] = []
    if smooth:
        passes += [Smoothing(smooth), FoldScaleIntoNorm()]
    if split:
        passes.append(SplitOutliers(split))
    passes += [Quantize(by_key), QuantLowering()]
    if _is_gpu(target):
        from graphopt.passes.quant_lowering import QuantGpuLowering

        passes.append(QuantGpuLowering())
    passes += cleanup_after_quantize()
    return Pipeline(passes, name="quantize").run_traced(g)


def _is_gpu(target: str) -> bool:
    from ..cost.devices import get_device

    return get_device(target).kind == "gpu"


def _config_dict(cfg: QuantConfig) -> dict[str, Any]:
    d = {"mode": cfg.mode, "activations": cfg.activations if cfg.mode == "int8" else None,
         "group_size": cfg.group_size if cfg.mode == "int4" else None,
         "method": cfg.method if cfg.mode == "int4" else None,
         "embeddings": cfg.embeddings, "lm_head": cfg.lm_head}
    return {k: v for k, v in d.items() if v is not None}


def _probe(cfg: QuantConfig, target: str) -> Callable[[Layer, LayerPlan], str | None]:
    """Whether a planned layer is worth it: weight-only modes (size) quantize layers of at least
    ``min_weight_elements`` weights; W8A8 modes ask the target's cost model whether the lowered
    integer form is at most as expensive as the float matmul."""
    from ..cost.model import CostModel

    model = CostModel(target) if cfg.use_cost_model else None

    def probe(lay: Layer, p: LayerPlan) -> str | None:
        if cfg.mode in WEIGHT_ONLY or p.form in WEIGHT_ONLY:
            if lay.weight.size < cfg.min_weight_elements:
                return (f"too small to pay: {lay.weight.size} weights "
                        f"(min_weight_elements={cfg.min_weight_elements})")
            return None
        if model is None:
            return None
        t_float, t_quant = layer_times(model, lay, p, target)
        if t_quant > t_float:
            return (f"cost model ({target}): integer form {t_quant * 1e6:.1f}us vs float "
                    f"{t_float * 1e6:.1f}us")
        return None

    return probe


def layer_times(model: Any, lay: Layer, p: LayerPlan, target: str) -> tuple[float, float]:
    """(float, quantized) estimated seconds of one layer alone: the float matmul, and what
    ``apply_plans`` makes of it (smoothing, outlier split, fake-quant form, integer lowering)."""
    t = lay.x.type
    assert isinstance(t, TensorType)
    x = input_node("x", t)
    flt = Graph([x], [op("matmul", x.out, constant(ConstData(lay.weight)))])
    w = lay.weight_node.out
    layer = Graph([x], [op("matmul", x.out, op("transpose", w, perm=(1, 0))
                                       if lay.transposed else w)])
    return model(flt), model(apply_plans(layer, [p], target).graph)
