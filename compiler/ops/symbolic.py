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


# ---- -infinity ------------------------------------------------------------------------------------
#
# Masks fill scores with -inf. The reals have no -inf, so it is the z3 constant named "-inf" (NI),
# which never enters arithmetic: ops apply IEEE's rules for it structurally (x + -inf = -inf,
# -inf * c = -inf for a constant c > 0, exp(-inf) = 0, max(-inf, x) = x, a cast keeps it) and an
# If with a -inf branch is pushed through the op branch by branch. Anything IEEE would turn into
# +inf or NaN is NotSymbolic (no proof). Since nothing equates NI with a real, this is sound: an
# identity that needed more of -inf's behaviour just fails to prove.

_NEG_INF: list[Any] = []  # the constant, once made: until then no term can hold it


def neg_inf() -> Any:
    """The z3 constant standing for -infinity."""
    if not _NEG_INF:
        import z3

        _NEG_INF.append(z3.Real("-inf"))
    return _NEG_INF[0]


def _python_neg_inf(v: Any) -> bool:
    return isinstance(v, (float, np.floating)) and float(v) == -np.inf


def is_neg_inf(v: Any) -> bool:
    """Structurally -infinity (a Python/numpy -inf or the z3 constant)."""
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v) == -np.inf
    return bool(_NEG_INF) and v.eq(_NEG_INF[0]) if hasattr(v, "eq") else False


def _ite_parts(v: Any) -> "tuple[Any, Any, Any] | None":
    import z3

    if z3.is_expr(v) and z3.is_app_of(v, z3.Z3_OP_ITE):
        c, a, b = v.children()
        return c, a, b
    return None


def holds_neg_inf(v: Any) -> bool:
    """Whether -inf is ``v`` or a leaf of the If-tree ``v`` is."""
    if is_neg_inf(v):
        return True
    parts = _ite_parts(v) if not isinstance(v, (bool, int, float, np.generic)) else None
    return parts is not None and (holds_neg_inf(parts[1]) or holds_neg_inf(parts[2]))


def concrete_value(v: Any) -> "float | None":
    """The numeric value of a Python number or z3 numeral, else None."""
    if isinstance(v, (bool, np.bool_)):
        return None
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    import z3

    if z3.is_int_value(v):
        return float(v.as_long())
    if z3.is_rational_value(v):
        return float(v.as_fraction())
    return None


def _binary_at_neg_inf(op: str, a: Any, b: Any) -> Any:
    """IEEE's value of ``op(a, b)`` when ``a`` or ``b`` is -inf (the other finite or -inf)."""
    from .registry import NotSymbolic

    na, nb = is_neg_inf(a), is_neg_inf(b)
    other = b if na else a
    c = concrete_value(other)
    if op == "add" or (op == "sub" and na and not nb):
        return neg_inf()
    if op in ("mul", "div") and na and not nb and c is not None and c > 0:
        return neg_inf()
    if op == "mul" and nb and not na and c is not None and c > 0:
        return neg_inf()
    if op == "maximum":
        return other
    if op == "minimum":
        return neg_inf()
    raise NotSymbolic(f"{op} with -inf gives +inf or NaN, or needs the other operand's sign")


def lift_neg_inf(op: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` (one element of op ``op``), with -inf operands handled by IEEE's rules and
    If-trees holding -inf pushed through ``fn`` branch by branch."""
    import z3

    if not _NEG_INF and not any(_python_neg_inf(a) for a in args):
        return fn(*args)  # no term holds -inf before its constant is made: nothing to lift
    for i, a in enumerate(args):
        parts = _ite_parts(a) if not isinstance(a, (bool, int, float, np.generic)) else None
        if parts is not None and holds_neg_inf(a):
            c, x, y = parts
            left = lift_neg_inf(op, fn, *args[:i], x, *args[i + 1:])
            right = lift_neg_inf(op, fn, *args[:i], y, *args[i + 1:])
            return z3.If(c, _as_term(left), _as_term(right))
    if any(is_neg_inf(a) for a in args):
        if len(args) == 2:
            return _binary_at_neg_inf(op, *args)
        return fn(*args)  # unary: the op's own rule (see Unary.symbolic)
    return fn(*args)


def _as_term(v: Any) -> Any:
    import z3

    if z3.is_expr(v):
        return v
    if isinstance(v, (bool, np.bool_)):
        return z3.BoolVal(bool(v))
    if is_neg_inf(v):
        return neg_inf()
    return z3.RealVal(float(v)) if isinstance(v, (float, np.floating)) else z3.RealVal(int(v))


# ---- named constants ------------------------------------------------------------------------------

def named_constant(name: str) -> Any:
    """The z3 term for a named constant of an op's definition: ``NAME`` is a real constant,
    ``1/NAME`` its reciprocal, ``A*B`` a product (see ``OpDef.symbolic_constants``)."""
    import z3

    if "*" in name:
        out = None
        for part in name.split("*"):
            t = named_constant(part)
            out = t if out is None else out * t
        return out
    try:
        return z3.RealVal(float(name))  # a plain number inside a product
    except ValueError:
        pass
    if name.startswith("1/"):
        return z3.RealVal(1) / z3.Real(name[2:])
    return z3.Real(name)
