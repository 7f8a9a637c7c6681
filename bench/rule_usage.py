"""Which generated rules the search applies on the benchmark models, and what a rule set saves.

    python -m bench.rule_usage --out usage.json                 # the shipped rules
    python -m bench.rule_usage --rules DIR --compare OTHER_DIR  # two rule sets side by side
    python -m bench.rule_usage --transformers bert,gpt2,llama,vit --exporters torchscript

For each model of ``bench.taso_models.MODELS`` (and with ``--transformers``, each transformers
export of ``bench/cost_search.py``'s configs, after the pipeline's simplify and fuse steps) and
each target, runs ``search_step`` with the generated rules of ``--rules`` (default: the shipped
set) in place of the shipped ones in ``pipeline.search_rules``, under the budget
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
import tempfile
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
    from graphopt.pipeline import search_rules

    hand = [r for r in search_rules(g, "backtrack", target) if r.kind != "generated"]
    rules = default_rules(rules_dir, ops=graph_ops(g)) + hand
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


def transformer_graphs(names: list[str], exporters: list[str], target: str, workdir: Path
                       ) -> dict[str, Graph]:
    """The transformers exports (``bench/cost_search.py``'s configs) as the pipeline hands them
    to the search for ``target``: loaded, simplified and fused."""
    import warnings

    from bench.cost_search import TRANSFORMER_CONFIGS
    from bench.export_transformers import export
    from graphopt.pipeline import resolve_source, run as pipeline_run

    out = {}
    for name in names:
        for exp in exporters:
            src = workdir / f"{name}_{exp}.onnx"
            if not src.exists():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    export({"bert": "bert-base"}.get(name, name), str(src),
                           dynamo=exp == "dynamo", trained_like=True, **TRANSFORMER_CONFIGS[name])
            out[f"{name}-{exp}"] = pipeline_run(resolve_source(str(src)), target, budget=0,
                                          check=False).graph
    return out


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
    p.add_argument("--transformers", default="",
                   help="also these transformers exports (bert,gpt2,llama,vit)")
    p.add_argument("--exporters", default="torchscript", help="torchscript,dynamo")
    p.add_argument("--workdir", default=None, help="where the exports are kept (default: temp)")
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

    def rows(label: str, g: Graph, t: str) -> None:
        runs = [run(g, t, d, a.budget, a.patience) for d in dirs]
        results.append({"model": label, "target": t, "runs": runs})
        used.update(runs[0]["generated_applied"])
        print(f"{label:13s} {t:6s}" + "".join(
            f" {100 * r['saving']:8.1f}% {r['seconds']:6.1f} {len(r['generated_applied']):8d}"
            + ("*" if r["stopped"] == "time" else "") for r in runs))
        sys.stdout.flush()

    for name in models:
        g = MODELS[name]()
        for t in targets:
            rows(name, g, t)
    names = [n for n in a.transformers.split(",") if n]
    if names:
        workdir = Path(a.workdir or tempfile.mkdtemp(prefix="rule-usage-"))
        workdir.mkdir(parents=True, exist_ok=True)
        exporters = [e for e in a.exporters.split(",") if e]
        for t in targets:
            for label, g in transformer_graphs(names, exporters, t, workdir).items():
                rows(label, g, t)
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
