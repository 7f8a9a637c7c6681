"""Every hand-written rule (passes/rules/*.rules) is proven (or, where it holds only in floating
point, tested in its dtypes) and replayed through its pass: the pass rewrites the rule's lhs into
exactly its rhs. These two checks are the unit tests of every rewrite."""
from __future__ import annotations

import pytest

from graphopt.passes import RULES_DIR
from graphopt.replay import replay
from graphopt.rewrite.rule import PASSLESS_KINDS
from graphopt.subst.rulefile import load_dir
from graphopt.subst.verify import verify_rule

RULES = load_dir(RULES_DIR)
PASS_RULES = [r for r in RULES if r.kind not in PASSLESS_KINDS]  # kv_cache rules name no pass


def test_rule_files_load_and_name_their_pass() -> None:
    assert RULES, f"no hand-written rules under {RULES_DIR}"
    names = [r.name for r in RULES]
    assert len(names) == len(set(names)), "rule names must be unique"
    for r in RULES:
        assert r.kind in ("fusion", "canonical", "cleanup", "search", "lowering",
                          "kv_cache", "tensor_parallel", "tensor_parallel_plan"), r.name
        assert bool(r.pass_name) == (r.kind not in PASSLESS_KINDS), \
            f"rule {r.name} of kind {r.kind} names {r.pass_name or 'no'} pass"
        assert r.get("doc"), f"rule {r.name} has no doc line"
        if r.float_only:
            assert r.get("why"), f"float-only rule {r.name} does not say why it has no proof"


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_rule_is_verified(rule) -> None:  # type: ignore[no-untyped-def]
    v = verify_rule(rule, timeout_ms=20000)
    assert v.ok, f"{rule.name}: {v.stage}: {v.reason}"


@pytest.mark.parametrize("rule", PASS_RULES, ids=[r.name for r in PASS_RULES])
def test_rule_replays_through_its_pass(rule) -> None:  # type: ignore[no-untyped-def]
    why = replay(rule)
    assert why is None, f"{rule.name}: {why}"
