"""Rules: a pattern (lhs), a builder (rhs) and an optional check.

Hand-written rules (in passes/*.py) are plain functions over the op builder::

    from graphopt.ir.node import op as build
    from graphopt.rewrite.pattern import op
    from graphopt.rewrite.rule import rule

    def lhs(x, w1, w2):
        return op.matmul(x, w1), op.matmul(x, w2)

    def rhs(m):
        ...build new values from m["x"], m["w1"], m["w2"] and return one per lhs root...

    def check(m):
        if not m["w1"].node.is_constant:
            return m.fail("weights not constant", m["w1"])

    MERGE = rule("merge_matmuls", lhs, rhs, check)

Generated (TASO) rules come from rule files through ``from_subst``: the lhs graph becomes a
pattern whose input types are shape templates over dim variables, and the rhs graph is rebuilt
over the matched values with the dim variables' bindings.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..errors import GraphOptError
from ..ir.node import Node, Value
from ..ir.types import TensorType
from ..subst.dims import DIM_ATTRS, DimExpr, generalize_attr, instantiate_attr
from .match import Match, MatchFail
from .pattern import PNode, POut, ShapeTemplate, Term, Var, pattern_ops

Check = Callable[[Match], "MatchFail | None | bool"]
Builder = Callable[[Match], "Sequence[Value] | Value"]


@dataclass(frozen=True)
class Rule:
    name: str
    lhs: tuple[Term, ...]  # pattern roots; the rhs returns one value per root
    rhs: Builder
    check: Check | None = None
    source: str = ""  # file or rule set it came from
    rhs_ops: int = -1  # size of the replacement when known (generated rules)

    @property
    def lhs_ops(self) -> int:
        return pattern_ops(list(self.lhs))

    def build(self, m: Match) -> "list[Value] | MatchFail":
        """The replacement values for a match (or why the rule cannot apply there)."""
        if self.check is not None:
            r = self.check(m)
            if isinstance(r, MatchFail):
                return r
            if r is False:
                return m.fail(f"check of {self.name} failed")
        try:
            out = self.rhs(m)
        except GraphOptError as e:
            return m.fail(f"rhs cannot be built: {e.one_line()}")
        vals = [out] if isinstance(out, Value) else list(out)
        if len(vals) != len(m.roots):
            return m.fail(f"rhs of {self.name} gives {len(vals)} values for {len(m.roots)} roots")
        for old, new in zip(m.roots, vals):
            if old.type != new.type:
                return m.fail(f"rhs type {new.type} differs from {old.type}", old)
        return vals


def rule(name: str, lhs: Callable[..., Any], rhs: Builder, check: Check | None = None,
         source: str = "") -> Rule:
    """A rule from functions: ``lhs``'s parameters become pattern variables of those names."""
    params = list(inspect.signature(lhs).parameters)
    roots = lhs(*(Var(p) for p in params))
    if not isinstance(roots, (tuple, list)):
        roots = (roots,)
    return Rule(name, tuple(roots), rhs, check, source or getattr(lhs, "__module__", ""))


# ---- generated rules --------------------------------------------------------------------------

def pattern_of(g: Any) -> tuple[tuple[Term, ...], dict[str, Var]]:
    """A text-IR graph (stored instance) as a pattern over dim variables."""
    vars_: dict[str, Var] = {}
    terms: dict[tuple[int, int], Term] = {}
    for n in g.inputs:
        t = n.out_types[0]
        assert isinstance(t, TensorType) and t.shape is not None
        dims = tuple(DimExpr.of(d) if isinstance(d, int) else d for d in t.shape)
        dims = tuple(d.coef if isinstance(d, DimExpr) and d.is_literal else d for d in dims)
        v = Var(n.attrs["name"], ShapeTemplate(dims))
        vars_[v.name] = v
        terms[(id(n), 0)] = v
    for n in g.nodes:
        if n.op == "input":
            continue
        attrs = {k: generalize_attr(n.op, k, a) for k, a in n.attrs.items()}
        pn = PNode(n.op, tuple(terms[(id(v.node), v.index)] for v in n.inputs), attrs)
        for k in range(len(n.out_types)):
            terms[(id(n), k)] = pn if len(n.out_types) == 1 else POut(pn, k)
    return tuple(terms[(id(v.node), v.index)] for v in g.outputs), vars_


def builder_of(g: Any) -> Builder:
    """Rebuild graph ``g`` (stored instance) over a match's values and dim bindings."""
    def build(m: Match) -> list[Value]:
        vals: dict[tuple[int, int], Value] = {}
        for n in g.inputs:
            vals[(id(n), 0)] = m.values[n.attrs["name"]]
        for n in g.nodes:
            if n.op == "input":
                continue
            attrs = {k: instantiate_attr(generalize_attr(n.op, k, a), m.dims)
                     if k in DIM_ATTRS.get(n.op, ()) else a for k, a in n.attrs.items()}
            nn = Node.build(n.op, [vals[(id(v.node), v.index)] for v in n.inputs], attrs)
            for k in range(len(n.out_types)):
                vals[(id(n), k)] = Value(nn, k)
        return [vals[(id(v.node), v.index)] for v in g.outputs]
    return build


def from_subst(r: Any, reverse: bool = False) -> Rule:
    """A rewrite Rule from a generated ``SubstRule`` (``reverse``: rhs -> lhs, which needs the
    rhs to read every lhs input)."""
    src, dst = (r.rhs, r.lhs) if reverse else (r.lhs, r.rhs)
    if reverse and set(r.rhs.input_names) != set(r.lhs.input_names):
        raise ValueError(f"rule {r.name} cannot be reversed: its rhs reads fewer inputs")
    roots, _ = pattern_of(src)
    ops = sum(1 for n in dst.nodes if n.op != "input")
    return Rule(r.name + ("~" if reverse else ""), roots, builder_of(dst), None, r.source, ops)


def reversible(r: Any) -> bool:
    return set(r.rhs.input_names) == set(r.lhs.input_names)
