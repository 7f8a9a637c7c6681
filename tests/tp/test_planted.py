"""Wrong sharding identities (tests/tp/data/planted_sharding.rules): blocks gathered in the wrong
order, partial sums not added, blocks paired across ranks, a norm over the split axis computed per
block, GQA ranks reading the other group's kv head, a vocabulary-parallel lookup that does not
zero other ranks' ids. The verifier refutes each; the pass does not make any of them."""
from __future__ import annotations

from pathlib import Path

import pytest

from graphopt.replay import replay
from graphopt.subst.rulefile import load_file
from graphopt.subst.verify import verify_rule

PLANTED = load_file(Path(__file__).parent / "data" / "planted_sharding.rules")


def test_six_are_planted() -> None:
    assert len(PLANTED) == 6


@pytest.mark.parametrize("rule", PLANTED, ids=[r.name for r in PLANTED])
def test_verifier_refutes_it(rule) -> None:  # type: ignore[no-untyped-def]
    v = verify_rule(rule, timeout_ms=20000)
    assert not v.ok, f"{rule.name} was accepted ({v.method})"
    assert v.stage == "numeric" or "counterexample" in v.reason, v.reason


@pytest.mark.parametrize("rule", PLANTED, ids=[r.name for r in PLANTED])
def test_pass_does_not_make_it(rule) -> None:  # type: ignore[no-untyped-def]
    assert replay(rule) is not None, f"the pass rewrote {rule.name}"
