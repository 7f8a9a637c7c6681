"""Test helpers for the op families: small stand-ins for the frontends' contexts (the ImportCtx
and AtenCtx interfaces ops implement against) and ONNX Runtime / torch references.

* ``check_onnx_node``: one ONNX node run in ONNX Runtime vs the same node lifted through the
  op's ``from_onnx`` (or the frontend's lowering of its type) and run by the IR interpreter.
* ``check_aten``: one aten call run by torch vs the call lifted through ``from_aten``.
* ``export_run``: an IR graph exported with the real exporter and run in ONNX Runtime.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from graphopt.frontends.onnx_lift import lifters
from graphopt.ir.graph import Graph, GraphMeta
from graphopt.ir.interp import run
from graphopt.ir.node import ConstData, Node, Value, input_node
from graphopt.ir.types import DType, TensorType
from graphopt.ops.registry import Unsupported, ops_for_aten


class FakeImportCtx:
    """The ImportCtx interface: op_type, opset, inputs, attrs, num_outputs, const, build,
    constant."""

    def __init__(self, op_type: str, opset: int, inputs: list[Value | None],
                 attrs: dict[str, Any], num_outputs: int = 1) -> None:
        self.op_type = op_type
        self.opset = opset
        self.inputs = inputs
        self.attrs = attrs
        self.num_outputs = num_outputs

    def const(self, i: int) -> np.ndarray | None:
        if i >= len(self.inputs):
            return None
        v = self.inputs[i]
        if v is None or v.node.op != "constant":
            return None
        return np.asarray(v.node.attrs["data"].array)

    def build(self, op: str, inputs: Sequence[Value], **attrs: Any) -> Value:
        return Node.build(op, list(inputs), attrs).outputs[0]

    def constant(self, array: Any) -> Value:
        return Node.build("constant", (), {"data": ConstData(np.asarray(array))}).out


def lift_onnx(op_type: str, inputs: list[Value | None], attrs: dict[str, Any], opset: int,
              num_outputs: int = 1) -> list[Value]:
    """Lift one ONNX node the way the frontend does (its lowering of the type, then the ops that
    declare it; the first that does not decline wins)."""
    from onnx import TensorProto, numpy_helper

    # tensor attributes reach ops as numpy arrays (as the ONNX frontend decodes them)
    attrs = {k: numpy_helper.to_array(a) if isinstance(a, TensorProto) else a
             for k, a in attrs.items()}
    reasons = []
    for name, from_onnx in lifters(op_type):
        ctx = FakeImportCtx(op_type, opset, list(inputs), dict(attrs), num_outputs)
        try:
            res = from_onnx(ctx)
        except Unsupported as e:
            reasons.append(f"{name}: {e}")
            continue
        return [res] if isinstance(res, Value) else list(res)
    raise Unsupported("; ".join(reasons) or f"no op for {op_type}")


def ort_model(op_type: str, arrays: Sequence[np.ndarray | None], attrs: dict[str, Any],
              opset: int, consts: Sequence[int], num_outputs: int,
              types: dict[int, TensorType] | None = None) -> Any:
    import onnx
    from onnx import helper, numpy_helper

    types = types or {}
    names = [f"in{i}" if a is not None else "" for i, a in enumerate(arrays)]
    inputs, inits = [], []
    for i, a in enumerate(arrays):
        if a is None:
            continue
        if i in consts:
            inits.append(numpy_helper.from_array(np.asarray(a), names[i]))
        else:
            shp = types[i].shape if i in types else a.shape
            inputs.append(helper.make_tensor_value_info(
                names[i], DType.from_numpy(a.dtype).to_onnx(), list(shp)))
    while names and names[-1] == "":
        names.pop()
    outs = [f"out{i}" for i in range(num_outputs)]
    node = helper.make_node(op_type, names, outs, **attrs)
    graph = helper.make_graph([node], "g", inputs, [onnx.ValueInfoProto(name=o) for o in outs],
                              initializer=inits)
    ops = [helper.make_opsetid("", opset)]
    m = helper.make_model(graph, opset_imports=ops)
    m.ir_version = helper.find_min_ir_version_for(ops, ignore_unknown=True)
    return m


def ort_run(model: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    return [np.asarray(x) for x in sess.run(None, feeds)]


def check_onnx_node(op_type: str, arrays: Sequence[np.ndarray | None], attrs: dict[str, Any],
                    opset: int, *, consts: Sequence[int] = (), num_outputs: int = 1,
                    types: dict[int, TensorType] | None = None, rtol: float = 1e-5,
                    atol: float = 1e-6) -> Graph:
    """Run the node in ONNX Runtime and lifted in graphopt; assert equal results. ``types``
    gives declared (e.g. symbolic) input types by input index. Returns the lifted graph."""
    types = types or {}
    model = ort_model(op_type, arrays, attrs, opset, consts, num_outputs, types)
    feeds = {f"in{i}": np.asarray(a) for i, a in enumerate(arrays)
             if a is not None and i not in consts}
    want = ort_run(model, feeds)
    ins: list[Node] = []
    vals: list[Value | None] = []
    for i, a in enumerate(arrays):
        if a is None:
            vals.append(None)
        elif i in consts:
            vals.append(Node.build("constant", (), {"data": ConstData(np.asarray(a))}).out)
        else:
            t = types.get(i, TensorType(tuple(a.shape), DType.from_numpy(a.dtype)))
            n = input_node(f"in{i}", t)
            ins.append(n)
            vals.append(n.out)
    outs = lift_onnx(op_type, vals, attrs, opset, num_outputs)
    assert len(outs) == num_outputs, f"{op_type}: {len(outs)} outputs lifted"
    g = Graph(ins, outs, meta=GraphMeta(opsets=(("", opset),)))
    got = run(g, **{n.attrs["name"]: feeds[n.attrs["name"]] for n in ins})
    for k, (gv, wv) in enumerate(zip(got, want)):
        gv = np.asarray(gv)
        assert gv.shape == wv.shape, f"{op_type} output {k}: {gv.shape} vs ORT {wv.shape}"
        assert gv.dtype == wv.dtype, f"{op_type} output {k}: {gv.dtype} vs ORT {wv.dtype}"
        np.testing.assert_allclose(gv, wv, rtol=rtol, atol=atol,
                                   err_msg=f"{op_type} output {k} vs ONNX Runtime")
    return g


def export_run(g: Graph, opset: int, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Export ``g`` with the project's exporter at ``opset`` and run it in ONNX Runtime."""
    from graphopt.frontends.onnx_export import to_model

    return ort_run(to_model(g, opset=opset), feeds)


# ---- aten ----------------------------------------------------------------------------------------

class FakeAtenCtx:
    """The AtenCtx interface: target, args, kwargs, num_outputs, used_outputs, tensor_args,
    build, constant, scalar."""

    def __init__(self, target: str, args: tuple, kwargs: dict, num_outputs: int,
                 used_outputs: set[int]) -> None:
        self.target = target
        self.args = args
        self.kwargs = kwargs
        self.num_outputs = num_outputs
        self.used_outputs = used_outputs

    def tensor_args(self) -> list[Value]:
        return [a for a in self.args if isinstance(a, Value)]

    def build(self, op: str, inputs: Sequence[Value], **attrs: Any) -> Value:
        return Node.build(op, tuple(inputs), attrs).outputs[0]

    def constant(self, array: Any) -> Value:
        return Node.build("constant", (), {"data": ConstData(np.asarray(array))}).out

    def scalar(self, x: Any, like: Value) -> Value:
        t = like.type
        assert isinstance(t, TensorType)
        return self.constant(np.asarray(x, dtype=t.dtype.to_numpy()))


def _aten_op(target: str) -> Any:
    import torch

    ns, name, overload = target.split(".")
    return getattr(getattr(getattr(torch.ops, ns), name), overload)


def check_aten(target: str, args: tuple, kwargs: dict | None = None, *,
               used_outputs: set[int] | None = None, types: dict[int, TensorType] | None = None,
               rtol: float = 1e-5, atol: float = 1e-6) -> Graph:
    """Run the aten call in torch and lifted through from_aten; assert equal (used) outputs.
    Tensors may sit in args directly or inside lists (aten.cat, aten.index)."""
    import torch

    kwargs = kwargs or {}
    types = types or {}
    want = _aten_op(target)(*args, **kwargs)
    want_t = list(want) if isinstance(want, (tuple, list)) else [want]
    ins: list[Node] = []
    feeds: dict[str, np.ndarray] = {}

    def conv(a: Any) -> Any:
        if isinstance(a, torch.Tensor):
            k = len(ins)
            arr = a.detach().numpy()
            t = types.get(k, TensorType(tuple(arr.shape), DType.from_numpy(arr.dtype)))
            n = input_node(f"t{k}", t)
            ins.append(n)
            feeds[f"t{k}"] = arr
            return n.out
        if isinstance(a, (list, tuple)):
            return type(a)(conv(x) for x in a)
        return a

    vargs = tuple(conv(a) for a in args)
    vkw = {k: conv(v) for k, v in kwargs.items()}
    used = used_outputs if used_outputs is not None else set(range(len(want_t)))
    reasons = []
    for op in ops_for_aten(target):
        ctx = FakeAtenCtx(target, vargs, vkw, len(want_t), used)
        try:
            res = op.from_aten(ctx)
        except Unsupported as e:
            reasons.append(str(e))
            continue
        break
    else:
        raise Unsupported("; ".join(reasons) or f"no op for {target}")
    outs = [res] if isinstance(res, Value) else list(res)  # a Value is a tuple too
    pairs = [(outs[i], want_t[i]) for i in sorted(used)]
    g = Graph(ins, [p[0] for p in pairs])
    got = run(g, **feeds)
    for (_, w), gv in zip(pairs, got):
        wv = w.detach().numpy()
        gv = np.asarray(gv)
        assert gv.shape == wv.shape, f"{target}: {gv.shape} vs torch {wv.shape}"
        assert gv.dtype == wv.dtype, f"{target}: {gv.dtype} vs torch {wv.dtype}"
        np.testing.assert_allclose(gv, wv, rtol=rtol, atol=atol, err_msg=f"{target} vs torch")
    return g
