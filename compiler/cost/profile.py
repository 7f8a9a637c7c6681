"""Profiling on this host: single ops and whole graphs timed in ONNX Runtime (or an op's torch
aspect), the times cached on disk.

Public API (what cost models and passes use; the rest of the module is private):

* ``OpProfiler(device, backend, *, cache_path, reps, warmup, threads, timer, opset)``
  - ``price_op(n, opset=None) -> Timing | Unpriced``: one node alone, as a one-node model;
    ``op_time(n, opset=None) -> float | None``: its seconds (None: it cannot be priced);
  - ``graph_times(graphs, *, opset=None, feeds=None, budget_s=1.0, min_reps=3)
    -> list[Timing | Unpriced]``: whole candidate graphs timed interleaved in this process
    (round after round, so load from other processes falls on all of them alike);
  - ``overhead()``: one run's fixed cost (subtracted from op probes; what they resolve);
    ``flush()``: write new timings to the cache file; ``machine()``: the host's cache key;
  - counters ``measured`` (probes run here) and ``hits`` (cache), ``fallbacks`` (key ->
    "cannot be priced: <reason>").
* ``Timing(seconds, spread, runs)``: median and interquartile range of the runs;
  ``Unpriced(reason)``: ``str()`` is "cannot be priced: <reason>". Whatever goes wrong while a
  probe is built or run (ONNX Runtime refusing the model, a kernel failing at run time, a
  symbolic shape) is an ``Unpriced`` value, never an exception.
* ``node_key``, ``graph_key``: structural cache keys; ``probe_graph``: a node alone;
  ``export_opset``: the opset a graph is probed at by default; ``shape_like``.

Opset: ``None`` (the default) probes a graph at the opset the pipeline exports it at: its own
default-domain opset, raised to what its ops need to be one ONNX node each
(``OpDef.onnx_min_opset``, as ``pipeline.raise_opset_for_fused_ops`` does): ``rms_norm`` and
``attention`` run as RMSNormalization / Attention (opset 23), not as the compositions the
exporter writes below it. An integer pins the opset. The opset is part of every key.

Constants: an op probe keeps the node's constant inputs constant (runtimes pre-pack weights);
large ones get fresh data of the same type, small integer ones (``shape_like``: shapes, axes,
GroupQueryAttention's ``total_sequence_length``) keep their values, which are part of the key.
Whole graphs run as they are; their key holds the structure, the types, and the values of
shape-like constants only.

The cache is a JSON file (default ``~/.cache/graphopt/op_costs.json``, or
``$GRAPHOPT_CACHE_DIR/op_costs.json``) with one table per machine (device profile, backend and
version, threads): key -> [seconds, spread, runs]. Failures are remembered in this process only.
"""
from __future__ import annotations

import hashlib
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import GraphOptError
from ..ir.graph import Graph, GraphMeta
from ..ir.node import ConstData, Node, Value, constant, input_node
from ..ir.types import DType, TensorType, numpy_to_torch
from .devices import Device, get_device

CACHE_VERSION = 2
SHAPE_LIKE_MAX_ELEMENTS = 64
DEFAULT_OPSET = GraphMeta().opset("") or 18  # what a graph without its own opset exports at
Feeds = dict[str, np.ndarray]


def default_cache_path() -> Path:
    base = os.environ.get("GRAPHOPT_CACHE_DIR")
    root = Path(base) if base else Path.home() / ".cache" / "graphopt"
    return root / "op_costs.json"


@dataclass(frozen=True)
class Timing:
    """Seconds per run: the median of ``runs`` runs, and their interquartile range."""

    seconds: float
    spread: float
    runs: int

    @staticmethod
    def of(samples: Sequence[float], minus: float = 0.0) -> "Timing":
        med = statistics.median(samples)
        q = statistics.quantiles(samples, n=4) if len(samples) > 1 else [med, med, med]
        return Timing(max(med - minus, 1e-7), max(q[2] - q[0], 0.0), len(samples))


@dataclass(frozen=True)
class Unpriced:
    """Why something has no measured time."""

    reason: str

    def __str__(self) -> str:
        return f"cannot be priced: {self.reason}"


class Unmeasurable(Exception):
    """This node cannot be profiled alone (the reason is kept)."""


def _reason(e: BaseException) -> str:
    if isinstance(e, Unmeasurable):
        return str(e)
    if isinstance(e, GraphOptError):
        return e.one_line()
    text = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {text[:200]}"


# ---- keys and probes ---------------------------------------------------------------------------

def shape_like(c: ConstData) -> bool:
    """A small integer constant (a shape, axes, a sequence length): kept in probes, its values
    part of the keys."""
    return c.dtype.is_int and c.has_array and int(np.prod(c.shape)) <= SHAPE_LIKE_MAX_ELEMENTS


def _const_part(c: ConstData) -> str:
    return f"{c.type}c" + (f"={c.array.tobytes().hex()}" if shape_like(c) else "")


def _need(op: str) -> int:
    from ..ops.registry import onnx_opset_needed

    return onnx_opset_needed([op])


def export_opset(g: Graph) -> int:
    """The default-domain opset ``g`` is exported (and probed) at: its own, raised to what its
    ops need to be one ONNX node each."""
    from ..ops.registry import onnx_opset_needed

    return max(g.meta.opset("") or DEFAULT_OPSET, onnx_opset_needed(n.op for n in g.nodes))


def node_key(n: Node, opset: int | None = None) -> str:
    """Cache key of a node's cost: op, attrs, input types, which inputs are constants (and the
    values of shape-like ones), and the opset of the probe (None: ``n``'s export opset)."""
    parts = [n.op, repr(n.attrs), f"opset{opset or max(DEFAULT_OPSET, _need(n.op))}"]
    for v in n.inputs:
        parts.append(_const_part(v.node.const) if v.node.op == "constant" else str(v.type))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def graph_key(g: Graph, opset: int | None = None) -> str:
    """Cache key of a whole graph's time: its structure (ops, attrs, types, edges; constants by
    type, shape-like ones by value; not names) and the opset (None: ``export_opset(g)``)."""
    h = hashlib.sha256(f"graph/1|opset{opset or export_opset(g)}".encode())
    pos: dict[int, int] = {}
    for i, n in enumerate(g.nodes):
        pos[id(n)] = i
        if n.op == "constant":
            h.update(_const_part(n.const).encode())
        elif n.op == "input":
            h.update(f"input {n.out_types}".encode())
        else:
            h.update(repr((n.op, n.attrs, [str(t) for t in n.out_types])).encode())
        h.update(repr([(pos[id(v.node)], v.index) for v in n.inputs]).encode())
    h.update(repr([(pos[id(v.node)], v.index) for v in g.outputs]).encode())
    return "graph:" + h.hexdigest()[:32]


def _sample(t: TensorType, rng: np.random.Generator, for_indices: bool) -> np.ndarray:
    if not t.is_static:
        raise Unmeasurable(f"symbolic shape {t}")
    shape = tuple(int(d) for d in t.shape or ())
    if t.dtype == DType.bool:
        return np.ones(shape, dtype=bool)  # masks: keep everything
    np_dt = t.dtype.to_numpy()
    if t.dtype.is_int or for_indices:
        return np.zeros(shape, dtype=np_dt)  # valid indices for gather and friends
    return rng.standard_normal(shape).astype(np_dt)


def sample_feeds(g: Graph, seed: int = 0) -> Feeds:
    """Data for ``g``'s inputs: normal floats, all-true masks, zero integers."""
    rng = np.random.default_rng(seed)
    out: Feeds = {}
    for n in g.inputs:
        t = n.out_types[0]
        if not isinstance(t, TensorType):
            raise Unmeasurable(f"input {n.attrs['name']} is {t}")
        out[n.attrs["name"]] = _sample(t, rng, False)
    return out


def probe_graph(n: Node, seed: int = 0) -> tuple[Graph, Feeds]:
    """``n`` alone: graph inputs for its non-constant inputs, constants for its constant inputs
    (shape-like ones as they are, others fresh data of the same type); plus feeds."""
    rng = np.random.default_rng(seed)
    ins: list[Value] = []
    inputs = []
    feeds: Feeds = {}
    for i, v in enumerate(n.inputs):
        t = v.type
        if not isinstance(t, TensorType):
            raise Unmeasurable(f"input {i} is {t}")
        idx = n.op == "gather" and i == 1
        if v.node.op == "constant":
            c = v.node.const
            ins.append(v if shape_like(c) else constant(ConstData(_sample(t, rng, idx))))
        else:
            name = f"x{i}"
            node = input_node(name, t)
            inputs.append(node)
            feeds[name] = _sample(t, rng, idx)
            ins.append(node.out)
    for t in n.out_types:
        if not isinstance(t, TensorType) or not t.is_static:
            raise Unmeasurable(f"output type {t}")
    nn = Node.build(n.op, ins, n.attrs)
    return Graph(inputs, list(nn.outputs), [f"y{i}" for i in range(len(nn.outputs))],
                 name=f"probe_{n.op}"), feeds


def _timing(samples: "list[float] | Unpriced") -> "Timing | Unpriced":
    return samples if isinstance(samples, Unpriced) else Timing.of(samples)


# ---- the profiler ------------------------------------------------------------------------------

Run = Callable[[], Any]


class OpProfiler:
    """Times single nodes and whole graphs on this host and caches the times on disk."""

    def __init__(self, device: "Device | str" = "cpu", backend: str = "onnxruntime", *,
                 cache_path: "str | os.PathLike[str] | None" = None, reps: int = 15,
                 warmup: int = 3, threads: int | None = None,
                 timer: Callable[[], float] = time.perf_counter,
                 opset: int | None = None) -> None:
        if backend not in ("onnxruntime", "torch"):
            raise GraphOptError(f"unknown profiling backend {backend!r} (onnxruntime, torch)",
                                where="measured cost model")
        self.device = get_device(device)
        self.backend = backend
        self.cache_path = Path(cache_path) if cache_path is not None else default_cache_path()
        self.reps = reps
        self.warmup = warmup
        self.threads = threads or (self.device.cores if self.device.kind == "cpu" else 1)
        self.timer = timer
        self.opset = opset  # default of the probes (None: each graph's export opset)
        self._cache: dict[str, Timing] | None = None
        self._dirty = False
        self._overhead: float | None = None
        self._failed: dict[str, Unpriced] = {}
        self.measured = 0  # probes run in this process
        self.hits = 0

    @property
    def fallbacks(self) -> dict[str, str]:
        """Key -> "cannot be priced: <reason>" of what could not be timed in this process."""
        return {k: str(u) for k, u in self._failed.items()}

    # ---- cache ----------------------------------------------------------------------------------
    def machine(self) -> str:
        if self.backend == "onnxruntime":
            import onnxruntime as ort

            ver = f"ort-{ort.__version__}"
        else:
            import torch

            ver = f"torch-{torch.__version__}-{'cuda' if torch.cuda.is_available() else 'cpu'}"
        return f"{self.device.key()}/{ver}/t{self.threads}"

    def _load(self) -> dict[str, Timing]:
        if self._cache is None:
            self._cache = {}
            try:
                data = json.loads(self.cache_path.read_text())
                if data.get("version") == CACHE_VERSION:
                    mine = data.get("machines", {}).get(self.machine(), {})
                    self._cache = {k: Timing(float(s), float(d), int(r))
                                   for k, (s, d, r) in mine.items()}
            except FileNotFoundError:
                pass
            except (OSError, ValueError, TypeError, AttributeError) as e:
                raise GraphOptError(f"unreadable op-cost cache ({e}); delete it to start over",
                                    where=str(self.cache_path)) from e
        return self._cache

    def flush(self) -> None:
        """Write new timings to the cache file (atomically, merged with what is there)."""
        if not self._dirty or self._cache is None:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = json.loads(self.cache_path.read_text())
            if data.get("version") != CACHE_VERSION:
                data = {}
        except (OSError, ValueError):
            data = {}
        data["version"] = CACHE_VERSION
        mine = data.setdefault("machines", {}).setdefault(self.machine(), {})
        mine.update({k: [t.seconds, t.spread, t.runs] for k, t in self._cache.items()})
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.cache_path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, sort_keys=True)
            os.replace(tmp, self.cache_path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        self._dirty = False

    def _lookup(self, key: str) -> "Timing | Unpriced | None":
        hit = self._load().get(key)
        if hit is not None:
            self.hits += 1
            return hit
        return self._failed.get(key)

    def _store(self, key: str, t: "Timing | Unpriced") -> None:
        if isinstance(t, Unpriced):
            self._failed[key] = t
            return
        self._load()[key] = t
        self._dirty = True
        self.measured += 1

    # ---- single ops -----------------------------------------------------------------------------
    def price_op(self, n: Node, opset: int | None = None) -> "Timing | Unpriced":
        """One run of ``n`` alone, less the runtime's fixed per-call overhead (cached), probed at
        ``opset`` (None: the profiler's, else ``n``'s export opset)."""
        opset = opset or self.opset or max(DEFAULT_OPSET, _need(n.op))
        key = node_key(n, opset)
        got = self._lookup(key)
        if got is None:
            try:
                g, feeds = probe_graph(n)
                got = self._probe(g, feeds, opset)
            except Exception as e:  # noqa: BLE001 - whatever fails, the node has no price
                got = Unpriced(f"{n.op}: {_reason(e)}")
            self._store(key, got)
        return got

    def op_time(self, n: Node, opset: int | None = None) -> float | None:
        """Seconds one run of ``n`` takes (cached), or None when it cannot be priced (the reason
        is in ``fallbacks``)."""
        t = self.price_op(n, opset)
        return t.seconds if isinstance(t, Timing) else None

    def _probe(self, g: Graph, feeds: Feeds, opset: int) -> Timing:
        if self.backend == "onnxruntime":
            sess = self._session(g, opset)
            run: Run = lambda: sess.run(None, feeds)  # noqa: E731
            minus = self.overhead()
        else:
            run, minus = self._torch_run(g, feeds), 0.0
        for _ in range(self.warmup):
            run()
        samples = self._rounds([run], self.reps)[0]
        if isinstance(samples, Unpriced):
            raise Unmeasurable(samples.reason)
        return Timing.of(samples, minus)

    def overhead(self) -> float:
        """The runtime's fixed cost of one call (a one-element Identity), subtracted from op
        probes: savings below it are not resolved."""
        if self._overhead is None:
            self._overhead = 0.0  # (what the overhead probe itself subtracts)
            if self.backend == "onnxruntime":
                x = input_node("x0", TensorType((1,), DType.f32))
                g = Graph([x], [Node.build("identity", [x.out]).out], ["y0"])
                self._overhead = self._probe(g, {"x0": np.zeros((1,), np.float32)},
                                             DEFAULT_OPSET).seconds
        return self._overhead

    # ---- whole graphs ---------------------------------------------------------------------------
    def graph_times(self, graphs: Sequence[Graph], *, opset: int | None = None,
                    feeds: Sequence[Feeds | None] | None = None, budget_s: float = 1.0,
                    min_reps: int = 3) -> "list[Timing | Unpriced]":
        """Seconds per run of each graph in ONNX Runtime (cached by ``graph_key`` on this
        machine). Those not cached are timed together: one session each, one warm-up run,
        then rounds of one run of each, about ``budget_s`` of rounds per graph (at least
        ``min_reps`` and at most ``reps`` rounds). ``opset``: None for the profiler's, else
        each graph's export opset; ``feeds``: per graph, None for ``sample_feeds``."""
        opsets = [opset or self.opset or export_opset(g) for g in graphs]
        keys = [graph_key(g, o) for g, o in zip(graphs, opsets)]
        out = [self._lookup(k) for k in keys]
        todo = [i for i, t in enumerate(out) if t is None]
        if todo:
            fs = list(feeds) if feeds is not None else [None] * len(graphs)
            got = self._time_graphs([graphs[i] for i in todo], [opsets[i] for i in todo],
                                    [fs[i] for i in todo], budget_s, min_reps)
            for i, t in zip(todo, got):
                self._store(keys[i], t)
                out[i] = t
            self.flush()
        return [t for t in out if t is not None]

    def _time_graphs(self, graphs: Sequence[Graph], opsets: Sequence[int],
                     feeds: Sequence[Feeds | None], budget_s: float, min_reps: int
                     ) -> "list[Timing | Unpriced]":
        if self.backend != "onnxruntime":
            return [Unpriced(f"whole graphs are timed in ONNX Runtime, not {self.backend}")
                    for _ in graphs]
        prepared: list[Run | Unpriced] = []
        for i, (g, o) in enumerate(zip(graphs, opsets)):
            try:
                sess = self._session(g, o)
                f = feeds[i] if feeds[i] is not None else sample_feeds(g, seed=i)
                sess.run(None, f)  # warm-up (and: does it run at all)
                prepared.append(lambda s=sess, f=f: s.run(None, f))
            except Exception as e:  # noqa: BLE001 - a graph that does not run has no price
                prepared.append(Unpriced(_reason(e)))
        live = [r for r in prepared if not isinstance(r, Unpriced)]
        first = self._rounds(live, 1)  # sizes the rounds to the budget
        one_round = max(sum(ts[0] for ts in first if not isinstance(ts, Unpriced)), 1e-9)
        reps = max(min_reps, min(self.reps, int(budget_s * len(live) / one_round)))
        timed = iter(self._rounds(live, reps - 1, first))
        return [r if isinstance(r, Unpriced) else _timing(next(timed)) for r in prepared]

    # ---- running --------------------------------------------------------------------------------
    def _rounds(self, runs: Sequence[Run], reps: int,
                into: "list[list[float] | Unpriced] | None" = None
                ) -> "list[list[float] | Unpriced]":
        """``reps`` rounds of one run of each (interleaved), added to ``into``'s samples; a run
        that raises is dropped from the rounds and reported."""
        out: list[list[float] | Unpriced] = into if into is not None else [[] for _ in runs]
        for _ in range(reps):
            for i, r in enumerate(runs):
                ts = out[i]
                if isinstance(ts, Unpriced):
                    continue
                try:
                    t0 = self.timer()
                    r()
                    ts.append(self.timer() - t0)
                except Exception as e:  # noqa: BLE001 - reported as the run's reason
                    out[i] = Unpriced(_reason(e))
        return out

    def _session(self, g: Graph, opset: int) -> Any:
        import onnxruntime as ort

        from ..frontends.onnx_export import to_model

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.log_severity_level = 4  # a failing run is reported as Unpriced, not logged
        return ort.InferenceSession(to_model(g, opset).SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])

    def _torch_run(self, g: Graph, feeds: Feeds) -> Run:
        import torch

        from ..ops.registry import get_op

        dev = "cuda" if torch.cuda.is_available() else "cpu"
        node = next(n for n in reversed(g.nodes) if n.op not in ("input", "constant"))
        env = {id(n): numpy_to_torch(feeds[n.attrs["name"]], dev) for n in g.inputs}
        for n in g.nodes:
            if n.op == "constant":
                env[id(n)] = numpy_to_torch(n.const.array, dev)
        xs = [env[id(v.node)] for v in node.inputs]
        opdef = get_op(node.op)
        sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

        def run() -> None:
            with torch.no_grad():
                try:
                    opdef.torch(xs, node.attrs)
                except NotImplementedError as e:
                    raise Unmeasurable(f"no torch aspect ({e})") from e
            sync()

        return run


__all__ = ["OpProfiler", "Timing", "Unpriced", "Unmeasurable", "node_key", "graph_key",
           "probe_graph", "sample_feeds", "export_opset", "shape_like", "default_cache_path",
           "CACHE_VERSION", "SHAPE_LIKE_MAX_ELEMENTS"]
