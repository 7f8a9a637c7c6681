"""Search budgets: time, graph counts, patience, shares."""
from __future__ import annotations

import pytest

from graphopt.search.budget import (EXPLORED_PER_SECOND, SAFETY_FACTOR, SAFETY_SLACK_S,
                                    Budget)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_time_limit() -> None:
    c = Clock()
    b = Budget(seconds=2.0, max_graphs=None, clock=c).start()
    assert b.exhausted() is None and b.remaining == 2.0
    c.t += 1.5
    assert b.elapsed == pytest.approx(1.5) and b.exhausted() is None
    c.t += 0.5
    assert b.exhausted() == "time" and b.remaining == 0.0


def test_graph_limits() -> None:
    b = Budget(seconds=None, max_graphs=3, max_explored=10).start()
    assert b.remaining == float("inf")
    b.expanded = 3
    assert b.exhausted() == "graphs"
    b.expanded, b.explored = 0, 10
    assert b.exhausted() == "explored"


def test_share_splits_what_is_left_and_charge_counts_it_back() -> None:
    c = Clock()
    b = Budget(seconds=10.0, max_graphs=100, patience=7, clock=c).start()
    c.t += 4.0
    b.expanded = 20
    child = b.share(0.5)
    assert child.seconds == pytest.approx(3.0) and child.max_graphs == 40
    assert child.patience == 7 and child.started is not None
    child.expanded, child.explored = 5, 9
    b.charge(child)
    assert (b.expanded, b.explored) == (25, 9)


@pytest.mark.parametrize("kw", [{"seconds": -1}, {"max_graphs": -2}, {"patience": -1}])
def test_negative_limits_are_refused(kw) -> None:
    with pytest.raises(ValueError):
        Budget(**kw)


def test_a_budget_in_seconds_counts_graphs_and_keeps_the_clock_as_a_safety_stop() -> None:
    c = Clock()
    b = Budget.of_seconds(2.0, max_graphs=50, patience=4)
    b.clock = c
    b.start()
    assert b.max_explored == 2 * EXPLORED_PER_SECOND and b.deterministic
    assert b.seconds == pytest.approx(SAFETY_FACTOR * 2.0 + SAFETY_SLACK_S)
    c.t += 2.5  # past the nominal seconds: the count decides, not the clock
    assert b.exhausted() is None
    child = b.share(0.25)  # counts split, the safety stop's time left whole
    assert child.max_explored == round(0.25 * 2 * EXPLORED_PER_SECOND)
    assert child.seconds == pytest.approx(SAFETY_FACTOR * 2.0 + SAFETY_SLACK_S - 2.5) and child.safety_clock
    b.explored = b.max_explored
    assert b.exhausted() == "explored"
    b.explored = 0
    c.t += SAFETY_FACTOR * 2.0 + SAFETY_SLACK_S
    assert b.exhausted() == "time"
    assert Budget.of_seconds(0.001).max_explored == 1
    assert not Budget(seconds=1.0, max_graphs=None).deterministic
    with pytest.raises(ValueError):
        Budget.of_seconds(-1.0)
