"""z3 proof of a rule: lhs and rhs agree element by element for ALL real inputs.

Each input element is a z3 Real; each op runs its ``symbolic`` aspect (exact arithmetic for
linear and structural ops, uninterpreted functions for the rest). An output element pair is
proven equal either by z3's polynomial normalizer (``simplify(l - r, som=True)`` reducing to 0,
which also identifies congruent uninterpreted applications) or, failing that, by the solver:
``Or(l_i != r_i)`` with the declared axioms instantiated on its ground terms must be unsat.

The proof is for the sizes it is instantiated at (small, distinct sizes per dim variable); the
float re-test covers other sizes. A timeout or ``unknown`` is *not* a proof.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import GraphOptError
from ..ir.graph import Graph
from ..ir.types import Dim, TensorType
from .rulefile import SubstRule, instantiate_rule


@dataclass(frozen=True)
class Proof:
    proved: bool
    method: str  # "normalize" | "solver" | "" when not proved
    reason: str = ""  # why not (counterexample, unknown, timeout, error)
    seconds: float = 0.0


def symbolic_inputs(g: Graph) -> dict[str, np.ndarray]:
    import z3

    out: dict[str, np.ndarray] = {}
    for n, t in zip(g.input_names, g.input_types):
        assert isinstance(t, TensorType) and t.shape is not None and t.is_static
        shape = tuple(int(d) for d in t.shape)  # type: ignore[arg-type]
        flat = [z3.Real(f"{n}_{i}") for i in range(int(np.prod(shape)) if shape else 1)]
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        out[n] = arr.reshape(shape)
    return out


def run_symbolic(g: Graph, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    from ..ops.registry import get_op

    env: dict[int, tuple[Any, ...]] = {}
    for n in g.nodes:
        if n.op == "input":
            env[id(n)] = (feed[n.attrs["name"]],)
            continue
        xs = [env[id(v.node)][v.index] for v in n.inputs]
        try:
            outs = get_op(n.op).symbolic(xs, n.attrs)
        except GraphOptError:
            raise
        except Exception as e:
            raise GraphOptError(f"symbolic {n.op} failed: {type(e).__name__}: {e}",
                                where=f"node {n.op} #{n.uid}") from e
        env[id(n)] = tuple(np.asarray(o, dtype=object) for o in outs)
    return [env[id(v.node)][v.index] for v in g.outputs]


def _as_expr(x: Any) -> Any:
    import z3

    return x if z3.is_expr(x) else z3.RealVal(x)


def prove(rule: SubstRule, env: Mapping[str, Dim], timeout_ms: int = 5000) -> Proof:
    import z3

    from .axioms import instances

    t0 = time.perf_counter()
    try:
        lhs, rhs = instantiate_rule(rule, env)
        feed = symbolic_inputs(lhs)
        lo = run_symbolic(lhs, feed)
        ro = run_symbolic(rhs, {n: feed[n] for n in rhs.input_names})
    except GraphOptError as e:
        return Proof(False, "", f"symbolic evaluation failed: {e.one_line()}",
                     time.perf_counter() - t0)
    pending: list[tuple[Any, Any]] = []
    for i, (a, b) in enumerate(zip(lo, ro)):
        if a.shape != b.shape:
            return Proof(False, "", f"output {i}: shapes {a.shape} vs {b.shape}",
                         time.perf_counter() - t0)
        for x, y in zip(a.reshape(-1), b.reshape(-1)):
            x, y = _as_expr(x), _as_expr(y)
            if x.eq(y):
                continue
            d = z3.simplify(x - y, som=True)
            if z3.is_rational_value(d) and d.as_fraction() == 0:
                continue
            pending.append((x, y))
    if not pending:
        return Proof(True, "normalize", seconds=time.perf_counter() - t0)
    s = z3.Solver()
    s.set("timeout", timeout_ms)
    terms = [t for xy in pending for t in xy]
    for ax in instances(terms):
        s.add(ax)
    s.add(z3.Or([x != y for x, y in pending]))
    r = s.check()
    dt = time.perf_counter() - t0
    if r == z3.unsat:
        return Proof(True, "solver", seconds=dt)
    if r == z3.sat:
        return Proof(False, "", "counterexample found", dt)
    return Proof(False, "", f"z3 returned unknown ({s.reason_unknown()})", dt)
