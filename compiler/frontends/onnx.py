"""ONNX -> IR.

``load(path_or_model)`` lifts any ONNX model ONNX Runtime can run into a Graph. Each default-domain
node goes through its op's ``from_onnx(ctx)`` (see ``ImportCtx``); nodes no op models (other
domains, control flow, local function calls, unsupported attributes) become ``opaque`` nodes that
carry their NodeProto through to export. ``load_with_report`` also says which nodes stayed opaque
and why.
"""
from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import FrontendError, GraphOptError, ShapeError
from ..ir.fold import FOLDABLE_ONNX, FoldPolicy, NotFolded, fold_node
from ..ir.graph import Graph, GraphMeta
from ..ir.node import ConstData, Node, Origin, Value, input_node
from ..ir.types import DType, OpaqueType, TensorType, ValueType
from .onnx_io import (check_external_files, check_model_shape, read_model, sparse_to_dense,
                      subgraphs, tensor_to_const)
from .onnx_symbolic import SymValue, from_const, propagate, range_length, tracks

if TYPE_CHECKING:
    import onnx

__all__ = ["load", "load_with_report", "ImportCtx", "ImportReport", "OpaqueNote",
           "opaque_reason"]

# why each opaque node of an imported graph stayed opaque (weak: dies with the node)
_REASONS: "weakref.WeakKeyDictionary[Node, str]" = weakref.WeakKeyDictionary()

# constants computed at import: small values (shape computations) only, each output and each
# input of a node run in ONNX Runtime at most 2**16 elements; ONNX's declared dtypes win
IMPORT_FOLD = FoldPolicy(max_elements=1 << 16, growth_only=False, shared_max_elements=None,
                         max_onnx_input_elements=1 << 16, cast=True)

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

# AttributeProto.AttributeType codes
_A_TENSOR, _A_GRAPH, _A_SPARSE, _A_TENSORS, _A_GRAPHS, _A_SPARSES, _A_TP, _A_TPS = (
    4, 5, 11, 9, 10, 12, 13, 14)


def opaque_reason(node: Node) -> str | None:
    """Why the frontend kept ``node`` opaque (None when unknown or not opaque)."""
    return _REASONS.get(node)


@dataclass(frozen=True)
class OpaqueNote:
    node: str  # ONNX node name (or its first output)
    op_type: str
    domain: str
    reason: str


@dataclass
class ImportReport:
    source: str
    nodes: int = 0  # ONNX nodes in the main graph
    folded: int = 0  # nodes evaluated to constants at import (all inputs constant)
    opaque: list[OpaqueNote] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.source}: {self.nodes} ONNX nodes, {len(self.opaque)} opaque, "
                 f"{self.folded} folded to constants"]
        lines += [f"  opaque {n.domain + '::' if n.domain else ''}{n.op_type} {n.node!r}: "
                  f"{n.reason}" for n in self.opaque]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


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


# ---- public entry points ----------------------------------------------------------------------

def load(path_or_model: "str | Path | onnx.ModelProto", *, check: bool = True,
         base_dir: str | Path | None = None) -> Graph:
    """Load an ONNX model (file path or ModelProto) into a Graph. ``base_dir``: where the
    external data of an in-memory ModelProto lives (a file's own directory otherwise)."""
    return load_with_report(path_or_model, check=check, base_dir=base_dir)[0]


def load_with_report(path_or_model: "str | Path | onnx.ModelProto", *, check: bool = True,
                     base_dir: str | Path | None = None) -> tuple[Graph, ImportReport]:
    """``load`` plus a report: which nodes stayed opaque and why, how many were folded."""
    import onnx

    root: Path | None
    if isinstance(path_or_model, onnx.ModelProto):
        model, source = path_or_model, "<ModelProto>"
        root = Path(base_dir).resolve() if base_dir is not None else None
        check_model_shape(model, source)
        target: "onnx.ModelProto | str" = _without_external(model)
    elif isinstance(path_or_model, (str, Path)):
        p = Path(path_or_model)
        model = read_model(p)
        root, source = p.resolve().parent, str(p)
        target = str(p)  # the checker resolves external data next to the file
    else:
        raise FrontendError(f"expected a path or onnx.ModelProto, got "
                            f"{type(path_or_model).__name__}")
    report = ImportReport(source)
    check_external_files(model, root, source)  # our own errors before the checker's
    if check:
        _check(target, source, report)
    return _Importer(model, root, source, report).run(), report


def _without_external(m: "onnx.ModelProto") -> "onnx.ModelProto":
    """For checking an in-memory model: external initializers become typed graph inputs (the
    checker would look for their files relative to the working directory)."""
    import onnx
    from onnx import helper

    ext = [t for t in m.graph.initializer if t.data_location == 1]
    if not ext:
        return m
    c = onnx.ModelProto()
    c.CopyFrom(m)
    keep = [t for t in c.graph.initializer if t.data_location != 1]
    del c.graph.initializer[:]
    c.graph.initializer.extend(keep)
    declared = {i.name for i in c.graph.input}
    c.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                         for t in ext if t.name not in declared)
    return c


def _check(model: "onnx.ModelProto | str", source: str, report: ImportReport) -> None:
    """onnx.checker on the proto (or on the file, so external data resolves next to it)."""
    import onnx

    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as e:
        # one line, but whole: the checker names the culprit node on the following lines
        first = " ".join(str(e).split())[:500] or type(e).__name__
        raise FrontendError(f"invalid ONNX model: {first}", where=source) from None
    small = Path(model).stat().st_size if isinstance(model, str) else model.ByteSize()
    if small < (1 << 31) - (1 << 20):
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception as e:  # strict inference failing is not fatal: ORT may still run it
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            report.warnings.append(f"onnx full check: {first}")


# ---- types ------------------------------------------------------------------------------------

_BAD_SYM = re.compile(r"[^A-Za-z0-9_.]")


class _Types:
    """ONNX TypeProto -> ValueType, with deterministic symbols for named and unknown dims."""

    def __init__(self, used_params: set[str]) -> None:
        self.used = set(used_params)
        self.params: dict[str, str] = {}
        self.n_unk = 0
        # symbols of the model's own declarations; others were invented by shape inference
        self.declared: frozenset[str] = frozenset(used_params)

    def symbol(self, param: str) -> str:
        s = self.params.get(param)
        if s is None:
            s = _BAD_SYM.sub("_", param)
            if not s or not (s[0].isalpha() or s[0] == "_") or re.fullmatch(r"_x\d+", s):
                s = "d_" + s
            base, k = s, 1
            while s in self.used and s != param:
                s = f"{base}_{k}"
                k += 1
            self.used.add(s)
            self.params[param] = s
        return s

    def fresh(self) -> str:
        while f"unk_{self.n_unk}" in self.used:
            self.n_unk += 1
        s = f"unk_{self.n_unk}"
        self.used.add(s)
        return s

    def convert(self, tp: "onnx.TypeProto | None") -> ValueType:
        if tp is None or tp.WhichOneof("value") is None:
            return OpaqueType(b"", "unknown")
        kind = tp.WhichOneof("value")
        if kind == "tensor_type" and tp.tensor_type.elem_type != 0:
            tt = tp.tensor_type
            try:
                dt = DType.from_onnx(tt.elem_type)
            except TypeError:
                return OpaqueType(tp.SerializeToString(), f"tensor({tt.elem_type})")
            if not tt.HasField("shape"):
                return TensorType(None, dt)
            dims: list[int | str] = []
            for d in tt.shape.dim:
                if d.HasField("dim_value") and d.dim_value >= 0:
                    dims.append(int(d.dim_value))
                elif d.HasField("dim_param") and d.dim_param:
                    dims.append(self.symbol(d.dim_param))
                else:
                    dims.append(self.fresh())
            return TensorType(tuple(dims), dt)
        return OpaqueType(tp.SerializeToString(), _summary(tp))


def _summary(tp: "onnx.TypeProto") -> str:
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        et = tp.tensor_type.elem_type
        return "tensor(?)" if et == 0 else f"tensor({et})"
    if kind == "sequence_type":
        return f"seq({_summary(tp.sequence_type.elem_type)})"
    if kind == "optional_type":
        return f"optional({_summary(tp.optional_type.elem_type)})"
    if kind == "map_type":
        return f"map({tp.map_type.key_type},{_summary(tp.map_type.value_type)})"
    if kind == "sparse_tensor_type":
        return f"sparse({tp.sparse_tensor_type.elem_type})"
    return kind or "unknown"


def _all_dim_params(g: "onnx.GraphProto") -> set[str]:
    out: set[str] = set()
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        _collect_params(vi.type, out)
    return out


def _collect_params(tp: "onnx.TypeProto", out: set[str]) -> None:
    kind = tp.WhichOneof("value")
    if kind == "tensor_type" and tp.tensor_type.HasField("shape"):
        out.update(d.dim_param for d in tp.tensor_type.shape.dim if d.dim_param)
    elif kind == "sequence_type":
        _collect_params(tp.sequence_type.elem_type, out)
    elif kind == "optional_type":
        _collect_params(tp.optional_type.elem_type, out)


def _compatible(ir: ValueType, ox: ValueType) -> str | None:
    """None when the IR type agrees with ONNX's inferred type, else why not."""
    if isinstance(ox, OpaqueType):
        if not ox.proto:  # ONNX could not infer it
            return None
        return None if isinstance(ir, OpaqueType) else f"ONNX infers {ox}, the IR {ir}"
    if not isinstance(ir, TensorType):
        return f"ONNX infers {ox}, the IR {ir}"
    if ir.dtype != ox.dtype:
        return f"IR infers {ir}, ONNX {ox}"
    if ir.shape is None or ox.shape is None:
        return None
    if len(ir.shape) != len(ox.shape):
        return f"IR infers {ir}, ONNX {ox}"
    for a, b in zip(ir.shape, ox.shape):
        if isinstance(a, int) and isinstance(b, int) and a != b:
            return f"IR infers {ir}, ONNX {ox}"
    return None


# ---- attributes -------------------------------------------------------------------------------

def _decode_attr(a: "onnx.AttributeProto") -> Any:
    from onnx import helper

    if a.type == _A_TENSOR:
        return _tensor_value(a.t)
    if a.type == _A_TENSORS:
        return [_tensor_value(t) for t in a.tensors]
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="surrogateescape")
    if isinstance(v, list):
        return [x.decode("utf-8", errors="surrogateescape") if isinstance(x, bytes) else x
                for x in v]
    return v


def _tensor_value(t: "onnx.TensorProto") -> np.ndarray:
    from onnx import numpy_helper

    if t.data_location == 1:
        raise _Opaque(f"attribute tensor {t.name!r} has external data")
    a = numpy_helper.to_array(t)
    return a


def _gather_nd_shape(node: "onnx.NodeProto", data: tuple[Any, ...], idx: tuple[Any, ...]
                     ) -> tuple[Any, ...] | None:
    b = 0
    for a in node.attribute:
        if a.name == "batch_dims":
            b = int(a.i)
    if not idx or not isinstance(idx[-1], int) or b + idx[-1] > len(data):
        return None
    return tuple(idx[:-1]) + tuple(data[b + idx[-1]:])


class _Opaque(Exception):
    """Internal: keep this node opaque for the given reason."""


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


# ---- the importer -----------------------------------------------------------------------------

class _Importer:
    def __init__(self, model: "onnx.ModelProto", base_dir: Path | None, source: str,
                 report: ImportReport) -> None:
        self.model = model
        self.base_dir = base_dir
        self.source = source
        self.report = report
        self.opsets = {o.domain: int(o.version) for o in model.opset_import}
        if model.ir_version < 3 and "" not in self.opsets:
            self.opsets[""] = 1
        self.opset = self.opsets.get("", self.opsets.get("ai.onnx", 1))
        self.functions = {(f.domain, f.name) for f in model.functions}
        self.func_bytes = tuple(f.SerializeToString() for f in model.functions)
        self.env: dict[str, Value] = {}
        self._folded: dict[tuple[Node, int], Value] = {}
        # symbolic values of small int tensors (by ONNX name; see onnx_symbolic)
        self.sym: dict[str, SymValue] = {}
        self._notes: list[tuple[OpaqueNote, Node]] = []

    def where(self, node: "onnx.NodeProto | None" = None) -> str:
        if node is None:
            return self.source
        nm = node.name or next((o for o in node.output if o), "?")
        dom = f"{node.domain}::" if node.domain else ""
        return f"{self.source}: node {nm!r} ({dom}{node.op_type})"

    def run(self) -> Graph:
        g = self.model.graph
        self.types = _Types(_all_dim_params(g))
        inferred = self._infer()
        self.tmap: dict[str, Any] = {}
        ig = inferred.graph
        for vi in list(ig.value_info) + list(ig.output) + list(ig.input):
            if vi.HasField("type"):
                self.tmap[vi.name] = vi.type
        for vi in list(g.value_info):  # the model's own annotations fill gaps
            if vi.HasField("type") and vi.name not in self.tmap:
                self.tmap[vi.name] = vi.type
        inits = {t.name for t in g.initializer} | {t.values.name for t in g.sparse_initializer}
        inputs: list[Node] = []
        for vi in g.input:
            if vi.name in inits:
                continue  # IR < 4 style: the initializer is the value
            if vi.name in self.env:
                raise FrontendError(f"graph input {vi.name!r} is declared twice",
                                    where=self.source)
            n = input_node(vi.name, self.types.convert(vi.type if vi.HasField("type")
                                                       else None))
            inputs.append(n)
            self.env[vi.name] = n.out
        for t in g.initializer:
            where = f"{self.source}: initializer {t.name!r}"
            data = tensor_to_const(t, self.base_dir, where)
            self.env[t.name] = Node.build("constant", (), {"data": data},
                                          Origin("onnx", t.name, "initializer")).out
        for sp in g.sparse_initializer:
            where = f"{self.source}: sparse initializer {sp.values.name!r}"
            arr = sparse_to_dense(sp, where)
            self.env[sp.values.name] = Node.build(
                "constant", (), {"data": ConstData(arr)},
                Origin("onnx", sp.values.name, "sparse_initializer")).out
        order = self._toposort(list(g.node))
        self.report.nodes = len(order)
        # the model's own input / output dims; other symbols (value_info annotations, ONNX
        # shape inference's unk__N) give way to dims graphopt proves
        io_params: set[str] = set()
        for vi in list(g.input) + list(g.output):
            _collect_params(vi.type, io_params)
        self.types.declared = frozenset(self.types.symbol(p) for p in sorted(io_params))
        for node in order:
            self._node(node)
        outputs, names = [], []
        for vi in g.output:
            if vi.name not in self.env:
                raise FrontendError(f"graph output {vi.name!r} is not produced by any node",
                                    where=self.source)
            outputs.append(self.env[vi.name])
            names.append(vi.name)
        meta = GraphMeta(
            opsets=tuple((d, v) for d, v in self.opsets.items()),
            ir_version=int(self.model.ir_version) or None,
            producer=self.model.producer_name or "graphopt",
            doc=self.model.doc_string,
            metadata=tuple((p.key, p.value) for p in self.model.metadata_props),
            functions=self.func_bytes,
            source=self.source,
        )
        graph = Graph(inputs, outputs, names, name=g.name or "main", meta=meta)
        # nodes left dead (shape chains whose consumers read dims) are not in the graph
        live = set(graph.nodes)
        self.report.opaque = [note for note, n in self._notes if n in live]
        return graph

    def _infer(self) -> "onnx.ModelProto":
        from onnx import shape_inference

        try:
            return shape_inference.infer_shapes(self.model, check_type=False, strict_mode=False,
                                                data_prop=True)
        except Exception as e:  # non-strict inference should not fail; say so if it does
            self.report.warnings.append(f"onnx shape inference failed: {type(e).__name__}: "
                                        f"{str(e).splitlines()[0] if str(e) else ''}")
            return self.model

    def _toposort(self, nodes: list["onnx.NodeProto"]) -> list["onnx.NodeProto"]:
        """Kahn's order over the nodes; errors on undefined inputs, redefinitions and cycles."""
        producer: dict[str, int] = {}
        for i, n in enumerate(nodes):
            if n.domain not in self.opsets and (n.domain, n.op_type) not in self.functions:
                if not (n.domain == "ai.onnx" and "" in self.opsets):
                    raise FrontendError(f"op domain {n.domain!r} has no opset_import",
                                        where=self.where(n))
            for o in n.output:
                if not o:
                    continue
                if o in producer or o in self.env:
                    raise FrontendError(f"value {o!r} is defined more than once",
                                        where=self.where(n))
                producer[o] = i
        deps: list[set[int]] = []
        for n in nodes:
            ds: set[int] = set()
            names = [x for x in n.input if x]
            for a in n.attribute:
                for sub in subgraphs(a):
                    names.extend(_free_names(sub, set()))
            for x in names:
                if x in producer:
                    ds.add(producer[x])
                elif x not in self.env:
                    raise FrontendError(f"input {x!r} is not defined (no node, graph input or "
                                        f"initializer produces it)", where=self.where(n))
            deps.append(ds)
        users: list[list[int]] = [[] for _ in nodes]
        indeg = [len(d) for d in deps]
        for i, ds in enumerate(deps):
            for j in ds:
                users[j].append(i)
        ready = [i for i, d in enumerate(indeg) if d == 0]
        ready.reverse()
        order: list[int] = []
        while ready:
            i = ready.pop()
            order.append(i)
            for u in users[i]:
                indeg[u] -= 1
                if indeg[u] == 0:
                    ready.append(u)
        if len(order) != len(nodes):
            left = {i for i, d in enumerate(indeg) if d > 0}
            # walk predecessors inside the remainder until a node repeats: it is on a cycle
            i = min(left)
            seen: list[int] = []
            while i not in seen:
                seen.append(i)
                i = min(j for j in deps[i] if j in left)
            cyc = seen[seen.index(i):]
            names = " -> ".join(repr(nodes[k].name or nodes[k].output[0]) for k in cyc)
            raise FrontendError(f"the graph has a cycle ({names})", where=self.where(nodes[i]))
        return [nodes[i] for i in order]

    # ---- one node ---------------------------------------------------------------------------
    def _node(self, node: "onnx.NodeProto") -> None:
        outs = [o for o in node.output if o]
        origin = Origin("onnx", node.name or (outs[0] if outs else node.op_type), node.op_type)
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            try:
                self._constant(node, origin)
                return
            except _Opaque as e:
                self._opaque(node, origin, str(e))
                return
        svs = self._track(node)
        if svs is not None and self._bind_known(node, svs, origin):
            self.report.folded += 1
            return
        reason = self._lift(node, origin)
        if reason is None:
            return
        if self._fold(node, origin):
            self.report.folded += 1
            return
        self._opaque(node, origin, reason)

    def symval(self, name: str) -> SymValue | None:
        """What is known of the value ``name`` as a small int tensor."""
        if not name:
            return None
        sv = self.sym.get(name)
        if sv is not None:
            return sv
        v = self.env.get(name)
        if v is None or v.node.op != "constant" or not v.node.const.has_array:
            return None
        d: ConstData = v.node.const
        if len(d.shape) > 1 or int(np.prod(d.shape)) > 64:
            return None
        return from_const(np.asarray(d.array))

    def _track(self, node: "onnx.NodeProto") -> list[SymValue | None] | None:
        """Follow a shape computation: the SymValues of the node's outputs (recorded)."""
        if node.domain not in ("", "ai.onnx") or not tracks(node.op_type):
            return None
        if ("", node.op_type) in self.functions or ("ai.onnx", node.op_type) in self.functions:
            return None
        ins = [self.symval(x) for x in node.input]
        if not any(ins) and node.op_type not in ("Shape", "Size"):
            return None
        tys = [self.env[x].type if x else None for x in node.input]
        try:
            attrs = {a.name: _decode_attr(a) for a in node.attribute}
        except _Opaque:
            return None
        outs = [o for o in node.output if o]
        svs = propagate(node.op_type, attrs, ins, tys, len(outs))
        if svs is None:
            return None
        for o, sv in zip(outs, svs):
            if sv is not None:
                self.sym[o] = sv
        return svs

    def _bind_known(self, node: "onnx.NodeProto", svs: list[SymValue | None],
                    origin: Origin) -> bool:
        """Outputs whose every element is a known int become constants."""
        outs = [o for o in node.output if o]
        arrs = [None if sv is None else sv.ints() for sv in svs]
        if len(arrs) != len(outs) or any(a is None for a in arrs):
            return False
        vals = []
        for o, a in zip(outs, arrs):
            v = Node.build("constant", (), {"data": ConstData(a)}, origin).out
            if _compatible(v.type, self._type_of(o)) is not None:
                return False
            vals.append(v)
        for o, v in zip(outs, vals):
            self.env[o] = v
        return True

    def _fold(self, node: "onnx.NodeProto", origin: Origin) -> bool:
        """Evaluate a shape-computation node whose inputs are all small constants (in ONNX
        Runtime, so the value is exactly what the model computes) into constants."""
        if node.domain not in ("", "ai.onnx") or node.op_type not in FOLDABLE_ONNX:
            return False
        if any(subgraphs(a) for a in node.attribute) or not any(node.input):
            return False
        if ("", node.op_type) in self.functions:
            return False
        ins = [self.env[nm] for nm in node.input if nm]
        if not all(v.node.op == "constant" for v in ins):
            return False
        outs = [o for o in node.output if o]
        types = [self._type_of(o) for o in outs]
        if not all(isinstance(t, TensorType) for t in types):
            return False
        attrs = {"op_type": node.op_type, "domain": node.domain,
                 "proto": node.SerializeToString(), "opsets": tuple(sorted(self.opsets.items())),
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
            self.report.warnings.append(f"could not fold {node.op_type} {origin.name!r}: "
                                        f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
        if res is None or isinstance(res, NotFolded):
            return False
        if any(_compatible(v.type, t) is not None for v, t in zip(res, types)):
            return False
        for o, v in zip(outs, res):
            self.env[o] = v
        return True

    def _lift(self, node: "onnx.NodeProto", origin: Origin) -> str | None:
        """Build the node through its op; returns the reason when it must stay opaque."""
        from ..ops.registry import Unsupported, ops_for_onnx

        if node.domain not in ("", "ai.onnx"):
            if (node.domain, node.op_type) in self.functions:
                return f"call of model-local function {node.domain}::{node.op_type}"
            return f"domain {node.domain!r} is not modelled"
        if ("", node.op_type) in self.functions or ("ai.onnx", node.op_type) in self.functions:
            return f"call of model-local function {node.op_type}"
        for a in node.attribute:
            if a.type in (_A_GRAPH, _A_GRAPHS):
                return "has subgraphs (control flow)"
            if a.type in (_A_SPARSE, _A_SPARSES, _A_TP, _A_TPS):
                return f"attribute {a.name!r} of kind {a.type} is not modelled"
            if a.ref_attr_name:
                return f"attribute {a.name!r} refers to a function attribute"
        ops = ops_for_onnx(node.op_type)
        if not ops:
            return f"no op maps ONNX {node.op_type}"
        try:
            attrs = {a.name: _decode_attr(a) for a in node.attribute}
        except _Opaque as e:
            return str(e)
        inputs = [self.env[x] if x else None for x in node.input]
        symvals = [self.symval(x) for x in node.input]
        reasons = []
        for op in ops:
            ctx = ImportCtx(node, self.opset, inputs, dict(attrs), origin, symvals)
            try:
                res = op.from_onnx(ctx)
            except Unsupported as e:
                reasons.append(f"{op.name}: {e}")
                continue
            except ShapeError as e:
                reasons.append(f"{op.name}: {e.one_line()}")
                continue
            except GraphOptError as e:
                raise FrontendError(f"op {op.name} failed to import it: {e.one_line()}",
                                    where=self.where(node)) from e
            except Exception as e:
                raise FrontendError(f"op {op.name}.from_onnx raised {type(e).__name__}: {e}",
                                    where=self.where(node)) from e
            if res is None:
                reasons.append(f"{op.name}: declined")
                continue
            vals = [res] if isinstance(res, Value) else list(res)
            why = self._bind(node, vals)
            if why is None:
                return None
            reasons.append(f"{op.name}: {why}")
        return "; ".join(reasons)

    def _bind(self, node: "onnx.NodeProto", vals: list[Value]) -> str | None:
        """Map the op's values onto the node's outputs after checking them against ONNX's
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
            ox = self._type_of(name)
            why = _compatible(v.type, ox)
            if why is not None:
                return f"output {name!r}: {why}"
        for name, v in pairs:
            self.env[name] = self._fold_ir(v)
        return None

    def _fold_ir(self, v: Value) -> Value:
        """A small value computed by pure IR ops from constants only becomes a constant here, so
        later nodes see it through ``ctx.const`` (shape computations of traced exports)."""
        n = v.node
        if n.op in ("constant", "input", "opaque"):
            return v
        key = (n, v.index)  # the node itself (not its id): keeps it alive while memoized
        hit = self._folded.get(key)
        if hit is not None:
            return hit
        self._folded[key] = v  # until proven foldable (also stops repeated walks)
        from ..ops.registry import get_op

        t = v.type
        if not get_op(n.op).pure or not isinstance(t, TensorType) or not t.is_static or \
                t.static_numel() > IMPORT_FOLD.max_elements:
            return v  # cannot fold: leave its inputs alone too
        ins = [self._fold_ir(x) for x in n.inputs]
        if not all(x.node.op == "constant" for x in ins):
            return v
        res = fold_node(n.with_inputs(ins), IMPORT_FOLD)
        if res is None or isinstance(res, NotFolded):
            if isinstance(res, NotFolded) and res.kind == "mismatch":  # an op bug: say so
                self.report.warnings.append(f"op {n.op} at {n.origin}: {res.reason}; "
                                            f"not folded")
            return v
        for i, c in enumerate(res):
            self._folded[(n, i)] = c
        self.report.folded += 1
        return res[v.index]

    def _type_of(self, name: str) -> ValueType:
        return self.types.convert(self.tmap.get(name))

    def _constant(self, node: "onnx.NodeProto", origin: Origin) -> None:
        from onnx import helper

        if len(node.attribute) != 1:
            raise _Opaque(f"Constant with {len(node.attribute)} attributes")
        a = node.attribute[0]
        where = self.where(node)
        if a.name == "value":
            if a.t.data_location == 1:
                data = tensor_to_const(a.t, self.base_dir, where)
            else:
                data = tensor_to_const(a.t, None, where)
        elif a.name == "sparse_value":
            data = ConstData(sparse_to_dense(a.sparse_tensor, where))
        elif a.name in ("value_float", "value_floats"):
            data = ConstData(np.asarray(helper.get_attribute_value(a), np.float32))
        elif a.name in ("value_int", "value_ints"):
            data = ConstData(np.asarray(helper.get_attribute_value(a), np.int64))
        elif a.name in ("value_string", "value_strings"):
            v = helper.get_attribute_value(a)
            arr = np.array(v, dtype=object) if isinstance(v, list) else np.array(v, object)
            data = ConstData(arr)
        else:
            raise _Opaque(f"Constant attribute {a.name!r}")
        if a.ref_attr_name:
            raise _Opaque("Constant refers to a function attribute")
        v = Node.build("constant", (), {"data": data}, origin).out
        outs = [o for o in node.output if o]
        if len(outs) != 1:
            raise FrontendError("Constant must have one output", where=where)
        self.env[outs[0]] = v

    def _opaque_type(self, node: "onnx.NodeProto", name: str, k: int) -> ValueType:
        """ONNX's inferred type of an opaque node's output, with the dims graphopt can prove
        (from tracked shape values or the inputs' IR types) replacing dims ONNX shape inference
        left unknown or invented (``unk__N``)."""
        t = self._type_of(name)
        if not isinstance(t, TensorType):
            return t
        proven = self._proven_shape(node, k)
        if proven is None:
            return t
        if t.shape is None:
            return TensorType(proven, t.dtype)
        if len(proven) != len(t.shape):
            return t
        return TensorType(tuple(p if isinstance(d, str) and d not in self.types.declared else d
                                for d, p in zip(t.shape, proven)), t.dtype)

    def _proven_shape(self, node: "onnx.NodeProto", k: int) -> tuple[Any, ...] | None:
        from ..ops.registry import broadcast_shapes

        outs = [o for o in node.output if o]
        if node.domain not in ("", "ai.onnx") or k >= len(outs):
            return None
        sv = self.sym.get(outs[k])
        if sv is not None:
            return sv.shape
        if k != 0:
            return None
        shapes = []
        for x in node.input:
            t = self.env[x].type if x else None
            shapes.append(t.shape if isinstance(t, TensorType) else None)
        op = node.op_type
        try:
            if op == "Range":
                n = range_length([self.symval(x) for x in node.input])
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
                return self._slice_shape(node, shapes[0])
            if op in ("Expand", "ConstantOfShape"):
                sv = self.symval(node.input[1 if op == "Expand" else 0])
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

    def _slice_shape(self, node: "onnx.NodeProto", shape: tuple[Any, ...]
                     ) -> tuple[Any, ...] | None:
        """x[..., 0:n] with a symbolic n (e.g. a position buffer cut to ``seq``): n, assuming
        n fits the axis (the model's later ops require it)."""
        ins = [self.symval(x) for x in node.input]
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
        for s, e, a, st in zip(starts, ends, axes, steps):
            if not isinstance(a, int) or not -len(out) <= a < len(out):
                return None
            if s != 0 or st != 1 or not isinstance(e, str):
                return None
            out[a] = e
        return tuple(out)

    def _opaque(self, node: "onnx.NodeProto", origin: Origin, reason: str) -> None:
        present = tuple(bool(x) for x in node.input)
        ins: list[Value] = [self.env[x] for x in node.input if x]
        captured: list[str] = []
        for a in node.attribute:
            for sub in subgraphs(a):
                for nm in _free_names(sub, set()):
                    if nm not in captured:
                        captured.append(nm)
        for nm in captured:
            if nm not in self.env:
                raise FrontendError(f"subgraph reads {nm!r}, which is not defined outside it",
                                    where=self.where(node))
            ins.append(self.env[nm])
        outs = [o for o in node.output if o]
        out_types = tuple(self._opaque_type(node, o, k) for k, o in enumerate(outs))
        uses_funcs = bool(self.functions) and (
            (node.domain, node.op_type) in self.functions
            or any(subgraphs(a) for a in node.attribute))
        attrs = {
            "op_type": node.op_type,
            "domain": node.domain,
            "proto": node.SerializeToString(),
            "opsets": tuple(sorted(self.opsets.items())),
            "out_types": out_types,
            "present": present,
            "captured": tuple(captured),
            "call": None,
            "functions": self.func_bytes if uses_funcs else (),
        }
        try:
            n = Node.build("opaque", ins, attrs, origin)
        except GraphOptError as e:
            raise FrontendError(f"cannot keep node opaque: {e.one_line()}",
                                where=self.where(node)) from e
        _REASONS[n] = reason
        note = OpaqueNote(origin.name, node.op_type, node.domain, reason)
        self.report.opaque.append(note)
        self._notes.append((note, n))
        for i, o in enumerate(outs):
            self.env[o] = Value(n, i)
