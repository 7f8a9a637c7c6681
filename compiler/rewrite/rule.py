"""Rules: the one form every transformation takes.

A rule looks at one place of a graph (an *anchor* node), says whether it applies there (a
``Match``) or why not (a ``MatchFail``), and builds the replacement values. Two ways to say what
it matches:

* ``PatternRule``: a pattern over the op-builder DSL (``rewrite/pattern.py``), an optional check
  returning ``m.fail(reason, node)``, and an rhs builder. Generated (TASO) rules and the search's
  hand-written rules are pattern rules::

      from graphopt.ir.node import op as build
      from graphopt.rewrite.pattern import op
      from graphopt.rewrite.rule import rule

      def lhs(x, w1, w2):
          return op.matmul(x, w1), op.matmul(x, w2)

      def rhs(m):                       # one value per lhs root
          ...build new values from m["x"], m["w1"], m["w2"]...

      def check(m):
          if not m["w1"].node.is_constant:
              return m.fail("weights not constant", m["w1"])

      MERGE = rule("merge_matmuls", lhs, rhs, check)

* a subclass of ``Rule`` with its own ``match`` (a *semantic matcher hook*): for matches no fixed
  pattern states (mask algebra, GELU polynomials, rotate_half in any operand order). It walks the
  graph from the anchor through ``MatchContext`` and returns a ``Match`` (``data`` holds what
  the builder needs), a ``MatchFail`` (a candidate that did not match, and why) or None (not a
  candidate at all). Deep helpers may ``raise fail(reason, node)``.

Every rule carries what the verifier and the reports need: ``kind`` ("fusion", "canonical",
"cleanup", "search", "generated", "lowering"), the ``pass_name`` it belongs to, the ``place``
kind its candidates name ("attention", "rms_norm", ...), and ``exact`` (False for rules that
change results beyond float rounding, with ``error`` naming the error measure they are held to).
The spellings a rule accepts are stated as text-IR rules (``rules/*.rules`` beside the pass),
which ``graphopt rules verify`` proves and replays through the rule.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Sequence

from ..errors import GraphOptError
from ..ir.node import Node, Value
from ..ir.types import TensorType
from .context import MatchContext
from .dims import DimExpr, generalize_attr, instantiate_attr
from .match import Match, MatchFail, match_roots
from .pattern import PNode, POut, ShapeTemplate, Term, Var, pattern_ops, root_node

Check = Callable[[Match], "MatchFail | None | bool"]
Builder = Callable[[Match], "Sequence[Value] | Value"]
KINDS = ("fusion", "canonical", "cleanup", "search", "generated", "lowering", "quantization",
         "kv_cache", "tensor_parallel", "tensor_parallel_plan")
# rule-file kinds that name no pass (nothing to replay): identities a whole-graph transform or a
# plan applies (the KV-cache derivation; splitting the weights a sharding plan chose)
PASSLESS_KINDS = ("kv_cache", "tensor_parallel_plan")


class Rule:
    """Base class of rules. Subclasses set the class attributes and implement ``match`` and
    ``build`` (pattern rules: ``PatternRule``)."""

    name: str  # set by every subclass (or instance)
    kind: ClassVar[str] = "fusion"
    place: str = ""  # candidate kind; "" = no candidates are reported for failed matches
    place_title: str = ""  # what such places are, for listings ("attention blocks")
    # False: only refusals become candidates (a rule that fires on most nodes: folding)
    report_matches: bool = True
    # True: the replacement may know more of its type than the value it replaces (a symbolic
    # dim becomes a number once folded); otherwise the types must be equal
    refines_types: bool = False
    anchors: "frozenset[str] | None" = None  # ops whose nodes anchor a match (None: any node)
    pass_name: str = ""
    exact: bool = True
    error: str = ""  # inexact rules: the error measure they are checked against
    source: str = ""

    # ---- matching ----------------------------------------------------------------------------
    def match(self, n: Node, ctx: MatchContext) -> "Match | MatchFail | None":
        """The match anchored at ``n`` (the first one when there are several), a MatchFail
        saying why not, or None when ``n`` is not a place this rule is about."""
        raise NotImplementedError(f"rule {self.name} has no match()")

    def matches(self, n: Node, ctx: MatchContext) -> "Iterator[Match | MatchFail]":
        """Every match anchored at ``n`` (for the search); default: ``match``'s one answer."""
        r = _guarded(self.match, n, ctx)
        if r is not None:
            yield r

    # ---- building ----------------------------------------------------------------------------
    def build(self, m: Match) -> "Sequence[Value] | Value":
        """The replacement values, one per ``m.roots`` (read inputs through ``m[...]`` /
        ``m.tr``). May raise MatchFail when the replacement cannot be built after all."""
        raise NotImplementedError(f"rule {self.name} has no build()")

    def replacement(self, m: Match) -> "list[Value] | MatchFail":
        """``build`` checked: one value per root, each of its root's type."""
        try:
            out = self.build(m)
        except MatchFail as f:
            return f
        except GraphOptError as e:
            return m.fail(f"rhs cannot be built: {e.one_line()}")
        vals = [out] if isinstance(out, Value) else list(out)
        if len(vals) != len(m.roots):
            return m.fail(f"rhs of {self.name} gives {len(vals)} values for {len(m.roots)} roots")
        for old, new in zip(m.roots, vals):
            if old.type != new.type and not (self.refines_types
                                             and refines(new.type, old.type)):
                return m.fail(f"rhs type {new.type} differs from {old.type}", old)
        return vals

    def __repr__(self) -> str:
        return f"<rule {self.name} ({self.kind})>"


def refines(new: Any, old: Any) -> bool:
    """Whether tensor type ``new`` is ``old`` with some symbolic dims known."""
    if not (isinstance(new, TensorType) and isinstance(old, TensorType)):
        return False
    if new.dtype != old.dtype:
        return False
    if old.shape is None:
        return True
    if new.shape is None or len(new.shape) != len(old.shape):
        return False
    return all(a == b or isinstance(b, str) for a, b in zip(new.shape, old.shape))


def _guarded(fn: Callable[[Node, MatchContext], Any], n: Node, ctx: MatchContext) -> Any:
    try:
        return fn(n, ctx)
    except MatchFail as f:
        return f


@dataclass(frozen=True, eq=False)
class PatternRule(Rule):
    """A rule stated as a pattern: ``lhs`` roots, an ``rhs`` builder and an optional check."""

    name: str
    lhs: tuple[Term, ...]  # pattern roots; the rhs returns one value per root
    rhs: Builder
    check: Check | None = None
    source: str = ""  # file or rule set it came from
    rhs_ops: int = -1  # size of the replacement when known (generated rules)
    rule_kind: str = "search"
    place: str = ""
    pass_name: str = ""
    place_title: str = ""
    exact: bool = True
    error: str = ""

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.rule_kind

    @property
    def anchors(self) -> frozenset[str]:  # type: ignore[override]
        pn, _ = root_node(self.lhs[0])
        return frozenset({pn.op}) if pn is not None else frozenset()

    @property
    def lhs_ops(self) -> int:
        return pattern_ops(list(self.lhs))

    def checked(self, m: Match) -> "Match | MatchFail":
        """``m`` when the check passes, else why not."""
        if self.check is None:
            return m
        r = self.check(m)
        if isinstance(r, MatchFail):
            return r
        if r is False:
            return m.fail(f"check of {self.name} failed")
        return m

    def matches(self, n: Node, ctx: MatchContext) -> "Iterator[Match | MatchFail]":
        for m in match_roots(self.lhs, ctx.graph, n, ctx.by_op):
            yield self.checked(m)

    def match(self, n: Node, ctx: MatchContext) -> "Match | MatchFail | None":
        """The first match at ``n`` that passes the check; else the first check failure; None
        when the pattern does not match structurally."""
        first_fail: MatchFail | None = None
        for r in self.matches(n, ctx):
            if isinstance(r, Match):
                return r
            first_fail = first_fail or r
        return first_fail

    def build(self, m: Match) -> "Sequence[Value] | Value":
        return self.rhs(m)


def rule(name: str, lhs: Callable[..., Any], rhs: Builder, check: Check | None = None,
         source: str = "", kind: str = "search", place: str = "", pass_name: str = "",
         exact: bool = True, error: str = "") -> PatternRule:
    """A pattern rule from functions: ``lhs``'s parameters become pattern variables. An
    inexact rule (``exact=False``) names the error measure it is held to in ``error``."""
    if kind not in KINDS:
        raise ValueError(f"rule {name}: kind {kind!r} is not one of {KINDS}")
    if not exact and not error:
        raise ValueError(f"rule {name}: an inexact rule must name its error measure")
    params = list(inspect.signature(lhs).parameters)
    roots = lhs(*(Var(p) for p in params))
    if not isinstance(roots, (tuple, list)):
        roots = (roots,)
    return PatternRule(name, tuple(roots), rhs, check,
                       source or getattr(lhs, "__module__", ""), -1, kind, place, pass_name,
                       "", exact, error)


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
            vals[(id(n), 0)] = m[n.attrs["name"]]
        for n in g.nodes:
            if n.op == "input":
                continue
            attrs = {k: instantiate_attr(generalize_attr(n.op, k, a), m.dims)
                     for k, a in n.attrs.items()}
            nn = Node.build(n.op, [vals[(id(v.node), v.index)] for v in n.inputs], attrs)
            for k in range(len(n.out_types)):
                vals[(id(n), k)] = Value(nn, k)
        return [vals[(id(v.node), v.index)] for v in g.outputs]
    return build


def from_subst(r: Any, reverse: bool = False) -> PatternRule:
    """A rewrite Rule from a generated ``SubstRule`` (``reverse``: rhs -> lhs, which needs the
    rhs to read every lhs input)."""
    src, dst = (r.rhs, r.lhs) if reverse else (r.lhs, r.rhs)
    if reverse and set(r.rhs.input_names) != set(r.lhs.input_names):
        raise ValueError(f"rule {r.name} cannot be reversed: its rhs reads fewer inputs")
    roots, _ = pattern_of(src)
    ops = sum(1 for n in dst.nodes if n.op != "input")
    return PatternRule(r.name + ("~" if reverse else ""), roots, builder_of(dst), None, r.source,
                       ops, "generated")


def reversible(r: Any) -> bool:
    return set(r.rhs.input_names) == set(r.lhs.input_names)
