from __future__ import annotations

import json
from pathlib import Path

from graphopt.subst.cli import main
from tests.subst.planted import rule_text
from tests.subst.samples import RELU_TWICE



def _dir(tmp: Path, *texts: str) -> Path:
    d = tmp / "rules"
    d.mkdir()
    (d / "t.rules").write_text("\n".join(texts))
    return d


def test_list_show_verify(tmp_path: Path, capsys) -> None:
    d = _dir(tmp_path, RELU_TWICE)
    assert main(["rules", "list", str(d), "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert isinstance(items, list) and items[0]["name"] == "t-relu" and items[0]["lhs_ops"] == 2
    assert main(["rules", "show", "t-relu", "--dir", str(d)]) == 0
    assert "relu(%0)" in capsys.readouterr().out
    assert main(["rules", "show", "nope", "--dir", str(d)]) == 1
    assert main(["rules", "verify", str(d)]) == 0


def test_verify_fails_on_wrong_rule(tmp_path: Path, capsys) -> None:
    d = _dir(tmp_path, RELU_TWICE, rule_text("relu_through_add"))
    assert main(["rules", "verify", str(d)]) == 1
    assert "NOT PROVEN planted-relu_through_add" in capsys.readouterr().out


def test_generate_small(tmp_path: Path, capsys) -> None:
    out = tmp_path / "gen"
    assert main(["rules", "generate", "--max-ops", "2", "--scenarios", "matmul", "--ops",
                 "transpose", "relu", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "kept:" in text and (out / "matmul.rules").exists()
