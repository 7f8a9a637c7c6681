"""What the attention passes ask the cost model: which of two forms of one attention block runs
faster on the target (a cost-model entry point kept here while ``compiler/cost`` is being
reworked; see "Measuring forms" below for why the op profiler alone does not do).

A *form* is a small graph: graph inputs for the block's inputs (q, k, v, a mask) and the nodes
one way of computing the block builds over them (one ``attention`` node; query chunks of it;
a com.microsoft contrib node). ``form_times(forms, target, cost)`` prices each:

* target ``cpu`` (this host; the default cost there is ``"measured"``): each form runs as one
  ONNX Runtime session, in ONNX opset 23 so that ``attention`` is the Attention kernel a fused
  model exports to. The forms of one decision are timed interleaved (round after round, so load
  from other processes falls on all of them alike) and the medians are cached in the op
  profiler's cache file under its machine key (``graphopt.cost.measured``): a block shape is
  profiled once per machine.
* any other target, or ``cost="analytic"``: the target's analytic ``CostModel`` prices the form
  graphs (a form holding an ``opaque`` node has no analytic price: None).
* ``cost`` may also be a function ``Graph -> seconds`` (tests, callers with their own model).

Measuring forms: ``OpProfiler.op_time`` probes one node at a time at the graph's default opset
(18: ``attention`` would run as its MatMul/Softmax composition) and replaces constant inputs by
fresh data (GroupQueryAttention's ``total_sequence_length`` must be the real one), so whole
forms are timed here with the profiler's cache and session settings.
"""
from __future__ import annotations

import hashlib
import statistics
from typing import Any, Callable, Sequence

import numpy as np

from graphopt.cost.measured import OpProfiler
from graphopt.errors import GraphOptError
from graphopt.ir.graph import Graph, GraphMeta
from graphopt.ir.node import Value, input_node
from graphopt.ir.types import TensorType, ValueType

FORM_OPSET = 23  # ONNX Attention as one node
HOST = "cpu"  # the target that is this machine
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


def form_key(g: Graph) -> str:
    """Cache key of a form: its nodes (op, attrs, inputs; constants by their data)."""
    h = hashlib.sha256(b"attention-form/1")
    pos: dict[int, int] = {}
    for i, n in enumerate(g.nodes):
        pos[id(n)] = i
        if n.op == "constant":
            a = np.ascontiguousarray(n.const.array)
            h.update(f"c{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
        else:
            h.update(repr((n.op, n.attrs, [str(t) for t in n.out_types])).encode())
        h.update(repr([(pos[id(v.node)], v.index) for v in n.inputs]).encode())
    return "form:" + h.hexdigest()[:32]


def _feeds(g: Graph, rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {}
    for n in g.inputs:
        t = n.attrs["type"]
        assert isinstance(t, TensorType) and t.is_static
        shape = tuple(int(d) for d in t.shape or ())
        if t.dtype.is_float:
            out[n.attrs["name"]] = rng.standard_normal(shape).astype(t.dtype.to_numpy())
        else:  # masks: keep everything (the kernels' speed does not depend on the pattern)
            out[n.attrs["name"]] = np.ones(shape, t.dtype.to_numpy())
    return out


class FormProfiler(OpProfiler):
    """Times whole form graphs in ONNX Runtime, cached beside the op times."""

    def form_times(self, forms: Sequence[Graph]) -> list[float | None]:
        """Median seconds per run of each form (None: ONNX Runtime cannot run it)."""
        cache = self._load()
        keys = [form_key(g) for g in forms]
        todo = [i for i, k in enumerate(keys) if k not in cache and k not in self.fallbacks]
        if todo:
            for i, t in zip(todo, self._interleaved([forms[i] for i in todo])):
                if t is None:
                    self.fallbacks[keys[i]] = "ONNX Runtime could not run the form"
                else:
                    cache[keys[i]] = t
                    self._dirty = True
                    self.measured += 1
            self.flush()
        return [cache.get(k) for k in keys]

    def _interleaved(self, forms: Sequence[Graph]) -> list[float | None]:
        from graphopt.frontends.onnx_export import to_model

        rng = np.random.default_rng(0)
        runs: list[Callable[[], Any] | None] = []
        for g in forms:
            try:
                sess = self._session(to_model(g, FORM_OPSET))
                feeds = _feeds(g, rng)
                sess.run(None, feeds)  # warm-up (and: does it run at all)
                runs.append(lambda s=sess, f=feeds: s.run(None, f))
            except Exception:  # noqa: BLE001 - a form ONNX Runtime refuses has no time
                runs.append(None)
        live = [r for r in runs if r is not None]
        if not live:
            return [None] * len(forms)
        t0 = self.timer()
        for r in live:
            r()
        one_round = max(self.timer() - t0, 1e-9)
        reps = max(_MIN_REPS, min(self.reps, int(_BUDGET_S * len(live) / one_round)))
        times: list[list[float]] = [[] for _ in runs]
        for _ in range(reps):
            for i, r in enumerate(runs):
                if r is not None:
                    t0 = self.timer()
                    r()
                    times[i].append(self.timer() - t0)
        return [statistics.median(ts) if ts else None for ts in times]


_PROFILERS: dict[str, FormProfiler] = {}


def profiler(target: str = HOST) -> FormProfiler:
    """The form profiler of ``target`` (one per process)."""
    p = _PROFILERS.get(target)
    if p is None:
        p = _PROFILERS[target] = FormProfiler(target)
    return p


def cost_mode(target: str, cost: Any) -> Any:
    """The cost to use: ``cost`` as given, else measured on this host, analytic elsewhere."""
    if cost is not None:
        return cost
    return "measured" if target == HOST else "analytic"


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
        return profiler(target).form_times(forms)
    if mode != "analytic":
        raise GraphOptError(f"unknown cost {mode!r} (analytic, measured, or a function)",
                            where="attention cost")
    from graphopt.cost.model import CostModel

    model = CostModel(target)
    return [None if any(n.op == "opaque" for n in g.nodes) else model(g) for g in forms]


def describe_time(t: float) -> str:
    return f"{t * 1e3:.3g} ms"

