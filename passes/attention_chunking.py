"""Split a long ``attention`` into query chunks where that is faster on the target.

A fused ``attention`` lowered to ONNX Runtime's CPU ``Attention`` kernel (or to the MatMul/Softmax
composition) materializes the [B, H, S, T] score matrix: its memory grows with S*T, ~4x when the
sequence doubles. Splitting the S queries into chunks of C rows gives independent attentions
over the same keys (softmax runs along the keys, so query rows never interact):

    attention(q, k, v, mask) = concat_i attention(q[:, :, r_i:r_i+C], k, v, mask[.., r_i:r_i+C, :])

and each chunk's scores are [B, H, C, T]: the block's peak memory then grows ~linearly with the
sequence. A causal block (S == T) reads only the keys up to its last query: chunk i attends
k[:, :, :r_i+C] under the mask ``j <= r_i + row`` (a bool constant [C, r_i+C] shared by every
layer; the first chunk keeps ``causal``), which also skips the masked upper triangle's work.
The result is exact (each chunk is the same attention over the same keys); the numeric check
re-verifies it. Causal blocks that also carry a mask combine it with the chunk's causal mask
(bool: ``and``; additive: ``where(keep, mask, -inf)``, so future keys stay excluded exactly as
``causal`` excludes them).

Which blocks, and the chunk size (a decision of the cost model, ``passes/attention_cost.py``):

* structure first: static B, H, S and T (the chunk count must be static), and for a causal block
  as many queries as keys;
* the memory bound is a fact of the target's device profile: its last-level cache
  (``Device.cache_bytes``; the detected L3 on ``cpu``). A block whose whole score matrix (B*H*S*T
  elements of q's dtype) fits it is no candidate (no profiling); otherwise C is the largest
  power of two >= ``MIN_CHUNK`` rows whose chunk scores fit it (and < S);
* then the two forms, the whole block and its chunks, are priced for the target (pass option
  ``target``, default ``cpu``): on this host both run in ONNX Runtime (timed interleaved, cached
  per block shape), elsewhere the analytic model prices them. The chunks are taken when they are
  not slower (they also bound the memory). On GPU targets the analytic model finds the chunks
  slower (the flash kernel never materializes the scores), and ``passes/fusions.py`` runs the
  pass for ``cpu`` only.

Explicit requests skip the cost model: option ``budget_bytes`` (a memory bound the caller sets:
chunks as above under that bound, for every block above it) or ``chunk_rows`` (chunks of exactly
that many rows, for every static block longer than that: what the rule file
``passes/rules/attention_chunking.rules`` states at small sizes).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from graphopt.cost.devices import get_device
from graphopt.cost.measured import HOST
from graphopt.errors import GraphOptError
from graphopt.ir.graph import Graph
from graphopt.ir.node import ConstData, Node, Value, constant
from graphopt.ir.types import DType
from graphopt.rewrite.context import MatchContext, tensor_type
from graphopt.rewrite.match import Match, fail
from graphopt.rewrite.passes import PassResult, RewritePass, Stats
from graphopt.rewrite.rule import Rule
from graphopt.rewrite.trace import Candidate

from .attention_cost import describe_time, form, form_times

RULE = "attention_chunking"
MIN_CHUNK = 64

Tr = Callable[[Value], Value]


def _static(n: Node) -> tuple[int, int, int, int]:
    """B, H, S, T of attention node ``n``; MatchFail when one is symbolic."""
    q, k = tensor_type(n.inputs[0]), tensor_type(n.inputs[1])
    B, H, S, _ = q.shape  # type: ignore[misc]
    T = k.shape[2]  # type: ignore[index]
    for d, what in ((B, "batch"), (H, "heads"), (S, "query length"), (T, "key length")):
        if not isinstance(d, int):
            raise fail(f"symbolic {what} {d} (chunks need static lengths)", n)
    return B, H, S, T  # type: ignore[return-value]


def score_bytes(n: Node) -> int:
    """Bytes of the [B, H, S, T] score matrix of attention node ``n`` (static)."""
    B, H, S, T = _static(n)
    return B * H * S * T * tensor_type(n.inputs[0]).dtype.itemsize


def chunk_rows(n: Node, budget_bytes: int, min_chunk: int = MIN_CHUNK) -> int | None:
    """The query-chunk size for attention node ``n`` under a bound of ``budget_bytes`` for one
    chunk's scores; None when its scores fit the bound (no candidate); raises MatchFail with the
    reason when a block that needs chunks cannot be split."""
    B, H, S, T = _static(n)
    row = B * H * T * tensor_type(n.inputs[0]).dtype.itemsize  # bytes of one query row's scores
    if row * S <= budget_bytes:
        return None
    if n.attrs["causal"] and S != T:
        raise fail(f"causal with {S} queries over {T} keys", n)
    c = min_chunk
    while c * 2 * row <= budget_bytes and c * 2 < S:
        c *= 2
    if c >= S:
        raise fail(f"one chunk of {min_chunk} rows covers all {S} queries", n)
    return c


def _slice(x: Value, bounds: dict[int, tuple[int, int]]) -> Value:
    """``x`` sliced to [start, end) on each axis of ``bounds`` (axes kept whole are left out;
    one ``slice`` node)."""
    shape = tensor_type(x).shape
    assert shape is not None
    cut = {a: se for a, se in sorted(bounds.items()) if se != (0, shape[a])}
    if not cut:
        return x
    return Node.build("slice", (x,), {"starts": tuple(s for s, _ in cut.values()),
                                      "ends": tuple(e for _, e in cut.values()),
                                      "axes": tuple(cut), "steps": (1,) * len(cut)}).out


def _mask_part(m: Value, r: int, c: int, tk: int) -> Value:
    """Rows r:r+c and keys :tk of a mask broadcastable to [B, H, S, T]."""
    ms = tensor_type(m).shape
    assert ms is not None
    rank = len(ms)
    bounds = {}
    if rank >= 2 and ms[-2] != 1:
        bounds[rank - 2] = (r, r + c)
    if rank >= 1 and ms[-1] != 1:
        bounds[rank - 1] = (0, tk)
    return _slice(m, bounds)


# one constant per chunk position (rows r:r+c over keys :tk), shared by every layer of a run
_CAUSAL_KEEP: dict[tuple[int, int, int], Value] = {}


def _causal_keep(r: int, c: int, tk: int) -> Value:
    key = (r, c, tk)
    if key not in _CAUSAL_KEEP:
        keep = np.tri(c, tk, k=r, dtype=bool)  # key j visible to row i iff j <= r + i
        _CAUSAL_KEEP[key] = constant(ConstData(keep))
    return _CAUSAL_KEEP[key]


def chunked(n: Node, c: int, ins: Sequence[Value]) -> Value:
    """Attention node ``n`` over ``ins`` (q, k, v[, mask]) as query chunks of ``c`` rows."""
    q, k, v = ins[:3]
    mask = ins[3] if len(ins) == 4 else None
    S, T = tensor_type(q).shape[2], tensor_type(k).shape[2]  # type: ignore[index]
    assert isinstance(S, int) and isinstance(T, int)
    causal = bool(n.attrs["causal"])
    parts = []
    for r in range(0, S, c):
        cc = min(c, S - r)
        tk = r + cc if causal else T
        args = [_slice(q, {2: (r, r + cc)}), _slice(k, {2: (0, tk)}), _slice(v, {2: (0, tk)})]
        m = _mask_part(mask, r, cc, tk) if mask is not None else None
        if causal and r > 0:
            keep = _causal_keep(r, cc, tk)
            if m is None:
                m = keep
            elif tensor_type(m).dtype == DType.bool:
                m = Node.build("and", (m, keep), {}).out
            else:
                ninf = constant(ConstData(np.array(-np.inf, tensor_type(m).dtype.to_numpy())))
                m = Node.build("where", (keep, m, ninf), {}).out
        args += [m] if m is not None else []
        parts.append(Node.build("attention", tuple(args),
                                {"scale": n.attrs["scale"], "causal": causal and r == 0},
                                n.origin).out)
    return Node.build("concat", tuple(parts), {"axis": 2}, n.origin).out


def choose(n: Node, ctx: MatchContext) -> tuple[int, str] | None:
    """(chunk rows, why) for attention node ``n``; None when it is no candidate; raises
    MatchFail when the chunks are not taken."""
    rows = ctx.option("chunk_rows")
    if rows is not None:
        _, _, S, T = _static(n)
        if S <= rows:
            return None
        if n.attrs["causal"] and S != T:
            raise fail(f"causal with {S} queries over {T} keys", n)
        return int(rows), f"chunks of {rows} rows requested"
    budget = ctx.option("budget_bytes")
    if budget is not None:
        c = chunk_rows(n, int(budget))
        return None if c is None else (c, f"scores over the {budget} byte budget")
    target = str(ctx.option("target", HOST))
    bound = int(get_device(target).cache_bytes)
    c = chunk_rows(n, bound)
    if c is None:
        return None
    ins = [x.type for x in n.inputs]
    whole = form(ins, lambda xs: Node.build("attention", xs, n.attrs).out)
    parts = form(ins, lambda xs: chunked(n, c, xs))
    try:
        tw, tc = form_times([whole, parts], target, ctx.option("cost"))
    except GraphOptError as e:
        raise fail(f"no cost for the forms: {e.one_line()}", n) from e
    if tw is None or tc is None:
        raise fail(f"the chunked form could not be priced on {target}", n)
    scores = f"scores {score_bytes(n) / 2**20:.3g} MiB over the {bound / 2**20:.3g} MiB cache"
    if tc > tw:
        raise fail(f"{scores}, but query chunks are slower on {target}: {describe_time(tc)} "
                   f"vs {describe_time(tw)} for one node (cost model)", n)
    return c, f"{scores}; {describe_time(tc)} vs {describe_time(tw)} for one node"


class ChunkRule(Rule):
    """A long ``attention`` -> query chunks, one ``attention`` each, concatenated."""

    name = RULE
    kind = "lowering"
    place = "attention_chunks"
    place_title = "long attention blocks split into query chunks"
    anchors = frozenset({"attention"})
    pass_name = "attention_chunking"

    def match(self, n: Node, ctx: MatchContext) -> Match | None:
        got = choose(n, ctx)
        if got is None:
            return None  # small blocks need no chunks: not a candidate
        c, why = got
        S = tensor_type(n.inputs[0]).shape[2]  # type: ignore[index]
        return Match(roots=[n.out], data=(n, c), detail=f"{-(-S // c)} chunks of {c} queries",
                     spelling=why)

    def build(self, m: Match) -> Value:
        n, c = m.data
        return chunked(n, c, [m.tr(x) for x in n.inputs])


class AttentionChunking(RewritePass):
    """Split long attention blocks into query chunks. Stats: ``attention_chunked``,
    ``attention_not_chunked``. ``budget_bytes``: an explicit bound on one chunk's scores (no
    cost model; the same as option ``budget_bytes``)."""

    name = "attention_chunking"
    rules = (ChunkRule(),)

    def __init__(self, budget_bytes: int | None = None,
                 options: dict[str, Any] | None = None) -> None:
        opts = dict(options or {})
        if budget_bytes is not None:
            opts["budget_bytes"] = budget_bytes
        for k in ("budget_bytes", "chunk_rows"):
            if opts.get(k) is not None and int(opts[k]) <= 0:
                raise ValueError(f"{k} must be positive, got {opts[k]}")
        super().__init__(options=opts)

    def run(self, g: Graph) -> PassResult:
        _CAUSAL_KEEP.clear()
        return super().run(g)

    def summarize(self, before: Graph, after: Graph, candidates: Sequence[Candidate]
                  ) -> Stats:
        mine = [c for c in candidates if c.rule == RULE]
        return {"attention_chunked": sum(1 for c in mine if c.matched),
                "attention_not_chunked": sum(1 for c in mine if not c.matched)}
