"""Every shipped rule is re-proven (float test + z3) — `graphopt rules verify` in CI; the shipped
set is what its pruning manifest (`prune.json`) says."""
from __future__ import annotations

import os

from graphopt.subst.cli import main
from graphopt.subst.rulefile import RULES_DIR, load_dir, read_manifest


def test_shipped_rules_load() -> None:
    rules = load_dir()
    assert len(rules) >= 743
    assert len({r.name for r in rules}) == len(rules)


def test_shipped_rules_all_proven(capsys) -> None:
    jobs = max(1, min(4, os.cpu_count() or 1))
    assert main(["rules", "verify", str(RULES_DIR), "--jobs", str(jobs)]) == 0
    out = capsys.readouterr().out
    assert "NOT PROVEN" not in out


def test_shipped_set_matches_its_manifest() -> None:
    """The shipped files hold exactly what the pruning kept, at most half of what it read."""
    m = read_manifest()
    rules = load_dir()
    counts: dict[str, int] = {}
    for r in rules:
        counts[r.source] = counts.get(r.source, 0) + 1
    assert counts == {k: v["after"] for k, v in m["by_file"].items() if v["after"]}
    assert len(rules) == m["kept"] and 2 * m["kept"] <= m["before"]
    assert set(m["keep"]) <= {r.name for r in rules}
