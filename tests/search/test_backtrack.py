"""TASO's backtracking search: relaxation, dedup, cycle check, budgets, windows.

The search's mechanics are tested with made-up cost functions and rules (they need not be
semantically valid here: the search trusts its rules; the pipeline's numeric check does not);
real rules and the real cost model are tested with numeric equivalence."""
from __future__ import annotations

import gc

import numpy as np
import pytest

from bench.taso_models import TINY, bert
from graphopt.cost.model import CostModel
from graphopt.ir.graph import Graph
from graphopt.ir.interp import run
from graphopt.ir.node import input_node, op as build
from graphopt.ir.types import DType, TensorType
from graphopt.ir.verify import verify
from graphopt.passes.merge_parallel import RULES as MERGE_RULES
from graphopt.pipeline import search_rules
from graphopt.rewrite.pattern import op
from graphopt.rewrite.rule import rule
from graphopt.search.backtrack import backtrack
from graphopt.search.budget import Budget
from graphopt.search.windows import partition, search

WEIGHT = {"exp": 1.0, "tanh": 1.03, "abs": 0.5, "relu": 1.0, "neg": 0.1, "add": 1.0,
          "sigmoid": 1.0}


def op_cost(g: Graph) -> float:
    return sum(WEIGHT.get(n.op, 0.0) for n in g.nodes)


def _x(*shape: int):
    return input_node("x", TensorType(shape, DType.f32))


def _unary(src: str, dst: str):
    return rule(f"{src}->{dst}", lambda a: getattr(op, src)(a), lambda m: build(dst, m["a"]))


def _feeds(g: Graph, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {n.attrs["name"]: rng.standard_normal(n.out_types[0].shape).astype(np.float32)
            for n in g.inputs}


def _same(a: Graph, b: Graph) -> float:
    f = _feeds(a)
    return max(float(np.abs(x - y).max()) for x, y in zip(run(a, **f), run(b, **f)))


def test_alpha_lets_a_worse_step_lead_to_a_better_graph() -> None:
    x = _x(4)
    g = Graph([x], [build("exp", x.out)])
    rules = [_unary("exp", "tanh"), _unary("tanh", "abs")]
    strict = backtrack(g, rules, op_cost, alpha=1.0)
    assert strict.graph is g and strict.rejected["cost"] == 1
    relaxed = backtrack(g, rules, op_cost, alpha=1.05)
    assert [n.op for n in relaxed.graph.nodes] == ["input", "abs"]
    assert relaxed.applied == {"exp->tanh": 1, "tanh->abs": 1}
    assert relaxed.cost == 0.5 and relaxed.initial_cost == 1.0 and relaxed.speedup == 0.5


def test_graphs_seen_before_are_not_searched_again() -> None:
    x, y = _x(4), input_node("y", TensorType((4,), DType.f32))
    g = Graph([x, y], [build("add", x.out, y.out)])
    swap = rule("swap", lambda a, b: op.add(a, b), lambda m: build("add", m["b"], m["a"]))
    r = backtrack(g, [swap], op_cost, alpha=1.05)
    # add(x, y) <-> add(y, x): two graphs, then only duplicates
    assert r.stopped == "exhausted" and r.explored == 2 and r.rejected["duplicate"] >= 1


def test_only_real_duplicates_are_dropped_when_candidates_are_collected() -> None:
    """exp <-> tanh at each of k positions of a chain: 2**k graphs within alpha, each explored
    once; exp -> sigmoid: graphs over alpha, dropped and collected. Every other arrival is a
    real duplicate, also when the cost function holds no node and rejected graphs are collected
    between candidates (their nodes' ids are then free for new nodes: dedup keys made of ids
    must not outlive them)."""
    k = 4
    x = _x(4)
    v = x.out
    for _ in range(k):
        v = build("exp", v)
    g = Graph([x], [v])
    weight = {"exp": 1.0, "tanh": 1.01, "sigmoid": 3.0}
    costed: list[str] = []

    def collecting_cost(h: Graph) -> float:
        gc.collect(0)
        costed.append(h.fingerprint())
        return sum(weight.get(n.op, 0.0) for n in h.nodes)

    rules = [_unary("exp", "tanh"), _unary("tanh", "exp"), _unary("exp", "sigmoid")]
    r = backtrack(g, rules, collecting_cost, budget=Budget(seconds=None, max_graphs=None))
    over_alpha = k * 2 ** (k - 1)  # one exp of an exp/tanh graph made sigmoid: each once
    assert r.stopped == "exhausted" and r.expanded == 2 ** k
    assert r.explored == len(costed) == len(set(costed)) == 2 ** k + over_alpha
    # each exp/tanh graph's k flips arrive; all but the 2**k - 1 new graphs are duplicates
    assert r.rejected == {"duplicate": k * 2 ** k - (2 ** k - 1), "cost": over_alpha}


def test_a_rewrite_reading_its_own_output_is_a_cycle() -> None:
    x = _x(4)
    a = build("relu", x.out)
    g = Graph([x], [build("exp", a)])
    # roots relu(u) -> a and exp(v) -> exp(a): replacing a by neg(neg(a)) reads a itself
    cyc = rule("cyc", lambda u, v: (op.relu(u), op.exp(v)),
               lambda m: [build("neg", build("neg", m["v"])), m.roots[1]])
    r = backtrack(g, [cyc], op_cost, alpha=2.0)
    assert r.rejected == {"cycle": 1} and r.graph is g


def test_graph_budget_stops_the_search() -> None:
    x = _x(4)
    g = Graph([x], [build("exp", build("exp", build("exp", x.out)))])
    r = backtrack(g, [_unary("exp", "abs")], op_cost, budget=Budget(seconds=None, max_graphs=1))
    assert r.stopped == "graphs" and r.expanded == 1
    assert r.explored == 4  # the start graph and its three one-rewrite neighbours


def test_patience_stops_a_plateau() -> None:
    x = _x(4)
    g = Graph([x], [build("relu", build("relu", build("relu", build("relu", x.out))))])
    flip = [_unary("relu", "sigmoid"), _unary("sigmoid", "relu")]  # equal costs forever
    r = backtrack(g, flip, op_cost, budget=Budget(seconds=None, max_graphs=None, patience=5))
    assert r.stopped == "patience" and r.expanded == 5 and r.graph is g


def test_merge_rules_on_tiny_bert_for_a_gpu() -> None:
    g = TINY["bert"]()
    m = CostModel("h100")
    r = search(g, MERGE_RULES, m, budget=Budget(seconds=30, max_graphs=200))
    verify(r.graph)
    assert r.applied.get("merge_matmul_shared_lhs", 0) >= 2  # q, k, v of each layer
    assert r.cost < r.initial_cost and r.cost == pytest.approx(m(r.graph))
    assert _same(g, r.graph) < 1e-4


def test_search_is_deterministic() -> None:
    g = TINY["nasrnn"]()
    m = CostModel("cpu")
    b = lambda: Budget(seconds=None, max_graphs=15)  # noqa: E731
    r1 = search(g, MERGE_RULES, m, budget=b())
    r2 = search(g, MERGE_RULES, m, budget=b())
    assert r1.graph.fingerprint() == r2.graph.fingerprint() and r1.applied == r2.applied
    assert r1.cost < r1.initial_cost and _same(g, r1.graph) < 1e-4


def test_partition_cuts_where_few_values_cross() -> None:
    g = bert(seq=4, hidden=8, heads=2, layers=8)
    ops = [n for n in g.nodes if n.op not in ("input", "constant")]
    parts = partition(g, 30)
    assert sum(len(p) for p in parts) == len(ops) and [x for p in parts for x in p] == ops
    assert all(15 <= len(p) <= 50 for p in parts)
    assert partition(g, 1000) == [ops]


def test_windows_reuse_equal_layers_and_keep_results_exact() -> None:
    g = bert(seq=4, hidden=8, heads=2, layers=8)
    m = CostModel("h100")
    whole = search(g, MERGE_RULES, m, window=10_000,
                   budget=Budget(seconds=60, max_graphs=400))
    win = search(g, MERGE_RULES, m, window=30, rounds=1,
                 budget=Budget(seconds=60, max_graphs=400))
    assert win.windows >= 2 and win.reused_windows >= 1
    verify(win.graph)
    assert _same(g, win.graph) < 1e-4
    assert win.cost < win.initial_cost
    assert win.cost == pytest.approx(whole.cost, rel=0.05)


def test_search_rules_include_the_hand_written_ones() -> None:
    names = {r.name for r in search_rules()}
    assert {"merge_matmul_shared_lhs", "merge_conv_shared_input"} <= names


def test_incremental_multi_root_matching_equals_a_fresh_match() -> None:
    from graphopt.rewrite.index import Matcher
    from graphopt.search.backtrack import rewrite_once

    g = TINY["nasrnn"]()
    rules = list(MERGE_RULES)
    fresh = Matcher(rules)
    inc = Matcher(rules)
    kept: list = []
    ms = list(inc.matches(g, None, kept))
    pos = {id(n): i for i, n in enumerate(g.nodes)}
    r, m = next((r, m) for r, m in ms if r.name == "merge_matmul_shared_lhs")
    child = rewrite_once(g, r, m, pos)
    assert isinstance(child, Graph)

    def keyset(pairs):
        return {(r.name, frozenset((id(v.node), v.index) for v in m.roots)) for r, m in pairs
                if len(r.lhs) > 1}

    assert keyset(inc.matches(child, kept[0])) == keyset(fresh.matches(child))
    assert keyset(fresh.matches(child))  # there is something to compare
    # and the same as the rewrite driver's plain matcher finds
    from graphopt.rewrite.driver import matches as driver_matches

    plain = {(r.name, frozenset((id(v.node), v.index) for v in m.roots))
             for r in rules if len(r.lhs) > 1 for m in driver_matches(child, r)}
    assert keyset(fresh.matches(child)) == plain
