"""ONNX nodes the importer keeps opaque: the node, its inputs, the types of its outputs and why.

``keep_opaque`` builds the ``opaque`` node that carries the NodeProto to export unchanged: its
IR inputs are the present input slots, then the outer-scope values its subgraphs read
(``captured_names``). Its output types are ONNX's inferred ones with the dims graphopt can prove
(tracked shape values, the inputs' IR types through the op type's shape rule) replacing dims ONNX
shape inference left unknown or invented. The reason is recorded per node (``opaque_reason``,
weakly: it dies with the node) and in the import report.
"""
from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from ..errors import FrontendError, GraphOptError, ShapeError
from ..ir.node import Node, Origin, Value
from ..ir.types import TensorType, ValueType
from .onnx_io import subgraphs
from .onnx_state import ImportState, OpaqueNote
from .onnx_symbolic import range_length

if TYPE_CHECKING:
    import onnx

__all__ = ["captured_names", "keep_opaque", "opaque_reason"]

# why each opaque node of an imported graph stayed opaque (weak: dies with the node)
_REASONS: "weakref.WeakKeyDictionary[Node, str]" = weakref.WeakKeyDictionary()

# ONNX ops whose first output has the shape of their first input / of their inputs broadcast
# (used to type opaque nodes where ONNX shape inference leaves dims unknown)
_SAME_SHAPE = frozenset({
    "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "Cast", "CastLike", "Ceil", "Celu",
    "Cos", "Cosh", "CumSum", "Dropout", "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid",
    "HardSwish", "Hardmax", "Identity", "IsInf", "IsNaN", "LayerNormalization", "LeakyRelu", "Log",
    "LogSoftmax", "LpNormalization", "Mish", "Neg", "Not", "Reciprocal", "Relu", "Round",
    "Selu", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Softmax", "Softplus", "Softsign",
    "Sqrt", "Tan", "Tanh", "ThresholdedRelu", "Trilu", "BitwiseNot",
})
_BROADCASTING = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Equal", "Less", "Greater", "LessOrEqual",
    "GreaterOrEqual", "And", "Or", "Xor", "Where", "Max", "Min", "Sum", "Mean", "BitShift",
    "BitwiseAnd", "BitwiseOr", "BitwiseXor", "PRelu",
})


def opaque_reason(node: Node) -> str | None:
    """Why the frontend kept ``node`` opaque (None when unknown or not opaque)."""
    return _REASONS.get(node)


def keep_opaque(st: ImportState, node: "onnx.NodeProto", origin: Origin, reason: str) -> None:
    """Bind the node's outputs to one ``opaque`` node carrying it; note the reason."""
    present = tuple(bool(x) for x in node.input)
    ins: list[Value] = [st.env[x] for x in node.input if x]
    captured = captured_names(node)
    for nm in captured:
        if nm not in st.env:
            raise FrontendError(f"subgraph reads {nm!r}, which is not defined outside it",
                                where=st.where(node))
        ins.append(st.env[nm])
    outs = [o for o in node.output if o]
    out_types = tuple(_opaque_type(st, node, o, k) for k, o in enumerate(outs))
    uses_funcs = bool(st.functions) and (
        (node.domain, node.op_type) in st.functions
        or any(subgraphs(a) for a in node.attribute))
    attrs = {
        "op_type": node.op_type,
        "domain": node.domain,
        "proto": node.SerializeToString(),
        "opsets": tuple(sorted(st.opsets.items())),
        "out_types": out_types,
        "present": present,
        "captured": tuple(captured),
        "call": None,
        "functions": st.func_bytes if uses_funcs else (),
    }
    try:
        n = Node.build("opaque", ins, attrs, origin)
    except GraphOptError as e:
        raise FrontendError(f"cannot keep node opaque: {e.one_line()}",
                            where=st.where(node)) from e
    _REASONS[n] = reason
    note = OpaqueNote(origin.name, node.op_type, node.domain, reason)
    st.report.opaque.append(note)
    st.notes.append((note, n))
    for i, o in enumerate(outs):
        st.env[o] = Value(n, i)


# ---- values read from outside a node's subgraphs --------------------------------------------

def captured_names(node: "onnx.NodeProto") -> list[str]:
    """Names the node's subgraphs (If branches, Loop/Scan bodies) read from the outer scope,
    each once, in order of first use."""
    captured: list[str] = []
    for a in node.attribute:
        for sub in subgraphs(a):
            for nm in _free_names(sub, set()):
                if nm not in captured:
                    captured.append(nm)
    return captured


def _free_names(g: "onnx.GraphProto", bound: set[str]) -> list[str]:
    """Names a subgraph reads from outside itself (recursively through nested subgraphs)."""
    inner = set(bound)
    inner.update(i.name for i in g.input)
    inner.update(t.name for t in g.initializer)
    inner.update(t.values.name for t in g.sparse_initializer)
    for n in g.node:
        inner.update(o for o in n.output if o)
    out: list[str] = []
    seen: set[str] = set()

    def use(nm: str) -> None:
        if nm and nm not in inner and nm not in seen:
            seen.add(nm)
            out.append(nm)

    for n in g.node:
        for nm in n.input:
            use(nm)
        for a in n.attribute:
            for sub in subgraphs(a):
                for nm in _free_names(sub, inner):
                    use(nm)
    for o in g.output:
        use(o.name)
    return out


# ---- output types ----------------------------------------------------------------------------

def _opaque_type(st: ImportState, node: "onnx.NodeProto", name: str, k: int) -> ValueType:
    """ONNX's inferred type of an opaque node's output, with the dims graphopt can prove
    (from tracked shape values or the inputs' IR types) replacing dims ONNX shape inference
    left unknown or invented (``unk__N``)."""
    t = st.type_of(name)
    if not isinstance(t, TensorType):
        return t
    proven = _proven_shape(st, node, k)
    if proven is None:
        return t
    if t.shape is None:
        return TensorType(proven, t.dtype)
    if len(proven) != len(t.shape):
        return t
    return TensorType(tuple(p if isinstance(d, str) and d not in st.types.declared else d
                            for d, p in zip(t.shape, proven)), t.dtype)


def _proven_shape(st: ImportState, node: "onnx.NodeProto", k: int) -> tuple[Any, ...] | None:
    from ..ops.registry import broadcast_shapes

    outs = [o for o in node.output if o]
    if node.domain not in ("", "ai.onnx") or k >= len(outs):
        return None
    sv = st.sym.get(outs[k])
    if sv is not None:
        return sv.shape
    if k != 0:
        return None
    shapes = []
    for x in node.input:
        t = st.env[x].type if x else None
        shapes.append(t.shape if isinstance(t, TensorType) else None)
    op = node.op_type
    try:
        if op == "Range":
            n = range_length([st.symval(x) for x in node.input])
            return None if n is None else (n,)
        if op in _SAME_SHAPE and shapes and shapes[0] is not None:
            return tuple(shapes[0])
        if op in _BROADCASTING and shapes and all(s is not None for s in shapes):
            return tuple(broadcast_shapes(op, *shapes))  # type: ignore[arg-type]
        if op == "GatherElements" and len(shapes) > 1 and shapes[1] is not None:
            return tuple(shapes[1])
        if op == "GatherND" and len(shapes) > 1 and None not in shapes[:2]:
            return _gather_nd_shape(node, shapes[0], shapes[1])  # type: ignore[arg-type]
        if op == "Slice" and shapes and shapes[0] is not None:
            return _slice_shape(st, node, shapes[0])
        if op in ("Expand", "ConstantOfShape"):
            sv = st.symval(node.input[1 if op == "Expand" else 0])
            dims = None if sv is None else sv.dims()
            if dims is None or any(isinstance(d, int) and d < 0 for d in dims):
                return None
            if op == "ConstantOfShape":
                return tuple(dims)
            if shapes[0] is None:
                return None
            return tuple(broadcast_shapes(op, shapes[0], tuple(dims)))
    except ShapeError:
        return None
    return None


def _gather_nd_shape(node: "onnx.NodeProto", data: tuple[Any, ...], idx: tuple[Any, ...]
                     ) -> tuple[Any, ...] | None:
    b = 0
    for a in node.attribute:
        if a.name == "batch_dims":
            b = int(a.i)
    if not idx or not isinstance(idx[-1], int) or b + idx[-1] > len(data):
        return None
    return tuple(idx[:-1]) + tuple(data[b + idx[-1]:])


def _slice_shape(st: ImportState, node: "onnx.NodeProto", shape: tuple[Any, ...]
                 ) -> tuple[Any, ...] | None:
    """x[..., 0:n] with a symbolic n (e.g. a position buffer cut to ``seq``): n, assuming
    n fits the axis (the model's later ops require it)."""
    ins = [st.symval(x) for x in node.input]
    if len(ins) < 3 or ins[1] is None or ins[2] is None:
        return None
    starts, ends = ins[1].dims(), ins[2].dims()
    axes = ins[3].dims() if len(ins) > 3 and ins[3] is not None else None
    steps = ins[4].dims() if len(ins) > 4 and ins[4] is not None else None
    if starts is None or ends is None or (len(ins) > 3 and node.input[3] and axes is None) \
            or (len(ins) > 4 and node.input[4] and steps is None):
        return None
    axes = axes if axes is not None else tuple(range(len(starts)))
    steps = steps if steps is not None else (1,) * len(starts)
    out = list(shape)
    for s, e, a, step in zip(starts, ends, axes, steps):
        if not isinstance(a, int) or not -len(out) <= a < len(out):
            return None
        if s != 0 or step != 1 or not isinstance(e, str):
            return None
        out[a] = e
    return tuple(out)
