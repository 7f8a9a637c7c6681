"""z3 proof of a rule: lhs and rhs agree element by element for ALL real inputs.

Each input element is a z3 Real; each op runs its ``symbolic`` aspect (exact arithmetic for
linear and structural ops, uninterpreted functions for the rest). An output element pair is
proven equal either by z3's polynomial normalizer (``simplify(l - r, som=True)`` reducing to 0,
which also identifies congruent uninterpreted applications) or, failing that, by the solver:
``Or(l_i != r_i)`` with the declared axioms instantiated on its ground terms must be unsat.

The proof is for the sizes it is instantiated at (small, distinct sizes per dim variable); the
float re-test covers other sizes. A timeout or ``unknown`` is *not* a proof.

Bool inputs (attention masks) are z3 Bools. Where the lhs is undefined (an op's
``symbolic_domain``: a softmax row with every score masked, a division by zero) the rhs may be
anything: the proof assumes the lhs's domain conditions (a rule may refine, never change, what
the original computes where it is defined).

Named constants: an op whose definition uses an irrational constant (GELU's 1/sqrt(2)) declares
it in ``symbolic_constants`` and uses it as the z3 constant of that name. A hand-written rule
with ``constants: TOL`` has each scalar float constant of its lhs that lies within relative TOL
of such a constant (of an op on its rhs) read as that named constant: the proof then says "equal
up to the rounding of the constant to the graph's dtype", and the verdict lists what was read so.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ..errors import GraphOptError
from ..ir.graph import Graph
from ..ir.interp import Interpreter
from ..ir.node import Node
from ..ir.types import Dim, TensorType
from .rulefile import SubstRule, instantiate_rule

if TYPE_CHECKING:
    from ..ops.registry import OpDef


@dataclass(frozen=True)
class Proof:
    proved: bool
    method: str  # "normalize" | "solver" | "" when not proved
    reason: str = ""  # why not (counterexample, unknown, timeout, error)
    seconds: float = 0.0


def symbolic_inputs(g: Graph) -> dict[str, np.ndarray]:
    """One z3 variable per input element: Bools for bool inputs, Reals otherwise."""
    import z3

    out: dict[str, np.ndarray] = {}
    for n, t in zip(g.input_names, g.input_types):
        assert isinstance(t, TensorType) and t.shape is not None and t.is_static
        shape = tuple(int(d) for d in t.shape)  # type: ignore[arg-type]
        make = z3.Bool if t.dtype.value == "bool" else z3.Real
        flat = [make(f"{n}_{i}") for i in range(int(np.prod(shape)) if shape else 1)]
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        out[n] = arr.reshape(shape)
    return out


def named_constants(g: Graph) -> dict[str, float]:
    """The named constants the ops of ``g`` declare (``OpDef.symbolic_constants``)."""
    from ..ops.registry import get_op

    out: dict[str, float] = {}
    for n in g.nodes:
        out.update(get_op(n.op).symbolic_constants)
    return out


def constant_bounds(consts: Mapping[str, float], rel: float = 1e-6) -> list[Any]:
    """What is known of the named constants: each lies within ``rel`` of its value (so none
    is zero; a proof may divide by them)."""
    import z3

    out = []
    for name, v in consts.items():
        if "*" in name or name.startswith("1/"):
            continue  # built from the base constants
        lo, hi = sorted((v * (1 - rel), v * (1 + rel)))
        out.append(z3.And(z3.Real(name) >= lo, z3.Real(name) <= hi))
    return out


# an input of dtype T is a T value: rounding it to T, or to a wider float type, leaves it be
_EXACT_IN = {"f16": ("f16", "f32"), "bf16": ("bf16", "f32"), "f32": ("f32",)}


def input_facts(g: Graph, feed: Mapping[str, np.ndarray], *others: Graph) -> list[Any]:
    """Facts about the inputs of ``g`` from their dtypes: ``round_U(x) == x`` for the float
    types U that hold every value of x's type (casts are ``round_<dtype>`` applications; none
    is needed when neither ``g`` nor ``others`` casts)."""
    from ..ops.symbolic import uf

    out: list[Any] = []
    if not any(n.op == "cast" for h in (g, *others) for n in h.nodes):
        return out  # casts are the only rounding applications: no fact is needed
    for n, t in zip(g.input_names, g.input_types):
        if not isinstance(t, TensorType):
            continue
        for u in _EXACT_IN.get(t.dtype.value, ()):
            r = uf(f"round_{u}")
            out += [r(x) == x for x in np.asarray(feed[n]).reshape(-1)]
    return out


class Z3Interpreter(Interpreter):
    """A graph on z3 terms: each op's ``symbolic_typed`` aspect over object arrays.

    ``domain`` (when given) collects the lhs's domain conditions, the ops' ``symbolic_domain``
    (term, condition) pairs. ``constants`` / ``tol``: a scalar float constant within relative
    ``tol`` of a named constant is read as that constant; ``snapped`` records each (its value
    -> the named constant's)."""

    binds_symbols = False  # rules are instantiated at static sizes
    # every term lives until the run ends: z3 reuses the ids of dead terms, and its solver's
    # search order (so whether a marginal proof finishes in time) follows the ids
    drops_values = False

    def __init__(self, domain: list[tuple[Any, Any]] | None = None,
                 constants: Mapping[str, float] | None = None, tol: float = 0.0) -> None:
        self.domain = domain
        self.constants = dict(constants or {})
        self.tol = tol
        self.snapped: dict[str, float] = {}

    def constant(self, n: Node) -> Any:
        if self.constants and n.const.has_array:
            arr = np.asarray(n.const.array)
            snapped = self._snap(arr)
            if snapped is not arr:
                return snapped
        return super().constant(n)

    def _snap(self, arr: np.ndarray) -> np.ndarray:
        """A scalar float constant within relative ``tol`` of a named constant, as that
        constant (else ``arr`` itself)."""
        from ..ops.symbolic import named_constant

        if arr.size != 1 or arr.dtype.kind != "f":
            return arr
        v = float(arr.reshape(()))
        for name, c in self.constants.items():
            if c != 0 and abs(v - c) <= self.tol * abs(c):
                self.snapped[f"{v!r}"] = c
                out = np.empty(arr.shape, dtype=object)
                out.reshape(-1)[0] = named_constant(name)
                return out
        return arr

    def call_op(self, n: Node, opdef: "OpDef", args: Sequence[Any]) -> Sequence[Any]:
        if self.domain is not None:
            self.domain.extend(opdef.symbolic_domain(args, n.attrs))
        outs = opdef.symbolic_typed(args, n.attrs, tuple(v.type for v in n.inputs))
        return tuple(np.asarray(o, dtype=object) for o in outs)


def _as_expr(x: Any) -> Any:
    import z3

    if z3.is_expr(x):
        return x
    if isinstance(x, (bool, np.bool_)):
        return z3.BoolVal(bool(x))
    return z3.RealVal(x)


def _subterms(x: Any) -> set[int]:
    """Ids of every subterm of z3 term ``x``."""
    import z3

    seen: set[int] = set()
    stack = [x]
    while stack:
        t = stack.pop()
        if not z3.is_expr(t) or t.get_id() in seen:
            continue
        seen.add(t.get_id())
        stack.extend(t.children())
    return seen


def _defined(x: Any, domain: list[tuple[Any, Any]]) -> list[Any]:
    """The domain conditions output element ``x`` depends on (those whose term it reads)."""
    ids = _subterms(x)
    return [c for t, c in domain if t.get_id() in ids]


def prove(rule: SubstRule, env: Mapping[str, Dim], timeout_ms: int = 5000,
          nlsat: bool = False) -> Proof:
    """Prove ``rule`` at the sizes ``env``. Each output element of a hand-written rule is
    compared where the lhs element is defined (the domain conditions of the ops it reads); an
    element undefined for every input (a constant mask killing a whole softmax row) may be
    anything on the rhs.

    ``nlsat``: when z3's default solver answers unknown, try again with other random seeds, then
    z3's nonlinear real arithmetic procedure (tactic qfnra-nlsat): it decides polynomial
    identities the default solver's heuristics sometimes time out on (a conv over an average
    pool, say; whether they do depends on z3's internal term order). Verification uses it;
    generation does not, so the generated set does not change with it."""
    import z3

    from ..ops.symbolic import instances

    t0 = time.perf_counter()
    domain: list[tuple[Any, Any]] = []
    try:
        lhs, rhs = instantiate_rule(rule, env)
        feed = symbolic_inputs(lhs)
        tol = rule.get("constants") if not rule.generated else ""
        left = Z3Interpreter(None if rule.generated else domain,
                             named_constants(rhs) if tol else None, float(tol or 0.0))
        lo = left.run(lhs, feed)
        ro = Z3Interpreter().run(rhs, {n: feed[n] for n in rhs.input_names})
        snapped = left.snapped
        facts = constant_bounds(named_constants(rhs)) + input_facts(lhs, feed, rhs)
    except GraphOptError as e:
        return Proof(False, "", f"symbolic evaluation failed: {e.one_line()}",
                     time.perf_counter() - t0)
    domain = [(t, z3.simplify(c)) for t, c in domain if not z3.is_true(z3.simplify(c))]
    pending: list[tuple[Any, Any, list[Any]]] = []
    for i, (a, b) in enumerate(zip(lo, ro)):
        if a.shape != b.shape:
            return Proof(False, "", f"output {i}: shapes {a.shape} vs {b.shape}",
                         time.perf_counter() - t0)
        for x, y in zip(a.reshape(-1), b.reshape(-1)):
            x, y = _as_expr(x), _as_expr(y)
            if x.eq(y):
                continue
            if z3.is_bool(x) or z3.is_bool(y):
                if z3.is_true(z3.simplify(x == y)):
                    continue
            else:
                d = z3.simplify(x - y, som=True)
                if z3.is_rational_value(d) and d.as_fraction() == 0:
                    continue
            conds = _defined(x, domain) if domain else []
            if any(z3.is_false(c) for c in conds):
                continue  # the original is undefined here for every input
            pending.append((x, y, conds))
    note = ("; constants read as named: " + ", ".join(f"{k}~{v!r}" for k, v in snapped.items())
            if snapped else "")
    if not pending:
        return Proof(True, "normalize" + note, seconds=time.perf_counter() - t0)
    s = z3.Solver()
    s.set("timeout", timeout_ms)
    terms = [t for x, y, cs in pending for t in (x, y, *cs)]
    for ax in instances(terms):
        s.add(ax)
    for c in facts:
        s.add(c)
    s.add(z3.Or([z3.And(*cs, x != y) for x, y, cs in pending]))
    r = s.check()
    why = s.reason_unknown() if r == z3.unknown else ""
    method = "solver"
    if r == z3.unknown and nlsat:
        r, method = _check_again(s.assertions(), timeout_ms)
    dt = time.perf_counter() - t0
    if r == z3.unsat:
        return Proof(True, method + note, seconds=dt)
    if r == z3.sat:
        return Proof(False, "", "counterexample found", dt)
    return Proof(False, "", f"z3 returned unknown ({why})", dt)


def _check_again(assertions: Any, timeout_ms: int, seeds: int = 2) -> tuple[Any, str]:
    """The same obligation once more: z3's default solver with other random seeds (its search
    on a hard instance depends on them, and on term order), then qfnra-nlsat (unknown where it
    does not apply: uninterpreted functions)."""
    import z3

    for seed in range(1, seeds + 1):
        s = z3.Solver()
        s.set("timeout", timeout_ms)
        s.set("random_seed", seed)
        s.add(assertions)
        r = s.check()
        if r != z3.unknown:
            return r, f"solver (seed {seed})"
    try:
        s = z3.Tactic("qfnra-nlsat").solver()
        s.set("timeout", timeout_ms)
        s.add(assertions)
        return s.check(), "nlsat"
    except z3.Z3Exception:
        return z3.unknown, "nlsat"
