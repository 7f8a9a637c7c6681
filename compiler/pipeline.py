"""The named steps of ``optimize()``: load -> verify -> simplify -> (search, target passes: later)
-> check -> report. Each step is timed and announced to an optional progress callback."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

from .errors import GraphOptError
from .ir.graph import Graph
from .rewrite.passes import Pass, Pipeline

TARGETS = ("cpu", "a100", "h100", "h200")

# (step name, None) when a step starts; (step name, seconds) when it ends
Progress = Callable[[str, "float | None"], None]
T = TypeVar("T")


def check_target(target: str) -> str:
    t = str(target).lower()
    if t not in TARGETS:
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


def lift(src: Source) -> Graph:
    """Frontend: the source as an IR graph."""
    if src.kind == "graph":
        return src.model
    if src.kind == "onnx":
        from .frontends import onnx as onnx_frontend

        return onnx_frontend.load(src.model)
    from .frontends import fx

    return fx.from_module(src.model, src.example_inputs)


def default_passes() -> list[Pass]:
    """Cleanup, canonical forms, cleanup again (run to a fixed point by ``optimize``)."""
    from graphopt.passes.canonicalize import Canonicalize
    from graphopt.passes.cleanup import cleanup_passes

    return [*cleanup_passes(), Canonicalize(), *cleanup_passes()]


def pass_by_name(name: str) -> list[Pass]:
    from graphopt.passes import canonicalize, cleanup

    table: dict[str, Callable[[], list[Pass]]] = {
        "cleanup": cleanup.cleanup_passes,
        "canonicalize": lambda: [canonicalize.Canonicalize()],
        "constant_fold": lambda: [cleanup.ConstantFold()],
        "cse": lambda: [cleanup.CSE()],
        "remove_noops": lambda: [cleanup.RemoveNoOps()],
        "dead_code": lambda: [cleanup.DeadCode()],
        "default": default_passes,
    }
    if name not in table:
        raise GraphOptError(f"unknown pass {name!r}; known: {', '.join(sorted(table))}",
                            where="passes")
    return table[name]()


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


def check_against(src: Source, original: Graph, g: Graph, inputs: Any) -> Any:
    """Numeric check of ``g`` against the source model itself (raises CheckError)."""
    from . import check

    if src.kind == "onnx":
        return check.check_onnx(src.model, g, inputs, graph_for_inputs=original)
    if src.kind == "torch":
        return check.check_torch(src.model, g, src.example_inputs, inputs)
    return check.check_graphs(original, g, inputs)


def run(src: Source, target: str = "cpu", passes: Sequence[Any] | None = None,
        check: bool = True, inputs: Any = None, progress: Progress | None = None
        ) -> PipelineOutput:
    from .ir.verify import verify
    from .report import build_report

    target = check_target(target)
    steps = Steps(progress)
    original = steps.run("load", lambda: lift(src))
    steps.run("verify", lambda: verify(original))
    pipe = Pipeline(resolve_passes(passes), name="simplify", fixed_point=True,
                    progress=(lambda p, it: progress(f"simplify: {p} (round {it})", None))
                    if progress else None)
    simplified = steps.run("simplify", lambda: pipe.run_traced(original))
    g = simplified.graph
    # search (cost-model rewrites) and target passes come here in later issues
    chk = steps.run("check", lambda: check_against(src, original, g, inputs)) if check else None
    report = build_report(source=src.label, target=target, before=original, after=g,
                          passes=[r.to_dict() for r in simplified.records], steps=steps.times,
                          check=chk.to_dict() if chk is not None else None)
    return PipelineOutput(g, original, report, src)
