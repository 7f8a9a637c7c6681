"""Search budgets: time, graph counts, patience, shares."""
from __future__ import annotations

import pytest

from graphopt.search.budget import Budget


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
