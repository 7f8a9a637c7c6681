"""Uninterpreted functions and their axioms, for non-linear ops' z3 semantics.

Ops whose exact semantics z3 cannot (or should not) express map their elements through an
uninterpreted function ``uf(name)``. What the verifier may assume about such a function is
declared on the op that computes it (``OpDef.axioms``), as data: each ``Axiom`` is an equation
(optionally guarded) over the function, instantiated on the ground terms of a proof obligation
(``instances``, used by ``subst/verify_z3.py``), and each is itself checked on concrete values
against the op's own numpy semantics (``check_axiom``; the conformance test runs it for every
declared axiom), so a wrong axiom cannot hide.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

_UF: dict[str, Any] = {}


def uf(name: str, arity: int = 1) -> Callable[..., Any]:
    """The z3 uninterpreted function Real^arity -> Real named ``name`` (one per name)."""
    import z3

    key = f"{name}/{arity}"
    if key not in _UF:
        _UF[key] = z3.Function(name, *([z3.RealSort()] * arity), z3.RealSort())
    return _UF[key]


def ite(c: Any, a: Any, b: Any) -> Any:
    """if-then-else over z3 terms or plain numbers."""
    if isinstance(c, (bool, np.bool_)):
        return a if c else b
    import z3

    return z3.If(c, a, b)


@dataclass(frozen=True)
class Axiom:
    """``lhs(f, *xs) == rhs(f, *xs)`` for all reals xs (where ``guard`` holds).

    ``fn`` names the uninterpreted function; ``arity`` is how many ground terms one instance
    takes (1: one per application of fn). The op declaring the axiom gives fn's numeric
    semantics for ``check_axiom`` (with ``attrs``).
    """

    name: str
    fn: str
    arity: int
    lhs: Callable[..., Any]
    rhs: Callable[..., Any]
    guard: Callable[..., Any] | None = None
    op: str = ""  # op giving fn's numeric semantics ("" = fn)
    attrs: tuple[tuple[str, Any], ...] = ()  # that op's attrs for the numeric check
    # sample arguments for the concrete check
    samples: tuple[tuple[float, ...], ...] = ((-2.0,), (-0.5,), (0.0,), (0.25,), (3.0,))


def all_axioms() -> list[Axiom]:
    """Every axiom the registered ops declare (in registration order)."""
    from .registry import all_ops

    out: list[Axiom] = []
    for op in all_ops().values():
        out.extend(a for a in op.axioms if a not in out)
    return out


def axioms_for(fn: str) -> list[Axiom]:
    return [a for a in all_axioms() if a.fn == fn]


def numeric_fn(ax: Axiom) -> Callable[[float], float]:
    from ..ir.node import Attrs
    from .registry import get_op

    op = get_op(ax.op or ax.fn)
    attrs = Attrs(dict(ax.attrs))

    def f(x: float) -> float:
        (y,) = op.numpy([np.asarray(x, dtype=np.float64)], attrs)
        return float(np.asarray(y))

    return f


def check_axiom(ax: Axiom, rtol: float = 1e-9) -> str | None:
    """None if the axiom holds on its samples under the op's numpy semantics, else why not."""
    f = numeric_fn(ax)
    for xs in ax.samples:
        if ax.guard is not None and not ax.guard(f, *xs):
            continue
        lv, rv = float(ax.lhs(f, *xs)), float(ax.rhs(f, *xs))
        if not np.isclose(lv, rv, rtol=rtol, atol=1e-12):
            return f"axiom {ax.name} fails at {xs}: {lv} != {rv}"
    return None


def instances(terms: Sequence[Any]) -> list[Any]:
    """Axiom instances for every application of an uninterpreted function inside ``terms``."""
    import z3

    apps: dict[str, dict[int, Any]] = {}
    seen: set[int] = set()
    stack = list(terms)
    while stack:
        t = stack.pop()
        if not z3.is_expr(t):
            continue
        tid = t.get_id()
        if tid in seen:
            continue
        seen.add(tid)
        if z3.is_app(t) and t.decl().kind() == z3.Z3_OP_UNINTERPRETED and t.num_args() > 0:
            apps.setdefault(t.decl().name(), {})[tid] = t
        stack.extend(t.children())
    out: list[Any] = []
    for name, ts in sorted(apps.items()):
        for ax in axioms_for(name):
            f = uf(ax.fn, 1)
            if ax.arity != 1:
                continue  # only unary instantiation is used so far
            for t in ts.values():
                x = t.arg(0)
                eq = ax.lhs(f, x) == ax.rhs(f, x)
                out.append(z3.Implies(ax.guard(f, x), eq) if ax.guard else eq)
    return out
