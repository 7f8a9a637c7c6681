"""Measured costs: ops profiled on the machine at hand, cached on disk by (op, attrs, types).

``OpProfiler`` runs one node alone, as a one-node ONNX model in ONNX Runtime (``backend=
"onnxruntime"``) or through the op's torch aspect (``backend="torch"``, on CUDA when present),
and keeps the median time minus the runtime's fixed per-call overhead. Inputs that are
constants in the graph are constants in the probe too (runtimes pre-pack constant weights).

``MeasuredCostModel`` is the fusion-aware model with measured op times: a region costs the sum of
its ops' measured times, less what the analytic model says fusing them saves (interior traffic,
extra launches), and never less than the region's analytic roofline.

The cache is a JSON file (default ``~/.cache/graphopt/op_costs.json``, or
``$GRAPHOPT_CACHE_DIR/op_costs.json``) keyed by the machine (device profile, backend, runtime
version, threads) and a hash of (op, attrs, input types, which inputs are constant). Nodes that
cannot be probed (symbolic shapes, no numpy form) use the analytic time; the profiler counts
them and keeps the reasons (``fallbacks``).
"""
from __future__ import annotations

import hashlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import GraphOptError
from ..ir.graph import Graph
from ..ir.node import ConstData, Node, Value, constant, input_node
from ..ir.types import DType, TensorType
from .devices import Device, get_device
from .model import CostModel, Kind, Region

CACHE_VERSION = 1


def default_cache_path() -> Path:
    base = os.environ.get("GRAPHOPT_CACHE_DIR")
    root = Path(base) if base else Path.home() / ".cache" / "graphopt"
    return root / "op_costs.json"


class Unmeasurable(Exception):
    """This node cannot be profiled alone (the reason is kept)."""


def node_key(n: Node) -> str:
    """Cache key of a node's cost: op, attrs, input types and which inputs are constants."""
    parts = [n.op, repr(n.attrs)]
    for v in n.inputs:
        parts.append(f"{v.type}{'c' if v.node.op == 'constant' else ''}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def _sample(t: TensorType, rng: np.random.Generator, for_indices: bool) -> np.ndarray:
    if not t.is_static:
        raise Unmeasurable(f"symbolic shape {t}")
    shape = tuple(int(d) for d in t.shape or ())
    if t.dtype == DType.bool:
        return np.ones(shape, dtype=bool)
    np_dt = t.dtype.to_numpy()
    if t.dtype.is_int or for_indices:
        return np.zeros(shape, dtype=np_dt)  # valid indices for gather and friends
    return rng.standard_normal(shape).astype(np_dt)


def probe_graph(n: Node, seed: int = 0) -> tuple[Graph, dict[str, np.ndarray]]:
    """``n`` alone: graph inputs for its non-constant inputs, fresh constants of the same types
    (random data) for its constant inputs; plus feeds for the inputs."""
    rng = np.random.default_rng(seed)
    ins: list[Value] = []
    inputs = []
    feeds: dict[str, np.ndarray] = {}
    for i, v in enumerate(n.inputs):
        t = v.type
        if not isinstance(t, TensorType):
            raise Unmeasurable(f"input {i} is {t}")
        idx = n.op == "gather" and i == 1
        if v.node.op == "constant":
            ins.append(constant(ConstData(_sample(t, rng, idx))))
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


class OpProfiler:
    """Times single nodes and caches the times on disk."""

    def __init__(self, device: "Device | str" = "cpu", backend: str = "onnxruntime", *,
                 cache_path: "str | os.PathLike[str] | None" = None, reps: int = 15,
                 warmup: int = 3, threads: int | None = None,
                 timer: Callable[[], float] = time.perf_counter) -> None:
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
        self._cache: dict[str, float] | None = None
        self._dirty = False
        self._overhead: float | None = None
        self.measured = 0  # probes run in this process
        self.hits = 0
        self.fallbacks: dict[str, str] = {}  # node key -> why it was not measured

    # ---- cache ----------------------------------------------------------------------------------
    def machine(self) -> str:
        if self.backend == "onnxruntime":
            import onnxruntime as ort

            ver = f"ort-{ort.__version__}"
        else:
            import torch

            ver = f"torch-{torch.__version__}-{'cuda' if torch.cuda.is_available() else 'cpu'}"
        return f"{self.device.key()}/{ver}/t{self.threads}"

    def _load(self) -> dict[str, float]:
        if self._cache is None:
            self._cache = {}
            try:
                data = json.loads(self.cache_path.read_text())
                if data.get("version") == CACHE_VERSION:
                    self._cache = {k: float(v) for k, v in
                                   data.get("machines", {}).get(self.machine(), {}).items()}
            except FileNotFoundError:
                pass
            except (OSError, ValueError, AttributeError) as e:
                raise GraphOptError(f"unreadable op-cost cache ({e}); delete it to start over",
                                    where=str(self.cache_path)) from e
        return self._cache

    def flush(self) -> None:
        """Write new measurements to the cache file (atomically, merged with what is there)."""
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
        machines = data.setdefault("machines", {})
        mine = machines.setdefault(self.machine(), {})
        mine.update(self._cache)
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

    # ---- timing ---------------------------------------------------------------------------------
    def op_time(self, n: Node) -> float | None:
        """Seconds one run of ``n`` takes (cached), or None when it cannot be measured."""
        key = node_key(n)
        cache = self._load()
        if key in cache:
            self.hits += 1
            return cache[key]
        if key in self.fallbacks:
            return None
        try:
            g, feeds = probe_graph(n)
            t = self._time_ort(g, feeds) if self.backend == "onnxruntime" else \
                self._time_torch(g, feeds)
        except Unmeasurable as e:
            self.fallbacks[key] = f"{n.op}: {e}"
            return None
        except GraphOptError as e:
            self.fallbacks[key] = f"{n.op}: {e.one_line()}"
            return None
        cache[key] = t
        self._dirty = True
        self.measured += 1
        return t

    def _median(self, fn: Callable[[], Any]) -> float:
        for _ in range(self.warmup):
            fn()
        ts = []
        for _ in range(self.reps):
            t0 = self.timer()
            fn()
            ts.append(self.timer() - t0)
        return statistics.median(ts)

    def _session(self, model: Any) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.log_severity_level = 3
        return ort.InferenceSession(model.SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])

    def _time_ort(self, g: Graph, feeds: dict[str, np.ndarray]) -> float:
        from ..frontends.onnx_export import to_model

        try:
            sess = self._session(to_model(g))
        except GraphOptError:
            raise
        except Exception as e:  # ORT refuses the model: say so, use the analytic time
            raise Unmeasurable(f"ONNX Runtime: {type(e).__name__}: {str(e)[:200]}") from e
        t = self._median(lambda: sess.run(None, feeds))
        return max(t - self.overhead(), 1e-7)

    def overhead(self) -> float:
        """The runtime's fixed cost of one call (a one-element Identity), subtracted from probes."""
        if self._overhead is None:
            if self.backend == "onnxruntime":
                x = input_node("x0", TensorType((1,), DType.f32))
                g = Graph([x], [Node.build("identity", [x.out]).out], ["y0"])
                from ..frontends.onnx_export import to_model

                sess = self._session(to_model(g))
                feeds = {"x0": np.zeros((1,), np.float32)}
                self._overhead = self._median(lambda: sess.run(None, feeds))
            else:
                self._overhead = 0.0
        return self._overhead

    def _time_torch(self, g: Graph, feeds: dict[str, np.ndarray]) -> float:
        import torch

        from ..ops.registry import get_op

        dev = "cuda" if torch.cuda.is_available() else "cpu"
        node = next(n for n in reversed(g.nodes) if n.op not in ("input", "constant"))
        env = {id(n): torch.from_numpy(np.asarray(feeds[n.attrs["name"]])).to(dev)
               for n in g.inputs}
        for n in g.nodes:
            if n.op == "constant":
                env[id(n)] = torch.from_numpy(np.array(n.const.array)).to(dev)
        xs = [env[id(v.node)] for v in node.inputs]
        opdef = get_op(node.op)
        sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

        def run() -> None:
            opdef.torch(xs, node.attrs)
            sync()

        try:
            with torch.no_grad():
                return self._median(run)
        except NotImplementedError as e:
            raise Unmeasurable(f"no torch aspect ({e})") from e


class MeasuredCostModel(CostModel):
    """The fusion-aware model over measured op times (see the module docstring)."""

    name = "measured"

    def __init__(self, device: "Device | str" = "cpu", profiler: OpProfiler | None = None, *,
                 fusion: bool = True) -> None:
        super().__init__(device, fusion=fusion)
        self.profiler = profiler or OpProfiler(self.device)
        self._op_times: dict[int, tuple[Node, float]] = {}

    def _node_time(self, n: Node) -> float:
        hit = self._op_times.get(id(n))
        if hit is not None:
            return hit[1]
        t = self.profiler.op_time(n)
        if t is None:
            t = self._alone(n)
        self._op_times[id(n)] = (n, t)
        return t

    def _alone(self, n: Node) -> float:
        """The analytic time of ``n`` as a kernel of its own."""
        i = self.info(n)
        r = Region(0, i.kind, [n], i.matrix_flops, i.vector_flops, i.launches,
                   sum(i.in_bytes), sum(i.out_bytes), i.dtype)
        return CostModel.region_time(self, r)

    def region_time(self, r: Region) -> float:
        measured = sum(self._node_time(n) for n in r.nodes)
        if len(r.nodes) == 1:
            return measured
        fused = CostModel.region_time(self, r)
        saved = sum(self._alone(n) for n in r.nodes) - fused
        return max(fused, measured - saved)

    def graph_cost(self, g: Graph, detail: bool = False) -> Any:
        gc = super().graph_cost(g, detail)
        self.profiler.flush()
        return gc


def cost_model(target: "Device | str" = "cpu", mode: str = "analytic", **kw: Any) -> CostModel:
    """The cost model for a target: ``mode`` "analytic" (roofline) or "measured" (profiled)."""
    if mode == "analytic":
        return CostModel(target, **kw)
    if mode == "measured":
        return MeasuredCostModel(target, **kw)
    raise GraphOptError(f"unknown cost mode {mode!r} (analytic, measured)", where="cost model")


__all__ = ["OpProfiler", "MeasuredCostModel", "cost_model", "node_key", "probe_graph",
           "default_cache_path", "Kind"]
