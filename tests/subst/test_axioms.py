from __future__ import annotations

import pytest

from graphopt.subst.axioms import AXIOMS, Axiom, check_axiom, ite


@pytest.mark.parametrize("ax", AXIOMS, ids=lambda a: a.name)
def test_axiom_holds_concretely(ax: Axiom) -> None:
    assert check_axiom(ax) is None


def test_wrong_axiom_is_caught() -> None:
    bad = Axiom("relu_wrong", "relu", 1, lambda f, x: f(x), lambda f, x: ite(x > 0, x, -x))
    assert check_axiom(bad) is not None
