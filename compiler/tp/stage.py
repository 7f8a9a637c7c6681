"""``graphopt.shard``: a tensor-parallel plan for a model, searched, applied, checked.

Steps: load -> verify -> simplify -> fuse (attention, norms, ...; no search: its merges would
only be undone) -> unmerge fused projections -> search the plan (``plan.py``) -> the ranks'
programs (``ranks.project``) -> check: the programs joined again in the global view
(``ranks.merge``) run against the original model, every rank's outputs -> the result.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from ..errors import GraphOptError
from ..ir.graph import Graph
from .plan import Evaluated, Evaluator, SearchLog, WeightSlot, search, weight_slots
from .ranks import merge

if TYPE_CHECKING:
    import torch

Progress = Callable[[str], None]


@dataclass
class ShardPlan:
    """The result of ``graphopt.shard``: the plan, the sharded graph (global view), the ranks'
    programs and the report."""

    world_size: int
    target: str
    original: Graph
    prepared: Graph
    best: Evaluated
    slots: list[WeightSlot]
    log: SearchLog
    report: dict[str, Any]
    source: Any = None

    @property
    def graph(self) -> Graph:
        """The sharded graph in the collectives' global view (runs in one process)."""
        return self.best.sharded

    def rank_graph(self, rank: int) -> Graph:
        self._check_rank(rank)
        return self.best.ranks[rank]

    def module(self, rank: int) -> "torch.nn.Module":
        """Rank ``rank``'s ``nn.Module``: only its blocks of the weights (buffers); its
        collectives call ``torch.distributed`` (run it in an initialized process group)."""
        from ..frontends.torch_export import to_callable

        return to_callable(self.rank_graph(rank))

    def save(self, out_dir: Any) -> Any:
        """Write the ranks' programs, weights and a launch script (``graphopt shard -o``); the
        programs read back from disk are checked against the original before the folder is
        moved into place."""
        from .save import save_plan

        return save_plan(self, out_dir)

    def _check_rank(self, rank: int) -> None:
        if not isinstance(rank, int) or not 0 <= rank < self.world_size:
            raise GraphOptError(f"rank must be in [0, {self.world_size}), got {rank!r}",
                                where="ShardPlan")

    def __repr__(self) -> str:
        s = self.report["summary"]
        return (f"<ShardPlan {self.world_size} ranks, target {self.target}: "
                f"{s['split_weights']} weights split, {s['collectives_per_step']} collectives per "
                f"step, {s['max_rank_param_fraction']:.1%} of the parameters per rank, estimated "
                f"speedup {s['estimated_speedup']:.2f}x>")


def prepare(src: Any, target: str, progress: Progress | None = None) -> tuple[Graph, Graph]:
    """(original, the graph plans apply to): lifted, simplified, fused, projections unmerged."""
    from graphopt.passes.tensor_parallel import unmerge_pass

    from ..ir.verify import verify
    from ..pipeline import fuse_passes, lift, resolve_passes
    from ..rewrite.passes import Pipeline

    original = lift(src)
    verify(original)
    if progress:
        progress("simplify and fuse")
    g = Pipeline(resolve_passes(None), name="simplify", fixed_point=True).run(original).graph
    g = Pipeline(fuse_passes(target, False), name="fuse").run(g).graph
    g = Pipeline([unmerge_pass()], name="unmerge").run(g).graph
    return original, g


def check_programs(src: Any, original: Graph, programs: list[Graph], inputs: Any = None) -> list[Any]:
    """Every rank's outputs of the programs, joined in the global view (``ranks.merge``) and run
    by the torch interpreter (collectives as their global sums / concatenations), against the
    original model: the torch module, or the ONNX model in ONNX Runtime (raises CheckError
    naming the rank)."""
    from ..errors import CheckError
    from ..pipeline import check_against

    results = []
    for r, g in enumerate(merge(programs)):
        try:
            if src.kind == "onnx":
                results.append(_check_onnx(src.model, original, g, inputs))
            else:
                results.append(check_against(src, original, g, inputs))
        except CheckError as e:
            raise CheckError(f"rank {r}: {e.message}", where=e.where) from e
    return results


def _check_onnx(model: Any, original: Graph, g: Graph, inputs: Any) -> Any:
    """ONNX Runtime on the source model vs ``g`` in the torch interpreter (a graph with
    collectives has no ONNX form)."""
    import numpy as np
    import torch

    from ..check import (coerce_inputs, compare_outputs, describe_inputs, precision_dtypes,
                         run_onnx)
    from ..frontends.torch_export import to_callable

    feeds = coerce_inputs(original, inputs)
    exp = run_onnx(model, feeds)
    with torch.no_grad():
        got = to_callable(g)(**{k: torch.from_numpy(np.ascontiguousarray(v))
                               for k, v in feeds.items()})
    got = got if isinstance(got, tuple) else (got,)
    res = compare_outputs(exp, [t.numpy() for t in got], g.output_names,
                          dtypes=precision_dtypes(original, g),
                          reference="the ONNX model (ONNX Runtime, default session options)")
    res.inputs = describe_inputs(feeds)
    res.raise_if_failed("sharded model")
    return res


def shard(model: Any, example_inputs: Any = None, world_size: int = 2, target: str = "cpu", *,
          memory_weight: float | None = None, check: bool = True, inputs: Any = None,
          progress: Progress | None = None) -> ShardPlan:
    """Search a tensor-parallel plan for ``world_size`` ranks (see ``ShardPlan``)."""
    from ..pipeline import check_target, resolve_source
    from .report import build_report

    if not isinstance(world_size, int) or isinstance(world_size, bool) or world_size < 2:
        raise GraphOptError(f"world_size must be an int >= 2, got {world_size!r}",
                            where="graphopt.shard")
    target = check_target(target)
    src = resolve_source(model, example_inputs)
    t0 = time.perf_counter()
    original, prepared = prepare(src, target, progress)
    t1 = time.perf_counter()
    ev = Evaluator(prepared, world_size, target, memory_weight)
    slots = weight_slots(prepared, world_size)
    best, log = search(ev, slots, progress=progress)
    t2 = time.perf_counter()
    chk = None
    if check:
        if progress:
            progress("check: the ranks' programs against the original")
        chk = check_programs(src, original, best.ranks, inputs)
    t3 = time.perf_counter()
    report = build_report(src.label, target, world_size, original, prepared, best, slots, log,
                          ev, chk, {"prepare": t1 - t0, "search": t2 - t1, "check": t3 - t2})
    return ShardPlan(world_size, target, original, prepared, best, slots, log, report, src)
