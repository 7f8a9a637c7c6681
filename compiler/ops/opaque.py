"""Opaque nodes: ONNX ops graphopt does not model, non-tensor values, control flow, unmapped aten.

An opaque node carries its original definition and survives export unchanged, so every model
loads and round-trips; the optimizer cannot see inside it and the report says so.

attrs:
  op_type    ONNX op type (or the aten target for torch-origin nodes)
  domain     ONNX domain ("" for the standard one; "aten" for torch-origin nodes)
  proto      serialized onnx.NodeProto (ONNX origin) or None
  opsets     ((domain, version), ...) of the source model, to run the node on its own
  out_types  the output types (from ONNX shape inference / torch meta values)
  present    per ONNX input slot, whether it is given (omitted optional inputs are False);
             IR inputs are the present slots in order, then the ``captured`` values
  captured   names of outer-scope values read by the node's subgraphs (If/Loop/Scan bodies)
  call       for torch-origin nodes: JSON of the call's args with tensor placeholders
  functions  serialized FunctionProtos the node may call (local functions of the model)
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ExportError, GraphOptError
from ..ir.node import Attrs
from ..ir.types import TensorType, ValueType
from .onnx_torch import torch_form
from .registry import NotSymbolic, OpDef, register

# How opaque nodes without an ONNX NodeProto run (torch tensors in, torch tensors out), by their
# ``domain`` attr. The frontend that makes such nodes registers it (the PyTorch frontend: "aten",
# ``frontends/fx_opaque.py``); ops sit below the frontends and do not import them.
Runner = Callable[[Sequence[Any], Attrs], tuple[Any, ...]]
_RUNNERS: dict[str, Runner] = {}


def register_runner(domain: str, run: Runner) -> None:
    """Run opaque nodes of ``domain`` (that carry no NodeProto) with ``run(xs, attrs)``."""
    _RUNNERS[domain] = run


@register
class Opaque(OpDef):
    name = "opaque"
    cost_class = "opaque"
    pure = False

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        return tuple(attrs["out_types"])

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        if attrs.get("proto") is None:
            return tuple(np.asarray(t.detach().cpu().numpy()) for t in self.torch(
                [__import__("torch").from_numpy(np.asarray(x)) for x in xs], attrs))
        return run_onnx_node(xs, attrs)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        import torch

        if attrs.get("proto") is not None:
            form = torch_form(attrs)  # Shape / Range / Concat: torch ops, no ONNX Runtime trip
            if form is not None:
                return form(xs)
            outs = run_onnx_node([x.detach().cpu().numpy() for x in xs], attrs)
            return tuple(torch.from_numpy(np.asarray(o)) for o in outs)
        run = _RUNNERS.get(attrs["domain"])
        if run is None:
            raise GraphOptError(f"opaque {attrs['domain']} node {attrs['op_type']}: no run-time "
                                f"semantics registered for domain {attrs['domain']!r} (the "
                                f"frontend that makes such nodes registers them on import)")
        return run(xs, attrs)

    def symbolic(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        raise NotSymbolic(f"opaque {attrs['op_type']}")

    def to_onnx(self, ctx: Any, node: Any) -> None:
        if node.attrs.get("proto") is None:
            raise ExportError(f"aten op {node.attrs['op_type']} has no ONNX mapping",
                              where=str(node.origin or node.attrs["op_type"]))
        ctx.emit_opaque(node)


def run_onnx_node(xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
    """Run one opaque ONNX node on its own in ONNX Runtime."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    node = onnx.NodeProto()
    node.ParseFromString(attrs["proto"])
    present = attrs.get("present") or tuple(True for _ in node.input)
    captured = attrs.get("captured") or ()
    n_explicit = sum(1 for p in present if p)
    if len(xs) != n_explicit + len(captured):
        raise GraphOptError(f"opaque {attrs['op_type']}: expected {n_explicit + len(captured)} "
                            f"inputs, got {len(xs)}")
    feeds: dict[str, np.ndarray] = {}
    in_vis = []
    k = 0
    names = list(node.input)
    for slot, p in enumerate(present):
        if p:
            feeds[names[slot]] = np.asarray(xs[k])
            k += 1
    for nm, x in zip(captured, xs[n_explicit:]):
        feeds[nm] = np.asarray(x)
    for nm, x in feeds.items():
        in_vis.append(helper.make_tensor_value_info(
            nm, helper.np_dtype_to_tensor_dtype(x.dtype) if x.dtype != object else 8, x.shape))
    out_vis = []
    for nm, t in zip([o for o in node.output if o], attrs["out_types"]):
        if isinstance(t, TensorType):
            out_vis.append(helper.make_tensor_value_info(nm, t.dtype.to_onnx(), None))
        else:
            tp = onnx.TypeProto()
            tp.ParseFromString(t.proto)
            out_vis.append(helper.make_value_info(nm, tp))
    g = helper.make_graph([node], "opaque", in_vis, [v for v in out_vis if v.name])
    funcs = []
    for fb in attrs.get("functions") or ():
        f = onnx.FunctionProto()
        f.ParseFromString(fb)
        funcs.append(f)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in attrs["opsets"]],
                          functions=funcs)
    m.ir_version = min(m.ir_version, 10)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    outs = sess.run([v.name for v in out_vis if v.name], feeds)
    return tuple(outs)
