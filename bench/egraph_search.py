"""The e-graph search mode (``--search egraph``) against backtracking on the TASO family.

    python -m bench.egraph_search --models nasrnn,bert --target h100 --budget 30
    python -m bench.egraph_search --tiny --node-limit 20000 --extract greedy

One table: for each model, the estimated saving (fusion-aware cost model of ``--target``) and
search time of backtracking (graphs explored) and of the e-graph mode (e-nodes, saturation
iterations, why saturation stopped, e-graphs / windows reused), the rules applied by each, and
Tensat's published saving for reference. Each search gets its mode's rule list
(``graphopt.pipeline.search_rules(g, mode, target)``) and the same budget; each model is
searched by both modes one after the other in this process.

Measured (h100, budget 30 s, defaults: 100k e-nodes, 10 s saturation, 400 generated rule
directions, extract both, savings, refine, 2 rounds; 2-core machine shared with other jobs):

    model         backtrack (s, graphs)     egraph (s, e-nodes, won)            Tensat
    nasrnn        52.5% (10.9, 19860)       68.3% (17.6, 52949, greedy)          69%
    bert          28.3% ( 4.2,  6809)       18.6% (28.9,  3774, rewritten+ref.)   9%
    resnext50      1.0% ( 0.3,   217)        1.0% ( 1.5,   516, greedy)           9%
    nasnet_a      16.4% ( 4.3,  3811)       11.0% (15.3,  1159, greedy+ref.)      7%
    inception_v3  14.4% ( 7.1,  3114)        9.9% (21.7,  5562, ilp+ref.)        10%
    squeezenet    25.9% ( 0.3,   297)       25.9% ( 1.1,   368, greedy)          25%
    resnet50       1.1% ( 0.8,   623)        1.1% ( 2.4,   618, greedy+sav.)      0%
"""
from __future__ import annotations

import argparse
import time

from bench.cost_search import _top_rules as _rules
from bench.taso_models import MODELS, TENSAT_SPEEDUP, TINY
from graphopt.pipeline import search_rules
from graphopt.search.budget import Budget
from graphopt.search.egraph import search as egraph_mod
from graphopt.search.stage import search_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--target", default="h100")
    ap.add_argument("--budget", type=float, default=30.0, help="seconds per model and mode")
    ap.add_argument("--node-limit", type=int, default=None, help="e-nodes per e-graph")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="seconds of saturation per e-graph")
    ap.add_argument("--extract", default="both", choices=("greedy", "ilp", "both"))
    ap.add_argument("--max-rules", type=int, default=None,
                    help="generated rule directions per e-graph")
    ap.add_argument("--tiny", action="store_true", help="the tiny models of the tests")
    ap.add_argument("--patience", type=int, default=20,
                    help="backtracking: expansions without a better graph (as cost_search)")
    a = ap.parse_args()
    opts = {k: v for k, v in (("node_limit", a.node_limit), ("time_limit", a.time_limit),
                              ("max_rules", a.max_rules)) if v is not None}
    opts["extract"] = a.extract
    kw = {**(egraph_mod.egraph_search.__kwdefaults__ or {}), **opts}
    print(f"target {a.target}, budget {a.budget:g} s, e-graph: node limit {kw['node_limit']}, "
          f"saturation {kw['time_limit']:g} s, max rules {kw['max_rules']}, extract {a.extract}")
    cols = (("model", -13), ("ops", 5), ("|", 1), ("backtrack", 9), ("s", 6), ("graphs", 7),
            ("|", 1), ("egraph", 7), ("s", 6), ("e-nodes", 8), ("iters", 5), ("stop", 10),
            ("won", 12), ("|", 1), ("Tensat", 6))
    head = " ".join(f"{c:<{-w}s}" if w < 0 else f"{c:>{w}s}" for c, w in cols)
    print(head)
    print("-" * len(head))
    build = TINY if a.tiny else MODELS
    notes = []
    for name in a.models.split(","):
        g = build[name]()
        ops = sum(1 for n in g.nodes if n.op not in ("input", "constant"))
        row = {}
        for mode in ("backtrack", "egraph"):
            rules = search_rules(g, mode, a.target)
            t = time.perf_counter()
            # backtracking as bench/cost_search.py runs it: the wall clock, no graph cap
            budget = Budget(seconds=a.budget, max_graphs=None, patience=a.patience) \
                if mode == "backtrack" else a.budget
            _, rep = search_step(g, a.target, rules=rules, budget=budget, mode=mode,
                                 egraph=opts if mode == "egraph" else None)
            row[mode] = (rep, time.perf_counter() - t)
        (bt, tb), (eg, te) = row["backtrack"], row["egraph"]
        sat = eg["saturation"]
        won = ",".join(k[4:] for k in eg["rejected"] if k.startswith("won:"))
        print(f"{name:13s} {ops:5d} | {100 * bt['estimated_speedup']:8.1f}% {tb:6.1f} "
              f"{bt['graphs_explored']:7d} | {100 * eg['estimated_speedup']:6.1f}% {te:6.1f} "
              f"{sat['enodes']:8d} {sat['iterations']:5d} {sat['stopped']:>10s} {won:>12s} | "
              f"{100 * TENSAT_SPEEDUP.get(name, 0.0):5.0f}%", flush=True)
        notes.append(f"{name}: backtrack {_rules(bt['rules_applied']) or 'none'}; "
                     f"egraph {_rules(eg['rules_applied']) or 'none'}")
    print()
    print("\n".join(notes))


if __name__ == "__main__":
    main()
