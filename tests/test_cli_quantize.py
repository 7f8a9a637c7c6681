"""graphopt optimize --quantize: what it writes and prints, and its refusals (one line, exit
code 2 for bad input, 1 for a missed error budget, nothing written in either case)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from graphopt.cli import EXIT_MISMATCH, EXIT_OK, EXIT_USAGE, main

from .passes.quant_models import calibration_ids, embed_mlp, no_weights


@pytest.fixture()
def model_path(tmp_path: Path) -> Path:
    p = tmp_path / "m.onnx"
    onnx.save(embed_mlp(k=128, hidden=256), str(p))
    return p


def _calibration(tmp_path: Path) -> Path:
    p = tmp_path / "calib.npz"
    np.savez(p, ids=np.stack([b["ids"] for b in calibration_ids(seq=16)]))  # 4 batches stacked
    return p


def test_int8_writes_a_smaller_model_and_reports_layers(model_path: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    out, rep = tmp_path / "q.onnx", tmp_path / "r.json"
    code = main(["optimize", str(model_path), "-o", str(out), "--quantize", "int8-weight",
                 "--calibration", str(_calibration(tmp_path)), "--report", str(rep),
                 "--budget", "0"])
    assert code == EXIT_OK
    text = capsys.readouterr().out
    assert "quantization: int8-weight (4 batches from" in text and "fc1.weight" in text
    assert out.stat().st_size < model_path.stat().st_size / 2.5
    q = json.loads(rep.read_text())["quantization"]
    assert {r["name"] for r in q["layers"]} >= {"fc1.weight", "fc2.weight", "table"}
    assert q["check"][0]["sqnr_db"] >= 30


@pytest.mark.parametrize("args,needle", [
    (["--quantize", "int3"], "unknown quantization mode"),
    (["--quantize", "int8", "--method", "gptq"], "applies to mode int4"),
    (["--quantize", "int4", "--group-size", "100"], "power of two"),
    (["--method", "gptq"], "need --quantize"),
])
def test_bad_options_are_one_line_usage_errors(model_path: Path, tmp_path: Path, args: list[str],
                                               needle: str, capsys: pytest.CaptureFixture[str]
                                               ) -> None:
    out = tmp_path / "q.onnx"
    assert main(["optimize", str(model_path), "-o", str(out), *args]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not out.exists()


def test_nothing_to_quantize(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "n.onnx", tmp_path / "q.onnx"
    onnx.save(no_weights(), str(src))
    assert main(["optimize", str(src), "-o", str(out), "--quantize", "int8"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing to quantize" in err[0]
    assert not out.exists()


def test_calibration_file_that_does_not_match(model_path: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    bad, out = tmp_path / "bad.npz", tmp_path / "q.onnx"
    np.savez(bad, input_ids=np.zeros((2, 5), np.int64))
    code = main(["optimize", str(model_path), "-o", str(out), "--quantize", "int8",
                 "--calibration", str(bad)])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.npz" in err[0] and "ids" in err[0], err
    assert not out.exists()


def test_missed_budget_exits_1_and_writes_nothing(model_path: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "q.onnx"
    code = main(["optimize", str(model_path), "-o", str(out), "--quantize", "int4",
                 "--max-error", "200", "--budget", "0"])
    assert code == EXIT_MISMATCH
    assert "cannot be met" in capsys.readouterr().err
    assert not out.exists()
    code = main(["optimize", str(model_path), "-o", str(out), "--quantize", "int4",
                 "--max-error", "60", "--no-mixed-precision", "--budget", "0"])
    assert code == EXIT_MISMATCH
    err = capsys.readouterr().err
    assert "worst layers" in err and "60" in err
    assert not out.exists()


def test_explain_lists_every_layer_and_why(model_path: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    assert main(["explain", str(model_path), "--quantize", "int8"]) == EXIT_OK
    out = capsys.readouterr().out
    lines = {ln.split("[onnx:")[1].split(" ")[0]: ln for ln in out.splitlines()
             if "quantizable_layer" in ln}
    assert "rewritten by quantize.layer" in lines["embed"] and "embedding-int8" in lines["embed"]
    # the 128x256 linears are too small for the integer form to pay on cpu: each says so
    for name in ("fc1", "fc2"):
        assert "NOT rewritten" in lines[name] and "left float: cost model (cpu)" in lines[name]
    assert main(["explain", str(model_path), "--calibration", "x.npz"]) == EXIT_USAGE
