"""Numeric check: does an optimized graph compute what its original computes?

The original can be an IR graph (run with the reference interpreter), an ONNX model (run in ONNX
Runtime) or a torch module. Inputs are generated so that they are valid for the model
(``graphopt.inputs``: each input is drawn inside what its readers require of it -- indices in
range, distinct axes, shapes that fit the data, class labels, scales, thresholds, masks); when
that is not possible, or ONNX Runtime cannot run the original on them, ``InputsNeeded`` says
which input and how to pass inputs.

Users can pass their own inputs (a dict or an ``.npz`` file). Tolerances depend on the dtype
(see ``tolerance``); integers and bools must match exactly; NaN positions must match; infinities
must match exactly. ``CheckError`` is raised when an output differs.

What runs. An ONNX original is compared by running, in ONNX Runtime (CPU) with the session options
users get by default (``ort.SessionOptions()``: graph optimizations ``ORT_ENABLE_ALL``), the
original model and the bytes ``onnx_export.save`` writes (``onnx_export.to_bytes``: the same bytes,
remembered for the next ``save``; a file written by ``save`` when the weights are large). Only
these options: ORT's graph rewrites keep a model's meaning, so a model graphopt changed shows
under them too, while a run without them (``ORT_DISABLE_ALL``) misses what users see when ORT
picks a different kernel for what graphopt wrote (the NCHWc GlobalAveragePool of the original
against a ReduceMean of the written model differ by an ulp; softmax over huge equal logits turns
that into a different output). ``onnx_session(..., optimized=False)`` runs without them.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .errors import CheckError, GraphOptError
from .inputs import (INT_DEFAULT_RANGE, SYM_MAX, SYM_MIN, InputsNeeded,  # noqa: F401
                     generate_inputs, index_bounds, make_inputs, rejected_inputs,
                     symbol_sizes)
from .ir.graph import Graph
from .ir.node import Node
from .ir.types import DType, TensorType


@dataclass(frozen=True)
class Tolerance:
    """|actual - expected| <= atol * scale + rtol * |expected|, where scale is
    max(1, largest finite |expected| of the output): absolute error is judged relative to the
    output's magnitude, so accumulations over large values are not flagged."""

    rtol: float
    atol: float


_TOL = {
    DType.f64: Tolerance(1e-7, 1e-8),
    DType.f32: Tolerance(1e-4, 1e-5),
    DType.f16: Tolerance(1e-2, 1e-3),
    DType.bf16: Tolerance(1e-2, 1e-3),
    DType.c64: Tolerance(1e-4, 1e-5),
    DType.c128: Tolerance(1e-7, 1e-8),
}


def tolerance(dt: DType) -> Tolerance | None:
    """The tolerance for a dtype; None means exact (ints, bools, strings)."""
    if dt in _TOL:
        return _TOL[dt]
    if dt.is_float:  # 8-bit and 4-bit floats
        return Tolerance(1e-1, 1e-2)
    return None


@dataclass
class OutputDiff:
    name: str
    dtype: str
    shape: list[int]
    max_abs: float
    max_rel: float
    mismatched: int
    ok: bool
    reason: str = ""
    sqnr_db: float | None = None  # judged by an SQNR budget (quantized models)

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "dtype": self.dtype, "shape": self.shape,
             "max_abs": _json_float(self.max_abs), "max_rel": _json_float(self.max_rel),
             "mismatched": self.mismatched, "ok": self.ok, "reason": self.reason}
        if self.sqnr_db is not None:
            d["sqnr_db"] = _json_float(self.sqnr_db)
        return d


@dataclass
class CheckResult:
    outputs: list[OutputDiff]
    inputs: dict[str, str] = field(default_factory=dict)  # name -> "f32[2,3]"
    reference: str = ""  # what the candidate was compared with

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "reference": self.reference, "inputs": self.inputs,
                "outputs": [o.to_dict() for o in self.outputs],
                "max_abs": _json_float(max((o.max_abs for o in self.outputs), default=0.0)),
                "max_rel": _json_float(max((o.max_rel for o in self.outputs), default=0.0))}

    def summary(self) -> str:
        lines = []
        for o in self.outputs:
            state = "ok" if o.ok else f"MISMATCH ({o.reason})"
            sq = "" if o.sqnr_db is None else f" SQNR {o.sqnr_db:.1f} dB"
            lines.append(f"  {o.name}: {o.dtype}{o.shape} max abs {o.max_abs:.3g} "
                         f"max rel {o.max_rel:.3g}{sq}  {state}")
        return "\n".join(lines)

    def raise_if_failed(self, what: str = "optimized model") -> None:
        if self.ok:
            return
        bad = [o for o in self.outputs if not o.ok]
        msg = (f"{what} differs from {self.reference or 'the original'} on "
               f"{len(bad)} of {len(self.outputs)} outputs: " +
               "; ".join(f"{o.name}: {o.reason}" for o in bad))
        err = CheckError(msg, where=f"output {bad[0].name!r}", context=self.summary())
        err.result = self  # type: ignore[attr-defined]
        raise err


def _looser(a: DType | None, b: DType) -> DType | None:
    """The dtype with the looser tolerance (None counts as tightest)."""
    if a is None:
        return b
    ta, tb = tolerance(a), tolerance(b)
    if ta is None:
        return b
    if tb is None:
        return a
    return b if tb.rtol > ta.rtol else a


def precision_dtypes(*graphs: Graph) -> list[DType | None]:
    """Per output, the least precise float dtype computed on the way to it (over all the given
    graphs, which have the same outputs): an f64 output computed in f32 gets f32's tolerance.
    None for non-float outputs (compared exactly)."""
    out: list[DType | None] = []
    for i in range(len(graphs[0].outputs)):
        best: DType | None = None
        for g in graphs:
            v = g.outputs[i]
            t = v.type
            if not isinstance(t, TensorType) or not t.dtype.is_float:
                best = None
                break
            for n in _ancestors(v.node):
                for ot in n.out_types:
                    if isinstance(ot, TensorType) and ot.dtype.is_float:
                        best = _looser(best, ot.dtype)
        out.append(best)
    return out


def _ancestors(root: Node) -> list[Node]:
    from .ir.graph import toposort

    return toposort([root])


def _json_float(x: float) -> float | str:
    return x if np.isfinite(x) else str(x)


# ---- inputs ------------------------------------------------------------------------------------
# generated by graphopt.inputs (make_inputs, symbol_sizes, index_bounds are re-exported above)

def load_inputs(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read inputs from an ``.npz`` file (one array per input name)."""
    from .errors import FrontendError

    p = os.fspath(path)
    if not os.path.exists(p):
        raise FrontendError("inputs file not found", where=p)
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except (ValueError, OSError) as e:
        raise FrontendError(f"not a readable .npz file: {e}", where=p) from e


def input_defaults(g: Graph) -> dict[str, np.ndarray]:
    """The values of the inputs that have a default (IR >= 4 ONNX initializers listed as graph
    inputs): what runs when they are not fed."""
    return {n.attrs["name"]: n.attrs["default"].array for n in g.inputs
            if n.attrs.get("default") is not None}


def coerce_inputs(g: Graph, inputs: "Mapping[str, Any] | str | os.PathLike[str] | None",
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for ``g``: generated when None, else read/validated against the graph inputs."""
    if inputs is None:
        _refuse_huge_inputs(g)
        return {**make_inputs(g, seed), **input_defaults(g)}
    from .frontends.onnx_values import coerce_value

    feeds = load_inputs(inputs) if isinstance(inputs, (str, os.PathLike)) else dict(inputs)
    feeds = {**input_defaults(g), **feeds}  # overridable initializers not given: defaults
    missing = [n for n in g.input_names if n not in feeds]
    if missing:
        raise CheckError(f"inputs lack {missing} (given: {sorted(feeds)})",
                         where=f"input {missing[0]!r}")
    extra = [k for k in feeds if k not in g.input_names]
    if extra:
        raise CheckError(f"inputs have unknown names {extra} (graph inputs: "
                         f"{list(g.input_names)})", where=f"input {extra[0]!r}")
    # arrays checked against the input dtypes; strings, sequences (lists), optionals (None
    # when empty) and maps (dicts) put in the form ONNX Runtime takes
    return {n: coerce_value(n, t, feeds[n]) for n, t in zip(g.input_names, g.input_types)}


GENERATE_LIMIT_BYTES = 1 << 30  # the largest input the check generates


def _refuse_huge_inputs(g: Graph) -> None:
    """``InputsNeeded`` for an input too large to generate (its static dims alone, symbols
    counted as 1, over ``GENERATE_LIMIT_BYTES``), before anything is allocated."""
    from .inputs.needs import inputs_needed

    for n in g.inputs:
        name, t = n.attrs["name"], n.out_types[0]
        if isinstance(t, TensorType) and t.shape is not None and n.attrs.get("default") is None:
            nbytes = t.static_numel() * t.dtype.itemsize
            if nbytes > GENERATE_LIMIT_BYTES:
                raise inputs_needed(name, f"{t} is {nbytes / 2 ** 30:.3g} GiB, more than the "
                                          f"{GENERATE_LIMIT_BYTES >> 30} GiB the check generates")


def describe_inputs(feeds: Mapping[str, Any]) -> dict[str, str]:
    """Each input's type as ``f32[2,3]`` (``seq(...)``, ``none``, ``map(n)`` for the rest)."""
    from .frontends.onnx_values import describe_value

    return {k: describe_value(v) for k, v in feeds.items()}


# ---- running ------------------------------------------------------------------------------------

ORT_OPTIONS = "ONNX Runtime, default session options"  # what the check's labels say it ran


def onnx_session(model: Any, *, optimized: bool = True) -> Any:
    """An ONNX Runtime session (CPU) of a model: a path, serialized bytes or a ModelProto.
    optimized: ONNX Runtime's default session options (graph optimizations ``ORT_ENABLE_ALL``,
    what users run); False: no graph optimizations (``ORT_DISABLE_ALL``)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if not optimized:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    src = os.fspath(model) if isinstance(model, (str, os.PathLike)) else (
        model if isinstance(model, bytes) else model.SerializeToString())
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def run_session(sess: Any, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    from .frontends.onnx_values import from_runtime

    want = {i.name for i in sess.get_inputs()}
    return [from_runtime(x) for x in sess.run(None, {k: v for k, v in feeds.items()
                                                      if k in want})]


def run_onnx(model: Any, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run an ONNX model (path, serialized bytes or ModelProto) in ONNX Runtime (CPU, default
    session options). A model file's outputs on the same inputs are remembered
    (``check_cache``: the same file as it is now, the same input bytes): the original of a
    check runs once."""
    from .check_cache import cached_run

    return cached_run(model, feeds, lambda: run_session(onnx_session(model), feeds))


def run_graph(g: Graph, feeds: Mapping[str, np.ndarray], backend: str = "numpy"
              ) -> list[np.ndarray]:
    """Run an IR graph: ``numpy`` (reference interpreter), ``onnx`` (export + ONNX Runtime) or
    ``torch`` (the torch callable)."""
    if backend == "numpy":
        from .ir.interp import NumpyInterpreter

        return [np.asarray(x) for x in NumpyInterpreter().run(g, feeds)]
    if backend == "onnx":
        return run_onnx_graph(g, feeds)
    if backend == "torch":
        import torch

        from .frontends.torch_export import to_callable

        mod = to_callable(g)
        with torch.no_grad():
            outs = mod(*[torch.from_numpy(np.array(feeds[n])) for n in g.input_names])
        return torch_outputs_to_numpy(outs)
    raise ValueError(f"unknown backend {backend!r}: numpy, onnx or torch")


_LARGE_EXPORT_BYTES = 1_500_000_000


def run_onnx_graph(g: Graph, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Export ``g`` to ONNX and run the bytes ``onnx_export.save`` writes in ONNX Runtime
    (default session options; through the written file when it is large)."""
    with onnx_graph_session(g) as sess:
        return run_session(sess, feeds)


@contextlib.contextmanager
def onnx_graph_session(g: Graph) -> Iterator[Any]:
    """An ONNX Runtime session of ``g`` exported (through a temporary file when it is large)."""
    from .frontends import onnx_export

    total = sum(n.const.nbytes for n in g.nodes if n.op == "constant")
    if total < _LARGE_EXPORT_BYTES:
        yield onnx_session(onnx_export.to_bytes(g))
        return
    with tempfile.TemporaryDirectory(prefix="graphopt-check-") as d:
        path = os.path.join(d, "model.onnx")
        onnx_export.save(g, path)
        yield onnx_session(path)


def torch_leaves(outs: Any) -> list[Any]:
    """The tensors of a (nested) torch output, in pytree order."""
    import torch
    from torch.utils._pytree import tree_leaves

    return [x for x in tree_leaves(outs) if isinstance(x, torch.Tensor)]


def torch_outputs_to_numpy(outs: Any) -> list[np.ndarray]:
    return [_torch_to_numpy(x) for x in torch_leaves(outs)]


def _torch_to_numpy(x: Any) -> np.ndarray:
    """The tensor's values as numpy: sparse densified, conjugate / negative views resolved,
    bf16 read as f32."""
    import torch

    x = x.detach().cpu()
    if x.layout != torch.strided:
        x = x.to_dense()
    x = x.resolve_conj().resolve_neg()
    if x.dtype == torch.bfloat16:
        x = x.to(torch.float32)
    return x.numpy()


# ---- comparing ----------------------------------------------------------------------------------

def compare_outputs(expected: Sequence[Any], actual: Sequence[Any], names: Sequence[str],
                    *, rtol: float | None = None, atol: float | None = None,
                    reference: str = "", dtypes: Sequence[DType | None] | None = None,
                    min_sqnr_db: float | None = None) -> CheckResult:
    """Compare outputs pairwise (no raising; see ``CheckResult.raise_if_failed``).
    ``dtypes``: per float output, a dtype whose (looser) tolerance applies too: the precision
    it was computed in (``precision_dtypes``), or bf16 for torch outputs read as f32.
    ``min_sqnr_db``: float outputs are judged by their signal-to-quantization-noise ratio
    10 log10(sum e^2 / sum (a - e)^2) instead (a quantized model against its float original):
    it must reach this many dB; NaN / inf positions must still match."""
    if len(expected) != len(actual):
        raise CheckError(f"the original has {len(expected)} outputs, the optimized model "
                         f"{len(actual)}", where="outputs")
    dts = list(dtypes) if dtypes is not None else [None] * len(expected)
    diffs = [_compare_value(str(nm), e, a, rtol, atol, dt, min_sqnr_db)
             for nm, e, a, dt in zip(names, expected, actual, dts)]
    return CheckResult(diffs, reference=reference)


def _compare_value(name: str, e: Any, a: Any, rtol: float | None, atol: float | None,
                   tol_dtype: DType | None, min_sqnr_db: float | None) -> OutputDiff:
    """``_compare_one`` of two arrays, or of the arrays at the leaves of two sequences / maps /
    optionals (their structures must match; the first differing leaf is reported)."""
    from .frontends.onnx_values import is_structured, leaves

    if not (is_structured(e) or is_structured(a)):
        return _compare_one(name, np.asarray(e), np.asarray(a), rtol, atol, tol_dtype,
                            min_sqnr_db)
    worst = OutputDiff(name, "value", [], 0.0, 0.0, 0, True)
    for leaf in leaves(name, e, a):
        if isinstance(leaf, str):
            return OutputDiff(name, "value", [], float("inf"), float("inf"), 1, False,
                              f"structure differs at {leaf}")
        d = _compare_one(*leaf, rtol, atol, None, None)
        if not d.ok:
            return d
        worst.max_abs, worst.max_rel = max(worst.max_abs, d.max_abs), max(worst.max_rel,
                                                                           d.max_rel)
    return worst


def sqnr_db(expected: np.ndarray, actual: np.ndarray) -> float:
    """``quant.numerics.sqnr_db`` over the positions where both are finite."""
    from .quant.numerics import sqnr_db as sqnr

    e64 = np.asarray(expected, dtype=np.float64)
    a64 = np.asarray(actual, dtype=np.float64)
    fin = np.isfinite(e64) & np.isfinite(a64)
    return sqnr(e64[fin], a64[fin])


def _compare_one(name: str, e: np.ndarray, a: np.ndarray, rtol: float | None,
                 atol: float | None, tol_dtype: DType | None = None,
                 min_sqnr_db: float | None = None) -> OutputDiff:
    try:
        dt = DType.from_numpy(e.dtype)
    except TypeError:
        dt = DType.string
    tol_dt = (_looser(dt, tol_dtype) or dt) if tol_dtype is not None and dt.is_float else dt
    shape = [int(d) for d in e.shape]

    def bad(reason: str, n: int = -1, max_abs: float = float("inf"),
            max_rel: float = float("inf")) -> OutputDiff:
        return OutputDiff(name, dt.value, shape, max_abs, max_rel, n, False, reason)

    if e.shape != a.shape:
        return bad(f"shape {list(a.shape)}, expected {shape}")
    if e.dtype != a.dtype:
        return bad(f"dtype {a.dtype}, expected {e.dtype}")
    tol = tolerance(tol_dt)
    if tol is None or e.dtype == object:
        neq = int(np.count_nonzero(e != a)) if e.size else 0
        if neq:
            return bad(f"{neq} of {e.size} elements differ (exact dtype)", neq,
                       _int_max_abs(e, a), float("nan"))
        return OutputDiff(name, dt.value, shape, 0.0, 0.0, 0, True)
    if min_sqnr_db is not None and not np.iscomplexobj(e):
        return _compare_sqnr(name, dt, shape, e, a, min_sqnr_db)
    rt = tol.rtol if rtol is None else rtol
    at = tol.atol if atol is None else atol
    if np.iscomplexobj(e):
        e = np.concatenate([e.real.ravel(), e.imag.ravel()])  # (ravel: 0-d complex too)
        a = np.concatenate([a.real.ravel(), a.imag.ravel()])
    e64, a64 = e.astype(np.float64), a.astype(np.float64)
    nan_e, nan_a = np.isnan(e64), np.isnan(a64)
    inf_e, inf_a = np.isinf(e64), np.isinf(a64)
    fin = ~(nan_e | nan_a | inf_e | inf_a)
    scale = max(1.0, float(np.max(np.abs(e64[fin]))) if fin.any() else 1.0)
    abs_tol = at * scale
    with np.errstate(all="ignore"):
        err = np.where(fin, np.abs(a64 - e64), 0.0)
    allowed = abs_tol + rt * np.abs(np.where(fin, e64, 0.0))
    over = fin & (err > allowed)
    nan_bad = nan_e != nan_a
    inf_bad = (inf_e | inf_a) & ~(nan_e | nan_a) & (e64 != a64)
    max_abs = float(err.max()) if err.size else 0.0
    rel = err / np.maximum(np.abs(np.where(fin, e64, 0.0)), abs_tol)
    max_rel = float(rel.max()) if rel.size else 0.0
    n_bad = int(np.count_nonzero(over | nan_bad | inf_bad))
    if n_bad:
        parts = []
        if over.any():
            parts.append(f"{int(over.sum())} elements beyond rtol {rt:g} / atol {abs_tol:g}")
        if nan_bad.any():
            parts.append(f"NaN at {int(nan_bad.sum())} differing positions")
        if inf_bad.any():
            parts.append(f"inf differs at {int(inf_bad.sum())} positions")
        return OutputDiff(name, dt.value, shape, max_abs, max_rel, n_bad, False,
                          ", ".join(parts) + f" (max abs {max_abs:.3g}, max rel {max_rel:.3g})")
    return OutputDiff(name, dt.value, shape, max_abs, max_rel, 0, True)


def _compare_sqnr(name: str, dt: DType, shape: list[int], e: np.ndarray, a: np.ndarray,
                  min_db: float) -> OutputDiff:
    e64, a64 = e.astype(np.float64), a.astype(np.float64)
    fin = np.isfinite(e64) & np.isfinite(a64)
    same_special = bool(np.array_equal(np.isnan(e64), np.isnan(a64)) and np.array_equal(
        np.where(np.isinf(e64), e64, 0.0), np.where(np.isinf(a64), a64, 0.0)))
    err = np.where(fin, np.abs(a64 - e64), 0.0)
    max_abs = float(err.max()) if err.size else 0.0
    denom = np.maximum(np.abs(np.where(fin, e64, 0.0)), 1e-12)
    max_rel = float((err / denom).max()) if err.size else 0.0
    db = sqnr_db(e64, a64)
    ok = same_special and db >= min_db
    reason = "" if ok else (f"SQNR {db:.1f} dB below the budget {min_db:g} dB"
                            if same_special else "NaN / inf positions differ")
    return OutputDiff(name, dt.value, shape, max_abs, max_rel, 0 if ok else int(e.size), ok,
                      reason, db)


def _int_max_abs(e: np.ndarray, a: np.ndarray) -> float:
    if e.dtype.kind in "iub":
        return float(np.max(np.abs(e.astype(np.float64) - a.astype(np.float64))))
    return float("nan")


# ---- entry points -------------------------------------------------------------------------------

def check_graphs(reference: Graph, candidate: Graph, inputs: Any = None, *, seed: int = 0,
                 backend: str = "numpy", rtol: float | None = None, atol: float | None = None,
                 raise_on_mismatch: bool = True, min_sqnr_db: float | None = None
                 ) -> CheckResult:
    """Run both graphs on the same inputs (reference interpreter by default) and compare."""
    _same_signature(reference, candidate)
    feeds = coerce_inputs(reference, inputs, seed)
    exp = run_graph(reference, feeds, "numpy")
    act = run_graph(candidate, feeds, backend)
    res = compare_outputs(exp, act, reference.output_names, rtol=rtol, atol=atol,
                          reference="the original graph (reference interpreter)",
                          dtypes=precision_dtypes(reference, candidate),
                          min_sqnr_db=min_sqnr_db)
    res.inputs = describe_inputs(feeds)
    if raise_on_mismatch:
        res.raise_if_failed()
    return res


def check_onnx(original: Any, candidate: "Graph | Any", inputs: Any = None, *,
               graph_for_inputs: Graph | None = None, seed: int = 0,
               rtol: float | None = None, atol: float | None = None,
               raise_on_mismatch: bool = True, min_sqnr_db: float | None = None
               ) -> CheckResult:
    """Compare an ONNX model (path or ModelProto, run in ONNX Runtime) with a candidate: an IR
    graph (exported and run in ONNX Runtime) or another ONNX model."""
    gi = graph_for_inputs if graph_for_inputs is not None else (
        candidate if isinstance(candidate, Graph) else None)
    if gi is None:
        from .frontends.onnx import load

        gi = load(candidate if not isinstance(candidate, Graph) else original)
    feeds = coerce_inputs(gi, inputs, seed)
    label = _label(original, "the ONNX model")
    try:
        exp = _run_input_model(original, feeds, label, "the original model")
    except GraphOptError as e:
        if inputs is not None or not _loads(original):
            raise
        raise rejected_inputs(gi, seed, str(e.__cause__ or e.message)) from e  # inputs' fault
    act = run_onnx_graph(candidate, feeds) if isinstance(candidate, Graph) else \
        _run_input_model(candidate, feeds, _label(candidate, "the other ONNX model"),
                         "the model to compare")
    same = len(gi.outputs) == len(exp)
    names = gi.output_names if same else [f"out{i}" for i in range(len(exp))]
    graphs = [gi] + ([candidate] if isinstance(candidate, Graph) else [])
    dts = precision_dtypes(*graphs) if same and all(
        len(g.outputs) == len(exp) for g in graphs) else None
    res = compare_outputs(exp, act, names, rtol=rtol, atol=atol, dtypes=dts,
                          reference=f"{label} ({ORT_OPTIONS})", min_sqnr_db=min_sqnr_db)
    res.inputs = describe_inputs(feeds)
    if raise_on_mismatch:
        res.raise_if_failed()
    return res


def _label(model: Any, default: str) -> str:
    return os.fspath(model) if isinstance(model, (str, os.PathLike)) else default


def _loads(model: Any) -> bool:
    """Does ONNX Runtime open the model (so failing to run it is about the inputs)?"""
    try:
        onnx_session(model)
    except Exception:  # any refusal of the model itself: the caller re-raises its own error
        return False
    return True


def _run_input_model(model: Any, feeds: Mapping[str, np.ndarray], label: str, what: str
                     ) -> list[np.ndarray]:
    """Run a user-given ONNX model; failing to run is a property of the input (FrontendError)."""
    from .errors import FrontendError

    try:
        return run_onnx(model, feeds)
    except Exception as e:
        msg = " ".join(str(e).split())[:500] or type(e).__name__
        raise FrontendError(f"ONNX Runtime cannot run {what}, so it cannot be checked (skip "
                            f"the check to optimize anyway): {msg}", where=label) from e


def check_torch(module: Any, candidate: Graph, example_inputs: Sequence[Any] | None = None,
                inputs: Any = None, *, seed: int = 0, rtol: float | None = None,
                atol: float | None = None, raise_on_mismatch: bool = True,
                min_sqnr_db: float | None = None) -> CheckResult:
    """Compare a torch module with a candidate graph run through its torch callable, on the
    example inputs (or on given / generated inputs). A candidate carrying the module's output
    structure (recorded at lift) must return it (named tuple types, containers, dtypes, shapes:
    a difference is a ``CheckError``); then the tensors are compared. Both run from the same
    torch RNG state (seeded with ``seed``), so random ops called in the same order agree."""
    import torch

    from .frontends.fx_outputs import structure_diff
    from .frontends.torch_export import has_out_spec, to_callable

    if inputs is None and example_inputs is not None:
        args = list(example_inputs)
        desc = {n: f"{DType.from_torch(x.dtype).value}[{','.join(map(str, x.shape))}]"
                for n, x in zip(candidate.input_names, args) if isinstance(x, torch.Tensor)}
    else:
        feeds = coerce_inputs(candidate, inputs, seed)
        args = [torch.from_numpy(np.array(feeds[n])) for n in candidate.input_names]
        desc = describe_inputs(feeds)
    want = seeded_call(module, args, seed)
    got = seeded_call(to_callable(candidate), args, seed)
    # the structure is compared when the candidate carries one (the module's, recorded at
    # lift); a graph read back from ONNX files has a flat list of outputs, compared leaf by leaf
    diff = structure_diff(want, got) if has_out_spec(candidate) else None
    if diff:
        raise CheckError(f"the optimized model's {diff}",
                         where=f"{type(module).__name__} (torch)")
    exp_t, act_t = torch_leaves(want), torch_leaves(got)
    dts: list[DType | None] = [DType.from_torch(x.dtype) for x in exp_t]
    if len(candidate.outputs) == len(dts):
        dts = [d if p is None else _looser(d, p)
               for d, p in zip(dts, precision_dtypes(candidate))]
    res = compare_outputs([_torch_to_numpy(x) for x in exp_t], [_torch_to_numpy(x) for x in act_t],
                          candidate.output_names, rtol=rtol, atol=atol, dtypes=dts,
                          reference=f"{type(module).__name__} (torch)", min_sqnr_db=min_sqnr_db)
    res.inputs = desc
    if raise_on_mismatch:
        res.raise_if_failed()
    return res


def seeded_call(fn: Any, args: Sequence[Any], seed: int = 0) -> Any:
    """``fn(*args)`` without autograd, from torch's RNG seeded with ``seed`` (the caller's
    RNG state is restored after)."""
    import torch

    with torch.random.fork_rng(), torch.no_grad():  # (CUDA states too, when in use)
        torch.manual_seed(seed)
        return fn(*args)


def _same_signature(a: Graph, b: Graph) -> None:
    if a.input_names != b.input_names:
        raise CheckError(f"inputs differ: {list(a.input_names)} vs {list(b.input_names)}",
                         where="inputs")
    if len(a.outputs) != len(b.outputs):
        raise CheckError(f"the original has {len(a.outputs)} outputs, the optimized graph "
                         f"{len(b.outputs)}", where="outputs")
