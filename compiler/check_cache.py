"""The outputs of an ONNX model file run in ONNX Runtime, remembered for the same file and the
same inputs, so the check of a large model runs the original once (``check.run_onnx``: the
optimizer's check, the tensor-parallel check of every rank, a second ``optimize`` of the same
file).

A run is reused only when both keys match exactly: the model file as it is now (its path,
device, inode, size and modification time, its bytes when small, and the same of every
external data file it names) and the inputs (each one's name, dtype, shape and bytes). Models
given as bytes or protos, and inputs or outputs that are not plain arrays (strings, sequences,
maps), are never remembered.
"""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

KEEP = 4  # runs remembered (the most recent)
_runs: "OrderedDict[tuple[Any, ...], list[np.ndarray]]" = OrderedDict()  # by (model, feeds)
HASH_BYTES = 1 << 26  # files up to this size are identified by their content too


def _stat(path: Path, content: bool = True) -> tuple[Any, ...]:
    """A file's path, device, inode, size and modification time, and (``content``) for a file of
    at most HASH_BYTES a digest of its bytes (a small file rewritten in place within the clock's
    granularity keeps its stat; a large one cannot be rewritten that fast)."""
    st = path.stat()
    key: tuple[Any, ...] = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if content and st.st_size <= HASH_BYTES:
        key += (hashlib.blake2b(path.read_bytes(), digest_size=32).digest(),)
    return key


def model_key(model: Any) -> tuple[Any, ...] | None:
    """The identity of a model file and of the external data files it names, as they are now;
    None for a model that is not a file (bytes, a proto) or cannot be read."""
    if not isinstance(model, (str, os.PathLike)):
        return None
    from .frontends.onnx_io import read_model

    p = Path(model).resolve()
    try:
        before = _stat(p)
        m = read_model(p, map_initializers=True)
    except Exception:  # not readable as a model: ONNX Runtime reports it, uncached
        return None
    files = sorted({e.value for t in m.graph.initializer if t.data_location == 1
                    for e in t.external_data if e.key == "location"})
    try:
        key = (before, *(_stat((p.parent / f).resolve()) for f in files if f != p.name))
    except OSError:
        return None
    # changed while read: not remembered
    return key if _stat(p, content=False) == before[:5] else None


def feeds_key(feeds: Mapping[str, Any]) -> bytes | None:
    """A digest of the inputs (names, dtypes, shapes, bytes); None when one is not a numeric
    or boolean array."""
    h = hashlib.blake2b(digest_size=32)
    for name in sorted(feeds):
        a = feeds[name]
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "biufc":
            return None
        h.update(repr((name, a.dtype.str, a.shape)).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.digest()


def _key(model: Any, feeds: Mapping[str, Any]) -> tuple[Any, ...] | None:
    mk = model_key(model)
    fk = feeds_key(feeds) if mk is not None else None
    return None if mk is None or fk is None else (mk, fk)


def _remember(key: tuple[Any, ...], outs: list[Any]) -> None:
    """Keep ``outs`` (read-only) under ``key`` when they are all arrays."""
    if not all(isinstance(o, np.ndarray) for o in outs):
        return
    for o in outs:
        o.flags.writeable = False
    _runs[key] = list(outs)
    while len(_runs) > KEEP:
        _runs.popitem(last=False)


def cached_run(model: Any, feeds: Mapping[str, Any],
               run: Callable[[], list[Any]]) -> list[Any]:
    """``run()`` (the model's outputs on ``feeds``), or the outputs of an earlier run of the same
    model file on the same inputs. Remembered outputs are read-only arrays."""
    key = _key(model, feeds)
    if key is None:
        return run()
    hit = _runs.get(key)
    if hit is not None:
        _runs.move_to_end(key)
        return list(hit)
    outs = run()
    _remember(key, outs)
    return outs


def clear() -> None:
    """Forget every remembered run."""
    _runs.clear()
