"""Cleanup passes: constant folding, dead code, CSE and no-op removal.

All rewrites here are exact, with one caveat on the sign of zero: ``x + 0.0`` is removed although
it maps ``-0.0`` to ``+0.0`` (numerically equal; every graph optimizer we know does the same).

* ``ConstantFold``: a pure node whose inputs are all constants becomes a constant, computed with
  the op's numpy aspect; an opaque node of a deterministic standard ONNX op type (Shape, Range,
  ConstantOfShape, Cast, ...) is run alone in ONNX Runtime; random ops never fold (the folder is
  ``graphopt.ir.fold``). A fold is skipped when its result would have more than ``max_elements``
  (2**20) elements and more than its inputs (a folded ``expand`` could otherwise blow a model
  up), and when its result is large and a large constant input is still read by other nodes
  (folding ``transpose(embedding)`` of tied weights would store the embedding twice).
* ``DeadCode``: dead nodes disappear by construction (a graph's node list is derived from its
  outputs); this pass reports unused graph inputs, and the pipeline records the nodes each pass
  dropped.
* ``CSE``: hash-consing already shares equal pure nodes; this pass also merges equal small
  constants by content and equal deterministic opaque ONNX nodes: two engine rules
  (``MergeEqual``, kind cleanup) in one sweep over a table of the first node of each content,
  which the pass builds for the sweep (``rules/cse.rules``).
* ``RemoveNoOps``: identity, cast to the same dtype, reshape/expand to the same shape, identity
  transpose, slice taking everything, add 0 / sub 0 / mul 1 / div 1 / pow 1 with constants when
  shape and dtype are unchanged, one-input concat, one-piece split, empty squeeze/unsqueeze, ...:
  one engine rule per form (``NOOP_RULES``, kind cleanup, counted under its name), applied in
  local mode (``rules/remove_noops.rules``).
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Sequence

import numpy as np

from graphopt.ir.fold import FOLDABLE_ONNX, FoldPolicy
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node, Value
from graphopt.ir.types import TensorType
from graphopt.rewrite.context import MatchContext, is_const_all
from graphopt.rewrite.fold import REFUSALS, FoldRule
from graphopt.rewrite.match import Match, MatchFail
from graphopt.rewrite.passes import Pass, PassResult, Pipeline, RewritePass, Stats
from graphopt.rewrite.pattern import op
from graphopt.rewrite.rule import Rule, rule
from graphopt.rewrite.trace import Candidate

DEDUPE_MAX_BYTES = 1 << 20


# ---- constant folding ----------------------------------------------------------------------------

class ConstantFold(RewritePass):
    """Fold constant subgraphs: the engine's ``FoldRule`` (``graphopt.rewrite.fold``, over the
    compiler's one folder ``graphopt.ir.fold``) under the pass's size policy, bottom-up. Stats:
    ``folded``, ``skipped_large``, ``skipped_shared``, ``not_folded_errors`` (node: reason)."""

    name = "constant_fold"
    mode = "local"

    def __init__(self, max_elements: int = FoldPolicy.max_elements,
                 shared_max_elements: int = FoldPolicy.shared_max_elements,
                 max_growth_bytes: int | None = None) -> None:
        self.policy = FoldPolicy(max_elements, shared_max_elements=shared_max_elements,
                                 max_growth_bytes=max_growth_bytes)
        super().__init__(rules=[FoldRule(self.policy)])

    def run(self, g: Graph) -> PassResult:
        res = super().run(g)
        stats = dict(res.stats)
        stats["folded"] = stats.pop(FoldRule.name, 0)
        return PassResult(res.graph, res.changed, stats, res.candidates)

    def summarize(self, before: Graph, after: Graph, candidates: Sequence[Candidate]
                  ) -> Stats:
        refused = [c for c in candidates if c.rule == FoldRule.name]
        out: Stats = {f"skipped_{k}": sum(1 for c in refused if c.reason.startswith(p))
                      for k, p in REFUSALS.items() if k != "error"}
        errors = [f"{c.anchor.where}: {c.reason}" for c in refused
                  if c.reason.startswith(REFUSALS["error"])]
        if errors:
            out["not_folded_errors"] = errors
        return out


# ---- dead code ----------------------------------------------------------------------------------

class DeadCode(Pass):
    """Dead nodes are gone by construction; reports graph inputs nothing reads."""

    name = "dead_code"

    def run(self, g: Graph) -> PassResult:
        used: set[int] = set()
        for n in g.nodes:
            for v in n.inputs:
                used.add(id(v.node))
        used.update(id(v.node) for v in g.outputs)
        unused = [n.attrs["name"] for n in g.inputs if id(n) not in used]
        stats: dict[str, Any] = {"nodes": len(g.nodes)}
        if unused:
            stats["unused_inputs"] = unused
        return PassResult(g, False, stats)


# ---- common subexpressions -----------------------------------------------------------------------

_MAX_BYTES = "cse.max_bytes"  # option: the largest constant compared by content


def _const_key(n: Node, max_bytes: int) -> tuple | None:
    c = n.const
    if not c.has_array or c.nbytes > max_bytes or c.dtype.value == "string":
        return None
    a = np.ascontiguousarray(c.array)
    # c.shape, not a.shape: ascontiguousarray turns a 0-d array into shape (1,)
    return ("constant", c.dtype, tuple(c.shape), hashlib.sha256(a.tobytes()).hexdigest())


def _opaque_key(n: Node, max_bytes: int = 0) -> tuple | None:
    if (n.attrs.get("proto") is None or n.attrs.get("domain", "") not in ("", "ai.onnx")
            or n.attrs["op_type"] not in FOLDABLE_ONNX or n.attrs.get("captured")):
        return None
    import onnx

    p = onnx.NodeProto()
    p.ParseFromString(n.attrs["proto"])
    attrs = tuple(sorted((a.name, a.SerializeToString()) for a in p.attribute))
    ins = tuple((id(v.node), v.index) for v in n.inputs)
    # deterministic nodes over the same inputs compute equal values, so output types may differ
    # only in the fresh symbols ONNX shape inference made up: compare dtypes and ranks
    kinds = tuple((t.dtype, None if t.shape is None else len(t.shape))
                  if isinstance(t, TensorType) else str(t) for t in n.out_types)
    return ("opaque", n.attrs["op_type"], attrs, n.attrs.get("present"), kinds, len(p.output),
            ins)


_KEYS: dict[str, Callable[[Node, int], "tuple | None"]] = {"constant": _const_key,
                                                          "opaque": _opaque_key}


def first_of_each_content(g: Graph, max_bytes: int) -> dict[int, Node]:
    """For each node with a content key (``_KEYS``), the first node of ``g`` with that content
    (by id)."""
    by_key: dict[tuple, Node] = {}
    first: dict[int, Node] = {}
    for n in g.nodes:
        key_of = _KEYS.get(n.op)
        key = key_of(n, max_bytes) if key_of is not None else None
        if key is not None:
            first[id(n)] = by_key.setdefault(key, n)
    return first


class MergeEqual(Rule):
    """A node whose content equals an earlier node's -> that node's values. Which node comes
    first for each content is computed once per graph (``first_of_each_content``, kept in the
    match context's memo for both rules of the sweep)."""

    kind = "cleanup"
    pass_name = "cse"

    def __init__(self, name: str, op_name: str) -> None:
        self.name = name
        self.anchors = frozenset({op_name})

    def match(self, n: Node, ctx: MatchContext) -> Match | None:
        table = ctx.memo.get("cse.first")
        if table is None:
            table = ctx.memo["cse.first"] = first_of_each_content(
                ctx.graph, ctx.option(_MAX_BYTES, DEDUPE_MAX_BYTES))
        first = table.get(id(n))
        if first is None or first is n:
            return None
        return Match(roots=list(n.outputs), data=first)

    def replacement(self, m: Match) -> list[Value]:
        # no type check: the key compares dtypes and ranks (two equal deterministic nodes may
        # differ only in the fresh symbols ONNX shape inference made up for unknown dims)
        return [m.tr(v) for v in m.data.outputs]


class CSE(RewritePass):
    """Merge equal constants (by content, up to ``max_bytes``) and equal deterministic opaque
    ONNX nodes; equal pure nodes are already one node (hash-consing). One sweep over a table of
    the first node of each content."""

    name = "cse"
    rules = (MergeEqual("constants_merged", "constant"), MergeEqual("opaque_merged", "opaque"))

    def __init__(self, max_bytes: int = DEDUPE_MAX_BYTES) -> None:
        super().__init__(options={_MAX_BYTES: max_bytes})
        self.max_bytes = max_bytes


# ---- no-op removal -------------------------------------------------------------------------------

def _noop(name: str, lhs: Callable[..., Any], check: Callable[[Match], "MatchFail | None"]
          ) -> Rule:
    """A no-op form: the lhs pattern's root computes its variable ``x`` unchanged where
    ``check`` passes and the root has ``x``'s type."""
    def checked(m: Match) -> "MatchFail | None":
        f = check(m)
        if f is not None:
            return f
        if m.roots[0].type != m["x"].type:
            return m.fail(f"result {m.roots[0].type} differs from the input {m['x'].type}",
                          m.roots[0])
        return None

    return rule(name, lhs, lambda m: m["x"], checked, source=__name__, kind="cleanup",
                pass_name="remove_noops")


def _unary(op_name: str, ok: Callable[[Node], bool] = lambda n: True, why: str = "") -> Rule:
    """``op(x)`` is x where ``ok(node)`` (and the type is unchanged)."""
    def check(m: Match) -> "MatchFail | None":
        n = m.roots[0].node
        return None if ok(n) else m.fail(why, n)

    return _noop(f"{op_name}_noop", lambda x: op(op_name, x), check)


def _identity_element(op_name: str, e: Any, suffix: str) -> Rule:
    """``op(x, e)`` (either order where ``op`` commutes) is x for a constant of all ``e``."""
    def check(m: Match) -> "MatchFail | None":
        return None if is_const_all(m["c"], e) else m.fail(f"not a constant of all {e}", m["c"])

    return _noop(f"{op_name}_{suffix}", lambda x, c: op(op_name, x, c), check)


def _none(m: Match) -> None:
    return None


def _self(op_name: str) -> Rule:
    """``op(x, x)`` is x (idempotent ops)."""
    return _noop(f"{op_name}_self", lambda x: op(op_name, x, x), _none)


def _slice_all(n: Node) -> bool:
    a = n.attrs
    t = n.inputs[0].type
    if not isinstance(t, TensorType) or t.shape is None:
        return False
    for s, e, ax, st in zip(a["starts"], a["ends"], a["axes"], a["steps"]):
        d = t.shape[ax]
        if st != 1 or s != 0:
            return False
        if isinstance(d, int) and e < d:
            return False
        if not isinstance(d, int) and e < (1 << 31) - 1:
            return False
    return True


def _reduce_over_ones(n: Node) -> bool:
    t = n.inputs[0].type
    if not n.attr("keepdims", False) or not isinstance(t, TensorType) or t.shape is None:
        return False
    axes = n.attr("axes", ()) or tuple(range(len(t.shape)))
    return all(t.shape[ax] == 1 for ax in axes)


NOOP_RULES: list[Rule] = [
    *(_unary(o) for o in ("identity", "cast", "reshape", "expand", "squeeze", "unsqueeze")),
    _unary("transpose", lambda n: tuple(n.attrs["perm"]) == tuple(range(len(n.attrs["perm"]))),
           "perm is not the identity"),
    _unary("slice", _slice_all, "the slice does not take everything"),
    _unary("tile", lambda n: all(r == 1 for r in n.attrs["repeats"]), "repeats are not all 1"),
    _unary("pad", lambda n: all(p == 0 for p in n.attrs["pads"]), "pads are not all 0"),
    _unary("clip", lambda n: n.attr("min") is None and n.attr("max") is None, "clip has a bound"),
    _unary("split", lambda n: len(n.out_types) == 1, "split into several pieces"),
    *(_unary(f"reduce_{r}", _reduce_over_ones, "reduces over dims other than 1 (or drops them)")
      for r in ("sum", "mean", "max", "min", "prod")),
    *(_identity_element(o, 0, "zero") for o in ("add", "sub")),
    *(_identity_element(o, False, "zero") for o in ("or", "xor")),
    *(_identity_element(o, 1, "one") for o in ("mul", "div", "pow")),
    _identity_element("and", True, "one"),
    *(_self(o) for o in ("maximum", "minimum", "and", "or")),
    _noop("where_same", lambda c, x: op.where(c, x, x), _none),
    _noop("concat_single", lambda x: op.concat(x), _none),
]


class RemoveNoOps(RewritePass):
    """Drop nodes that compute one of their inputs unchanged (``NOOP_RULES``, one rule per form,
    each counted under its name), bottom-up so chains of no-ops go in one run."""

    name = "remove_noops"
    mode = "local"
    rules = tuple(NOOP_RULES)


def cleanup_passes() -> list[Pass]:
    """The cleanup passes in their usual order."""
    return [ConstantFold(), RemoveNoOps(), CSE(), DeadCode()]


def cleanup(g: Graph, fixed_point: bool = True) -> PassResult:
    """Run the cleanup passes (to a fixed point by default)."""
    return Pipeline(cleanup_passes(), name="cleanup", fixed_point=fixed_point).run(g)


__all__ = ["CSE", "ConstantFold", "DeadCode", "NOOP_RULES", "RemoveNoOps", "cleanup",
           "cleanup_passes"]
