"""The conv family's search rules (passes/taso_family.py): each fires where it should, gives
numerically the same outputs, is refused with its reason where it must not fire, and is stated
in its rule file; the search uses them on the tiny TASO models and keeps their outputs."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bench.taso_models import TINY
from graphopt.ir.graph import Graph
from graphopt.ir.interp import run
from graphopt.ir.node import Value, constant, input_node, op
from graphopt.ir.types import DType, TensorType
from graphopt.ir.verify import verify
from graphopt.cost.model import CostModel
from graphopt.passes import RULES_DIR, merge_parallel, taso_family
from graphopt.pipeline import search_rules, search_rules_left_out
from graphopt.rewrite.driver import apply, matches
from graphopt.rewrite.match import MatchFail, match_roots
from graphopt.rewrite.rule import PatternRule
from graphopt.search.budget import Budget
from graphopt.search.stage import search_step
from graphopt.subst.rulefile import load_file

BY_NAME = {r.name: r for r in taso_family.RULES + merge_parallel.RULES}
rng = np.random.default_rng(0)
D1 = dict(dilations=(1, 1))


def _in(name: str, *shape: int) -> Any:
    return input_node(name, TensorType(shape, DType.f32))


def _c(*shape: int) -> Value:
    return constant(rng.standard_normal(shape).astype(np.float32))


def _feeds(g: Graph) -> dict[str, np.ndarray]:
    return {n.attrs["name"]: rng.standard_normal(n.out_types[0].shape).astype(np.float32)
            for n in g.inputs}


def _same_outputs(a: Graph, b: Graph) -> None:
    feeds = _feeds(a)
    for x, y in zip(run(a, **feeds), run(b, **feeds)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4)


def _rewrite_once(g: Graph, name: str) -> Graph:
    r = BY_NAME[name]
    ms = matches(g, r)
    assert len(ms) == 1, [str(m.roots) for m in ms]
    ng = apply(g, r, ms[0])
    assert isinstance(ng, Graph), ng
    verify(ng)
    _same_outputs(g, ng)
    return ng


def _refusal(g: Graph, name: str) -> str:
    """The reason the rule's check gives at its one structural match in ``g``."""
    r = BY_NAME[name]
    assert isinstance(r, PatternRule)
    got = [r.checked(m) for m in match_roots(r.lhs, g)]
    assert got and all(isinstance(f, MatchFail) for f in got), got
    assert not matches(g, r)
    return got[0].reason  # type: ignore[union-attr]


def _conv(x: Any, w: Value, stride: int = 1, pad: int = 0, group: int = 1, *more: Value) -> Any:
    return op("conv", x, w, *more, strides=(stride, stride), pads=(pad,) * 4, group=group, **D1)


# ---- merge_grouped_conv -------------------------------------------------------------------------

def test_merge_grouped_conv_two_depthwise_convs_of_different_sizes() -> None:
    a, b = _in("a", 1, 3, 7, 7), _in("b", 1, 3, 7, 7)
    g = Graph([a, b], [op("concat", _conv(a.out, _c(3, 1, 3, 3), 2, 1, 3),
                          _conv(b.out, _c(3, 1, 5, 5), 2, 2, 3), axis=1)])
    ng = _rewrite_once(g, "merge_grouped_conv")
    conv = next(n for n in ng.nodes if n.op == "conv")
    assert conv.attrs["group"] == 6 and conv.inputs[1].type.shape == (6, 1, 5, 5)
    assert conv.attrs["pads"] == (2, 2, 2, 2)


def test_merge_grouped_conv_shared_input_is_one_ungrouped_conv() -> None:
    x = _in("x", 1, 4, 6, 6)
    a = op("relu", op("conv", x.out, _c(5, 4, 1, 3), strides=(1, 1), pads=(0, 1, 0, 1),
                      group=1, **D1))
    b = op("relu", op("conv", x.out, _c(3, 4, 3, 1), strides=(1, 1), pads=(1, 0, 1, 0),
                      group=1, **D1))
    ng = _rewrite_once(Graph([x], [op("concat", a, b, axis=1)]), "merge_grouped_conv_relu")
    assert ng.op_counts()["conv"] == 1 and "concat" not in {
        n.op for n in ng.nodes if n.op == "concat" and n.out_types[0].shape[0] == 1}


def test_merge_grouped_conv_refusals() -> None:
    a, b = _in("a", 1, 4, 6, 6), _in("b", 1, 4, 6, 6)
    per_group = Graph([a, b], [op("concat", _conv(a.out, _c(4, 2, 1, 1), 1, 0, 2),
                                  _conv(b.out, _c(8, 2, 1, 1), 1, 0, 2), axis=1)])
    assert "output channels per group differ" in _refusal(per_group, "merge_grouped_conv")
    dilated = Graph([a, b], [op("concat", op("conv", a.out, _c(4, 4, 3, 3), strides=(1, 1),
                                             pads=(2, 2, 2, 2), group=1, dilations=(2, 2)),
                                _conv(b.out, _c(4, 4, 1, 1)), axis=1)])
    assert _refusal(dilated, "merge_grouped_conv") == "dilated convolution"
    # a 2x2 and a 1x1 kernel, both unpadded at stride 2: one output size, but no zero border
    # of the 1x1 kernel with the padding grown alike gives the 2x2 conv's windows
    off = Graph([a, b], [op("concat", _conv(a.out, _c(4, 4, 2, 2), 2, 0),
                            _conv(b.out, _c(4, 4, 1, 1), 2, 0), axis=1)])
    assert "not centred alike" in _refusal(off, "merge_grouped_conv")


# ---- merge_conv_sum -----------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [False, True])
def test_merge_conv_sum(bias: bool) -> None:
    a, b = _in("a", 1, 3, 6, 6), _in("b", 1, 2, 6, 6)
    ba, bb = ([_c(4)], [_c(4)]) if bias else ([], [])
    g = Graph([a, b], [op("add", _conv(a.out, _c(4, 3, 3, 3), 1, 1, 1, *ba),
                          _conv(b.out, _c(4, 2, 1, 1), 1, 0, 1, *bb))])
    ng = _rewrite_once(g, "merge_conv_bias_sum" if bias else "merge_conv_sum")
    assert ng.op_counts()["conv"] == 1


def test_merge_conv_sum_refuses_grouped_and_broadcast() -> None:
    a, b = _in("a", 1, 4, 6, 6), _in("b", 1, 4, 6, 6)
    grouped = Graph([a, b], [op("add", _conv(a.out, _c(4, 2, 1, 1), 1, 0, 2),
                                _conv(b.out, _c(4, 4, 1, 1)))])
    assert matches(grouped, BY_NAME["merge_conv_sum"]) == []  # group=1 is in the pattern
    c = _in("c", 1, 4, 1, 1)
    bcast = Graph([a, c], [op("add", _conv(a.out, _c(4, 4, 1, 1)), _conv(c.out, _c(4, 4, 1, 1)))])
    assert _refusal(bcast, "merge_conv_sum") == "the add broadcasts"


# ---- merge_separable_sum ------------------------------------------------------------------------

def test_merge_separable_sum() -> None:
    x = _in("x", 1, 4, 7, 7)
    r = op("relu", x.out)
    s = op("add", _conv(_conv(r, _c(4, 1, 3, 3), 1, 1, 4), _c(6, 4, 1, 1)),
           _conv(_conv(r, _c(8, 1, 5, 5), 1, 2, 4), _c(6, 8, 1, 1)))
    ng = _rewrite_once(Graph([x], [s]), "merge_separable_sum")
    convs = [n for n in ng.nodes if n.op == "conv"]
    assert len(convs) == 2 and convs[0].attrs["group"] == 4
    assert convs[0].inputs[1].type.shape == (12, 1, 5, 5)


def test_merge_separable_sum_refuses_other_group_counts() -> None:
    x = _in("x", 1, 4, 7, 7)
    s = op("add", _conv(_conv(x.out, _c(4, 1, 3, 3), 1, 1, 4), _c(6, 4, 1, 1)),
           _conv(_conv(x.out, _c(4, 2, 3, 3), 1, 1, 2), _c(6, 4, 1, 1)))
    assert "group counts" in _refusal(Graph([x], [s]), "merge_separable_sum")


# ---- conv_through_pool --------------------------------------------------------------------------

def _pool(x: Any, include_pad: bool) -> Any:
    return op("avg_pool", x, kernel=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1),
              ceil_mode=False, count_include_pad=include_pad)


@pytest.mark.parametrize("include_pad", [False, True])
def test_conv_through_avg_pool(include_pad: bool) -> None:
    x = _in("x", 1, 5, 6, 6)
    g = Graph([x], [_conv(_pool(x.out, include_pad), _c(3, 5, 1, 1))])
    ng = _rewrite_once(g, "conv_through_avg_pool")
    assert [n.op for n in ng.nodes if n.op in ("conv", "avg_pool")] == ["conv", "avg_pool"]


def test_conv_through_avg_pool_refusals() -> None:
    x = _in("x", 1, 5, 6, 6)
    g = Graph([x], [_conv(_pool(x.out, True), _c(3, 5, 1, 1), 1, 0, 1, _c(3))])
    assert "count_include_pad" in _refusal(g, "conv_bias_through_avg_pool")
    g = Graph([x], [_conv(_pool(x.out, False), _c(3, 5, 3, 3), 1, 1)])
    assert _refusal(g, "conv_through_avg_pool") == "not a 1x1 convolution"
    g = Graph([x], [_conv(_pool(x.out, False), _c(3, 5, 1, 1), 2)])
    assert "strided" in _refusal(g, "conv_through_avg_pool")


# ---- merge_parallel's activated conv merges ------------------------------------------------------

def test_merge_conv_shared_input_relu_is_one_step() -> None:
    x = _in("x", 1, 3, 6, 6)
    g = Graph([x], [op("relu", _conv(x.out, _c(4, 3, 3, 3), 1, 1)),
                    op("relu", _conv(x.out, _c(2, 3, 3, 3), 1, 1))])
    r = BY_NAME["merge_conv_shared_input_relu"]
    ms = matches(g, r)
    assert len(ms) == 2  # (a, b) and (b, a)
    ng = apply(g, r, ms[0])
    assert isinstance(ng, Graph)
    _same_outputs(g, ng)
    assert ng.op_counts() == {"concat": 1, "conv": 1, "relu": 1, "split": 1}


def test_merge_conv_shared_input_partial_relu() -> None:
    x = _in("x", 1, 3, 6, 6)
    plain = _conv(x.out, _c(2, 3, 1, 1))
    g = Graph([x], [op("relu", _conv(x.out, _c(4, 3, 1, 1))), _pool(plain, False)])
    r = BY_NAME["merge_conv_shared_input_partial_relu"]
    ms = matches(g, r)
    assert len(ms) == 1
    ng = apply(g, r, ms[0])
    assert isinstance(ng, Graph)
    verify(ng)
    _same_outputs(g, ng)
    assert ng.op_counts()["conv"] == 1 and ng.op_counts()["where"] == 1
    # the plain conv under the activation is the same conv: no merge with itself
    c = _conv(x.out, _c(4, 3, 1, 1))
    same = Graph([x], [op("relu", c), c])
    assert "the plain conv is the activated one" in _refusal(
        same, "merge_conv_shared_input_partial_relu")


# ---- merge_gates ---------------------------------------------------------------------------------

def _gate(act: str, x: Value, h: Value, nx: int, nh: int, width: int) -> Any:
    return op(act, op("add", op("matmul", x, _c(nx, width)), op("matmul", h, _c(nh, width))))


def test_merge_gates_then_more() -> None:
    x, h = _in("x", 1, 6), _in("h", 1, 5)
    gates = [_gate("sigmoid", x.out, h.out, 6, 5, w) for w in (4, 3, 2)]
    g = Graph([x, h], gates)
    r = BY_NAME["merge_gates_sigmoid"]
    ms = matches(g, r)
    assert len(ms) == 6  # each ordered pair of gates
    g2 = apply(g, r, ms[0])
    assert isinstance(g2, Graph)
    _same_outputs(g, g2)
    g3 = _rewrite_once(g2, "merge_gates_more_sigmoid")
    _same_outputs(g, g3)
    assert g3.op_counts()["matmul"] == 1 and g3.op_counts()["sigmoid"] == 1


def test_merge_gates_refusals() -> None:
    x, h = _in("x", 1, 6), _in("h", 1, 5)
    other = Graph([x, h], [_gate("tanh", x.out, h.out, 6, 5, 4),
                           _gate("relu", x.out, h.out, 6, 5, 4)])
    assert not any(matches(other, BY_NAME[f"merge_gates_{a}"]) for a in ("tanh", "relu"))
    hb = _in("hb", 2, 5)  # the state has two rows: the add broadcasts x's one
    bc = Graph([x, hb], [_gate("tanh", x.out, hb.out, 6, 5, 4),
                         _gate("tanh", x.out, hb.out, 6, 5, 2)])
    assert "differ outside the last dim" in _refusal(bc, "merge_gates_tanh")


def test_gate_merges_lower_the_tiny_nasrnn_cost() -> None:
    """Gate merges applied greedily (each step the cheapest) on the tiny NasRNN: cheaper on h100,
    same outputs (the backtracking search rarely takes them: see docs/taso_family.md)."""
    g = TINY["nasrnn"]()
    model = CostModel("h100")
    rules = [r for r in taso_family.RULES if r.source.endswith("merge_gates")]
    cur, cost = g, model(g)
    for _ in range(12):
        best = None
        for r in rules:
            for m in matches(cur, r):
                ng = apply(cur, r, m)
                if isinstance(ng, Graph) and (best is None or model(ng) < best[0]):
                    best = (model(ng), ng)
        if best is None or best[0] >= cost:
            break
        cost, cur = best
    assert cost < 0.8 * model(g)
    _same_outputs(g, cur)


# ---- statements and the search ------------------------------------------------------------------

def test_every_rule_is_stated_in_its_rule_file() -> None:
    for r in taso_family.RULES + merge_parallel.RULES:
        assert r.kind == "search" and r.pass_name == "search", r.name
        module = r.source.rsplit(".", 1)[-1]
        stated = {s.name for s in load_file(RULES_DIR / f"{module}.rules")}
        assert f"{module}.{r.name}" in stated, f"rule {r.name} has no text-IR statement"


def test_search_rules_include_the_taso_family() -> None:
    g = TINY["nasrnn"]()
    names = {r.name for r in search_rules(g)}
    assert {r.name for r in taso_family.RULES} <= names
    backtrack = {r.name for r in search_rules(g, "backtrack")}
    assert names - backtrack == set(taso_family.NOT_IN_BACKTRACKING) == {"merge_matmul_sum"}


def test_cpu_targets_leave_out_the_separable_merge_and_say_so() -> None:
    g = TINY["nasnet_a"]()
    cpu = {r.name for r in search_rules(g, "backtrack", "cpu")}
    h100 = {r.name for r in search_rules(g, "backtrack", "h100")}
    assert taso_family.SLOW_ON_CPU and h100 - cpu >= taso_family.SLOW_ON_CPU
    assert not cpu & taso_family.SLOW_ON_CPU
    why = search_rules_left_out(g, "backtrack", "cpu")
    assert set(taso_family.SLOW_ON_CPU) <= set(why)
    assert "merged grouped conv slower" in why[next(iter(taso_family.SLOW_ON_CPU))]
    assert not set(taso_family.SLOW_ON_CPU) & set(search_rules_left_out(g, "backtrack", "h100"))
    # a graph without convs is not told about conv rules
    assert not set(taso_family.SLOW_ON_CPU) & set(
        search_rules_left_out(TINY["nasrnn"](), "backtrack", "cpu"))


@pytest.mark.parametrize("model,expect", [
    ("nasnet_a", {"merge_separable_sum"}),
    ("inception_v3", {"conv_through_avg_pool", "merge_conv_shared_input_partial_relu"}),
    ("nasrnn", {"merge_gates_sigmoid"}),
])
def test_search_uses_the_rules_on_tiny_models(model: str, expect: set[str]) -> None:
    g = TINY[model]()
    out, rep = search_step(g, "h100", budget=Budget(seconds=None, max_graphs=100, patience=20),
                           rules=search_rules(g, "backtrack"))
    assert expect <= set(rep["rules_applied"]), rep["rules_applied"]
    assert rep["cost_after_us"] < rep["cost_before_us"]
    _same_outputs(g, out)
