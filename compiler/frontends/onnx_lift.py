"""Lifting one ONNX node into IR values, for the ONNX importer.

A default-domain node goes first to the frontend's own lowering of its type (``onnx_lowering``),
then to each op that declares the type (``OpDef.onnx``) through its ``from_onnx(ctx)``; ``ctx``
is an :class:`ImportCtx`, the interface op files write against. The first result whose types
agree with ONNX's inferred types is bound to the node's outputs; when none does, ``lift`` returns
the reasons and the node stays opaque.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ..errors import FrontendError, GraphOptError, ShapeError
from ..ir.node import ConstData, Node, Origin, Value
from .onnx_attrs import KeepOpaque, decode_attr, unmodelled_attr
from .onnx_fold import fold_ir
from .onnx_lowering import lowering_for
from .onnx_state import ImportState
from .onnx_symbolic import SymValue, from_const
from .onnx_types import compatible

if TYPE_CHECKING:
    import onnx

__all__ = ["ImportCtx", "lift", "lifters"]


class ImportCtx:
    """What an op's ``from_onnx`` sees of one ONNX node (interface shared with ops/*.py)."""

    def __init__(self, node: "onnx.NodeProto", opset: int, inputs: list[Value | None],
                 attrs: dict[str, Any], origin: Origin,
                 symvals: "Sequence[SymValue | None]" = ()) -> None:
        self.op_type: str = node.op_type
        self.opset: int = opset
        self.inputs: list[Value | None] = inputs
        self.attrs: dict[str, Any] = attrs
        self.num_outputs: int = sum(1 for o in node.output if o)
        self.origin: Origin = origin
        self.proto = node
        self._symvals = list(symvals)

    def dims(self, i: int) -> tuple[Any, ...] | None:
        """The elements of a 0-D / 1-D int input ``i`` as dims when all are known: ints (any
        sign, e.g. -1 in a reshape target) and symbols (``"seq"``, ``"batch*seq"``) computed
        from shapes at run time (Shape -> Gather -> Concat chains). Constant inputs work too.
        None when an element is unknown or the input is not such a tensor."""
        if i < len(self._symvals) and self._symvals[i] is not None:
            return self._symvals[i].dims()  # type: ignore[union-attr]
        arr = self.const(i)
        if arr is None:
            return None
        sv = from_const(arr)
        return None if sv is None else sv.dims()

    def const(self, i: int) -> np.ndarray | None:
        """The value of input ``i`` when it comes from a constant node (None otherwise)."""
        if i >= len(self.inputs):
            return None
        v = self.inputs[i]
        if v is None or v.node.op != "constant":
            return None
        data: ConstData = v.node.attrs["data"]
        return np.asarray(data.array) if data.has_array else None

    def build(self, op: str, inputs: Sequence[Value], **attrs: Any) -> Value:
        """Build ``op(inputs) {attrs}`` with this node's origin; returns its first output."""
        return Value(Node.build(op, list(inputs), attrs, self.origin), 0)

    def constant(self, array: Any) -> Value:
        return Node.build("constant", (), {"data": ConstData(np.asarray(array))},
                          self.origin).out


def lifters(op_type: str) -> list[tuple[str, Callable[[Any], Any]]]:
    """Who may lift a default-domain ONNX node of ``op_type``, in the order they are tried: the
    frontend's lowering, then the ops that declare the type; each with the name its reasons
    carry."""
    from ..ops.registry import ops_for_onnx

    low = lowering_for(op_type)
    out: list[tuple[str, Callable[[Any], Any]]] = []
    if low is not None:
        out.append((f"{op_type} lowering", low))
    out += [(op.name, op.from_onnx) for op in ops_for_onnx(op_type)]
    return out


def lift(st: ImportState, node: "onnx.NodeProto", origin: Origin) -> str | None:
    """Build the node through its lowering or ops and bind its outputs; returns the reason
    when it must stay opaque."""
    from ..ops.registry import Unsupported

    if node.domain not in ("", "ai.onnx"):
        if (node.domain, node.op_type) in st.functions:
            return f"call of model-local function {node.domain}::{node.op_type}"
        return f"domain {node.domain!r} is not modelled"
    if ("", node.op_type) in st.functions or ("ai.onnx", node.op_type) in st.functions:
        return f"call of model-local function {node.op_type}"
    why_not = unmodelled_attr(node)
    if why_not is not None:
        return why_not
    candidates = lifters(node.op_type)
    if not candidates:
        return f"no op maps ONNX {node.op_type}"
    try:
        attrs = {a.name: decode_attr(a) for a in node.attribute}
    except KeepOpaque as e:
        return str(e)
    inputs = [st.env[x] if x else None for x in node.input]
    symvals = [st.symval(x) for x in node.input]
    reasons = []
    for name, from_onnx in candidates:
        ctx = ImportCtx(node, st.opset, inputs, dict(attrs), origin, symvals)
        try:
            res = from_onnx(ctx)
        except Unsupported as e:
            reasons.append(f"{name}: {e}")
            continue
        except ShapeError as e:
            reasons.append(f"{name}: {e.one_line()}")
            continue
        except GraphOptError as e:
            raise FrontendError(f"{name} failed to import it: {e.one_line()}",
                                where=st.where(node)) from e
        except Exception as e:
            raise FrontendError(f"{name} raised {type(e).__name__}: {e}",
                                where=st.where(node)) from e
        if res is None:
            reasons.append(f"{name}: declined")
            continue
        vals = [res] if isinstance(res, Value) else list(res)
        why = _bind(st, node, vals)
        if why is None:
            return None
        reasons.append(f"{name}: {why}")
    return "; ".join(reasons)


def _bind(st: ImportState, node: "onnx.NodeProto", vals: list[Value]) -> str | None:
    """Map the lifted values onto the node's outputs after checking them against ONNX's
    inferred types; returns why not when they disagree."""
    slots = list(node.output)
    named = [i for i, o in enumerate(slots) if o]
    if len(vals) >= len(slots):
        pairs = [(slots[i], vals[i]) for i in named]
    elif len(vals) == len(named):
        pairs = [(slots[i], v) for i, v in zip(named, vals)]
    else:
        return f"from_onnx returned {len(vals)} values for {len(named)} outputs"
    for name, v in pairs:
        if not isinstance(v, Value):
            return f"from_onnx returned {type(v).__name__}, not a Value"
        why = compatible(v.type, st.type_of(name))
        if why is not None:
            return f"output {name!r}: {why}"
    for name, v in pairs:
        st.env[name] = fold_ir(st, v)
    return None
