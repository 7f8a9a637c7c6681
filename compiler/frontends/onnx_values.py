"""ONNX values that are not numeric tensors, as the check gives them to ONNX Runtime and reads
them back: string tensors (numpy object arrays of ``str``), sequences (lists), optionals (``None``
when empty, else the value) and maps (dicts).

``coerce_value`` validates a user-given value against an input's IR type and puts it in the form
ONNX Runtime takes; ``from_runtime`` turns what ONNX Runtime returns into the same forms;
``leaves`` pairs two such values element by element (or says where their structures differ), so
that the check compares the tensors at the leaves (strings exactly).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from ..errors import CheckError
from ..ir.types import DType, OpaqueType, TensorType, ValueType

if TYPE_CHECKING:
    import onnx

__all__ = ["coerce_value", "describe_value", "from_runtime", "is_structured", "leaves"]


def is_structured(v: Any) -> bool:
    """Whether ``v`` is a sequence, map or empty optional rather than one array."""
    return v is None or isinstance(v, (list, tuple, dict))


def coerce_value(name: str, t: ValueType, v: Any) -> Any:
    """``v`` (given for input ``name`` of type ``t``) in the form ONNX Runtime takes; a
    ``CheckError`` naming the input when it cannot be of that type."""
    if isinstance(t, TensorType):
        return _tensor(name, t.dtype, v)
    if not t.proto:  # a type ONNX could not infer: take the value as given
        return _untyped(v)
    import onnx

    tp = onnx.TypeProto()
    tp.ParseFromString(t.proto)
    return _by_proto(name, tp, v)


def _tensor(name: str, dt: DType | None, v: Any) -> Any:
    if is_structured(v):
        raise CheckError(f"input {name!r} takes a tensor, got {_kind(v)}",
                         where=f"input {name!r}")
    arr = np.asarray(v)
    if dt == DType.string:
        if arr.dtype.kind not in "OUS":
            raise CheckError(f"input {name!r} takes strings, got an array of {arr.dtype}",
                             where=f"input {name!r}")
        return _as_str_objects(arr)
    if dt is None or dt == DType.bf16:
        return arr
    try:
        want = dt.to_numpy()
    except TypeError:  # an element type numpy does not hold: ORT gets what was given
        return arr
    if arr.dtype != want:
        raise CheckError(f"input {name!r} has dtype {arr.dtype}, the graph takes "
                         f"{dt.value} ({want})", where=f"input {name!r}")
    return arr


def _as_str_objects(arr: np.ndarray) -> np.ndarray:
    """A string array as an object array of ``str`` (bytes decoded as UTF-8)."""
    out = np.empty(arr.shape, dtype=object)
    flat = out.reshape(-1)
    for i, x in enumerate(arr.reshape(-1)):
        flat[i] = x.decode("utf-8") if isinstance(x, bytes) else str(x)
    return out


def _by_proto(name: str, tp: "onnx.TypeProto", v: Any) -> Any:
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        et = tp.tensor_type.elem_type
        try:
            dt = DType.from_onnx(et) if et else None
        except TypeError:
            dt = None
        return _tensor(name, dt, v)
    if kind == "sequence_type":
        if not isinstance(v, (list, tuple)):
            raise CheckError(f"input {name!r} takes a sequence (a list), got {_kind(v)}",
                             where=f"input {name!r}")
        return [_by_proto(f"{name}[{i}]", tp.sequence_type.elem_type, x)
                for i, x in enumerate(v)]
    if kind == "optional_type":
        return None if v is None else _by_proto(name, tp.optional_type.elem_type, v)
    if kind == "map_type":
        if not isinstance(v, dict):
            raise CheckError(f"input {name!r} takes a map (a dict), got {_kind(v)}",
                             where=f"input {name!r}")
        return dict(v)
    return _untyped(v)


def _untyped(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_untyped(x) for x in v]
    if v is None or isinstance(v, dict):
        return v
    return np.asarray(v)


def _kind(v: Any) -> str:
    if v is None:
        return "None (an empty optional)"
    if isinstance(v, (list, tuple)):
        return f"a sequence of {len(v)}"
    if isinstance(v, dict):
        return f"a map of {len(v)}"
    return f"an array of {np.asarray(v).dtype}"


def from_runtime(x: Any) -> Any:
    """An ONNX Runtime output as an array, a list (sequence), a dict (map) or None (an empty
    optional)."""
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return [from_runtime(e) for e in x]
    if isinstance(x, dict):
        return {k: from_runtime(e) for k, e in x.items()}
    return np.asarray(x)


def describe_value(v: Any) -> str:
    """A short type of a check value: ``f32[2,3]``, ``seq(f32[2];f32[3])``, ``none``, ``map(2)``."""
    if v is None:
        return "none"
    if isinstance(v, (list, tuple)):
        inner = ";".join(describe_value(x) for x in v[:4]) + (";..." if len(v) > 4 else "")
        return f"seq({inner})"
    if isinstance(v, dict):
        return f"map({len(v)})"
    a = np.asarray(v)
    try:
        dt = DType.from_numpy(a.dtype).value
    except TypeError:
        dt = str(a.dtype)
    return f"{dt}[{','.join(str(d) for d in a.shape)}]"


def leaves(name: str, e: Any, a: Any) -> Iterator[tuple[str, Any, Any] | str]:
    """The arrays of two values at matching positions as ``(path, expected, actual)``, or a
    string saying where their structures differ (then nothing further is yielded)."""
    if e is None or a is None:
        if (e is None) != (a is None):
            yield f"{name}: {describe_value(a)}, expected {describe_value(e)}"
        return
    if isinstance(e, (list, tuple)) or isinstance(a, (list, tuple)):
        if not (isinstance(e, (list, tuple)) and isinstance(a, (list, tuple))) \
                or len(e) != len(a):
            yield f"{name}: {describe_value(a)}, expected {describe_value(e)}"
            return
        for i, (x, y) in enumerate(zip(e, a)):
            yield from leaves(f"{name}[{i}]", x, y)
        return
    if isinstance(e, dict) or isinstance(a, dict):
        if not (isinstance(e, dict) and isinstance(a, dict)) or set(e) != set(a):
            yield f"{name}: {describe_value(a)}, expected {describe_value(e)}"
            return
        for k in sorted(e, key=repr):
            yield from leaves(f"{name}[{k!r}]", e[k], a[k])
        return
    yield name, np.asarray(e), np.asarray(a)
