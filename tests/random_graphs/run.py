"""Script mode: ``python -m tests.random_graphs.run --n 10000 --seed S``.

Checks N random graphs through the full pipeline (``equivalence.check_graph``), prints the
table (graphs, ok, semantic changes, refusals by reason, rewrites fired, time), and on a
failure reruns the same sequence to shrink the first failing graph into
``tests/random_graphs/regressions/new_<kind>.ir``. Exit code 1 when any graph failed.
"""
from __future__ import annotations

import argparse
import sys

from graphopt.ir.graph import Graph

from .driver import GraphFailed, RunConfig, shrink, survey
from .equivalence import DEFAULT_SEARCH_GRAPHS, Outcome
from .regress import REGRESSIONS, graph_text
from .tally import Tally


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.random_graphs.run",
                                 description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="graphs to check")
    ap.add_argument("--seed", type=int, default=0, help="hypothesis seed")
    ap.add_argument("--search-graphs", type=int, default=DEFAULT_SEARCH_GRAPHS,
                    help="graphs the search expands per random graph")
    ap.add_argument("--max-ops", type=int, default=10, help="ops drawn per graph")
    ap.add_argument("--zero-dims", action="store_true", help="allow empty dims")
    ap.add_argument("--no-shrink", action="store_true", help="only tally, do not shrink")
    ap.add_argument("--failures-log", default="",
                    help="append each failing graph (unshrunk) with its outcome to this file")
    args = ap.parse_args(argv)
    cfg = RunConfig(args.n, args.seed, args.search_graphs, args.max_ops, args.zero_dims)

    from tqdm import tqdm

    bar = tqdm(total=cfg.n, file=sys.stderr, mininterval=5.0, unit="graph")

    def progress(t: Tally) -> None:
        bar.update(1)
        bar.set_postfix(ok=t.kinds["ok"], failed=t.failures, refused=t.kinds["refused"],
                        refresh=False)

    failures: list[tuple[Graph, Outcome]] = []

    def on_failure(g: Graph, out: Outcome) -> None:
        failures.append((g, out))
        if args.failures_log:
            with open(args.failures_log, "a") as f:
                f.write(f"# kind: {out.kind}\n# reason: {out.reason}\n")
                f.write("".join(f"# | {ln}\n" for ln in out.detail.splitlines()[-12:]))
                f.write(graph_text(g) + "\n\n")

    tally = survey(cfg, progress=progress, on_failure=on_failure)
    bar.close()
    print(f"command: {cfg.command()}")
    print(tally.render(f"random-graph equivalence: {cfg.n} graphs, seed {cfg.seed}"))
    if not failures:
        return 0
    if not args.no_shrink:
        try:
            shrink(cfg, REGRESSIONS)
        except GraphFailed as e:
            print(f"shrunk: {str(e).splitlines()[0]}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
