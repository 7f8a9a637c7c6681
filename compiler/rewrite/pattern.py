"""The op-builder DSL for rule patterns.

    from graphopt.rewrite.pattern import op, var, attr

    def lhs(x, w1, w2):                      # parameters become pattern variables
        return op.matmul(x, w1), op.matmul(x, w2)

A pattern term is a variable (``Var``: matches any value, the same value wherever it recurs), an
op application (``PNode``: op name, input terms, attribute constraints) or one output of a
multi-output op (``POut``: ``op.split(x, axis=1).out(0)``). Attribute constraints are exact
values, ``attr("name")`` (binds the value, equal wherever it recurs) or, in generated rules,
``DimExpr`` (a dim-valued attribute in terms of dim variables). Attributes a pattern does not
mention match anything. A ``PNode`` used twice is one node in the graph.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Union


_ids = itertools.count()


@dataclass(frozen=True, eq=False)
class Var:
    """A pattern variable. ``type``: optional template (dims may be DimExpr) the value must fit."""

    name: str
    type: "ShapeTemplate | None" = None
    where: Callable[[Any], bool] | None = None  # extra predicate on the bound Value

    def __repr__(self) -> str:
        return f"%{self.name}"


@dataclass(frozen=True)
class ShapeTemplate:
    """A value's type in a generated rule: dims as DimExpr (dim variables) or literal ints; all
    templates of one pattern share one float dtype, whatever it is."""

    dims: tuple[Any, ...]
    float_only: bool = True


@dataclass(frozen=True)
class AttrVar:
    """Binds an attribute value by name (equal wherever the name recurs)."""

    name: str


@dataclass(frozen=True, eq=False)
class PNode:
    op: str
    inputs: tuple["Term", ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    uid: int = field(default_factory=lambda: next(_ids))

    def out(self, i: int) -> "POut":
        return POut(self, i)

    def __repr__(self) -> str:
        a = "".join(f", {k}={v!r}" for k, v in self.attrs.items())
        return f"{self.op}({', '.join(map(repr, self.inputs))}{a})"


@dataclass(frozen=True, eq=False)
class POut:
    node: PNode
    index: int

    def __repr__(self) -> str:
        return f"{self.node!r}#{self.index}"


Term = Union[Var, PNode, POut]


class _OpBuilder:
    """``op.matmul(a, b)``, ``op.transpose(x, perm=(1, 0))``, ``op("custom.op", x)``."""

    def __getattr__(self, name: str) -> Callable[..., PNode]:
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *ins, **attrs: PNode(name, tuple(ins), dict(attrs))

    def __call__(self, name: str, *ins: Term, **attrs: Any) -> PNode:
        return PNode(name, tuple(ins), dict(attrs))


op = _OpBuilder()


def var(name: str, type: Any = None, where: Callable[[Any], bool] | None = None) -> Var:
    return Var(name, type, where)


def attr(name: str) -> AttrVar:
    return AttrVar(name)


def root_node(t: Term) -> tuple[PNode | None, int]:
    if isinstance(t, POut):
        return t.node, t.index
    if isinstance(t, PNode):
        return t, 0
    return None, 0


def variables(roots: "list[Term]") -> list[Var]:
    """Pattern variables in first-occurrence order."""
    out: list[Var] = []
    seen: set[int] = set()
    stack = list(reversed(roots))
    while stack:
        t = stack.pop()
        if isinstance(t, Var):
            if id(t) not in seen:
                seen.add(id(t))
                out.append(t)
        else:
            n, _ = root_node(t)
            assert n is not None
            stack.extend(reversed(n.inputs))
    return out


def pattern_nodes(roots: "list[Term]") -> list[PNode]:
    """The op nodes of a pattern, each once."""
    seen: dict[int, PNode] = {}
    stack = list(roots)
    while stack:
        n, _ = root_node(stack.pop())
        if n is not None and n.uid not in seen:
            seen[n.uid] = n
            stack.extend(n.inputs)
    return list(seen.values())


def pattern_ops(roots: "list[Term]") -> int:
    return len(pattern_nodes(roots))
