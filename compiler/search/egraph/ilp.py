"""Extraction as an integer program (Tensat's), solved by HiGHS through ``scipy.optimize.milp``.

On the pruned e-graph (``extract.pruned``):

* a binary ``x_n`` per e-node (chosen) and ``z_c`` per e-class (computed), ``z_c = sum x_n`` over
  its e-nodes (so at most one each), ``z_r = 1`` for a root;
* a class c that takes an e-node reading class k has k computed by an e-node that does not
  read c back: ``sum x_n`` (n of c reading k) ``<= sum x_m`` (m of k not reading c). Summed
  per class, not per e-node, and without the 2-cycles, this is tighter than Tensat's
  ``x_n <= z_k``: its relaxation lets a class computed by halves of two e-nodes need only half
  of each child, so the bound fades with depth;
* ``z_c <= z_k`` where computing c always computes k (``implied``);
* acyclicity, only inside the strongly connected parts of the class graph (networkx; an edge
  between two parts is on no cycle). A part with at most ``max_cycles`` simple cycles gets one
  row per cycle: of the e-nodes that realise its edges, fewer than its length are chosen (exact,
  and much tighter than order variables: most parts are a class and its reshuffle, a 2-cycle).
  A part with more gets Tensat's order variables: ``t_c`` in ``[0, S-1]`` per class of a part
  of ``S`` classes and ``t_c - t_k >= 1 - S (1 - x_n)`` for e-node ``n`` of ``c`` reading ``k``;
* grounding, for each cyclic part and each enumerated cycle of more than two classes: a class
  of the group is computed only as far as some e-node of the group reading nothing inside it
  is chosen (``z_c <= e``, ``e <= sum x`` of those exits). An acyclic choice restricted to the
  group has a sink, so this holds for every answer; without it the relaxation computes a class
  from a cycle of thirds of views with no input below (tiny BERT: a root LP bound of 3
  launches against 28);
* fusion savings: ``y <= x_a``, ``y <= x_b`` per pair, ``-saving * y`` in the objective; with
  savings, a computed non-root class needs a chosen reader (``z_c <= sum x`` of its readers), so
  an unreached pair cannot buy its saving (the same when some e-node costs less than 0);
* objective: the chosen e-nodes' costs less the savings, scaled so the dearest e-node costs 1.

``scipy``'s ``milp`` takes no initial solution. A warm choice is returned instead of the
program's when the solver finds nothing, or only a dearer choice, within the time limit
(``IlpResult.source == "warm"``). A cutoff row (objective <= the warm choice's cost), the part of
a warm start ``milp`` could take, was tried and dropped: on the layered synthetic e-graph it made
HiGHS slower at 10k e-nodes in every run (1.4 -> 1.9 s, 2.4 -> 2.7 s, 4.7 -> 6.3 s) and changed
nothing at 1k; at 50k-100k both variants stopped at the limit without a choice or overran it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import networkx as nx
import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from .extract import ExtractionError, Flat, flat_choice, flat_cost, flatten, prune_flat, reached
from .view import Choice, EGraphView

log = logging.getLogger("graphopt.search")


@dataclass
class IlpResult:
    """What the integer program gave: ``choice`` (indices of the input view; None when there is
    none), its DAG ``cost``, ``optimal`` (proved within the gap), ``bound`` (the solver's lower
    bound on the cost, when it has one), ``source`` ("ilp", "warm" or None), the solver's
    ``status`` message, ``seconds``, the program's size and, when there is no choice, ``reason``."""

    choice: Choice | None
    cost: float | None
    optimal: bool
    bound: float | None
    source: str | None
    status: str
    seconds: float
    n_vars: int
    n_rows: int
    reason: str = ""


class _Rows:
    """Sparse constraint rows ``lo <= a @ v <= hi``, appended one at a time."""

    def __init__(self) -> None:
        self.r: list[int] = []
        self.c: list[int] = []
        self.v: list[float] = []
        self.lo: list[float] = []
        self.hi: list[float] = []

    def add(self, terms: list[tuple[int, float]], lo: float, hi: float) -> None:
        k = len(self.lo)
        for col, val in terms:
            self.r.append(k)
            self.c.append(col)
            self.v.append(val)
        self.lo.append(lo)
        self.hi.append(hi)

    def constraint(self, n_vars: int) -> LinearConstraint:
        a = coo_matrix((self.v, (self.r, self.c)), shape=(len(self.lo), n_vars)).tocsr()
        return LinearConstraint(a, np.array(self.lo), np.array(self.hi))


def cyclic_parts(flat: Flat) -> list[list[int]]:
    """The strongly connected parts of the class graph (class -> classes its e-nodes read) with
    more than one class; only their inner edges can close a cycle."""
    g = nx.DiGraph()
    g.add_nodes_from(range(len(flat.members)))
    g.add_edges_from((flat.node_class[n], k) for n in range(flat.n_nodes) for k in flat.kids[n])
    return [sorted(p) for p in nx.strongly_connected_components(g) if len(p) > 1]


def implied(flat: Flat) -> list[tuple[int, int]]:
    """Pairs (c, k): every acyclic way of computing class c computes class k, seen two levels
    down (k is read by the e-node, or by every e-node of one of its child classes that does not
    read c back), where not every e-node of c reads k itself. ``z_c <= z_k`` holds for them; the
    relaxation otherwise lets two halves of c's e-nodes each need k only by half."""
    out = []
    for c, ms in enumerate(flat.members):
        need: set[int] | None = None
        direct: set[int] | None = None
        for n in ms:
            got: set[int] = set()
            for k in flat.kids[n]:
                got.add(k)
                below = [set(flat.kids[m]) for m in flat.members[k] if c not in flat.kids[m]]
                if below:
                    got |= set.intersection(*below)
            need = got if need is None else need & got
            direct = set(flat.kids[n]) if direct is None else direct & set(flat.kids[n])
        if need:
            out.extend((c, k) for k in sorted(need - direct - {c}))
    return out


def part_cycles(flat: Flat, part: list[int], limit: int) -> list[list[int]] | None:
    """The simple cycles (lists of classes) of one cyclic part's class graph, or None when it
    has more than ``limit``. A part of two classes is one 2-cycle."""
    if len(part) == 2:
        return [list(part)] if limit >= 1 else None
    inside = set(part)
    g = nx.DiGraph()
    g.add_edges_from((c, k) for c in part for n in flat.members[c] for k in flat.kids[n] if k in inside)
    found: list[list[int]] = []
    for cyc in nx.simple_cycles(g):
        if len(found) == limit:
            return None
        found.append(cyc)
    return found


def solve(view: EGraphView, *, time_limit: float = 10.0, warm: Choice | None = None,
          rel_gap: float = 1e-6, max_cycles: int = 64) -> IlpResult:
    """The least-cost acyclic choice by the integer program (see the module docstring), within
    ``time_limit`` seconds (the best one found when the limit is reached; HiGHS reads its clock
    between phases: on the layered synthetic e-graph of 50k-100k e-nodes, on a loaded 2-core
    machine, a 10-20 s limit was overrun by 5 s to 2 minutes before the root LP) and a
    relative gap of
    ``rel_gap``; ``max_cycles``: see the module docstring. Raises ``ExtractionError`` when a
    root class has no computable e-node or ``warm`` is not a valid choice."""
    t0 = time.perf_counter()
    full = flatten(view)
    warm_cost = None
    if warm is not None:
        warm_flat = flat_choice(full, warm)
        warm_cost = flat_cost(full, warm_flat, reached(full, warm_flat))
    f, origin = prune_flat(full)
    n_x, n_c, n_y = f.n_nodes, len(f.members), len(f.savings)
    cycles: list[list[int]] = []
    parts: list[list[int]] = []  # those with too many cycles: order variables
    all_parts = cyclic_parts(f)
    for p in all_parts:
        found = part_cycles(f, p, max_cycles)
        if found is None:
            parts.append(p)
        else:
            cycles.extend(found)
    part_of = {c: i for i, p in enumerate(parts) for c in p}
    t_col: dict[int, int] = {}
    base = n_x + n_c + n_y
    for p in parts:
        for c in p:
            t_col[c] = base + len(t_col)
    grounded = [p for p in all_parts if len(p) > 2] + [c for c in cycles if len(c) > 2]
    e_base = base + len(t_col)
    n_vars = e_base + len(grounded)
    scale = max([abs(x) for x in f.cost] + [abs(s) for s in f.savings.values()] + [1e-30])

    obj = np.zeros(n_vars)
    obj[:n_x] = np.array(f.cost) / scale
    pair_list = list(f.savings.items())
    for i, (_, s) in enumerate(pair_list):
        obj[n_x + n_c + i] = -s / scale
    lo_b = np.zeros(n_vars)
    hi_b = np.ones(n_vars)
    for r in f.roots:
        lo_b[n_x + r] = 1.0
    for c, col in t_col.items():
        hi_b[col] = len(parts[part_of[c]]) - 1

    rows = _Rows()
    for c, ms in enumerate(f.members):  # z_c = sum of x over the class
        rows.add([(n_x + c, 1.0)] + [(n, -1.0) for n in ms], 0.0, 0.0)
    for c, ms in enumerate(f.members):
        via: dict[int, list[int]] = {}  # child class -> the e-nodes of c that read it
        for n in ms:
            for k in f.kids[n]:
                via.setdefault(k, []).append(n)
                if c in part_of and part_of.get(k) == part_of[c]:
                    big = len(parts[part_of[c]])
                    rows.add([(t_col[c], 1.0), (t_col[k], -1.0), (n, -float(big))], 1.0 - big, np.inf)
        for k, ns in via.items():
            rows.add([(n, 1.0) for n in ns] + [(m, -1.0) for m in f.members[k] if c not in f.kids[m]],
                     -np.inf, 0.0)
    for c, k in implied(f):
        rows.add([(n_x + c, 1.0), (n_x + k, -1.0)], -np.inf, 0.0)
    for i, group in enumerate(grounded):  # a computed class of the group: some exit chosen
        inside = set(group)
        exits = [n for c in group for n in f.members[c] if inside.isdisjoint(f.kids[n])]
        rows.add([(e_base + i, 1.0)] + [(n, -1.0) for n in exits], -np.inf, 0.0)
        for c in group:
            rows.add([(n_x + c, 1.0), (e_base + i, -1.0)], -np.inf, 0.0)
    for cyc in cycles:  # not every edge of a cycle: at most len - 1 of them chosen
        if len(cyc) > 2:  # a 2-cycle is already excluded by the rows above
            terms = [(n, 1.0) for c, k in zip(cyc, cyc[1:] + cyc[:1]) for n in f.members[c] if k in f.kids[n]]
            rows.add(terms, -np.inf, len(cyc) - 1.0)
    for i, ((a, b), _) in enumerate(pair_list):
        rows.add([(n_x + n_c + i, 1.0), (a, -1.0)], -np.inf, 0.0)
        rows.add([(n_x + n_c + i, 1.0), (b, -1.0)], -np.inf, 0.0)
    if pair_list or min(f.cost, default=0.0) < 0:
        roots = set(f.roots)
        for c in range(n_c):
            if c not in roots:
                rows.add([(n_x + c, 1.0)] + [(n, -1.0) for n in f.readers[c]], -np.inf, 0.0)
    integrality = np.zeros(n_vars)
    integrality[:n_x] = 1
    left = max(0.01, time_limit - (time.perf_counter() - t0))
    res = milp(obj, constraints=rows.constraint(n_vars), integrality=integrality,
               bounds=Bounds(lo_b, hi_b),
               options={"time_limit": left, "disp": False, "mip_rel_gap": rel_gap})
    seconds = time.perf_counter() - t0
    bound = getattr(res, "mip_dual_bound", None)
    bound = float(bound) * scale if bound is not None and np.isfinite(bound) else None
    size = dict(n_vars=n_vars, n_rows=len(rows.lo))
    if res.x is None:
        if warm is not None:
            return IlpResult(warm, warm_cost, False, bound, "warm", res.message, seconds, **size,
                             reason=f"no feasible choice found ({res.message}); kept the warm start")
        return IlpResult(None, None, False, bound, None, res.message, seconds, **size,
                         reason=f"no feasible choice found ({res.message})")
    chosen: dict[int, int] = {}
    for c, ms in enumerate(f.members):
        picked = [n for n in ms if res.x[n] > 0.5]
        if picked:
            chosen[c] = picked[0]
    order = reached(f, chosen)  # raises on a cycle: the program forbids one
    chosen = {c: chosen[c] for c in order}
    cost = flat_cost(f, chosen, order)
    choice = {f.class_ids[c]: full.node_pos[origin[n]] for c, n in chosen.items()}
    if warm_cost is not None and warm_cost < cost:
        return IlpResult(warm, warm_cost, False, bound, "warm", res.message, seconds, **size,
                         reason=f"its best choice ({cost:.6g}) is dearer than the warm start")
    return IlpResult(choice, cost, res.status == 0, bound, "ilp", res.message, seconds, **size)


def ilp(view: EGraphView, *, time_limit: float = 10.0, warm: Choice | None = None,
        rel_gap: float = 1e-6) -> Choice | None:
    """The integer program's own choice (``solve``): optimal when proved within ``time_limit``,
    else the best found (with ``warm``: the best found no dearer than it); None when it found
    none, with the reason logged at INFO on the ``graphopt.search`` logger (the caller still
    has its warm start; ``solve`` returns it marked ``source="warm"``). Raises
    ``ExtractionError`` when a root class has no computable e-node."""
    res = solve(view, time_limit=time_limit, warm=warm, rel_gap=rel_gap)
    got = "optimal" if res.optimal else "best found" if res.source == "ilp" else "no choice"
    log.info("ilp extraction: %s (%d variables, %d rows, %.2f s; %s)%s", got, res.n_vars,
             res.n_rows, res.seconds, res.status, f": {res.reason}" if res.reason else "")
    return res.choice if res.source == "ilp" else None


__all__ = ["ExtractionError", "IlpResult", "cyclic_parts", "ilp", "implied", "part_cycles", "solve"]
