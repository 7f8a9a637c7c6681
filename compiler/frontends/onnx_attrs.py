"""Attributes of ONNX nodes as Python values, for the ONNX importer.

``decode_attr`` gives an attribute's value the way ops' ``from_onnx`` read it (``ctx.attrs``):
ints, floats, strings, lists of them, tensors as numpy arrays. ``unmodelled_attr`` says which
attribute kinds keep a node opaque (subgraphs, sparse tensors, type protos, references to a
function's attributes) and ``constant_data`` reads the value of a ``Constant`` node. Anything
outside what the IR can hold raises ``KeepOpaque`` with the reason.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..ir.node import ConstData
from .onnx_io import sparse_to_dense, tensor_to_const

if TYPE_CHECKING:
    import onnx

__all__ = ["KeepOpaque", "constant_data", "decode_attr", "unmodelled_attr"]

# AttributeProto.AttributeType codes
_A_TENSOR, _A_GRAPH, _A_SPARSE, _A_TENSORS, _A_GRAPHS, _A_SPARSES, _A_TP, _A_TPS = (
    4, 5, 11, 9, 10, 12, 13, 14)


class KeepOpaque(Exception):
    """Keep this node opaque for the given reason."""


def decode_attr(a: "onnx.AttributeProto") -> Any:
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
        raise KeepOpaque(f"attribute tensor {t.name!r} has external data")
    a = numpy_helper.to_array(t)
    return a


def unmodelled_attr(node: "onnx.NodeProto") -> str | None:
    """Why an attribute of ``node`` keeps it opaque whatever its op type, else None."""
    for a in node.attribute:
        if a.type in (_A_GRAPH, _A_GRAPHS):
            return "has subgraphs (control flow)"
        if a.type in (_A_SPARSE, _A_SPARSES, _A_TP, _A_TPS):
            return f"attribute {a.name!r} of kind {a.type} is not modelled"
        if a.ref_attr_name:
            return f"attribute {a.name!r} refers to a function attribute"
    return None


def constant_data(node: "onnx.NodeProto", base_dir: Path | None, where: str) -> ConstData:
    """The value of a ``Constant`` node (external data is read relative to ``base_dir``)."""
    from onnx import helper

    if len(node.attribute) != 1:
        raise KeepOpaque(f"Constant with {len(node.attribute)} attributes")
    a = node.attribute[0]
    if a.name == "value":
        if a.t.data_location == 1:
            data = tensor_to_const(a.t, base_dir, where)
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
        raise KeepOpaque(f"Constant attribute {a.name!r}")
    if a.ref_attr_name:
        raise KeepOpaque("Constant refers to a function attribute")
    return data
