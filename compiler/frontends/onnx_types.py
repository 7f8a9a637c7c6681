"""ONNX value types as IR types, for the ONNX importer.

``OnnxTypes`` turns a ``TypeProto`` into a ``TensorType`` / ``OpaqueType``, giving every named dim
(``dim_param``) a valid, deterministic IR symbol and every unknown dim a fresh one (``unk_N``);
``compatible`` says whether a type the IR infers agrees with the one ONNX infers.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..errors import FrontendError
from ..ir.types import DType, OpaqueType, TensorType, ValueType

if TYPE_CHECKING:
    import onnx

__all__ = ["OnnxTypes", "all_dim_params", "collect_params", "compatible"]

_BAD_SYM = re.compile(r"[^A-Za-z0-9_.]")


def _elem_types() -> frozenset[int]:
    from onnx import TensorProto

    return frozenset(TensorProto.DataType.values())


_ONNX_ELEM_TYPES = _elem_types()


class OnnxTypes:
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
            if tt.elem_type not in _ONNX_ELEM_TYPES:
                raise FrontendError(f"element type {tt.elem_type} is not an ONNX type "
                                    f"(TensorProto.DataType)")
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


def all_dim_params(g: "onnx.GraphProto") -> set[str]:
    """Every ``dim_param`` the graph's inputs, outputs and value_info name."""
    out: set[str] = set()
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        collect_params(vi.type, out)
    return out


def collect_params(tp: "onnx.TypeProto", out: set[str]) -> None:
    """Add the ``dim_param`` names of ``tp`` (through sequences and optionals) to ``out``."""
    kind = tp.WhichOneof("value")
    if kind == "tensor_type" and tp.tensor_type.HasField("shape"):
        out.update(d.dim_param for d in tp.tensor_type.shape.dim if d.dim_param)
    elif kind == "sequence_type":
        collect_params(tp.sequence_type.elem_type, out)
    elif kind == "optional_type":
        collect_params(tp.optional_type.elem_type, out)


def compatible(ir: ValueType, ox: ValueType) -> str | None:
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
