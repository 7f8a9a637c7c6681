"""ilp.py: the integer program equals the brute-force optimum on small random e-graphs (with
cycles and savings), respects acyclicity, follows savings, keeps a warm start and says why
there is no answer."""
from __future__ import annotations

import logging
import random
from types import SimpleNamespace

import numpy as np
import pytest

from graphopt.search.egraph import ilp as ilp_mod
from graphopt.search.egraph.extract import ExtractionError, dag_cost, flatten, greedy
from graphopt.search.egraph.ilp import cyclic_parts, ilp, solve
from graphopt.search.egraph.view import EGraphView, ENode

from .views import back_edge_view, merge_view, random_cases, random_view, shared_roots_view


@pytest.mark.parametrize("savings", [False, True])
@pytest.mark.parametrize("max_cycles", [0, 64])
def test_ilp_equals_brute_force(savings: bool, max_cycles: int) -> None:
    """max_cycles=0: order variables on every cyclic part; 64: a row per cycle."""
    for v, best in random_cases(11 + savings, 120, savings, solve):
        res = solve(v, max_cycles=max_cycles)
        assert res.optimal and res.source == "ilp"
        assert dag_cost(v, res.choice) == pytest.approx(best, abs=1e-9)
        assert res.cost == pytest.approx(best, abs=1e-9)
        assert res.bound == pytest.approx(best, abs=1e-6)


def test_cheap_back_edge_is_not_taken() -> None:
    v = back_edge_view()
    assert cyclic_parts(flatten(v)) == [[1, 2]]
    res = solve(v)
    assert res.choice == {"x": 0, "a": 0, "b": 1, "r": 0} and res.cost == 5.0


def test_cycle_of_free_views_is_grounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """a, b, c are views of each other around a 3-cycle, each also computable for 5; d is any of
    them. Every acyclic answer pays 5 once, and the relaxation pays at least a third of it:
    without grounding it takes a third of each view and nothing else (the cost of r alone)."""
    real = ilp_mod.milp
    relaxed: list[float] = []

    def both(c: np.ndarray, *, integrality: np.ndarray, **kwargs: object) -> object:
        relaxed.append(real(c, integrality=np.zeros_like(integrality), **kwargs).fun)
        return real(c, integrality=integrality, **kwargs)

    monkeypatch.setattr(ilp_mod, "milp", both)
    v = EGraphView({
        "x": [ENode("in", (), 0.0)],
        "a": [ENode("view", ("b",), 0.0), ENode("real", ("x",), 5.0)],
        "b": [ENode("view", ("c",), 0.0), ENode("real", ("x",), 5.0)],
        "c": [ENode("view", ("a",), 0.0), ENode("real", ("x",), 5.0)],
        "d": [ENode("t", ("a",), 0.0), ENode("t", ("b",), 0.0), ENode("t", ("c",), 0.0)],
        "r": [ENode("out", ("d",), 1.0)],
    }, ["r"])
    res = solve(v)
    assert res.optimal and res.cost == 6.0
    assert relaxed[0] * 5.0 >= 1.0 + 5.0 / 3.0 - 1e-6  # the objective is scaled by the dearest e-node


def test_no_order_variables_without_cycles() -> None:
    v = merge_view()
    res = solve(v)
    assert res.n_vars == v.n_nodes + len(v.classes)  # x per e-node, z per class, no t
    assert res.cost == 6.0


def test_repeated_child_and_shared_roots_count_once() -> None:
    res = solve(shared_roots_view())
    assert res.cost == 13.0 and res.choice == {"x": 0, "s": 0, "r1": 0, "r2": 0}


def test_savings_change_the_answer() -> None:
    """b can be computed by a cheap e-node, or by a dearer one that fuses with its producer."""
    v = EGraphView({
        "x": [ENode("in", (), 0.0)],
        "p": [ENode("matmul", ("x",), 10.0)],
        "q": [ENode("matmul_t", ("x",), 10.5)],
        "b": [ENode("relu", ("p",), 2.0), ENode("gelu", ("q",), 1.0)],
    }, ["b"])
    assert solve(v).choice == {"x": 0, "q": 0, "b": 1}
    v.savings[("b", 0), ("p", 0)] = 2.0
    res = solve(v)
    assert res.choice == {"x": 0, "p": 0, "b": 0} and res.cost == 10.0
    assert dag_cost(v, greedy(v)) >= res.cost


def test_unreached_pair_cannot_buy_its_saving() -> None:
    """A saving bigger than its pair's cost must not make an unused pair worth choosing."""
    v = EGraphView({
        "x": [ENode("in", (), 0.0)],
        "p": [ENode("prod", ("x",), 1.0)],
        "u": [ENode("cons", ("p",), 1.0)],
        "r": [ENode("out", ("x",), 1.0), ENode("via", ("u",), 5.0)],
    }, ["r"])
    v.savings[("u", 0), ("p", 0)] = 5.0
    res = solve(v)
    assert res.choice == {"x": 0, "r": 0} and res.cost == 1.0


def test_root_without_computable_node_is_a_clear_error() -> None:
    v = EGraphView({"a": [ENode("f", ("b",), 1.0)], "b": [ENode("g", ("a",), 1.0)]}, ["a"])
    with pytest.raises(ExtractionError, match="e-class a"):
        ilp(v)


def _no_solution(*args: object, **kwargs: object) -> SimpleNamespace:
    return SimpleNamespace(x=None, status=1, message="Time limit reached. (HiGHS Status 13)",
                           mip_dual_bound=None)


def test_no_solution_returns_warm_or_none_with_reason(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    v = random_view(random.Random(3), n_classes=6)
    warm = greedy(v)
    monkeypatch.setattr(ilp_mod, "milp", _no_solution)
    res = solve(v, warm=warm)
    assert res.source == "warm" and res.choice == warm and res.cost == dag_cost(v, warm)
    with caplog.at_level(logging.INFO, logger="graphopt.search"):
        assert ilp(v) is None
        assert ilp(v, warm=warm) is None
    assert "no choice (" in caplog.text and ": no feasible choice found (Time limit" in caplog.text
    assert "; kept the warm start" in caplog.text


def test_warm_start_does_not_change_the_optimum() -> None:
    for v, best in random_cases(5, 30, True, solve):
        res = solve(v, warm=greedy(v))
        assert res.source == "ilp" and res.cost == pytest.approx(best, abs=1e-9)


def test_dearer_answer_than_the_warm_start_keeps_the_warm_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """A solver stopped early with a poor incumbent (here: one maximising the cost)."""
    real = ilp_mod.milp

    def worst(c: np.ndarray, **kwargs: object) -> object:
        return real(-c, **kwargs)

    v = merge_view()
    warm = {"x": 0, "m": 0, "q": 1, "k": 1, "v": 1, "r": 0}
    monkeypatch.setattr(ilp_mod, "milp", worst)
    res = solve(v, warm=warm)
    assert res.source == "warm" and res.choice == warm and res.cost == 6.0 and not res.optimal
    assert "dearer than the warm start" in res.reason
    assert ilp(v, warm=warm) is None


def test_bad_warm_choice_is_an_error() -> None:
    v = EGraphView({"x": [ENode("in", (), 0.0)], "r": [ENode("f", ("x",), 1.0)]}, ["r"])
    with pytest.raises(ExtractionError, match="e-class x"):
        solve(v, warm={"r": 0})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_valid_and_not_below_ilp_on_larger_views(seed: int) -> None:
    """Hundreds of classes with many cycles: greedy's many moves and reorders still give an
    acyclic choice, never cheaper than the proved optimum."""
    v = random_view(random.Random(seed), n_classes=300, max_nodes=4, savings=True)
    res = solve(v, time_limit=20.0)
    assert res.optimal
    assert dag_cost(v, res.choice) == pytest.approx(res.cost)
    assert dag_cost(v, greedy(v)) >= res.cost - 1e-9
