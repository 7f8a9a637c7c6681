"""`graphopt rules ...`: generate, prune, verify, list and show rules.

The rule directories are the generated library (``compiler/subst/rules``) and whatever the
caller adds (the top-level CLI adds ``passes/rules``, the hand-written rules: the spellings each
fusion, canonical form and cleanup accepts, and the search's hand-written rules). ``verify``
proves every rule and, given a ``replay`` function, replays each hand-written rule through its
pass (the pass must rewrite the rule's lhs into exactly its rhs)."""
from __future__ import annotations

from ..rewrite.rule import KINDS, PASSLESS_KINDS

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from .rulefile import RULES_DIR, SubstRule, load_dir

Replay = Callable[[SubstRule], "str | None"]


def add_parser(subparsers: Any, rule_dirs: Sequence[Path | str] = (RULES_DIR,),
               replay: Replay | None = None) -> argparse.ArgumentParser:
    p = subparsers.add_parser("rules", help="generate, verify and inspect rules")
    p.set_defaults(rule_dirs=[str(d) for d in rule_dirs], replay=replay)
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
    _derive_args(g)
    g.add_argument("--no-derive", action="store_true",
                   help="skip the last stage, the derivability pruning")
    g.set_defaults(func=cmd_generate)

    pr = sub.add_parser("prune", help="drop generated rules that smaller kept rules derive "
                                      "(Ruler's derivability test)")
    pr.add_argument("dir", nargs="?", default=str(RULES_DIR),
                    help=f"generated rule file or directory (default {RULES_DIR})")
    pr.add_argument("--out", default=None, help="output dir (default: the input dir)")
    pr.add_argument("--json", default=None, help="also write the report as JSON here")
    _derive_args(pr)
    pr.set_defaults(func=cmd_prune)

    v = sub.add_parser("verify", help="prove every rule and replay the hand-written ones "
                                      "(exit 0 only if all pass)")
    v.add_argument("dir", nargs="*", help="rule files or directories (default: all)")
    v.add_argument("--kind", nargs="*", default=None, help=f"only these kinds ({', '.join(KINDS)})")
    v.add_argument("--jobs", type=int, default=1)
    v.add_argument("--timeout-ms", type=int, default=5000)
    v.set_defaults(func=cmd_verify)

    ls = sub.add_parser("list", help="list rules")
    ls.add_argument("dir", nargs="*", help="rule files or directories (default: all)")
    ls.add_argument("--kind", nargs="*", default=None, help="only these kinds")
    ls.add_argument("--json", action="store_true", help="a JSON array, one object per rule")
    ls.set_defaults(func=cmd_list)

    sh = sub.add_parser("show", help="print one rule's lhs and rhs")
    sh.add_argument("name")
    sh.add_argument("--dir", default=None)
    sh.set_defaults(func=cmd_show)
    return p


def _derive_args(p: argparse.ArgumentParser) -> None:
    from .derive import DEFAULT_DEPTH, DEFAULT_MAX_GRAPHS, DEFAULT_MAX_GROWTH

    p.add_argument("--depth", type=int, default=DEFAULT_DEPTH,
                   help=f"rewrites from each side of a rule (default {DEFAULT_DEPTH})")
    p.add_argument("--max-graphs", type=int, default=DEFAULT_MAX_GRAPHS,
                   help=f"graphs reached from each side (default {DEFAULT_MAX_GRAPHS})")
    p.add_argument("--max-growth", type=int, default=DEFAULT_MAX_GROWTH,
                   help="a derivation passes only through graphs at most this many ops larger "
                        f"than the rule's larger side; -1: any size (default {DEFAULT_MAX_GROWTH})")
    p.add_argument("--keep-used", default=None, metavar="FILE",
                   help="keep the rules this JSON names whatever (`python -m bench.rule_usage "
                        "--out FILE`: the rules the benchmarks' searches apply)")


def _keep(args: argparse.Namespace) -> set[str]:
    from .derive import read_used

    return read_used(args.keep_used) if args.keep_used else set()


def _growth(args: argparse.Namespace) -> int | None:
    return None if args.max_growth is None or args.max_growth < 0 else args.max_growth


def _rules(args: argparse.Namespace, dirs: Sequence[str] | None = None) -> list[SubstRule]:
    """The rules under the requested directories (default: every rule directory), of the
    requested kinds."""
    out: list[SubstRule] = []
    for d in (dirs or args.rule_dirs):
        if Path(d).exists():
            out.extend(load_dir(d))
    kinds = getattr(args, "kind", None)
    if kinds:
        bad = sorted(set(kinds) - set(KINDS))
        if bad:
            raise SystemExit(f"unknown kind(s) {bad}; known: {', '.join(KINDS)}")
        out = [r for r in out if r.kind in kinds]
    return out


def cmd_generate(args: argparse.Namespace) -> int:
    from ..progress import for_args
    from .generate import generate

    progress = for_args(args, "graphopt rules generate")
    try:
        rep, _ = generate(args.max_ops, args.scenarios, args.ops, args.out, args.jobs,
                          args.seed, args.timeout_ms, progress=progress.say,
                          depth=None if args.no_derive else args.depth,
                          max_graphs=args.max_graphs, keep=sorted(_keep(args)),
                          max_growth=_growth(args))
    finally:
        progress.close()
    print(rep.table())
    for f in rep.files:
        print(f"wrote {f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rep.as_dict(), indent=2, sort_keys=True) + "\n")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from ..progress import for_args
    from .derive import by_source, prune
    from .rulefile import write_dir, write_manifest

    if args.depth < 0 or args.max_graphs < 1:
        raise SystemExit("--depth must be >= 0 and --max-graphs >= 1")
    rules = load_dir(args.dir)
    other = sorted({r.kind for r in rules if not r.generated})
    if other:
        raise SystemExit(f"{args.dir}: prune works on generated rules; found kind(s) {other}")
    if not rules:
        print(f"no rules under {args.dir}", file=sys.stderr)
        return 1
    keep = _keep(args)
    progress = for_args(args, "graphopt rules prune")
    progress("derive", None)
    t0 = time.perf_counter()
    try:
        kept, rep = prune(rules, args.depth, args.max_graphs, keep, _growth(args),
                          progress=progress.say)
        progress("derive", time.perf_counter() - t0)
    finally:
        progress.close()
    out = Path(args.out) if args.out else (Path(args.dir) if Path(args.dir).is_dir()
                                           else Path(args.dir).parent)
    groups = by_source(kept)
    files = write_dir({k: groups.get(k, []) for k in rep.by_file}, out)
    files.append(write_manifest(out, rep.manifest()))
    print(rep.table())
    for f in files:
        print(f"wrote {f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rep.as_dict(), indent=2, sort_keys=True) + "\n")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    import multiprocessing as mp

    from ..progress import for_args
    from .verify import verify_text

    rules = _rules(args, args.dir)
    if not rules:
        print(f"no rules under {', '.join(args.dir or args.rule_dirs)}", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    tasks = [(r.text(), r.source, 0, args.timeout_ms, True) for r in rules]
    progress = for_args(args, "graphopt rules verify")
    progress("prove", None)
    verdicts = []
    try:
        if args.jobs > 1:
            with mp.get_context("fork").Pool(args.jobs) as pool:
                chunk = max(1, min(64, len(tasks) // (8 * args.jobs)))
                for v in pool.imap(verify_text, tasks, chunksize=chunk):
                    verdicts.append(v)
                    if len(verdicts) % chunk == 0:
                        progress.say(f"{len(verdicts)}/{len(tasks)} rules")
        else:
            for t in tasks:
                verdicts.append(verify_text(t))
                progress.say(f"{len(verdicts)}/{len(tasks)} rules")
        progress("prove", time.perf_counter() - t0)
    finally:
        progress.close()
    # z3's timeout is wall-clock: on a loaded machine a proof that normally takes milliseconds
    # can run out. Re-prove those (only those: a counterexample is final) one at a time with
    # four times the time; they stay NOT PROVEN if z3 still cannot decide.
    again = [i for i, v in enumerate(verdicts) if not v.ok and v.stage == "z3"
             and v.reason.startswith("z3 returned unknown")]
    for i in again:
        text, source, seed, ms, nlsat = tasks[i]
        verdicts[i] = verify_text((text, source, seed, 4 * ms, nlsat))
    if again:
        print(f"re-proved {len(again)} rule(s) after a z3 timeout, one at a time with "
              f"{4 * args.timeout_ms} ms: {sum(verdicts[i].ok for i in again)} proven")
    bad = [v for v in verdicts if not v.ok]
    for v in bad:
        print(f"NOT PROVEN {v.name}: {v.stage}: {v.reason}")
    methods: dict[str, int] = {}
    for v in verdicts:
        if v.ok:
            m = v.method.split(";")[0]
            methods[m] = methods.get(m, 0) + 1
    unreplayed = _replay_all(args.replay, [r for r in rules if not r.generated])
    by_kind: dict[str, list[int]] = {}
    for r, v in zip(rules, verdicts):
        k = by_kind.setdefault(r.kind, [0, 0])
        k[0] += v.ok
        k[1] += 1
    kinds = ", ".join(f"{k} {ok}/{n}" for k, (ok, n) in sorted(by_kind.items()))
    print(f"{len(verdicts) - len(bad)}/{len(verdicts)} rules verified ({kinds}; "
          f"{', '.join(f'{k} {n}' for k, n in sorted(methods.items()))}) in "
          f"{time.perf_counter() - t0:.1f}s")
    return 0 if not bad and not unreplayed else 1


def _replay_all(replay: Replay | None, rules: list[SubstRule]) -> list[str]:
    """Replay each hand-written rule through its pass; the names of those that fail. Rules of
    a kind without a pass (kv_cache: identities a whole-graph transform rests on) are proven
    only, and counted apart."""
    passless = [r for r in rules if r.kind in PASSLESS_KINDS]
    rules = [r for r in rules if r.kind not in PASSLESS_KINDS]
    if passless:
        print(f"{len(passless)} rule(s) of kind {', '.join(sorted({r.kind for r in passless}))} "
              f"name no pass: proven, nothing to replay")
    if replay is None or not rules:
        return []
    failed = []
    for r in rules:
        why = replay(r)
        if why is not None:
            failed.append(r.name)
            print(f"NOT REPLAYED {r.name} (pass {r.pass_name or r.source}): {why}")
    print(f"{len(rules) - len(failed)}/{len(rules)} hand-written rules replayed through "
          f"their pass")
    return failed


def _summary(r: SubstRule) -> dict[str, Any]:
    return {"name": r.name, "kind": r.kind, "pass": r.pass_name or (
                "" if r.generated else r.source), "doc": r.get("doc"),
            "verify": "float-tested" if r.float_only else "proof",
            "exact": r.get("exact", "true") != "false", "error": r.get("error"),
            "source": r.source, "lhs_ops": r.lhs_ops, "rhs_ops": r.rhs_ops,
            "outputs": len(r.lhs.outputs), "ops": sorted(set(
                n.op for g in (r.lhs, r.rhs) for n in g.nodes if n.op != "input")),
            "dims": list(r.dim_vars()), "lhs": r.lhs.to_text(), "rhs": r.rhs.to_text()}


def cmd_list(args: argparse.Namespace) -> int:
    rules = _rules(args, args.dir)
    if args.json:
        print(json.dumps([_summary(r) for r in rules], indent=1))
        return 0
    for r in rules:
        s = _summary(r)
        print(f"{r.name:32s} {r.kind:9s} {s['lhs_ops']} -> {s['rhs_ops']} ops  "
              f"{','.join(s['ops'])}")
    counts: dict[str, int] = {}
    for r in rules:
        counts[r.kind] = counts.get(r.kind, 0) + 1
    print(f"{len(rules)} rules ({', '.join(f'{k} {n}' for k, n in sorted(counts.items()))})")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    for r in _rules(args, [args.dir] if args.dir else None):
        if r.name == args.name:
            print(r.text(), end="")
            return 0
    print(f"no rule named {args.name!r} under {args.dir or ', '.join(args.rule_dirs)}",
          file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="graphopt")
    add_parser(p.add_subparsers(dest="cmd", required=True))
    a = p.parse_args(argv)
    return int(a.func(a))


if __name__ == "__main__":
    sys.exit(main())
