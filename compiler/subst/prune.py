"""Pruning: drop candidate pairs that are renamings of others or are subsumed by smaller rules.

TASO's two prunings, plus the cheap graph-level one that makes Python enumeration tractable:

* ``renaming``   — a pair equal to another up to renaming inputs of the same type (one kept).
* ``subgraph``   — both sides contain the same node (same op on the same inputs): TASO drops
  these outright (generate.py does too); ``common_subgraph`` is the stricter test used in the
  tests, which also checks the pair stays equivalent with that node's value replaced by a fresh
  input of a type some free scenario input has (so the smaller rule is itself enumerated).
* ``transitive`` — (generate.py) each graph of a bucket is paired with one smallest member
  only; any other pair of the bucket follows from two of those.
* ``supergraph`` — both sides end in the same op over pairwise-equivalent inputs (relu(A) vs
  relu(B) with A = B): congruence on a smaller rule.
* ``noncanonical`` — a side has an intermediate value that a smaller graph computes too
  (e.g. it contains transpose(transpose(x))): rewrite that value by the smaller rule first.
* ``separable``  — both sides compute each output with ops of its own: a union of smaller rules.

Every pruning here is decided on fingerprints and structure alone, so it runs before any proof.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..ops.registry import get_op
from . import fingerprint as fpr
from .enumerate import Enumerator, GraphRec


@dataclass(frozen=True)
class Pair:
    """A candidate rewrite: lhs outputs[i] equals rhs outputs[i]."""

    lhs: GraphRec
    rhs: GraphRec

    @property
    def n_ops(self) -> int:
        return len(self.lhs.nodes) + len(self.rhs.nodes)


def minimal_costs(en: Enumerator) -> dict[int, int]:
    """For each value fingerprint, the fewest ops any enumerated graph computes it with."""
    best: dict[int, int] = {}
    for v in range(len(en.values)):
        h = en.vhash[v]
        c = en.cone_size(v)
        if c < best.get(h, 1 << 30):
            best[h] = c
    return best


def noncanonical(en: Enumerator, rec: GraphRec, best: dict[int, int]) -> bool:
    """Whether an intermediate value of the graph is computed with more ops than needed."""
    outs = set(rec.outputs)
    for n in rec.nodes:
        for v in en.node_ins[n]:
            if v in outs or v < en.n_inputs:
                continue
            if en.cone_size(v) > best[en.vhash[v]]:
                return True
    return False


def congruent(en: Enumerator, p: Pair) -> bool:
    """Single-output pairs whose last ops agree and read pairwise-equivalent values."""
    if len(p.lhs.outputs) != 1:
        return False
    a, b = en.vnode[p.lhs.outputs[0]], en.vnode[p.rhs.outputs[0]]
    if a < 0 or b < 0:
        return False
    na, nb = en.nodes[a], en.nodes[b]
    if na.op != nb.op or na.attrs != nb.attrs or len(na.inputs) != len(nb.inputs):
        return False
    if en.values[p.lhs.outputs[0]].index != en.values[p.rhs.outputs[0]].index:
        return False
    ha = [en.vhash[v] for v in en.node_ins[a]]
    hb = [en.vhash[v] for v in en.node_ins[b]]
    if ha == hb:
        return True
    return get_op(na.op).commutative and sorted(ha) == sorted(hb)


def _eval(en: Enumerator, rec: GraphRec, override: dict[int, tuple[np.ndarray, ...]]
          ) -> list[tuple[np.ndarray, ...]]:
    """Re-evaluate a graph's outputs with some values replaced."""
    env: dict[int, tuple[np.ndarray, ...]] = dict(override)

    def val(v: int) -> tuple[np.ndarray, ...]:
        if v in env:
            return env[v]
        n = en.vnode[v]
        if n < 0 or n not in members:
            return en.vfp[v]
        outs = en.fp.run_node(en.nodes[n], [val(i) for i in en.node_ins[n]])
        for k, ov in enumerate(en.node_outs[n]):
            env[ov] = outs[k]
        return env[v]

    members = set(rec.nodes)
    return [val(v) for v in rec.outputs]


def common_subgraph(en: Enumerator, p: Pair, rng: np.random.Generator) -> bool:
    """Both sides share a node whose value can be replaced by a fresh input of a free type."""
    shared = set(p.lhs.nodes) & set(p.rhs.nodes)
    if not shared:
        return False
    for n in sorted(shared):
        if len(en.node_outs[n]) != 1:
            continue
        v = en.node_outs[n][0]
        if v in p.lhs.outputs or v in p.rhs.outputs:
            continue
        t = en.vtype[v]
        # inputs still read once the node's cone is cut away
        used = _inputs_without(en, p.lhs, n) | _inputs_without(en, p.rhs, n)
        free = [i for i in range(en.n_inputs) if en.vtype[i] == t and i not in used]
        if not free:
            continue
        fresh = tuple(fpr.random_input(en.fp_shape(t), rng) for _ in range(en.samples))
        lo = _eval(en, p.lhs, {v: fresh})
        ro = _eval(en, p.rhs, {v: fresh})
        if all(fpr.digest(a) == fpr.digest(b) for a, b in zip(lo, ro)):
            return True
    return False


def _inputs_without(en: Enumerator, rec: GraphRec, cut: int) -> set[int]:
    """Graph inputs read by the graph when node ``cut``'s output is a fresh input."""
    cut_v = set(en.node_outs[cut])
    used: set[int] = set()
    stack = list(rec.outputs)
    seen: set[int] = set()
    members = set(rec.nodes)
    while stack:
        v = stack.pop()
        if v in seen or v in cut_v:
            continue
        seen.add(v)
        if v < en.n_inputs:
            used.add(v)
            continue
        n = en.vnode[v]
        if n in members:
            stack.extend(en.node_ins[n])
    return used


# ---- input renaming --------------------------------------------------------------------------

def term(en: Enumerator, v: int, names: dict[int, str], memo: dict[int, str]) -> str:
    """A value as a term string (shared subterms written out), inputs named by ``names``."""
    if v in memo:
        return memo[v]
    if v < en.n_inputs:
        s = names[v]
    else:
        n = en.vnode[v]
        node = en.nodes[n]
        args = [term(en, i, names, memo) for i in en.node_ins[n]]
        if get_op(node.op).commutative:
            args.sort()
        attrs = ",".join(f"{k}={node.attrs[k]!r}" for k in node.attrs)
        s = f"{node.op}{{{attrs}}}({','.join(args)})"
        if len(en.node_outs[n]) > 1:
            s += f"#{en.values[v].index}"
    memo[v] = s
    return s


def renaming_key(en: Enumerator, p: Pair) -> tuple:
    """The pair's key under the renaming of same-typed inputs that makes it smallest (either
    orientation)."""
    used = sorted(set(en.inputs_of(p.lhs)) | set(en.inputs_of(p.rhs)))
    groups: dict[object, list[int]] = {}
    for i in used:
        groups.setdefault(en.vtype[i], []).append(i)
    group_lists = list(groups.values())
    pools = []
    for g in group_lists:
        same = [j for j in range(en.n_inputs) if en.vtype[j] == en.vtype[g[0]]]
        pools.append([en.values[j].node.attrs["name"] for j in same[:len(g)]])
    best: tuple | None = None
    for perms in itertools.product(*(itertools.permutations(pool) for pool in pools)):
        names = {i: nm for g, perm in zip(group_lists, perms) for i, nm in zip(g, perm)}
        ml: dict[int, str] = {}
        mr: dict[int, str] = {}
        lt = [term(en, v, names, ml) for v in p.lhs.outputs]
        rt = [term(en, v, names, mr) for v in p.rhs.outputs]
        for key in (tuple(sorted(zip(lt, rt))), tuple(sorted(zip(rt, lt)))):
            if best is None or key < best:
                best = key
    assert best is not None
    return best


def orient(en: Enumerator, a: GraphRec, b: GraphRec) -> Pair | None:
    """lhs -> rhs with the rhs reading only inputs the lhs reads; the larger side on the left."""
    ia, ib = set(en.inputs_of(a)), set(en.inputs_of(b))
    order: Sequence[tuple[GraphRec, GraphRec]]
    if len(a.nodes) > len(b.nodes) or (len(a.nodes) == len(b.nodes) and a.nodes > b.nodes):
        order = ((a, b), (b, a))
    else:
        order = ((b, a), (a, b))
    for lhs, rhs in order:
        il, ir = (ia, ib) if lhs is a else (ib, ia)
        if ir <= il:
            return Pair(lhs, rhs)
    return None


# ---- derivable by associativity / commutativity ------------------------------------------------

def ac_term(en: Enumerator, v: int, memo: dict[int, str]) -> str:
    """The value's term with chains of one associative op flattened (and sorted if it commutes):
    the ops declaring ``associative`` (and ``commutative``)."""
    if v in memo:
        return memo[v]
    if v < en.n_inputs:
        s = en.values[v].node.attrs["name"]
    else:
        n = en.vnode[v]
        node = en.nodes[n]
        opdef = get_op(node.op)
        if opdef.associative:
            args: list[str] = []
            stack = list(reversed(en.node_ins[n]))
            while stack:
                a = stack.pop()
                an = en.vnode[a]
                if an >= 0 and en.nodes[an].op == node.op and en.nodes[an].attrs == node.attrs:
                    stack.extend(reversed(en.node_ins[an]))
                else:
                    args.append(ac_term(en, a, memo))
            if opdef.commutative:
                args.sort()
            s = f"{node.op}({','.join(args)})"
        else:
            args = [ac_term(en, i, memo) for i in en.node_ins[n]]
            attrs = ",".join(f"{k}={node.attrs[k]!r}" for k in node.attrs)
            s = f"{node.op}{{{attrs}}}({','.join(args)})"
            if len(en.node_outs[n]) > 1:
                s += f"#{en.values[v].index}"
    memo[v] = s
    return s


def ac_equal(en: Enumerator, p: Pair) -> bool:
    """Both sides are the same term up to associativity/commutativity, and the pair is bigger
    than the associativity rules themselves (2 ops a side)."""
    if p.n_ops <= 4:
        return False
    memo: dict[int, str] = {}
    return all(ac_term(en, a, memo) == ac_term(en, b, memo)
               for a, b in zip(p.lhs.outputs, p.rhs.outputs))


def common_output(p: Pair) -> bool:
    """Some output is the very same node on both sides: the rule without it is smaller."""
    return any(a == b for a, b in zip(p.lhs.outputs, p.rhs.outputs))
