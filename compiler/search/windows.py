"""Large graphs are searched in windows: consecutive slices of the topological order, cut where
few values cross, each searched as a graph of its own under a share of the budget and spliced
back. Windows with the same structure (the layers of a transformer) reuse the first one's result
with their own weights. A second round with shifted cuts catches rewrites that straddle a cut.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

from ..ir.graph import Graph
from ..ir.node import Node, Value, input_node
from ..rewrite.index import Matcher
from ..rewrite.rule import PatternRule
from ..rewrite.trace import Tracer
from .backtrack import DEFAULT_ALPHA, Progress, backtrack
from .budget import Budget
from .result import SearchResult

DEFAULT_WINDOW = 160  # ops per window for large graphs


def _ops(g: Graph) -> list[Node]:
    return [n for n in g.nodes if n.op not in ("input", "constant")]


def partition(g: Graph, size: int, offset: int = 0) -> list[list[Node]]:
    """Consecutive slices of the topological order (sources left out), about ``size`` ops each,
    cut where the fewest values are live. ``offset`` shifts the first cut (for a second round)."""
    ops = _ops(g)
    n = len(ops)
    if n <= size:
        return [ops]
    index = {id(x): i for i, x in enumerate(ops)}
    last_use = [-1] * n  # last op (position) reading each op's outputs
    for i, x in enumerate(ops):
        for v in x.inputs:
            j = index.get(id(v.node))
            if j is not None:
                last_use[j] = max(last_use[j], i)
    for v in g.outputs:
        j = index.get(id(v.node))
        if j is not None:
            last_use[j] = n
    # live[i]: values produced before position i and read at i or later
    live = [0] * (n + 1)
    delta = [0] * (n + 2)
    for j in range(n):
        if last_use[j] > j:
            delta[j + 1] += 1
            delta[last_use[j] + 1] -= 1
    acc = 0
    for i in range(n + 1):
        acc += delta[i]
        live[i] = acc
    cuts = [0]
    start = 0
    prev = 0
    while n - start > size + size // 2:
        base = size // 2 if (offset and prev == 0) else size
        lo = max(start + 1, start + base - size // 3)
        hi = min(n - 1, start + base + size // 3)
        # aim at the previous window's length: windows that start at the same phase of a
        # repeated structure (transformer layers) come out identical and are searched once
        target = start + prev if prev and lo <= start + prev <= hi else start + base
        cut = min(range(lo, hi + 1), key=lambda i: (live[i], abs(i - target)))
        cuts.append(cut)
        prev = cut - start
        start = cut
    cuts.append(n)
    return [ops[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]


@dataclass
class Window:
    graph: Graph  # the slice as a graph of its own
    ext: list[Value]  # the outside value each of its inputs stands for
    outs: list[Value]  # the values of the big graph its outputs are
    consts: list[Node]  # its constants in a fixed order (for reuse across equal windows)


def extract(g: Graph, nodes: list[Node], used_outside: set[tuple[int, int]]) -> Window:
    inside = {id(x) for x in nodes}
    ext: list[Value] = []
    ext_in: dict[tuple[int, int], Node] = {}
    env: dict[tuple[int, int], Value] = {}
    for x in nodes:
        for v in x.inputs:
            k = (id(v.node), v.index)
            if v.node.op == "constant" or id(v.node) in inside or k in ext_in:
                continue
            node = input_node(f"w{len(ext)}", v.type)
            ext_in[k] = node
            ext.append(v)
            env[k] = node.out
    for x in nodes:
        ins = [env.get((id(v.node), v.index), v) for v in x.inputs]
        nn = x.with_inputs(ins)
        for i in range(len(x.out_types)):
            env[(id(x), i)] = Value(nn, i)
    outs = [Value(x, i) for x in nodes for i in range(len(x.out_types))
            if (id(x), i) in used_outside]
    sub = Graph([ext_in[(id(v.node), v.index)] for v in ext],
                [env[(id(v.node), v.index)] for v in outs],
                [f"o{i}" for i in range(len(outs))], name="window")
    consts = [x for x in sub.nodes if x.op == "constant"]
    return Window(sub, ext, outs, consts)


def splice(result: Graph, w: Window, env: dict[tuple[int, int], Value],
           consts: dict[int, Node] | None = None) -> list[Value]:
    """Rebuild ``result`` (a searched window) over the big graph's values: window inputs become
    ``env``-mapped outside values; ``consts`` swaps constants (reuse in an equal window)."""
    vals: dict[tuple[int, int], Value] = {}
    for node, v in zip(result.inputs, w.ext):
        vals[(id(node), 0)] = env.get((id(v.node), v.index), v)
    for n in result.nodes:
        if n.op == "input":
            continue
        if n.op == "constant":
            c = consts.get(id(n), n) if consts else n
            vals[(id(n), 0)] = c.out
            continue
        nn = n.with_inputs([vals[(id(v.node), v.index)] for v in n.inputs])
        for i in range(len(n.out_types)):
            vals[(id(n), i)] = Value(nn, i)
    return [vals[(id(v.node), v.index)] for v in result.outputs]


def _signature(w: Window) -> tuple:
    """Structure of a window without provenance or weight data: ops, attrs, wiring, input types,
    and each constant's type (its data too when small: rules may test small constants)."""
    import numpy as np

    local: dict[int, int] = {}
    items: list[tuple] = []
    for n in w.graph.nodes:
        local[id(n)] = len(local)
        if n.op == "constant":
            c = n.const
            small = c.has_array and int(np.prod(c.shape)) <= 16
            items.append(("constant", str(c.type), np.asarray(c.array).tobytes() if small
                          else None))
        elif n.op == "input":
            items.append(("input", n.attrs["name"], str(n.out_types[0])))
        else:
            items.append((n.op, n.attrs, tuple((local[id(v.node)], v.index) for v in n.inputs)))
    outs = tuple((local[id(v.node)], v.index) for v in w.graph.outputs)
    return (tuple(items), outs)


def search(g: Graph, rules: Sequence[PatternRule], cost: Callable[[Graph], float], *,
           alpha: float = DEFAULT_ALPHA, budget: Budget | None = None,
           window: int = DEFAULT_WINDOW, rounds: int = 2, progress: Progress | None = None,
           tracer: Tracer | None = None) -> SearchResult:
    """Search ``g``: whole when it has at most ``window`` ops, else window by window (``rounds``
    passes, the second with shifted cuts). ``cost(graph) -> seconds``. ``tracer`` receives the
    matches whose rule check failed, as candidates."""
    budget = (budget or Budget()).start()
    matcher = Matcher(rules, tracer)
    deltas: dict[tuple, float] = {}  # local_delta results, shared by every window
    t0 = time.perf_counter()
    c0 = cost(g)
    if len(_ops(g)) <= window:
        r = backtrack(g, matcher, cost, alpha=alpha, budget=budget, progress=progress,
                      deltas=deltas)
        r.initial_cost = c0
        return r
    applied: dict[str, int] = {}
    rejected: dict[str, int] = {}
    tried: dict[str, int] = {}
    refused: dict[tuple[str, str], int] = {}
    best_delta: dict[str, float] = {}
    n_windows = reused = 0
    stopped = "exhausted"
    cur = g
    for rnd in range(rounds):
        parts = partition(cur, window, offset=rnd)
        users_out = _used_outside(cur, parts)
        env: dict[tuple[int, int], Value] = {}
        memo: dict[tuple, tuple[Window, Graph, SearchResult]] = {}
        total_ops = sum(len(p) for p in parts)
        done_ops = 0
        for i, part in enumerate(parts):
            w = extract(cur, part, users_out)
            sig = _signature(w)
            if sig in memo and len(memo[sig][0].consts) == len(w.consts):
                w0, res_graph, res = memo[sig]
                swap = {id(a): b for a, b in zip(w0.consts, w.consts)}
                new_outs = splice(res_graph, _rebased(w0, w), env, swap)
                reused += 1
                for k, v in res.applied.items():
                    applied[k] = applied.get(k, 0) + v
            else:
                if budget.exhausted():
                    res = None
                else:
                    left = total_ops - done_ops
                    rounds_left = rounds - rnd
                    share = len(part) / max(left, 1) / rounds_left
                    child = budget.share(share)
                    res = backtrack(w.graph, matcher, cost, alpha=alpha, budget=child,
                                    deltas=deltas)
                    budget.charge(child)
                    n_windows += 1
                    for k, v in res.rejected.items():
                        rejected[k] = rejected.get(k, 0) + v
                    for k, v in res.tried.items():
                        tried[k] = tried.get(k, 0) + v
                    for kr, v in res.refused.items():
                        refused[kr] = refused.get(kr, 0) + v
                    for k, d in res.best_delta.items():
                        best_delta[k] = min(best_delta.get(k, d), d)
                    for k, v in res.applied.items():
                        applied[k] = applied.get(k, 0) + v
                    if res.stopped != "exhausted":
                        stopped = res.stopped
                if res is None or not _reusable(w, res.graph):
                    new_outs = splice(res.graph if res else w.graph, w, env)
                else:
                    memo[sig] = (w, res.graph, res)
                    new_outs = splice(res.graph, w, env)
            for v, nv in zip(w.outs, new_outs):
                env[(id(v.node), v.index)] = nv
            done_ops += len(part)
            if progress:
                progress(f"round {rnd + 1}: window {i + 1}/{len(parts)}")
        cur = Graph(cur.inputs, [env.get((id(v.node), v.index), v) for v in cur.outputs],
                    cur.output_names, cur.name, cur.meta)
        if budget.exhausted():
            if stopped == "exhausted":
                stopped = budget.exhausted() or stopped
            break
    final = cost(cur)
    if final > c0:  # windows are costed alone; never return a graph the model says is slower
        cur, final, applied = g, c0, {}
        rejected["whole-graph-worse"] = rejected.get("whole-graph-worse", 0) + 1
    return SearchResult(cur, final, c0, applied, budget.expanded, budget.explored,
                        time.perf_counter() - t0, stopped, n_windows, reused, rejected,
                        dict(matcher.failures), tried, refused, best_delta)


def _used_outside(g: Graph, parts: list[list[Node]]) -> set[tuple[int, int]]:
    """Values read outside the window that makes them (or graph outputs)."""
    where: dict[int, int] = {}
    for i, p in enumerate(parts):
        for x in p:
            where[id(x)] = i
    out: set[tuple[int, int]] = set()
    for i, p in enumerate(parts):
        for x in p:
            for v in x.inputs:
                j = where.get(id(v.node))
                if j is not None and j != i:
                    out.add((id(v.node), v.index))
    for v in g.outputs:
        out.add((id(v.node), v.index))
    return out


def _reusable(w: Window, result: Graph) -> bool:
    """A result can serve an equal window when its constants are the window's own (a rule that
    computed new constant data from matched weights would be wrong for other weights)."""
    own = {id(c) for c in w.consts}
    return all(n.op != "constant" or id(n) in own for n in result.nodes)


def _rebased(w0: Window, w: Window) -> Window:
    """``w0``'s graph with ``w``'s outside values (its inputs stand for them)."""
    return Window(w0.graph, w.ext, w.outs, w.consts)
