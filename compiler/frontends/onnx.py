"""ONNX -> IR.

``load(path_or_model)`` lifts any ONNX model ONNX Runtime can run into a Graph. Each default-domain
node goes through the frontend's lowering of its type or its op's ``from_onnx(ctx)``
(``onnx_lift``); nodes nothing models (other domains, control flow, local function calls,
unsupported attributes) become ``opaque`` nodes that carry their NodeProto through to export
(``onnx_opaque``). ``load_with_report`` also says which nodes stayed opaque and why.

This module is the driver: it checks and reads the model, binds graph inputs and initializers,
orders the nodes and hands each to the import stages, which share an ``ImportState``: constants
of the model and of shape computations (``onnx_attrs``, ``onnx_fold``), lifting through the ops,
keeping the rest opaque.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import FrontendError
from ..ir.graph import Graph, GraphMeta
from ..ir.node import ConstData, Node, Origin, input_node
from .onnx_attrs import KeepOpaque, constant_data
from .onnx_fold import bind_known, fold_onnx, track
from .onnx_io import (check_external_files, check_model_shape, externals_as_inputs,
                      read_model, sparse_to_dense, tensor_to_const)
from .onnx_lift import lift
from .onnx_opaque import captured_names, keep_opaque
from .onnx_state import ImportReport, ImportState
from .onnx_types import collect_params

if TYPE_CHECKING:
    import onnx

__all__ = ["load", "load_with_report"]


# ---- public entry points ----------------------------------------------------------------------

def load(path_or_model: "str | Path | onnx.ModelProto", *, check: bool = True,
         base_dir: str | Path | None = None, fold_initializer_inputs: bool = False) -> Graph:
    """Load an ONNX model (file path or ModelProto) into a Graph. ``base_dir``: where the
    external data of an in-memory ModelProto lives (a file's own directory otherwise).
    An initializer that is also a graph input is a constant at IR version 3 (as in ONNX
    Runtime); from IR 4 it is an input its users may feed, kept as a graph input with the
    initializer as its ``default`` (never folded) unless ``fold_initializer_inputs``."""
    return load_with_report(path_or_model, check=check, base_dir=base_dir,
                            fold_initializer_inputs=fold_initializer_inputs)[0]


def load_with_report(path_or_model: "str | Path | onnx.ModelProto", *, check: bool = True,
                     base_dir: str | Path | None = None, fold_initializer_inputs: bool = False
                     ) -> tuple[Graph, ImportReport]:
    """``load`` plus a report: which nodes stayed opaque and why, how many were folded."""
    import onnx

    root: Path | None
    if isinstance(path_or_model, onnx.ModelProto):
        model, source = path_or_model, "<ModelProto>"
        root = Path(base_dir).resolve() if base_dir is not None else None
        check_model_shape(model, source)
        target: "onnx.ModelProto | str" = externals_as_inputs(model)
    elif isinstance(path_or_model, (str, Path)):
        p = Path(path_or_model)
        # large inline weights stay in the file (mapped when read): the proto is the graph
        model = read_model(p, map_initializers=True)
        root, source = p.resolve().parent, str(p)
        target = externals_as_inputs(model)  # external data is checked by check_external_files
    else:
        raise FrontendError(f"expected a path or onnx.ModelProto, got "
                            f"{type(path_or_model).__name__}")
    report = ImportReport(source)
    check_external_files(model, root, source)  # our own errors before the checker's
    if check:
        _check(target, source, report)
    imp = _Importer(model, root, source, report)
    imp.fold_initializer_inputs = fold_initializer_inputs
    return imp.run(), report


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


# ---- the importer -----------------------------------------------------------------------------

class _Importer(ImportState):
    """Walks one model: inputs, initializers, then every node in order, then the outputs."""

    fold_initializer_inputs: bool = False

    def run(self) -> Graph:
        g = self.model.graph
        inferred = self._infer()
        ig = inferred.graph
        for vi in list(ig.value_info) + list(ig.output) + list(ig.input):
            if vi.HasField("type"):
                self.tmap[vi.name] = vi.type
        for vi in list(g.value_info):  # the model's own annotations fill gaps
            if vi.HasField("type") and vi.name not in self.tmap:
                self.tmap[vi.name] = vi.type
        inits = {t.name for t in g.initializer} | {t.values.name for t in g.sparse_initializer}
        inputs: list[Node] = []
        overridable = {} if self.model.ir_version < 4 or self.fold_initializer_inputs else {
            t.name: t for t in g.initializer if t.name in {vi.name for vi in g.input}}
        for vi in g.input:
            if vi.name in overridable:
                inputs.append(self._overridable(vi, overridable[vi.name]))
                continue
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
            if t.name in overridable:
                continue
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
            collect_params(vi.type, io_params)
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
        self.report.opaque = [note for note, n in self.notes if n in live]
        return graph

    def _overridable(self, vi: "onnx.ValueInfoProto", t: "onnx.TensorProto") -> Node:
        """An IR >= 4 initializer listed as a graph input: ONNX Runtime lets its users feed it
        (and never constant-folds it), so it stays an input whose ``default`` is the
        initializer."""
        if vi.name in self.env:
            raise FrontendError(f"graph input {vi.name!r} is declared twice", where=self.source)
        data = tensor_to_const(t, self.base_dir, f"{self.source}: initializer {t.name!r}")
        ty = self.types.convert(vi.type) if vi.HasField("type") else data.type
        n = Node.build("input", (), {"name": vi.name, "type": ty, "default": data})
        self.env[vi.name] = n.out
        return n

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
            names.extend(captured_names(n))
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
            except KeepOpaque as e:
                keep_opaque(self, node, origin, str(e))
                return
        svs = track(self, node)
        if svs is not None and bind_known(self, node, svs, origin):
            self.report.folded += 1
            return
        reason = lift(self, node, origin)
        if reason is None:
            return
        if fold_onnx(self, node, origin):
            self.report.folded += 1
            return
        keep_opaque(self, node, origin, reason)

    def _constant(self, node: "onnx.NodeProto", origin: Origin) -> None:
        where = self.where(node)
        data = constant_data(node, self.base_dir, where)
        v = Node.build("constant", (), {"data": data}, origin).out
        outs = [o for o in node.output if o]
        if len(outs) != 1:
            raise FrontendError("Constant must have one output", where=where)
        self.env[outs[0]] = v

