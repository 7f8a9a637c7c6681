"""The sharding search: which weights to split, along which axis, for ``world`` ranks.

A plan maps weights to an axis (or to nothing: replicated). Applying it is the rewrite pass
``passes/tensor_parallel.py`` (split the weights, push the all-gathers down); its price is the
cost model on the ranks' programs (``ranks.project``): the slowest rank's step time -- its
kernels on its blocks plus each collective at ``steps * link_latency + bytes / link_bandwidth``
-- plus ``memory_weight`` seconds per byte of weights a rank holds (default: the time to stream
that byte once from memory, so a plan that holds fewer bytes wins when the collectives it adds
cost less than streaming what it saves).

The search is coordinate descent from the all-replicated plan: weights whose uses look alike
(same shape and the same ops reading them, as the layers of a stack do) form a group that moves
together; each round tries every group at every axis that splits evenly and keeps a change that
lowers the price, until no change does; on graphs of few groups a last round tries each weight
alone. Nothing names a layer kind: Megatron's pairing (columns then rows, one all-reduce per
pair, attention by heads) is what the price selects on transformer blocks.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..cost.devices import Device, get_device
from ..cost.model import CostModel
from ..ir.graph import Graph
from ..ir.node import Node
from ..ir.types import TensorType
from .ranks import COLLECTIVES, project

MIN_ELEMENTS = 64  # smaller constants are not worth a decision (biases, norms stay replicated)


@dataclass
class WeightSlot:
    """One weight the plan may split: its constant node, a name, the axes that split evenly."""

    node: Node
    name: str
    axes: tuple[int, ...]
    group: int = 0  # weights alike in use, up and down the graph (they move together)
    role: int = 0  # weights alike in what reads them (the same weight of each layer)
    reason: str = ""  # why it cannot be split (no axis divides)

    @property
    def key(self) -> int:
        return id(self.node.attrs["data"])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.node.out_types[0].shape)  # type: ignore[union-attr]


@dataclass
class Evaluated:
    """A plan applied and priced."""

    splits: dict[int, int]
    sharded: Graph  # global view
    ranks: list[Graph]
    times: list[float]  # per rank, seconds per step
    weight_bytes: list[float]  # per rank
    cost: float
    candidates: tuple = ()

    @property
    def time(self) -> float:
        return max(self.times)


@dataclass
class SearchLog:
    evaluations: int = 0
    rounds: int = 0
    seconds: float = 0.0
    moves: list[str] = field(default_factory=list)


def weight_name(n: Node, k: int) -> str:
    o = n.origin
    return o.name if o is not None and o.name else f"constant#{k}"


def _signature(n: Node, users: dict[int, list[tuple[Node, int]]], depth: int = 4,
               upstream: bool = True) -> tuple:
    """How a constant is used: its type, the ops reading it and what they read and feed, a few
    steps down and up. Weights with equal signatures (the same weight of each layer) form one
    group in the search."""
    def down(m: Node, d: int) -> tuple:
        if d == 0:
            return ()
        return tuple(sorted(((u.op, pos, down(u, d - 1)) for u, pos in users.get(id(m), [])),
                            key=repr))

    def up(m: Node, d: int) -> tuple:
        if d == 0 or m.op in ("input", "constant"):
            return (m.op,)
        return (m.op, tuple(up(v.node, d - 1) for v in m.inputs))

    uses = []
    for u, pos in users.get(id(n), []):
        others = tuple(up(v.node, depth - 1) for i, v in enumerate(u.inputs)
                       if i != pos) if upstream else ()
        uses.append((u.op, pos, others, down(u, depth)))
    return (n.out_types[0], tuple(sorted(uses, key=repr)))


def weight_slots(g: Graph, world: int) -> list[WeightSlot]:
    """The constants of rank >= 2 with at least MIN_ELEMENTS elements, grouped by use."""
    users: dict[int, list[tuple[Node, int]]] = {}
    for n in g.nodes:
        for i, v in enumerate(n.inputs):
            users.setdefault(id(v.node), []).append((n, i))
    slots: list[WeightSlot] = []
    groups: dict[tuple, int] = {}
    roles: dict[tuple, int] = {}
    k = 0
    for n in g.nodes:
        if n.op != "constant":
            continue
        t = n.out_types[0]
        if not isinstance(t, TensorType) or t.shape is None or len(t.shape) < 2 \
                or not t.dtype.is_float:
            continue  # weights are float tensors (index tables and masks are no weights)
        k += 1
        if t.static_numel(1) < MIN_ELEMENTS or id(n) not in users:
            continue
        axes = tuple(a for a, d in enumerate(t.shape) if isinstance(d, int) and d % world == 0
                     and d >= world)
        reason = "" if axes else (f"no axis of {list(t.shape)} splits into {world} equal "
                                  f"blocks")
        sig = _signature(n, users)
        gid = groups.setdefault(sig, len(groups))
        role = roles.setdefault(_signature(n, users, depth=2, upstream=False), len(roles))
        slots.append(WeightSlot(n, weight_name(n, k), axes, gid, role, reason))
    return slots


def weight_bytes(g: Graph) -> float:
    from ..ops.registry import nbytes

    return float(sum(nbytes(n.out_types[0]) for n in g.nodes if n.op == "constant"))


class Evaluator:
    """Applies and prices plans (memoized by plan)."""

    def __init__(self, g: Graph, world: int, device: Device | str,
                 memory_weight: float | None = None) -> None:
        from graphopt.passes.tensor_parallel import tensor_parallel_pass

        self.g = g
        self.world = world
        self.device = get_device(device)
        self.model = CostModel(self.device)
        self.memory_weight = (1.0 / self.device.mem_bandwidth if memory_weight is None
                              else float(memory_weight))
        self._make_pass = tensor_parallel_pass
        self._seen: dict[frozenset, Evaluated] = {}
        self.evaluations = 0

    def __call__(self, splits: dict[int, int]) -> Evaluated:
        key = frozenset(splits.items())
        hit = self._seen.get(key)
        if hit is not None:
            return hit
        self.evaluations += 1
        res = self._make_pass(splits, self.world).run(self.g)
        sharded = res.graph
        ranks = [project(sharded, r, self.world) for r in range(self.world)]
        times = [self.model(p) for p in ranks]
        wb = [weight_bytes(p) for p in ranks]
        ev = Evaluated(dict(splits), sharded, ranks, times, wb,
                       max(times) + self.memory_weight * max(wb), res.candidates)
        self._seen[key] = ev
        return ev


def search(ev: Evaluator, slots: list[WeightSlot], *, max_rounds: int = 6,
           progress: Callable[[str], None] | None = None) -> tuple[Evaluated, SearchLog]:
    """Coordinate descent over weight groups, then over single weights (see the module doc)."""
    t0 = time.perf_counter()
    log = SearchLog()
    splittable = [s for s in slots if s.axes]
    current: dict[int, int] = {}
    best = ev(current)

    def moves(units: Iterable[list[WeightSlot]]) -> bool:
        nonlocal best, current
        changed = False
        for unit in units:
            axes = sorted(set.intersection(*(set(s.axes) for s in unit)))
            now = current.get(unit[0].key)
            for ax in [None, *axes]:
                if ax == now:
                    continue
                trial = dict(current)
                for s in unit:
                    if ax is None:
                        trial.pop(s.key, None)
                    else:
                        trial[s.key] = ax
                e = ev(trial)
                if e.cost < best.cost * (1 - 1e-9):
                    log.moves.append(f"{unit[0].name}{' +%d alike' % (len(unit) - 1) if len(unit) > 1 else ''}: "
                                     f"{'replicated' if now is None else f'axis {now}'} -> "
                                     f"{'replicated' if ax is None else f'axis {ax}'} "
                                     f"({best.cost * 1e6:.1f} -> {e.cost * 1e6:.1f} us)")
                    best, current, now, changed = e, trial, ax, True
        return changed

    groups: dict[int, list[WeightSlot]] = {}
    for s in splittable:
        groups.setdefault(s.group, []).append(s)
    for rnd in range(max_rounds):
        log.rounds += 1
        if progress is not None:
            progress(f"round {rnd + 1}: {len(groups)} weight groups, {ev.evaluations} plans priced")
        if not moves(groups.values()):
            break
    if len(splittable) <= 48 and len(groups) < len(splittable):
        log.rounds += 1
        moves([s] for s in splittable)
    log.evaluations = ev.evaluations
    log.seconds = time.perf_counter() - t0
    return best, log


def collective_nodes(g: Graph) -> list[Node]:
    return [n for n in g.nodes if n.op in COLLECTIVES]


def describe_split(slot: WeightSlot, axis: int | None, uses: list[str]) -> str:
    """column / row / vocabulary rows / replicated, from the axis and how the weight is read."""
    if axis is None:
        return "replicated"
    r = len(slot.shape)
    if "gather" in uses and axis == 0:
        return "vocabulary rows"
    if "matmul" in uses:
        return "column" if axis == r - 1 else ("row" if axis == r - 2 else f"axis {axis}")
    return f"axis {axis}"


def _uses(g: Graph) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for n in g.nodes:
        for v in n.inputs:
            out.setdefault(id(v.node), []).append(n.op)
    return out


def plan_table(g: Graph, slots: list[WeightSlot], splits: dict[int, int]) -> list[dict[str, Any]]:
    uses = _uses(g)
    rows = []
    for s in slots:
        ax = splits.get(s.key)
        rows.append({"weight": s.name, "shape": list(s.shape), "read_by": sorted(set(uses.get(id(s.node), []))),
                     "split": describe_split(s, ax, uses.get(id(s.node), [])),
                     "axis": ax, **({"why_not": s.reason} if s.reason else {})})
    return rows
