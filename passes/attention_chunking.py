"""Split a long ``attention`` into query chunks so that no chunk's score matrix exceeds a budget.

A fused ``attention`` lowered to ONNX Runtime's CPU ``Attention`` kernel (or to the MatMul/Softmax
composition) materializes the [B, H, S, T] score matrix: its memory grows with S*T, ~4x when the
sequence doubles. Splitting the S queries into chunks of C rows gives independent attentions
over the same keys (softmax runs along the keys, so query rows never interact):

    attention(q, k, v, mask) = concat_i attention(q[:, :, r_i:r_i+C], k, v, mask[.., r_i:r_i+C, :])

and each chunk's scores are [B, H, C, T]: the block's peak memory then grows ~linearly with the
sequence. A causal block (S == T) reads only the keys up to its last query: chunk i attends
k[:, :, :r_i+C] under the mask ``j <= r_i + row`` (a bool constant [C, r_i+C] shared by every
layer; the first chunk keeps ``causal``), which also skips the masked upper triangle's work.

Which blocks: static B, H, S, T whose score matrix (B*H*S*T elements of q's dtype) is above
``budget_bytes``; C is the largest power of two >= ``MIN_CHUNK`` that keeps one chunk's scores
within the budget. The result is exact (each chunk is the same attention over the same keys);
the numeric check re-verifies it. Causal blocks that also carry a mask combine it with the chunk's
causal mask (bool: ``and``; additive: ``where(keep, mask, -inf)``, so future keys stay excluded
exactly as ``causal`` excludes them).

Run for target ``cpu`` by ``passes/fusions.py`` (GPU targets get the flash kernel from codegen,
which never materializes the scores).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.node import ConstData, Node, Value, constant
from graphopt.ir.types import DType, TensorType
from graphopt.rewrite.passes import Pass, PassResult

from .fusion_report import Candidate, NoMatch, add_notes, rebuild

RULE = "attention_chunking"
DEFAULT_BUDGET_BYTES = 16 * 2**20  # one chunk's scores: 16 MiB
MIN_CHUNK = 64

_Tr = Callable[[Value], Value]


def _t(v: Value) -> TensorType:
    t = v.type
    assert isinstance(t, TensorType) and t.shape is not None
    return t


def chunk_rows(n: Node, budget_bytes: int) -> int | None:
    """The query-chunk size for attention node ``n``; None when its scores fit the budget (no
    candidate); raises NoMatch with the reason when a block that needs chunks cannot be split."""
    q, k = _t(n.inputs[0]), _t(n.inputs[1])
    B, H, S, _ = q.shape  # type: ignore[misc]
    T = k.shape[2]  # type: ignore[index]
    for d, what in ((B, "batch"), (H, "heads"), (S, "query length"), (T, "key length")):
        if not isinstance(d, int):
            raise NoMatch(f"symbolic {what} {d} (chunks need static lengths)", n)
    item = q.dtype.itemsize
    row = B * H * T * item  # bytes of one query row's scores
    if row * S <= budget_bytes:
        return None
    if n.attrs["causal"] and S != T:
        raise NoMatch(f"causal with {S} queries over {T} keys", n)
    c = MIN_CHUNK
    while c * 2 * row <= budget_bytes and c * 2 < S:
        c *= 2
    if c >= S:
        raise NoMatch(f"one chunk of {MIN_CHUNK} rows covers all {S} queries", n)
    return c


def _slice(x: Value, axis: int, start: int, end: int) -> Value:
    t = _t(x)
    if start == 0 and end == t.shape[axis]:  # type: ignore[index]
        return x
    return Node.build("slice", (x,), {"starts": (start,), "ends": (end,), "axes": (axis,),
                                      "steps": (1,)}).out


def _mask_part(m: Value, r: int, c: int, tk: int) -> Value:
    """Rows r:r+c and keys :tk of a mask broadcastable to [B, H, S, T]."""
    ms = _t(m).shape
    assert ms is not None
    rank = len(ms)
    if rank >= 2 and ms[-2] != 1:
        m = _slice(m, rank - 2, r, r + c)
    if rank >= 1 and ms[-1] != 1:
        m = _slice(m, rank - 1, 0, tk)
    return m


class AttentionChunking(Pass):
    name = "attention_chunking"

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        if budget_bytes <= 0:
            raise ValueError(f"budget_bytes must be positive, got {budget_bytes}")
        self.budget_bytes = budget_bytes

    def find(self, g: Graph) -> tuple[list[Candidate], list[tuple[Node, int]]]:
        cands: list[Candidate] = []
        found: list[tuple[Node, int]] = []
        for n in g.nodes:
            if n.op != "attention":
                continue
            try:
                c = chunk_rows(n, self.budget_bytes)
            except NoMatch as e:
                cands.append(Candidate("attention_chunks", RULE, n, False, e.condition, e.node))
                continue
            if c is None:
                continue  # small blocks need no chunks: not a candidate
            S = _t(n.inputs[0]).shape[2]  # type: ignore[index]
            cands.append(Candidate("attention_chunks", RULE, n, True,
                                   detail=f"{-(-S // c)} chunks of {c} queries"))
            found.append((n, c))
        return cands, found

    def run(self, g: Graph) -> PassResult:
        cands, found = self.find(g)
        causal_masks: dict[tuple[int, int, int], Value] = {}  # shared by every layer

        def causal_keep(r: int, c: int, tk: int) -> Value:
            key = (r, c, tk)
            if key not in causal_masks:
                keep = np.tri(c, tk, k=r, dtype=bool)  # key j visible to row i iff j <= r + i
                causal_masks[key] = constant(ConstData(keep))
            return causal_masks[key]

        builders: dict[int, Callable] = {}
        for n, c in found:
            def build(tr: _Tr, n: Node = n, c: int = c) -> tuple[Value, ...]:
                q, k, v = (tr(x) for x in n.inputs[:3])
                mask = tr(n.inputs[3]) if len(n.inputs) == 4 else None
                S = _t(q).shape[2]  # type: ignore[index]
                causal = bool(n.attrs["causal"])
                parts = []
                for r in range(0, S, c):  # type: ignore[arg-type]
                    cc = min(c, S - r)  # type: ignore[operator]
                    tk = r + cc if causal else _t(k).shape[2]
                    ins = [_slice(q, 2, r, r + cc), _slice(k, 2, 0, tk), _slice(v, 2, 0, tk)]
                    m = _mask_part(mask, r, cc, tk) if mask is not None else None
                    chunk_causal = causal and r == 0
                    if causal and r > 0:
                        keep = causal_keep(r, cc, tk)
                        if m is None:
                            m = keep
                        elif _t(m).dtype == DType.bool:
                            m = Node.build("and", (m, keep), {}).out
                        else:
                            ninf = constant(ConstData(np.array(-np.inf,
                                                               _t(m).dtype.to_numpy())))
                            m = Node.build("where", (keep, m, ninf), {}).out
                    ins += [m] if m is not None else []
                    parts.append(Node.build("attention", tuple(ins),
                                            {"scale": n.attrs["scale"],
                                             "causal": chunk_causal}, n.origin).out)
                y = Node.build("concat", tuple(parts), {"axis": 2}, n.origin).out
                return (y,)
            builders[id(n)] = build
        res = rebuild(g, builders) if builders else g
        stats: dict[str, object] = {"attention_chunked": len(found),
                                    "attention_not_chunked": sum(1 for x in cands if not x.fused)}
        add_notes(stats, cands)
        return PassResult(res, bool(found), stats)
