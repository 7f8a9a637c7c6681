"""Lifting one aten call through the ops, for the PyTorch frontend.

The ops registered for the call's target (``OpDef.aten``) are tried in order through their
``from_aten(ctx)``; ``ctx`` is an :class:`AtenCtx`, the interface op files write against. The
first that does not decline gives the call's values, which must match torch's meta values; when
every op declines, the reasons say why and the caller keeps the call opaque (``fx_opaque``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import FrontendError, GraphOptError
from ..ir.node import ConstData, Node, Origin, Value
from ..ir.types import TensorType

__all__ = ["AtenCtx", "lift_call"]


@dataclass
class AtenCtx:
    """One aten call being lifted. ``args``/``kwargs`` hold ``Value``s where the call has tensors
    (lists of Values for tensor lists), symbol names or ints for sizes, and other python values
    as they are (torch dtypes stay torch dtypes)."""

    target: str
    args: tuple
    kwargs: dict
    num_outputs: int
    used_outputs: set[int]
    out_types: tuple["TensorType | None", ...]
    origin: Origin

    def tensor_args(self) -> list[Value]:
        """The positional Value args in order."""
        return [a for a in self.args if isinstance(a, Value)]

    def build(self, op: str, inputs: Sequence[Value], **attrs: Any) -> Value:
        """Build ``op(inputs) {attrs}`` (with this call's origin) and return its first output."""
        return Node.build(op, tuple(inputs), attrs, self.origin).outputs[0]

    def constant(self, array: Any) -> Value:
        return Node.build("constant", (), {"data": ConstData(np.asarray(array))},
                          self.origin).out

    def scalar(self, x: Any, like: Value) -> Value:
        """A 0-d constant of ``like``'s dtype."""
        t = like.type
        if not isinstance(t, TensorType):
            raise FrontendError(f"scalar like {t}: not a tensor", where=str(self.origin))
        return self.constant(np.asarray(x, dtype=t.dtype.to_numpy()))


def lift_call(ctx: AtenCtx, multi: bool, where: Callable[[], str]) -> tuple[Any, str]:
    """``(values, "")`` from the first op that lifts the call (a Value, or a tuple of Values and
    Nones when ``multi``), else ``(None, why each op declined)``. ``where()`` names the call in
    errors."""
    from ..ops.registry import Unsupported, ops_for_aten

    reasons = []
    for opdef in ops_for_aten(ctx.target):
        try:
            res = opdef.from_aten(ctx)
        except Unsupported as e:
            reasons.append(f"{opdef.name}: {e}")
            continue
        except GraphOptError as e:
            raise FrontendError(f"{opdef.name}.from_aten failed: {e.one_line()}",
                                where=where()) from e
        if res is None:
            reasons.append(f"{opdef.name}: not applicable")
            continue
        return _check(opdef.name, res, ctx.out_types, multi, where), ""
    return None, "; ".join(reasons)


def _check(op: str, res: Any, want: tuple, multi: bool, where: Callable[[], str]) -> Any:
    # (a Value is itself a NamedTuple: test for it first)
    got = (res,) if isinstance(res, Value) or not isinstance(res, (tuple, list)) else \
        tuple(res)
    if len(got) != len(want):
        raise FrontendError(f"{op}.from_aten returned {len(got)} values for {len(want)} "
                            f"outputs", where=where())
    for i, (v, w) in enumerate(zip(got, want)):
        if v is None:
            continue
        if not isinstance(v, Value):
            raise FrontendError(f"{op}.from_aten returned {type(v).__name__} for output {i}",
                                where=where())
        if w is not None and v.type != w:
            raise FrontendError(f"{op}.from_aten gives {v.type} for output {i} but torch "
                                f"says {w}", where=where())
    return got if multi else got[0]
