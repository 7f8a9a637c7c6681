"""Extraction at scale on synthetic e-graphs: greedy against the integer program.

    python -m bench.egraph_extract [--sizes 1000,10000,50000,100000] [--time-limit 10] [--seed 0]

The e-graph is ``tests.search.egraph.views.layered`` (layers of classes with an e-node per
class that reads two classes below, a cheaper one that also reads the layer's dear merged class,
and one through a reshuffle class whose cheap e-node reads the class back: a cycle; fusion
savings between consecutive ``op`` e-nodes).

Per size: the e-nodes, the classes and the e-nodes left after ``prune``; greedy's time (median
of ``--reps``) and DAG cost, and the first pass's cost alone (``bottom_up``: what the local
moves gain); the integer program's time, status, cost and proved lower bound, cold and warm
started from greedy's answer; the gap of greedy over the best cost found.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from graphopt.search.egraph.extract import bottom_up, dag_cost, flatten, greedy, prune  # noqa: E402
from graphopt.search.egraph.ilp import IlpResult, solve  # noqa: E402
from tests.search.egraph.views import layered  # noqa: E402


def _ilp_row(res: IlpResult) -> tuple[str, str, str, str]:
    state = "optimal" if res.optimal else ("best found" if res.source == "ilp" else
                                           "kept warm" if res.source == "warm" else "none")
    cost = f"{res.cost:.2f}" if res.cost is not None else "-"
    bound = f"{res.bound:.2f}" if res.bound is not None else "-"
    return f"{res.seconds:.2f}", state, cost, bound


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,50000,100000")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--time-limit", type=float, default=10.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    head = ("e-nodes", "classes", "pruned", "greedy s", "first pass", "greedy", "ILP s", "ILP",
            "ILP cost", "bound", "warm ILP s", "warm ILP", "warm cost", "greedy gap")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for size in (int(s) for s in args.sizes.split(",")):
        view = layered(size, args.width, args.seed)
        flat = flatten(view)
        first, _ = bottom_up(flat)
        first_cost = dag_cost(view, flat.to_choice({c: first[c] for c in first}))
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            choice = greedy(view)
            times.append(time.perf_counter() - t0)
        g_cost = dag_cost(view, choice)
        cold = solve(view, time_limit=args.time_limit)
        warm = solve(view, time_limit=args.time_limit, warm=choice)
        best = min([g_cost] + [r.cost for r in (cold, warm) if r.cost is not None])
        gap = f"{100 * (g_cost - best) / abs(best):.2f}%" if best else "-"
        c_s, c_state, c_cost, c_bound = _ilp_row(cold)
        w_s, w_state, w_cost, _ = _ilp_row(warm)
        row = (view.n_nodes, len(view.classes), prune(view).n_nodes,
               f"{statistics.median(times):.2f}", f"{first_cost:.2f}", f"{g_cost:.2f}",
               c_s, c_state, c_cost, c_bound, w_s, w_state, w_cost, gap)
        print(" | ".join(str(x) for x in row), flush=True)


if __name__ == "__main__":
    main()
