"""Opaque aten calls: how the PyTorch frontend keeps an aten call no op maps, and how it runs.

``opaque_call`` records the call in an ``opaque`` node (domain "aten"): its tensor arguments
become the node's inputs, everything else is JSON in the ``call`` attr (tensors as ``{"$t": i}``,
symbolic sizes by name as ``{"$dim": "seq"}``, dtypes / devices / layouts by name).
``call_opaque_aten`` replays it: it re-resolves the overload and calls it on the node's inputs,
reading symbolic sizes from the symbols bound at run time (``graphopt.ops.symbols``); lazy
conjugate / negative views among its results are materialized (IR values are values). The opaque
op runs aten nodes through ``call_opaque_aten``, which this module registers with it
(``ops.opaque.register_runner``): ops do not import the frontends.
"""
from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ..errors import FrontendError, GraphOptError
from ..ir.node import Attrs, Node, Origin, Value
from ..ops.opaque import register_runner
from .fx_nodes import is_fx_node, user_line

if TYPE_CHECKING:
    import torch

__all__ = ["call_opaque_aten", "opaque_call", "resolve_aten"]


# ---- recording an unmapped call ----------------------------------------------------------------

def opaque_call(n: Any, tstr: str, out_types: tuple, vals: tuple, reason: str,
                env: Mapping[Any, Any], where: Callable[[], str]) -> Any:
    """The opaque node that keeps the aten call ``n`` (``env``: the IR value of each FX node
    before it; ``where()``: the node, for errors); its output Value(s), shaped like ``n``'s."""
    if any(t is None for t in out_types):
        raise FrontendError(f"unmapped aten op {tstr} has non-tensor outputs "
                            f"{[type(v).__name__ for v in vals]}", where=where())
    inputs: list[Value] = []
    call = {"args": [_encode(a, inputs, env, where) for a in n.args],
            "kwargs": {k: _encode(v, inputs, env, where) for k, v in n.kwargs.items()}}
    detail = user_line(n)
    if reason:
        detail = f"{detail}; kept opaque: {reason}" if detail else f"kept opaque: {reason}"
    attrs = {"op_type": tstr, "domain": "aten", "proto": None, "opsets": (),
             "out_types": out_types, "present": (), "captured": (),
             "call": json.dumps(call, sort_keys=True), "functions": ()}
    node = Node.build("opaque", tuple(inputs), attrs, Origin("fx", n.name, detail))
    return node.outputs if len(out_types) != 1 or isinstance(n.meta.get("val"), (
        tuple, list)) else node.out


def _encode(a: Any, inputs: list[Value], env: Mapping[Any, Any], where: Callable[[], str]
            ) -> Any:
    import torch

    if is_fx_node(a):
        v = env[a]
        if isinstance(v, Value):
            if v not in inputs:
                inputs.append(v)
            return {"$t": inputs.index(v)}
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if isinstance(v, str):  # a symbolic size, read from the bound symbols at run time
            return {"$dim": v}
        raise FrontendError(f"argument {a.name} = {v!r} cannot be recorded in an opaque "
                            f"aten call", where=where())
    if isinstance(a, (list, tuple)):
        return [_encode(x, inputs, env, where) for x in a]
    if a is None or isinstance(a, (bool, int, str)):
        return a
    if isinstance(a, float):
        return a if math.isfinite(a) else {"$float": repr(a)}
    if isinstance(a, torch.dtype):
        return {"$dtype": str(a).removeprefix("torch.")}
    if isinstance(a, torch.device):
        return {"$device": str(a)}
    if isinstance(a, torch.layout):
        return {"$layout": str(a).removeprefix("torch.")}
    if isinstance(a, torch.memory_format):
        return {"$memory_format": str(a).removeprefix("torch.")}
    raise FrontendError(f"cannot record argument {a!r} ({type(a).__name__}) of an opaque "
                        f"aten call", where=where())


# ---- running it ------------------------------------------------------------------------------

def call_opaque_aten(xs: Sequence["torch.Tensor"], attrs: Attrs) -> tuple["torch.Tensor", ...]:
    """Run an opaque aten node: re-resolve its overload and call it with the recorded args."""
    import torch

    fn = resolve_aten(attrs["op_type"])
    call = json.loads(attrs["call"])
    device = xs[0].device if xs else torch.device("cpu")
    args = [_decode(a, xs, device) for a in call["args"]]
    kwargs = {k: _decode(v, xs, device) for k, v in call["kwargs"].items()}
    out = fn(*args, **kwargs)
    if isinstance(out, torch.Tensor):
        return (_resolved(out),)
    if isinstance(out, (tuple, list)):
        return tuple(_resolved(o) for o in out)
    raise GraphOptError(f"opaque aten {attrs['op_type']} returned {type(out).__name__}, "
                        f"not tensors")


def _resolved(t: Any) -> Any:
    """IR values are values: a lazy conjugate / negative view (``aten._conj``) is materialized,
    as the ``clone`` after it (a pass-through in the IR) would have done."""
    return t.resolve_conj().resolve_neg() if hasattr(t, "resolve_conj") else t


def resolve_aten(target: str) -> Any:
    """``"aten.add.Tensor"`` -> ``torch.ops.aten.add.Tensor``."""
    import torch

    parts = target.split(".")
    if len(parts) != 3:
        raise GraphOptError(f"bad aten target {target!r} (want namespace.name.overload)")
    ns, name, overload = parts
    try:
        return getattr(getattr(getattr(torch.ops, ns), name), overload)
    except AttributeError as e:
        raise GraphOptError(f"aten target {target!r} does not exist in torch "
                            f"{torch.__version__}") from e


def _decode(a: Any, xs: Sequence[Any], device: Any) -> Any:
    import torch

    if isinstance(a, list):
        return [_decode(x, xs, device) for x in a]
    if isinstance(a, dict):
        (k, v), = a.items()
        if k == "$t":
            return xs[v]
        if k == "$float":
            return float(v)
        if k == "$dim":
            from ..ops.symbols import bound_symbols, eval_dim

            d = eval_dim(v)
            if d is None:
                raise GraphOptError(f"size {v!r} of an opaque aten call has no run-time value "
                                    f"(bound symbols: {dict(bound_symbols())})")
            return d
        if k == "$dtype":
            return getattr(torch, v)
        if k == "$device":
            return device  # the callable's device, not the one traced on
        if k == "$layout":
            return getattr(torch, v)
        if k == "$memory_format":
            return getattr(torch, v)
        raise GraphOptError(f"bad opaque aten call argument {a!r}")
    return a


register_runner("aten", call_opaque_aten)
