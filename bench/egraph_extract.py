"""Extraction at scale on synthetic e-graphs: greedy against the integer program.

    python -m bench.egraph_extract [--sizes 1000,10000,50000,100000] [--time-limit 10] [--seed 0]

The e-graph is ``tests.search.egraph.views.layered`` (layers of classes with an e-node per
class that reads two classes below, a cheaper one that also reads the layer's dear merged class,
and one through a reshuffle class whose cheap e-node reads the class back: a cycle; fusion
savings between consecutive ``op`` e-nodes).

Per size: the e-nodes, the classes and the e-nodes left after ``prune``; greedy's time (median
of ``--reps``) and DAG cost, and its first pass's cost alone (``bottom_up``: what the local
moves gain); the integer program's time (with its build; ``--time-limit``), status, cost and
proved lower bound; how much dearer greedy's answer is than the program's and than the bound.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from graphopt.search.egraph.extract import (bottom_up, dag_cost, flat_cost, flatten, greedy,  # noqa: E402
                                            prune, reached)
from graphopt.search.egraph.ilp import solve  # noqa: E402
from tests.search.egraph.views import layered  # noqa: E402


def _pct(a: float, b: float | None) -> str:
    return f"{100 * (a - b) / abs(b):.2f}%" if b else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,50000,100000")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--time-limit", type=float, default=10.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    head = ("e-nodes", "classes", "pruned", "greedy s", "first pass", "greedy", "ILP s", "ILP",
            "ILP cost", "bound", "greedy - ILP", "greedy - bound")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for size in (int(s) for s in args.sizes.split(",")):
        view = layered(size, args.width, args.seed)
        flat = flatten(view)
        first = min((bottom_up(flat, shared=s)[0] for s in (True, False)),
                    key=lambda ch: flat_cost(flat, ch, reached(flat, ch)))
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            choice = greedy(view)
            times.append(time.perf_counter() - t0)
        g_cost = dag_cost(view, choice)
        res = solve(view, time_limit=args.time_limit)
        state = "optimal" if res.optimal else "best found" if res.choice else "none"
        row = (view.n_nodes, len(view.classes), prune(view).n_nodes,
               f"{statistics.median(times):.2f}", f"{flat_cost(flat, first, reached(flat, first)):.2f}",
               f"{g_cost:.2f}", f"{res.seconds:.2f}", state,
               f"{res.cost:.2f}" if res.cost is not None else "-",
               f"{res.bound:.2f}" if res.bound is not None else "-",
               _pct(g_cost, res.cost), _pct(g_cost, res.bound))
        print(" | ".join(str(x) for x in row), flush=True)


if __name__ == "__main__":
    main()
