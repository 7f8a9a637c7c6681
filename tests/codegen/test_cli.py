"""``graphopt codegen MODEL --target a100 --dump DIR``."""
from __future__ import annotations

import json

from graphopt.cli import main
from graphopt.ir.graph import Graph
from graphopt.ir.node import op
from tests.codegen.helpers import inp


def _model(tmp_path) -> str:
    x, w, b = inp("x", (4, 8)), inp("w", (8, 16)), inp("b", (16,))
    y = op("softmax", op("relu", op("add", op("matmul", x.out, w.out), b.out)), axis=1)
    path = tmp_path / "m.ir"
    path.write_text(Graph([x, w, b], [y]).to_text())
    return str(path)


def test_codegen_dump(tmp_path, capsys) -> None:
    out = tmp_path / "kernels"
    assert main(["codegen", _model(tmp_path), "--target", "a100", "--dump", str(out)]) == 0
    files = sorted(out.glob("*.py"))
    assert [f.name.split("_")[0] for f in files] == ["matmul", "reduction"]
    assert all("@triton.jit" in f.read_text() for f in files)
    assert "wrote 2 kernel files" in capsys.readouterr().out


def test_codegen_json(tmp_path, capsys) -> None:
    assert main(["codegen", _model(tmp_path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [k["ops"] for k in d["kernels"]] == [["matmul", "add", "relu"], ["softmax"]]


def test_codegen_missing_file(tmp_path) -> None:
    assert main(["codegen", str(tmp_path / "nope.onnx")]) == 2
