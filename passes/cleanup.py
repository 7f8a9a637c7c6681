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
  constants by content and equal deterministic opaque ONNX nodes.
* ``RemoveNoOps``: identity, cast to the same dtype, reshape/expand to the same shape, identity
  transpose, slice taking everything, add 0 / sub 0 / mul 1 / div 1 / pow 1 with constants when
  shape and dtype are unchanged, one-input concat, one-piece split, empty squeeze/unsqueeze, ...
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Sequence

import numpy as np

from graphopt.ir.fold import FOLDABLE_ONNX, FoldPolicy, fold_graph
from graphopt.ir.graph import Graph
from graphopt.ir.node import ConstData, Node, Value
from graphopt.ir.types import TensorType
from graphopt.rewrite.passes import Pass, PassResult, Pipeline

DEDUPE_MAX_BYTES = 1 << 20


# ---- constants ----------------------------------------------------------------------------------

def const_array(v: Value) -> np.ndarray | None:
    """The numpy data of ``v`` when it is a constant with a numpy form, else None."""
    n = v.node
    if n.op != "constant" or not n.const.has_array:
        return None
    return np.asarray(n.const.array)


def is_const_all(v: Value, x: float) -> bool:
    """True when ``v`` is a constant whose every element equals ``x``."""
    a = const_array(v)
    if a is None or a.dtype == object or a.size == 0:
        return False
    with np.errstate(all="ignore"):
        if not a.flat[0] == x:  # cheap rejection: weights rarely start with exactly x
            return False
        return bool(np.all(a == x))


# ---- constant folding ----------------------------------------------------------------------------

class ConstantFold(Pass):
    """Fold constant subgraphs with the compiler's folder (``graphopt.ir.fold``) under the
    pass's size policy."""

    name = "constant_fold"

    def __init__(self, max_elements: int = FoldPolicy.max_elements,
                 shared_max_elements: int = FoldPolicy.shared_max_elements) -> None:
        self.policy = FoldPolicy(max_elements, shared_max_elements=shared_max_elements)

    def run(self, g: Graph) -> PassResult:
        out, st = fold_graph(g, self.policy)
        stats: dict[str, Any] = {"folded": st.folded, "skipped_large": st.skipped["large"],
                                 "skipped_shared": st.skipped["shared"]}
        if st.errors:
            stats["not_folded_errors"] = st.errors
        return PassResult(out, st.folded > 0, stats)


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

class CSE(Pass):
    """Merge equal constants (by content, up to ``max_bytes``) and equal deterministic opaque
    ONNX nodes; equal pure nodes are already one node (hash-consing)."""

    name = "cse"

    def __init__(self, max_bytes: int = DEDUPE_MAX_BYTES) -> None:
        self.max_bytes = max_bytes

    def run(self, g: Graph) -> PassResult:
        stats = {"constants_merged": 0, "opaque_merged": 0}
        seen_const: dict[tuple, Value] = {}
        seen_opaque: dict[tuple, Node] = {}

        def merge(n: Node) -> Sequence[Value] | None:
            if n.op == "constant":
                key = self._const_key(n.const)
                if key is None:
                    return None
                first = seen_const.setdefault(key, n.out)
                if first.node is n:
                    return None
                stats["constants_merged"] += 1
                return (first,)
            if n.op == "opaque":
                okey = _opaque_key(n)
                if okey is None:
                    return None
                firstn = seen_opaque.setdefault(okey, n)
                if firstn is n:
                    return None
                stats["opaque_merged"] += 1
                return firstn.outputs
            return None

        out = g.map_nodes(merge)
        changed = stats["constants_merged"] + stats["opaque_merged"] > 0
        return PassResult(out, changed, stats)

    def _const_key(self, c: ConstData) -> tuple | None:
        if not c.has_array or c.nbytes > self.max_bytes or c.dtype.value == "string":
            return None
        a = np.ascontiguousarray(c.array)
        # c.shape, not a.shape: ascontiguousarray turns a 0-d array into shape (1,)
        return (c.dtype, tuple(c.shape), hashlib.sha256(a.tobytes()).hexdigest())


def _opaque_key(n: Node) -> tuple | None:
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
    return (n.attrs["op_type"], attrs, n.attrs.get("present"), kinds, len(p.output), ins)


# ---- no-op removal -------------------------------------------------------------------------------

def _same(n: Node, v: Value) -> bool:
    return len(n.out_types) == 1 and n.out_types[0] == v.type


def _noop_source(n: Node) -> tuple[str, Value] | None:
    """If ``n`` computes one of its inputs unchanged, (rule name, that input)."""
    op, ins = n.op, n.inputs
    if not ins or len(n.out_types) != 1:
        return None
    x = ins[0]
    rule = _UNARY_NOOPS.get(op)
    if rule is not None and rule(n) and _same(n, x):
        return f"{op}_noop", x
    if op in ("add", "sub", "or", "xor") and len(ins) == 2:
        zero = 0 if op in ("add", "sub") else False
        if is_const_all(ins[1], zero) and _same(n, ins[0]):
            return f"{op}_zero", ins[0]
        if op != "sub" and is_const_all(ins[0], zero) and _same(n, ins[1]):
            return f"{op}_zero", ins[1]
    if op in ("mul", "div", "pow", "and") and len(ins) == 2:
        one = True if op == "and" else 1
        if is_const_all(ins[1], one) and _same(n, ins[0]):
            return f"{op}_one", ins[0]
        if op in ("mul", "and") and is_const_all(ins[0], one) and _same(n, ins[1]):
            return f"{op}_one", ins[1]
    if op in ("maximum", "minimum", "and", "or") and len(ins) == 2 and ins[0] == ins[1] \
            and _same(n, x):
        return f"{op}_self", x
    if op == "where" and len(ins) == 3 and ins[1] == ins[2] and _same(n, ins[1]):
        return "where_same", ins[1]
    if op == "concat" and len(ins) == 1 and _same(n, x):
        return "concat_single", x
    return None


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


_UNARY_NOOPS: dict[str, Callable[[Node], bool]] = {
    "identity": lambda n: True,
    "cast": lambda n: True,  # same output type as input: same dtype
    "reshape": lambda n: True,
    "expand": lambda n: True,
    "transpose": lambda n: tuple(n.attrs["perm"]) == tuple(range(len(n.attrs["perm"]))),
    "slice": _slice_all,
    "squeeze": lambda n: True,
    "unsqueeze": lambda n: True,
    "tile": lambda n: all(r == 1 for r in n.attrs["repeats"]),
    "pad": lambda n: all(p == 0 for p in n.attrs["pads"]),
    "clip": lambda n: n.attr("min") is None and n.attr("max") is None,
    "split": lambda n: len(n.out_types) == 1,
    "reduce_sum": _reduce_over_ones,
    "reduce_mean": _reduce_over_ones,
    "reduce_max": _reduce_over_ones,
    "reduce_min": _reduce_over_ones,
    "reduce_prod": _reduce_over_ones,
}


class RemoveNoOps(Pass):
    name = "remove_noops"

    def run(self, g: Graph) -> PassResult:
        stats: dict[str, int] = {}

        def drop(n: Node) -> Sequence[Value] | None:
            hit = _noop_source(n)
            if hit is None:
                return None
            rule, v = hit
            stats[rule] = stats.get(rule, 0) + 1
            return (v,)

        out = g.map_nodes(drop)
        return PassResult(out, bool(stats), stats)


def cleanup_passes() -> list[Pass]:
    """The cleanup passes in their usual order."""
    return [ConstantFold(), RemoveNoOps(), CSE(), DeadCode()]


def cleanup(g: Graph, fixed_point: bool = True) -> PassResult:
    """Run the cleanup passes (to a fixed point by default)."""
    return Pipeline(cleanup_passes(), name="cleanup", fixed_point=fixed_point).run(g)


__all__ = ["CSE", "ConstantFold", "DeadCode", "RemoveNoOps", "cleanup", "cleanup_passes",
           "const_array", "is_const_all"]
