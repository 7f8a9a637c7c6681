"""Measured costs: the fusion-aware model over op times profiled on this machine.

``MeasuredCostModel`` is the fusion-aware model with measured op times: a region costs the sum of
its ops' measured times, less what the analytic model says fusing them saves (interior traffic,
extra launches), and never less than the region's analytic roofline. Op times come from
``OpProfiler`` (``profile.py``: each node alone, as a one-node model in ONNX Runtime at the opset
the pipeline exports it at, or through its torch aspect; cached on disk by op, attrs, types and
opset). Nodes that cannot be priced (symbolic shapes, no numpy form, a probe that fails) use the
analytic time; the profiler keeps the reasons (``fallbacks``).
"""
from __future__ import annotations

from typing import Any

from ..errors import GraphOptError
from ..ir.graph import Graph
from ..ir.node import Node
from .devices import Device
from .model import CostModel, Region
from .profile import OpProfiler


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


HOST = "cpu"  # the target that is this machine: measured costs exist for it only
_HOST_PROFILER: list[OpProfiler] = []


def host_profiler() -> OpProfiler:
    """The profiler of this host, one per process (so passes share what they measured)."""
    if not _HOST_PROFILER:
        _HOST_PROFILER.append(OpProfiler(HOST))
    return _HOST_PROFILER[0]


def cost_mode(target: str, cost: Any = None) -> Any:
    """The cost a target-dependent rewrite asks: ``cost`` as given (a mode or a function), else
    "measured" on this host and "analytic" elsewhere."""
    if cost is not None:
        return cost
    return "measured" if target == HOST else "analytic"


def cost_model(target: "Device | str" = "cpu", mode: str = "analytic", **kw: Any) -> CostModel:
    """The cost model for a target: ``mode`` "analytic" (roofline) or "measured" (profiled)."""
    if mode == "analytic":
        return CostModel(target, **kw)
    if mode == "measured":
        return MeasuredCostModel(target, **kw)
    raise GraphOptError(f"unknown cost mode {mode!r} (analytic, measured)", where="cost model")
