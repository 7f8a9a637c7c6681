"""graphopt.launch under real torchrun (2 processes, gloo): outputs equal numpy's single-process
reference, collectives counted on the process group, and failures are clear and write nothing.

The torchrun runs (~5 s each) start together in one fixture, which also shows that concurrent
runs do not collide on a port; the in-process tests check the launcher's argument errors."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from graphopt import launch
from graphopt.errors import GraphOptError
from graphopt.ir.graph import Graph
from graphopt.ir.node import input_node, op
from graphopt.tp.folder import LAUNCH_FILE, PROGRAM_FILE, write_folder
from graphopt.tp.run import DistributedRunError, run_distributed, torchrun

from .handmade import X_TYPE, gather_programs, mlp_counts, mlp_programs

BATCH = 3
TIMEOUT = 180.0
HANG_TIMEOUT = 20.0  # the ranks of the hanging script have started by then


def _x() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((BATCH, 8)).astype(np.float32)


def _outcome(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as e:  # kept for the test that expects it
        return e


def _launch_sh(folder: Path, x_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(folder / LAUNCH_FILE), "--inputs", str(x_file)],
                          capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("launch")
    graphs, _, reference = mlp_programs(world=2)
    mlp = write_folder(d / "mlp", graphs)
    mlp4 = write_folder(d / "mlp4", mlp_programs(world=4)[0])
    script = write_folder(d / "script", graphs)
    corrupt = write_folder(d / "corrupt", graphs)
    prog = corrupt / "rank1" / PROGRAM_FILE
    prog.write_text(prog.read_text().replace("relu", "relux", 1))
    gather = write_folder(d / "gather", gather_programs(world=2)[0])
    differ = write_folder(d / "differ", [_unreplicated(r) for r in range(2)])
    x = _x()
    np.savez(d / "x.npz", x=x)
    hang = d / "hang.py"
    hang.write_text("import os, pathlib, time\n"
                    f"pathlib.Path({str(d)!r}, 'pid' + os.environ['RANK'])"
                    ".write_text(str(os.getpid()))\n"
                    "time.sleep(600)\n")
    jobs = {  # the hanging one first: it holds a worker for HANG_TIMEOUT seconds
        "hang": lambda: torchrun([hang], 2, timeout=HANG_TIMEOUT),
        "mlp": lambda: run_distributed(mlp, 2, {"x": x}, count_collectives=True,
                                       backend="gloo", timeout=TIMEOUT),
        "mlp4": lambda: run_distributed(mlp4, 4, {"x": x}, count_collectives=True,
                                        timeout=TIMEOUT),
        "corrupt": lambda: run_distributed(corrupt, 2, {"x": x}, timeout=TIMEOUT),
        "script": lambda: _launch_sh(script, d / "x.npz"),
        "gather": lambda: run_distributed(gather, 2, {"x": x}, timeout=TIMEOUT),
        "differ": lambda: run_distributed(differ, 2, {"x": x}, timeout=TIMEOUT),
    }
    with ThreadPoolExecutor(4) as pool:  # 2 cores: at most 4 torchruns at a time
        futures = {k: pool.submit(_outcome, f) for k, f in jobs.items()}
        out = {k: f.result() for k, f in futures.items()}
    out.update(reference=reference(x), dirs={"script": script, "corrupt": corrupt, "hang": d,
                                                  "differ": differ},
               x=x)
    return out


def _unreplicated(rank: int) -> Graph:
    """A program whose output is rank ``rank``'s own block (no collective): not replicated."""
    x = input_node("x", X_TYPE)
    return Graph([x], [op("shard", x.out, axis=1, rank=rank, world_size=2)], ["y"])


def _ok(v: Any) -> Any:
    if isinstance(v, Exception):
        raise v
    return v


def test_outputs_equal_the_single_process_reference(runs: dict[str, Any]) -> None:
    res = _ok(runs["mlp"])
    assert sorted(res.outputs) == ["y", "z"]
    for k, want in runs["reference"].items():
        np.testing.assert_allclose(res.outputs[k], want, rtol=1e-5, atol=1e-5)
    assert res.record["world_size"] == 2 and res.record["backend"] == "gloo"


def test_collectives_counted_per_rank(runs: dict[str, Any]) -> None:
    res = _ok(runs["mlp"])
    want = mlp_counts(BATCH)
    assert res.counts == [dict(want, rank=0), dict(want, rank=1)]
    printed = [json.loads(ln) for ln in res.stdout.splitlines() if ln.startswith("{")]
    assert sorted(printed, key=lambda c: c["rank"]) == res.counts


def test_four_ranks(runs: dict[str, Any]) -> None:
    res = _ok(runs["mlp4"])
    for k, want in runs["reference"].items():
        np.testing.assert_allclose(res.outputs[k], want, rtol=1e-5, atol=1e-5)
    assert res.counts == [dict(mlp_counts(BATCH), rank=r) for r in range(4)]


def test_launch_script_writes_default_outputs(runs: dict[str, Any]) -> None:
    done = runs["script"]
    assert done.returncode == 0, done.stderr[-3000:]
    folder = runs["dirs"]["script"]
    with np.load(folder / launch.OUTPUT_FILE) as z:
        np.testing.assert_allclose(z["y"], runs["reference"]["y"], rtol=1e-5, atol=1e-5)
    side = json.loads((folder / "outputs.json").read_text())
    assert side["outputs"] == ["y", "z"] and "collectives" not in side
    assert "2 ranks (gloo)" in done.stdout


def test_a_corrupt_rank_program_fails_clearly(runs: dict[str, Any]) -> None:
    err = runs["corrupt"]
    assert isinstance(err, DistributedRunError), err
    prog = runs["dirs"]["corrupt"] / "rank1" / PROGRAM_FILE
    assert f"graphopt.launch: rank 1: {prog}: corrupt program" in str(err)
    assert "relux" in str(err)
    assert not (runs["dirs"]["corrupt"] / launch.OUTPUT_FILE).exists()


def test_outputs_that_differ_between_ranks_are_refused(runs: dict[str, Any]) -> None:
    err = runs["differ"]
    assert isinstance(err, DistributedRunError), err
    assert "graphopt.launch: rank 0: " in str(err) and "the ranks' outputs differ" in str(err)
    assert not (runs["dirs"]["differ"] / launch.OUTPUT_FILE).exists()


def test_a_timeout_ends_every_rank(runs: dict[str, Any]) -> None:
    err = runs["hang"]
    assert isinstance(err, DistributedRunError) and "timed out after 20 s" in str(err), err
    pids = [int((runs["dirs"]["hang"] / f"pid{r}").read_text()) for r in range(2)]
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _alive(p)]
        time.sleep(0.1)
    assert alive == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_column_split_all_gather(runs: dict[str, Any]) -> None:
    res = _ok(runs["gather"])
    np.testing.assert_allclose(res.outputs["y"], runs["x"] @ gather_programs()[1]["wg"],
                               rtol=1e-5, atol=1e-5)


# ---- the launcher's checks, in this process (they run before the process group starts) -----

@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "tp", mlp_programs(world=2)[0])


def _launch(folder: Path, inputs: dict[str, np.ndarray], capsys: pytest.CaptureFixture[str],
            tmp_path: Path) -> str:
    np.savez(tmp_path / "in.npz", **inputs)
    rc = launch.main([str(folder), "--inputs", str(tmp_path / "in.npz"), "--output",
                      str(tmp_path / "out.npz")])
    assert rc == 1
    assert not (tmp_path / "out.npz").exists() and not (tmp_path / "out.json").exists()
    return capsys.readouterr().err


def _torchrun_env(monkeypatch: pytest.MonkeyPatch, world: int) -> None:
    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": str(world),
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(k, v)


def test_without_torchrun(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    err = _launch(folder, {"x": _x()}, capsys, tmp_path)
    assert "not set: run it under torchrun (torchrun --nproc-per-node 2" in err


def test_wrong_world_size(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    _torchrun_env(monkeypatch, 3)
    err = _launch(folder, {"x": _x()}, capsys, tmp_path)
    assert "WORLD_SIZE=3 but the folder holds 2 rank programs" in err


@pytest.mark.parametrize("inputs, message", [
    ({}, r"missing \['x'\], unknown \[\]"),
    ({"x": _x(), "q": _x()}, r"missing \[\], unknown \['q'\]"),
    ({"x": _x().astype(np.float64)}, r"input 'x' must be f32\[b,8\], got f64\[3, 8\]"),
    ({"x": _x()[:, :4]}, r"input 'x' must be f32\[b,8\], got f32\[3, 4\]"),
])
def test_bad_inputs(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    capsys: pytest.CaptureFixture[str], inputs: dict[str, np.ndarray],
                    message: str) -> None:
    _torchrun_env(monkeypatch, 2)
    err = _launch(folder, inputs, capsys, tmp_path)
    assert err.startswith("graphopt.launch: rank 0: ")
    assert str(tmp_path / "in.npz") in err
    
    assert re.search(message, err), err


def test_symbol_sizes_must_agree(tmp_path: Path) -> None:
    specs = [{"name": "a", "dtype": "f32", "shape": ["b", 2]},
             {"name": "c", "dtype": "f32", "shape": ["b"]}]
    f = tmp_path / "in.npz"
    np.savez(f, a=np.zeros((3, 2), np.float32), c=np.zeros(3, np.float32))
    assert sorted(launch.read_inputs(f, specs)) == ["a", "c"]
    np.savez(f, a=np.zeros((3, 2), np.float32), c=np.zeros(4, np.float32))
    with pytest.raises(GraphOptError, match="dim 'b' is 4 here and 3 in another input"):
        launch.read_inputs(f, specs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")
def test_nccl_without_cuda(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    _torchrun_env(monkeypatch, 2)
    np.savez(tmp_path / "in.npz", x=_x())
    rc = launch.main([str(folder), "--inputs", str(tmp_path / "in.npz"), "--backend", "nccl"])
    assert rc == 1 and "--backend nccl needs CUDA" in capsys.readouterr().err
    assert not (folder / launch.OUTPUT_FILE).exists()
