from __future__ import annotations

import pytest

from graphopt.ops.symbolic import Axiom, all_axioms, check_axiom, ite


def test_ops_declare_the_axioms() -> None:
    assert {a.name for a in all_axioms()} >= {"relu_def", "exp_pos"}


@pytest.mark.parametrize("ax", all_axioms(), ids=lambda a: a.name)
def test_axiom_holds_concretely(ax: Axiom) -> None:
    assert check_axiom(ax) is None


def test_wrong_axiom_is_caught() -> None:
    bad = Axiom("relu_wrong", "relu", 1, lambda f, x: f(x), lambda f, x: ite(x > 0, x, -x))
    assert check_axiom(bad) is not None
