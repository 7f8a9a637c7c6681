"""Dim variables of generated rules.

A rule is stored as a concrete instance whose *variable* dims are distinct primes >= 5 (``a=5,
b=7, c=11, ...``). Every dim-valued attribute (an op's ``dim_attrs``: split sizes, reshape
shapes, ...) then factors uniquely as ``coef * a^i * b^j * ...`` with a small coefficient made of
2s and 3s, so the rule generalizes to any sizes: the matcher binds each variable to a real dim
(int or symbol) and re-instantiates the rule's dim-valued attributes from those bindings.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..ir.types import Dim, dim_divide, dim_product
from ..ops.registry import get_op

# variable name -> prime used in the stored instance
VAR_PRIMES: dict[str, int] = {"a": 5, "b": 7, "c": 11, "d": 13, "e": 17, "f": 19}
PRIME_VARS: dict[int, str] = {p: v for v, p in VAR_PRIMES.items()}


@dataclass(frozen=True)
class DimExpr:
    """``coef * prod(vars)`` (vars sorted, repeats allowed)."""

    coef: int
    vars: tuple[str, ...] = ()

    @staticmethod
    def of(value: int) -> "DimExpr":
        """Factor a stored-instance dim over the variable primes."""
        if value <= 0:
            return DimExpr(int(value))
        vs: list[str] = []
        rest = int(value)
        for p, v in sorted(PRIME_VARS.items()):
            while rest % p == 0:
                rest //= p
                vs.append(v)
        return DimExpr(rest, tuple(sorted(vs)))

    @property
    def is_literal(self) -> bool:
        return not self.vars

    def eval(self, env: Mapping[str, Dim]) -> Dim:
        return dim_product([self.coef, *(env[v] for v in self.vars)])

    def __str__(self) -> str:
        parts = ([str(self.coef)] if self.coef != 1 or not self.vars else []) + list(self.vars)
        return "*".join(parts)


def representable(value: int) -> bool:
    """Whether a dim of an enumerated tensor is ``coef * monomial`` with coef made of 2s and 3s
    (so a rule's dim attrs generalize without ambiguity)."""
    e = DimExpr.of(value)
    c = e.coef
    if c <= 0:
        return False
    for p in (2, 3):
        while c % p == 0:
            c //= p
    return c == 1


def unify(expr: DimExpr, real: Dim, env: dict[str, Dim]) -> bool | None:
    """Bind variables so that ``expr`` evaluates to ``real``. True: consistent (env updated);
    False: contradiction; None: more than one unbound variable (try again later)."""
    unbound = [v for v in expr.vars if v not in env]
    if not unbound:
        return expr.eval(env) == real
    if len(set(unbound)) > 1 or len(unbound) > 1:
        return None
    known = dim_product([expr.coef, *(env[v] for v in expr.vars if v in env)])
    if known == 0:
        return False
    q = dim_divide(real, known)
    if q is None or q == 0:
        return False
    env[unbound[0]] = q
    return True


def generalize_attr(op: str, key: str, value: Any) -> Any:
    """The symbolic form of an attribute (DimExpr for the op's ``dim_attrs``; every other
    attribute is literal)."""
    if key in get_op(op).dim_attrs:
        if isinstance(value, tuple):
            return tuple(DimExpr.of(v) if isinstance(v, int) else v for v in value)
        if isinstance(value, int):
            return DimExpr.of(value)
    return value


def instantiate_attr(value: Any, env: Mapping[str, Dim]) -> Any:
    if isinstance(value, DimExpr):
        return value.eval(env)
    if isinstance(value, tuple):
        return tuple(instantiate_attr(v, env) for v in value)
    return value


def attr_has_dims(value: Any) -> bool:
    if isinstance(value, DimExpr):
        return True
    if isinstance(value, tuple):
        return any(attr_has_dims(v) for v in value)
    return False
