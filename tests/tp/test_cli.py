"""``graphopt shard IN.onnx --tp N -o OUT_DIR``: the folder, the report, --run under torchrun,
and the errors (a corrupt file, --tp 1, an output path that is no shard folder), none of which
leaves a folder behind."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn


class _MLP(nn.Module):
    def __init__(self, h: int = 256) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(h, 4 * h), nn.Linear(4 * h, h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(torch.relu(self.a(x)))


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    p = tmp_path_factory.mktemp("m") / "mlp.onnx"
    torch.onnx.export(_MLP().eval(), (torch.randn(4, 64, 256),), str(p), dynamo=False,
                      input_names=["x"], output_names=["y"])
    return p


def _graphopt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "graphopt", *args], capture_output=True,
                          text=True, timeout=600)


def test_shard_writes_a_folder_that_torchrun_runs(onnx_file: Path, tmp_path: Path) -> None:
    out, rep = tmp_path / "out", tmp_path / "r.json"
    r = _graphopt("shard", str(onnx_file), "--tp", "2", "-o", str(out), "--report", str(rep),
                  "--run")
    assert r.returncode == 0, r.stderr
    assert "column" in r.stdout and "row" in r.stdout and "torchrun run of the folder" in r.stdout
    report = json.loads(rep.read_text())
    assert report["torchrun"]["max_relative_error"] < 1e-5
    assert [c["all_reduce"] for c in report["torchrun"]["collectives"]] == [1, 1]
    info = json.loads((out / "shard.json").read_text())
    assert info["world_size"] == 2 and (out / "launch.sh").is_file()
    x = np.random.default_rng(0).standard_normal((4, 64, 256)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    done = subprocess.run([str(out / "launch.sh"), "--inputs", str(tmp_path / "x.npz"),
                           "--output", str(tmp_path / "y.npz")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    import onnxruntime as ort

    want = ort.InferenceSession(str(onnx_file)).run(None, {"x": x})[0]
    got = np.load(tmp_path / "y.npz")["y"]
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 1e-5


def test_errors_leave_nothing(onnx_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    out = tmp_path / "out"
    r = _graphopt("shard", str(bad), "--tp", "2", "-o", str(out))
    assert r.returncode == 2 and "bad.onnx" in r.stderr and not out.exists()
    r = _graphopt("shard", str(onnx_file), "--tp", "1", "-o", str(out))
    assert r.returncode == 2 and "--tp must be >= 2" in r.stderr and not out.exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    r = _graphopt("shard", str(onnx_file), "--tp", "2", "-o", str(other))
    assert r.returncode == 2, r.stderr
    assert sorted(p.name for p in other.iterdir()) == ["keep.txt"]
