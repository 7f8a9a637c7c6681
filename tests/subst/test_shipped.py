"""Every shipped rule is re-proven (float test + z3) — `graphopt rules verify` in CI."""
from __future__ import annotations

import os

from graphopt.subst.cli import main
from graphopt.subst.rulefile import RULES_DIR, load_dir


def test_shipped_rules_load() -> None:
    rules = load_dir()
    assert len(rules) >= 743
    assert len({r.name for r in rules}) == len(rules)


def test_shipped_rules_all_proven(capsys) -> None:
    jobs = max(1, min(4, os.cpu_count() or 1))
    assert main(["rules", "verify", str(RULES_DIR), "--jobs", str(jobs)]) == 0
    out = capsys.readouterr().out
    assert "NOT PROVEN" not in out
