"""Benchmark of the substitution generator: `graphopt rules generate --max-ops K` stage by stage,
next to TASO's published numbers.

    python bench/subst_generate.py --max-ops 4 --jobs 2 [--out DIR] [--json results.json]

Writes the rule files to a scratch directory unless --out is given (use compiler/subst/rules to
refresh the shipped set; the run is deterministic for a seed).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

from graphopt.subst.generate import generate

TASO = {
    "max_ops": 4,
    "operators": 12,
    "candidates_before_pruning": "~29,000",
    "kept": 743,
    "generate_min": 5,
    "verify_min": 10,
    "language": "C++ (generation) + z3 (verification)",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-ops", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    out = a.out or tempfile.mkdtemp(prefix="graphopt-rules-")
    t0 = time.perf_counter()
    rep, _ = generate(a.max_ops, out=out, jobs=a.jobs, seed=a.seed,
                      progress=lambda s: print(s, file=sys.stderr, flush=True))
    wall = time.perf_counter() - t0
    print(rep.table())
    print()
    print(f"graphopt: {rep.graphs} graphs, {rep.candidates} candidates after pruning, "
          f"{rep.verified} proven, {rep.kept} kept in {wall / 60:.1f} min wall "
          f"({a.jobs} jobs)")
    print(f"TASO:     {TASO['candidates_before_pruning']} candidates, {TASO['kept']} kept, "
          f"{TASO['generate_min']} min generation + {TASO['verify_min']} min verification "
          f"({TASO['language']})")
    if a.json:
        d = rep.as_dict()
        d["taso"] = TASO
        d["wall_total_s"] = wall
        with open(a.json, "w") as f:
            json.dump(d, f, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
