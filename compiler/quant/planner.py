"""Choose each layer's quantized form (``LayerPlan``) from the config, the calibration
activations and the target's cost model. See ``plan.py`` for what a plan holds."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .calibration import LayerStats
from .config import NF4_BLOCK, NF4_SUPER_BLOCK, QuantConfig
from .layers import Layer
from .plan import LayerPlan, layer_sqnr

# activations="auto": per-tensor activations unless per-token ones are this much better (dB)
AUTO_MARGIN_DB = 3.0
# a cost probe: (layer, plan) -> None when the quantized form is at least as fast, else why not
CostProbe = Callable[[Layer, LayerPlan], "str | None"]


def plan_layers(layers: Sequence[Layer], stats: Mapping[int, LayerStats], cfg: QuantConfig,
                cost: CostProbe | None = None,
                progress: Callable[[str], None] | None = None) -> list[LayerPlan]:
    """One plan per layer, in order. ``stats``: calibration statistics by ``id(layer.node)``
    (linears only). ``progress``: told which layer is being planned (GPTQ takes seconds each)."""
    plans: dict[int, LayerPlan] = {}
    smooth = _smoothing(layers, stats, cfg)
    for i, lay in enumerate(layers):
        if progress is not None:
            progress(f"layer {i + 1}/{len(layers)} {lay.name}")
        st = stats.get(id(lay.node))
        p = _plan_one(lay, st, cfg, smooth.get(id(lay.node)))
        if p.quantized and st is not None and lay.kind == "linear":
            p.sqnr_db = layer_sqnr(p, st.rows)
        if p.quantized and cost is not None and lay.kind == "linear":
            why = cost(lay, p)
            if why:
                p = LayerPlan(lay, reason=why)
        plans[id(lay.node)] = p
    return [plans[id(lay.node)] for lay in layers]


def _plan_one(lay: Layer, st: "LayerStats | None", cfg: QuantConfig,
              smooth: "np.ndarray | None") -> LayerPlan:
    from . import numerics as nx

    if lay.kind == "embedding":
        if not cfg.embeddings:
            return LayerPlan(lay, reason="embeddings kept float (quantize_embeddings=False / "
                                         "--no-quantize-embeddings)")
        if lay.weight.size < cfg.min_weight_elements:
            return LayerPlan(lay, reason=f"too small to pay: {lay.weight.size} weights "
                                         f"(min_weight_elements={cfg.min_weight_elements})")
        qt = nx.quantize_absmax(lay.weight, bits=8, axis=0)
        return LayerPlan(lay, "embedding-int8", qt,
                         sqnr_db=nx.sqnr_db(lay.weight, qt.dequantize()),
                         detail="int8 per row (absmax)")
    if lay.lm_head and not cfg.lm_head:
        return LayerPlan(lay, reason="LM head kept float (quantize_lm_head=True / "
                                     "--quantize-lm-head to quantize it)")
    if st is None:
        return LayerPlan(lay, reason="no calibration activations reached this layer")
    x = st.rows
    w = lay.weight.astype(np.float32)
    mode = cfg.mode
    x_dtype_f32 = lay.x.type.dtype.value == "f32"  # type: ignore[union-attr]
    if mode == "int8":
        if not x_dtype_f32:
            return LayerPlan(lay, reason=f"activations are {lay.x.type.dtype.value}: the W8A8 "  # type: ignore[union-attr]
                             "forms (DynamicQuantizeLinear, per-token codes) take f32 only")
        qt = nx.quantize_absmax(w, bits=8, axis=1)
        tensor = LayerPlan(lay, "w8a8-dynamic", qt,
                           detail="weights int8 per channel, activations u8 per tensor")
        token = LayerPlan(lay, "w8a8-per-token", qt,
                          detail="weights int8 per channel, activations int8 per token")
        if cfg.activations != "auto":
            return tensor if cfg.activations == "per-tensor" else token
        a, b = layer_sqnr(tensor, x), layer_sqnr(token, x)
        if a >= b - AUTO_MARGIN_DB:  # per tensor: fused by ONNX Runtime, the faster form
            tensor.detail += f" (per token would give {b:.1f} dB)"
            return tensor
        token.detail += f" (per tensor only {a:.1f} dB)"
        return token
    if mode == "int8-weight":
        qt = nx.quantize_absmax(w, bits=8, axis=1)
        return LayerPlan(lay, "int8-weight", qt,
                         detail="int8 per channel, activations float")
    if mode == "int4":
        return _plan_int4(lay, x, w, cfg, smooth)
    if mode == "nf4":
        return _plan_nf4(lay, w)
    if mode == "smoothquant":
        assert smooth is not None
        ws = w * smooth[:, None]
        qt = nx.quantize_absmax(ws, bits=8, axis=1)
        amax = float(np.max(np.abs(st.col_absmax / smooth)))
        scale = max(amax, 1e-12) / 127.0
        return LayerPlan(lay, "w8a8-static", qt, act_scale=scale, smooth=smooth,
                         detail=f"alpha {st.extra.get('alpha', '?')}, static activation "
                                f"scale {scale:.3g}")
    if mode == "llm-int8":
        return _plan_llm_int8(lay, st, w, cfg)
    raise AssertionError(mode)


def _plan_int4(lay: Layer, x: np.ndarray, w: np.ndarray, cfg: QuantConfig,
               smooth: "np.ndarray | None") -> LayerPlan:
    from . import numerics as nx

    g = cfg.group_size
    if cfg.method == "gptq":
        from .gptq import gptq_quantize

        h = 2.0 * (x.T.astype(np.float64) @ x.astype(np.float64)) / max(1, x.shape[0])
        qt = gptq_quantize(w, h, bits=4, group_size=g, clip=True)
        return LayerPlan(lay, "int4", qt, detail=f"gptq g{g}")
    if cfg.method == "awq":
        assert smooth is not None
        qt = nx.quantize_zeropoint(w * smooth[:, None], bits=4, axis=0, group_size=g, clip=True)
        return LayerPlan(lay, "int4", qt, smooth=smooth, detail=f"awq g{g}")
    qt = nx.quantize_zeropoint(w, bits=4, axis=0, group_size=g, clip=True)
    return LayerPlan(lay, "int4", qt, detail=f"rtn g{g}, clipped ranges")


def _plan_nf4(lay: Layer, w: np.ndarray) -> LayerPlan:
    from .nf4 import nf4_tensor

    k, _ = w.shape
    if k % NF4_BLOCK:
        return LayerPlan(lay, reason=f"input width {k} is not a multiple of the NF4 block "
                                     f"{NF4_BLOCK}")
    nw = nf4_tensor(w, block=NF4_BLOCK, super_block=NF4_SUPER_BLOCK)
    return LayerPlan(lay, "nf4", nw, detail=f"nf4 block {NF4_BLOCK}, double-quantized scales "
                            f"(super-block {NF4_SUPER_BLOCK})")


def _plan_llm_int8(lay: Layer, st: "LayerStats", w: np.ndarray, cfg: QuantConfig
                   ) -> LayerPlan:
    from . import numerics as nx
    from .llm_int8 import outlier_columns

    cols = np.asarray(outlier_columns(st.col_absmax, cfg.threshold), dtype=np.int64)
    k = w.shape[0]
    if cols.size == k:
        return LayerPlan(lay, reason=f"every input column exceeds the outlier threshold "
                                     f"{cfg.threshold}")
    rest = np.setdiff1d(np.arange(k), cols)
    qt = nx.quantize_absmax(w[rest], bits=8, axis=1)
    return LayerPlan(lay, "llm-int8", qt if cols.size == 0 else None, outliers=cols,
                     rest_weight=qt, outlier_weight=w[cols],
                     detail=f"{cols.size} outlier columns over {cfg.threshold} kept float")


def _smoothing(layers: Sequence[Layer], stats: Mapping[int, LayerStats], cfg: QuantConfig
               ) -> dict[int, np.ndarray]:
    """Per-input-channel scales s (x / s, diag(s) W) for smoothquant and awq, one per group of
    linears reading the same activation (they must share it: the activation is divided once)."""
    if not (cfg.mode == "smoothquant" or (cfg.mode == "int4" and cfg.method == "awq")):
        return {}
    groups: dict[Any, list[Layer]] = {}
    for lay in layers:
        if lay.kind != "linear" or id(lay.node) not in stats:
            continue
        if lay.lm_head and not cfg.lm_head:
            continue
        groups.setdefault(lay.x, []).append(lay)
    out: dict[int, np.ndarray] = {}
    for members in groups.values():
        st = stats[id(members[0].node)]
        w = np.concatenate([m.weight.astype(np.float32) for m in members], axis=1)
        if cfg.mode == "smoothquant":
            from .smoothquant import smoothquant_search

            alpha, s, _err = smoothquant_search(st.rows, w, alphas=cfg.alphas)
            for m in members:
                stats[id(m.node)].extra["alpha"] = alpha
        else:
            from .awq import awq_search

            s, _qt = awq_search(w, st.rows, bits=4, group_size=cfg.group_size, clip=True)
        s = np.asarray(s, dtype=np.float32)
        for m in members:
            out[id(m.node)] = s
    return out
