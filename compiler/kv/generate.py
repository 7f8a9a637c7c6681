"""Greedy generation over an ONNX Runtime session of a decoder-with-past (see ``spec``).

``generate(session, spec, prompt_ids, ...)`` returns prompt + new ids [B, L + n] like
transformers' greedy ``generate`` (no stop at an end-of-sequence token). Prompts of different
lengths are LEFT-padded with 0 and masked; position ids are ``cumsum(mask) - 1`` clipped at 0.
The prefill is one call with past length 0, then one call per new token.

* ``cache="dynamic"``: ``present.*`` of a step is bound, as the ORT-allocated OrtValue it is, as
  the next step's ``past_key_values.*`` (IOBinding; no host copies of the cache); only the last
  position's logits are read on the host.
* ``cache="static"``: the session's past inputs are buffers of ``spec.context_length`` slots
  (graphopt's static-cache decode graph: the new rows are written at the past length with ONNX
  TensorScatter); one buffer per past name is allocated once and bound as both the past input
  and the present output of every call, so ONNX Runtime writes the new rows in place.
* ``cache="window"``: a rolling buffer of W slots per layer, allocated once and bound every step;
  token t's keys/values go to slot t mod W; the attention mask covers [W slots + 1 new] and masks
  empty slots, padding, and slots holding a token index <= t - W. The session's graph must have no
  window condition of its own (the ring's slot order is not the token order). With a
  ``prefill_session`` that applies the window itself the whole prompt is one prefill call;
  without, the first min(L, W) prompt tokens are one dynamic call and later prompt tokens go
  through the ring one at a time (a 2-D mask keeps a W window exactly for one query per call).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..errors import GraphOptError
from .spec import IO, CacheSpec, check_io

__all__ = ["generate", "prepare_prompts", "check_session", "CACHES"]

CACHES = ("dynamic", "static", "window")
Progress = Callable[[int, int], None]


def check_session(session: Any, spec: CacheSpec) -> None:
    """Raise a GraphOptError naming what the session's inputs / outputs lack or get wrong
    against the decoder-with-past contract."""
    ins = {i.name: (i.type, i.shape) for i in session.get_inputs()}
    outs = {o.name: (o.type, o.shape) for o in session.get_outputs()}
    check_io(ins, outs, spec, where="onnxruntime session")


def prepare_prompts(prompt_ids: Any, attention_mask: Any, spec: CacheSpec
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask), both int64 [B, L]: a [B, L] array (or one 1-D prompt) as it is, a list of
    prompts of different lengths LEFT-padded with 0; the caller's mask, when given, wins over
    the padding mask. Checks ids against the vocabulary and that every row ends in a token."""
    if isinstance(prompt_ids, np.ndarray) or _flat(prompt_ids):
        ids = np.asarray(prompt_ids)
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or ids.size == 0 or ids.dtype.kind not in "iu":
            raise GraphOptError(f"prompt_ids must be a non-empty [batch, length] integer array, "
                                f"got shape {ids.shape} of {ids.dtype}")
        ids = ids.astype(np.int64)
        mask = np.ones_like(ids)
    else:
        rows = [np.asarray(r) for r in prompt_ids]
        if not rows or any(r.ndim != 1 or r.size == 0 or r.dtype.kind not in "iu" for r in rows):
            raise GraphOptError("prompt_ids: every prompt must be a non-empty list of ints")
        n = max(r.size for r in rows)
        ids = np.zeros((len(rows), n), np.int64)
        mask = np.zeros((len(rows), n), np.int64)
        for b, r in enumerate(rows):
            ids[b, n - r.size:] = r
            mask[b, n - r.size:] = 1
    if attention_mask is not None:
        given = np.asarray(attention_mask)
        if given.ndim == 1:
            given = given[None]
        if given.shape != ids.shape:
            raise GraphOptError(f"attention_mask has shape {given.shape}, the prompt is "
                                f"{ids.shape}")
        if not np.isin(given, (0, 1)).all():
            raise GraphOptError("attention_mask must hold only 0 and 1")
        mask = given.astype(np.int64)
    bad = (ids < 0) | (ids >= spec.vocab_size)
    if bad.any():
        b, j = np.argwhere(bad)[0]
        raise GraphOptError(f"prompt token {int(ids[b, j])} (row {b}, column {j}) is outside "
                            f"the vocabulary [0, {spec.vocab_size})")
    if not mask[:, -1].all():
        raise GraphOptError(f"rows {np.flatnonzero(mask[:, -1] == 0).tolist()} end in padding: "
                            f"pad prompts on the LEFT")
    return ids, mask


def _flat(x: Any) -> bool:
    """A plain sequence of ints (one prompt) or a rectangular list of lists."""
    if not isinstance(x, Sequence) or not x:
        return False
    if all(isinstance(v, (int, np.integer)) for v in x):
        return True
    lens = {len(r) if isinstance(r, (Sequence, np.ndarray)) else -1 for r in x}
    return len(lens) == 1 and -1 not in lens


def _check_lengths(spec: CacheSpec, length: int, max_new_tokens: int) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
            or max_new_tokens < 0:
        raise GraphOptError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if length > spec.context_length:
        raise GraphOptError(f"the prompt has {length} tokens, more than the model's context "
                            f"length {spec.context_length}")
    # the last new token is returned, never fed: L + n - 1 tokens go through the model
    if length + max_new_tokens - 1 > spec.context_length:
        raise GraphOptError(f"{length} prompt tokens + {max_new_tokens} new tokens exceed the "
                            f"model's context length {spec.context_length}")


class _Stream:
    """The growing token matrix, its mask and the per-row position counters."""

    def __init__(self, ids: np.ndarray, mask: np.ndarray, n: int) -> None:
        b, l = ids.shape
        self.ids = np.zeros((b, l + n), np.int64)
        self.mask = np.ones((b, l + n), np.int64)
        self.ids[:, :l], self.mask[:, :l] = ids, mask
        self.length = l  # tokens known so far (prompt + generated)

    def positions(self, start: int, stop: int) -> np.ndarray:
        """Position ids of tokens [start, stop): cumsum(mask) - 1 clipped at 0."""
        return np.maximum(np.cumsum(self.mask[:, :stop], axis=1)[:, start:] - 1, 0)

    def push(self, token: np.ndarray) -> None:
        self.ids[:, self.length] = token
        self.length += 1


def _empty_past(b: int, spec: CacheSpec) -> np.ndarray:
    return np.zeros((b, spec.num_kv_heads, 0, spec.head_size), spec.np_dtype)


def _bind_step(io: Any, st: _Stream, start: int, stop: int, mask: np.ndarray) -> None:
    io.bind_cpu_input(IO.INPUT_IDS, np.ascontiguousarray(st.ids[:, start:stop]))
    io.bind_cpu_input(IO.ATTENTION_MASK, np.ascontiguousarray(mask))
    io.bind_cpu_input(IO.POSITION_IDS, np.ascontiguousarray(st.positions(start, stop)))


def _run_dynamic(session: Any, spec: CacheSpec, io: Any, st: _Stream, start: int, stop: int,
                 past: dict[str, Any]) -> dict[str, Any]:
    """One call on tokens [start, stop) after ``past`` (OrtValues or arrays by past name);
    returns the OrtValues of the outputs, by output name."""
    _bind_step(io, st, start, stop, st.mask[:, :stop])
    for name, v in past.items():
        if isinstance(v, np.ndarray):
            io.bind_cpu_input(name, v)
        else:
            io.bind_ortvalue_input(name, v)
    names = IO.outputs(spec)
    for name in names:
        io.bind_output(name)  # ORT allocates: the present grows by the new tokens
    session.run_with_iobinding(io)
    return dict(zip(names, io.get_outputs()))


def _next(logits_last: np.ndarray) -> np.ndarray:
    return np.argmax(logits_last, axis=-1).astype(np.int64)


def _dynamic(session: Any, spec: CacheSpec, st: _Stream, n: int,
             progress: Progress | None, prefill: Any) -> None:
    io = session.io_binding()
    empty = _empty_past(st.ids.shape[0], spec)
    pre, pre_io = (session, io) if prefill is None else (prefill, prefill.io_binding())
    out = _run_dynamic(pre, spec, pre_io, st, 0, st.length, {p: empty for p in IO.pasts(spec)})
    for k in range(n):
        st.push(_next(out[IO.LOGITS].numpy()[:, -1]))
        if progress is not None:
            progress(k + 1, n)
        if k + 1 == n:
            break
        past = {p: out[q] for p, q in zip(IO.pasts(spec), IO.presents(spec))}
        out = _run_dynamic(session, spec, io, st, st.length - 1, st.length, past)


class _Ring:
    """The rolling buffer: ring [B, Hkv, W, D] per past name, present / logits outputs of one
    fixed shape, all allocated once and bound once; slot k holds token index ``held[k]``."""

    def __init__(self, session: Any, spec: CacheSpec, b: int, w: int) -> None:
        import onnxruntime as ort

        self.session, self.spec, self.w = session, spec, w
        kv = (b, spec.num_kv_heads, w, spec.head_size)
        self.ring = {p: np.zeros(kv, spec.np_dtype) for p in IO.pasts(spec)}
        self.present = {q: np.zeros(kv[:2] + (w + 1,) + kv[3:], spec.np_dtype)
                        for q in IO.presents(spec)}
        logits_dtype = np.float32 if _logits_type(session) == "tensor(float)" else spec.np_dtype
        self.logits = np.zeros((b, 1, spec.vocab_size), logits_dtype)
        self.held = np.full(w, -1, np.int64)
        self.io = session.io_binding()
        for name, a in self.ring.items():
            self.io.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(a))
        for name, a in list(self.present.items()) + [(IO.LOGITS, self.logits)]:
            self.io.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(a))

    def fill(self, out: dict[str, Any], count: int) -> None:
        """The ring from a prefill's presents over tokens 0..count-1: the last min(count, W)
        tokens, token t in slot t mod W."""
        idx = np.arange(max(count - self.w, 0), count)
        for p, q in zip(IO.pasts(self.spec), IO.presents(self.spec)):
            self.ring[p][:, :, idx % self.w] = out[q].numpy()[:, :, idx]
        self.held[idx % self.w] = idx

    def step(self, st: _Stream, t: int) -> np.ndarray:
        """Feed token t through the ring; return its logits [B, V]."""
        live = (self.held >= 0) & (self.held > t - self.w)
        mask = np.zeros((st.ids.shape[0], self.w + 1), np.int64)
        mask[:, :self.w] = np.where(live, st.mask[:, np.maximum(self.held, 0)], 0)
        mask[:, self.w] = st.mask[:, t]
        _bind_step(self.io, st, t, t + 1, mask)
        self.session.run_with_iobinding(self.io)
        slot = t % self.w
        for p, q in zip(IO.pasts(self.spec), IO.presents(self.spec)):
            self.ring[p][:, :, slot] = self.present[q][:, :, self.w]
        self.held[slot] = t
        return self.logits[:, -1]


def _logits_type(session: Any) -> str:
    return next(o.type for o in session.get_outputs() if o.name == IO.LOGITS)


def _window(session: Any, spec: CacheSpec, st: _Stream, n: int, w: int,
            progress: Progress | None, prefill: Any) -> None:
    b, l = st.ids.shape[0], st.length
    # a prefill session keeps the window itself: the whole prompt in one call; else the first
    # W tokens (no key is out of any of their windows) and the rest through the ring
    first = l if prefill is not None else min(l, w)
    pre = session if prefill is None else prefill
    empty = _empty_past(b, spec)
    out = _run_dynamic(pre, spec, pre.io_binding(), st, 0, first,
                       {p: empty for p in IO.pasts(spec)})
    logits = out[IO.LOGITS].numpy()[:, -1].copy()
    ring = _Ring(session, spec, b, w)
    ring.fill(out, first)
    del out
    for t in range(first, l):  # the rest of a prompt longer than the window
        logits = ring.step(st, t)
    for k in range(n):
        st.push(_next(logits))
        if progress is not None:
            progress(k + 1, n)
        if k + 1 < n:
            logits = ring.step(st, st.length - 1)


def _static(session: Any, spec: CacheSpec, st: _Stream, n: int,
            progress: Progress | None) -> None:
    import onnxruntime as ort

    b = st.ids.shape[0]
    shape = (b, spec.num_kv_heads, spec.context_length, spec.head_size)
    slots = {i.name: i.shape[2] for i in session.get_inputs() if i.name in IO.pasts(spec)}
    bad = sorted(k for k, v in slots.items() if v != spec.context_length)
    if bad:
        raise GraphOptError(f"cache='static' needs a static-cache decode model (past inputs of "
                            f"{spec.context_length} slots); {bad[0]} has {slots[bad[0]]!r}")
    io = session.io_binding()
    buffers = [ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, spec.np_dtype))
               for _ in IO.pasts(spec)]  # allocated once: past in, present out, in place
    for p, q, buf in zip(IO.pasts(spec), IO.presents(spec), buffers):
        io.bind_ortvalue_input(p, buf)
        io.bind_ortvalue_output(q, buf)
    at = len(IO.presents(spec))  # outputs come back in binding order: presents, then logits
    start = 0
    for k in range(n):
        _bind_step(io, st, start, st.length, st.mask[:, :st.length])
        io.bind_output(IO.LOGITS)  # ORT allocates: [B, L, V] for the prompt, then [B, 1, V]
        session.run_with_iobinding(io)
        logits = io.get_outputs()[at].numpy()
        start = st.length
        st.push(_next(logits[:, -1]))
        if progress is not None:
            progress(k + 1, n)


def generate(session: Any, spec: CacheSpec, prompt_ids: Any, attention_mask: Any = None,
             max_new_tokens: int = 32, cache: str = "dynamic", window: int | None = None,
             progress: Progress | None = None, prefill_session: Any = None) -> np.ndarray:
    """Greedy generation: prompt + ``max_new_tokens`` new ids, int64 [B, L + n].

    ``prompt_ids``: [B, L] ints, or prompts of different lengths (left-padded with 0 and masked);
    ``attention_mask`` (given) wins over the padding mask. ``cache``: "dynamic" or "window"
    (rolling buffer of ``window`` slots, default ``spec.window``). ``prefill_session``: another
    session of the contract for the prefill call (the whole prompt at once; with
    cache="window" it must apply the window itself, e.g. the decode graph when ``session`` is
    its window-free ring variant). ``progress(done, total)`` is called after every new token."""
    if cache not in CACHES:
        raise GraphOptError(f"cache={cache!r}: expected one of {list(CACHES)}")
    check_session(session, spec)
    if prefill_session is not None:
        check_session(prefill_session, spec)
    ids, mask = prepare_prompts(prompt_ids, attention_mask, spec)
    _check_lengths(spec, ids.shape[1], max_new_tokens)
    st = _Stream(ids, mask, max_new_tokens)
    if max_new_tokens == 0:
        return st.ids
    if cache == "dynamic":
        _dynamic(session, spec, st, max_new_tokens, progress, prefill_session)
    elif cache == "static":
        _static(session, spec, st, max_new_tokens, progress)
    else:
        w = spec.window if window is None else window
        if w is None or isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w <= 0:
            raise GraphOptError(f"cache='window' needs a positive window (window= or "
                                f"spec.window), got {w!r}")
        _window(session, spec, st, max_new_tokens, int(w), progress, prefill_session)
    return st.ids
