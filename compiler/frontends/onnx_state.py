"""What the ONNX importer knows of one model while it walks it, and what it reports.

``ImportState`` holds the model's facts (opsets, local functions, where its files are), the IR
value of every ONNX name bound so far, the tracked shape values of small int tensors and ONNX's
inferred types; the import stages (``onnx_fold``, ``onnx_lift``, ``onnx_opaque``) read and extend
it, the driver (``onnx._Importer``) walks the nodes. ``ImportReport`` is what ``load_with_report``
returns: the opaque nodes with their reasons, how many nodes were folded, warnings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..ir.node import ConstData, Node, Value
from ..ir.types import ValueType
from .onnx_symbolic import SymValue, from_const
from .onnx_types import OnnxTypes, all_dim_params

if TYPE_CHECKING:
    import onnx

__all__ = ["ImportReport", "ImportState", "OpaqueNote"]


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


class ImportState:
    """One model being imported: its facts and everything bound so far (by ONNX value name)."""

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
        self.types = OnnxTypes(all_dim_params(model.graph))
        # ONNX's inferred types by value name (the model's own annotations fill gaps)
        self.tmap: dict[str, Any] = {}
        self.env: dict[str, Value] = {}
        # symbolic values of small int tensors (by ONNX name; see onnx_symbolic)
        self.sym: dict[str, SymValue] = {}
        # IR values folded to constants at import (see onnx_fold.fold_ir), memoized by node
        self.folded: dict[tuple[Node, int], Value] = {}
        self.notes: list[tuple[OpaqueNote, Node]] = []

    def where(self, node: "onnx.NodeProto | None" = None) -> str:
        if node is None:
            return self.source
        nm = node.name or next((o for o in node.output if o), "?")
        dom = f"{node.domain}::" if node.domain else ""
        return f"{self.source}: node {nm!r} ({dom}{node.op_type})"

    def type_of(self, name: str) -> ValueType:
        """ONNX's inferred type of the value ``name`` as an IR type."""
        return self.types.convert(self.tmap.get(name))

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
