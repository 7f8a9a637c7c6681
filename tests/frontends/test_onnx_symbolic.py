"""Symbolic shapes end to end: the importer follows Shape -> Gather -> Concat chains of models
exported with dynamic axes (graphopt.frontends.onnx_symbolic), op importers read the dims through
``ctx.dims``, and the exporter rebuilds symbolic targets at run time (``ExportCtx.sym_dim``).
"""
from __future__ import annotations

import collections
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt.frontends import onnx_export as ex
from graphopt.frontends.onnx import load, load_with_report
from graphopt.frontends.onnx_symbolic import SymValue, from_const, propagate, range_length
from graphopt.ir.graph import Graph
from graphopt.ir.interp import run
from graphopt.ir.node import input_node, op
from graphopt.ir.types import DType, TensorType

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning",
                                        "ignore::DeprecationWarning",
                                        "ignore::UserWarning")

TOL = 1e-4
I64 = DType.i64


def _ort(model: onnx.ModelProto | Path | str, feeds: dict[str, Any]) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"]).run(None, feeds)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / max(np.abs(b).max(), 1e-12))


def _sv(*elems: Any, scalar: bool = False) -> SymValue:
    return SymValue(I64, () if scalar else (len(elems),), tuple(elems))


def _syms(g: Graph) -> set[str]:
    out: set[str] = set()
    for n in g.nodes:
        for t in n.out_types:
            if isinstance(t, TensorType) and t.shape is not None:
                out.update(d for d in t.shape if isinstance(d, str))
    return out


# ---- the value rules --------------------------------------------------------------------------

def _one(op_type: str, attrs: dict[str, Any], ins: list[SymValue | None],
         tys: list[Any] | None = None) -> SymValue | None:
    r = propagate(op_type, attrs, ins, tys if tys is not None else [None] * len(ins), 1)
    return None if r is None else r[0]


def test_shape_gather_concat_rules() -> None:
    x = TensorType(("batch", "seq", 64), DType.f32)
    shp = _one("Shape", {}, [None], [x])
    assert shp == _sv("batch", "seq", 64)
    assert _one("Shape", {"start": 1, "end": -1}, [None], [x]) == _sv("seq")
    b = _one("Gather", {"axis": 0}, [shp, _sv(0, scalar=True)])
    assert b == _sv("batch", scalar=True)
    assert _one("Gather", {}, [shp, _sv(-1)]) == _sv(64)
    ub = _one("Unsqueeze", {"axes": [0]}, [b])
    assert ub == _sv("batch")
    assert _one("Squeeze", {}, [ub, _sv(0)]) == b
    # an unknown piece of known length keeps the others known
    cat = _one("Concat", {"axis": 0}, [ub, None, _sv(-1)], [None, TensorType((1,), I64), None])
    assert cat is not None and cat.elems == ("batch", None, -1) and cat.dims() is None
    sl = _one("Slice", {}, [shp, _sv(1), _sv(2**63 - 1)])
    assert sl == _sv("seq", 64)
    c32 = _one("Cast", {"to": TensorProto.INT32}, [sl])
    assert c32 is not None and c32.dtype == DType.i32 and c32.elems == ("seq", 64)
    assert _one("Cast", {"to": TensorProto.FLOAT}, [sl]) is None  # symbols as floats: no
    assert _one("Shape", {}, [None], [TensorType(None, DType.f32)]) is None


def test_arithmetic_rules() -> None:
    def bin(op_type: str, a: SymValue, b: SymValue) -> SymValue | None:
        return _one(op_type, {}, [a, b])

    assert bin("Mul", _sv("batch", scalar=True), _sv("seq", scalar=True)) == \
        _sv("batch*seq", scalar=True)
    assert bin("Mul", _sv("seq", 12), _sv(64)) == _sv("_x64*seq", 768)
    assert bin("Div", _sv("batch*seq"), _sv("seq")) == _sv("batch")
    assert bin("Div", _sv(-7), _sv(2)) == _sv(-3)  # integer Div truncates toward zero
    assert bin("Div", _sv("seq"), _sv(2)) is None  # not representable
    assert bin("Add", _sv("seq"), _sv(0)) == _sv("seq")
    assert bin("Add", _sv("seq"), _sv("batch")) is None  # sums of symbols are unknown
    assert bin("Sub", _sv("seq"), _sv("seq")) == _sv(0)
    assert bin("Mul", _sv("seq"), _sv(-1)) is None
    assert bin("Equal", _sv("seq", 4), _sv(-1)) == SymValue(DType.bool, (2,), (0, 0))
    cond = SymValue(DType.bool, (2,), (1, 0))
    assert _one("Where", {}, [cond, _sv(1, 1), _sv("seq", 4)]) == _sv(1, 4)
    assert range_length([_sv(0, scalar=True), _sv("seq", scalar=True),
                         _sv(1, scalar=True)]) == "seq"
    assert range_length([_sv(2, scalar=True), _sv(9, scalar=True), _sv(3, scalar=True)]) == 3
    assert range_length([_sv(1, scalar=True), _sv("seq", scalar=True),
                         _sv(1, scalar=True)]) is None
    assert from_const(np.zeros((2, 2), np.int64)) is None  # not a shape vector


# ---- a hand-built exported-style chain --------------------------------------------------------

def _i64(name: str, *values: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _chain_model() -> onnx.ModelProto:
    """x[batch, seq, 8]: flatten to [batch*seq, 8] through Shape/Gather/Mul/Concat, a matmul, back
    to [batch, seq, 2, 8] through Shape/Slice/Concat, plus x[:, :seq] and Expand to a
    ConstantOfShape-built shape; the way torch's exporters write these."""
    n = helper.make_node
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 16))
                                .astype(np.float32), "w")
    nodes = [
        n("Shape", ["x"], ["shp"]),
        n("Gather", ["shp", "i0"], ["b"], axis=0),
        n("Gather", ["shp", "i1"], ["s"], axis=0),
        n("Mul", ["b", "s"], ["bs"]),
        n("Unsqueeze", ["bs", "ax0"], ["bs1"]),
        n("Concat", ["bs1", "c8"], ["flat_shape"], axis=0),
        n("Reshape", ["x", "flat_shape"], ["flat"]),
        n("MatMul", ["flat", "w"], ["h"]),
        n("Shape", ["x"], ["shp2"], start=0, end=2),
        n("Cast", ["shp2"], ["shp2c"], to=TensorProto.INT64),
        n("Concat", ["shp2c", "c2m1"], ["split_shape"], axis=0),
        n("Reshape", ["h", "split_shape"], ["y"]),
        # x[:, :seq] with the bound read from the shape
        n("Slice", ["shp", "i1v", "i2v"], ["seqv"]),
        n("Slice", ["x", "z1", "seqv", "i1v"], ["xs"]),
        # ConstantOfShape([batch, 1, 1]) then Expand to the shape of x
        n("Unsqueeze", ["b", "ax0"], ["b1"]),
        n("Concat", ["b1", "ones2"], ["cos_shape"], axis=0),
        n("ConstantOfShape", ["cos_shape"], ["ones"],
          value=numpy_helper.from_array(np.array([2.0], np.float32))),
        n("Expand", ["ones", "shp"], ["e"]),
        n("Mul", ["xs", "e"], ["z"]),
    ]
    inits = [w, _i64("i0", 0), _i64("i1", 1), _i64("ax0", 0), _i64("c8", 8),
             _i64("c2m1", 2, -1), _i64("i1v", 1), _i64("i2v", 2), _i64("z1", 0),
             _i64("ones2", 1, 1)]
    inits[1] = numpy_helper.from_array(np.array(0, np.int64), "i0")  # 0-D indices
    inits[2] = numpy_helper.from_array(np.array(1, np.int64), "i1")
    g = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", 2, 8]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["b", "s", 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_shape_chain_is_followed_and_dies() -> None:
    m = _chain_model()
    g, rep = load_with_report(m)
    assert not [n for n in g.nodes if n.op == "opaque"], rep.summary()
    assert rep.opaque == []  # the dead Shape nodes are not reported
    assert g.output_types[0] == TensorType(("batch", "seq", 2, 8), DType.f32)
    assert g.output_types[1] == TensorType(("batch", "seq", 8), DType.f32)
    assert _syms(g) <= {"batch", "seq", "batch*seq"}  # no unk__N from ONNX inference
    counts = g.op_counts()
    # ConstantOfShape of a symbolic shape is a broadcast scalar: two expands
    assert counts["reshape"] == 2 and counts["expand"] == 2
    # x[:, :seq] on an axis of size seq keeps it whole: a slice with nothing to cut
    (sl,) = [n for n in g.nodes if n.op == "slice"]
    assert sl.attrs["axes"] == () and sl.out_types[0] == g.inputs[0].out_types[0]
    out = ex.to_model(g)
    onnx.checker.check_model(out, full_check=True)
    for b, s in ((2, 3), (1, 5)):
        x = np.random.default_rng(b).standard_normal((b, s, 8)).astype(np.float32)
        want = _ort(m, {"x": x})
        got = _ort(out, {"x": x})
        for a, r in zip(got, want):
            assert a.shape == r.shape
            np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-6)


def test_unknown_opaque_dims_come_from_inputs() -> None:
    """An op graphopt does not model keeps its ONNX type, but dims ONNX could not infer are
    taken from what graphopt proves (here: CumSum keeps its input's shape, Range has length
    seq)."""
    n = helper.make_node
    nodes = [n("CumSum", ["x", "ax"], ["c"]),
             n("Shape", ["x"], ["s1"], start=1, end=2),
             n("Squeeze", ["s1", "ax1"], ["s"]),
             n("Range", ["zero", "s", "one"], ["r"]),
             n("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
             n("Add", ["c", "rf"], ["y"])]
    inits = [numpy_helper.from_array(np.array(1, np.int64), "ax"), _i64("ax1", 0),
             numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array(1, np.int64), "one")]
    # a declared-unknown intermediate type, like an exporter's value_info
    vi = [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["unk__9", "unk__10"])]
    g0 = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s"])], inits,
        value_info=vi)
    m = helper.make_model(g0, opset_imports=[helper.make_opsetid("", 17)])
    g = load(m)
    types = {n.attrs["op_type"]: n.out_types[0] for n in g.nodes if n.op == "opaque"}
    assert types["Range"] == TensorType(("seq",), DType.i64)
    assert types["CumSum"] == TensorType(("batch", "seq"), DType.f32)
    assert g.output_types[0] == TensorType(("batch", "seq"), DType.f32)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(_ort(ex.to_model(g), {"x": x})[0], _ort(m, {"x": x})[0])


# ---- the exporter -----------------------------------------------------------------------------

@pytest.mark.parametrize("opset", [13, 17])
def test_reshape_to_symbols_not_in_the_input(opset: int) -> None:
    """[batch*seq, 32] -> [batch, seq, 4, 8]: batch and seq come from the graph input at run
    time (sym_dim, one Shape read per symbol, cached)."""
    x = input_node("x", TensorType(("batch", "seq", 32), DType.f32))
    flat = op("reshape", x.out, shape=("batch*seq", 32))
    h = op("relu", flat)
    y = op("reshape", h, shape=("batch", "seq", 4, 8))
    z = op("reshape", op("neg", h), shape=("batch", "seq", 4, 8))
    g = Graph([x], [y, z], ["y", "z"])
    m = ex.to_model(g, opset=opset)
    onnx.checker.check_model(m, full_check=True)
    shapes = [nd for nd in m.graph.node if nd.op_type == "Shape"]
    assert len(shapes) == 1, [nd.op_type for nd in m.graph.node]  # cached per symbol
    assert bool(shapes[0].attribute) == (opset >= 15)  # start/end from opset 15 only
    for b, s in ((2, 3), (3, 1)):
        xv = np.random.default_rng(s).standard_normal((b, s, 32)).astype(np.float32)
        got = _ort(m, {"x": xv})
        ref = run(g, xv)
        for a, r in zip(got, ref):
            assert a.shape == (b, s, 4, 8)
            np.testing.assert_allclose(a, r, rtol=1e-6)


def test_sym_dim_products_and_missing_source() -> None:
    x = input_node("x", TensorType(("n", "m"), DType.f32))
    y = op("reshape", x.out, shape=("m*n",))
    z = op("expand", op("reshape", y, shape=(1, "m*n")), shape=("n*_x2", "m*n"))
    g = Graph([x], [z], ["z"])
    m = ex.to_model(g)
    xv = np.arange(6, dtype=np.float32).reshape(2, 3)
    (got,) = _ort(m, {"x": xv})
    assert got.shape == (4, 6)
    np.testing.assert_array_equal(got, np.broadcast_to(xv.reshape(1, 6), (4, 6)))
    bad = Graph([x], [op("expand", op("reshape", x.out, shape=(1, "m*n")),
                         shape=("other", "m*n"))], ["z"])
    with pytest.raises(ex.ExportError, match="other"):
        ex.to_model(bad)


@pytest.mark.parametrize("opset", [17, 23])
@pytest.mark.parametrize("causal,masked", [(True, False), (False, True)])
def test_attention_with_symbolic_lengths_exports(opset: int, causal: bool, masked: bool) -> None:
    q = input_node("q", TensorType(("batch", 4, "seq", 8), DType.f32))
    k = input_node("k", TensorType(("batch", 2, "seq", 8), DType.f32))
    v = input_node("v", TensorType(("batch", 2, "seq", 8), DType.f32))
    ins, xs = [q.out, k.out, v.out], [q, k, v]
    if masked:
        mk = input_node("m", TensorType(("batch", 1, 1, "seq"), DType.bool))
        ins.append(mk.out)
        xs.append(mk)
    y = op("attention", *ins, scale=None, causal=causal)
    y = op("reshape", op("transpose", y, perm=(0, 2, 1, 3)), shape=("batch*seq", 32))
    g = Graph(xs, [y], ["y"])
    m = ex.to_model(g, opset=opset)
    for b, s in ((2, 3), (1, 6)):
        rng = np.random.default_rng(s)
        feeds = {n: rng.standard_normal((b, h, s, 8)).astype(np.float32)
                 for n, h in (("q", 4), ("k", 2), ("v", 2))}
        if masked:
            feeds["m"] = rng.random((b, 1, 1, s)) > 0.3
            feeds["m"][..., 0] = True
        (got,) = _ort(m, feeds)
        np.testing.assert_allclose(got, run(g, **feeds)[0], rtol=1e-5, atol=1e-6)


# ---- real models, both torch exporters, dynamic batch and seq ---------------------------------

# What stays opaque, and why (asserted exactly, per model and exporter):
# * Range: a run-time arange (position ids, mask indices) has no IR op; it is typed with its
#   symbolic length so everything downstream is modelled.
# * Shape: the run-time limit of those Range nodes (and of the Slice below).
# * GatherND (dynamo): the mask built by vmap-style advanced indexing has no IR op.
# * BERT: Slice cuts the [1, 32] position buffer to [:, :seq] (a symbolic bound on a static axis
#   is not a slice op attr) and GatherElements reads the token-type buffer (no IR op).
EXPECTED_OPAQUE: dict[tuple[str, str], dict[str, int]] = {
    ("gpt2", "legacy"): {"Range": 3, "Shape": 4},
    ("gpt2", "dynamo"): {"Range": 2, "Shape": 2, "GatherND": 1},
    ("bert", "legacy"): {"Range": 3, "Shape": 5, "Slice": 1, "GatherElements": 1},
    ("bert", "dynamo"): {"Range": 2, "Shape": 2, "Slice": 1, "GatherElements": 1,
                         "GatherND": 1},
    ("llama", "legacy"): {"Range": 3, "Shape": 4},
    ("llama", "dynamo"): {"Range": 2, "Shape": 2, "GatherND": 1},
}
CASES = sorted(EXPECTED_OPAQUE)


def _export(name: str, exporter: str, path: Path) -> None:
    import torch

    from tests import models

    module, inputs, names = models.build(name)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "legacy":
            torch.onnx.export(module, inputs, str(path), input_names=list(names),
                              dynamic_axes={n: {0: "batch", 1: "seq"} for n in names},
                              dynamo=False, opset_version=17)
        else:
            batch = torch.export.Dim("batch", min=1, max=16)
            seq = torch.export.Dim("seq", min=2, max=24)
            prog = torch.onnx.export(module, inputs, input_names=list(names),
                                     dynamic_shapes={n: {0: batch, 1: seq} for n in names},
                                     dynamo=True, verbose=False)
            prog.save(str(path))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("symbolic")
    cache: dict[tuple[str, str], Path] = {}

    def get(name: str, exporter: str) -> Path:
        key = (name, exporter)
        if key not in cache:
            p = d / f"{name}_{exporter}.onnx"
            _export(name, exporter, p)
            cache[key] = p
        return cache[key]
    return get


def _feeds(batch: int, seq: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(batch * 100 + seq)
    mask = np.ones((batch, seq), np.int64)
    mask[-1, seq - 2:] = 0
    return {"input_ids": rng.integers(0, 128, (batch, seq)), "attention_mask": mask}


@pytest.mark.parametrize("name,exporter", CASES)
def test_dynamic_model_loads_modelled_and_optimizes(name: str, exporter: str,
                                                    exported: Any) -> None:
    import graphopt

    path = exported(name, exporter)
    g, rep = load_with_report(path)
    live = collections.Counter(n.attrs["op_type"] for n in g.nodes if n.op == "opaque")
    assert dict(live) == EXPECTED_OPAQUE[(name, exporter)], rep.summary()
    assert collections.Counter(o.op_type for o in rep.opaque) == live
    assert g.op_counts().get("reshape", 0) > 0
    # every dim is one the model declares (or a product of them): none invented by inference
    assert _syms(g) <= {"batch", "seq", "batch*seq"}, sorted(_syms(g))

    om = graphopt.optimize(str(path))
    optimized = om.onnx_model()
    for b, s in ((2, 5), (3, 11)):
        feeds = _feeds(b, s)
        want = _ort(path, feeds)
        got = _ort(optimized, feeds)
        assert len(got) == len(want)
        for i, (a, r) in enumerate(zip(got, want)):
            assert a.shape == r.shape, f"output {i} at batch={b} seq={s}: {a.shape} vs {r.shape}"
            err = _rel(a, r)
            assert err <= TOL, f"output {i} at batch={b} seq={s}: relative error {err:.3g}"
