"""Which generated rules the search applies on the benchmark models, and what a rule set saves.

    python -m bench.rule_usage --out usage.json                 # the shipped rules
    python -m bench.rule_usage --rules DIR --compare OTHER_DIR  # two rule sets side by side

For each model of ``bench.taso_models.MODELS`` and each target, runs ``search_step`` with the
generated rules of ``--rules`` (default: the shipped set) plus the hand-written search rules
(``passes/merge_parallel.RULES``), as ``pipeline.search_rules`` assembles them, under the budget
``bench/cost_search.py`` uses (wall-clock seconds and a patience counted in expansions: a search
that stops for patience, as the benchmarks' do, is deterministic; one the clock stops is marked
``time``). Prints the estimated saving and the
generated rules applied; ``--out`` writes them as JSON, whose ``used`` list is what
``graphopt rules prune --keep-used`` reads. ``--compare DIR``: the same searches with the rules
of DIR, run interleaved with the first set's (model by model), and the savings side by side.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.taso_models import MODELS
from graphopt.ir.graph import Graph
from graphopt.search.budget import Budget
from graphopt.search.ruleset import default_rules, graph_ops, scan
from graphopt.search.stage import search_step
from graphopt.subst.rulefile import RULES_DIR


def run(g: Graph, target: str, rules_dir: Path, budget: float, patience: int
        ) -> dict[str, Any]:
    """One search of ``g`` for ``target`` with the generated rules of ``rules_dir`` and the
    hand-written search rules: saving, time, graphs and the generated rules applied."""
    from graphopt.passes.merge_parallel import RULES

    rules = default_rules(rules_dir, ops=graph_ops(g)) + list(RULES)
    generated = {e.name for e in scan(rules_dir)}
    t0 = time.perf_counter()
    b = Budget(seconds=budget, max_graphs=None, patience=patience)
    _, rep = search_step(g, target, budget=b, rules=rules)
    applied: dict[str, int] = rep["rules_applied"]
    return {"saving": rep["estimated_speedup"], "cost_before_us": rep["cost_before_us"],
            "cost_after_us": rep["cost_after_us"], "seconds": round(time.perf_counter() - t0, 2),
            "stopped": rep["stopped"],
            "rules": len(rules), "explored": rep["graphs_explored"],
            "applied": {k: v for k, v in sorted(applied.items())},
            "generated_applied": sorted({k.rstrip("~") for k in applied
                                         if k.rstrip("~") in generated})}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--targets", default="h100,a100,cpu")
    p.add_argument("--budget", type=float, default=30.0, help="search seconds per model")
    p.add_argument("--patience", type=int, default=20,
                   help="stop after this many expansions without a better graph")
    p.add_argument("--rules", default=str(RULES_DIR), help="generated rule directory")
    p.add_argument("--compare", default=None, help="a second rule directory to compare with")
    p.add_argument("--out", default=None, help="write the usage (and savings) as JSON here")
    a = p.parse_args(argv)
    models = [m for m in a.models.split(",") if m]
    targets = [t for t in a.targets.split(",") if t]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
    dirs = [Path(a.rules)] + ([Path(a.compare)] if a.compare else [])
    for d in dirs:
        if not scan(d):
            raise SystemExit(f"no rules under {d}")
    head = f"{'model':13s} {'target':6s}" + "".join(
        f" {'saving ' + str(i):>9s} {'s ' + str(i):>6s} {'rules ' + str(i):>8s}"
        for i in range(len(dirs)))
    print("rule sets: " + ", ".join(f"{i}: {d} ({len(scan(d))} rules)"
                                    for i, d in enumerate(dirs)))
    print(head)
    print("-" * len(head))
    results: list[dict[str, Any]] = []
    used: set[str] = set()
    for name in models:
        g = MODELS[name]()
        for t in targets:
            runs = [run(g, t, d, a.budget, a.patience) for d in dirs]
            row = {"model": name, "target": t, "runs": runs}
            results.append(row)
            used.update(row["runs"][0]["generated_applied"])
            print(f"{name:13s} {t:6s}" + "".join(
                f" {100 * r['saving']:8.1f}% {r['seconds']:6.1f} {len(r['generated_applied']):8d}"
                + ("*" if r["stopped"] == "time" else "")
                for r in row["runs"]))
            sys.stdout.flush()
    if a.compare:
        lost = [(r["model"], r["target"]) for r in results
                if r["runs"][1]["saving"] < r["runs"][0]["saving"] - 1e-9]
        print(f"\nsaving lost with {a.compare}: "
              f"{', '.join(f'{m}/{t}' for m, t in lost) if lost else 'none'}")
    print("(*: stopped by the clock, may differ between runs)")
    print(f"generated rules applied ({dirs[0]}): {len(used)}")
    if a.out:
        Path(a.out).write_text(json.dumps({
            "rules": [str(d) for d in dirs], "budget_s": a.budget, "targets": targets,
            "used": sorted(used), "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
