"""What a rule sees while it matches: the graph, who reads each value, the pass's options, and
the small questions every matcher asks (is this a scalar constant, who is the only user).

One ``MatchContext`` is made per graph by the driver and shared by every rule of a sweep, so
users and the op index are computed once.
"""
from __future__ import annotations

from functools import cached_property
from typing import Any, Mapping

import numpy as np

from ..ir.graph import Graph
from ..ir.node import Node, Value
from ..ir.types import Dim, TensorType
from .match import fail

Users = dict[Node, list[tuple[Node, int]]]


def const_array(v: Value) -> np.ndarray | None:
    """The numpy data of ``v`` when it is a constant with a numpy form, else None."""
    n = v.node
    if n.op != "constant" or not n.const.has_array:
        return None
    return np.asarray(n.const.array)


def scalar_const(v: Value) -> float | None:
    """The value of a one-element numeric constant, else None."""
    a = const_array(v)
    if a is None or a.size != 1 or a.dtype == object or a.dtype.kind not in "fiu":
        return None
    return float(a.reshape(()))


def is_const_all(v: Value, x: float) -> bool:
    """True when ``v`` is a constant whose every element equals ``x``."""
    a = const_array(v)
    if a is None or a.dtype == object or a.size == 0:
        return False
    with np.errstate(all="ignore"):
        if not a.flat[0] == x:  # cheap rejection: weights rarely start with exactly x
            return False
        return bool(np.all(a == x))


def tensor_type(v: Value) -> TensorType:
    """``v``'s tensor type with a known shape (MatchFail otherwise)."""
    t = v.type
    if not isinstance(t, TensorType) or t.shape is None:
        raise fail(f"value of type {t} has no known shape", v)
    return t


def shape_of(v: Value) -> tuple[Dim, ...]:
    return tensor_type(v).shape  # type: ignore[return-value]


def users_with_outputs(g: Graph) -> Users:
    """``g.users()`` plus one ``(node, -1)`` entry per graph output the node feeds."""
    users = g.users()
    for v in g.outputs:
        users.setdefault(v.node, []).append((v.node, -1))
    return users


class MatchContext:
    """The graph being matched and its derived indexes (computed on first use)."""

    def __init__(self, graph: Graph, options: Mapping[str, Any] | None = None) -> None:
        self.graph = graph
        self.options: Mapping[str, Any] = dict(options or {})
        # what rules compute once per graph (an index, a table): name -> value
        self.memo: dict[str, Any] = {}

    @cached_property
    def users(self) -> Users:
        """Readers of each node, graph outputs included as ``(node, -1)``."""
        return users_with_outputs(self.graph)

    @cached_property
    def by_op(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.graph.nodes:
            out.setdefault(n.op, []).append(n)
        return out

    @cached_property
    def position(self) -> dict[int, int]:
        """Topological position of each node (by id)."""
        return {id(n): i for i, n in enumerate(self.graph.nodes)}

    def option(self, name: str, default: Any = None) -> Any:
        return self.options.get(name, default)

    def users_of(self, n: Node) -> list[tuple[Node, int]]:
        return self.users.get(n, [])

    def only_user(self, n: Node, what: str) -> tuple[Node, int]:
        """The one (user, input position) of ``n``; MatchFail when it has several, or when it is
        a graph output."""
        us = self.users.get(n, [])
        if len(us) != 1 or us[0][1] < 0:
            raise fail(f"{what} has {len(us)} users (graph outputs included), not one", n)
        return us[0]
