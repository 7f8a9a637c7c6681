"""Lowering: partition an IR graph into kernel regions and torch ops, and generate the kernels.

Regions (see ``region.py``), grown greedily over the nodes in topological order:

* ``attention`` / ``decode_attention``: one ``attention`` node (decode when a few query rows
  -- the new tokens of a KV-cache decode graph -- attend to a longer key sequence, without
  causal masking; ``kernels/decode_attention.py``);
* ``matmul``: a matmul followed by pointwise users of its shape (the epilogue: bias, activation,
  residual), at most the device's ``fusion.max_epilogue`` of them;
* ``quant_matmul``: ``matmul(x, mul(cast(W: i8 constant), scale))`` (weight-only int8);
* ``reduction``: softmax / log_softmax / layer_norm / rms_norm, with the pointwise region that
  computes its input (prologue) and pointwise users of its shape (epilogue);
* ``pointwise``: connected elementwise nodes of one output shape.

A node joins the region of one of its producers when the kinds allow it, the shapes match and
no path leaves the region and comes back (which would make the regions cyclic); other values
stay torch ops (each op's ``torch`` aspect). Every node kept as a torch op has a reason.

The cost model decides with the target's device profile (``graphopt.cost.devices``): which
fusions the target performs (``Device.fusion``), whether a reduction row fits on chip
(``onchip_bytes``), and each region's estimated time fused versus op by op (roofline over the
bytes crossing its boundary plus one launch); a region that would not be faster stays torch ops.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphopt.errors import GraphOptError
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node, Value
from graphopt.ir.types import DType, TensorType
from graphopt.ops.registry import get_op

from .cache import KernelSource, write
from .exprs import fusible, scalar_constant
from .region import Region

HEAVY = ("matmul", "reduction", "attention", "decode_attention", "quant_matmul")


@dataclass
class Step:
    """One unit of execution: a kernel (``region`` + ``kernel``) or a torch op (``node``)."""

    region: Region | None = None
    kernel: KernelSource | None = None
    node: Node | None = None

    @property
    def is_kernel(self) -> bool:
        return self.kernel is not None


@dataclass
class Lowered:
    """A graph partitioned for a target: steps in execution order, and why nodes stayed torch."""

    graph: Graph
    target: str
    steps: list[Step]
    kept: dict[int, str] = field(default_factory=dict)  # node uid -> reason it is a torch op
    estimates: dict[str, float] = field(default_factory=dict)  # seconds fused / unfused

    @property
    def kernels(self) -> list[KernelSource]:
        return [s.kernel for s in self.steps if s.kernel is not None]

    @property
    def regions(self) -> list[Region]:
        return [s.region for s in self.steps if s.region is not None]

    def summary(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for r in self.regions:
            kinds[r.kind] = kinds.get(r.kind, 0) + 1
        torch_ops: dict[str, int] = {}
        for s in self.steps:
            if s.node is not None:
                torch_ops[s.node.op] = torch_ops.get(s.node.op, 0) + 1
        return {"target": self.target, "kernels": len(self.kernels), "regions": kinds,
                "torch_ops": dict(sorted(torch_ops.items())), **self.estimates}

    def dump(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Write one ``.py`` file per distinct kernel into ``directory``."""
        d = Path(directory)
        seen: dict[str, Path] = {}
        for k in self.kernels:
            if k.name not in seen:
                seen[k.name] = write(k, d)
        return list(seen.values())


@dataclass
class _Group:
    kind: str
    nodes: list[Node]
    shape: tuple
    anchor: Node | None = None
    closed: bool = False  # takes no more nodes (attention)

    def epilogue_len(self) -> int:
        if self.anchor is None:
            return 0
        return len(self.nodes) - 1 - self.nodes.index(self.anchor)


def _device(target: str) -> Any:
    from graphopt.cost.devices import get_device

    return get_device(target)


def _shape(v: Value) -> tuple | None:
    t = v.type
    return tuple(t.shape) if isinstance(t, TensorType) and t.shape is not None else None


def lower(g: Graph, target: str = "a100") -> Lowered:
    """Partition ``g`` into kernel regions for ``target`` and generate their kernels."""
    from .kernels.decode_attention import decode_unsupported
    from .kernels.flash_attention import attention_unsupported
    from .kernels.matmul import matmul_unsupported
    from .kernels.quant_matmul import quant_pattern
    from .kernels.reduction import reduction_unsupported

    dev = _device(target)
    fusion = dev.fusion
    groups: list[_Group] = []
    region_of: dict[int, int] = {}
    upstream: dict[int, frozenset[int]] = {}
    kept: dict[int, str] = {}
    absorbed: set[int] = set()  # nodes folded into a quant_matmul (the dequantized weight)

    def no_cycle(n: Node, gi: int) -> bool:
        for v in n.inputs:
            if region_of.get(id(v.node)) != gi and gi in upstream.get(id(v.node), frozenset()):
                return False
        return True

    def add(n: Node, gi: int) -> None:
        groups[gi].nodes.append(n)
        region_of[id(n)] = gi

    def new(kind: str, n: Node, shape: tuple, anchor: Node | None = None,
            closed: bool = False) -> None:
        groups.append(_Group(kind, [], shape, anchor, closed))
        add(n, len(groups) - 1)

    def producer_groups(n: Node) -> list[int]:
        out = []
        for v in n.inputs:
            gi = region_of.get(id(v.node))
            if gi is not None and gi not in out:
                out.append(gi)
        return out

    users = g.users()
    graph_outs = {id(v.node) for v in g.outputs}
    quants: set[int] = set()
    for n in g.nodes:
        q = quant_pattern(n) if n.op == "matmul" else None
        if q is None:
            continue
        ids = {id(a) for a in q.absorbed}
        if all(id(a) not in graph_outs and all(u is n or id(u) in ids for u, _ in users[a])
               for a in q.absorbed):
            quants.add(id(n))
            absorbed |= ids
    for n in g.nodes:
        if n.op in ("input", "constant") or id(n) in absorbed:
            continue
        shape = _shape(n.outputs[0]) if len(n.out_types) == 1 else None
        placed = False
        family = get_op(n.op).triton_kernel  # the kernel family anchoring a region at n
        if family == "attention":
            why = attention_unsupported(n)
            if why is None:
                kind = "decode_attention" if decode_unsupported(n) is None else "attention"
                new(kind, n, shape or (), n, closed=True)
                placed = True
            else:
                kept[n.uid] = why
        elif family == "matmul":
            why = matmul_unsupported(n)
            if id(n) in quants:
                new("quant_matmul", n, shape or (), n, closed=True)
                placed = True
            elif why is None:
                new("matmul", n, shape or (), n)
                placed = True
            else:
                kept[n.uid] = why
        elif family == "reduction":
            why = reduction_unsupported(n) if fusion.reduction else "target fuses no reductions"
            if why is None:
                why = _row_fits(n, dev)
            if why is None:
                gi = region_of.get(id(n.inputs[0].node))
                if (gi is not None and groups[gi].kind == "pointwise" and fusion.pointwise
                        and groups[gi].shape == _shape(n.inputs[0]) and no_cycle(n, gi)):
                    groups[gi].kind, groups[gi].anchor = "reduction", n
                    add(n, gi)
                else:
                    new("reduction", n, _shape(n.inputs[0]) or (), n)
                placed = True
            else:
                kept[n.uid] = why
        else:
            why = fusible(n)
            if why is None and shape is None:
                why = "multi-output node"
            if why is None:
                for gi in producer_groups(n):
                    grp = groups[gi]
                    if grp.closed or grp.shape != shape or not no_cycle(n, gi):
                        continue
                    if grp.kind == "pointwise" and fusion.pointwise:
                        pass
                    elif grp.kind in ("matmul", "reduction") and fusion.epilogue:
                        ops = fusion.epilogue_ops
                        if grp.epilogue_len() >= fusion.max_epilogue or (
                                ops is not None and n.op not in ops):
                            continue
                    else:
                        continue
                    add(n, gi)
                    placed = True
                    break
                if not placed:
                    new("pointwise", n, shape or ())
                    placed = True
            else:
                kept[n.uid] = why
        ups: set[int] = set()
        for v in n.inputs:
            p = id(v.node)
            ups |= upstream.get(p, frozenset())
            if p in region_of:
                ups.add(region_of[p])
        if placed:
            ups.discard(region_of[id(n)])
        upstream[id(n)] = frozenset(ups)

    regions, est = _finalize(g, groups, users, dev, kept, absorbed)
    steps = _schedule(g, regions, absorbed)
    return Lowered(g, target, steps, kept, est)


def _row_fits(n: Node, dev: Any) -> str | None:
    t = n.inputs[0].type
    assert isinstance(t, TensorType) and t.shape is not None
    row = 1
    for d in t.shape[int(n.attrs["axis"]):]:
        row *= int(d)
    need = row * 4 * 2  # the row in fp32 plus one temporary
    if need > dev.onchip_bytes:
        return (f"{n.op}: a row of {row} elements ({need} B in fp32) exceeds {dev.name}'s "
                f"{int(dev.onchip_bytes)} B on chip")
    return None


def _time(flops: float, nbytes: float, dev: Any, dtype: DType | None, launches: int,
          matrix: bool) -> float:
    rate = dev.matrix_rate(dtype) * dev.matmul_efficiency if matrix else dev.vector_rate(dtype)
    return max(flops / rate, nbytes / dev.bandwidth(nbytes)) + launches * dev.launch_overhead


def _vbytes(v: Value) -> float:
    from graphopt.ops.registry import nbytes

    return float(nbytes(v.type))


def _finalize(g: Graph, groups: list[_Group], users: dict[Node, list[tuple[Node, int]]],
              dev: Any, kept: dict[int, str], absorbed: set[int]
              ) -> tuple[list[Region], dict[str, float]]:
    """Regions with their outputs; groups the cost model rejects dissolve into torch ops."""
    graph_outs = {(id(v.node), v.index) for v in g.outputs}
    regions: list[Region] = []
    fused_t = unfused_t = 0.0
    for grp in groups:
        members = {id(n) for n in grp.nodes}
        outs: list[Value] = []
        for n in grp.nodes:
            for v in n.outputs:
                if (id(n), v.index) in graph_outs or any(
                        id(u) not in members for u, _ in users.get(n, [])
                        if id(u) not in absorbed):
                    outs.append(v)
        ins: dict[tuple[int, int], Value] = {}
        flops = 0.0
        sep = 0.0
        for n in grp.nodes:
            c = get_op(n.op).cost(tuple(v.type for v in n.inputs), n.out_types, n.attrs)
            flops += c.flops
            dt = n.out_types[0].dtype if isinstance(n.out_types[0], TensorType) else None
            sep += _time(c.flops, c.bytes, dev, dt, 1, get_op(n.op).matrix_unit)
            for v in n.inputs:
                if id(v.node) not in members and scalar_constant(v) is None:
                    ins[(id(v.node), v.index)] = v
        boundary = sum(_vbytes(v) for v in ins.values()) + sum(_vbytes(v) for v in outs)
        dt0 = grp.nodes[0].out_types[0]
        fused = _time(flops, boundary, dev, dt0.dtype if isinstance(dt0, TensorType) else None,
                      1, grp.kind in ("matmul", "attention", "decode_attention", "quant_matmul"))
        if fused > sep and grp.kind not in HEAVY:
            for n in grp.nodes:
                kept[n.uid] = (f"cost model: fused {grp.kind} region est. {fused:.3g}s > "
                               f"{sep:.3g}s op by op on {dev.name}")
            continue
        fused_t += fused
        unfused_t += sep
        regions.append(Region(grp.kind, list(grp.nodes), outs, grp.anchor, tuple(grp.shape)))
    return regions, {"est_fused_s": fused_t, "est_unfused_s": unfused_t}


def _schedule(g: Graph, regions: list[Region], absorbed: set[int]) -> list[Step]:
    """Regions and remaining nodes as steps in a dependency order (Kahn over units, ties by
    the position of the unit's first node)."""
    from .kernels import emit_region

    pos = {id(n): i for i, n in enumerate(g.nodes)}
    unit_of: dict[int, int] = {}
    units: list[Step] = []
    first: list[int] = []
    for r in regions:
        for n in r.nodes:
            unit_of[id(n)] = len(units)
        units.append(Step(region=r))
        first.append(min(pos[id(n)] for n in r.nodes))
    for n in g.nodes:
        if n.op in ("input", "constant") or id(n) in unit_of or id(n) in absorbed:
            continue
        unit_of[id(n)] = len(units)
        units.append(Step(node=n))
        first.append(pos[id(n)])
    deps: list[set[int]] = [set() for _ in units]
    for n in g.nodes:
        u = unit_of.get(id(n))
        if u is None:
            continue
        for v in n.inputs:
            p = unit_of.get(id(v.node))
            if p is not None and p != u:
                deps[u].add(p)
    import heapq

    indeg = [len(d) for d in deps]
    rdeps: list[list[int]] = [[] for _ in units]
    for u, ds in enumerate(deps):
        for p in ds:
            rdeps[p].append(u)
    ready = [(first[u], u) for u in range(len(units)) if indeg[u] == 0]
    heapq.heapify(ready)
    order: list[Step] = []
    while ready:
        _, u = heapq.heappop(ready)
        order.append(units[u])
        for w in rdeps[u]:
            indeg[w] -= 1
            if indeg[w] == 0:
                heapq.heappush(ready, (first[w], w))
    if len(order) != len(units):
        raise GraphOptError("kernel regions form a cycle (lowering bug)", where="codegen.lower")
    for s in order:
        if s.region is not None:
            try:
                s.kernel = emit_region(s.region)
            except Exception as e:
                raise GraphOptError(f"cannot generate the kernel of {s.region.summary()}: "
                                    f"{type(e).__name__}: {e}",
                                    where=s.region.nodes[0].where) from e
    return order
