"""The structure of a torch module's output, for the PyTorch frontend and the check.

``dumps_out_spec`` / ``loads_out_spec`` write and read the pytree spec of the outputs kept in
``GraphMeta.metadata`` (so the torch callable returns what the module returned). torch's own
``treespec_dumps`` cannot write torch's named tuples (``torch.return_types.topk`` and the other
structseqs: "No registered serialization name"); here every node of the spec is written on its
own: structseqs by their ``torch.return_types`` name, namedtuples by ``module:qualname``
(imported when read; a class defined in a function is found among those this process wrote),
every other node type by pytree's serialization of that node alone.

``structure_diff`` compares two outputs' structure and types: container types (named tuple
type, tuple / list / dict), their lengths, fields and keys, and for tensors dtype, shape (0-d
included) and layout; python scalars by type and value.
"""
from __future__ import annotations

import collections
import json
from typing import Any

from ..errors import FrontendError

__all__ = ["dumps_out_spec", "loads_out_spec", "structure_diff"]

_FORMAT = "graphopt.pytree.1"
# namedtuple classes written in this process, by "module:qualname" (classes defined in a
# function cannot be imported back by name)
_CLASSES: dict[str, type] = {}


def dumps_out_spec(spec: Any) -> str:
    """The pytree ``spec`` as a JSON string (see the module docstring)."""
    return json.dumps({"format": _FORMAT, "spec": _encode(spec)}, sort_keys=True)


def loads_out_spec(text: str) -> Any:
    """The inverse of :func:`dumps_out_spec`."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise FrontendError(f"output spec is not JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        raise FrontendError(f"output spec of an unknown format (want {_FORMAT})")
    return _decode(doc["spec"])


def _encode(spec: Any) -> Any:
    from torch.utils import _pytree as pytree

    if spec.is_leaf():
        return None
    children = [_encode(c) for c in spec.children()]
    if _is_return_type(spec.type):
        return {"return_type": spec.type.__name__, "children": children}
    if spec.type is collections.namedtuple:  # pytree's node type of every namedtuple class
        cls = spec.context
        name = f"{cls.__module__}:{cls.__qualname__}"
        _CLASSES[name] = cls
        return {"namedtuple": name, "children": children}
    alone = pytree.TreeSpec(spec.type, spec.context, [pytree.treespec_leaf()] * len(children))
    try:
        node = pytree.treespec_dumps(alone)
    except Exception as e:  # noqa: BLE001 - torch says why the type cannot be written
        raise FrontendError(f"the module's output holds a {spec.type.__name__}, which torch's "
                            f"pytree cannot serialize: {e}") from None
    return {"node": node, "children": children}


def _decode(enc: Any) -> Any:
    import torch.return_types as rt
    from torch.utils import _pytree as pytree

    if enc is None:
        return pytree.treespec_leaf()
    children = [_decode(c) for c in enc["children"]]
    if "return_type" in enc:
        cls = getattr(rt, enc["return_type"], None)
        if not _is_return_type(cls):
            raise FrontendError(f"torch.return_types has no {enc['return_type']!r}")
        return pytree.TreeSpec(cls, None, children)
    if "namedtuple" in enc:
        cls = _named_class(enc["namedtuple"])
        return pytree.TreeSpec(collections.namedtuple, cls, children)
    node = pytree.treespec_loads(enc["node"])
    return pytree.TreeSpec(node.type, node.context, children)


def _named_class(name: str) -> type:
    """The namedtuple class ``module:qualname``: imported, or one this process wrote."""
    import importlib

    if name in _CLASSES:
        return _CLASSES[name]
    mod, _, qual = name.partition(":")
    try:
        obj: Any = importlib.import_module(mod)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise FrontendError(f"output named tuple class {name} cannot be imported: {e}") from None
    if not (isinstance(obj, type) and issubclass(obj, tuple)):
        raise FrontendError(f"output named tuple class {name} is a {type(obj).__name__}")
    return obj


def _is_return_type(cls: Any) -> bool:
    """A structseq of ``torch.return_types`` (also the private ones, ``_lu_with_info``)."""
    return isinstance(cls, type) and issubclass(cls, tuple) and \
        cls.__module__ == "torch.return_types"


def structure_diff(expected: Any, actual: Any, path: str = "output") -> str | None:
    """The first difference in structure or types between two torch outputs (None if none)."""
    import torch

    if isinstance(expected, torch.Tensor) or isinstance(actual, torch.Tensor):
        if not (isinstance(expected, torch.Tensor) and isinstance(actual, torch.Tensor)):
            return f"{path} is {_kind(actual)}, expected {_kind(expected)}"
        for what, e, a in (("dtype", expected.dtype, actual.dtype),
                           ("shape", list(expected.shape), list(actual.shape)),
                           ("layout", expected.layout, actual.layout)):
            if e != a:
                return f"{path} has {what} {a}, expected {e}"
        return None
    if type(expected) is not type(actual):
        return f"{path} is {_kind(actual)}, expected {_kind(expected)}"
    if isinstance(expected, dict):
        if list(expected) != list(actual):
            return f"{path} has keys {list(actual)}, expected {list(expected)}"
        for k in expected:
            d = structure_diff(expected[k], actual[k], f"{path}[{k!r}]")
            if d:
                return d
        return None
    if isinstance(expected, (tuple, list)):
        if len(expected) != len(actual):
            return f"{path} has {len(actual)} items, expected {len(expected)}"
        fields = getattr(type(expected), "_fields", None) or getattr(
            type(expected), "__match_args__", None)  # namedtuple / torch.return_types
        for i, (e, a) in enumerate(zip(expected, actual)):
            d = structure_diff(e, a, f"{path}.{fields[i]}" if fields and i < len(fields)
                               else f"{path}[{i}]")
            if d:
                return d
        return None
    if expected != actual and not (expected != expected and actual != actual):  # NaN == NaN
        return f"{path} is {actual!r}, expected {expected!r}"
    return None


def _kind(x: Any) -> str:
    import torch

    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor {list(x.shape)}"
    return f"a {type(x).__module__}.{type(x).__qualname__}"
