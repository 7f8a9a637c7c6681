"""Constants computed while importing ONNX (shape computations only, ``IMPORT_FOLD``).

Three ways a value becomes a constant at import: a shape computation the symbolic tracker
(``onnx_symbolic``) follows to known ints (``track`` + ``bind_known``); a foldable standard node
whose inputs are all small constants, run alone in ONNX Runtime so the value is exactly what the
model computes (``fold_onnx``); a small value the ops built from constants only (``fold_ir``), so
later nodes see it through ``ctx.const``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import GraphOptError
from ..ir.fold import FOLDABLE_ONNX, FoldPolicy, NotFolded, fold_node
from ..ir.node import ConstData, Node, Origin, Value
from ..ir.types import TensorType
from .onnx_attrs import KeepOpaque, decode_attr
from .onnx_io import subgraphs
from .onnx_state import ImportState
from .onnx_symbolic import SymValue, propagate, tracks
from .onnx_types import compatible

if TYPE_CHECKING:
    import onnx

__all__ = ["IMPORT_FOLD", "bind_known", "fold_ir", "fold_onnx", "track"]

# constants computed at import: small values (shape computations) only, each output and each
# input of a node run in ONNX Runtime at most 2**16 elements; ONNX's declared dtypes win
IMPORT_FOLD = FoldPolicy(max_elements=1 << 16, growth_only=False, shared_max_elements=None,
                         max_onnx_input_elements=1 << 16, cast=True)


def track(st: ImportState, node: "onnx.NodeProto") -> list[SymValue | None] | None:
    """Follow a shape computation: the SymValues of the node's outputs (recorded)."""
    if node.domain not in ("", "ai.onnx") or not tracks(node.op_type):
        return None
    if ("", node.op_type) in st.functions or ("ai.onnx", node.op_type) in st.functions:
        return None
    ins = [st.symval(x) for x in node.input]
    if not any(ins) and node.op_type not in ("Shape", "Size"):
        return None
    tys = [st.env[x].type if x else None for x in node.input]
    try:
        attrs = {a.name: decode_attr(a) for a in node.attribute}
    except KeepOpaque:
        return None
    outs = [o for o in node.output if o]
    svs = propagate(node.op_type, attrs, ins, tys, len(outs))
    if svs is None:
        return None
    for o, sv in zip(outs, svs):
        if sv is not None:
            st.sym[o] = sv
    return svs


def bind_known(st: ImportState, node: "onnx.NodeProto", svs: list[SymValue | None],
               origin: Origin) -> bool:
    """Outputs whose every element is a known int become constants."""
    outs = [o for o in node.output if o]
    arrs = [None if sv is None else sv.ints() for sv in svs]
    if len(arrs) != len(outs) or any(a is None for a in arrs):
        return False
    vals = []
    for o, a in zip(outs, arrs):
        v = Node.build("constant", (), {"data": ConstData(a)}, origin).out
        if compatible(v.type, st.type_of(o)) is not None:
            return False
        vals.append(v)
    for o, v in zip(outs, vals):
        st.env[o] = v
    return True


def fold_onnx(st: ImportState, node: "onnx.NodeProto", origin: Origin) -> bool:
    """Evaluate a shape-computation node whose inputs are all small constants (in ONNX
    Runtime, so the value is exactly what the model computes) into constants."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in FOLDABLE_ONNX:
        return False
    if any(subgraphs(a) for a in node.attribute) or not any(node.input):
        return False
    if ("", node.op_type) in st.functions:
        return False
    ins = [st.env[nm] for nm in node.input if nm]
    if not all(v.node.op == "constant" for v in ins):
        return False
    outs = [o for o in node.output if o]
    types = [st.type_of(o) for o in outs]
    if not all(isinstance(t, TensorType) for t in types):
        return False
    attrs = {"op_type": node.op_type, "domain": node.domain,
             "proto": node.SerializeToString(), "opsets": tuple(sorted(st.opsets.items())),
             "out_types": tuple(types), "present": tuple(bool(x) for x in node.input),
             "captured": ()}
    try:
        n = Node.build("opaque", ins, attrs, origin)
    except GraphOptError:
        return False  # kept opaque, where the same error is reported
    res = fold_node(n, IMPORT_FOLD)
    if isinstance(res, NotFolded) and res.error is not None:
        # ONNX Runtime rejects it on these values: keep it opaque
        e = res.error
        st.report.warnings.append(f"could not fold {node.op_type} {origin.name!r}: "
                                  f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
    if res is None or isinstance(res, NotFolded):
        return False
    if any(compatible(v.type, t) is not None for v, t in zip(res, types)):
        return False
    for o, v in zip(outs, res):
        st.env[o] = v
    return True


def fold_ir(st: ImportState, v: Value) -> Value:
    """A small value computed by pure IR ops from constants only becomes a constant here, so
    later nodes see it through ``ctx.const`` (shape computations of traced exports)."""
    n = v.node
    if n.op in ("constant", "input", "opaque"):
        return v
    key = (n, v.index)  # the node itself (not its id): keeps it alive while memoized
    hit = st.folded.get(key)
    if hit is not None:
        return hit
    st.folded[key] = v  # until proven foldable (also stops repeated walks)
    from ..ops.registry import get_op

    t = v.type
    if not get_op(n.op).pure or not isinstance(t, TensorType) or not t.is_static or \
            t.static_numel() > IMPORT_FOLD.max_elements:
        return v  # cannot fold: leave its inputs alone too
    ins = [fold_ir(st, x) for x in n.inputs]
    if not all(x.node.op == "constant" for x in ins):
        return v
    res = fold_node(n.with_inputs(ins), IMPORT_FOLD)
    if res is None or isinstance(res, NotFolded):
        if isinstance(res, NotFolded) and res.kind == "mismatch":  # an op bug: say so
            st.report.warnings.append(f"op {n.op} at {n.origin}: {res.reason}; not folded")
        return v
    for i, c in enumerate(res):
        st.folded[(n, i)] = c
    st.report.folded += 1
    return res[v.index]
