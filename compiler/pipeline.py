"""The named steps of ``optimize()``: load -> verify -> simplify -> fuse -> search -> check ->
report. Each step is timed and announced to an optional progress callback."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

from .errors import GraphOptError
from .ir.graph import Graph
from .rewrite.passes import Pass, Pipeline
from .rewrite.rule import PatternRule

TARGETS = ("cpu", "a100", "h100", "h200")

# (step name, None) when a step starts; (step name, seconds) when it ends
Progress = Callable[[str, "float | None"], None]
T = TypeVar("T")


def check_target(target: str) -> str:
    t = str(target).lower()
    from .cost.devices import device_names

    if t not in TARGETS and t not in device_names():  # user-registered device profiles too
        raise GraphOptError(f"unknown target {target!r}; valid targets: {', '.join(TARGETS)}",
                            where="target")
    return t


@dataclass
class Source:
    """What the user gave ``optimize()``: an ONNX model (path or proto), a torch module, or a
    graph."""

    kind: str  # "onnx" | "torch" | "graph"
    model: Any
    label: str
    example_inputs: tuple[Any, ...] | None = None


def resolve_source(model: Any, example_inputs: Any = None) -> Source:
    if isinstance(model, Graph):
        return Source("graph", model, f"graph {model.name}")
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.exists(path):
            from .errors import FrontendError

            raise FrontendError("no such file", where=path)
        return Source("onnx", path, path)
    if "onnx" in sys.modules and isinstance(model, sys.modules["onnx"].ModelProto):
        return Source("onnx", model, f"ONNX model {model.graph.name or '(unnamed)'}")
    if "torch" in sys.modules and isinstance(model, sys.modules["torch"].nn.Module):
        if example_inputs is None:
            raise GraphOptError("a torch module needs example_inputs (a tuple of tensors)",
                                where=type(model).__name__)
        ex = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (
            example_inputs,)
        return Source("torch", model, type(model).__name__, ex)
    raise GraphOptError(f"cannot optimize a {type(model).__name__}: give an nn.Module with "
                        f"example_inputs, an .onnx path, an onnx.ModelProto or a Graph")


def lift(src: Source, dynamic: bool = False, fold_initializer_inputs: bool = False) -> Graph:
    """Frontend: the source as an IR graph. dynamic: a torch module is exported with symbolic
    batch and sequence dims (the KV-cache rewrite needs the sequence axis).
    fold_initializer_inputs: an ONNX model's IR >= 4 initializers listed as graph inputs are
    constants (default: inputs with the initializer as default, as ONNX Runtime treats them)."""
    if src.kind == "graph":
        return src.model
    if src.kind == "onnx":
        from .frontends import onnx as onnx_frontend

        return onnx_frontend.load(src.model, fold_initializer_inputs=fold_initializer_inputs)
    from .frontends import fx

    return fx.from_module(src.model, src.example_inputs, dynamic=dynamic)


def default_passes() -> list[Pass]:
    """Cleanup, canonical forms, cleanup again (run to a fixed point by ``optimize``)."""
    from graphopt.passes.canonicalize import Canonicalize
    from graphopt.passes.cleanup import cleanup_passes

    return [*cleanup_passes(), Canonicalize(), *cleanup_passes()]


def pass_by_name(name: str) -> list[Pass]:
    from graphopt.passes import canonicalize, cleanup, skip_norm_fusion

    table: dict[str, Callable[[], list[Pass]]] = {
        "cleanup": cleanup.cleanup_passes,
        "canonicalize": lambda: [canonicalize.Canonicalize()],
        "constant_fold": lambda: [cleanup.ConstantFold()],
        "cse": lambda: [cleanup.CSE()],
        "remove_noops": lambda: [cleanup.RemoveNoOps()],
        "dead_code": lambda: [cleanup.DeadCode()],
        "default": default_passes,
        "attention_flash": _attention_flash,
        "matmul_fusion": _matmul_fusion,
        "matmul_merge": lambda: [_fusion("matmul_fusion", "MatmulMerge")],
        "merge_parallel": lambda: [_fusion("merge_parallel", "MergeParallel")],
        "merge_grouped_conv": lambda: [_fusion("merge_grouped_conv", "MergeGroupedConv")],
        "merge_conv_sum": lambda: [_fusion("merge_conv_sum", "MergeConvSum")],
        "merge_separable_sum": lambda: [_fusion("merge_separable_sum", "MergeSeparableSum")],
        "conv_through_pool": lambda: [_fusion("conv_through_pool", "ConvThroughPool")],
        "merge_gates": lambda: [_fusion("merge_gates", "MergeGates")],
        "split_heads": lambda: [_fusion("split_heads", "SplitHeads")],
        "attention_chunking": _attention_chunking,
        # the query chunks passes/rules/attention_chunking.rules states (2 rows, no cost model)
        "query_chunks_2rows": lambda: _attention_chunking(chunk_rows=2),
        # by name: every block with a contrib form (fusion_passes runs it in mode auto)
        "ort_contrib_attention": _ort_contrib_attention,
        "rms_norm_fusion": lambda: [_fusion("norm_fusion", "RmsNormFusion")],
        "gelu_fusion": lambda: [_fusion("gelu_fusion", "GeluFusion")],
        "rotary_fusion": lambda: [_fusion("rotary_fusion", "RotaryFusion")],
        "silu_fusion": lambda: [_fusion("silu_fusion", "SiluFusion")],
        # by name: every place with a contrib form (fusion_passes runs it in mode auto)
        "skip_norm_fusion": lambda: [skip_norm_fusion.SkipNormFusion("always")],
        # quantization's exact rules that need no plan (passes/quantize.py, quant_lowering.py)
        "quant_lowering": lambda: [_fusion("quant_lowering", "QuantLowering")],
        "smoothing_fold": lambda: [_fusion("quantize", "FoldScaleIntoNorm")],
        "quant_gpu_lowering": lambda: [_fusion("quant_lowering", "QuantGpuLowering")],
        # tensor parallelism's pushdown rules and the fused-projection split before planning
        "tensor_parallel": lambda: [_tp("pushdown_pass")],
        "tensor_parallel_unmerge": lambda: [_tp("unmerge_pass")],
    }
    if name not in table:
        raise GraphOptError(f"unknown pass {name!r}; known: {', '.join(sorted(table))}",
                            where="passes")
    return table[name]()


def _attention_flash() -> list[Pass]:
    from graphopt.passes.attention_flash import AttentionFlash
    from graphopt.passes.cleanup import cleanup_passes

    return [AttentionFlash(), *cleanup_passes()]


def _matmul_fusion() -> list[Pass]:
    from graphopt.passes.matmul_fusion import MatmulFusion

    return [MatmulFusion()]


def _fusion(module: str, cls: str) -> Pass:
    import importlib

    return getattr(importlib.import_module(f"graphopt.passes.{module}"), cls)()


def _tp(fn: str) -> Pass:
    import importlib

    return getattr(importlib.import_module("graphopt.passes.tensor_parallel"), fn)()


def _attention_chunking(chunk_rows: int | None = None) -> list[Pass]:
    from graphopt.passes.attention_chunking import AttentionChunking

    return [AttentionChunking(options={"chunk_rows": chunk_rows} if chunk_rows else None)]


def _ort_contrib_attention() -> list[Pass]:
    from graphopt.passes.ort_attention import OrtContribAttention

    return [OrtContribAttention("always")]


def resolve_passes(passes: Sequence[Any] | None) -> list[Pass]:
    if passes is None:
        return default_passes()
    out: list[Pass] = []
    for p in passes:
        if isinstance(p, str):
            out += pass_by_name(p)
        elif isinstance(p, Pass):
            out.append(p)
        else:
            raise GraphOptError(f"{p!r} is neither a Pass nor a pass name", where="passes")
    return out


class Steps:
    """Runs named steps, timing each and telling the progress callback."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.progress = progress
        self.times: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], T]) -> T:
        if self.progress:
            self.progress(name, None)
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        self.times[name] = self.times.get(name, 0.0) + dt
        if self.progress:
            self.progress(name, dt)
        return out


@dataclass
class PipelineOutput:
    graph: Graph
    original: Graph
    report: dict[str, Any]
    source: Source
    candidates: list[Any]  # every place a rule looked at (rewrite.trace.Candidate), in order
    kv: Any = None  # graphopt.kv.stage.KVResult with kv_cache


def check_against(src: Source, original: Graph, g: Graph, inputs: Any,
                  min_sqnr_db: float | None = None) -> Any:
    """Numeric check of ``g`` against the source model itself (raises CheckError).
    ``min_sqnr_db``: judge float outputs by an SQNR budget (quantized models)."""
    from . import check

    if src.kind == "onnx":
        return check.check_onnx(src.model, g, inputs, graph_for_inputs=original,
                                min_sqnr_db=min_sqnr_db)
    if src.kind == "torch":
        return check.check_torch(src.model, g, src.example_inputs, inputs,
                                 min_sqnr_db=min_sqnr_db)
    return check.check_graphs(original, g, inputs, min_sqnr_db=min_sqnr_db)


def check_written(src: Source, original: Graph, g: Graph, inputs: Any,
                  min_sqnr_db: float | None = None) -> Any:
    """Numeric check of the ONNX bytes ``onnx_export.save`` will write for ``g`` (run in ONNX
    Runtime with its default session options) against the source, for sources whose check ran
    something else: a Graph (checked with the reference interpreter) or a torch module (checked
    with the torch callable). An ONNX source's check already ran these bytes."""
    from .errors import ExportError, GraphOptError

    try:
        res = _check_written(src, original, g, inputs, min_sqnr_db)
    except GraphOptError:
        raise
    except Exception as e:  # ONNX Runtime cannot load or run what would be written
        msg = " ".join(str(e).split())[:500] or type(e).__name__
        raise ExportError(f"ONNX Runtime cannot run the model as it would be written, so it is "
                          f"not written: {msg}", where=f"graph {g.name}") from e
    if res is not None:
        res.raise_if_failed("the ONNX model as written")
    return res


def _check_written(src: Source, original: Graph, g: Graph, inputs: Any,
                   min_sqnr_db: float | None) -> Any:
    from . import check

    if src.kind == "graph":
        res = check.check_graphs(original, g, inputs, backend="onnx", raise_on_mismatch=False,
                                 min_sqnr_db=min_sqnr_db)
    elif src.kind == "torch":
        import numpy as np
        import torch

        feeds = check_feeds(src, original, inputs)
        args = [torch.from_numpy(np.array(feeds[n])) for n in original.input_names] \
            if inputs is not None or src.example_inputs is None else list(src.example_inputs)
        exp = check.torch_outputs_to_numpy(check.seeded_call(src.model, args))
        act = check.run_onnx_graph(g, feeds)
        res = check.compare_outputs(exp, act, g.output_names, min_sqnr_db=min_sqnr_db,
                                    reference=f"{src.label} (torch)",
                                    dtypes=check.precision_dtypes(g) if len(exp) == len(
                                        g.outputs) else None)
    else:
        return None
    return res


def fuse_passes(target: str, allow_contrib_ops: bool) -> list[Pass]:
    """The target's fusion passes (attention, norms, GELU, matmul merges), then cleanup."""
    from graphopt.passes.cleanup import cleanup_passes
    from graphopt.passes.fusions import fusion_passes

    return [*fusion_passes(target, allow_contrib_ops), *cleanup_passes()]


def raise_opset_for_fused_ops(g: Graph) -> Graph:
    """Export fused ops as one ONNX node each: the graph's default opset is raised to what they
    need (``OpDef.onnx_min_opset``; below it the exporter would write them back as
    compositions), to what any node needs to have an ONNX form at all
    (``OpDef.onnx_opset_for``: pad mode wrap, pooling dilations), and to 21 where 4-bit tensors
    (quantized weights) appear."""
    from dataclasses import replace

    from .ir.types import DType, TensorType
    from .ops.registry import onnx_opset_needed, onnx_opset_required

    need = max(onnx_opset_needed(n.op for n in g.nodes), onnx_opset_required(g.nodes))
    if any(isinstance(t, TensorType) and t.dtype in (DType.u4, DType.i4)
           for n in g.nodes for t in n.out_types):
        need = max(need, 21)  # ONNX's INT4 / UINT4 types (and Cast from them) begin at opset 21
    have = g.meta.opset("") or 0
    if need <= have:
        return g
    opsets = tuple((d, need if d == "" else v) for d, v in g.meta.opsets)
    if not any(d == "" for d, _ in opsets):
        opsets = (("", need), *opsets)
    return Graph(g.inputs, g.outputs, g.output_names, g.name, replace(g.meta, opsets=opsets))


def check_feeds(src: Source, original: Graph, inputs: Any) -> dict[str, Any]:
    """The inputs ``check_against`` runs on, as numpy arrays by input name."""
    from .check import coerce_inputs

    if src.kind == "torch" and inputs is None and src.example_inputs is not None:
        import numpy as np

        return {n: np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
                for n, x in zip(original.input_names, src.example_inputs)}
    return coerce_inputs(original, inputs, 0)


def worst_layers(quant_rep: dict[str, Any], k: int = 3) -> str:
    rows = [r for r in quant_rep.get("layers", []) if r.get("sqnr_db") is not None]
    rows.sort(key=lambda r: r["sqnr_db"])
    return ", ".join(f"{r['name']} {r['sqnr_db']:.1f} dB ({r['mode']})" for r in rows[:k]) \
        or "none measured"


def search_rules(g: Graph | None = None, mode: str | None = None,
                 target: str | None = None) -> list[PatternRule]:
    """The search's rule set: the generated rules both ways (for ``g``, the directions whose
    left side uses only ops ``g`` has; None: all), then the hand-written search rules of the
    pass modules (``passes/merge_parallel.py``, ``passes/taso_family.py``,
    ``passes/split_heads.py``). ``mode="backtrack"``: without the rules the backtracking search
    leaves out (``taso_family.NOT_IN_BACKTRACKING``); None or "egraph": all of them. ``target``:
    the head-layout rules that target's runtime runs well (``split_heads.rules_for``)."""
    from graphopt.passes import split_heads, taso_family
    from graphopt.passes.merge_parallel import RULES

    from .search.ruleset import default_rules, graph_ops

    out = (default_rules(ops=None if g is None else graph_ops(g)) + list(RULES)
           + split_heads.rules_for(target) + taso_family.rules_for(target))
    if mode == "backtrack":
        out = [r for r in out if r.name not in taso_family.NOT_IN_BACKTRACKING]
    return out


def search_rules_left_out(g: Graph | None = None, mode: str | None = None,
                          target: str | None = None) -> dict[str, str]:
    """The hand-written search rules ``search_rules(g, mode, target)`` leaves out, each with
    the reason (the search report's ``left_out``); for ``g``, only those whose left side uses
    ops ``g`` has (the others could not have matched)."""
    from graphopt.passes import merge_parallel, split_heads, taso_family

    from .rewrite.pattern import pattern_nodes
    from .search.ruleset import graph_ops

    out = {**split_heads.left_out(target), **taso_family.left_out(target, mode)}
    if g is None:
        return out
    ops = graph_ops(g)
    lhs_ops = {r.name: {n.op for n in pattern_nodes(list(r.lhs))}
               for r in (*merge_parallel.RULES, *split_heads.RULES, *taso_family.RULES)}
    return {n: why for n, why in out.items() if lhs_ops.get(n, set()) <= ops}


def run(src: Source, target: str = "cpu", passes: Sequence[Any] | None = None,
        check: bool = True, inputs: Any = None, progress: Progress | None = None,
        budget: Any = None, rules: Sequence[Any] | None = None, cost: str = "analytic",
        allow_contrib_ops: bool = False, quantize: Any = None,
        calibration: Any = None, kv_cache: Any = None,
        fold_initializer_inputs: bool = False, search: str = "backtrack") -> PipelineOutput:
    from .ir.verify import verify
    from .report import build_report

    target = check_target(target)
    steps = Steps(progress)
    original = steps.run("load", lambda: lift(src, dynamic=kv_cache is not None,
                                              fold_initializer_inputs=fold_initializer_inputs))
    steps.run("verify", lambda: verify(original))
    pipe = Pipeline(resolve_passes(passes), name="simplify", fixed_point=True,
                    progress=(lambda p, it: progress(f"simplify: {p} (round {it})", None))
                    if progress else None)
    simplified = steps.run("simplify", lambda: pipe.run_traced(original))
    g = simplified.graph
    records = list(simplified.records)
    if passes is None:  # an explicit pass list replaces the default simplify + fuse
        fuse = Pipeline(fuse_passes(target, allow_contrib_ops), name="fuse")
        fused = steps.run("fuse", lambda: fuse.run_traced(g))
        g = raise_opset_for_fused_ops(fused.graph)
        records += fused.records
    # search: cost-ordered rewriting with the rule library (budget 0 turns it off)
    search_rep = None
    if budget is None or budget:
        from .search.stage import search_step

        pre_search = g
        g, search_rep = steps.run("search", lambda: search_step(
            g, target, budget=budget, rules=search_rules(g, search, target),
            extra_rules=rules or (),
            cost=cost, mode=search, progress=(lambda msg: progress(f"search: {msg}", None))
            if progress else None))
        search_rep["left_out"] = search_rules_left_out(pre_search, search, target)
    quant_rep = None
    if quantize is not None:
        from .quant.stage import quantize_step

        pre_quant = g
        feeds = check_feeds(src, original, inputs) if check else None
        g, quant_rep, quant_records = steps.run("quantize", lambda: quantize_step(
            pre_quant, quantize, target, calibration,
            progress=(lambda msg: progress(f"quantize: {msg}", None)) if progress else None,
            check_feeds=feeds))
        g = raise_opset_for_fused_ops(g)
        records += quant_records
    min_sqnr = quantize.min_sqnr_db if quantize is not None else None
    chk = steps.run("check", lambda: _checked(src, original, g, inputs, search_rep, min_sqnr,
                                              quant_rep)) if check else None
    report = build_report(source=src.label, target=target, before=original, after=g,
                          passes=[r.to_dict() for r in records], steps=steps.times,
                          check=chk.to_dict() if chk is not None else None)
    report["search"] = search_rep
    kv = None
    if kv_cache is not None:
        from .kv.stage import kv_step

        kv = steps.run("kv_cache", lambda: kv_step(
            g, original, kv_cache, check,
            progress=(lambda msg: progress(f"kv_cache: {msg}", None)) if progress else None,
            allow_contrib_ops=allow_contrib_ops))
        report["kv_cache"] = kv.report
        report["steps"] = {k: round(v, 6) for k, v in steps.times.items()}
    if quant_rep is not None:
        if chk is not None:
            quant_rep["check"] = [{"output": o.name, "sqnr_db": o.sqnr_db} for o in chk.outputs]
        report["quantization"] = quant_rep
    last: dict[str, int] = {}
    for r in records:
        last[r.name] = max(last.get(r.name, 0), r.iteration)
    cands = [c for r in records if r.iteration == last[r.name] for c in r.candidates]
    return PipelineOutput(g, original, report, src, cands, kv)


def _checked(src: Source, original: Graph, g: Graph, inputs: Any,
             search_rep: dict[str, Any] | None, min_sqnr_db: float | None = None,
             quant_rep: dict[str, Any] | None = None) -> Any:
    """The numeric check; a mismatch after rewrites names the rules the search applied, a
    quantized model that misses its SQNR budget names its worst layers."""
    from .errors import CheckError

    try:
        return check_against(src, original, g, inputs, min_sqnr_db)
    except CheckError as e:
        if quant_rep is not None:
            raise CheckError(f"{e.message}; the quantized model is not written; worst layers "
                             f"(their own output SQNR): {worst_layers(quant_rep)} (raise the "
                             f"budget with max_error / --max-error, or choose a finer mode)",
                             where=e.where, context=e.context) from e
        applied = (search_rep or {}).get("rules_applied") or {}
        if not applied:
            raise
        rules = ", ".join(f"{k} x{v}" for k, v in applied.items())
        raise CheckError(f"{e.message} (the search applied: {rules})", where=e.where,
                         context=e.context) from e
