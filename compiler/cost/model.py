"""The fusion-aware cost model: estimated run time of a graph on a device.

Nodes are grouped into fused regions the way the target's runtime would run them (see
``devices.Fusion``): pointwise chains into one kernel, pointwise epilogues into the matmul / conv
before them, pointwise prologues and epilogues into reductions whose rows fit on chip. A region
costs the roofline of its flops and of the bytes crossing its boundary, plus one launch::

    time(region) = max(matmul_flops / (matrix_rate * efficiency) + other_flops / vector_rate,
                       boundary_bytes / bandwidth) + launch_overhead

Interior tensors (produced and consumed inside a region, not a graph output) are free. Views
(ops declaring ``cost_class = "view"``: reshape, squeeze, unsqueeze, identity; and contiguous
splits on targets whose runtime hands out views) cost nothing and are transparent: a value seen
through views is its source value. How a node fuses comes from its op's ``cost_class``, flops
from its ``cost`` aspect (on matrix units when it declares ``matrix_unit``); bytes are the
region's boundary (inputs in ``partial_read_inputs``, such as a slice's or gather's data, are read
only as far as the output reaches).

Grouping is greedy in topological order: a node joins the region of one of its producers when
the target fuses that pair and no cycle between regions can form; it never merges two regions.

``summed_time`` is TASO's model for comparison: every op a kernel of its own, times summed.
Per-node facts are cached by node (nodes are immutable and hash-consed), so costing the many
graphs of a search that share most nodes is one cheap pass each.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence

from ..ir.fold import FoldPolicy
from ..ir.graph import Graph
from ..ir.node import Node, Value
from ..ir.types import DType, TensorType
from .devices import Device, get_device


class Kind(enum.IntEnum):
    """How a node behaves under fusion (an op's ``cost_class``, upper-cased)."""

    SOURCE = 0  # input, constant
    VIEW = 1  # reshape / squeeze / unsqueeze / identity: no kernel, aliases its input
    POINTWISE = 2
    INJECTIVE = 3  # index-mapping data movement: transpose, slice, concat, gather, ...
    REDUCTION = 4
    HEAVY = 5  # matmul, conv, attention, pools: anchors with epilogues
    OPAQUE = 6  # never fused
    COLLECTIVE = 7  # communication between ranks: priced by the device's link, never fused


# the size policy of the constant folding after the search (search/stage.py: the one folder's
# default, as passes/cleanup.py's ConstantFold uses it); what it folds costs nothing
SEARCH_FOLD = FoldPolicy()


def kind_of(op: str) -> Kind:
    from ..ops.registry import get_op

    return Kind[get_op(op).cost_class.upper()]


def _nbytes(t: Any) -> float:
    from ..ops.registry import nbytes

    return float(nbytes(t))


@dataclass(frozen=True)
class NodeInfo:
    """What the cost model needs of one node (cached per node)."""

    kind: Kind
    matrix_flops: float
    vector_flops: float
    launches: int
    out_bytes: tuple[float, ...]
    in_bytes: tuple[float, ...]  # bytes this node reads of each input
    dtype: DType | None
    out_numel: int  # elements of output 0
    row_bytes: float  # reductions: bytes of one reduced row (must fit on chip to fuse)
    in_numel: int  # reductions: elements of input 0
    foldable: bool  # pure, and folded when its inputs are constants (cleanup's size rule)


def node_info(n: Node) -> NodeInfo:
    from ..ops.registry import SYM_DEFAULT, get_op

    kind = kind_of(n.op)
    opdef = get_op(n.op)
    in_types = tuple(v.type for v in n.inputs)
    out_bytes = tuple(_nbytes(t) for t in n.out_types)
    in_elems = sum(t.static_numel(SYM_DEFAULT) if isinstance(t, TensorType) else 1
                   for t in in_types)
    out_elems = sum(t.static_numel(SYM_DEFAULT) if isinstance(t, TensorType) else 1
                    for t in n.out_types)
    fold = SEARCH_FOLD
    foldable = bool(opdef.pure and in_types and (
        out_elems <= fold.max_elements or (fold.growth_only and out_elems <= in_elems)))
    if kind in (Kind.SOURCE, Kind.VIEW):
        return NodeInfo(kind, 0.0, 0.0, 0, out_bytes, tuple(0.0 for _ in in_types), None, 0,
                        0.0, 0, foldable)
    c = opdef.cost(in_types, n.out_types, n.attrs)
    mf = float(c.flops) if opdef.matrix_unit else 0.0
    vf = 0.0 if opdef.matrix_unit else float(c.flops)
    in_bytes = []
    for i, t in enumerate(in_types):
        b = _nbytes(t)
        if i in opdef.partial_read_inputs:
            b = min(b, sum(out_bytes))
        in_bytes.append(b)
    t0 = in_types[0] if kind == Kind.HEAVY and in_types else (n.out_types[0] if n.out_types
                                                              else None)
    dtype = t0.dtype if isinstance(t0, TensorType) else None
    o0 = n.out_types[0] if n.out_types else None
    out_numel = o0.static_numel(SYM_DEFAULT) if isinstance(o0, TensorType) else 1
    row_bytes, in_numel = 0.0, 0
    if kind == Kind.REDUCTION and in_types and isinstance(in_types[0], TensorType):
        x = in_types[0]
        in_numel = x.static_numel(SYM_DEFAULT)
        row = _reduced_elems(opdef.reduced_axes(len(x.shape or ()), n.attrs), x, SYM_DEFAULT)
        row_bytes = row * x.dtype.itemsize
    return NodeInfo(kind, mf, vf, max(int(c.launches), 1), out_bytes, tuple(in_bytes), dtype,
                    out_numel, row_bytes, in_numel, foldable)


def _reduced_elems(axes: Iterable[int], x: TensorType, sym: int) -> int:
    shape = x.shape or ()
    k = 1
    for a in axes:
        if 0 <= a < len(shape):
            d = shape[a]
            k *= d if isinstance(d, int) else sym
    return k


def _contiguous_split(n: Node) -> bool:
    """A split whose pieces are contiguous blocks of its input (every dim before the axis 1)."""
    t = n.inputs[0].type
    if not isinstance(t, TensorType) or t.shape is None:
        return False
    return all(d == 1 for d in t.shape[:n.attrs["axis"]])


@dataclass
class Region:
    """One fused kernel: its nodes and its roofline terms."""

    id: int
    kind: Kind
    nodes: list[Node] = field(default_factory=list)
    matrix_flops: float = 0.0
    vector_flops: float = 0.0
    launches: int = 1
    read_bytes: float = 0.0
    write_bytes: float = 0.0
    dtype: DType | None = None
    time: float = 0.0
    # fusion state
    anchor_numel: int = 0  # heavy: output elements (epilogues must match)
    epilogues: int = 0
    row_bytes: float = 0.0  # reduction rows
    red_numel: int = 0
    reads: dict[tuple[int, int], float] = field(default_factory=dict)  # external value -> bytes

    @property
    def bytes(self) -> float:
        return self.read_bytes + self.write_bytes

    @property
    def flops(self) -> float:
        return self.matrix_flops + self.vector_flops

    def describe(self) -> str:
        ops = "+".join(n.op for n in self.nodes)
        return (f"{self.kind.name.lower():9s} {self.time * 1e6:9.2f} us  {self.flops:.3g} flop  "
                f"{self.bytes:.3g} B  {ops}")


@dataclass
class GraphCost:
    """The estimate for one graph."""

    time: float  # seconds
    flops: float
    bytes: float
    launches: int
    regions: int
    nodes: int
    detail: list[Region] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"time_us": round(self.time * 1e6, 3), "flops": self.flops, "bytes": self.bytes,
                "kernels": self.launches, "regions": self.regions, "nodes": self.nodes}


class CostModel:
    """Fusion-aware analytic cost model for one device.

    ``model(g)`` is the estimated time in seconds; ``model.graph_cost(g, detail=True)`` lists the
    regions. ``fusion=False`` costs every op as its own kernel (still boundary-byte rooflines).
    """

    name = "analytic"

    def __init__(self, device: "Device | str" = "cpu", *, fusion: bool = True) -> None:
        self.device = get_device(device)
        self.fusion = fusion
        # facts depend on (op, attrs, input types) only, so nodes rebuilt by a rewrite hit the cache
        self._info: dict[tuple, NodeInfo] = {}
        self._by_id: dict[int, tuple[Node, NodeInfo]] = {}  # holds the node: ids stay unique
        self.evaluations = 0

    # ---- per node -------------------------------------------------------------------------------
    def info(self, n: Node) -> NodeInfo:
        hit = self._by_id.get(id(n))
        if hit is not None:
            return hit[1]
        key = (n.op, n.attrs, tuple(v.type for v in n.inputs))
        i = self._info.get(key)
        if i is None:
            i = node_info(n)
            if n.op == "split" and self.device.fusion.split_views and _contiguous_split(n):
                i = replace(i, kind=Kind.VIEW, matrix_flops=0.0, vector_flops=0.0, launches=0)
            self._info[key] = i
        if len(self._by_id) > 500_000:
            self._by_id.clear()
        self._by_id[id(n)] = (n, i)
        return i

    # ---- regions --------------------------------------------------------------------------------
    def region_time(self, r: Region) -> float:
        d = self.device
        if r.kind == Kind.COLLECTIVE:
            return self.collective_time(r.nodes[0])
        compute = 0.0
        if r.matrix_flops:
            compute += r.matrix_flops / (d.matrix_rate(r.dtype) * d.matmul_efficiency)
        if r.vector_flops:
            compute += r.vector_flops / d.vector_rate(r.dtype)
        b = r.bytes
        memory = b / d.bandwidth(b)
        return max(compute, memory) + r.launches * d.launch_overhead

    def collective_time(self, n: Node) -> float:
        """A collective's time on the device's link: ``steps * link_latency + bytes /
        link_bandwidth``, the steps and bytes from the op (``ops/collectives.py``)."""
        from ..ops.registry import get_op

        steps, nbytes = get_op(n.op).transfer(n.inputs[0].type, n.attrs)  # type: ignore[attr-defined]
        d = self.device
        return steps * d.link_latency + nbytes / d.link_bandwidth

    def __call__(self, g: Graph) -> float:
        return self.graph_cost(g).time

    def graph_cost(self, g: Graph, detail: bool = False) -> GraphCost:
        self.evaluations += 1
        return self._cost(self._group(g.nodes, g.outputs), detail)

    def nodes_time(self, nodes: Sequence[Node], outputs: Iterable[Value]) -> float:
        """Time of a part of a graph: ``nodes`` in topological order (values they read from
        other nodes come from outside), ``outputs`` the values read after it. The search uses
        it to cost a rewrite from the neighbourhood it changes."""
        return self._cost(self._group(nodes, outputs), False).time

    def _cost(self, regions: list[Region], detail: bool) -> GraphCost:
        total = 0.0
        flops = 0.0
        nbytes = 0.0
        launches = 0
        for r in regions:
            r.time = self.region_time(r)
            total += r.time
            flops += r.flops
            nbytes += r.bytes
            launches += r.launches
        return GraphCost(total, flops, nbytes, launches, len(regions),
                         sum(len(r.nodes) for r in regions), regions if detail else None)

    def summed_time(self, g: Graph) -> float:
        """TASO's model: each op its own kernel, op times summed (no fusion)."""
        saved = self.fusion
        self.fusion = False
        try:
            return self.graph_cost(g).time
        finally:
            self.fusion = saved

    def explain(self, g: Graph, top: int = 20) -> str:
        gc = self.graph_cost(g, detail=True)
        assert gc.detail is not None
        rs = sorted(gc.detail, key=lambda r: -r.time)[:top]
        head = (f"{self.device.name}: {gc.time * 1e6:.1f} us, {gc.launches} kernels, "
                f"{gc.flops:.3g} flop, {gc.bytes:.3g} B")
        return "\n".join([head] + ["  " + r.describe() for r in rs])

    # ---- grouping -------------------------------------------------------------------------------
    def _group(self, nodes: Iterable[Node], outputs: Iterable[Value]) -> list[Region]:
        fuse = self.fusion
        caps = self.device.fusion
        onchip = self.device.onchip_bytes
        info = self.info
        region_of: dict[int, int] = {}  # id(node) -> region index
        root: dict[tuple[int, int], Value] = {}  # view outputs -> the value they alias
        regions: list[Region] = []
        anc: list[int] = []  # per region: bitmask of the regions it depends on (transitively)
        has_dep: list[bool] = []  # per region: some other region reads it
        escapes: set[tuple[int, int]] = set()  # values read outside their region
        folded: set[int] = set()  # constants, and pure nodes over them (folded after search)

        def rootof(v: Value) -> Value:
            r = root.get((id(v.node), v.index))
            return v if r is None else r

        for n in nodes:
            ni = info(n)
            k = ni.kind
            if k == Kind.SOURCE:
                if n.op == "constant":
                    folded.add(id(n))
                continue
            if ni.foldable and all(id(v.node) in folded or self._outside_const(v.node)
                                   for v in n.inputs):
                folded.add(id(n))
                continue
            if k == Kind.VIEW:
                if n.inputs:
                    src = rootof(n.inputs[0])
                    for i in range(len(n.out_types)):
                        root[(id(n), i)] = src
                continue
            # producer regions of the inputs
            ins = [rootof(v) for v in n.inputs]
            in_regions: list[int] = []
            for v in ins:
                ri = region_of.get(id(v.node))
                if ri is not None and ri not in in_regions:
                    in_regions.append(ri)
            target = -1
            if fuse and k not in (Kind.HEAVY, Kind.OPAQUE, Kind.COLLECTIVE) and in_regions:
                target = self._choose(n, ni, ins, in_regions, regions, anc, has_dep, region_of,
                                      caps, onchip)
            if target < 0:
                target = len(regions)
                r = Region(target, k, dtype=ni.dtype)
                if k == Kind.HEAVY:
                    r.anchor_numel = ni.out_numel
                if k == Kind.REDUCTION:
                    r.row_bytes, r.red_numel = ni.row_bytes, ni.in_numel
                r.launches = ni.launches
                regions.append(r)
                anc.append(0)
                has_dep.append(False)
            else:
                r = regions[target]
                r.launches += ni.launches - 1
                if r.kind == Kind.HEAVY:
                    r.epilogues += 1
                elif k == Kind.REDUCTION:
                    if r.kind != Kind.REDUCTION:
                        r.kind = Kind.REDUCTION
                        r.row_bytes, r.red_numel = ni.row_bytes, ni.in_numel
                    else:
                        r.row_bytes = max(r.row_bytes, ni.row_bytes)
            region_of[id(n)] = target
            r.nodes.append(n)
            r.matrix_flops += ni.matrix_flops
            r.vector_flops += ni.vector_flops
            # boundary reads, dependence bookkeeping
            new_anc = 0
            reads = r.reads
            for v, b in zip(ins, ni.in_bytes):
                ri = region_of.get(id(v.node))
                if ri == target:
                    continue
                key = (id(v.node), v.index)
                if ri is not None:
                    escapes.add(key)
                    new_anc |= (1 << ri) | anc[ri]
                    has_dep[ri] = True
                if b > reads.get(key, 0.0):
                    reads[key] = b
            anc[target] |= new_anc
        for v in outputs:
            rv = rootof(v)
            escapes.add((id(rv.node), rv.index))
        # boundary bytes
        for r in regions:
            r.read_bytes = sum(r.reads.values())
            for n in r.nodes:
                ob = info(n).out_bytes
                for i in range(len(ob)):
                    if (id(n), i) in escapes:
                        r.write_bytes += ob[i]
        return regions

    def _outside_const(self, n: Node) -> bool:
        """A node outside the costed part that constant folding turns into a constant (checked
        one level deep: a constant, or a foldable op over constants)."""
        if n.op == "constant":
            return True
        i = self.info(n)
        return i.foldable and i.kind != Kind.SOURCE and bool(n.inputs) and all(
            v.node.op == "constant" for v in n.inputs)

    def _choose(self, n: Node, ni: NodeInfo, ins: list[Value], in_regions: list[int],
                regions: list[Region], anc: list[int], has_dep: list[bool],
                region_of: dict[int, int], caps: Any, onchip: float) -> int:
        """The producer region ``n`` joins, or -1 for a region of its own."""
        k = ni.kind
        best, best_score = -1, -1.0
        for ri in in_regions:
            r = regions[ri]
            rk = r.kind
            ok = False
            if k == Kind.POINTWISE:
                if rk in (Kind.POINTWISE, Kind.INJECTIVE):
                    ok = caps.pointwise
                elif rk == Kind.REDUCTION:
                    ok = caps.reduction and r.row_bytes <= onchip
                elif rk == Kind.HEAVY:
                    ok = (caps.epilogue and r.epilogues < caps.max_epilogue
                          and ni.out_numel == r.anchor_numel
                          and (caps.epilogue_ops is None or self._restricted_epilogue(
                              n, ins, ri, region_of, caps.epilogue_ops, r.nodes[0])))
            elif k == Kind.INJECTIVE:
                ok = caps.pointwise and rk in (Kind.POINTWISE, Kind.INJECTIVE)
            elif k == Kind.REDUCTION:
                if not caps.reduction or ni.row_bytes > onchip:
                    ok = False
                elif rk in (Kind.POINTWISE, Kind.INJECTIVE):
                    ok = True
                elif rk == Kind.REDUCTION:
                    ok = r.red_numel == ni.in_numel
            if not ok:
                continue
            # no cycle: no other input region may depend on ri
            new_anc = 0
            cyclic = False
            for v in ins:
                rj = region_of.get(id(v.node))
                if rj is None or rj == ri:
                    continue
                if (anc[rj] >> ri) & 1:
                    cyclic = True
                    break
                new_anc |= (1 << rj) | anc[rj]
            if cyclic:
                continue
            # growing a region others already read must not add ancestors to it (keeps every
            # region's ancestor set exact without updating its dependents)
            if has_dep[ri] and new_anc & ~anc[ri]:
                continue
            score = float(rk) * 1e18 + sum(b for v, b in zip(ins, ni.in_bytes)
                                            if region_of.get(id(v.node)) == ri)
            if score > best_score:
                best, best_score = ri, score
        return best

    @staticmethod
    def _restricted_epilogue(n: Node, ins: list[Value], ri: int, region_of: dict[int, int],
                             ops: frozenset[str], anchor: Node) -> bool:
        """Runtimes with a fixed epilogue list (ONNX Runtime CPU: Gemm bias, Conv+activation)
        fuse only listed ops whose other operands are constants (a bias, a clip bound). A bias
        add joins a matmul only as Gemm's: a 2-D weight and a bias over its columns (ONNX
        Runtime runs a batched MatMul, e.g. per attention head, and its add as two kernels)."""
        if n.op not in ops:
            return False
        for v in ins:
            if region_of.get(id(v.node)) == ri:
                continue
            if v.node.op != "constant":
                return False
            if n.op == "add" and anchor.op == "matmul" and not _gemm_bias(anchor, v):
                return False
        return True


def _gemm_bias(mm: Node, bias: Value) -> bool:
    """Whether ``bias`` added to matmul ``mm`` is a Gemm bias: a 2-D weight, and the bias one
    row over its columns ([N] or [1, ..., 1, N])."""
    w, b = mm.inputs[1].type, bias.type
    if not (isinstance(w, TensorType) and isinstance(b, TensorType)) or w.shape is None \
            or b.shape is None or len(w.shape) != 2:
        return False
    return all(d == 1 for d in b.shape[:-1]) and (not b.shape or b.shape[-1] in (1, w.shape[1]))


def estimate(g: Graph, device: "Device | str" = "cpu") -> GraphCost:
    """One-off estimate (builds a model; reuse a ``CostModel`` in loops)."""
    return CostModel(device).graph_cost(g)
