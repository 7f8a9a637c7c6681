"""The search report's account of the rules that did not fire: refused (rule, reason, count),
tried but not cheaper, unmatched, and the generated rules missing ops of the graph."""
from __future__ import annotations

import numpy as np

from graphopt.cost.model import CostModel
from graphopt.ir.graph import Graph
from graphopt.ir.node import Value, constant, input_node, op, op_multi
from graphopt.ir.types import DType, TensorType
from graphopt.passes.split_heads import RULES as HEADS
from graphopt.rewrite.pattern import op as pat
from graphopt.rewrite.rule import rule
from graphopt.search.ruleset import graph_ops
from graphopt.search.stage import format_search, search_step
from graphopt.search.why import absent_ops, format_why_not
from graphopt.search.windows import search

rng = np.random.default_rng(0)

# exact, and never cheaper: more work (and kernels on a target without pointwise fusion)
DOUBLE_NEG = rule("double_neg", lambda x: pat.relu(x),
                  lambda m: op("relu", op("neg", op("neg", m["x"]))))
# refused by the search itself: hash-consing makes the inner relu the matched node, so the
# replacement reads the value it replaces (a cycle)
RELU_TWICE = rule("relu_twice", lambda x: pat.relu(x), lambda m: op("relu", op("relu", m["x"])))


def _c(*shape: int) -> Value:
    return constant(rng.standard_normal(shape).astype(np.float32))


def _block(layers: int = 1) -> Graph:
    """QKV projections split into heads, attention, a ReLU MLP: ``layers`` times."""
    x = input_node("x", TensorType((1, 8, 16), DType.f32))
    h = x.out
    for _ in range(layers):
        y = op("add", op("matmul", h, _c(16, 48)), _c(48))
        q, k, v = (op("transpose", op("reshape", p, shape=(1, 8, 2, 8)), perm=(0, 2, 1, 3))
                   for p in op_multi("split", y, axis=2, sizes=(16, 16, 16)))
        a = op("attention", q, k, v, causal=False, scale=None)
        h = op("reshape", op("transpose", a, perm=(0, 2, 1, 3)), shape=(1, 8, 16))
        h = op("relu", op("matmul", h, _c(16, 16)))
    return Graph([x], [h])


def test_report_names_refused_and_not_cheaper_rules() -> None:
    g = _block()
    _, rep = search_step(g, "h100", budget=5, rules=list(HEADS),
                         extra_rules=[DOUBLE_NEG, RELU_TWICE])
    assert rep["rules_applied"] == {"heads_of_split3_matmul_bias": 1}
    w = rep["why_not"]
    refused = {(r["rule"], r["reason"]): r["count"] for r in w["refused"]}
    assert refused[("heads_of_split2_matmul_bias", "split into 3 pieces, not 2")] >= 1
    assert refused[("relu_twice", "cycle")] >= 1
    assert all(r["count"] >= 1 for r in w["refused"])
    tried = {r["rule"]: r["tried"] for r in w["not_cheaper"]}
    assert tried.get("double_neg", 0) >= 1
    delta = {r["rule"]: r["best_delta_us"] for r in w["not_cheaper"]}
    assert delta["double_neg"] is not None and delta["double_neg"] >= 0  # never cheaper
    assert "heads_of_split3_matmul_bias" not in tried  # applied: not listed as not cheaper
    # heads_of_matmul and its variants never match here (the projection is split first)
    assert 1 <= w["unmatched"] < len(HEADS) + 1
    text = format_search(rep)
    assert "rules applied: heads_of_split3_matmul_bias x1" in text
    assert "refused: " in text and "(split into 3 pieces, not 2)" in text
    assert "not cheaper: " in text and "double_neg x" in text


def test_absent_ops_lists_only_ops_the_graph_lacks() -> None:
    g = _block()
    a = absent_ops(g)
    have = graph_ops(g)
    assert a["directions"] > 0 and a["one_op_short"]
    assert not set(a["one_op_short"]) & have
    counts = list(a["one_op_short"].values())
    assert counts == sorted(counts, reverse=True)


def test_short_form_keeps_three_of_each() -> None:
    w = {"refused": [{"rule": f"r{i}", "reason": "no", "count": 5 - i} for i in range(5)],
         "not_cheaper": [], "unmatched": 0, "absent_ops": {}}
    assert format_why_not(w) == "refused: r0 (no) x5, r1 (no) x4, r2 (no) x3 +2 more"
    assert format_why_not({**w, "refused": []}) == ""
    nc = [{"rule": "a", "tried": 4, "best_delta_us": 0.5}, {"rule": "b", "tried": 1,
                                                           "best_delta_us": None}]
    assert format_why_not({**w, "refused": [], "not_cheaper": nc}) == \
        "not cheaper: a x4 (+0.50 us at best), b x1"


def test_windowed_search_adds_up_the_windows() -> None:
    g = _block(layers=3)
    model = CostModel("cpu")
    whole = search(g, list(HEADS) + [DOUBLE_NEG], model, window=10_000)
    cut = search(g, list(HEADS) + [DOUBLE_NEG], model, window=12)
    assert cut.windows > 1
    assert whole.tried.get("double_neg", 0) >= 1 and cut.tried.get("double_neg", 0) >= 1
    assert sum(cut.failed_checks.values()) >= 1
