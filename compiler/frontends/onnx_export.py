"""IR -> ONNX.

``to_model(g)`` builds a ModelProto (weights inline); ``save(g, path)`` writes a file atomically,
with weights in ``<file>.data`` beside it when they exceed a threshold (1 GiB by default). Each node
is emitted by its op's ``to_onnx(ctx, node)`` (see ``ExportCtx``); opaque nodes are re-emitted from
their NodeProto with inputs and outputs renamed.
"""
from __future__ import annotations

import os
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ExportError, GraphOptError
from ..ir.graph import Graph
from ..ir.node import ConstData, Node, Value
from ..ir.types import DType, OpaqueType, TensorType, ValueType
from .onnx_io import (AtomicFiles, DataSink, MemorySink, const_to_tensor, externals_as_inputs,
                      subgraphs)
from .onnx_mapped import inline_parts

if TYPE_CHECKING:
    import onnx

__all__ = ["to_model", "save", "ExportCtx", "EXTERNAL_THRESHOLD"]

EXTERNAL_THRESHOLD = 1 << 30  # bytes of weights above which save() writes external data
_PROTO_LIMIT = (1 << 31) - (1 << 24)  # stay clear of protobuf's 2 GiB cap

Key = tuple[int, int]


def _key(v: Value) -> Key:
    return (id(v.node), v.index)


class ExportCtx:
    """What an op's ``to_onnx(ctx, node)`` uses to emit ONNX (interface shared with ops/*.py)."""

    def __init__(self, g: Graph, opset: int, sink: "DataSink | MemorySink | None") -> None:
        self.opset: int = opset
        self.graph = g
        self.sink = sink
        self.nodes: list["onnx.NodeProto"] = []
        self.initializers: list["onnx.TensorProto"] = []
        self.domains: set[str] = set()
        self.functions: dict[tuple[str, str], bytes] = {}
        self.extra_opsets: dict[str, int] = {}
        self._names: dict[Key, str] = {}
        self._owner: dict[str, Any] = {}  # name -> who holds it
        self._pref: dict[Key, str] = {}
        self._consts: dict[int, str] = {}
        self._small: dict[tuple, str] = {}
        self._node_names: set[str] = set()
        self._current: Node | None = None
        self._sym_dims: dict[str, str] = {}
        # values an op lowering derives once per export and shares between nodes (e.g. the one
        # rewritten attention mask all layers read); keys are chosen by the op (see ops/attention.py)
        self.memo: dict[Any, Any] = {}
        self._plan_names()

    # ---- names ------------------------------------------------------------------------------
    def _plan_names(self) -> None:
        g = self.graph
        for n in g.inputs:
            nm = n.attrs["name"]
            self._pref[_key(n.out)] = nm
            self._owner[nm] = _key(n.out)
        for i, (v, nm) in enumerate(zip(g.outputs, g.output_names)):
            if self._owner.get(nm) == _key(v):
                continue  # an output that is directly the graph input of the same name
            if nm in self._owner:
                raise ExportError(f"output name {nm!r} is used twice (or is an input name)",
                                  where=f"graph {g.name}")
            if v.node.op in ("input", "constant") or _key(v) in self._pref:
                self._owner[nm] = ("out", i)  # an Identity will write it
            else:
                self._pref[_key(v)] = nm
                self._owner[nm] = _key(v)
        for n in g.nodes:
            if n.op != "opaque" or not n.attrs.get("captured"):
                continue
            n_explicit = sum(1 for p in n.attrs["present"] if p)
            for c, v in zip(n.attrs["captured"], n.inputs[n_explicit:]):
                if c in self._owner:
                    continue
                if _key(v) not in self._pref:
                    self._pref[_key(v)] = c
                    self._owner[c] = _key(v)
                else:
                    self._owner[c] = ("cap", c)
        for n in g.nodes:
            if n.op == "opaque" and n.attrs.get("proto") is not None:
                for nm in _inner_names(_node_proto(n)):
                    self._owner.setdefault(nm, ("sub",))

    def _fresh(self, base: str, owner: Any) -> str:
        base = base or "v"
        nm, k = base, 0
        while nm in self._owner:
            k += 1
            nm = f"{base}__{k}"
        self._owner[nm] = owner
        return nm

    def _base(self, node: Node | None) -> str:
        if node is not None and node.origin is not None:
            return node.origin.name
        return node.op if node is not None else "v"

    def name(self, value: Value) -> str:
        """The ONNX name of an IR value (constants become initializers on first use)."""
        k = _key(value)
        nm = self._names.get(k)
        if nm is not None:
            return nm
        if value.node.op == "constant":
            nm = self._const_name(value.node)
        elif k in self._pref:
            nm = self._pref[k]
        else:
            nm = self._fresh(self._value_base(value), k)
        self._names[k] = nm
        return nm

    def _value_base(self, value: Value) -> str:
        n = value.node
        if n.op == "opaque" and n.attrs.get("proto") is not None:
            outs = [o for o in _node_proto(n).output if o]  # the source model's own names
            if value.index < len(outs):
                return outs[value.index]
        base = self._base(n)
        return f"{base}:{value.index}" if len(n.out_types) > 1 else base

    def out_names(self, node: Node) -> list[str]:
        return [self.name(v) for v in node.outputs]

    # ---- constants ----------------------------------------------------------------------------
    def _const_name(self, node: Node) -> str:
        data: ConstData = node.attrs["data"]
        nm = self._consts.get(id(data))
        if nm is None:
            pref = self._pref.get(_key(node.out))
            if pref is not None:
                nm = pref  # a captured name: the subgraph reads the initializer directly
            else:
                nm = self._fresh(self._base(node) if node.origin else "const", ("init",))
            self.initializers.append(const_to_tensor(data, nm, self.sink))
            self._consts[id(data)] = nm
        return nm

    def const(self, array: Any) -> str:
        """An initializer holding ``array`` (small ones shared by content)."""
        arr = np.asarray(array)
        key = None
        if arr.size <= 64 and arr.dtype != object:
            key = (arr.dtype.str, arr.dtype.name, arr.shape, arr.tobytes())  # (u4, i4: '<V1')
            if key in self._small:
                return self._small[key]
        base = f"{self._base(self._current)}/const" if self._current is not None else "const"
        nm = self._fresh(base, ("init",))
        self.initializers.append(const_to_tensor(ConstData(arr), nm, self.sink))
        if key is not None:
            self._small[key] = nm
        return nm

    # ---- symbolic dims ------------------------------------------------------------------------
    def sym_dim(self, name: str) -> str:
        """A 1-D int64 tensor ``[value of the symbol]`` computed at run time from a value that
        carries it (a graph input first, else an already emitted value): Shape(x, start=k,
        end=k+1) at opset >= 15, Shape + Slice below; a product ``a*b*_x12`` multiplies its
        factors. Cached per symbol for the whole export."""
        from ..ir.types import dim_factors

        hit = self._sym_dims.get(name)
        if hit is not None:
            return hit
        src = self._sym_source(name)
        if src is not None:
            x, k = src
            if self.opset >= 15:
                out = self.emit("Shape", [x], 1, start=k, end=k + 1)[0]
            else:
                shp = self.emit("Shape", [x], 1)[0]
                if self.opset >= 10:
                    out = self.emit("Slice", [shp, self.const(np.array([k], np.int64)),
                                              self.const(np.array([k + 1], np.int64))], 1)[0]
                else:
                    out = self.emit("Slice", [shp], 1, starts=[k], ends=[k + 1], axes=[0])[0]
        else:
            coef, syms = dim_factors(name)
            if len(syms) + (coef != 1) < 2:
                where = str(self._current.origin) if self._current is not None and \
                    self._current.origin is not None else f"graph {self.graph.name}"
                raise ExportError(f"no run-time source for symbolic dim {name!r}: no graph "
                                  f"input (or earlier value) has it as a dim", where=where)
            out = self.sym_dim(syms[0])
            for s in syms[1:]:
                out = self.emit("Mul", [out, self.sym_dim(s)], 1)[0]
            if coef != 1:
                out = self.emit("Mul", [out, self.const(np.array([coef], np.int64))], 1)[0]
        self._sym_dims[name] = out
        return out

    def _sym_source(self, name: str) -> tuple[str, int] | None:
        """(ONNX name, axis) of a value whose type has the dim ``name``."""
        for n in self.graph.inputs:
            t = n.out_types[0]
            if isinstance(t, TensorType) and t.shape is not None and name in t.shape:
                return self.name(n.out), t.shape.index(name)
        for n in self.graph.nodes:  # values emitted before the current node
            if n is self._current:
                break
            if n.op in ("input", "constant"):
                continue
            for v in n.outputs:
                t = v.type
                if isinstance(t, TensorType) and t.shape is not None and name in t.shape and \
                        _key(v) in self._names:
                    return self._names[_key(v)], t.shape.index(name)
        return None

    # ---- nodes --------------------------------------------------------------------------------
    def _node_name(self, op_type: str) -> str:
        base = self._base(self._current) if self._current is not None else op_type
        if self._current is not None and self._current.origin is not None and \
                self._current.origin.detail != op_type:
            base = f"{base}/{op_type}"
        nm, k = base, 0
        while nm in self._node_names:
            k += 1
            nm = f"{base}__{k}"
        self._node_names.add(nm)
        return nm

    def emit(self, op_type: str, inputs: list[str], outputs: "list[str] | int", domain: str = "",
             **attrs: Any) -> list[str]:
        """Append one ONNX node; ``outputs`` is a list of names or a count of fresh names."""
        from onnx import helper

        if isinstance(outputs, int):
            base = f"{self._base(self._current)}/{op_type}" if self._current else op_type
            outputs = [self._fresh(base, ("tmp",)) for _ in range(outputs)]
        node = helper.make_node(op_type, list(inputs), list(outputs),
                                name=self._node_name(op_type), domain=domain or None)
        for k in sorted(attrs):
            v = attrs[k]
            if v is None:
                continue
            node.attribute.append(_attribute(k, v))
        self.nodes.append(node)
        if domain:
            self.domains.add(domain)
        return list(outputs)

    def emit_opaque(self, node: Node) -> None:
        """Re-emit an opaque ONNX node with its inputs, outputs and captured names remapped."""
        import onnx

        a = node.attrs
        if a.get("proto") is None:
            raise ExportError(f"opaque {a['op_type']} has no ONNX form", where=node.where)
        p = _node_proto(node)
        present = a.get("present") or tuple(True for _ in p.input)
        n_explicit = sum(1 for x in present if x)
        ins = [self.name(v) for v in node.inputs[:n_explicit]]
        ins = self._scalar_inputs(node, p, ins)
        it = iter(ins)
        new_inputs = [next(it) if pr else "" for pr in present]
        outs = iter(self.out_names(node))
        new_outputs = [next(outs) if o else "" for o in p.output]
        renames: dict[str, str] = {}
        for c, v in zip(a.get("captured") or (), node.inputs[n_explicit:]):
            src = self.name(v)
            if src == c:
                continue
            owner = self._owner.get(c)
            if owner == ("cap", c):
                self._identity(src, c, node)
                self._owner[c] = ("bound", _key(v))
            elif owner == ("bound", _key(v)):
                continue
            else:  # the name belongs to another value: read a fresh alias inside the subgraph
                alias = self._fresh(c, ("bound", _key(v)))
                self._identity(src, alias, node)
                renames[c] = alias
        q = onnx.NodeProto()
        q.CopyFrom(p)
        del q.input[:]
        q.input.extend(new_inputs)
        del q.output[:]
        q.output.extend(new_outputs)
        if renames:
            for att in q.attribute:
                for sub in subgraphs(att):
                    _rename_free(sub, renames, set())
        src = _needs_upgrade(node, self.opset)
        if src is not None:
            self._emit_upgraded(q, [v.type for v in node.inputs[:n_explicit]], node, src)
            return
        self.nodes.append(q)
        if q.domain:
            self.domains.add(q.domain)
        for d, ver in a.get("opsets") or ():
            self.extra_opsets.setdefault(d, ver)
        for fb in a.get("functions") or ():
            f = onnx.FunctionProto()
            f.ParseFromString(fb)
            self.functions.setdefault((f.domain, f.name), fb)

    def _scalar_inputs(self, node: Node, p: "onnx.NodeProto", ins: list[str]) -> list[str]:
        """Inputs the ONNX spec wants as scalars (``SCALAR_INPUTS``) not known to be rank 0
        here, reshaped to rank 0: ONNX Runtime runs a one-element tensor of unknown shape there,
        but rejects the model once its shape inference sees a rank (after it inlines an ``If``
        whose condition graphopt folded to a constant, say). The reshape fails at run time
        exactly when the op would (more than one element)."""
        want = SCALAR_INPUTS.get(p.op_type) if p.domain in ("", "ai.onnx") else None
        if not want:
            return ins
        out = list(ins)
        explicit = [i for i, x in enumerate(p.input) if x]
        for k, v in enumerate(node.inputs[:len(ins)]):
            t = v.type
            if explicit[k] in want and not (isinstance(t, TensorType) and t.shape == ()):
                out[k] = self.emit("Reshape", [ins[k], self.const(np.zeros(0, np.int64))], 1)[0]
        return out

    def _emit_upgraded(self, q: "onnx.NodeProto", in_types: list[Any], node: Node,
                       src: int) -> None:
        """Emit ``q`` converted from opset ``src`` to this export's opset; names the converter
        invents for intermediate values are made unique."""
        new = _upgrade_node(q, in_types, src, self.opset, node.where)
        keep = set(q.input) | set(q.output)
        renamed: dict[str, str] = {}
        for nd in new:
            for i, nm in enumerate(nd.input):
                if nm in renamed:
                    nd.input[i] = renamed[nm]
            for i, nm in enumerate(nd.output):
                if nm and nm not in keep:
                    renamed[nm] = self._fresh(nm, ("upgrade", id(node), nm))
                    nd.output[i] = renamed[nm]
            if not nd.name or nd.name == q.name:
                nd.name = self._node_name(nd.op_type)
            self.nodes.append(nd)

    def _identity(self, src: str, dst: str, node: Node | None) -> None:
        from onnx import helper

        prev, self._current = self._current, node
        self.nodes.append(helper.make_node("Identity", [src], [dst],
                                           name=self._node_name("Identity")))
        self._current = prev

    # ---- the whole graph ----------------------------------------------------------------------
    def run(self) -> None:
        from ..ops.registry import get_op

        g = self.graph
        for n in g.nodes:
            if n.op in ("input", "constant"):
                continue
            self._current = n
            try:
                get_op(n.op).to_onnx(self, n)
            except ExportError as e:
                if e.where is None:
                    e.where = n.where
                raise
            except GraphOptError:
                raise
            except Exception as e:
                raise ExportError(f"{n.op}.to_onnx raised {type(e).__name__}: {e}",
                                  where=n.where) from e
            self._current = None
        for i, (v, nm) in enumerate(zip(g.outputs, g.output_names)):
            src = self.name(v)
            if src != nm:
                self._identity(src, nm, None)


# default-domain op types whose inputs (by position) the ONNX spec declares scalars
SCALAR_INPUTS: dict[str, tuple[int, ...]] = {"Range": (0, 1, 2)}


def _attribute(k: str, v: Any) -> "onnx.AttributeProto":
    from onnx import AttributeProto, helper, numpy_helper

    if isinstance(v, DType):
        v = v.to_onnx()
    elif isinstance(v, bool) or isinstance(v, np.bool_):
        v = int(v)
    elif isinstance(v, np.generic):
        v = v.item()
    elif isinstance(v, np.ndarray):
        return helper.make_attribute(k, numpy_helper.from_array(v))
    elif isinstance(v, (list, tuple)):
        items = [x.to_onnx() if isinstance(x, DType) else
                 int(x) if isinstance(x, (bool, np.bool_)) else
                 x.item() if isinstance(x, np.generic) else x for x in v]
        if not items:
            return helper.make_attribute(k, [], attr_type=AttributeProto.INTS)
        if any(isinstance(x, float) for x in items) and all(
                isinstance(x, (int, float)) for x in items):
            items = [float(x) for x in items]
        v = items
    return helper.make_attribute(k, v)


def _node_proto(n: Node) -> "onnx.NodeProto":
    import onnx

    p = onnx.NodeProto()
    p.ParseFromString(n.attrs["proto"])
    return p


def _inner_names(p: "onnx.NodeProto") -> set[str]:
    """Every value name used or defined inside the node's subgraphs."""
    out: set[str] = set()
    for a in p.attribute:
        for g in subgraphs(a):
            _graph_names(g, out)
    return out


def _graph_names(g: "onnx.GraphProto", out: set[str]) -> None:
    out.update(i.name for i in g.input)
    out.update(o.name for o in g.output)
    out.update(t.name for t in g.initializer)
    for n in g.node:
        out.update(x for x in n.input if x)
        out.update(x for x in n.output if x)
        for a in n.attribute:
            for sub in subgraphs(a):
                _graph_names(sub, out)


def _rename_free(g: "onnx.GraphProto", ren: dict[str, str], bound: set[str]) -> None:
    """Rename the outer-scope names a subgraph reads (not the ones it defines itself)."""
    inner = set(bound)
    inner.update(i.name for i in g.input)
    inner.update(t.name for t in g.initializer)
    for n in g.node:
        inner.update(o for o in n.output if o)
    for n in g.node:
        for i, x in enumerate(n.input):
            if x in ren and x not in inner:
                n.input[i] = ren[x]
        for a in n.attribute:
            for sub in subgraphs(a):
                _rename_free(sub, ren, inner)
    for o in g.output:
        if o.name in ren and o.name not in inner:
            o.name = ren[o.name]


# ---- types ------------------------------------------------------------------------------------

def _value_info(name: str, t: ValueType) -> "onnx.ValueInfoProto":
    import onnx
    from onnx import helper

    if isinstance(t, TensorType):
        shape = None if t.shape is None else [d for d in t.shape]
        return helper.make_tensor_value_info(name, t.dtype.to_onnx(), shape)
    vi = onnx.ValueInfoProto()
    vi.name = name
    if isinstance(t, OpaqueType) and t.proto:
        vi.type.ParseFromString(t.proto)
    return vi


# ---- the model --------------------------------------------------------------------------------

# the lowest default-domain opset written unless asked for: ONNX Runtime's kernels start at
# opset 7 (it runs an opset-6 Sum but has no Add before 7, which the IR's Sum lowers to); an
# older source is written at 7, its opaque nodes converted (``_needs_upgrade``)
MIN_WRITTEN_OPSET = 7


def _target_opset(g: Graph, opset: int | None) -> int:
    """The default-domain opset to write: the one asked for, else the source's (at least
    ``MIN_WRITTEN_OPSET``), else 18."""
    if opset is not None:
        return int(opset)
    v = g.meta.opset("")
    return max(int(v), MIN_WRITTEN_OPSET) if v is not None else 18


def _needs_upgrade(n: Node, opset: int) -> int | None:
    """The source opset of an opaque default-domain node whose schema differs at ``opset``
    (it must be converted to keep its meaning), else None."""
    from onnx import defs

    if n.attrs.get("proto") is None or n.attrs["domain"] not in ("", "ai.onnx"):
        return None
    src = dict(n.attrs.get("opsets") or ()).get("", opset)
    if src == opset:
        return None
    op_type = n.attrs["op_type"]
    try:
        a = defs.get_schema(op_type, src, "").since_version
        b = defs.get_schema(op_type, opset, "").since_version
    except Exception:
        return src
    return src if a != b else None


def _upgrade_node(q: "onnx.NodeProto", in_types: list[Any], src: int, dst: int,
                  where: str) -> list["onnx.NodeProto"]:
    """``q`` (written for opset ``src``) as nodes of opset ``dst``, via onnx's version converter
    on a one-node model. Nodes with subgraphs reading outer values cannot be converted alone."""
    import onnx
    from onnx import helper, version_converter

    vis = []
    for nm, t in zip([i for i in q.input if i], in_types):
        if isinstance(t, TensorType):
            vis.append(helper.make_tensor_value_info(
                nm, t.dtype.to_onnx(), None if t.shape is None else
                [d if isinstance(d, int) else str(d) for d in t.shape]))
        else:
            tp = onnx.TypeProto()
            tp.ParseFromString(t.proto)
            vis.append(helper.make_value_info(nm, tp))
    outs = [helper.make_empty_tensor_value_info(o) for o in q.output if o]
    m = helper.make_model(helper.make_graph([q], "upgrade", vis, outs),
                          opset_imports=[helper.make_opsetid("", src)])
    try:
        conv = version_converter.convert_version(m, dst)
    except Exception as e:
        raise ExportError(f"opaque {q.op_type} was written for opset {src} and cannot be "
                          f"converted to opset {dst}: {str(e).splitlines()[0][:200]}",
                          where=where) from None
    return list(conv.graph.node)


def _build(g: Graph, opset: int | None, sink: "DataSink | MemorySink | None"
           ) -> "onnx.ModelProto":
    import onnx
    from onnx import helper

    target = _target_opset(g, opset)
    ctx = ExportCtx(g, target, sink)
    ctx.run()
    inputs = [_value_info(n.attrs["name"], n.out_types[0]) for n in g.inputs]
    for n in g.inputs:  # overridable initializers: the input's default (IR >= 4)
        if n.attrs.get("default") is not None:
            ctx.initializers.append(const_to_tensor(n.attrs["default"], n.attrs["name"], sink))
    outputs = [_value_info(nm, v.type) for v, nm in zip(g.outputs, g.output_names)]
    graph = helper.make_graph(ctx.nodes, g.name or "main", inputs, outputs, ctx.initializers)
    opsets: dict[str, int] = {}
    for d, v in g.meta.opsets:
        opsets["" if d == "ai.onnx" else d] = int(v)
    opsets[""] = target
    for d, v in ctx.extra_opsets.items():
        opsets.setdefault(d, int(v))
    for d in sorted(ctx.domains):
        opsets.setdefault(d, 1)
    functions = {}
    for fb in g.meta.functions:
        f = onnx.FunctionProto()
        f.ParseFromString(fb)
        functions[(f.domain, f.name)] = f
    for k, fb in ctx.functions.items():
        if k not in functions:
            f = onnx.FunctionProto()
            f.ParseFromString(fb)
            functions[k] = f
    for f in functions.values():
        for o in f.opset_import:
            opsets.setdefault(o.domain, int(o.version))
        if f.domain:
            opsets.setdefault(f.domain, 1)
    op_ids = [helper.make_opsetid(d, v) for d, v in sorted(opsets.items())]
    m = helper.make_model(graph, opset_imports=op_ids, functions=list(functions.values()),
                          producer_name=g.meta.producer or "graphopt", doc_string=g.meta.doc)
    need = helper.find_min_ir_version_for(op_ids, ignore_unknown=True)
    ir = max(g.meta.ir_version or need, need)
    if ctx.initializers and ir < 4:
        ir = 4  # IR 3 wants every initializer listed as a graph input (and fixes it)
    if functions and ir < 8:
        ir = 8
    m.ir_version = ir
    for k, v in g.meta.metadata:
        p = m.metadata_props.add()
        p.key, p.value = k, v
    return m


def _check(m: "onnx.ModelProto | str | bytes", full: bool) -> None:
    import onnx

    try:
        onnx.checker.check_model(m, full_check=full)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"exported model fails the ONNX checker: {first}") from e


def _check_external(m: "onnx.ModelProto", sink: DataSink, full: bool) -> None:
    """Check a model whose external data still sits in its temp file: a copy pointing at the
    temp file is checked from disk beside it."""
    import onnx

    tmp_data = sink.temp_path
    sink.f.flush()
    c = onnx.ModelProto()
    c.CopyFrom(m)
    for t in c.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = tmp_data.name
    fd, path = tempfile.mkstemp(dir=str(tmp_data.parent), prefix=".check.", suffix=".onnx")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(c.SerializeToString())
        _check(path, full)
    finally:
        os.unlink(path)


def _const_bytes(g: Graph) -> int:
    """Bytes of the weights written: constants and inputs' defaults, each once."""
    seen: set[int] = set()
    total = 0
    datas = [n.const for n in g.nodes if n.op == "constant"] + [
        n.attrs["default"] for n in g.inputs if n.attrs.get("default") is not None]
    for d in datas:
        if id(d) not in seen:
            seen.add(id(d))
            total += d.nbytes
    return total


def to_model(g: Graph, opset: int | None = None, *, check: bool = True,
             full_check: bool = False) -> "onnx.ModelProto":
    """The graph as an ONNX ModelProto with its weights inline (use ``save`` for models whose
    weights approach 2 GiB)."""
    if _const_bytes(g) > _PROTO_LIMIT:
        raise ExportError(f"graph {g.name} holds {_const_bytes(g)} bytes of weights, too many "
                          f"for one protobuf; use save(g, path) (external data)")
    m = _build(g, opset, None)
    if check:
        _check(m, full_check)
    return m


# One-slot memo of the last inline export: the numeric check runs these bytes in ONNX Runtime and
# save() then writes the very same bytes (no second build, serialization and checker pass). Held
# weakly on the graph: it goes when the graph goes, when another graph is exported, or on save.
_last_export: "tuple[weakref.ref[Graph], int | None, bytes] | None" = None


def to_bytes(g: Graph, opset: int | None = None) -> bytes:
    """The graph as serialized ONNX (weights inline), checked by onnx.checker; remembered for the
    next ``save`` of the same graph. The bytes are those of ``to_model(g).SerializeToString()``;
    the weights never enter the proto (``onnx_io.MemorySink``, ``onnx_mapped.inline_parts``), and
    the checker sees the model with them as typed inputs (it reads no tensor data anyway)."""
    global _last_export
    hit = _last_export
    if hit is not None and hit[0]() is g and hit[1] == opset:
        return hit[2]
    _last_export = None
    if _const_bytes(g) > _PROTO_LIMIT:
        raise ExportError(f"graph {g.name} holds {_const_bytes(g)} bytes of weights, too many "
                          f"for one protobuf; use save(g, path) (external data)")
    # the weights are set aside while the proto is built and serialized, then put in place:
    # the bytes protobuf writes for the inline model, with each weight copied once
    aside = MemorySink()
    m = _build(g, opset, aside)
    _check(externals_as_inputs(m), False)  # the structure; the weights are bytes it never reads
    try:
        data = inline_parts(m.SerializeToString(), aside.location, aside.parts)
    except ValueError as e:
        raise ExportError(f"cannot put the weights of graph {g.name} into its model: {e}",
                          where=f"graph {g.name}") from None
    del m, aside
    _last_export = (weakref.ref(g), opset, data)
    return data


def _take_export(g: Graph, opset: int | None) -> bytes | None:
    global _last_export
    hit = _last_export
    if hit is not None and hit[0]() is g and hit[1] == opset:
        _last_export = None
        return hit[2]
    return None


def save(g: Graph, path: str | Path, opset: int | None = None, *,
         external_threshold: int = EXTERNAL_THRESHOLD, check: bool = True,
         full_check: bool = False) -> Path:
    """Write the graph to ``path`` atomically. Weights above ``external_threshold`` bytes in
    total go to ``<file name>.data`` beside it. Returns the path."""
    p = Path(path)
    external = _const_bytes(g) > external_threshold
    checked = None if external or full_check else _take_export(g, opset)
    if checked is not None:  # exactly the bytes the numeric check ran, already checked
        with AtomicFiles() as af:
            af.open(p).write(checked)
        return p
    with AtomicFiles() as af:
        mf = af.open(p)
        if external:
            data_name = p.name + ".data"
            df = af.open(p.parent / data_name)
            sink = DataSink(df, data_name, af.temp_of(df))
            m = _build(g, opset, sink)
        else:
            m = _build(g, opset, None)
        if m.ByteSize() > _PROTO_LIMIT:
            raise ExportError(f"model proto of {m.ByteSize()} bytes exceeds 2 GiB; lower "
                              f"external_threshold", where=str(p))
        data = m.SerializeToString()  # once: the checker reads the same bytes that are written
        if check and external:
            _check_external(m, sink, full_check)
        elif check:
            _check(data, full_check)
        mf.write(data)
    return p

