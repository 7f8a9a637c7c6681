"""Tensor parallelism as rewrites: split weights, then push the all-gathers down.

A sharded graph is written in the collectives' global view (``ops/collectives.py``): a value
that lives in blocks on the ranks is ``all_gather(block_0, ..., block_{W-1}) {axis}``, a sum of
partial values is ``all_reduce(p_0, ..., p_{W-1})``, a rank's block of a replicated value is
``shard(x) {axis, rank}``. The rules here are exact identities over that view, each stated at
W = 2 in ``rules/tensor_parallel.rules`` and proven by ``graphopt rules verify``:

* ``tp.split_weight``: a weight the plan splits along an axis becomes the all-gather of its
  blocks (the plan is the pass's ``tp_splits`` option: ``{id(ConstData): axis}``);
* pushdown (``local`` driver, bottom-up, so each consumer sees its inputs already pushed): an
  op over all-gathered inputs runs on each rank's blocks and the all-gather moves below it --
  matmul by columns (``tp.column``), the contraction split by rows into partial sums added by
  an all-reduce (``tp.row``), elementwise and axis-local ops (each op's ``split_axes``), views,
  transposes, slices / concats / splits along other axes, attention split by whole heads
  (grouped-query kv heads with their query heads, replicated kv heads sliced per rank), and the
  vocabulary-parallel embedding (each rank looks up the ids in its rows, zeros elsewhere, an
  all-reduce adds them).

An all-gather that no rule moves is real communication: a value a rank needs whole (a norm
over the split axis, a graph output, an opaque op). The rules' failures say why, so the
tensor-parallel report can name each collective's reason.
``tp.unmerge`` (its own pass, run before planning) splits a matmul whose output is only cut into
pieces along its columns (GPT-2's fused QKV) into one matmul per piece, so each can be split by
heads on its own.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from graphopt.ir.node import ConstData, Node, Origin, Value
from graphopt.ir.types import TensorType
from graphopt.ops.registry import get_op
from graphopt.rewrite.context import MatchContext, const_array
from graphopt.rewrite.match import Match, MatchFail, fail
from graphopt.rewrite.passes import RewritePass
from graphopt.rewrite.rule import Rule

SPLITS = "tp_splits"  # option: {id(ConstData): axis} the plan splits
WORLD = "tp_world_size"  # option: the number of ranks

_ORIGIN = "pass:tensor_parallel"


# ---- reading and building the global view -------------------------------------------------------

def gathered(v: Value) -> tuple[list[Value], int] | None:
    """(the ranks' blocks, axis) when ``v`` is an all-gather in the global view, else None."""
    n = v.node
    if n.op == "all_gather" and len(n.inputs) == n.attrs["world_size"]:
        return list(n.inputs), int(n.attrs["axis"])
    return None


def is_split_weight(v: Value) -> bool:
    """Whether ``v`` is the all-gather of the blocks of a weight (the plan split it): shards of
    one constant, or constant blocks."""
    g = gathered(v)
    if g is None:
        return False
    if all(p.node.op == "constant" for p in g[0]):
        return True
    src = {p.node.inputs[0].node for p in g[0] if p.node.op == "shard"}
    return (all(p.node.op == "shard" for p in g[0]) and len(src) == 1
            and next(iter(src)).op == "constant")


def _origin(n: Node, rule: str) -> Origin:
    o = n.origin
    return Origin(_ORIGIN, o.name if o is not None else rule, rule)


def all_gather(parts: Sequence[Value], axis: int, origin: Origin | None = None) -> Value:
    return Node.build("all_gather", list(parts), {"world_size": len(parts), "axis": axis},
                      origin).out


def all_reduce(parts: Sequence[Value], origin: Origin | None = None) -> Value:
    return Node.build("all_reduce", list(parts), {"world_size": len(parts)}, origin).out


def shard(v: Value, rank: int, world: int, axis: int, origin: Origin | None = None) -> Value:
    return Node.build("shard", [v], {"axis": axis, "rank": rank, "world_size": world}, origin).out


def _shape(v: Value) -> tuple:
    t = v.type
    if not isinstance(t, TensorType) or t.shape is None:
        raise fail(f"{v.node.op} output of unknown rank", v)
    return t.shape


def _block(v: Value, rank: int, world: int, axis: int | None, origin: Origin) -> Value:
    """Rank ``rank``'s operand for input ``v`` split along ``axis`` (None: read whole): its own
    block when ``v`` is all-gathered along that axis, else a shard of the replicated value."""
    if axis is None:
        return v
    g = gathered(v)
    if g is not None:
        if g[1] != axis or len(g[0]) != world:
            raise fail(f"input is split along axis {g[1]}, needed along {axis}", v)
        return g[0][rank]
    n = _shape(v)[axis]
    if not isinstance(n, int) or n % world:
        raise fail(f"axis {axis} of {v.type} does not split into {world} equal blocks", v)
    return shard(v, rank, world, axis, origin)


def _rebuild(n: Node, inputs: Sequence[Value], attrs: Any = None) -> Node:
    return Node.build(n.op, list(inputs), n.attrs if attrs is None else attrs,
                      _origin(n, "tp"))


def _first_gathered(n: Node) -> tuple[int, list[Value], int] | None:
    for i, v in enumerate(n.inputs):
        g = gathered(v)
        if g is not None:
            return i, g[0], g[1]
    return None


class _PushRule(Rule):
    """Base of the pushdown rules: a match when some input is all-gathered; ``data`` is what
    the builder needs (computed in ``plan``, which raises MatchFail with the reason)."""

    kind = "tensor_parallel"
    pass_name = "tensor_parallel"
    place = "sharding"
    place_title = "ops over split values"
    report_matches = False

    def match(self, n: Node, ctx: MatchContext) -> Match | MatchFail | None:
        if not any(gathered(v) is not None for v in n.inputs):
            return None
        return Match(roots=list(n.outputs), data=self.plan(n), detail=self.name)

    def plan(self, n: Node) -> Any:
        raise NotImplementedError


# ---- the rules ---------------------------------------------------------------------------------

class SplitWeight(Rule):
    """A weight the plan splits along ``axis`` -> all_gather(shard_0(W), ..., shard_{W-1}(W))."""

    name = "tp.split_weight"
    kind = "tensor_parallel"
    pass_name = "tensor_parallel"
    place = "weight"
    place_title = "weights the plan splits"
    anchors = frozenset({"constant"})

    def match(self, n: Node, ctx: MatchContext) -> Match | MatchFail | None:
        axis = ctx.options.get(SPLITS, {}).get(id(n.attrs["data"]))
        if axis is None:
            return None
        world = int(ctx.options[WORLD])
        size = _shape(n.out)[axis]
        if not isinstance(size, int) or size % world:
            return fail(f"axis {axis} of {n.out.type} does not split into {world} equal blocks", n)
        return Match(roots=[n.out], data=(axis, world), detail=f"axis {axis}")

    def build(self, m: Match) -> Value:
        axis, world = m.data
        w = m.roots[0]
        o = _origin(w.node, self.name)
        return all_gather([shard(w, r, world, axis, o) for r in range(world)], axis, o)


class Pointwise(_PushRule):
    """op(all_gather(x_r), y) -> all_gather(op(x_r, y_r)) for ops computed blockwise along the
    axis (``OpDef.split_axes``): elementwise ops, norms / softmax over other axes, rotary."""

    name = "tp.pointwise"

    def plan(self, n: Node) -> Any:
        if n.op == "opaque":
            raise fail(f"{n.attrs.get('op_type', 'an op')} is opaque to graphopt (no op of its "
                       f"own), so it runs on whole values", n)
        i, parts, axis = _first_gathered(n)  # type: ignore[misc]
        ro = len(_shape(n.out))
        ri = len(_shape(n.inputs[i]))
        out_axis = axis + (ro - ri)
        axes = get_op(n.op).split_axes(tuple(v.type for v in n.inputs), n.out_types, n.attrs,
                                       out_axis)
        if axes is None:
            raise fail(f"{n.op} needs its whole input along axis {axis} (it mixes that axis)", n)
        if axes[i] != axis:
            raise fail(f"{n.op} splits input {i} along {axes[i]}, not the gathered axis {axis}", n)
        for j, v in enumerate(n.inputs):
            if axes[j] is None and gathered(v) is not None:
                raise fail(f"input {j} is split but {n.op} reads it whole", v)
        return len(parts), out_axis, axes

    def match(self, n: Node, ctx: MatchContext) -> Match | MatchFail | None:
        if n.op in _OWN_RULE or len(n.outputs) != 1:
            return None
        return super().match(n, ctx)

    def build(self, m: Match) -> Value:
        world, out_axis, axes = m.data
        n = m.roots[0].node
        o = _origin(n, self.name)
        outs = [_rebuild(n, [_block(v, r, world, a, o) for v, a in zip(n.inputs, axes)]).out
                for r in range(world)]
        return all_gather(outs, out_axis, o)


def _prefix_axis(shape_in: tuple, axis: int, shape_out: tuple, world: int) -> int | None:
    """The output axis of a reshape that carries input ``axis``'s blocks: the output axis
    starting where the input axis starts (equal prefix products) and whose size splits."""
    pre = shape_in[:axis]
    for b in range(len(shape_out) + 1):
        if _same_product(pre, shape_out[:b]):
            if b < len(shape_out) and isinstance(shape_out[b], int) and shape_out[b] % world == 0 \
                    and shape_out[b] > 0:
                return b
    return None


def _factors(dims: tuple) -> tuple[int, list[str]]:
    """A product of dims as (integer factor, sorted symbols); a product symbol ``a*b*_x3`` is
    its factors."""
    k, syms = 1, []
    for d in dims:
        if isinstance(d, int):
            k *= d
            continue
        for f in str(d).split("*"):
            if f.startswith("_x") and f[2:].isdigit():
                k *= int(f[2:])
            else:
                syms.append(f)
    return k, sorted(syms)


def _same_product(a: tuple, b: tuple) -> bool:
    return _factors(a) == _factors(b)


class View(_PushRule):
    """reshape / squeeze / unsqueeze / identity of all_gather(x_r) -> all_gather of the view of
    each block, when the blocks stay blocks of one output axis."""

    name = "tp.view"
    anchors = frozenset({"reshape", "squeeze", "unsqueeze", "identity"})

    def plan(self, n: Node) -> Any:
        _, parts, axis = _first_gathered(n)  # type: ignore[misc]
        world = len(parts)
        sin, sout = _shape(n.inputs[0]), _shape(n.out)
        b = _prefix_axis(sin, axis, sout, world)
        if b is None:
            raise fail(f"{n.op} to {list(sout)} does not keep the {world} blocks of axis {axis} "
                       f"as blocks of one axis", n)
        part_shape = tuple(d // world if k == b else d for k, d in enumerate(sout))
        return world, b, part_shape

    def build(self, m: Match) -> Value:
        world, b, part_shape = m.data
        n = m.roots[0].node
        parts, _ = gathered(n.inputs[0])  # type: ignore[misc]
        o = _origin(n, self.name)
        attrs = n.attrs.replace(shape=part_shape) if n.op == "reshape" else n.attrs
        return all_gather([_rebuild(n, [p], attrs).out for p in parts], b, o)


class Transpose(_PushRule):
    """transpose(all_gather(x_r, a)) -> all_gather(transpose(x_r), perm.index(a))."""

    name = "tp.transpose"
    anchors = frozenset({"transpose"})

    def plan(self, n: Node) -> Any:
        _, parts, axis = _first_gathered(n)  # type: ignore[misc]
        return list(n.attrs["perm"]).index(axis)

    def build(self, m: Match) -> Value:
        n = m.roots[0].node
        parts, _ = gathered(n.inputs[0])  # type: ignore[misc]
        return all_gather([_rebuild(n, [p]).out for p in parts], m.data, _origin(n, self.name))


class Slicing(_PushRule):
    """slice / split / concat along another axis than the gathered one run on each block."""

    name = "tp.slicing"
    anchors = frozenset({"slice", "split", "concat"})

    def plan(self, n: Node) -> Any:
        _, parts, axis = _first_gathered(n)  # type: ignore[misc]
        world = len(parts)
        cut = list(n.attrs["axes"]) if n.op == "slice" else [n.attrs["axis"]]
        if axis in cut:
            raise fail(f"{n.op} cuts the split axis {axis}", n)
        if n.op == "concat":
            for v in n.inputs:
                g = gathered(v)
                if g is not None and g[1] != axis:
                    raise fail(f"concat of values split along different axes", v)
        return world, axis

    def build(self, m: Match) -> list[Value]:
        world, axis = m.data
        n = m.roots[0].node
        o = _origin(n, self.name)
        per_rank = [_rebuild(n, [_block(v, r, world, axis, o) for v in n.inputs])
                    for r in range(world)]
        return [all_gather([rn.outputs[k] for rn in per_rank], axis, o)
                for k in range(len(n.outputs))]


class Matmul(_PushRule):
    """matmul over split operands.

    * columns: matmul(a, all_gather(w_r, last)) -> all_gather(matmul(a, w_r), last);
    * rows of a: matmul(all_gather(a_r, rows or batch), b) -> all_gather(matmul(a_r, b));
    * contraction: matmul(all_gather(a_r, last), all_gather(w_r, rows)) ->
      all_reduce(matmul(a_r, w_r)); when only the weight is split (the plan split it by rows)
      the replicated activation is sharded locally.
    """

    name = "tp.matmul"
    anchors = frozenset({"matmul"})

    def plan(self, n: Node) -> Any:
        a, b = n.inputs
        ra, rb, ro = len(_shape(a)), len(_shape(b)), len(_shape(n.out))
        if ra < 2 or rb < 2:
            raise fail("matmul with a vector operand", n)
        ga, gb = gathered(a), gathered(b)
        ka = ga[1] if ga else None
        kb = gb[1] if gb else None
        world = len((ga or gb)[0])  # type: ignore[index]
        # the contraction: a's last axis with b's rows
        if ka == ra - 1 or kb == rb - 2:
            if (ga is not None and ka != ra - 1) or (gb is not None and kb != rb - 2):
                raise fail("one operand is split along the contraction, the other along "
                           "another axis", n)
            if gb is None:
                raise fail("the contraction axis is split but the weight is not (split the "
                           "weight by rows to keep it split)", n)
            if ga is None and not is_split_weight(b):
                raise fail("the contraction is split in an activation only", n)
            return ("row", world, ra - 1, rb - 2)
        if kb == rb - 1:  # columns
            if ga is not None:
                raise fail("both operands are split along output axes", n)
            return ("col", world, None, rb - 1, ro - 1)
        if ka is not None and ka <= ra - 2 and gb is None:  # rows / batch of a
            out_axis = ka + (ro - ra)
            bk = out_axis - (ro - rb)  # b's axis aligned with it (batch dims broadcast)
            if ka == ra - 2 or bk < 0 or _shape(b)[bk] == 1:
                return ("rows", world, ka, None, out_axis)
            return ("rows", world, ka, bk, out_axis)
        raise fail(f"split along axes {ka} / {kb} of a matmul is not handled", n)

    def build(self, m: Match) -> Value:
        n = m.roots[0].node
        a, b = n.inputs
        o = _origin(n, self.name)
        kind, world = m.data[0], m.data[1]
        if kind == "row":
            _, _, ka, kb = m.data
            outs = [_rebuild(n, [_block(a, r, world, ka, o), _block(b, r, world, kb, o)]).out
                    for r in range(world)]
            return all_reduce(outs, o)
        _, _, ka, kb, out_axis = m.data
        outs = [_rebuild(n, [_block(a, r, world, ka, o), _block(b, r, world, kb, o)]).out
                for r in range(world)]
        return all_gather(outs, out_axis, o)


def _kv_heads(k: Value, rank: int, world: int, heads: int, origin: Origin) -> Value:
    """Rank ``rank``'s kv heads for its block of ``heads`` query heads: its block when the kv
    heads split alike, else the kv heads its query heads read, sliced from the whole."""
    g = gathered(k)
    hkv = _shape(k)[1]
    group = heads // hkv
    per = heads // world
    if g is not None:
        if g[1] != 1:
            raise fail(f"keys / values split along axis {g[1]}, not the heads", k)
        if per % group:
            raise fail(f"{per} query heads per rank do not hold whole groups of {group} over "
                       f"the split kv heads", k)
        return g[0][rank]
    if per % group == 0:
        return shard(k, rank, world, 1, origin)
    if group % per == 0:  # several ranks read one kv head: each slices the head it needs
        if hkv == 1:
            return k
        h = rank * per // group
        return Node.build("slice", [k], {"starts": (h,), "ends": (h + 1,), "axes": (1,),
                                         "steps": (1,)}, origin).out
    raise fail(f"{per} query heads per rank straddle kv groups of {group}", k)


class Attention(_PushRule):
    """attention over query heads split into whole heads -> all_gather over the heads of each
    rank's attention (keys / values: their blocks, or the kv heads the rank's query heads read;
    a mask with a heads axis: its block)."""

    name = "tp.attention"
    anchors = frozenset({"attention"})

    def plan(self, n: Node) -> Any:
        q = n.inputs[0]
        gq = gathered(q)
        world = len(next(gathered(v) for v in n.inputs if gathered(v) is not None)[0])  # type: ignore[index]
        if gq is not None and gq[1] != 1:
            raise fail(f"queries split along axis {gq[1]}, not the heads", q)
        heads = _shape(q)[1]
        if not isinstance(heads, int) or heads % world:
            raise fail(f"{heads} heads do not split into {world} ranks", q)
        if len(n.inputs) > 3:
            mk = n.inputs[3]
            ms = _shape(mk)
            gm = gathered(mk)
            if gm is not None and (len(ms) != 4 or gm[1] != 1):
                raise fail("the mask is split along another axis than the heads", mk)
        for k in n.inputs[1:3]:
            _kv_heads(k, 0, world, heads, _origin(n, self.name))  # raises the reason
        return world, heads

    def build(self, m: Match) -> Value:
        world, heads = m.data
        n = m.roots[0].node
        o = _origin(n, self.name)
        q, k, v = n.inputs[:3]
        outs = []
        for r in range(world):
            ins = [_block(q, r, world, 1, o), _kv_heads(k, r, world, heads, o),
                   _kv_heads(v, r, world, heads, o)]
            if len(n.inputs) > 3:
                mk = n.inputs[3]
                ms = _shape(mk)
                split = len(ms) == 4 and ms[1] != 1
                ins.append(_block(mk, r, world, 1 if split else None, o))
            outs.append(_rebuild(n, ins).out)
        return all_gather(outs, 1, o)


class Embedding(_PushRule):
    """gather(all_gather(T_r, 0), ids) -> all_reduce over the ranks of each rank's lookup of the
    ids in its rows (zero where an id is another rank's); a table split along another axis ->
    all_gather of each rank's lookup."""

    name = "tp.embedding"
    anchors = frozenset({"gather"})

    def plan(self, n: Node) -> Any:
        data, idx = n.inputs
        g = gathered(data)
        if g is None:
            raise fail("the ids are split, the table is not", idx)
        parts, axis = g
        gaxis = n.attrs["axis"]
        if axis != gaxis:
            ri = len(_shape(idx))
            return ("other", len(parts), axis + ri - 1 if axis > gaxis else axis)
        if gaxis != 0:
            raise fail(f"a table split along its gathered axis {gaxis} (only rows: axis 0)", n)
        return ("rows", len(parts), _shape(parts[0])[0])

    def build(self, m: Match) -> Value:
        n = m.roots[0].node
        o = _origin(n, self.name)
        data, idx = n.inputs
        parts, _ = gathered(data)  # type: ignore[misc]
        kind, world, k = m.data
        if kind == "other":
            return all_gather([_rebuild(n, [p, idx]).out for p in parts], k, o)
        rows = k
        vocab = rows * world
        it = _shape(idx)
        dt = idx.type.dtype  # type: ignore[union-attr]
        table_t = parts[0].type
        assert isinstance(table_t, TensorType)

        made: dict[tuple, Value] = {}

        def const(x: Any, dtype: Any) -> Value:
            key = (float(x), np.dtype(dtype).str)
            if key not in made:
                made[key] = Node.build("constant", [], {"data": ConstData(
                    np.asarray(x, dtype=dtype))}).out
            return made[key]

        npi = dt.to_numpy()
        # ids counted from the end of the whole table, as gather reads negative ids
        neg = Node.build("less", [idx, const(0, npi)], {}, o).out
        wrapped = Node.build("add", [idx, const(vocab, npi)], {}, o).out
        ids = Node.build("where", [neg, wrapped, idx], {}, o).out
        trailing = len(table_t.shape) - 1  # type: ignore[arg-type]
        zero = const(0, table_t.dtype.to_numpy())
        outs = []
        for r in range(world):
            local = ids if r == 0 else Node.build("sub", [ids, const(r * rows, npi)], {}, o).out
            lo_ok = Node.build("greater_equal", [local, const(0, npi)], {}, o).out
            hi_ok = Node.build("less", [local, const(rows, npi)], {}, o).out
            ok = Node.build("and", [lo_ok, hi_ok], {}, o).out
            safe = Node.build("where", [ok, local, const(0, npi)], {}, o).out
            got = Node.build("gather", [parts[r], safe], {"axis": 0}, o).out
            keep = ok
            if trailing:
                keep = Node.build("reshape", [ok], {"shape": tuple(it) + (1,) * trailing}, o).out
            outs.append(Node.build("where", [keep, got, zero], {}, o).out)
        return all_reduce(outs, o)


# ops with a rule of their own (the pointwise rule leaves them alone)
_OWN_RULE = frozenset({"reshape", "squeeze", "unsqueeze", "identity", "transpose", "slice",
                       "split", "concat", "matmul", "attention", "gather", "all_gather",
                       "all_reduce", "reduce_scatter", "shard"})

PUSH_RULES: tuple[Rule, ...] = (Pointwise(), View(), Transpose(), Slicing(), Matmul(),
                                Attention(), Embedding())


# ---- unmerge fused projections --------------------------------------------------------------

def _through_views(v: Value, ctx: MatchContext) -> list[Node]:
    """The chain of single-use view nodes from ``v``'s node's only user down (may be empty)."""
    chain: list[Node] = []
    n = v.node
    while True:
        us = ctx.users_of(n)
        if len(us) != 1 or us[0][1] < 0:
            return chain
        u = us[0][0]
        if u.op != "reshape":
            return chain
        chain.append(u)
        n = u


class Unmerge(Rule):
    """split(matmul(x, W)[, + b], columns) -> matmul(x, W[:, piece])[, + b[piece]] per piece:
    a fused projection (GPT-2's QKV) becomes one matmul per piece, so the plan can split each
    by heads."""

    name = "tp.unmerge"
    kind = "tensor_parallel"
    pass_name = "tensor_parallel_unmerge"
    place = "fused projection"
    place_title = "matmuls whose output is cut into pieces"
    anchors = frozenset({"matmul"})

    def match(self, n: Node, ctx: MatchContext) -> Match | MatchFail | None:
        w = const_array(n.inputs[1])
        if w is None or w.ndim != 2:
            return None
        head = n
        bias = None
        us = ctx.users_of(n)
        if len(us) == 1 and us[0][0].op == "add":
            add = us[0][0]
            b = add.inputs[1 - us[0][1]]
            ba = const_array(b)
            if ba is not None and ba.ndim == 1 and ba.shape[0] == w.shape[1]:
                bias, head = ba, add
        chain = _through_views(head.out, ctx)
        last = chain[-1] if chain else head
        us = ctx.users_of(last)
        if len(us) != 1 or us[0][0].op != "split" or us[0][1] != 0:
            return None
        sp = us[0][0]
        rank = len(_shape(last.out))
        if sp.attrs["axis"] != rank - 1:
            return fail("the output is cut along another axis than its columns", sp)
        for c in chain:
            if _shape(c.out)[-1] != w.shape[1]:
                return fail("a reshape between the matmul and the split moves its columns", c)
        return Match(roots=list(sp.outputs), data=(n, w, bias, chain, sp),
                     detail=f"{len(sp.outputs)} pieces")

    def build(self, m: Match) -> list[Value]:
        n, w, bias, chain, sp = m.data
        o = _origin(n, self.name)
        outs, start = [], 0
        for size in sp.attrs["sizes"]:
            cols = slice(start, start + size)
            start += size
            wname = n.inputs[1].node.origin.name if n.inputs[1].node.origin else "weight"
            wp = Node.build("constant", [], {"data": ConstData(np.ascontiguousarray(w[:, cols]))},
                            Origin(_ORIGIN, f"{wname}[:, {cols.start}:{cols.stop}]", self.name)).out
            y = Node.build("matmul", [m.tr(n.inputs[0]), wp], {}, o).out
            if bias is not None:
                bp = Node.build("constant", [], {"data": ConstData(
                    np.ascontiguousarray(bias[cols]))}, o).out
                y = Node.build("add", [y, bp], {}, o).out
            for c in chain:
                shp = tuple(c.attrs["shape"])[:-1] + (size,)
                y = Node.build("reshape", [y], {"shape": shp}, o).out
            outs.append(y)
        return outs


class Tie(Rule):
    """A constant equal to the transpose of another constant (a tied LM head folded at import)
    -> transpose(that constant), so a rank holds the weight once."""

    name = "tp.tie"
    kind = "tensor_parallel"
    pass_name = "tensor_parallel_unmerge"
    place = "tied weight"
    place_title = "constants that are the transpose of another"
    anchors = frozenset({"constant"})
    report_matches = True

    def match(self, n: Node, ctx: MatchContext) -> Match | MatchFail | None:
        a = const_array(n.out)
        if a is None or a.ndim != 2 or a.size < 16:
            return None
        index = ctx.memo.get("tp.tie")
        if index is None:
            index = {}
            for m in ctx.graph.nodes:
                arr = const_array(m.out) if m.op == "constant" else None
                if arr is not None and arr.ndim == 2 and arr.size >= 16:
                    index.setdefault((arr.shape, arr.dtype.str), []).append(m)
            ctx.memo["tp.tie"] = index
        for m in index.get(((a.shape[1], a.shape[0]), a.dtype.str), []):
            # of a pair, the constant made later (the folded transpose) goes
            if m is not n and m.uid < n.uid and np.array_equal(a, const_array(m.out).T):  # type: ignore[union-attr]
                return Match(roots=[n.out], data=m, detail="transpose of another constant")
        return None

    def build(self, m: Match) -> Value:
        return Node.build("transpose", [m.data.out], {"perm": (1, 0)},
                          _origin(m.roots[0].node, self.name)).out


def unmerge_pass() -> RewritePass:
    return RewritePass("tensor_parallel_unmerge", [Unmerge(), Tie()], mode="sweep")


def tensor_parallel_pass(splits: dict[int, int], world: int) -> RewritePass:
    """The pass applying a plan: split the planned weights, push the all-gathers down."""
    return RewritePass("tensor_parallel", [SplitWeight(), *PUSH_RULES], mode="local",
                       options={SPLITS: dict(splits), WORLD: world})


def pushdown_pass() -> RewritePass:
    """The pushdown rules alone (the rule replay runs them on each rule's lhs)."""
    return RewritePass("tensor_parallel", list(PUSH_RULES), mode="local")
