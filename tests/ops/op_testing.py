"""Helpers for the op family tests: one-node ONNX models run in ONNX Runtime and imported,
IR graphs exported and run, small torch modules lifted through the FX frontend."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from graphopt.ir.graph import Graph, GraphMeta
from graphopt.ir.interp import run
from graphopt.ir.node import Node, input_node
from graphopt.ir.types import DType, TensorType


def onnx_model(op_type: str, feeds: dict[str, np.ndarray], node_inputs: Sequence[str],
               opset: int, *, consts: dict[str, np.ndarray] | None = None,
               outputs: Sequence[tuple] = (("y", None),), **attrs: Any) -> Any:
    """A model of one ONNX node. ``feeds`` become graph inputs, ``consts`` initializers,
    ``node_inputs`` name them ("" for an omitted input); ``outputs`` are (name, numpy dtype or
    None for the first feed's dtype[, shape where ONNX cannot infer it])."""
    import onnx
    from onnx import helper, numpy_helper

    first = next(iter(feeds.values()))
    node = helper.make_node(op_type, list(node_inputs), [o[0] for o in outputs], **attrs)
    ins = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
           for k, v in feeds.items()]
    outs = [helper.make_tensor_value_info(
        o[0], helper.np_dtype_to_tensor_dtype(np.dtype(o[1]) if o[1] is not None
                                              else first.dtype), o[2] if len(o) > 2 else None)
        for o in outputs if o[0]]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (consts or {}).items()]
    g = helper.make_graph([node], "one", ins, outs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = min(m.ir_version, 9)
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)  # fills the outputs' shapes
    onnx.checker.check_model(m)
    return m


def ort_run(model: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def import_onnx(model: Any) -> Graph:
    from graphopt.frontends.onnx import load

    return load(model)


def ops_of(g: Graph) -> dict[str, int]:
    return g.op_counts()


def check_import(model: Any, feeds: dict[str, np.ndarray], expect_ops: dict[str, int] | None,
                 rtol: float = 1e-5, atol: float = 1e-6, ort: bool = True) -> Graph:
    """Import ``model``; check its op counts (when given) and that the IR computes what ONNX
    Runtime computes (``ort=False``: ONNX Runtime has no kernel for this old opset)."""
    g = import_onnx(model)
    if expect_ops is not None:
        assert ops_of(g) == expect_ops, g.to_text()
    if not ort:
        return g
    want = ort_run(model, feeds)
    got = run(g, **feeds)
    for w, o in zip(want, got):
        assert np.asarray(o).dtype == np.asarray(w).dtype
        np.testing.assert_allclose(np.asarray(o, np.float64), np.asarray(w, np.float64),
                                   rtol=rtol, atol=atol, equal_nan=True)
    return g


def graph_of(op: str, arrays: Sequence[np.ndarray], **attrs: Any) -> tuple[Graph, dict]:
    """A graph computing ``op`` over inputs x0, x1, ... shaped like ``arrays``."""
    ins = [input_node(f"x{k}", TensorType(tuple(a.shape), DType.from_numpy(a.dtype)))
           for k, a in enumerate(arrays)]
    node = Node.build(op, [n.out for n in ins], attrs)
    feeds = {f"x{k}": np.asarray(a) for k, a in enumerate(arrays)}
    return Graph(ins, list(node.outputs)), feeds


def export(g: Graph, opset: int) -> Any:
    from graphopt.frontends.onnx_export import to_model

    return to_model(Graph(g.inputs, g.outputs, g.output_names, meta=GraphMeta(
        opsets=(("", opset),))), opset=opset)


def check_export(g: Graph, feeds: dict[str, np.ndarray], opset: int, rtol: float = 1e-5,
                 atol: float = 1e-6) -> list[str]:
    """Export at ``opset``, run in ONNX Runtime, compare with the IR; returns the op types."""
    m = export(g, opset)
    got = ort_run(m, feeds)
    want = run(g, **feeds)
    for w, o in zip(want, got):
        assert np.asarray(o).dtype == np.asarray(w).dtype
        np.testing.assert_allclose(np.asarray(o, np.float64), np.asarray(w, np.float64),
                                   rtol=rtol, atol=atol, equal_nan=True)
    return [n.op_type for n in m.graph.node]


def lift(module: Any, *inputs: Any) -> Graph:
    from graphopt.frontends.fx import from_module

    return from_module(module, tuple(inputs))


def check_lift(module: Any, *inputs: Any, rtol: float = 1e-5, atol: float = 1e-6) -> Graph:
    """Lift ``module`` with the FX frontend; the IR (numpy) must compute what torch computes."""
    import torch

    g = lift(module, *inputs)
    with torch.no_grad():
        ref = module(*inputs)
    ref = list(ref) if isinstance(ref, (tuple, list)) else [ref]
    got = run(g, *[t.numpy() for t in inputs])
    assert len(got) == len(ref)
    for r, o in zip(ref, got):
        r = r.detach().numpy()
        assert np.asarray(o).dtype == r.dtype, g.to_text()
        np.testing.assert_allclose(np.asarray(o, np.float64), r.astype(np.float64),
                                   rtol=rtol, atol=atol, equal_nan=True)
    return g
