"""extract.py: DAG cost, the greedy extractor and pruning, against brute force on small random
e-graphs and on hand-made cases (sharing, cycles, savings, an uncomputable root)."""
from __future__ import annotations

import pytest

from graphopt.search.egraph.extract import ExtractionError, dag_cost, greedy, prune, pruned
from graphopt.search.egraph.view import EGraphView, ENode

from .views import back_edge_view, brute_force, merge_view, random_cases, shared_roots_view


def diamond() -> EGraphView:
    """r = add(a, b), a = f(s), b = g(s), s = h(x): s is shared."""
    return EGraphView({
        "x": [ENode("in", (), 0.0)],
        "s": [ENode("h", ("x",), 10.0)],
        "a": [ENode("f", ("s",), 1.0)],
        "b": [ENode("g", ("s",), 2.0)],
        "r": [ENode("add", ("a", "b"), 3.0)],
    }, ["r"])


def test_shared_child_counted_once() -> None:
    v = diamond()
    assert dag_cost(v, {"x": 0, "s": 0, "a": 0, "b": 0, "r": 0}) == 16.0


def test_unreached_classes_do_not_count() -> None:
    v = diamond()
    v.classes["dead"] = [ENode("big", ("x",), 100.0)]
    assert dag_cost(v, {"x": 0, "s": 0, "a": 0, "b": 0, "r": 0, "dead": 0}) == 16.0


def test_unchosen_reached_class_is_an_error() -> None:
    with pytest.raises(ExtractionError, match="e-class s"):
        dag_cost(diamond(), {"x": 0, "a": 0, "b": 0, "r": 0})


def test_cyclic_choice_is_an_error() -> None:
    v = EGraphView({
        "x": [ENode("in", (), 0.0)],
        "a": [ENode("f", ("x",), 5.0), ENode("g", ("b",), 1.0)],
        "b": [ENode("h", ("a",), 1.0)],
        "r": [ENode("out", ("b",), 0.0)],
    }, ["r"])
    with pytest.raises(ExtractionError, match="cycle"):
        dag_cost(v, {"x": 0, "a": 1, "b": 0, "r": 0})
    assert dag_cost(v, {"x": 0, "a": 0, "b": 0, "r": 0}) == 6.0


def test_savings_of_chosen_pairs_are_subtracted() -> None:
    v = diamond()
    v.savings[("a", 0), ("s", 0)] = 4.0
    assert dag_cost(v, {"x": 0, "s": 0, "a": 0, "b": 0, "r": 0}) == 12.0


def test_bad_choice_and_view_entries_name_the_class() -> None:
    with pytest.raises(ExtractionError, match="e-class zz"):
        dag_cost(diamond(), {"zz": 0})
    with pytest.raises(ExtractionError, match="has 1"):
        dag_cost(diamond(), {"x": 0, "s": 3})
    v = diamond()
    v.classes["a"].append(ENode("bad", ("nope",), 1.0))
    with pytest.raises(ExtractionError, match="'nope'"):
        greedy(v)


def test_unpriced_node_and_negative_saving_are_errors() -> None:
    v = diamond()
    v.classes["a"].append(ENode("unpriced", ("x",), float("inf")))
    with pytest.raises(ExtractionError, match="e-node 1 of e-class a: unpriced has cost inf"):
        greedy(v)
    v = diamond()
    v.savings[("a", 0), ("s", 0)] = -1.0
    with pytest.raises(ExtractionError, match="saving -1.0"):
        dag_cost(v, {"x": 0, "s": 0, "a": 0, "b": 0, "r": 0})


def test_repeated_child_and_shared_roots_count_once() -> None:
    v = shared_roots_view()
    assert dag_cost(v, greedy(v)) == 13.0


def test_cycle_with_cheap_back_edge_is_never_chosen() -> None:
    v = back_edge_view()
    c = greedy(v)
    assert dag_cost(v, c) == brute_force(v) == 5.0  # b = mid, a = cheap(b)


def test_shared_merge_beats_separate_nodes() -> None:
    v = merge_view()
    assert dag_cost(v, greedy(v)) == brute_force(v) == 6.0


def test_local_moves_fix_the_first_pass() -> None:
    """The first pass prices b's shared input at half (two readers), but only b reads it in the
    answer; a move to b's own e-node is found by the DAG cost."""
    v = EGraphView({
        "x": [ENode("in", (), 0.0)],
        "s": [ENode("shared", ("x",), 10.0)],
        "a": [ENode("a1", ("x",), 1.0)],
        "t": [ENode("other", ("s",), 0.0), ENode("t2", ("x",), 1.0)],
        "b": [ENode("b1", ("s",), 0.0), ENode("b2", ("x",), 6.0)],
        "r": [ENode("out", ("a", "b"), 0.0)],
    }, ["r"])
    c = greedy(v)
    assert dag_cost(v, c) == brute_force(v) == 7.0
    assert c["b"] == 1


@pytest.mark.parametrize("savings", [False, True])
def test_greedy_is_valid_and_never_below_the_optimum(savings: bool) -> None:
    gaps = []
    for v, best in random_cases(1 + savings, 150, savings, greedy):
        cost = dag_cost(v, greedy(v))  # raises on an invalid choice
        assert cost >= best - 1e-9
        gaps.append(cost - best)
    assert sum(g < 1e-9 for g in gaps) > 0.8 * len(gaps)


def test_root_without_computable_node_is_a_clear_error() -> None:
    v = EGraphView({
        "x": [ENode("in", (), 0.0)],
        "a": [ENode("f", ("b",), 1.0)],
        "b": [ENode("g", ("a",), 1.0)],
        "r": [ENode("out", ("a",), 0.0)],
    }, ["r"])
    with pytest.raises(ExtractionError, match="e-class r.*root e-class has no e-node") as e:
        greedy(v)
    assert "reads a" in str(e.value)
    with pytest.raises(ExtractionError, match="e-class r"):
        prune(v)


def test_prune_drops_what_no_optimum_uses() -> None:
    v = EGraphView({
        "x": [ENode("in", (), 0.0)],
        "a": [ENode("self", ("a",), 0.0), ENode("f", ("x",), 2.0), ENode("g", ("x", "a2"), 3.0),
              ENode("via_dead", ("u",), 0.0)],
        "a2": [ENode("h", ("x",), 1.0)],
        "u": [ENode("loop", ("u2",), 0.0)],
        "u2": [ENode("loop", ("u",), 0.0)],
        "dead": [ENode("k", ("x",), 1.0)],
        "r": [ENode("out", ("a",), 0.0)],
    }, ["r"])
    small, keep = pruned(v)
    assert set(small.classes) == {"x", "a", "r"}
    assert keep["a"] == [1]  # self-loop, dominated (2 <= 3, {x} within {x, a2}), unresolvable
    assert [n.op for n in small.classes["a"]] == ["f"]


def test_prune_keeps_the_optimum_and_nodes_with_savings() -> None:
    for v, best in random_cases(7, 60, False, prune) + random_cases(8, 60, True, prune):
        small, keep = pruned(v)
        assert brute_force(small) == pytest.approx(best)
        assert small.n_nodes <= v.n_nodes
        for (a, b), s in small.savings.items():  # the savings follow their nodes
            assert v.savings[(a[0], keep[a[0]][a[1]]), (b[0], keep[b[0]][b[1]])] == s
