"""The examples in examples/ run and say what they claim."""
from __future__ import annotations

import runpy
from pathlib import Path

import onnx

from graphopt import cli

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_shipped_example_model_optimizes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "o.onnx"
    assert cli.main(["optimize", str(EXAMPLES / "tiny_gpt2.onnx"), "-o", str(out),
                     "--budget", "1"]) == 0
    assert "check: ok" in capsys.readouterr().out
    assert len(onnx.load(str(out)).graph.node) < len(
        onnx.load(str(EXAMPLES / "tiny_gpt2.onnx")).graph.node)


def test_torch_api_example_runs(capsys) -> None:
    runpy.run_path(str(EXAMPLES / "optimize_torch_model.py"), run_name="__main__")
    text = capsys.readouterr().out
    assert "attention_flash.attention_fused: 2" in text
    diff = float(text.rsplit("max abs difference vs the original module:", 1)[1])
    assert diff < 1e-4
