"""What the attention passes ask the cost model: which of two forms of one attention block runs
faster on the target.

A *form* is a small graph: graph inputs for the block's inputs (q, k, v, a mask) and the nodes
one way of computing the block builds over them (one ``attention`` node; query chunks of it;
a com.microsoft contrib node). ``form_times(forms, target, cost)`` prices each:

* target ``cpu`` (this host; the default cost there is ``"measured"``): the forms of one
  decision are timed together in ONNX Runtime by the profiler's whole-graph entry point
  (``OpProfiler.graph_times``, ``graphopt.cost.profile``): one session each, in ONNX opset 23
  so that ``attention`` is the Attention kernel a fused model exports to, run interleaved
  (round after round, so load from other processes falls on all of them alike), the medians
  cached on disk by the forms' structure and this machine: a block shape is profiled once per
  machine. A form that cannot be run has no price (None).
* any other target, or ``cost="analytic"``: the target's analytic ``CostModel`` prices the form
  graphs (a form holding an ``opaque`` node has no analytic price: None).
* ``cost`` may also be a function ``Graph -> seconds`` (tests, callers with their own model).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from graphopt.cost.measured import HOST, cost_mode, host_profiler
from graphopt.cost.profile import Timing
from graphopt.errors import GraphOptError
from graphopt.ir.graph import Graph, GraphMeta
from graphopt.ir.node import Value, input_node
from graphopt.ir.types import ValueType

FORM_OPSET = 23  # ONNX Attention as one node
_BUDGET_S = 1.0  # timing runs per form: about this long, at least _MIN_REPS
_MIN_REPS = 3
CostFn = Callable[[Graph], float]


def form(types: Sequence[ValueType], build: Callable[[list[Value]], Value]) -> Graph:
    """A form graph: one graph input per type of ``types``, and what ``build`` makes over
    them."""
    ins = [input_node(f"x{i}", t) for i, t in enumerate(types)]
    out = build([n.out for n in ins])
    meta = GraphMeta(opsets=(("", FORM_OPSET), ("com.microsoft", 1)))
    return Graph(ins, [out], ["y"], "form", meta)


def form_times(forms: Sequence[Graph], target: str = HOST, cost: Any = None
               ) -> list[float | None]:
    """Seconds per run of each form on ``target`` (None where it has no price); ``cost``: None
    (measured on this host, analytic elsewhere), "measured", "analytic" or ``Graph -> s``."""
    mode = cost_mode(target, cost)
    if callable(mode):
        return [float(mode(g)) for g in forms]
    if mode == "measured":
        if target != HOST:
            raise GraphOptError(f"measured costs exist for this host only (target {HOST!r}), "
                                f"not {target!r}", where="attention cost")
        got = host_profiler().graph_times(forms, opset=FORM_OPSET, budget_s=_BUDGET_S,
                                          min_reps=_MIN_REPS)
        return [t.seconds if isinstance(t, Timing) else None for t in got]
    if mode != "analytic":
        raise GraphOptError(f"unknown cost {mode!r} (analytic, measured, or a function)",
                            where="attention cost")
    from graphopt.cost.model import CostModel

    model = CostModel(target)
    return [None if any(n.op == "opaque" for n in g.nodes) else model(g) for g in forms]


def describe_time(t: float) -> str:
    return f"{t * 1e3:.3g} ms"

