"""Wall time of ``graphopt optimize`` on one model, this checkout against a baseline checkout.

    python -m bench.optimize_speed /tmp/bert.onnx --baseline /tmp/base-pkg --runs 3

``--baseline DIR`` is a folder holding a ``graphopt`` package of another version (a symlink to an
older checkout's ``compiler/`` with its ``passes`` / ``codegen`` linked in); it is put first on
``PYTHONPATH`` for the baseline's runs (``--current DIR`` likewise for the version timed against
it; default: the installed one). The two versions run alternately (baseline, current,
baseline, ...) as separate CLI processes, so both see the same machine load; the table gives each
step's median seconds (and min-max) from the report, the wall time of the whole command, and the
ratio current / baseline of the medians. The written models of the two versions are compared byte
for byte (a speed change must not change what is written).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def run_once(model: str, out: Path, pythonpath: str | None, extra: list[str]
             ) -> dict[str, float]:
    """One ``python -m graphopt optimize`` run: wall seconds and the report's step times."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    rep = out.with_suffix(".json")
    cmd = [sys.executable, "-m", "graphopt", "optimize", model, "-o", str(out), "--report",
           str(rep), "-q", *extra]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    r: dict[str, Any] = json.loads(rep.read_text())
    times = {k: float(v) for k, v in r["steps"].items()}
    times["wall"] = wall
    return times


def same_bytes(a: Path, b: Path) -> bool:
    """Whether two written models (and their external data files, if any) are identical."""
    pairs = [(a, b)] + [(Path(str(a) + ".data"), Path(str(b) + ".data"))]
    for x, y in pairs:
        if x.exists() != y.exists():
            return False
        if x.exists() and x.read_bytes() != y.read_bytes():
            return False
    return True


def fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):6.2f} ({min(xs):.2f}-{max(xs):.2f})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--baseline", required=True, help="folder with the baseline's graphopt")
    p.add_argument("--current", default=None,
                   help="folder with the graphopt to time against it (default: the installed one)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", default=None, help="folder for the written models (default: temp)")
    p.add_argument("extra", nargs="*", help="more optimize options (after --)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(a.out or tmp)
        d.mkdir(parents=True, exist_ok=True)
        res: dict[str, list[dict[str, float]]] = {"baseline": [], "current": []}
        for i in range(a.runs):
            for label, pp in (("baseline", a.baseline), ("current", a.current)):
                res[label].append(run_once(a.model, d / f"{label}.onnx", pp, a.extra))
                print(f"run {i + 1} {label}: wall {res[label][-1]['wall']:.2f} s", flush=True)
        steps = [k for k in res["current"][0] if k != "wall"] + ["wall"]
        print(f"\n{'step':10} {'baseline s (min-max)':>22} {'current s (min-max)':>22} "
              f"{'ratio':>6}")
        for k in steps:
            b = [r.get(k, 0.0) for r in res["baseline"]]
            c = [r.get(k, 0.0) for r in res["current"]]
            ratio = statistics.median(c) / statistics.median(b) if statistics.median(b) else 0
            print(f"{k:10} {fmt(b):>22} {fmt(c):>22} {ratio:6.2f}")
        same = same_bytes(d / "baseline.onnx", d / "current.onnx")
        print(f"\nwritten models identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
