"""rotary_embedding: the reference against a per-element rotation, batch-1 caches against
per-sequence ones, typing errors; ONNX export as RotaryEmbedding (opset 23, static and symbolic
batch) and as the composition below 23, run in ONNX Runtime; ONNX RotaryEmbedding import (and the
forms kept opaque); the Triton lowering keeps it as a torch op with a reason."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from graphopt.errors import ShapeError
from graphopt.ir.graph import Graph, GraphMeta
from graphopt.ir.interp import run
from graphopt.ir.node import Node, input_node
from graphopt.ir.types import DType, TensorType
from tests.ops.op_testing import check_export, check_import, graph_of, onnx_model, ort_run

RNG = np.random.default_rng(7)


def x_cs(b: int, h: int, s: int, d: int, cb: int | None = None,
         dt: Any = np.float32) -> list[np.ndarray]:
    ang = RNG.standard_normal((b if cb is None else cb, s, d // 2))
    return [RNG.standard_normal((b, h, s, d)).astype(dt), np.cos(ang).astype(dt),
            np.sin(ang).astype(dt)]


def rotate_pairs(x: np.ndarray, c: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Element by element: dims i and i + D/2 of each head are rotated by the angle of (c, s)."""
    b, nh, seq, d = x.shape
    h = d // 2
    y = np.zeros_like(x, dtype=np.float64)
    for bi in range(b):
        for t in range(seq):
            cb = c[bi if c.shape[0] > 1 else 0, t]
            sb = s[bi if s.shape[0] > 1 else 0, t]
            for i in range(h):
                x1, x2 = x[bi, :, t, i].astype(np.float64), x[bi, :, t, i + h].astype(np.float64)
                y[bi, :, t, i] = x1 * cb[i] - x2 * sb[i]
                y[bi, :, t, i + h] = x2 * cb[i] + x1 * sb[i]
    return y


@pytest.mark.parametrize("shape, cb", [
    ((2, 3, 5, 8), None), ((2, 2, 4, 6), 1), ((1, 1, 1, 2), None), ((3, 1, 7, 10), 1)])
def test_reference_is_a_rotation_of_half_pairs(shape: tuple, cb: int | None) -> None:
    x, c, s = x_cs(*shape, cb=cb)
    g, feeds = graph_of("rotary_embedding", [x, c, s])
    y = run(g, **feeds)[0]
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, rotate_pairs(x, c, s), rtol=1e-5, atol=1e-6)


def test_batch1_cache_equals_the_cache_repeated_per_sequence() -> None:
    x, c, s = x_cs(3, 2, 4, 8, cb=1)
    g1, f1 = graph_of("rotary_embedding", [x, c, s])
    rep = [np.repeat(a, 3, axis=0) for a in (c, s)]
    g3, f3 = graph_of("rotary_embedding", [x, *rep])
    np.testing.assert_array_equal(run(g1, **f1)[0], run(g3, **f3)[0])


def test_torch_aspect_is_bitwise_the_numpy_one() -> None:
    import torch

    from graphopt.ops.registry import get_op

    op = get_op("rotary_embedding")
    x, c, s = x_cs(2, 3, 5, 8, cb=1)
    want = op.numpy([x, c, s], {})[0]
    got = op.torch([torch.from_numpy(a) for a in (x, c, s)], {})[0].numpy()
    np.testing.assert_array_equal(got, want)


def _v(name: str, *shape: Any, dt: DType = DType.f32) -> Any:
    return input_node(name, TensorType(tuple(shape), dt)).out


@pytest.mark.parametrize("x, c, why", [
    ((2, 2, 4, 7), (2, 4, 3), "even"),  # odd head size
    ((2, 2, 4, 8), (2, 4, 8), "must be"),  # full-width cache
    ((2, 2, 4, 8), (3, 4, 4), "must be"),  # cache batch neither 1 nor B
    ((2, 2, 4, 8), (2, 2, 4, 4), "must be"),  # a per-head cache
    ((2, 4, 8), (2, 4, 4), r"\[B, H, S, D\]"),  # 3-D x
])
def test_bad_shapes_are_refused(x: tuple, c: tuple, why: str) -> None:
    with pytest.raises(ShapeError, match=why):
        Node.build("rotary_embedding", (_v("x", *x), _v("c", *c), _v("s", *c)), {})


def test_mixed_dtypes_and_attrs_are_refused() -> None:
    x, c = _v("x", 1, 2, 3, 4), _v("c", 1, 3, 2)
    with pytest.raises(ShapeError, match="dtype"):
        Node.build("rotary_embedding", (x, c, _v("s", 1, 3, 2, dt=DType.f16)), {})
    with pytest.raises(ShapeError, match="no attributes"):
        Node.build("rotary_embedding", (x, c, c), {"interleaved": 1})


# ---- ONNX export ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, cb", [((2, 3, 5, 8), None), ((2, 2, 4, 6), 1),
                                       ((1, 4, 3, 2), None), ((1, 2, 9, 16), 1)])
def test_export_opset23_is_one_rotary_embedding(shape: tuple, cb: int | None) -> None:
    arrays = x_cs(*shape, cb=cb)
    g, feeds = graph_of("rotary_embedding", arrays)
    ops = check_export(g, feeds, 23)
    assert ops.count("RotaryEmbedding") == 1
    # ONNX Runtime does not broadcast a batch-1 cache: expanded to x's batch first
    expand = cb == 1 and shape[0] > 1
    assert ops.count("Expand") == (2 if expand else 0), ops
    np.testing.assert_allclose(ort_run(_model(g, 23), feeds)[0], rotate_pairs(*arrays),
                               rtol=1e-5, atol=1e-6)


def _model(g: Graph, opset: int) -> Any:
    from graphopt.frontends.onnx_export import to_model

    return to_model(Graph(g.inputs, g.outputs, g.output_names,
                          meta=GraphMeta(opsets=(("", opset),))), opset=opset)


@pytest.mark.parametrize("opset", [13, 18, 22])
@pytest.mark.parametrize("cb", [None, 1])
def test_export_below_23_is_the_composition(opset: int, cb: int | None) -> None:
    arrays = x_cs(2, 3, 5, 8, cb=cb)
    g, feeds = graph_of("rotary_embedding", arrays)
    ops = check_export(g, feeds, opset, rtol=0, atol=0)  # the same ops in the same order
    assert "RotaryEmbedding" not in ops and ops.count("Neg") == 1, ops


def test_export_f64_is_the_composition_at_23() -> None:
    arrays = x_cs(1, 2, 3, 4, dt=np.float64)
    g, feeds = graph_of("rotary_embedding", arrays)
    assert "RotaryEmbedding" not in check_export(g, feeds, 23)  # RotaryEmbedding has no f64


def test_export_symbolic_batch_expands_the_cache_at_run_time() -> None:
    x = input_node("x", TensorType(("batch", 2, "seq", 8), DType.f32))
    c = input_node("c", TensorType((1, "seq", 4), DType.f32))
    s = input_node("s", TensorType((1, "seq", 4), DType.f32))
    y = Node.build("rotary_embedding", (x.out, c.out, s.out), {})
    g = Graph([x, c, s], [y.out])
    m = _model(g, 23)
    assert [n.op_type for n in m.graph.node].count("RotaryEmbedding") == 1
    for b, seq in ((1, 3), (4, 6)):
        arrays = x_cs(b, 2, seq, 8, cb=1)
        feeds = dict(zip(("x", "c", "s"), arrays))
        got = ort_run(m, feeds)[0]
        np.testing.assert_allclose(got, run(g, **feeds)[0], rtol=1e-5, atol=1e-6)


# ---- ONNX import ------------------------------------------------------------------------------

def test_import_onnx_rotary_embedding() -> None:
    x, c, s = x_cs(2, 3, 5, 8)
    m = onnx_model("RotaryEmbedding", dict(x=x, c=c, s=s), ["x", "c", "s"], 23)
    g = check_import(m, dict(x=x, c=c, s=s), {"rotary_embedding": 1})
    x, c, s = x_cs(1, 2, 4, 6)
    m = onnx_model("RotaryEmbedding", dict(x=x, c=c, s=s), ["x", "c", "s"], 23,
                   rotary_embedding_dim=6)
    check_import(m, dict(x=x, c=c, s=s), {"rotary_embedding": 1})
    assert g.nodes[-1].op == "rotary_embedding"


@pytest.mark.parametrize("kind, why", [("position_ids", "position_ids"),
                                       ("interleaved", "interleaved=1"),
                                       ("partial", "partial rotary_embedding_dim=4"),
                                       ("3d", "not 4-D")])
def test_other_onnx_forms_stay_opaque(kind: str, why: str) -> None:
    from graphopt.frontends.onnx import load_with_report

    x, c, s = x_cs(2, 2, 4, 8)
    feeds: dict[str, np.ndarray] = dict(x=x, c=c, s=s)
    names = ["x", "c", "s"]
    attrs: dict[str, Any] = {}
    if kind == "position_ids":
        ang = RNG.standard_normal((16, 4))
        feeds = dict(x=x, c=np.cos(ang).astype(np.float32), s=np.sin(ang).astype(np.float32),
                     p=RNG.integers(0, 16, (2, 4)).astype(np.int64))
        names = ["x", "c", "s", "p"]
    elif kind == "interleaved":
        attrs = {"interleaved": 1}
    elif kind == "partial":
        ang = RNG.standard_normal((2, 4, 2))
        feeds = dict(x=x, c=np.cos(ang).astype(np.float32), s=np.sin(ang).astype(np.float32))
        attrs = {"rotary_embedding_dim": 4}
    else:
        feeds["x"] = x.transpose(0, 2, 1, 3).reshape(2, 4, 16)
        attrs = {"num_heads": 2}
    m = onnx_model("RotaryEmbedding", feeds, names, 23, **attrs)
    check_import(m, feeds, {"opaque:RotaryEmbedding": 1})  # runs in ONNX Runtime as is
    _, report = load_with_report(m)
    assert len(report.opaque) == 1 and why in report.opaque[0].reason, report.summary()


# ---- codegen ----------------------------------------------------------------------------------

def test_triton_lowering_keeps_it_as_a_torch_op() -> None:
    import torch

    from graphopt.codegen.runtime import compile_graph

    arrays = x_cs(2, 2, 4, 8, cb=1)
    g, feeds = graph_of("rotary_embedding", arrays)
    rt = compile_graph(g, "a100", interpret=True)
    assert not rt.lowered.kernels
    assert "no Triton expression" in next(iter(rt.lowered.kept.values()))
    with torch.no_grad():
        got = rt(*(torch.from_numpy(a) for a in arrays))
    got = got[0] if isinstance(got, (tuple, list)) else got
    np.testing.assert_array_equal(got.numpy(), run(g, **feeds)[0])
