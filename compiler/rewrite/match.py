"""Matching: ``Match`` (what a rule found), ``MatchFail`` (why a rule does not apply: a reason and
a culprit node) and the structural matcher of patterns against graphs.

``MatchFail`` is the one way every rule says "no": a check returns ``m.fail(reason, node)``; a
semantic matcher (a hook that walks the graph itself) returns it, or raises it from deep inside its
helpers with ``raise fail(reason, node)``. The driver catches it and records it as a candidate that
did not match (``rewrite/trace.py``).

Matching is a backtracking search: commutative ops try both input orders, multi-root patterns
match each root against every candidate node (``match_roots``: every node of the root's op;
``match_roots_with``: nodes a callback names, e.g. users of what earlier roots bound). Dim variables of generated rules are solved after
the structure matched (``dims.unify``), so ``split {sizes=(c, c)}`` binds ``c`` from the graph.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..ir.graph import Graph
from ..ir.node import Node, Value
from ..ir.types import Dim, TensorType
from .dims import DimExpr, attr_has_dims, unify
from .pattern import AttrVar, Term, Var, root_node


class MatchFail(Exception):
    """Why a rule does not apply here: ``reason`` and the culprit ``node``. Falsy, so
    ``if not check(m)`` reads naturally; an exception, so deep matcher helpers can raise it."""

    def __init__(self, reason: str, node: "Node | None" = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.node = node

    def __bool__(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, MatchFail) and other.reason == self.reason
                and other.node is self.node)

    def __hash__(self) -> int:
        return hash(self.reason)

    def __str__(self) -> str:
        return f"{self.reason}" + (f" at {self.node.op} #{self.node.uid}" if self.node else "")

    def __repr__(self) -> str:
        return f"MatchFail({self.reason!r})"


def fail(reason: str, node: "Node | Value | None" = None) -> MatchFail:
    """A ``MatchFail`` naming ``node`` (a value names its node): ``raise fail(...)`` in matchers."""
    if isinstance(node, Value):
        node = node.node
    return MatchFail(reason, node)


def _identity(v: Value) -> Value:
    return v


@dataclass
class Match:
    """What a rule found.

    Pattern rules fill the bindings: pattern variables -> values, attr variables -> values, dim
    variables -> dims, pattern nodes -> graph nodes. Every rule fills ``roots`` (the values its
    replacement takes the place of, one per replacement value). A semantic matcher keeps its own
    record in ``data`` and says what the fused op is in ``detail`` and which accepted spelling
    it saw in ``spelling``.

    ``tr`` maps a value of the matched graph to the value that stands for it in the graph being
    built: the driver sets it before calling the rule's builder (``value``/``values`` apply it to
    the bindings; builders reading values kept in ``data`` call ``m.tr(v)``).
    """

    values: dict[str, Value] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    dims: dict[str, Dim] = field(default_factory=dict)
    nodes: dict[int, Node] = field(default_factory=dict)  # PNode.uid -> Node
    roots: list[Value] = field(default_factory=list)
    dim_constraints: list[tuple[DimExpr, Dim]] = field(default_factory=list)
    dtype: Any = None
    data: Any = None
    detail: str = ""
    spelling: str = ""
    tr: Callable[[Value], Value] = _identity

    def __getitem__(self, name: str) -> Value:
        return self.tr(self.values[name])

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def __bool__(self) -> bool:
        return True

    def fail(self, reason: str, node: "Node | Value | None" = None) -> MatchFail:
        return fail(reason, node)

    def copy(self) -> "Match":
        return Match(dict(self.values), dict(self.attrs), dict(self.dims), dict(self.nodes),
                     list(self.roots), list(self.dim_constraints), self.dtype, self.data,
                     self.detail, self.spelling, self.tr)

    def rebased(self, tr: Callable[[Value], Value]) -> "Match":
        """This match with ``tr`` set (bindings are translated when read)."""
        m = self.copy()
        m.tr = tr
        return m

    @property
    def matched_nodes(self) -> list[Node]:
        return list(self.nodes.values())


def _same(a: Value, b: Value) -> bool:
    return a.node is b.node and a.index == b.index


def _attr_ok(pv: Any, real: Any, m: Match) -> bool:
    if isinstance(pv, AttrVar):
        if pv.name in m.attrs:
            return m.attrs[pv.name] == real
        m.attrs[pv.name] = real
        return True
    if attr_has_dims(pv):
        if isinstance(pv, DimExpr):
            m.dim_constraints.append((pv, real))
            return True
        if not isinstance(real, tuple) or len(real) != len(pv):
            return False
        return all(_attr_ok(p, r, m) for p, r in zip(pv, real))
    return pv == real


def _bind_var(t: Var, v: Value, m: Match) -> bool:
    if t.name in m.values:
        return _same(m.values[t.name], v)
    if t.type is not None:
        vt = v.type
        if not isinstance(vt, TensorType) or vt.shape is None:
            return False
        if t.type.float_only and not vt.dtype.is_float:
            return False
        if m.dtype is None:
            m.dtype = vt.dtype
        elif m.dtype != vt.dtype:
            return False
        if len(vt.shape) != len(t.type.dims):
            return False
        for pd, rd in zip(t.type.dims, vt.shape):
            if isinstance(pd, DimExpr):
                m.dim_constraints.append((pd, rd))
            elif pd != rd:
                return False
    if t.where is not None and not t.where(v):
        return False
    m.values[t.name] = v
    return True


def match_term(t: Term, v: Value, m: Match) -> Iterator[Match]:
    """Every way ``t`` matches value ``v`` extending ``m`` (``m`` itself is not changed)."""
    if isinstance(t, Var):
        m2 = m.copy()
        if _bind_var(t, v, m2):
            yield m2
        return
    pn, idx = root_node(t)
    assert pn is not None
    if v.index != idx:
        return
    node = v.node
    if pn.uid in m.nodes:
        if m.nodes[pn.uid] is node:
            yield m
        return
    if node.op != pn.op or len(node.inputs) != len(pn.inputs):
        return
    m2 = m.copy()
    for k, pv in pn.attrs.items():
        if k not in node.attrs or not _attr_ok(pv, node.attrs[k], m2):
            return
    m2.nodes[pn.uid] = node
    from ..ops.registry import get_op

    orders: list[Sequence[int]] = [range(len(pn.inputs))]
    if get_op(node.op).commutative and len(pn.inputs) == 2:
        orders.append((1, 0))
    for order in orders:
        yield from _match_inputs(pn.inputs, [node.inputs[i] for i in order], 0, m2)


def _match_inputs(ts: Sequence[Term], vs: Sequence[Value], i: int, m: Match) -> Iterator[Match]:
    if i == len(ts):
        yield m
        return
    for m2 in match_term(ts[i], vs[i], m):
        yield from _match_inputs(ts, vs, i + 1, m2)


def solve_dims(m: Match) -> MatchFail | None:
    """Solve the collected dim constraints (each variable bound once, then checked)."""
    pending = list(m.dim_constraints)
    while pending:
        rest = []
        progressed = False
        for e, real in pending:
            r = unify(e, real, m.dims)
            if r is None:
                rest.append((e, real))
            elif r is False:
                return m.fail(f"dims: {e} cannot be {real} (with {m.dims})")
            else:
                progressed = True
        if rest and not progressed:
            return m.fail(f"dims: cannot solve {[str(e) for e, _ in rest]}")
        pending = rest
    return None


Candidates = Callable[[int, Match], Iterable[Node]]


def match_roots(roots: Sequence[Term], g: Graph, anchor: Node | None = None,
                by_op: dict[str, list[Node]] | None = None) -> Iterator[Match]:
    """Every match of a (multi-root) pattern in ``g``; ``anchor`` pins the first root's node."""
    index = index_by_op(g) if by_op is None else by_op
    terms = list(roots)

    def candidates(i: int, m: Match) -> Iterable[Node]:
        if i == 0 and anchor is not None:
            return [anchor]
        pn, _ = root_node(terms[i])
        return index.get(pn.op, []) if pn is not None else []

    yield from match_roots_with(terms, candidates)


def index_by_op(g: Graph) -> dict[str, list[Node]]:
    out: dict[str, list[Node]] = {}
    for n in g.nodes:
        out.setdefault(n.op, []).append(n)
    return out


def match_roots_with(roots: Sequence[Term], candidates: Candidates,
                     first: int = 0) -> Iterator[Match]:
    """Every match of a (multi-root) pattern, its roots matched in the order ``first``,
    ``first + 1``, ... (wrapping around). ``candidates(i, m)`` gives the nodes root ``i`` may
    match, knowing the bindings ``m`` of the roots matched before it (all nodes of its op, or a
    few found from those bindings). Roots come back in the pattern's order."""
    terms = list(roots)
    order = [(first + j) % len(terms) for j in range(len(terms))]
    yield from _match_roots(terms, order, 0, Match(), candidates)


def _match_roots(roots: list[Term], order: list[int], j: int, m: Match,
                 candidates: Candidates) -> Iterator[Match]:
    if j == len(order):
        if solve_dims(m) is None:
            if order[0] != 0:
                m.roots = [m.roots[order.index(i)] for i in range(len(order))]
            yield m
        return
    t = roots[order[j]]
    pn, idx = root_node(t)
    if pn is None:
        raise ValueError("a pattern root must be an op, not a bare variable")
    for node in candidates(order[j], m):
        if node.op != pn.op or idx >= len(node.out_types):
            continue
        v = Value(node, idx)
        if any(_same(v, r) for r in m.roots):
            continue
        for m2 in match_term(t, v, m):
            m3 = m2.copy()
            m3.roots.append(v)
            yield from _match_roots(roots, order, j + 1, m3, candidates)


def explain_no_match(roots: Sequence[Term], node: Node) -> MatchFail:
    """A reason why the first root does not match at ``node`` (the first difference found)."""
    pn, idx = root_node(roots[0])
    if pn is None:
        return MatchFail("pattern root is a variable", node)
    if node.op != pn.op:
        return MatchFail(f"op is {node.op}, pattern wants {pn.op}", node)
    for k, pv in pn.attrs.items():
        if k not in node.attrs:
            return MatchFail(f"attr {k} missing", node)
        if not isinstance(pv, AttrVar) and not attr_has_dims(pv) and node.attrs[k] != pv:
            return MatchFail(f"attr {k}={node.attrs[k]!r}, pattern wants {pv!r}", node)
    for i, (t, v) in enumerate(zip(pn.inputs, node.inputs)):
        tn, _ = root_node(t)
        if tn is not None and v.node.op != tn.op:
            return MatchFail(f"input {i} is {v.node.op}, pattern wants {tn.op}", v.node)
    return MatchFail("inputs do not fit the pattern (shared values, types or dims)", node)
