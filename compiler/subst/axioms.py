"""Uninterpreted functions (and, later, their axioms) for non-linear ops' z3 semantics."""
from __future__ import annotations

from typing import Any, Callable

_UF: dict[str, Any] = {}


def uf(name: str, arity: int = 1) -> Callable[..., Any]:
    """The z3 uninterpreted function Real^arity -> Real named ``name`` (one per name)."""
    import z3

    key = f"{name}/{arity}"
    if key not in _UF:
        _UF[key] = z3.Function(name, *([z3.RealSort()] * arity), z3.RealSort())
    return _UF[key]
