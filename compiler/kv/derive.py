"""Derive the cached forms of a decoder: the prefill graph and the decode graph (decoder with
past), with the facts that make the derivation legal.

The original computes logits for all S tokens. ``seqaxis`` proved every op on the token stream
row-local except attention, and ``probe`` measured each attention's mask to be causal (with a
window, with or without padding) at every length up to ``max_length``. Then row t of the
original equals the network run on the new tokens only, where each attention reads the keys
and values of all earlier tokens: the per-step identity (proven by z3 as the rule
``kv.decode_step`` in ``passes/rules/kv_cache.rules``)

    attention(q, K, V, causal)[rows P..T-1] = attention(q[P..T-1], K, V, keep[i, j] = j <= P + i)

and, since keys and values are row-local in the tokens, K[0..P-1] is what the earlier calls
computed: the cache. The decode graph is the original's token-stream nodes rebuilt for
``sequence_length`` new tokens (reshape / expand dims follow), with

* each attention's keys / values taken where they have the layout [batch, kv_heads, seq, head]
  (before a grouped-query repeat, after rotary), appended to ``past_key_values.{i}.*`` and
  returned as ``present.{i}.*``; the repeat and layout ops after that point run over
  ``total_sequence_length`` keys;
* each mask replaced by the canonical one it was measured to equal, over the past + new slots:
  ``keep[b, i, j] = j <= P + i (and j > P + i - window) (and attention_mask[b, j])``;
* each position computation (a value measured to be ``arange(S)``) replaced by the
  ``position_ids`` input, so rotary tables and learned position embeddings take the past length;
* values that are the same at every length folded to constants.

Anything else aux that the token stream reads is refused with its node. The whole derivation is
checked numerically afterwards (``graphopt.kv.check``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..ir.graph import Graph
from ..ir.node import Node, Value, constant, input_node, op
from ..ir.types import Dim, DType, TensorType, dim_factors, dim_product
from ..ops.registry import get_op
from . import glue
from .probe import MaskFacts, Prober, is_arange, size_independent
from .seqaxis import (MASK, POSITIONS, TOKENS, KVCacheError, Refusal, StreamInfo, analyze,
                      require_legal)
from .spec import CacheSpec

BATCH, NEW, PAST, TOTAL = ("batch_size", "sequence_length", "past_sequence_length",
                           "total_sequence_length")
LAYOUT_OPS = frozenset({"reshape", "expand", "unsqueeze", "squeeze", "transpose", "identity"})
DEFAULT_MAX_LENGTH = 2048


def past_name(i: int, kv: str) -> str:
    return f"past_key_values.{i}.{kv}"


def present_name(i: int, kv: str) -> str:
    return f"present.{i}.{kv}"


@dataclass
class CachedLayer:
    """One cache entry: where the original computes the keys / values it stores."""

    key: Value
    value: Value
    attentions: list[Node] = field(default_factory=list)


@dataclass
class Derivation:
    """The result of ``derive``: the graphs, the cache facts and what was decided where."""

    decode: Graph
    prefill: Graph
    spec: CacheSpec
    layers: list[CachedLayer]
    masks: dict[Node, MaskFacts]
    notes: list[str]
    ring: Graph | None = None  # decode graph without a window condition (rolling-buffer cache)
    static: Graph | None = None  # decode graph over buffers of context_length slots

    def summary(self) -> dict[str, Any]:
        return {"layers": self.spec.num_layers, "kv_heads": self.spec.num_kv_heads,
                "heads": self.spec.num_heads, "head_size": self.spec.head_size,
                "window": self.spec.window, "context_length": self.spec.context_length,
                "decode_nodes": len(self.decode.nodes), "notes": list(self.notes)}


def derive(g: Graph, max_length: int | None = None, *, ring: bool = False,
           static: bool = False) -> Derivation:
    """The prefill and decode graphs of decoder ``g`` (see the module docstring).
    max_length: the longest sequence the derivation is checked for (default 2048, at most the
    model's position table). ring: also build the decode graph for a rolling-buffer cache (the
    window applied by the loop, over ring slots). static: also build the static-cache decode
    graph (buffers of max_length slots written in place). Raises KVCacheError with the reasons
    when the rewrite is illegal."""
    info = analyze(g)
    if not info.attentions and not info.refusals:
        raise KVCacheError("the model has no attention (after fusion) over the token stream: "
                           "nothing to cache", where=f"graph {g.name}")
    prober = Prober(g, info)
    limit = position_limit(g, info, prober)
    ml = int(max_length or DEFAULT_MAX_LENGTH)
    notes: list[str] = []
    if limit is not None and ml > limit:
        notes.append(f"max_length {ml} clipped to the model's position table ({limit})")
        ml = limit
    masks: dict[Node, MaskFacts] = {}
    bad: list[Refusal] = []
    measured: dict[tuple[int, int, bool], MaskFacts | str] = {}  # per mask value and flag
    for att in info.attentions:
        m = att.inputs[3] if len(att.inputs) == 4 else None
        key = (id(m.node) if m else -1, m.index if m else -1, bool(att.attrs["causal"]))
        facts = measured.get(key)
        if facts is None:  # measured even when other refusals exist: the error lists them all
            try:
                facts = prober.mask_facts(att, ml)
            except Exception as e:  # noqa: BLE001 - the mask could not be evaluated
                if not info.refusals:
                    raise
                facts = f"the mask could not be measured ({type(e).__name__}: {e})"
            measured[key] = facts
        if isinstance(facts, str):
            bad.append(Refusal(att, facts))
        else:
            masks[att] = facts
    info.refusals.extend(bad)
    require_legal(info)
    layers = _cache_points(info)
    builder = _Builder(g, info, prober, masks, layers)
    decode = builder.build(window_in_graph=True)
    ring_g = _Builder(g, info, prober, masks, layers).build(window_in_graph=False) if ring \
        else None
    static_g = _Builder(g, info, prober, masks, layers).build(True, static_length=ml) if static \
        else None
    prefill = Graph(g.inputs, list(g.outputs) + [v for ly in layers for v in (ly.key, ly.value)],
                    list(g.output_names) + [present_name(i, kv) for i in range(len(layers))
                                            for kv in ("key", "value")],
                    name=f"{g.name}_prefill", meta=g.meta)
    spec = _spec(g, info, layers, masks, ml)
    return Derivation(decode, prefill, spec, layers, masks, notes + builder.notes, ring_g,
                      static_g)


# ---- analysis helpers ---------------------------------------------------------------------------

def position_limit(g: Graph, info: StreamInfo, prober: Prober) -> int | None:
    """The longest sequence the model's position tables cover: for every gather of a constant
    table by positions (indices measured to be arange(S), or read from the position_ids
    input), the table's length; None when there is none. A table gathered by other indices
    (token types) is no limit."""
    lim: int | None = None
    for n in g.nodes:
        if n.op != "gather" or info.kind.get(n.inputs[0].node) != "const":
            continue
        idx = n.inputs[1]
        src = info.kind.get(idx.node)
        if (src == "aux" and info.seq_axes(idx) and _arange_like(prober, idx)) or \
                (info.positions is not None and _reaches(idx.node, info.positions)):
            t = n.inputs[0].type
            if isinstance(t, TensorType) and t.shape is not None:
                d = t.shape[n.attrs["axis"]]
                if isinstance(d, int):
                    lim = d if lim is None else min(lim, d)
    return lim


def _arange_like(prober: Prober, v: Value) -> bool:
    try:
        return is_arange(prober, v)
    except Exception:  # noqa: BLE001 - not evaluable alone: not a position table read
        return False


def _reaches(n: Node, target: Node) -> bool:
    seen, stack = set(), [n]
    while stack:
        m = stack.pop()
        if m is target:
            return True
        if id(m) in seen:
            continue
        seen.add(id(m))
        stack.extend(v.node for v in m.inputs)
    return False


def _cache_point(info: StreamInfo, v: Value) -> tuple[Value, list[Node]]:
    """Where to cache an attention key / value input ``v``: along the chain of layout ops that
    produces it, the value in [batch, heads, seq, head] layout with the fewest heads (the
    kv heads, before a grouped-query repeat). Returns it and the chain nodes above it."""
    path: list[Value] = [v]
    c = v
    while c.node.op in LAYOUT_OPS and len(c.node.inputs) == 1 and \
            info.of(c.node.inputs[0]) == "rows":
        c = c.node.inputs[0]
        path.append(c)
    best: int | None = None
    for k, x in enumerate(path):
        t = x.type
        if isinstance(t, TensorType) and t.shape is not None and len(t.shape) == 4 and \
                info.seq_axes(x) == [2] and isinstance(t.shape[1], int) and \
                isinstance(t.shape[3], int):
            if best is None or t.shape[1] <= path[best].type.shape[1]:  # type: ignore[union-attr]
                best = k
    if best is None:
        raise KVCacheError(f"no [batch, heads, seq, head] layout on the way to the attention's "
                           f"keys/values ({v.type}); cannot place a BNSH cache",
                           where=v.node.where)
    return path[best], [x.node for x in reversed(path[:best])]


def _cache_points(info: StreamInfo) -> list[CachedLayer]:
    layers: list[CachedLayer] = []
    by_key: dict[tuple[int, int, int, int], CachedLayer] = {}
    for att in info.attentions:
        k, _ = _cache_point(info, att.inputs[1])
        v, _ = _cache_point(info, att.inputs[2])
        key = (id(k.node), k.index, id(v.node), v.index)
        ly = by_key.get(key)
        if ly is None:
            ly = by_key[key] = CachedLayer(k, v)
            layers.append(ly)
        ly.attentions.append(att)
    return layers


def _spec(g: Graph, info: StreamInfo, layers: list[CachedLayer], masks: dict[Node, MaskFacts],
          ml: int) -> CacheSpec:
    kt = layers[0].key.type
    assert isinstance(kt, TensorType) and kt.shape is not None
    for ly in layers:
        for v in (ly.key, ly.value):
            t = v.type
            assert isinstance(t, TensorType) and t.shape is not None
            if t.shape[1] != kt.shape[1] or t.shape[3] != kt.shape[3] or t.dtype != kt.dtype:
                raise KVCacheError(f"cache entries differ in shape ({t} vs {kt}); one cache "
                                   f"layout for all layers is needed", where=v.node.where)
    q = info.attentions[0].inputs[0].type
    assert isinstance(q, TensorType) and q.shape is not None
    out = g.outputs[0].type
    assert isinstance(out, TensorType) and out.shape is not None
    windows = {f.window for f in masks.values()}
    if len(windows) > 1:
        raise KVCacheError(f"layers use different sliding windows {sorted(map(str, windows))}; "
                           f"one window per model is supported", where=f"graph {g.name}")
    hidden = _hidden(g, info)
    dtype = {DType.f32: "float32", DType.f16: "float16"}.get(kt.dtype)
    if dtype is None:
        raise KVCacheError(f"cache dtype {kt.dtype.value} is not supported (float32, float16)",
                           where=layers[0].key.node.where)
    return CacheSpec(num_layers=len(layers), num_kv_heads=int(kt.shape[1]),
                     num_heads=int(q.shape[1]), head_size=int(kt.shape[3]),
                     hidden_size=hidden, vocab_size=int(out.shape[-1]),
                     window=windows.pop(), context_length=ml, dtype=dtype)


def _hidden(g: Graph, info: StreamInfo) -> int:
    for n in g.nodes:
        if n.op == "gather" and n.inputs[1].node is info.tokens:
            t = n.inputs[0].type
            if isinstance(t, TensorType) and t.shape is not None and len(t.shape) == 2 and \
                    isinstance(t.shape[1], int):
                return t.shape[1]
    q = info.attentions[0].inputs[0].type
    assert isinstance(q, TensorType) and q.shape is not None
    return int(q.shape[1]) * int(q.shape[3])


# ---- the decode graph ---------------------------------------------------------------------------

class _Builder:
    """Rebuilds the token stream of ``g`` for new tokens over a cache."""

    def __init__(self, g: Graph, info: StreamInfo, prober: Prober,
                 masks: dict[Node, MaskFacts], layers: list[CachedLayer]) -> None:
        self.g, self.info, self.prober, self.masks, self.layers = g, info, prober, masks, layers
        self.notes: list[str] = []
        b = info.batch
        self.rows_map: dict[str, Dim] = {info.seq: NEW}
        self.total_map: dict[str, Dim] = {info.seq: TOTAL}
        if isinstance(b, str) and "*" not in b:
            self.rows_map[b] = BATCH
            self.total_map[b] = BATCH
        self.batch_dim: Dim = BATCH if isinstance(b, str) else b
        self.env: dict[tuple[int, int], Value] = {}
        self.aux: dict[tuple[int, int], Value] = {}
        self.roots: dict[tuple[int, int], bool] = {}
        self._mask_cache: dict[tuple[bool, int | None], Value] = {}

    # inputs ------------------------------------------------------------------------------------
    def _inputs(self) -> None:
        tok = self.info.tokens.type
        assert isinstance(tok, TensorType)
        i64 = DType.i64
        self.ids = input_node(TOKENS, TensorType((self.batch_dim, NEW), tok.dtype))
        self.amask = input_node(MASK, TensorType((self.batch_dim, TOTAL), i64))
        self.pos = input_node(POSITIONS, TensorType((self.batch_dim, NEW), i64))
        self.env[(id(self.info.tokens), 0)] = self.ids.out
        if self.info.positions is not None:
            pt = self.info.positions.type
            assert isinstance(pt, TensorType)
            self.env[(id(self.info.positions), 0)] = _cast(self.pos.out, pt.dtype)
        self.past: list[tuple[Node, Node]] = []
        for i, ly in enumerate(self.layers):
            pair = []
            for kv, v in (("key", ly.key), ("value", ly.value)):
                t = v.type
                assert isinstance(t, TensorType) and t.shape is not None
                slots = PAST if self.static_length is None else self.static_length
                pair.append(input_node(past_name(i, kv), TensorType(
                    (self.batch_dim, t.shape[1], slots, t.shape[3]), t.dtype)))
            self.past.append((pair[0], pair[1]))

    def build(self, window_in_graph: bool, static_length: int | None = None) -> Graph:
        """The decode graph; static_length: over buffers of that many slots, the new rows
        written at the past length (ONNX TensorScatter, in place when the caller binds the
        present to the past's buffer), attention over every slot with the later ones masked."""
        self.window_in_graph = window_in_graph
        self.static_length = static_length
        if static_length is not None:  # the keys span every buffer slot
            self.total_map = {**self.total_map, self.info.seq: static_length}
        self._inputs()
        self.presents: list[Value] = []
        self.cached: dict[tuple[int, int], Value] = {}
        for i, ly in enumerate(self.layers):
            for kv, v, past in (("key", ly.key, self.past[i][0]), ("value", ly.value,
                                                                    self.past[i][1])):
                new = self.rows(v)
                full = glue.append(past.out, new, 2, TOTAL) if static_length is None else \
                    glue.scatter(past.out, new, self._write_index(), 2)
                self.cached[(id(v.node), v.index)] = full
                self.presents.append(full)
        outs = [self.rows(v) for v in self.g.outputs]
        names = ["logits" if len(self.g.outputs) == 1 else n for n in self.g.output_names]
        names += [present_name(i, kv) for i in range(len(self.layers)) for kv in ("key", "value")]
        inputs = [self.ids, self.amask, self.pos] + [n for p in self.past for n in p]
        meta = self.g.meta
        if static_length is not None:
            meta = glue.with_opset(meta, glue.SCATTER_OPSET)
        return Graph(inputs, outs + self.presents, names, name=f"{self.g.name}_with_past",
                     meta=meta)

    def _write_index(self) -> Value:
        """i64 [batch]: the slot of the first new token (the past length), one per row."""
        past = op("sub", glue.length(self.amask.out, 1), glue.length(self.ids.out, 1))
        return op("expand", past, shape=(self.batch_dim,))

    # token stream --------------------------------------------------------------------------------
    def rows(self, v: Value) -> Value:
        """The decode value of token-stream value ``v`` (new rows only)."""
        key = (id(v.node), v.index)
        hit = self.env.get(key)
        if hit is not None:
            return hit
        # iterative post-order over the rows ancestors (deep graphs)
        stack: list[tuple[Node, bool]] = [(v.node, False)]
        while stack:
            n, ready = stack.pop()
            if (id(n), 0) in self.env:
                continue
            if not ready:
                stack.append((n, True))
                for x in n.inputs:
                    if self.info.of(x) == "rows" and (id(x.node), x.index) not in self.env:
                        stack.append((x.node, False))
                continue
            self._rebuild(n)
        return self.env[key]

    def _rebuild(self, n: Node) -> None:
        if n.op == "input":
            raise KVCacheError(f"token-stream input {n.attrs['name']!r} has no decode form",
                               where=n.where)
        if n.op == "attention":
            out = self._attention(n)
            self.env[(id(n), 0)] = out
            return
        ins = [self.env[(id(x.node), x.index)] if self.info.of(x) == "rows" else self.aux_value(x)
               for x in n.inputs]
        outs = _build_like(n, ins, self.rows_map)
        for i, o in enumerate(outs):
            self.env[(id(n), i)] = o

    def _attention(self, n: Node) -> Value:
        q = self.rows(n.inputs[0])
        kv = []
        for x in n.inputs[1:3]:
            cp, chain = _cache_point(self.info, x)
            if (id(cp.node), cp.index) not in self.cached:
                raise KVCacheError("attention reads keys/values that have no cache entry",
                                   where=n.where)
            full = self.cached[(id(cp.node), cp.index)]
            for c in chain:  # layout ops between the cache and the attention, over all keys
                (full,) = _build_like(c, [full], self.total_map)
            kv.append(full)
        mask = self.decode_mask(self.masks[n])
        return op("attention", q, kv[0], kv[1], mask, scale=n.attrs["scale"], causal=False,
                  origin=n.origin)

    # masks and positions -------------------------------------------------------------------------
    def decode_mask(self, f: MaskFacts) -> Value:
        """keep[b, 0, i, j] over new rows i and past + new slots j (module docstring)."""
        window = f.window if self.window_in_graph else None
        key = (f.padding, window)
        hit = self._mask_cache.get(key)
        if hit is not None:
            return hit
        total = glue.length(self.amask.out, 1)
        new = glue.length(self.ids.out, 1)
        past = op("sub", total, new)
        if self.static_length is not None:  # every buffer slot; the causal test drops j >= T
            kpos = constant(np.arange(self.static_length, dtype=np.int64))
        else:
            kpos = glue.arange(constant(np.array(0, np.int64)), total, TOTAL)
        qpos = glue.arange(past, total, NEW)
        kcol = op("unsqueeze", kpos, axes=(0,))
        qrow = op("unsqueeze", qpos, axes=(1,))
        keep = op("less_equal", kcol, qrow)
        if window is not None:
            lo = op("sub", qrow, constant(np.array(window, np.int64)))
            keep = op("and", keep, op("greater", kcol, lo))
        keep = op("unsqueeze", keep, axes=(0, 1))
        if f.padding:
            real = op("cast", self.amask.out, to=DType.bool)
            if self.static_length is not None:  # [B, T] -> [B, slots], later slots False
                real = glue.pad_to(real, 1, self.static_length)
            pad = op("unsqueeze", real, axes=(1, 2))
            keep = op("and", keep, pad)
        self._mask_cache[key] = keep
        return keep

    def aux_value(self, v: Value) -> Value:
        """The decode value of aux / const value ``v`` read by the token stream."""
        key = (id(v.node), v.index)
        hit = self.aux.get(key)
        if hit is not None:
            return hit
        out = self._aux(v)
        self.aux[key] = out
        return out

    def _aux(self, v: Value) -> Value:
        if self.info.of(v) == "const":
            return v
        t = v.type
        if not isinstance(t, TensorType) or t.shape is None:
            raise KVCacheError(f"the token stream reads {t}, computed from the sequence length "
                               f"or mask, which the decode graph cannot rebuild",
                               where=v.node.where)
        if len(t.shape) == 2 and self._is_position_root(v):
            self.notes.append(f"{v.node.where}: arange(S) positions -> position_ids")
            return _cast(self.pos.out, t.dtype)
        if not self.info.seq_axes(v):
            x = size_independent(self.prober, v)
            if x is None:
                raise KVCacheError(f"the token stream reads {t}, which changes with the sequence "
                                   f"length or the mask (not a position, not a mask)",
                                   where=v.node.where)
            return constant(x)
        n = v.node
        if n.op == "unsqueeze" and 0 in n.attrs["axes"] and self._is_position_root(n.inputs[0]):
            # arange(S)[None, ...]: the leading axis becomes position_ids' batch axis
            self.notes.append(f"{n.where}: arange(S) positions -> position_ids")
            rest = tuple(a for a in n.attrs["axes"] if a != 0)
            pos = _cast(self.pos.out, t.dtype)
            return op("unsqueeze", pos, axes=rest) if rest else pos
        if n.op == "gather" and n.attrs["axis"] == 0 and len(n.inputs[1].type.shape or ()) == 1 \
                and self._is_position_root(n.inputs[1]):
            # table[arange(S)] (nanoGPT): one row per position for every sequence; the rows of
            # the new tokens' positions, per batch row (broadcast like the original's)
            self.notes.append(f"{n.where}: table[arange(S)] -> table[position_ids]")
            return op("gather", self.aux_value(n.inputs[0]), _cast(self.pos.out, DType.i64),
                      axis=0)
        if n.op in ("opaque", "input"):
            raise KVCacheError(f"the token stream reads {t} from {n.where}, a per-position value "
                               f"graphopt cannot compute for new tokens (no arange(S) position "
                               f"found before it)", where=n.where)
        ins = [self.aux_value(x) for x in n.inputs]
        return _build_like(n, ins, self.rows_map, batch=self.batch_dim)[v.index]

    def _is_position_root(self, v: Value) -> bool:
        t = v.type
        assert isinstance(t, TensorType) and t.shape is not None
        if not t.dtype.is_int or t.shape[-1:] != (self.info.seq,) or len(t.shape) > 2 or \
                (len(t.shape) == 2 and t.shape[0] not in (1, self.info.batch)):
            return False
        key = (id(v.node), v.index)
        if key not in self.roots:
            self.roots[key] = is_arange(self.prober, v)
        return self.roots[key]


def _cast(v: Value, dt: DType) -> Value:
    t = v.type
    assert isinstance(t, TensorType)
    return v if t.dtype == dt else op("cast", v, to=dt)


def _sub_dim(d: Any, mapping: dict[str, Dim]) -> Any:
    if not isinstance(d, str):
        return d
    coef, syms = dim_factors(d)
    return dim_product([coef] + [mapping.get(s, s) for s in syms])


def _sub_attr(v: Any, mapping: dict[str, Dim]) -> Any:
    if isinstance(v, tuple):
        return tuple(_sub_dim(d, mapping) for d in v)
    return _sub_dim(v, mapping)


def _build_like(n: Node, ins: list[Value], mapping: dict[str, Dim],
                batch: Dim | None = None) -> tuple[Value, ...]:
    """``n`` rebuilt over ``ins`` with its size attributes' symbols renamed by ``mapping``. A
    size attribute whose leading 1 now meets a batch dim (a position table that became per-row
    with position_ids) takes the batch dim when ``batch`` is given."""
    opdef = get_op(n.op)
    attrs = dict(n.attrs)
    for a in opdef.dim_attrs:
        if a in attrs and attrs[a] is not None:
            attrs[a] = _sub_attr(attrs[a], mapping)
    try:
        return Node.build(n.op, ins, attrs, n.origin).outputs
    except Exception as e:
        if batch is not None:
            fixed = _batch_attrs(opdef.dim_attrs, attrs, ins, batch)
            if fixed is not None:
                try:
                    return Node.build(n.op, ins, fixed, n.origin).outputs
                except Exception:
                    pass
        raise KVCacheError(f"cannot rebuild {n.op} for new tokens: {e}", where=n.where) from e


def _batch_attrs(names: tuple[str, ...], attrs: dict[str, Any], ins: list[Value],
                 batch: Dim) -> dict[str, Any] | None:
    t = ins[0].type if ins else None
    if not isinstance(t, TensorType) or t.shape is None or not t.shape or t.shape[0] != batch:
        return None
    out = dict(attrs)
    changed = False
    for a in names:
        v = out.get(a)
        if isinstance(v, tuple) and v and v[0] == 1:
            out[a] = (batch,) + v[1:]
            changed = True
    return out if changed else None

