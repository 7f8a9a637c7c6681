"""The KV-cache step of ``optimize(kv_cache=True)``: derive, export, check what is written.

Runs after the numeric check of the optimized graph: the derivation starts from the graph
graphopt would return without a cache (fused attention, rotary, norms), so the cached model
keeps every rewrite. The decode model is exported once to ONNX bytes; those bytes are what the
check runs, what ``OptimizedModel.generate`` runs and what ``save`` writes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import GraphOptError
from ..ir.graph import Graph
from .derive import Derivation, derive

CACHES = ("dynamic", "static", "window")


@dataclass(frozen=True)
class KVOptions:
    """cache: "dynamic" (past + new concatenated each step), "static" (buffers of max_length
    slots allocated once, new rows written in place) or "window" (a rolling buffer of the
    model's sliding window, slot = position mod window). max_length: the longest sequence
    (prompt + new tokens) the derivation is checked for and generation allows."""

    cache: str = "dynamic"
    max_length: int | None = None

    def __post_init__(self) -> None:
        if self.cache not in CACHES:
            raise GraphOptError(f"unknown cache {self.cache!r}; valid: {', '.join(CACHES)}",
                                where="kv_cache")
        if self.max_length is not None and (not isinstance(self.max_length, int)
                                            or self.max_length < 2):
            raise GraphOptError(f"max_length must be an int >= 2, got {self.max_length!r}",
                                where="kv_cache")


def make_options(kv_cache: Any, cache: str | None, max_length: int | None) -> KVOptions | None:
    if isinstance(kv_cache, KVOptions):
        return kv_cache
    if not kv_cache:
        if cache is not None or max_length is not None:
            raise GraphOptError("cache / max_length apply to the KV cache: pass kv_cache=True "
                                "too", where="kv_cache")
        return None
    return KVOptions(cache or "dynamic", max_length)


@dataclass
class KVResult:
    derivation: Derivation
    options: KVOptions
    decode_bytes: bytes                 # the decode model, as written and checked
    ring_bytes: bytes | None = None     # the rolling-buffer decode model (cache="window")
    static_bytes: bytes | None = None   # the static-buffer decode model (cache="static")
    report: dict[str, Any] = field(default_factory=dict)


def kv_step(g: Graph, original: Graph, opts: KVOptions, check: bool = True,
            progress: Callable[[str], None] | None = None,
            allow_contrib_ops: bool = False) -> KVResult:
    from ..frontends import onnx_export
    from .check import check_derivation

    d = derive(g, opts.max_length, ring=opts.cache == "window", static=opts.cache == "static")
    if opts.cache == "window" and d.spec.window is None:
        raise GraphOptError("cache='window' needs a model with a sliding window; this one "
                            "attends to all earlier tokens (use cache='dynamic')",
                            where="kv_cache")
    if progress:
        progress(f"derived {d.spec.num_layers} cached layers")
    d.decode = simplify(d.decode)
    if allow_contrib_ops:  # the folder's decode attention as com.microsoft GroupQueryAttention
        from .contrib import lower_decode

        d.decode, lowered, kept = lower_decode(d.decode, d.spec)
        d.notes.append(f"{lowered} decode attention(s) -> com.microsoft GroupQueryAttention")
        d.notes.extend(kept)
    d.ring = simplify(d.ring) if d.ring is not None else None
    d.static = simplify(d.static) if d.static is not None else None
    decode = onnx_export.to_bytes(d.decode)
    ring = onnx_export.to_bytes(d.ring) if d.ring is not None else None
    static = onnx_export.to_bytes(d.static) if d.static is not None else None
    rep: dict[str, Any] = {"cache": opts.cache, **d.summary(),
                           "masks": _mask_summary(d)}
    if check:
        rep["check"] = check_derivation(original, decode, d.spec)
        if static is not None:
            rep["check_static"] = check_derivation(original, static, d.spec,
                                                   slots=d.spec.context_length,
                                                   what="the static-cache decoder")
        if progress:
            progress("checked prefill + decode steps against the original")
    return KVResult(d, opts, decode, ring, static, rep)


def simplify(g: Graph) -> Graph:
    """The cleanup rules (constant folding, CSE, no-op views) over a derived graph: the
    layout ops left between a cache and its attention (a repeat_kv view pair) go."""
    from graphopt.passes.cleanup import cleanup_passes

    from ..rewrite.passes import Pipeline

    return Pipeline(cleanup_passes(), name="kv_cleanup", fixed_point=True).run(g).graph


def _mask_summary(d: Derivation) -> list[str]:
    out = []
    for att, f in d.masks.items():
        w = f"window {f.window}" if f.window else "all earlier tokens"
        pad = "padding from attention_mask" if f.padding else "no padding"
        out.append(f"{att.where}: causal, {w}, {pad}")
    return out
