"""Calibration data: the input batches the planner measures activations on.

Accepted: an ``.npz`` file (one array per model input; an array with one more leading axis
than the input holds several batches), a dict of arrays (one batch), or a list of such dicts
(or of tuples of arrays/tensors in input order). None: generated valid inputs (8 batches,
``check.make_inputs``), with a warning for the modes whose parameters depend on real
activations. Batches that do not fit the model (missing or unknown input names, wrong dtype or
rank, static dims that differ) give a ``QuantError`` naming the batch and the input.

``collect`` runs the float graph once per batch with every linear's input as an extra output
and keeps, per layer, a random sample of activation rows (for GPTQ's Hessian, AWQ's and
SmoothQuant's searches and the per-layer error) and the per-column absolute maximum over every
row (SmoothQuant, LLM.int8's outlier columns).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..ir.graph import Graph
from ..ir.types import TensorType
from .config import QuantConfig, QuantError
from .layers import Layer

GENERATED_BATCHES = 8


@dataclass
class LayerStats:
    rows: np.ndarray  # [n, K] f32 sample of activation rows
    col_absmax: np.ndarray  # [K] over every calibration row
    extra: dict[str, Any] = field(default_factory=dict)


def load_batches(g: Graph, calibration: Any, cfg: QuantConfig, where: str = "calibration"
                 ) -> tuple[list[dict[str, np.ndarray]], str]:
    """The calibration batches for ``g`` and a description of where they came from."""
    if calibration is None:
        from ..check import make_inputs

        if cfg.needs_data:
            warnings.warn(f"quantize={cfg.mode}"
                          f"{' method=' + cfg.method if cfg.method != 'rtn' else ''}: no "
                          f"calibration data given; using generated random inputs, which "
                          f"do not show the activation statistics of real data "
                          f"(pass calibration=... / --calibration X.npz)", stacklevel=3)
        return [make_inputs(g, seed) for seed in range(GENERATED_BATCHES)], \
            f"{GENERATED_BATCHES} generated batches"
    if isinstance(calibration, (str, os.PathLike)):
        path = os.fspath(calibration)
        from ..check import load_inputs
        from ..errors import FrontendError

        try:
            arrays = load_inputs(path)
        except FrontendError as e:
            raise QuantError(e.message, where=path) from e
        batches = _split_stacked(g, arrays, path)
        src = f"{len(batches)} batches from {path}"
    elif isinstance(calibration, Mapping):
        batches, src = [dict(calibration)], "1 batch given"
    elif isinstance(calibration, Sequence) and not isinstance(calibration, (str, bytes)):
        batches = [_as_feed(g, b, i) for i, b in enumerate(calibration)]
        src = f"{len(batches)} batches given"
    else:
        raise QuantError(f"calibration must be an .npz path, a dict of arrays or a list of "
                         f"batches, not {type(calibration).__name__}", where=where)
    if not batches:
        raise QuantError("calibration data holds no batch", where=where)
    label = os.fspath(calibration) if isinstance(calibration, (str, os.PathLike)) else where
    return [_validated(g, b, i, label) for i, b in enumerate(batches)], src


def _as_feed(g: Graph, b: Any, i: int) -> dict[str, np.ndarray]:
    if isinstance(b, Mapping):
        return {k: _numpy(v) for k, v in b.items()}
    if isinstance(b, (tuple, list)):
        if len(b) != len(g.input_names):
            raise QuantError(f"batch {i} has {len(b)} arrays, the model takes "
                             f"{len(g.input_names)} inputs {list(g.input_names)}",
                             where="calibration")
        return {n: _numpy(v) for n, v in zip(g.input_names, b)}
    if len(g.input_names) == 1:
        return {g.input_names[0]: _numpy(b)}
    raise QuantError(f"batch {i} is a {type(b).__name__}; give a dict of input name -> array",
                     where="calibration")


def _numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):
        return v.detach().cpu().numpy()
    return np.asarray(v)


def _split_stacked(g: Graph, arrays: Mapping[str, np.ndarray], path: str
                   ) -> list[dict[str, np.ndarray]]:
    ranks = {n: len(t.shape) for n, t in zip(g.input_names, g.input_types)
             if isinstance(t, TensorType) and t.shape is not None}
    stacked = {k for k, v in arrays.items() if k in ranks and v.ndim == ranks[k] + 1}
    if not stacked:
        return [dict(arrays)]
    if stacked != {k for k in arrays if k in ranks}:
        raise QuantError(f"some inputs hold several batches (a leading axis: "
                         f"{sorted(stacked)}) and others one", where=path)
    counts = {arrays[k].shape[0] for k in stacked}
    if len(counts) != 1:
        raise QuantError(f"stacked inputs hold different batch counts {sorted(counts)}",
                         where=path)
    n = counts.pop()
    return [{k: (v[i] if k in stacked else v) for k, v in arrays.items()} for i in range(n)]


def _validated(g: Graph, feed: Mapping[str, np.ndarray], i: int, label: str
               ) -> dict[str, np.ndarray]:
    missing = [n for n in g.input_names if n not in feed]
    if missing:
        raise QuantError(f"batch {i} lacks model input(s) {missing} (it has {sorted(feed)})",
                         where=label)
    extra = [k for k in feed if k not in g.input_names]
    if extra:
        raise QuantError(f"batch {i} has input(s) {extra} the model does not take (model "
                         f"inputs: {list(g.input_names)})", where=label)
    out: dict[str, np.ndarray] = {}
    for name, t in zip(g.input_names, g.input_types):
        a = np.asarray(feed[name])
        if isinstance(t, TensorType):
            want = t.dtype.to_numpy() if t.dtype.value != "bf16" else None
            if want is not None and a.dtype != want:
                if a.dtype.kind == np.dtype(want).kind and a.dtype.kind in "iu":
                    a = a.astype(want)  # int32 ids for an int64 input: same values
                else:
                    raise QuantError(f"batch {i}, input {name!r}: dtype {a.dtype}, the model "
                                     f"takes {t}", where=label)
            if t.shape is not None:
                bad = len(t.shape) != a.ndim or any(
                    isinstance(d, int) and d != s for d, s in zip(t.shape, a.shape))
                if bad:
                    raise QuantError(f"batch {i}, input {name!r}: shape {list(a.shape)}, the "
                                     f"model takes {t}", where=label)
        out[name] = a
    return out


def collect(g: Graph, layers: Sequence[Layer], batches: Sequence[Mapping[str, np.ndarray]],
            cfg: QuantConfig, seed: int = 0) -> dict[int, LayerStats]:
    """Activation statistics of every linear of ``layers`` (by ``id(layer.node)``)."""
    lins = [lay for lay in layers if lay.kind == "linear"]
    if not lins:
        return {}
    xs: list[Any] = []
    slot: dict[Any, int] = {}
    for lay in lins:
        if lay.x not in slot:
            slot[lay.x] = len(xs)
            xs.append(lay.x)
    probe = Graph(g.inputs, list(xs), [f"x{i}" for i in range(len(xs))], g.name, g.meta)
    rows: list[list[np.ndarray]] = [[] for _ in xs]
    amax: list[np.ndarray | None] = [None] * len(xs)
    try:
        results = run_batches(probe, batches)
    except BatchError as e:  # the model cannot run on this batch: a property of the data
        raise QuantError(f"the model does not run on calibration batch {e.index} ({e.message}); "
                         f"pass valid inputs with calibration=... / --calibration X.npz",
                         where="calibration") from e
    for outs in results:
        for i, v in enumerate(outs):
            r = np.asarray(v, dtype=np.float32).reshape(-1, v.shape[-1])
            rows[i].append(r)
            m = np.max(np.abs(r), axis=0) if r.size else np.zeros(r.shape[-1], np.float32)
            amax[i] = m if amax[i] is None else np.maximum(amax[i], m)
    rng = np.random.default_rng(seed)
    stats_of_slot: list[LayerStats] = []
    for i in range(len(xs)):
        allr = np.concatenate(rows[i], axis=0)
        if allr.shape[0] > cfg.calibration_rows:
            allr = allr[np.sort(rng.choice(allr.shape[0], cfg.calibration_rows, replace=False))]
        stats_of_slot.append(LayerStats(allr, np.asarray(amax[i], dtype=np.float32)))
    return {id(lay.node): LayerStats(stats_of_slot[slot[lay.x]].rows,
                                     stats_of_slot[slot[lay.x]].col_absmax)
            for lay in lins}


class BatchError(Exception):
    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index, self.message = index, message


def run_batches(g: Graph, batches: Sequence[Mapping[str, np.ndarray]]
                ) -> list[list[np.ndarray]]:
    """Run ``g`` on every batch: exported once and in one ONNX Runtime session (at the opset its
    ops need), or with the reference interpreter when it holds torch-only opaque nodes. A batch
    the model cannot run on raises BatchError naming it."""
    from ..check import onnx_graph_session, run_graph, run_session
    from ..pipeline import raise_opset_for_fused_ops

    g = raise_opset_for_fused_ops(g)
    if any(n.op == "opaque" and n.attrs.get("proto") is None for n in g.nodes):
        return [_batch(i, lambda f=f: run_graph(g, dict(f), "numpy"))
                for i, f in enumerate(batches)]
    with onnx_graph_session(g) as sess:
        return [_batch(i, lambda f=f: run_session(sess, f)) for i, f in enumerate(batches)]


def _batch(i: int, run: Any) -> list[np.ndarray]:
    try:
        return run()
    except Exception as e:
        raise BatchError(i, " ".join(str(e).split())[:400] or type(e).__name__) from e


def run_any(g: Graph, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """``run_batches`` of one batch."""
    return run_batches(g, [feed])[0]
