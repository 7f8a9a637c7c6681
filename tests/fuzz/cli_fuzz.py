"""Mutation fuzzer of ``graphopt optimize``: corrupt copies of small valid models go through the
CLI, and every run must end cleanly.

For each mutant (a seed model from ``seeds.py`` changed by one mutation of ``mutations.py``) the
CLI runs as ``graphopt optimize IN -o OUT --budget B`` and must:

* exit with 0, 1, 2 or 3 (ok, check failed, bad input, internal error), within the time budget;
* print no Python traceback, and on failure one ``graphopt: ...`` error line;
* leave no OUT, OUT.data or temporary file of OUT behind when it fails, nor new files beside
  IN, nor (exit code 0 or not) files in its temporary folder (``TMPDIR``, one per run);
* on exit 0, have written an OUT that ONNX Runtime loads.

Two ways to run the CLI, equivalent for these properties: ``subprocess`` starts ``python -m
graphopt`` per mutant (about 2 s of imports and first-use setup each); ``fork`` runs the same
``cli.main`` in a process forked per mutant from a server that imported graphopt and ran it
once (multiprocessing's forkserver with ``warm.py`` preloaded: the server is a fresh process
that never ran ONNX Runtime), with the child's stdout / stderr file descriptors redirected to
files and its exit status the CLI's return code.

Script mode prints outcomes by mutation kind and the distinct failures:
    python -m tests.fuzz.cli_fuzz --n 2000 [--mode fork|subprocess] [--jobs 2] [-v]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from .mutations import KINDS, mutate
from .seeds import MODEL, SEEDS, write_seed

__all__ = ["Mutant", "Outcome", "plan", "run_mutants", "table"]

EXIT_CODES = (0, 1, 2, 3)
TIMEOUT_S = 60.0  # per mutant: the models are tiny, so a run this long is a hang
BUDGET_S = 0.5  # the CLI's --budget (rewrite search seconds)
_PRELOAD = ["tests.fuzz.warm"]  # imports graphopt and runs it once (see warm.py)


@dataclass(frozen=True)
class Mutant:
    seed: str  # seed model name
    kind: str  # mutation kind
    rng_seed: int

    @property
    def label(self) -> str:
        return f"{self.seed}/{self.kind}/{self.rng_seed}"


@dataclass
class Outcome:
    mutant: Mutant
    desc: str  # what the mutation did
    code: int | None  # the CLI's exit code; None when it hung
    seconds: float
    stderr: str
    problems: list[str] = field(default_factory=list)  # properties it broke

    @property
    def error_line(self) -> str:
        for ln in self.stderr.splitlines():
            if ln.startswith("graphopt: ") and ("error" in ln or "check failed" in ln):
                return ln
        return self.stderr.strip().splitlines()[-1] if self.stderr.strip() else ""


def plan(n: int, seed: int = 0, kinds: Sequence[str] = KINDS,
         seeds: Sequence[str] = tuple(SEEDS)) -> list[Mutant]:
    """``n`` mutants, kinds and seeds in turn (every kind on every seed), each with its own RNG
    seed; the same arguments give the same list."""
    pairs = [(s, k) for k in kinds for s in seeds]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pairs))
    return [Mutant(*pairs[int(order[i % len(pairs)])], rng_seed=seed * 1_000_003 + i)
            for i in range(n)]


# ---- running the CLI ----------------------------------------------------------------------------

def _argv(inp: str, out: str) -> list[str]:
    return ["optimize", inp, "-o", out, "--budget", str(BUDGET_S)]


def _child(argv: list[str], out_path: str, err_path: str, tmp: str) -> None:
    """The forked CLI: stdout / stderr to files, temporary files under ``tmp``, exit status =
    ``cli.main``'s return code. Anything escaping ``main`` prints a traceback (that the fuzzer
    then reports)."""
    import traceback

    os.environ["TMPDIR"] = tmp
    tempfile.tempdir = tmp
    fo, fe = os.open(out_path, os.O_WRONLY | os.O_CREAT), os.open(err_path,
                                                                  os.O_WRONLY | os.O_CREAT)
    os.dup2(fo, 1)
    os.dup2(fe, 2)
    code = 99
    try:
        from graphopt.cli import main

        code = int(main(argv))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 98
    except BaseException:  # noqa: BLE001 - the property under test: nothing escapes main
        traceback.print_exc()
        code = 97
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class Runner:
    """Runs the CLI on mutants, ``jobs`` at a time, as forked ``cli.main`` or as subprocesses."""

    def __init__(self, mode: str = "fork", jobs: int = 1, timeout: float = TIMEOUT_S) -> None:
        if mode not in ("fork", "subprocess"):
            raise ValueError(f"mode {mode!r}: fork or subprocess")
        self.mode, self.jobs, self.timeout = mode, max(1, jobs), timeout
        self.ctx: Any = None
        if mode == "fork":
            self.ctx = mp.get_context("forkserver")
            self.ctx.set_forkserver_preload(_PRELOAD)

    def start(self, argv: list[str], folder: str) -> Any:
        """Start the CLI on ``argv``: its stdout / stderr go to ``folder``, its temporary
        files to ``folder/tmp``."""
        out, err = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
        tmp = os.path.join(folder, "tmp")
        os.makedirs(tmp)
        if self.mode == "subprocess":
            fo, fe = open(out, "wb"), open(err, "wb")
            env = dict(os.environ, PYTHONHASHSEED="0", TMPDIR=tmp)
            p = subprocess.Popen([sys.executable, "-m", "graphopt", *argv], stdout=fo,
                                 stderr=fe, stdin=subprocess.DEVNULL, env=env)
            fo.close()
            fe.close()
            return p
        p = self.ctx.Process(target=_child, args=(argv, out, err, tmp), daemon=True)
        p.start()
        return p

    @staticmethod
    def poll(p: Any) -> int | None:
        if isinstance(p, subprocess.Popen):
            return p.poll()
        return None if p.is_alive() else p.exitcode

    @staticmethod
    def kill(p: Any) -> None:
        p.kill()
        if isinstance(p, subprocess.Popen):
            p.wait()
        else:
            p.join()


def _files(folder: str) -> set[str]:
    out = set()
    for root, _dirs, names in os.walk(folder):
        for nm in names:
            out.add(os.path.relpath(os.path.join(root, nm), folder))
    return out


def _loads_in_ort(path: str) -> str | None:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4
    try:
        ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - reported as a broken property
        return f"written model does not load in ONNX Runtime: {str(e).splitlines()[0][:200]}"
    return None


# what ONNX Runtime itself keeps in TMPDIR across sessions (a session id: time and UUID)
_RUNTIME_FILES = {".ses"}


def _judge(o: Outcome, in_dir: str, in_before: set[str], out_dir: str) -> None:
    """Record in ``o.problems`` every property the run broke."""
    if o.code is None:
        o.problems.append(f"hang (> {o.seconds:.0f} s)")
    elif o.code not in EXIT_CODES:
        o.problems.append(f"exit code {o.code}")
    if "Traceback" in o.stderr:
        o.problems.append("traceback")
    left = _files(out_dir)
    new_in = _files(in_dir) - in_before
    if o.code != 0:
        if left:
            o.problems.append(f"left {sorted(left)} after failing")
        if o.code in (1, 2, 3) and not o.error_line.startswith("graphopt: "):
            o.problems.append("no one-line graphopt error")
    elif MODEL not in left:
        o.problems.append("exit 0 without an output file")
    else:
        why = _loads_in_ort(os.path.join(out_dir, MODEL))
        if why:
            o.problems.append(why)
    if new_in:
        o.problems.append(f"left {sorted(new_in)} beside the input")
    temps = _files(os.path.join(os.path.dirname(in_dir), "tmp")) - _RUNTIME_FILES
    if temps:
        o.problems.append(f"left temporary files {sorted(temps)[:3]}")


def run_mutants(mutants: Sequence[Mutant], runner: Runner, work: str | None = None,
                progress: bool = False, log: str | None = None) -> list[Outcome]:
    """Mutate, run the CLI on each mutant, judge each run; outcomes in the mutants' order.
    ``log``: a file that gets one JSON line per outcome as it comes."""
    with tempfile.TemporaryDirectory(prefix="graphopt-fuzz-", dir=work) as root:
        seed_dirs = {}
        for s in sorted({m.seed for m in mutants}):
            seed_dirs[s] = os.path.join(root, "seeds", s)
            write_seed(s, seed_dirs[s])
        outs = []
        for o in _run(mutants, runner, root, seed_dirs, progress):
            outs.append(o)
            if log:
                with open(log, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"mutant": o.mutant.label, "desc": o.desc,
                                        "code": o.code, "seconds": round(o.seconds, 3),
                                        "problems": o.problems, "error": o.error_line}) + "\n")
        return outs


def _run(mutants: Sequence[Mutant], runner: Runner, root: str, seed_dirs: dict[str, str],
         progress: bool) -> Iterator[Outcome]:
    pending = list(enumerate(mutants))
    running: dict[int, tuple[Any, float, Outcome, str, set[str], str]] = {}
    done: dict[int, Outcome] = {}
    next_out = finished = 0
    while pending or running:
        while pending and len(running) < runner.jobs:
            i, m = pending.pop(0)
            folder = os.path.join(root, f"m{i}")
            in_dir, out_dir = os.path.join(folder, "in"), os.path.join(folder, "out")
            desc = mutate(m.kind, seed_dirs[m.seed], in_dir, np.random.default_rng(m.rng_seed))
            os.makedirs(out_dir)
            before = _files(in_dir)
            p = runner.start(_argv(os.path.join(in_dir, MODEL), os.path.join(out_dir, MODEL)),
                             folder)
            running[i] = (p, time.monotonic(), Outcome(m, desc, None, 0.0, ""), in_dir, before,
                          out_dir)
        time.sleep(0.01)
        for i in list(running):
            p, t0, o, in_dir, before, out_dir = running[i]
            code = runner.poll(p)
            elapsed = time.monotonic() - t0
            if code is None and elapsed < runner.timeout:
                continue
            if code is None:
                runner.kill(p)
            o.code, o.seconds = code, elapsed
            folder = os.path.dirname(in_dir)
            err = os.path.join(folder, "stderr")
            if os.path.exists(err):  # else the child died before redirecting: judged by code
                with open(err, encoding="utf-8", errors="replace") as f:
                    o.stderr = f.read()
            _judge(o, in_dir, before, out_dir)
            del running[i]
            done[i] = o
            finished += 1
            if progress and finished % 50 == 0:
                print(f"  {finished} / {len(mutants)} mutants", file=sys.stderr, flush=True)
        while next_out in done:
            yield done.pop(next_out)
            next_out += 1


# ---- reporting ----------------------------------------------------------------------------------

def _family(o: Outcome) -> str:
    """A failure message with names and numbers blanked: one class of error."""
    line = o.error_line
    line = re.sub(r"'[^']*'|\"[^\"]*\"", "'_'", line)
    line = re.sub(r"/[^\s:]+", "PATH", line)
    return re.sub(r"\d+", "N", line)[:160]


def table(outs: Sequence[Outcome], verbose: bool = False) -> str:
    """Outcomes by mutation kind (exit codes, broken properties), then the distinct broken
    runs and the classes of exit-3 (internal) errors."""
    cols = ["n", "exit0", "exit1", "exit2", "exit3", "hang", "traceback", "leftover",
            "bad_out", "other"]
    rows: dict[str, Counter] = defaultdict(Counter)
    for o in outs:
        r = rows[o.mutant.kind]
        r["n"] += 1
        if o.code in EXIT_CODES:
            r[f"exit{o.code}"] += 1
        for p in o.problems:
            key = ("hang" if p.startswith("hang") else "traceback" if p == "traceback" else
                   "leftover" if p.startswith("left") else
                   "bad_out" if "output" in p or "ONNX Runtime" in p else "other")
            r[key] += 1
    total: Counter = sum(rows.values(), Counter())
    w = max([len(k) for k in rows] + [5])
    lines = [f"{'kind':{w}s} " + " ".join(f"{c:>9s}" for c in cols)]
    for k in sorted(rows):
        lines.append(f"{k:{w}s} " + " ".join(f"{rows[k][c]:9d}" for c in cols))
    lines.append(f"{'total':{w}s} " + " ".join(f"{total[c]:9d}" for c in cols))
    secs = [o.seconds for o in outs]
    if secs:
        lines.append(f"seconds per mutant: median {np.median(secs):.2f}, max {max(secs):.2f}")
    bad = [o for o in outs if o.problems]
    lines.append(f"broken runs: {len(bad)}")
    for o in bad[: None if verbose else 20]:
        lines.append(f"  {o.mutant.label} ({o.desc}): {'; '.join(o.problems)}")
        tail = o.stderr.strip().splitlines()[-3:]
        lines.extend(f"      {t[:200]}" for t in tail)
    internal = Counter(_family(o) for o in outs if o.code == 3)
    if internal:
        lines.append("exit 3 (internal error) classes:")
        lines.extend(f"  {k:5d}  {f}" for f, k in internal.most_common())
    if verbose:
        usage = Counter(_family(o) for o in outs if o.code in (1, 2))
        lines.append("exit 1 / 2 classes:")
        lines.extend(f"  {k:5d}  {f}" for f, k in usage.most_common())
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="mutants to run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mode", choices=("fork", "subprocess"), default="fork")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=TIMEOUT_S)
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    ap.add_argument("--seeds", nargs="+", default=list(SEEDS), choices=list(SEEDS))
    ap.add_argument("--log", default=None, help="append one JSON line per outcome here")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    t0 = time.time()
    outs = run_mutants(plan(a.n, a.seed, a.kinds, a.seeds), Runner(a.mode, a.jobs, a.timeout),
                       progress=True, log=a.log)
    print(table(outs, a.verbose))
    print(f"{len(outs)} mutants in {time.time() - t0:.0f} s ({a.mode}, {a.jobs} jobs)")
    return 1 if any(o.problems for o in outs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
