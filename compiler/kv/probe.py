"""Numeric facts about a decoder's position and mask computations, measured by running them at
several sequence lengths and padding patterns (the reference interpreter on the sub-graph that
computes them; the token values never matter to these aux values, ``seqaxis`` proved that).

* ``mask_facts``: for each attention, the keys its mask keeps, compared with the canonical
  ``keep[b, i, j] = j <= i and (i - window < j) and attention_mask[b, j]``: the
  comparison decides ``window`` and whether the mask reads the padding; any kept key j > i
  (bidirectional attention), a bias inside the mask (ALiBi) or any other pattern is a refusal.
* ``is_arange``: whether a value is ``arange(S)`` (broadcast over the batch) at every length
  measured: the position roots the decode graph replaces by ``position_ids``.
* ``size_independent``: a value without a sequence dim that is the same at every length (a
  constant the decode graph may fold).

The lengths go up to ``max_length``: the derivation is valid for sequences up to that length
(a window longer than it would not be seen, so generation refuses longer sequences).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..ir.graph import Graph
from ..ir.node import Node, Value
from ..ir.types import TensorType, dim_factors
from .seqaxis import StreamInfo

SMALL_LENGTHS = (3, 7, 12)


@dataclass(frozen=True)
class MaskFacts:
    padding: bool           # the mask drops keys where attention_mask is 0
    window: int | None      # keys j with i - window < j <= i; None: all j <= i


class Prober:
    """Runs aux sub-graphs of ``g`` at chosen lengths, with memoized feeds."""

    def __init__(self, g: Graph, info: StreamInfo, batch: int = 2, seed: int = 0) -> None:
        self.g, self.info, self.batch, self.seed = g, info, batch, seed

    def feeds(self, n: int, pad: bool, batch: int | None = None) -> dict[str, np.ndarray]:
        from ..check import make_inputs

        b = self.batch if batch is None else batch
        sizes: dict[str, int] = {}
        for t in self.g.input_types:
            if isinstance(t, TensorType) and t.shape is not None:
                for d in t.shape:
                    if isinstance(d, str):
                        for s in dim_factors(d)[1]:
                            sizes[s] = n if s == self.info.seq else b
        feeds = make_inputs(self.g, self.seed, sizes)
        if self.info.mask is not None:
            name = self.info.mask.attrs["name"]
            # [batch, n] even when the mask has dims of its own (a torch export of a model
            # that never reads it gives it unconstrained symbols)
            m = np.ones((feeds[name].shape[0], n), feeds[name].dtype)
            if pad:  # left padding of a different length per row, and one right-padded row
                for r in range(m.shape[0]):
                    k = (r * (n // 3 + 1)) % max(n - 1, 1)
                    m[r, :k] = 0
                if m.shape[0] > 2:
                    m[-1, n - 1:] = 0
            feeds[name] = m
        return feeds

    def run(self, values: Sequence[Value], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        from ..check import run_graph

        sub = Graph(self.g.inputs, list(values), [f"v{i}" for i in range(len(values))],
                    name="probe", meta=self.g.meta)
        return run_graph(sub, feeds, "numpy")

    # ---- masks ---------------------------------------------------------------------------------
    def mask_facts(self, att: Node, max_length: int) -> "MaskFacts | str":
        """The mask semantics of attention ``att``, or why it is not a causal mask."""
        seen: list[tuple[int, int | None]] = []
        paddings: set[bool] = set()
        for n in sorted({*SMALL_LENGTHS, max_length}):
            for pad in ((False, True) if n <= 64 else (False,)):
                batch = self.batch if n <= 64 else 1
                feeds = self.feeds(n, pad, batch)
                keep = self._keep(att, feeds, n)
                if isinstance(keep, str):
                    return keep
                amask = feeds[self.info.mask.attrs["name"]].astype(bool) if \
                    self.info.mask is not None else np.ones((batch, n), bool)
                got = _facts(keep, amask, n)
                if isinstance(got, str):
                    return f"{got} (at sequence length {n})"
                seen.append((n, got.window))
                if pad and not amask.all():  # a feed without padding cannot tell
                    paddings.add(got.padding)
        windows = {w for _, w in seen if w is not None}
        window = min(windows) if windows else None
        if len(windows) > 1 or (window is not None and
                                any(w is None and n > window for n, w in seen)):
            return f"the mask's window changes with the sequence length ({seen})"
        if len(paddings) > 1:
            return "the mask reads the attention_mask differently at different lengths"
        return MaskFacts(paddings.pop() if paddings else False, window)

    def _keep(self, att: Node, feeds: Mapping[str, np.ndarray], n: int) -> "np.ndarray | str":
        """keep[b, h, i, j] of attention ``att`` (its causal flag and its mask)."""
        keep = np.ones((1, 1, n, n), bool)
        if att.attrs["causal"]:
            keep = keep & np.tril(np.ones((n, n), bool))
        if len(att.inputs) == 4:
            (m,) = self.run([att.inputs[3]], feeds)
            if m.dtype == np.bool_:
                mk = m
            else:
                mk = m > np.finfo(m.dtype).min / 2
                if np.any(m[mk] != 0):
                    return ("the attention mask adds a bias to kept scores (ALiBi or relative "
                            "positions), which the cached form does not model")
            while mk.ndim < 4:
                mk = mk[None]
            keep = keep & mk
        return keep


def _facts(keep: np.ndarray, amask: np.ndarray, n: int) -> "MaskFacts | str":
    """Match keep [B|1, H|1, n, n] against the canonical causal masks (rows of real tokens)."""
    b = amask.shape[0]
    keep = np.broadcast_to(keep, (max(keep.shape[0], b), keep.shape[1], n, n))
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    real = amask[:, None, :, None]  # query rows that are real tokens
    if np.any(keep & (j > i) & real):
        return "the attention is not causal: a query sees a later key (bidirectional)"
    # window: the largest i - j kept on real rows, among unpadded keys
    rows_full = keep & real
    d = np.where(rows_full, i - j, -1)
    width = int(d.max()) + 1 if d.size else 0
    window = width if width < n else None
    for padding in (True, False):
        canon = (j <= i) & (True if window is None else (i - window < j))
        canon = np.broadcast_to(canon, keep.shape)
        if padding:
            canon = canon & amask[:, None, None, :]
        if np.array_equal(keep & real, canon & real):
            return MaskFacts(padding, window)
    return ("the attention mask is not a causal mask over the attention_mask's keys (nor a "
            "sliding window of one)")


def is_arange(p: Prober, v: Value, lengths: Sequence[int] = (5, 9)) -> bool:
    """v is the positions of the tokens at every length measured: arange(S) (broadcast over
    leading size-1 / batch axes) without padding; with padding, on the real tokens, either
    still arange(S) (positions that ignore the mask) or cumsum(attention_mask) - 1 (positions
    that skip the padding, the contract's position_ids)."""
    for n in lengths:
        for pad in (False, True):
            feeds = p.feeds(n, pad)
            (x,) = p.run([v], feeds)
            if x.ndim == 0 or x.shape[-1] != n or not np.issubdtype(x.dtype, np.integer):
                return False
            ar = np.broadcast_to(np.arange(n), x.shape)
            if not pad or p.info.mask is None:
                if not np.array_equal(x, ar):
                    return False
                continue
            m = feeds[p.info.mask.attrs["name"]].astype(bool)
            cs = np.cumsum(m, axis=-1) - 1
            if x.ndim >= 2:
                real = np.broadcast_to(m, x.shape[:-2] + m.shape)
                skip = np.broadcast_to(cs, real.shape)
            else:  # one position row for the whole batch (arange(S) of a dynamo export)
                real, skip = m[0], cs[0]
            xs = np.broadcast_to(x, real.shape)
            if not (np.array_equal(xs[real], np.broadcast_to(ar, real.shape)[real])
                    or np.array_equal(xs[real], skip[real])):
                return False
    return True


def size_independent(p: Prober, v: Value, lengths: Sequence[int] = (5, 9)) -> np.ndarray | None:
    """v's value when it is the same at every length measured (and padding), else None."""
    first: np.ndarray | None = None
    for n in lengths:
        for pad in (False, True):
            (x,) = p.run([v], p.feeds(n, pad))
            if first is None:
                first = x
            elif x.shape != first.shape or not np.array_equal(x, first):
                return None
    return first
