"""Wrong spellings planted beside the right ones (tests/passes/data/planted_spellings.rules):
scale after softmax, mask subtracted, V transposed, softmax over the queries, an upper triangle
taken for causal, wrong epsilon, RMSNorm without the mean, a GELU constant off, a GELU half that
is a quarter, SiLU of another operand, rotary halves swapped. The verifier must refute each one,
and the fusion pass it imitates must not rewrite its lhs into that rhs."""
from __future__ import annotations

from pathlib import Path

import pytest

from graphopt.replay import replay
from graphopt.subst.rulefile import load_file
from graphopt.subst.verify import verify_rule

PLANTED = load_file(Path(__file__).parent / "data" / "planted_spellings.rules")


def test_at_least_ten_are_planted() -> None:
    assert len(PLANTED) >= 10
    assert len({r.pass_name for r in PLANTED}) >= 5  # across the fusion passes


@pytest.mark.parametrize("rule", PLANTED, ids=[r.name for r in PLANTED])
def test_verifier_refutes_it(rule) -> None:  # type: ignore[no-untyped-def]
    v = verify_rule(rule, timeout_ms=20000)
    assert not v.ok, f"{rule.name} was accepted ({v.method})"
    # refuted, not merely undecided: a counterexample or a failed float test
    assert v.stage == "numeric" or "counterexample" in v.reason, v.reason


@pytest.mark.parametrize("rule", PLANTED, ids=[r.name for r in PLANTED])
def test_pass_does_not_make_it(rule) -> None:  # type: ignore[no-untyped-def]
    assert replay(rule) is not None, f"{rule.pass_name} rewrote the wrong spelling {rule.name}"
