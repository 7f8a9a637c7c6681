"""Torch forms of the few standard ONNX ops that opaque nodes carry and torch spells directly.

An opaque ONNX node runs in ONNX Runtime on its own (``opaque.run_onnx_node``): the inputs go
to the host as numpy arrays and the outputs come back. For the ops below that round trip is
avoidable, so the torch semantics (the torch callable, the codegen runtime) runs them as torch
ops on the inputs' device instead. They are the glue of the KV-cache decode graph
(``graphopt.kv.glue``): the cache append (``Concat``), the run-time lengths (``Shape``) and the
position ranges (``Range``).

``torch_form(attrs)`` is the function for an opaque node's attrs, or None when its op has no
entry here (the node then runs in ONNX Runtime as before).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

from ..ir.node import Attrs
from ..ir.types import TensorType

TorchForm = Callable[[Sequence[Any], dict[str, Any], Attrs], tuple[Any, ...]]


def _shape(xs: Sequence[Any], a: dict[str, Any], attrs: Attrs) -> tuple[Any, ...]:
    import torch

    dims = list(xs[0].shape)[slice(a.get("start", 0), a.get("end"))]
    return (torch.tensor(dims, dtype=torch.int64, device=xs[0].device),)


def _range(xs: Sequence[Any], a: dict[str, Any], attrs: Attrs) -> tuple[Any, ...]:
    """start + delta * arange(n). n is the output's length, read off the bound symbols when the
    output type names it (no device sync), else computed from the values."""
    import torch

    from .symbols import eval_dim

    start, limit, delta = xs
    t = attrs["out_types"][0]
    n = eval_dim(t.shape[0]) if isinstance(t, TensorType) and t.shape else None
    if n is None:
        n = max(0, math.ceil((float(limit) - float(start)) / float(delta)))
    return (start + delta * torch.arange(n, dtype=start.dtype, device=start.device),)


def _concat(xs: Sequence[Any], a: dict[str, Any], attrs: Attrs) -> tuple[Any, ...]:
    import torch

    return (torch.cat(list(xs), dim=a["axis"]),)


FORMS: dict[str, TorchForm] = {"Shape": _shape, "Range": _range, "Concat": _concat}


@functools.lru_cache(maxsize=4096)
def _proto_attrs(proto: bytes) -> dict[str, Any]:
    """The attributes of a serialized NodeProto, by name (parsed once per distinct node)."""
    import onnx
    from onnx import helper

    node = onnx.NodeProto()
    node.ParseFromString(proto)
    return {at.name: helper.get_attribute_value(at) for at in node.attribute}


def torch_form(attrs: Attrs) -> Callable[[Sequence[Any]], tuple[Any, ...]] | None:
    """How to run the opaque ONNX node with ``attrs`` as torch ops, or None (no torch form:
    a non-default domain, an op outside ``FORMS``, outer-scope captures or omitted inputs)."""
    form = FORMS.get(attrs["op_type"])
    if form is None or attrs.get("domain") or attrs.get("proto") is None \
            or attrs.get("captured") or not all(attrs.get("present") or ()):
        return None
    a = _proto_attrs(attrs["proto"])
    return lambda xs: form(xs, a, attrs)
