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
``--taso bert,nasrnn,...`` adds the saturated e-graphs of the tiny TASO models (the search's
rules, h100 costs in microseconds, with and without the fusion savings; needs egglog).
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
from graphopt.search.egraph.view import EGraphView, ENode  # noqa: E402
from tests.search.egraph.views import layered  # noqa: E402


def _pct(a: float, b: float | None) -> str:
    """How much dearer ``a`` is than ``b``, in percent ("-" when ``b`` is missing or not > 0)."""
    return f"{100 * (a - b) / b:.2f}%" if b is not None and b > 0 else "-"


def _row(name: str, view: EGraphView, reps: int, time_limit: float) -> tuple[object, ...]:
    """One table row: sizes, greedy (time, first pass, answer), the program and the gaps."""
    flat = flatten(view)
    first = min((bottom_up(flat, shared=s)[0] for s in (True, False)),
                key=lambda ch: flat_cost(flat, ch, reached(flat, ch)))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        choice = greedy(view)
        times.append(time.perf_counter() - t0)
    g_cost = dag_cost(view, choice)
    res = solve(view, time_limit=time_limit)
    state = "optimal" if res.optimal else "best found" if res.choice else "none"
    return (name, view.n_nodes, len(view.classes), prune(view).n_nodes,
            f"{statistics.median(times):.2f}", f"{flat_cost(flat, first, reached(flat, first)):.4g}",
            f"{g_cost:.4g}", f"{res.seconds:.2f}", state,
            f"{res.cost:.4g}" if res.cost is not None else "-",
            f"{res.bound:.4g}" if res.bound is not None else "-",
            _pct(g_cost, res.cost), _pct(g_cost, res.bound))


def taso_views(names: list[str], node_limit: int) -> list[tuple[str, EGraphView]]:
    """The saturated e-graphs of the tiny TASO models (``bench.taso_models.TINY``) under the
    search's rules, costed for h100 (needs egglog): with per-node costs, and with the fusion
    savings."""
    from bench.taso_models import TINY
    from graphopt.cost.model import CostModel
    from graphopt.ir.node import Node
    from graphopt.pipeline import search_rules
    from graphopt.search.egraph.encode import encode
    from graphopt.search.egraph.rules import translate_rules
    from graphopt.search.egraph.saturate import saturate

    model = CostModel("h100")

    def price(n: Node) -> float:
        return model.nodes_time([n], n.outputs)

    def pair(p: Node, c: Node) -> float:
        return model.nodes_time([p, c], c.outputs)

    out = []
    for name in names:
        g = TINY[name]()
        enc = encode(g)
        tr = translate_rules(search_rules(g), enc.keys, 100000)
        v = saturate(enc, tr, price, node_limit=node_limit, time_limit=10, pair_cost=pair).view
        out.append((f"{name} (us)", _micro(EGraphView(v.classes, v.roots))))
        out.append((f"{name} + savings (us)", _micro(v)))
    return out


def _micro(v: EGraphView) -> EGraphView:
    """The view with costs and savings in microseconds (the table prints 4 digits)."""
    classes = {c: [ENode(n.op, n.children, n.cost * 1e6) for n in ns] for c, ns in v.classes.items()}
    return EGraphView(classes, v.roots, {k: s * 1e6 for k, s in v.savings.items()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,50000,100000")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--time-limit", type=float, default=10.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--taso", default="", help="tiny TASO models to saturate and extract too "
                    "(comma-separated, e.g. bert,nasrnn,squeezenet,resnext50,nasnet_a; needs egglog)")
    ap.add_argument("--node-limit", type=int, default=20000, help="e-node cap of --taso's saturation")
    args = ap.parse_args()
    head = ("e-graph", "e-nodes", "classes", "pruned", "greedy s", "first pass", "greedy", "ILP s",
            "ILP", "ILP cost", "bound", "greedy - ILP", "greedy - bound")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    views = [(f"layered {size}", layered(size, args.width, args.seed))
             for size in (int(s) for s in args.sizes.split(",") if s)]
    for name, view in views + (taso_views(args.taso.split(","), args.node_limit) if args.taso else []):
        print(" | ".join(str(x) for x in _row(name, view, args.reps, args.time_limit)), flush=True)


if __name__ == "__main__":
    main()
