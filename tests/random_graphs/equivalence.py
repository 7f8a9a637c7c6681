"""One random graph through the full pipeline, judged against the unoptimized graph.

``check_graph(g)`` runs ``graphopt.optimize(g)`` with every default pass, the target's fusions, a
small deterministic search budget (graphs expanded, no wall clock: the same graph gives the same
result on any machine) and the pipeline's own check; saves the result as an ONNX file; runs the
file's bytes in ONNX Runtime; and compares those outputs with the reference interpreter's on
the unoptimized graph, with ``graphopt.check.compare_outputs`` (the check's tolerances; NaN and
infinity positions must match; integer and bool outputs exactly).

The common path costs one ONNX Runtime session. Only when the written model disagrees (or
cannot run) is the cause looked for: the optimized graph in the interpreter (did the optimizer
change the meaning?) and the unoptimized graph exported and run in ONNX Runtime (does ONNX
Runtime agree with the interpreter on the original at all?). Outcomes (``Outcome.kind``):

* ``ok``: the written model computes what the original computes;
* ``refused``: ``optimize`` (or saving its result) stopped with a clean ``GraphOptError`` (not
  a ``CheckError``); ``reason`` is its class and message with numbers masked, for tallying;
* ``interp_vs_ort``: ONNX Runtime and the interpreter disagree on the *unoptimized* graph (f16
  rounding, say) while the written model computes exactly what the original computes in ONNX
  Runtime: the optimizer kept the meaning; the disagreement is listed, not counted a failure;
* ``skipped``: ONNX Runtime has no kernel for the *original* graph (its export runs nowhere),
  so there is nothing to compare in ONNX Runtime;
* failures: ``semantic_change`` (the optimized graph differs in the interpreter, or the
  pipeline's check raised ``CheckError``), ``export_mismatch`` (the optimized graph is right in
  the interpreter, the original exports right, the written bytes are wrong), ``written_unrunnable``
  (the original runs in ONNX Runtime, the written model does not), ``backend_disagreement``
  (ONNX Runtime and the interpreter already disagree on the unoptimized graph: an exporter or
  interpreter bug, and the written model differs from the original in ONNX Runtime too),
  ``crash`` (any raw exception).
"""
from __future__ import annotations

import os
import re
import tempfile
import traceback
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from graphopt.check import (CheckResult, compare_outputs, make_inputs, onnx_session,
                            precision_dtypes, run_graph, run_onnx_graph, run_session)
from graphopt.errors import CheckError, GraphOptError
from graphopt.ir.graph import Graph
from graphopt.search.budget import Budget

FAILURES = ("semantic_change", "export_mismatch", "written_unrunnable", "backend_disagreement",
            "crash")
KINDS = ("ok", "refused", "skipped", "interp_vs_ort") + FAILURES
DEFAULT_SEARCH_GRAPHS = 4  # graphs the search expands per random graph (TASO's budget unit)


@dataclass
class Outcome:
    """What happened to one graph: ``kind`` (one of ``KINDS``), a one-line ``reason`` for
    anything but ``ok``, ``detail`` (a longer explanation: mismatch summary or traceback) and
    ``fired``: rewrites that applied, keyed ``pass.counter`` or ``search:rule`` with counts."""

    kind: str
    reason: str = ""
    detail: str = ""
    fired: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.kind in FAILURES


def mask_numbers(msg: str) -> str:
    """A message with its numbers, shapes and value names masked, so refusals tally by kind."""
    first = msg.splitlines()[0] if msg else ""
    first = re.sub(r"%[\w.]+", "%v", first)
    first = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", first)
    return first[:160]


def fired_rewrites(report: dict[str, Any]) -> dict[str, int]:
    """The rewrites a report says applied: the passes' counters and the search's rules."""
    out = {k: int(v) for k, v in (report.get("rewrites") or {}).items()}
    for rule, n in ((report.get("search") or {}).get("rules_applied") or {}).items():
        out[f"search:{rule}"] = int(n)
    return out


def _compare(expected: Sequence[np.ndarray], actual: Sequence[np.ndarray], names: Sequence[str],
             dtypes: Sequence[Any]) -> CheckResult:
    return compare_outputs(expected, actual, names, dtypes=dtypes)


def _written_bytes(om: Any) -> bytes:
    """The optimized model as ``OptimizedModel.save`` writes it, read back from the file."""
    with tempfile.TemporaryDirectory(prefix="graphopt-random-") as d:
        path = os.path.join(d, "model.onnx")
        om.save(path)
        with open(path, "rb") as f:
            return f.read()


def _ort_no_kernel(e: BaseException) -> bool:
    from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as OrtNotImplemented

    return isinstance(e, OrtNotImplemented) or "NOT_IMPLEMENTED" in str(e)


def check_graph(g: Graph, seed: int = 0, search_graphs: int = DEFAULT_SEARCH_GRAPHS,
                target: str = "cpu") -> Outcome:
    """Optimize ``g`` through the full pipeline and judge the written model (see the module
    docstring). Never raises: a raw exception is the outcome ``crash``."""
    try:
        return _check(g, seed, search_graphs, target)
    except Exception as e:  # noqa: BLE001 - any raw exception is the finding
        return Outcome("crash", f"{type(e).__name__}: {mask_numbers(str(e))}",
                       traceback.format_exc())


def _check(g: Graph, seed: int, search_graphs: int, target: str) -> Outcome:
    import graphopt

    feeds = make_inputs(g, seed)
    expected = run_graph(g, feeds, "numpy")
    try:
        om = graphopt.optimize(g, target=target, inputs=feeds,
                               budget=Budget(seconds=None, max_graphs=search_graphs))
    except CheckError as e:
        return Outcome("semantic_change", f"the pipeline's check: {mask_numbers(e.message)}",
                       str(e))
    except GraphOptError as e:
        return Outcome("refused", f"{type(e).__name__}: {mask_numbers(e.message)}", str(e))
    fired = fired_rewrites(om.report)
    opt = om.graph
    names = g.output_names
    dts = precision_dtypes(g, opt)
    try:
        data = _written_bytes(om)
    except GraphOptError as e:
        return Outcome("refused", f"save: {type(e).__name__}: {mask_numbers(e.message)}",
                       str(e), fired)
    try:
        got = run_session(onnx_session(data), feeds)
    except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own classes
        return _unrunnable(g, feeds, e, fired)
    res = _compare(expected, got, names, dts)
    if res.ok:
        return Outcome("ok", fired=fired)
    return _diagnose(g, opt, feeds, expected, got, res, fired)


def _unrunnable(g: Graph, feeds: dict[str, np.ndarray], err: BaseException,
                fired: dict[str, int]) -> Outcome:
    """The written model does not run in ONNX Runtime: does the original?"""
    try:
        run_onnx_graph(g, feeds)
    except Exception as e:  # noqa: BLE001
        if _ort_no_kernel(e):
            return Outcome("skipped", f"ONNX Runtime cannot run the original: "
                           f"{mask_numbers(str(e))}", str(e), fired)
        return Outcome("backend_disagreement", f"the original's export does not run: "
                       f"{type(e).__name__}: {mask_numbers(str(e))}", str(e), fired)
    return Outcome("written_unrunnable", f"{type(err).__name__}: {mask_numbers(str(err))}",
                   str(err), fired)


def _diagnose(g: Graph, opt: Graph, feeds: dict[str, np.ndarray],
              expected: list[np.ndarray], got: list[np.ndarray], res: CheckResult,
              fired: dict[str, int]) -> Outcome:
    """The written model disagrees with the interpreter on the original: whose fault?"""
    names = g.output_names
    dts = precision_dtypes(g, opt)
    in_interp = _compare(expected, run_graph(opt, feeds, "numpy"), names, dts)
    if not in_interp.ok:
        return Outcome("semantic_change", _first_reason(in_interp),
                       "interpreter, optimized vs original:\n" + in_interp.summary(), fired)
    try:
        orig_ort = run_onnx_graph(g, feeds)
    except Exception as e:  # noqa: BLE001
        if _ort_no_kernel(e):
            return Outcome("skipped", f"ONNX Runtime cannot run the original: "
                           f"{mask_numbers(str(e))}", str(e), fired)
        raise
    ref = _compare(expected, orig_ort, names, precision_dtypes(g))
    if not ref.ok:
        same_in_ort = _compare(orig_ort, got, names, dts)
        return Outcome("interp_vs_ort" if same_in_ort.ok else "backend_disagreement",
                       _first_reason(ref),
                       "ONNX Runtime vs interpreter on the original:\n" + ref.summary() +
                       "\nwritten vs original, both in ONNX Runtime: " +
                       ("agree" if same_in_ort.ok else "\n" + same_in_ort.summary()), fired)
    return Outcome("export_mismatch", _first_reason(res),
                   "written model (ONNX Runtime) vs original:\n" + res.summary(), fired)


def _first_reason(res: CheckResult) -> str:
    bad = [o for o in res.outputs if not o.ok]
    return mask_numbers(bad[0].reason) if bad else ""
