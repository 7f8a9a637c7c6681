"""`graphopt rules ...`: generate, verify, list and show substitution rules."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .rulefile import RULES_DIR, SubstRule, load_dir


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("rules", help="generate, verify and inspect substitution rules")
    sub = p.add_subparsers(dest="rules_cmd", required=True)

    g = sub.add_parser("generate", help="enumerate, verify and prune rules (TASO's generator)")
    g.add_argument("--max-ops", type=int, default=3, help="ops per graph side (default 3)")
    g.add_argument("--ops", nargs="*", default=None, help="restrict to these ops")
    g.add_argument("--scenarios", nargs="*", default=None, help="scenarios to run (default all)")
    g.add_argument("--out", default=str(RULES_DIR), help=f"output dir (default {RULES_DIR})")
    g.add_argument("--jobs", type=int, default=1, help="worker processes")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--timeout-ms", type=int, default=5000, help="z3 timeout per rule")
    g.add_argument("--json", default=None, help="also write the report as JSON here")
    g.set_defaults(func=cmd_generate)

    v = sub.add_parser("verify", help="re-prove a rule set (exit 0 only if all are proven)")
    v.add_argument("dir", nargs="?", default=str(RULES_DIR))
    v.add_argument("--jobs", type=int, default=1)
    v.add_argument("--timeout-ms", type=int, default=5000)
    v.set_defaults(func=cmd_verify)

    ls = sub.add_parser("list", help="list rules")
    ls.add_argument("dir", nargs="?", default=str(RULES_DIR))
    ls.add_argument("--json", action="store_true", help="a JSON array, one object per rule")
    ls.set_defaults(func=cmd_list)

    sh = sub.add_parser("show", help="print one rule's lhs and rhs")
    sh.add_argument("name")
    sh.add_argument("--dir", default=str(RULES_DIR))
    sh.set_defaults(func=cmd_show)
    return p


def _progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cmd_generate(args: argparse.Namespace) -> int:
    from .generate import generate

    rep, _ = generate(args.max_ops, args.scenarios, args.ops, args.out, args.jobs, args.seed,
                      args.timeout_ms, progress=_progress)
    print(rep.table())
    for f in rep.files:
        print(f"wrote {f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rep.as_dict(), indent=2, sort_keys=True) + "\n")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    import multiprocessing as mp

    from .verify import verify_text

    rules = load_dir(args.dir)
    if not rules:
        print(f"no rules under {args.dir}", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    tasks = [(r.text(), r.source, 0, args.timeout_ms) for r in rules]
    if args.jobs > 1:
        with mp.get_context("fork").Pool(args.jobs) as pool:
            verdicts = pool.map(verify_text, tasks, chunksize=max(1, len(tasks) // (8 * args.jobs)))
    else:
        verdicts = [verify_text(t) for t in tasks]
    # z3's timeout is wall-clock: on a loaded machine a proof that normally takes milliseconds
    # can run out. Re-prove those (only those: a counterexample is final) one at a time with
    # four times the time; they stay NOT PROVEN if z3 still cannot decide.
    again = [i for i, v in enumerate(verdicts) if not v.ok and v.stage == "z3"
             and v.reason.startswith("z3 returned unknown")]
    for i in again:
        text, source, seed, ms = tasks[i]
        verdicts[i] = verify_text((text, source, seed, 4 * ms))
    if again:
        print(f"re-proved {len(again)} rule(s) after a z3 timeout, one at a time with "
              f"{4 * args.timeout_ms} ms: {sum(verdicts[i].ok for i in again)} proven")
    bad = [v for v in verdicts if not v.ok]
    for v in bad:
        print(f"NOT PROVEN {v.name}: {v.stage}: {v.reason}")
    methods: dict[str, int] = {}
    for v in verdicts:
        if v.ok:
            methods[v.method] = methods.get(v.method, 0) + 1
    print(f"{len(verdicts) - len(bad)}/{len(verdicts)} rules proven "
          f"({', '.join(f'{k} {n}' for k, n in sorted(methods.items()))}) in "
          f"{time.perf_counter() - t0:.1f}s")
    return 0 if not bad else 1


def _summary(r: SubstRule) -> dict[str, Any]:
    return {"name": r.name, "source": r.source, "lhs_ops": r.lhs_ops, "rhs_ops": r.rhs_ops,
            "outputs": len(r.lhs.outputs), "ops": sorted(set(
                n.op for g in (r.lhs, r.rhs) for n in g.nodes if n.op != "input")),
            "dims": list(r.dim_vars()), "lhs": r.lhs.to_text(), "rhs": r.rhs.to_text()}


def cmd_list(args: argparse.Namespace) -> int:
    rules = load_dir(args.dir)
    if args.json:
        print(json.dumps([_summary(r) for r in rules], indent=1))
        return 0
    for r in rules:
        s = _summary(r)
        print(f"{r.name:28s} {s['lhs_ops']} -> {s['rhs_ops']} ops  {','.join(s['ops'])}")
    print(f"{len(rules)} rules")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    for r in load_dir(args.dir):
        if r.name == args.name:
            print(r.text(), end="")
            return 0
    print(f"no rule named {args.name!r} under {args.dir}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="graphopt")
    add_parser(p.add_subparsers(dest="cmd", required=True))
    a = p.parse_args(argv)
    return int(a.func(a))


if __name__ == "__main__":
    sys.exit(main())
