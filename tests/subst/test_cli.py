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


def test_verify_reproves_z3_timeouts_with_more_time(tmp_path: Path, capsys,
                                                   monkeypatch) -> None:
    """A wall-clock z3 timeout (a loaded machine) is retried once with 4x the time; a rule
    that is really wrong stays NOT PROVEN."""
    from graphopt.subst import verify
    from graphopt.subst.verify import Verdict

    real = verify.verify_text
    seen: list[int] = []

    def busy_machine(args):  # the first, parallel-pass attempt at each rule runs out of time
        seen.append(args[3])
        if args[3] == 5000:
            return Verdict("t-relu", False, "z3", reason="z3 returned unknown (timeout)")
        return real(args)

    monkeypatch.setattr(verify, "verify_text", busy_machine)
    d = _dir(tmp_path, RELU_TWICE)
    assert main(["rules", "verify", str(d)]) == 0
    assert seen == [5000, 20000]
    assert "re-proved 1 rule(s) after a z3 timeout" in capsys.readouterr().out
    (tmp_path / "wrong").mkdir()
    d2 = _dir(tmp_path / "wrong", rule_text("relu_through_add"))
    assert main(["rules", "verify", str(d2)]) == 1


def test_generate_small(tmp_path: Path, capsys) -> None:
    out = tmp_path / "gen"
    assert main(["rules", "generate", "--max-ops", "2", "--scenarios", "matmul", "--ops",
                 "transpose", "relu", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "kept:" in text and (out / "matmul.rules").exists()
