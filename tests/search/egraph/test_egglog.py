"""The egglog side of the e-graph search: encode/decode round trips, rule translation with shape
conditions, the merge rule, the e-node cap, and the search mode in ``search_step``."""
from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("egglog")

from graphopt.cost.model import CostModel  # noqa: E402
from graphopt.errors import GraphOptError  # noqa: E402
from graphopt.ir.graph import Graph  # noqa: E402
from graphopt.ir.interp import run  # noqa: E402
from graphopt.ir.node import Node, constant, input_node, op  # noqa: E402
from graphopt.ir.types import DType, TensorType, dim_product  # noqa: E402
from graphopt.search.egraph.decode import decode  # noqa: E402
from graphopt.search.egraph.encode import encode  # noqa: E402
from graphopt.search.egraph.rules import Translation, translate, translate_rules  # noqa: E402
from graphopt.search.egraph.saturate import Saturated, saturate  # noqa: E402
from graphopt.search.egraph.view import Choice  # noqa: E402

MODEL = CostModel("h100")


def _price(n: Node) -> float:
    return MODEL.nodes_time([n], n.outputs)


def _original(sat: Saturated) -> Choice:
    """The input graph's e-nodes (and the root)."""
    ch: Choice = {}
    for c, i in sorted(sat.original):
        ch.setdefault(c, i)
    ch[sat.view.roots[0]] = 0
    return ch


def _same(a: Graph, b: Graph) -> bool:
    return [(n.op, n.out_types) for n in a.nodes] == [(n.op, n.out_types) for n in b.nodes]


@pytest.mark.parametrize("name", ["bert", "nasrnn", "resnext50", "squeezenet", "nasnet_a"])
def test_round_trip_tiny_taso(name: str) -> None:
    from bench.taso_models import TINY

    g = TINY[name]()
    enc = encode(g)
    sat = saturate(enc, Translation(), _price)
    assert sat.stats.stopped == "saturated"
    g2 = decode(_original(sat), sat, enc)
    assert _same(g, g2)
    assert g2.outputs == g.outputs  # hash-consing: the very same nodes


def test_symbolic_batch_round_trip() -> None:
    x = input_node("x", TensorType(("batch", 8), DType.f32))
    rows = dim_product(["batch", 2])  # graphopt's spelling of a symbolic product
    y = op("reshape", op("relu", x.out), shape=(rows, 4))
    g = Graph([x], [op("add", y, y)], ["y"])
    enc = encode(g)
    assert "batch" in enc.symbols.prime
    sat = saturate(enc, Translation(), _price)
    g2 = decode(_original(sat), sat, enc)
    assert _same(g, g2)
    assert g2.outputs[0].type.shape == (rows, 4)


def _three_matmuls() -> tuple[Graph, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    x = input_node("x", TensorType((4, 8), DType.f32))
    ws = [constant(rng.standard_normal((8, n)).astype(np.float32)) for n in (8, 8, 4)]
    g = Graph([x], [op("matmul", x.out, w) for w in ws], ["a", "b", "c"])
    return g, [rng.standard_normal((4, 8)).astype(np.float32)]


def _prefer_merged(sat: Saturated) -> Choice:
    """The original choice with every class that has an ``Out`` e-node taking it, and every
    new class reached taking its first e-node."""
    ch = _original(sat)
    for c, nodes in sat.view.classes.items():
        outs = [i for i, n in enumerate(nodes) if n.op == "Out"]
        if outs and c != sat.view.roots[0]:
            ch[c] = outs[0]
    for c, nodes in sat.view.classes.items():
        ch.setdefault(c, 0)
    return ch


def test_merge_rule_fires_and_is_equal() -> None:
    from graphopt.pipeline import search_rules

    g, args = _three_matmuls()
    merge = [r for r in search_rules(g) if r.name == "merge_matmul_shared_lhs"]
    enc = encode(g)
    tr = translate_rules(merge, enc.keys)
    assert [r.name for r in tr.rules] == ["merge_matmul_shared_lhs"]
    sat = saturate(enc, tr, _price)
    assert sat.stats.stopped == "saturated"  # the order condition keeps merging finite
    assert any(r == "merge_matmul_shared_lhs" for m in sat.made.values() for r, _ in m)
    g2 = decode(_prefer_merged(sat), sat, enc)
    assert "split" in g2.op_counts() and g2.op_counts()["matmul"] < 3
    for a, b in zip(run(g, *args), run(g2, *args)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _rule_graphs() -> tuple[Graph, Graph]:
    """add(x, y) -> matmul(x, y) over square [a, a] inputs (a = 5): typed only when square."""
    t = TensorType((5, 5), DType.f32)
    x, y = input_node("x", t), input_node("y", t)
    return (Graph([x, y], [op("add", x.out, y.out)], ["o0"]),
            Graph([x, y], [op("matmul", x.out, y.out)], ["o0"]))


@pytest.mark.parametrize("shape,applies", [((3, 3), True), ((2, 3), False)])
def test_ill_typed_rhs_is_not_unioned(shape: tuple[int, int], applies: bool) -> None:
    lhs, rhs = _rule_graphs()
    rule = translate(lhs, rhs, "square-only")
    t = TensorType(shape, DType.f32)
    x, y = input_node("x", t), input_node("y", t)
    g = Graph([x, y], [op("add", x.out, y.out)], ["o"])
    enc = encode(g)
    sat = saturate(enc, Translation([rule]), _price)
    ops = {n.op for ns in sat.view.classes.values() for n in ns}
    assert ("matmul_2" in ops) is applies


def test_node_cap_stops_saturation() -> None:
    from graphopt.pipeline import search_rules

    g, _ = _three_matmuls()
    enc = encode(g)
    tr = translate_rules(search_rules(g), enc.keys, 100)
    full = saturate(enc, tr, _price)
    sat = saturate(enc, tr, _price, node_limit=60)
    assert sat.stats.stopped == "node-limit"
    assert sat.stats.iterations < full.stats.iterations
    assert sat.stats.enodes < full.stats.enodes


def test_untranslatable_rules_are_listed() -> None:
    from graphopt.rewrite.rule import rule
    from graphopt.rewrite.pattern import op as pat

    r = rule("no_form", lambda x: pat.relu(x), lambda m: m["x"], None, source="t",
             kind="search", pass_name="search")
    tr = translate_rules([r], set())
    assert tr.skipped == {"no_form": "hand-written rule without an egglog form"}


def test_search_step_egraph_mode() -> None:
    from graphopt.search.stage import format_search, search_step

    g, args = _three_matmuls()
    out, rep = search_step(g, "h100", mode="egraph", budget=5)
    assert rep["search_mode"] == "egraph"
    assert rep["saturation"]["egraphs"] == 1
    assert rep["cost_after_us"] <= rep["cost_before_us"]
    text = format_search(rep)  # the text says what saturation did, not "graphs explored"
    assert f"equality saturation: {rep['saturation']['enodes']} e-nodes in " in text
    assert "graphs expanded" not in text
    for a, b in zip(run(g, *args), run(out, *args)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_rules_left_out_of_egglog_are_reported() -> None:
    from graphopt.search.stage import format_search, search_step

    g, _ = _three_matmuls()
    _, rep = search_step(g, "h100", mode="egraph", budget=5, egraph={"max_rules": 1})
    capped = rep["rejected"].get("not in egglog: over the rule cap", 0)
    assert capped > 0
    assert "rule directions left out of egglog" in format_search(rep)


def test_missing_egglog_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from graphopt.search.stage import search_step

    monkeypatch.setitem(sys.modules, "egglog", None)
    g, _ = _three_matmuls()
    with pytest.raises(GraphOptError, match=r"pip install 'graphopt\[egraph\]'"):
        search_step(g, "h100", mode="egraph")


def test_fusion_savings_of_an_epilogue() -> None:
    x = input_node("x", TensorType((64, 64), DType.f32))
    w = constant(np.ones((64, 64), np.float32))
    g = Graph([x], [op("relu", op("matmul", x.out, w))], ["y"])
    enc = encode(g)
    sat = saturate(enc, Translation(), _price,
                   pair_cost=lambda p, c: MODEL.nodes_time([p, c], c.outputs))
    pairs = {(sat.view.classes[a[0]][a[1]].op, sat.view.classes[b[0]][b[1]].op): s
             for (a, b), s in sat.view.savings.items()}
    assert set(pairs) == {("relu_1", "matmul_2")}
    # the pair costs what the model says the fused graph costs
    total = sum(n.cost for ns in sat.view.classes.values() for n in ns)
    assert total - pairs[("relu_1", "matmul_2")] == pytest.approx(MODEL(g))


def test_python_only_rule_is_seeded() -> None:
    """A hand-written rule without an egglog form is applied to the input graph in Python and
    its rewrites unioned into the e-graph."""
    from graphopt.rewrite.pattern import op as pat
    from graphopt.rewrite.rule import rule
    from graphopt.search.egraph.search import egraph_search

    r = rule("distribute", lambda x, a, b: pat.add(pat.matmul(x, a), pat.matmul(x, b)),
             lambda m: op("matmul", m["x"], op("add", m["a"], m["b"])), None, source="t",
             kind="search", pass_name="search")
    x = input_node("x", TensorType((64, 64), DType.f32))
    a, b = (input_node(k, TensorType((64, 64), DType.f32)) for k in "ab")
    g = Graph([x, a, b], [op("add", op("matmul", x.out, a.out), op("matmul", x.out, b.out))],
              ["y"])
    res = egraph_search(g, [r], MODEL, budget=5)
    assert res.applied == {"distribute": 1}
    assert res.graph.op_counts()["matmul"] == 1


def test_windows_of_a_larger_graph() -> None:
    from bench.taso_models import TINY
    from graphopt.pipeline import search_rules
    from graphopt.search.egraph.search import egraph_search

    g = TINY["nasrnn"]()
    rules = [r for r in search_rules(g, "egraph") if r.kind != "generated"]
    res = egraph_search(g, rules, MODEL, budget=6, window=40, refine=False)
    assert res.windows > 1
    assert res.cost <= res.initial_cost
    args = [np.random.default_rng(1).standard_normal(t.shape).astype(np.float32)
            for t in g.input_types]
    for a, b in zip(run(g, *args), run(res.graph, *args)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
