"""The numeric check of a KV-cache derivation: the decode model, exported exactly as it is
written and run in ONNX Runtime, fed a prompt (past length 0), then single tokens and a chunk of
several tokens over its own growing cache, must give the logits the original computes on the
whole sequence at once, row for row (float tolerances of ``graphopt.check``).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..check import compare_outputs, make_inputs, run_graph, run_session
from ..ir.graph import Graph
from ..ir.types import TensorType, dim_factors
from .derive import TOTAL, past_name, present_name
from .seqaxis import MASK, POSITIONS, find_tokens
from .spec import CacheSpec

DEFAULT_CHUNKS = (5, 1, 3, 1, 1)  # prompt, then steps of 1, 3, 1, 1 new tokens


def original_feeds(g: Graph, batch: int, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Valid inputs of the original at ``length`` tokens, unpadded."""
    tok = find_tokens(g)
    t = tok.type
    assert isinstance(t, TensorType) and t.shape is not None
    seq = t.shape[1]
    sizes: dict[str, int] = {}
    for it in g.input_types:
        if isinstance(it, TensorType) and it.shape is not None:
            for d in it.shape:
                if isinstance(d, str):
                    for s in dim_factors(d)[1]:
                        sizes[s] = length if s == seq else batch
    feeds = make_inputs(g, seed, sizes)
    for n in g.inputs:
        name = n.attrs["name"]
        if name == MASK:
            feeds[name] = np.ones_like(feeds[name])
        elif name == POSITIONS:
            feeds[name] = np.broadcast_to(np.arange(length), feeds[name].shape).astype(
                feeds[name].dtype)
    return feeds


def run_cached(session: Any, spec: CacheSpec, ids: np.ndarray, chunks: Sequence[int],
               slots: int | None = None) -> list[np.ndarray]:
    """Logits of each chunk, feeding the decode model its own presents (unpadded batch).
    slots: a static-cache model's buffer length (the past starts as zero buffers)."""
    b = ids.shape[0]
    past: dict[str, np.ndarray] = {}
    for i in range(spec.num_layers):
        for kv in ("key", "value"):
            past[past_name(i, kv)] = np.zeros((b, spec.num_kv_heads, slots or 0,
                                               spec.head_size), spec.np_dtype)
    outs: list[np.ndarray] = []
    start = 0
    for c in chunks:
        end = start + c
        feeds = {"input_ids": ids[:, start:end], "attention_mask": np.ones((b, end), np.int64),
                 "position_ids": np.broadcast_to(np.arange(start, end), (b, c)).astype(np.int64),
                 **past}
        res = run_session(session, feeds)
        names = [o.name for o in session.get_outputs()]
        got = dict(zip(names, res))
        outs.append(got["logits"])
        for i in range(spec.num_layers):
            for kv in ("key", "value"):
                past[past_name(i, kv)] = got[present_name(i, kv)]
        start = end
    return outs


def check_derivation(original: Graph, decode_model: Any, spec: CacheSpec, *,
                     chunks: Sequence[int] = DEFAULT_CHUNKS, batch: int = 2, seed: int = 0,
                     slots: int | None = None, what: str = "the cached decoder"
                     ) -> dict[str, Any]:
    """Compare the cached run of ``decode_model`` (ModelProto or bytes, what is written) with
    ``original`` on the whole sequence; raises CheckError on a mismatch, returns the report.
    slots: the buffer length of a static-cache model."""
    from ..check import onnx_session

    length = int(sum(chunks))
    feeds = original_feeds(original, batch, length, seed)
    tok = find_tokens(original).attrs["name"]
    (full,) = run_graph(original, feeds, "numpy")[:1]
    sess = onnx_session(decode_model)
    got = run_cached(sess, spec, feeds[tok], chunks, slots)
    expected, actual, names = [], [], []
    start = 0
    for k, (c, lg) in enumerate(zip(chunks, got)):
        expected.append(np.ascontiguousarray(full[:, start:start + c]))
        actual.append(lg)
        names.append(f"logits[{start}:{start + c}] ({'prefill' if k == 0 else 'decode'})")
        start += c
    res = compare_outputs(expected, actual, names,
                          reference="the original on the whole sequence")
    res.raise_if_failed(f"{what} (prefill + decode steps)")
    return {"ok": True, "batch": batch, "chunks": list(chunks),
            "max_abs": max(o.max_abs for o in res.outputs),
            "max_rel": max(o.max_rel for o in res.outputs), "total_symbol": TOTAL}
