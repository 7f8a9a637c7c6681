"""Running under torchrun from Python: a shard folder (``run_distributed``) or any module /
script (``torchrun``), as a subprocess ``python -m torch.distributed.run --standalone``.

``--standalone`` makes torchrun's rendezvous pick a free port on localhost itself, so concurrent
runs never collide on a port. The subprocess gets its own session; on a timeout the whole
process group (torchrun and its ranks) is terminated, then killed. A failure raises
``DistributedRunError`` with the exit status and the tail of the ranks' output.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import GraphOptError

__all__ = ["DistributedRunError", "DistributedResult", "torchrun", "run_distributed"]

TAIL_CHARS = 4000


class DistributedRunError(GraphOptError):
    """A torchrun run failed or timed out; the message ends with the ranks' output tail."""


@dataclass
class DistributedResult:
    """Outputs of a shard folder run by name, the sidecar record (world size, backend, digest,
    and per-rank collective counts when counted) and torchrun's output."""

    outputs: dict[str, np.ndarray]
    record: dict[str, Any]
    stdout: str
    stderr: str

    @property
    def counts(self) -> list[dict[str, Any]] | None:
        """One record per rank (rank order) when run with ``count_collectives``."""
        c = self.record.get("collectives")
        return sorted(c, key=lambda d: d["rank"]) if c is not None else None


def _tail(s: str) -> str:
    s = s.strip()
    return s if len(s) <= TAIL_CHARS else "..." + s[-TAIL_CHARS:]


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """Terminate the subprocess' process group (torchrun and its ranks), kill it if it lingers."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def torchrun(argv: Sequence[str], world_size: int, *, timeout: float = 300.0,
             env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    """Run ``torchrun --standalone --nproc-per-node world_size ARGV`` (ARGV: ``-m module ...``
    or ``script.py ...``) and wait for it; raises DistributedRunError (with the output tail) on
    a non-zero exit or after ``timeout`` seconds."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise GraphOptError(f"world_size must be an int >= 1, got {world_size!r}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={world_size}", *map(str, argv)]
    full_env = dict(os.environ)
    full_env.setdefault("OMP_NUM_THREADS", "1")
    full_env.update(env or {})
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=full_env, cwd=cwd, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        raise DistributedRunError(f"timed out after {timeout:g} s; output:\n{_tail(out)}\n"
                                  f"{_tail(err)}", where=" ".join(cmd[2:])) from None
    except BaseException:
        _kill_group(proc)
        raise
    if proc.returncode != 0:
        raise DistributedRunError(f"exit status {proc.returncode}; output:\n{_tail(out)}\n"
                                  f"{_tail(err)}", where=" ".join(cmd[2:]))
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def run_distributed(folder: str | os.PathLike[str], world_size: int,
                    inputs: Mapping[str, np.ndarray], *, count_collectives: bool = False,
                    backend: str = "auto", timeout: float = 300.0) -> DistributedResult:
    """Run the shard ``folder`` on ``world_size`` processes (``-m graphopt.launch``) with
    ``inputs`` by name; returns its outputs and sidecar record. The inputs and outputs travel
    through a temporary folder, removed afterwards."""
    from ..launch import sidecar_path

    with tempfile.TemporaryDirectory(prefix="graphopt-tp-") as d:
        x, y = Path(d) / "inputs.npz", Path(d) / "outputs.npz"
        np.savez(x, **{k: np.asarray(v) for k, v in inputs.items()})
        argv = ["-m", "graphopt.launch", os.fspath(folder), "--inputs", str(x), "--output",
                str(y), "--backend", backend]
        if count_collectives:
            argv.append("--count-collectives")
        done = torchrun(argv, world_size, timeout=timeout)
        if not y.is_file():
            raise DistributedRunError(f"finished without writing {y.name}; output:\n"
                                      f"{_tail(done.stdout)}\n{_tail(done.stderr)}",
                                      where=os.fspath(folder))
        with np.load(y, allow_pickle=False) as z:
            outputs = {k: z[k] for k in z.files}
        record = json.loads(sidecar_path(y).read_text())
    return DistributedResult(outputs, record, done.stdout, done.stderr)
