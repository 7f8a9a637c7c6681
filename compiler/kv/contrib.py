"""The decode graph's attention as ONNX Runtime's ``com.microsoft.GroupQueryAttention``
(``optimize(kv_cache=True, allow_contrib_ops=True)``, ``--kv-cache --allow-contrib-ops``).

In the decode graph (``derive``) each layer appends its new keys / values to the cache with an
ONNX ``Concat(past, new)`` along axis 2 and an ``attention`` reads the result (maybe through
view ops) under the canonical mask ``keep[b, i, j] = j <= P + i (and j > P + i - W) (and
attention_mask[b, j])``. ``lower_decode`` replaces such an attention and its two appends by ONE
GroupQueryAttention node:

* inputs: the new q / k / v packed [B, S, H*D] / [B, S, Hkv*D], ``past_key`` / ``past_value``
  (the Concat's first inputs, BNSH), ``seqlens_k`` = T - 1 for every row and
  ``total_sequence_length`` = T, both int32 and read from ``attention_mask``'s length T like
  ONNX Runtime's model builder does, ``query_seqlens`` = S for every row, and, when the mask
  reads the padding, ``attention_bias`` = 0 where the mask keeps a key, a large negative
  finite fill (``ort_attention.MASK_FILL``, or float16's lowest) where not;
* attributes: ``num_heads``, ``kv_num_heads``, ``scale``, ``local_window_size`` = the model's
  sliding window W (the kernel keeps keys j with P + i - W < j <= P + i: measured);
* outputs: the attention output (reshaped back to [B, H, S, D]) and ``present_key`` /
  ``present_value``, which become the graph's ``present.{i}.*`` outputs: with ``seqlens_k`` =
  T - 1 the kernel writes the new rows at slots P..T-1 of a cache of T slots, i.e. exactly
  concat(past, new).

Why not the model builder's ``seqlens_k = ReduceSum(attention_mask) - 1``: that counts real
tokens and makes the kernel write row b's new keys at slot ``seqlens_k[b] + 1 - S`` of a
compacted, right-padded cache; the contract's cache keeps padding slots in place
(concat(past, new), left-padded by ``generate``, masked by ``attention_mask``), so with any
padding the keys would land in the wrong slots and padded keys would be attended. With
``seqlens_k`` = T - 1 every row's slots line up with the concat and the padding is masked by the
bias. ``query_seqlens`` lifts the kernel's "batch_size must be 1 when sequence_length > 1 and
past context is given" (a chunk of several new tokens per row after a past, as the derivation
check feeds) without changing the result; an ONNX Runtime whose GroupQueryAttention lacks that
input (or ``attention_bias``) keeps every attention (``gqa_inputs`` reads the installed schema,
which also gives the input positions).

Exactness, checked per attention before it is lowered (a block that fails stays ``attention``,
with the reason in the returned notes):

* keys / values come from ``Concat(past, new)`` along axis 2 through view ops that only repeat
  kv heads in GroupQueryAttention's order (query head h reads kv head h // (H / Hkv): run on a
  probe tensor);
* equal q / k / v head sizes, a multiple of 8 (ONNX Runtime refuses others), f32 or f16, static
  head counts, H a multiple of Hkv, the new keys as many as the queries;
* the mask, run at several past / new lengths and padding patterns (the reference interpreter on
  the sub-graph computing it), keeps only keys within the kernel's causal window: equal to it
  (no bias needed) or a subset of it (the bias carries the rest). A query row whose every key is
  masked (a padding position before any real token) gives 0 in ``attention`` and the mean of the
  values in the kernel (finite fill): the lowering zeroes those rows, so even the logits of
  padding positions are unchanged.

The rotary embedding stays where the derivation put it (before the cache, in the graph); the
kernel's ``do_rotary`` and ``softcap`` are not used (``attention`` has no softcap).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from graphopt.passes.ort_attention import MASK_FILL, _merge_heads, _opaque

from ..ir.graph import Graph
from ..ir.node import Node, Value, constant, input_node, op
from ..ir.types import DType, TensorType
from . import glue
from .derive import LAYOUT_OPS, _reaches
from .seqaxis import MASK, TOKENS
from .spec import CacheSpec

__all__ = ["lower_decode", "gqa_inputs", "GQA_DTYPES", "NEEDED_INPUTS", "PROBE_LENGTHS"]

GQA_DTYPES = (DType.f32, DType.f16)
PROBE_LENGTHS = ((0, 5), (6, 1), (6, 3), (9, 4))  # (past, new) the mask is measured at
PROBE_BATCH = 3
NEEDED_INPUTS = ("query", "key", "value", "past_key", "past_value", "seqlens_k",
                 "total_sequence_length", "attention_bias", "query_seqlens")


class _Kept(Exception):
    """Why an attention stays as it is."""


@dataclass(frozen=True)
class _Append:
    """A cache append read by an attention: ``full`` = concat(past, new) along axis 2."""

    full: Value
    past: Value
    new: Value


@dataclass(frozen=True)
class _Plan:
    """How one attention becomes a GroupQueryAttention node."""

    key: _Append
    value: _Append
    heads: int
    kv_heads: int
    padded: bool  # the mask reads the padding: bias + zeroed dead rows


@functools.cache
def gqa_inputs() -> tuple[str, ...]:
    """The input names of this ONNX Runtime's com.microsoft GroupQueryAttention, in order
    (empty when onnxruntime is missing or has no such op)."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as C
    except ImportError:
        return ()
    for s in C.get_all_operator_schema():
        if s.name == "GroupQueryAttention" and s.domain == "com.microsoft":
            return tuple(i.name for i in s.inputs)
    return ()


def lower_decode(g: Graph, spec: CacheSpec) -> tuple[Graph, int, list[str]]:
    """``g`` (a decode graph of ``derive``) with every attention that reads a cache append and
    is exactly expressible replaced by one com.microsoft GroupQueryAttention node (module
    docstring), the appends' outputs among the graph outputs replaced by the node's presents.
    Returns the graph, the number of attentions lowered and one note per attention kept (its
    place and why)."""
    plans: dict[Node, _Plan] = {}
    notes: list[str] = []
    masks: dict[tuple[int, int], bool] = {}
    amask = next((n.out for n in g.inputs if n.attrs["name"] == MASK), None)
    if amask is None:
        return g, 0, [f"graph {g.name}: no {MASK} input, attention kept (GroupQueryAttention "
                      f"reads the lengths from it)"]
    lacking = [x for x in NEEDED_INPUTS if x not in gqa_inputs()]
    if lacking:
        return g, 0, [f"graph {g.name}: attention kept: this ONNX Runtime's "
                      f"GroupQueryAttention has no input {', '.join(lacking)}"]
    for n in g.nodes:
        if n.op != "attention":
            continue
        try:
            plans[n] = _plan(g, n, spec, masks)
        except _Kept as e:
            notes.append(f"{n.where}: kept as attention (not GroupQueryAttention): {e}")
    if not plans:
        return g, 0, notes
    return _rebuild(g, plans, spec, amask), len(plans), notes


# ---- deciding ------------------------------------------------------------------------------

def _shape(v: Value) -> tuple:
    t = v.type
    if not isinstance(t, TensorType) or t.shape is None:
        raise _Kept(f"{v.node.op} output of unknown shape")
    return t.shape


def _plan(g: Graph, n: Node, spec: CacheSpec, masks: dict[tuple[int, int], bool]) -> _Plan:
    if len(n.inputs) != 4 or n.attrs["causal"]:
        raise _Kept("not a decode attention (one boolean mask over past + new keys, "
                    "causal=false)")
    q, k, v, mask = n.inputs
    key, value = _append_of(k), _append_of(v)
    B, H, S, D = _shape(q)
    _, Hkv, T, Dk = _shape(key.full)
    Dv = _shape(value.full)[3]
    dt = q.type.dtype  # type: ignore[union-attr]
    if dt not in GQA_DTYPES:
        raise _Kept(f"dtype {dt.value} (GroupQueryAttention takes f32 / f16)")
    if not all(isinstance(x, int) for x in (H, Hkv, D, Dk, Dv)):
        raise _Kept(f"symbolic heads or head size (H {H}, Hkv {Hkv}, D {D})")
    if not D == Dk == Dv:
        raise _Kept(f"GroupQueryAttention needs equal q / k / v head sizes ({D}, {Dk}, {Dv})")
    if D % 8:
        raise _Kept(f"head size {D} (ONNX Runtime's GroupQueryAttention needs a multiple of 8)")
    if H % Hkv:
        raise _Kept(f"{H} query heads are not a multiple of {Hkv} kv heads")
    if _shape(value.full)[1] != Hkv or _shape(key.new)[2] != S or _shape(value.new)[2] != S:
        raise _Kept("keys / values of different heads or new lengths than the queries")
    for x, append in ((k, key), (v, value)):
        _check_repeat(x, append.full, H)
    m = _shape(mask)
    if len(m) != 4 or m[0] not in (1, B) or m[1] not in (1, H) or m[2] not in (1, S) or \
            m[3] != T or mask.type.dtype != DType.bool:  # type: ignore[union-attr]
        raise _Kept(f"mask of type {mask.type}, not bool [B|1, H|1, S|1, T]")
    mk = (id(mask.node), mask.index)
    if mk not in masks:
        masks[mk] = _mask_reads_padding(g, mask, spec.window)
    return _Plan(key, value, int(H), int(Hkv), masks[mk])


def _append_of(x: Value) -> _Append:
    """The cache append that attention input ``x`` reads through view ops."""
    c = x
    while c.node.op in LAYOUT_OPS and len(c.node.inputs) == 1:
        c = c.node.inputs[0]
    n = c.node
    if n.op != "opaque" or n.attrs["op_type"] != "Concat" or \
            n.attrs["domain"] not in ("", "ai.onnx") or len(n.inputs) != 2 or \
            _concat_axis(n) != 2:
        raise _Kept(f"keys / values do not come from a cache append (Concat(past, new) along "
                    f"axis 2) but from {n.where}")
    return _Append(c, n.inputs[0], n.inputs[1])


def _concat_axis(n: Node) -> int | None:
    import onnx

    proto = onnx.NodeProto()
    proto.ParseFromString(n.attrs["proto"])
    return next((int(a.i) for a in proto.attribute if a.name == "axis"), None)


def _check_repeat(x: Value, full: Value, heads: int) -> None:
    """The view ops from the append ``full`` [B, Hkv, T, D] to the attention input ``x``
    [B, Hx, T, D] must leave batch, slots and features alone and give head c of ``x`` kv head
    c // (Hx / Hkv) (identity or a repeat in GroupQueryAttention's order): run on codes."""
    if x is full:
        return
    B, Hkv, T, D = _shape(full)
    Hx = _shape(x)[1]
    if not isinstance(Hx, int) or Hx % Hkv or heads % Hx:
        raise _Kept(f"the view ops after the cache give {Hx} heads from {Hkv}")
    probe = input_node("probe", full.type)
    chain: list[Node] = []
    c = x
    while c is not full:
        chain.append(c.node)
        c = c.node.inputs[0]
    out = probe.out
    for nd in reversed(chain):
        out = nd.with_inputs((out,)).outputs[0]
    b, t = 2, 3
    codes = np.arange(b * Hkv * t * D, dtype=np.float32).reshape(b, Hkv, t, D).astype(
        full.type.dtype.to_numpy())  # type: ignore[union-attr]
    from ..check import run_graph

    try:
        (got,) = run_graph(Graph([probe], [out], ["out"], name="repeat_probe"),
                           {"probe": codes}, "numpy")
    except Exception as e:
        raise _Kept(f"the view ops after the cache could not be checked: {e}") from e
    want = np.repeat(codes, Hx // Hkv, axis=1)
    if got.shape != want.shape or not np.array_equal(got, want):
        raise _Kept("the view ops between the cache and the attention are not a kv-head "
                    "repeat in GroupQueryAttention's order")


def _mask_reads_padding(g: Graph, mask: Value, window: int | None) -> bool:
    """Measure ``mask`` at PROBE_LENGTHS, unpadded and padded: False when it equals the
    kernel's causal window (j <= P + i, and j > P + i - window) everywhere, True when it keeps
    a subset of it (the padding); raises _Kept when it keeps a key outside it."""
    from ..check import run_graph

    ins = [n for n in g.inputs if _reaches(mask.node, n)]
    names = {n.attrs["name"] for n in ins}
    if not names <= {TOKENS, MASK}:
        raise _Kept(f"the mask reads {sorted(names - {TOKENS, MASK})} (only input_ids' length "
                    f"and attention_mask are understood)")
    sub = Graph(ins, [mask], ["keep"], name="mask_probe", meta=g.meta)
    rng = np.random.default_rng(0)
    reads_padding = False
    for past, new in PROBE_LENGTHS:
        total = past + new
        base = _causal_window(past, new, window)
        pads = [np.ones((PROBE_BATCH, total), np.int64), _padding(rng, total)]
        for amask in pads:
            feeds = {TOKENS: np.zeros((PROBE_BATCH, new), _input_dtype(ins, TOKENS)),
                     MASK: amask.astype(_input_dtype(ins, MASK))}
            feeds = {k: x for k, x in feeds.items() if k in names}
            try:
                (keep,) = run_graph(sub, feeds, "numpy")
            except Exception as e:
                raise _Kept(f"the mask could not be measured: {e}") from e
            keep = np.broadcast_to(keep, (PROBE_BATCH, keep.shape[1], new, total))
            if (keep & ~base).any():
                raise _Kept(f"the mask keeps keys outside the causal window (past {past}, "
                            f"new {new}, window {window})")
            reads_padding |= bool((keep != base).any())
    return reads_padding


def _causal_window(past: int, new: int, window: int | None) -> np.ndarray:
    j = np.arange(past + new)[None, :]
    i = past + np.arange(new)[:, None]
    keep = j <= i
    if window is not None:
        keep &= j > i - window
    return keep


def _padding(rng: np.random.Generator, total: int) -> np.ndarray:
    """Row 0 unpadded, row 1 left-padded, row 2 random holes (the last slot kept)."""
    m = np.ones((PROBE_BATCH, total), np.int64)
    m[1, : total // 2] = 0
    m[2] = rng.integers(0, 2, total)
    m[2, -1] = 1
    return m


def _input_dtype(ins: list[Node], name: str) -> type:
    for n in ins:
        if n.attrs["name"] == name:
            return n.out_types[0].dtype.to_numpy()  # type: ignore[union-attr]
    return np.int64


# ---- building ------------------------------------------------------------------------------

def _rebuild(g: Graph, plans: dict[Node, _Plan], spec: CacheSpec, amask: Value) -> Graph:
    """``g`` with each planned attention replaced (downstream nodes rebuilt over the new
    values) and the graph outputs that are a lowered append replaced by its present."""
    env: dict[tuple[int, int], Value] = {}

    def new(v: Value) -> Value:
        return env.get((id(v.node), v.index), v)

    presents: dict[tuple[int, int], Value] = {}
    for n in g.nodes:
        if n.op == "input":
            continue
        plan = plans.get(n)
        if plan is None:
            outs = n.with_inputs(tuple(new(x) for x in n.inputs)).outputs
        else:
            out, pk, pv = _gqa(n, plan, new, spec, amask)
            outs = (out,)
            for a, p in ((plan.key, pk), (plan.value, pv)):
                presents.setdefault((id(a.full.node), a.full.index), p)
        for i, x in enumerate(outs):
            env[(id(n), i)] = x
    outputs = [presents.get((id(v.node), v.index), new(v)) for v in g.outputs]
    return Graph(g.inputs, outputs, g.output_names, name=g.name, meta=g.meta)


def _bias(mask: Value, rows: Any, dt: DType) -> Value:
    """The bool mask [B|1, H|1, S|1, T] as the kernel's attention_bias [B|1, H|1, S, T] of
    dtype ``dt``: 0 where kept, MASK_FILL (or the dtype's lowest finite value) where not."""
    npdt = dt.to_numpy()
    fill = max(MASK_FILL, float(np.finfo(npdt).min))
    bias = op("where", mask, constant(np.zeros((), npdt)), constant(np.asarray(fill, npdt)))
    shape = _shape(mask)
    if shape[2] != rows:
        bias = op("expand", bias, shape=(shape[0], shape[1], rows, shape[3]))
    return bias


def _gqa(n: Node, plan: _Plan, new: Callable[[Value], Value], spec: CacheSpec,
         amask: Value) -> tuple[Value, Value, Value]:
    """The GroupQueryAttention node for attention ``n``: (output [B, H, S, D], present_key,
    present_value)."""
    q, mask = new(n.inputs[0]), new(n.inputs[3])
    qt = q.type
    assert isinstance(qt, TensorType) and qt.shape is not None
    B, H, S, D = qt.shape
    total = glue.length(amask, 1)
    i32 = DType.i32
    seqlens = op("cast", op("expand", op("sub", total, constant(np.array(1, np.int64))),
                            shape=(B,)), to=i32)
    query_lens = op("cast", op("expand", glue.length(q, 2), shape=(B,)), to=i32)
    bias = _bias(mask, S, qt.dtype) if plan.padded else None
    attrs: dict[str, object] = {"num_heads": plan.heads, "kv_num_heads": plan.kv_heads}
    if n.attrs["scale"] is not None:
        attrs["scale"] = float(n.attrs["scale"])
    if spec.window is not None:
        attrs["local_window_size"] = int(spec.window)
    named: dict[str, Value | None] = {
        "query": _merge_heads(q, n), "key": _merge_heads(new(plan.key.new), n),
        "value": _merge_heads(new(plan.value.new), n), "past_key": new(plan.key.past),
        "past_value": new(plan.value.past), "seqlens_k": seqlens,
        "total_sequence_length": op("cast", total, to=i32), "attention_bias": bias,
        "query_seqlens": query_lens}
    ins = [named.get(name) for name in gqa_inputs()]
    kt, vt = plan.key.full.type, plan.value.full.type
    assert isinstance(kt, TensorType) and isinstance(vt, TensorType)
    out3_t = TensorType((B, S, H * D), qt.dtype)  # type: ignore[operator]
    node = _opaque("GroupQueryAttention", ins, attrs, [out3_t, kt, vt], n).node
    out3, pk, pv = node.outputs
    y = op("transpose", op("reshape", out3, shape=(B, S, H, D)), perm=(0, 2, 1, 3))
    if plan.padded:  # rows with no kept key: 0 as in ``attention`` (the kernel averages)
        alive = op("reduce_max", op("cast", mask, to=qt.dtype), axes=(3,), keepdims=True)
        y = op("where", op("cast", alive, to=DType.bool), y,
               constant(np.zeros((), qt.dtype.to_numpy())))
    return y, pk, pv

