"""Placement solvers: which forward values to save, which to recompute in the backward.

* ``no_recompute``: save everything the backward reads (what plain autograd keeps).
* ``sqrt_plan``: Chen et al.'s sqrt(n) checkpointing. The "layers" are the cut values of the
  forward graph (a value no later computation can bypass: every input-dependent value computed
  before it is read only up to it; in a transformer the residual stream after each attention and
  each MLP); every ceil(sqrt(n))-th cut is saved and the rest of each segment is recomputed in
  the backward (random ops' outputs are saved, never recomputed).
* ``mincut_plan``: the min-cut plan (networkx ``minimum_cut``): only pointwise / view values may
  be recomputed, matmuls, reductions, opaque ops and random ops must run in the forward, and the
  cheapest set of bytes separating them from the backward's reads is saved.
* ``milp_plan``: the integer program, solved by HiGHS through ``scipy.optimize.milp``: minimise
  the recompute time (IR cost model) subject to the saved bytes at the forward/backward boundary
  <= B. Binary variables per forward value: s (saved), r (recomputed), and m per storage (kept
  alive by a saved alias). Constraints: a value the backward reads is saved or recomputed; a
  recomputed value's inputs are saved or recomputed (primals are always there); a saved view
  keeps its storage; random ops are never recomputed, tuple-valued calls never saved. The peak
  over the fixed schedule (the partitioned forward, then the reordered backward, with
  recomputations live from just before their first use) is then simulated exactly
  (``plan.simulate``); when it exceeds the budget, B becomes the plan's own boundary bytes minus
  the excess and the program is solved again (at most ``rounds`` times). The answer is compared
  with the baselines whose simulated peak fits; the least recompute time wins (the plan keeps
  its solver's name, so the report says which). Warm start: the best baseline plan
  (sqrt(n), min-cut) whose boundary bytes fit gives a cutoff on the objective (``scipy``'s milp
  takes no initial solution, the cutoff is the part of a warm start it can use).
* ``lowest_peak_plan``: checkpointing every k-th cut for a range of k, the lowest simulated
  peak (recomputing everything from the input has no lower peak: the whole forward is
  recomputed at the start of the backward and lives until its use).
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np

from ..errors import GraphOptError
from .joint import JointGraph
from .plan import Peak, Plan, complete, simulate

Simulator = Callable[[Plan], Peak]
MIP_GAP = 0.005  # HiGHS stops within 0.5% of the optimum (proving the last 0.5% costs seconds)


def no_recompute(joint: JointGraph) -> Plan:
    """Save every value the backward reads."""
    return complete(joint, joint.needed, "none")


def forced_saves(joint: JointGraph) -> set[str]:
    """Values a plan saves so that no random op is recomputed: a random op's output the
    backward reads, and every tensor computed directly from a random op's output (dropout's bool
    mask made from its draw; a ``getitem`` of ``native_dropout``). ``complete`` keeps those
    something reads."""
    out: set[str] = set()
    for f in joint.rng:
        if f in joint.needed and joint.tensor[f]:
            out.add(f)
        for u in joint.nodes[f].users:
            if u.name in joint.tensor and joint.tensor[u.name] and u.name not in joint.rng:
                out.add(u.name)
    return out


def cuts(joint: JointGraph) -> list[str]:
    """Cut values of the forward graph, in order (see the module docstring)."""
    dep = joint.input_dependent()
    order = [f for f in joint.forward if f in dep]
    pos = {f: i for i, f in enumerate(order)}
    last_read = {f: pos[f] for f in order}
    for f in order:
        for u in joint.inputs[f]:
            if u in pos:
                last_read[u] = max(last_read[u], pos[f])
    out: list[str] = []
    reach = -1  # furthest read of any value before the current one
    for f in order:
        if reach <= pos[f] and joint.saveable(f) and joint.kind[f] != "view" \
                and f not in joint.rng and pos[f] > 0:
            out.append(f)
        reach = max(reach, last_read[f])
    return out


def sqrt_plan(joint: JointGraph, every: int | None = None) -> Plan:
    """sqrt(n) checkpointing over the forward graph's n cuts: every ``every``-th cut is saved
    (default ceil(sqrt(n)))."""
    cs = cuts(joint)
    if not cs:
        raise GraphOptError("the forward graph has no cut value to checkpoint at",
                            where="remat sqrt(n) plan")
    k = every or max(1, math.ceil(math.sqrt(len(cs))))
    keep = set(cs[k - 1::k])
    return complete(joint, keep | forced_saves(joint), "sqrt" if every is None else f"every{k}")


def lowest_peak_plan(joint: JointGraph, simulator: Simulator) -> tuple[Plan, Peak]:
    """The checkpointing plan (every k-th cut saved, k = 1, 2, 3, 4, 6, 8, ...) with the lowest
    simulated peak: what the too-small-budget error reports as the minimum reachable."""
    n = len(cuts(joint))
    ks = sorted({k for k in [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64] if k <= n} | {n})
    best: tuple[Plan, Peak] | None = None
    for k in ks:
        plan = sqrt_plan(joint, k)
        peak = simulator(plan)
        if best is None or peak.activations < best[1].activations:
            best = (plan, peak)
    assert best is not None
    return best


def mincut_plan(joint: JointGraph) -> Plan:
    """Save the fewest bytes such that only pointwise / view values are recomputed."""
    import networkx as nx

    dep = joint.input_dependent()
    g = nx.DiGraph()
    needed = set(joint.needed)
    for f in joint.forward:
        if f not in dep:
            continue  # computed from parameters and constants: recomputed freely
        cap = joint.storage_bytes(joint.storage[f]) if joint.saveable(f) else math.inf
        g.add_edge(f + ":in", f + ":out", capacity=cap)
        if joint.kind[f] == "heavy" or f in joint.rng:
            g.add_edge("source", f + ":in", capacity=math.inf)
        if f in needed:
            g.add_edge(f + ":out", "sink", capacity=math.inf)
        for u in joint.inputs[f]:
            if u in dep:
                g.add_edge(u + ":out", f + ":in", capacity=math.inf)
    if "source" not in g or "sink" not in g:
        return no_recompute(joint)
    _, (side, _) = nx.minimum_cut(g, "source", "sink")
    saved = {f for f in joint.forward if f + ":in" in side and f + ":out" not in side
             and g.has_edge(f + ":in", f + ":out")}
    return complete(joint, saved | forced_saves(joint), "mincut")


# ---- the integer program ------------------------------------------------------------------------

class _Program:
    """Variables and constraints of the placement program (see the module docstring)."""

    def __init__(self, joint: JointGraph) -> None:
        from scipy.sparse import coo_matrix

        self.joint = joint
        prim = joint.primal_set
        cand = [f for f in joint.forward]
        self.s = {f: i for i, f in enumerate(f for f in cand if joint.saveable(f))}
        n = len(self.s)
        self.r = {}
        for f in cand:
            if joint.recomputable(f):
                self.r[f] = n
                n += 1
        roots = sorted({joint.storage[f] for f in self.s if joint.storage[f] not in prim})
        self.m = {}
        for root in roots:
            self.m[root] = n
            n += 1
        self.n = n
        rows: list[tuple[dict[int, float], float, float]] = []
        for f in joint.needed:  # s + r >= 1
            rows.append(({i: 1.0 for i in self._avail(f)}, 1.0, np.inf))
        for f in cand:
            if f in self.s and f in self.r:  # s + r <= 1
                rows.append(({self.s[f]: 1.0, self.r[f]: 1.0}, -np.inf, 1.0))
            if f not in self.r:
                continue
            for u in joint.inputs[f]:  # r_f <= s_u + r_u
                row = {i: -1.0 for i in self._avail(u)}
                row[self.r[f]] = 1.0
                rows.append((row, -np.inf, 0.0))
        for f in self.s:  # s_f <= m_root
            root = joint.storage[f]
            if root in self.m:
                rows.append(({self.s[f]: 1.0, self.m[root]: -1.0}, -np.inf, 0.0))
        self.rows = rows
        self.bytes = np.zeros(n)
        for root, i in self.m.items():
            self.bytes[i] = joint.storage_bytes(root)
        self.time = np.zeros(n)
        for f, i in self.r.items():
            self.time[i] = joint.cost[f]
        ri, ci, vals = [], [], []
        for k, (row, _, _) in enumerate(rows):
            for i, v in row.items():
                ri.append(k)
                ci.append(i)
                vals.append(v)
        self.a = coo_matrix((vals, (ri, ci)), shape=(len(rows), n)).tocsr()
        self.lo = np.array([r[1] for r in rows], dtype=float)
        self.hi = np.array([r[2] for r in rows], dtype=float)

    def _avail(self, f: str) -> list[int]:
        return [d[f] for d in (self.s, self.r) if f in d]

    def solve(self, objective: np.ndarray, extra: list[tuple[np.ndarray, float, float]],
              time_limit: float) -> np.ndarray | None:
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import csr_matrix, vstack

        a = vstack([self.a] + [csr_matrix(vec.reshape(1, -1)) for vec, _, _ in extra]).tocsr()
        lo = np.concatenate([self.lo, [l for _, l, _ in extra]])
        hi = np.concatenate([self.hi, [h for _, _, h in extra]])
        res = milp(objective, constraints=LinearConstraint(a, lo, hi),
                   integrality=np.ones(self.n), bounds=Bounds(0, 1),
                   options={"time_limit": time_limit, "disp": False, "mip_rel_gap": MIP_GAP})
        if res.x is None:
            return None
        return res.x

    def plan(self, x: np.ndarray, solver: str) -> Plan:
        saved = {f for f, i in self.s.items() if x[i] > 0.5}
        return complete(self.joint, saved, solver)

    def time_objective(self) -> np.ndarray:
        """Recompute time, normalised, plus a small tie-break towards fewer bytes."""
        t = self.time / max(self.time.sum(), 1e-30)
        b = self.bytes / max(self.bytes.sum(), 1.0)
        return t + 1e-4 * b


def milp_plan(joint: JointGraph, budget: float, simulator: Simulator,
              baselines: list[Plan] = (), time_limit: float = 10.0, rounds: int = 8
              ) -> tuple[Plan, Peak, dict[str, float]]:
    """The least-recompute plan whose simulated peak activations fit ``budget`` bytes (the
    MILP's, or a baseline's when that recomputes less), its peak, and solver facts (rounds,
    seconds, the boundary bound used). Raises ``GraphOptError`` when none fits."""
    t0 = time.perf_counter()
    p = _Program(joint)
    obj = p.time_objective()
    bound = float(budget)
    best: tuple[Plan, Peak] | None = None
    for rnd in range(1, rounds + 1):
        extra = [(p.bytes, -np.inf, bound)]
        fits = [b for b in baselines if b.saved_bytes(joint) <= bound]
        if fits:
            cut = min(_objective_of(p, obj, b) for b in fits)
            extra.append((obj, -np.inf, cut + 1e-9))
        left = time_limit - (time.perf_counter() - t0)
        if left <= 0:
            break
        x = p.solve(obj, extra, left)
        if x is None:
            break
        plan = p.plan(x, "milp")
        peak = simulator(plan)
        if peak.activations <= budget:
            best = (plan, peak)
            break
        # the plan's own boundary bytes minus its excess: a lower bound on the old one would
        # admit the same plan again when its excess is a backward transient
        bound = min(bound, float(peak.saved)) - max(peak.activations - budget, 1.0)
        if bound <= 0:
            break
    for b in baselines:  # the incumbents: a baseline that fits and recomputes less wins
        peak = simulator(b)
        if peak.activations <= budget and (
                best is None or b.recompute_time(joint) < best[0].recompute_time(joint)):
            best = (b, peak)
    info = {"rounds": float(rnd), "seconds": time.perf_counter() - t0, "boundary_bound": bound}
    if best is None:
        raise GraphOptError(f"neither the MILP ({rnd} rounds) nor a baseline found a plan "
                            f"within {int(budget)} bytes", where="remat milp")
    return best[0], best[1], info


def _objective_of(p: _Program, obj: np.ndarray, plan: Plan) -> float:
    """The program's objective at ``plan`` (its s, r and m variables set)."""
    x = np.zeros(p.n)
    for f in plan.saved:
        if f in p.s:
            x[p.s[f]] = 1
            root = p.joint.storage[f]
            if root in p.m:
                x[p.m[root]] = 1
    for f in plan.recomputed:
        x[p.r[f]] = 1
    return float(obj @ x)


def simulator_for(joint: JointGraph) -> Simulator:
    """Peak of a plan over its schedule (``plan.simulate``), cached per plan."""
    cache: dict[tuple[frozenset[str], frozenset[str]], Peak] = {}

    def sim(plan: Plan) -> Peak:
        key = (plan.saved, plan.recomputed)
        if key not in cache:
            cache[key] = simulate(joint, plan)
        return cache[key]
    return sim
