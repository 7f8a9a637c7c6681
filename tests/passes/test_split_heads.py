"""Head-layout search rules: what they match and refuse, numeric equivalence, and the search
taking them on a transformer-shaped block where the cost model says they pay."""
from __future__ import annotations

import numpy as np
import pytest

from graphopt.check import check_graphs
from graphopt.ir.graph import Graph
from graphopt.ir.interp import run
from graphopt.ir.node import Value, constant, input_node, op, op_multi
from graphopt.ir.types import DType, TensorType
from graphopt.ir.verify import verify
from graphopt.passes import RULES_DIR
from graphopt.passes.split_heads import RULES
from graphopt.pipeline import search_rules
from graphopt.rewrite.driver import apply, matches
from graphopt.rewrite.index import Matcher
from graphopt.rewrite.match import Match
from graphopt.search.stage import search_step
from graphopt.subst.rulefile import load_file

BY_NAME = {r.name: r for r in RULES}
rng = np.random.default_rng(0)


def _c(*shape: int) -> Value:
    return constant(rng.standard_normal(shape).astype(np.float32))


def _heads(v: Value, b: int, s: int, h: int, d: int) -> Value:
    return op("transpose", op("reshape", v, shape=(b, s, h, d)), perm=(0, 2, 1, 3))


def _qkv_block(two_d: bool = False, heads: tuple[int, int, int] = (2, 2, 2), d: int = 4,
               s: int = 8, k: int = 16) -> Graph:
    """A merged QKV projection (+ bias) split into q, k, v heads and their attention, as the
    fusion step leaves BERT / GPT-2 (``two_d``: GPT-2's 2-D Gemm between reshapes)."""
    x = input_node("x", TensorType((1, s, k), DType.f32))
    n = sum(heads) * d
    if two_d:
        y = op("add", op("matmul", op("reshape", x.out, shape=(s, k)), _c(k, n)), _c(n))
        y = op("reshape", y, shape=(1, s, n))
    else:
        y = op("add", op("matmul", x.out, _c(k, n)), _c(n))
    q, kk, v = (_heads(p, 1, s, h, d) for p, h in zip(
        op_multi("split", y, axis=2, sizes=tuple(h * d for h in heads)), heads))
    a = op("attention", q, kk, v, causal=False, scale=None)
    return Graph([x], [op("reshape", op("transpose", a, perm=(0, 2, 1, 3)),
                          shape=(1, s, heads[0] * d))])


def _rewritten(g: Graph, name: str) -> Graph:
    ms = matches(g, BY_NAME[name])
    assert len(ms) == 1, [m for m in ms]
    assert isinstance(ms[0], Match)
    ng = apply(g, BY_NAME[name], ms[0])
    assert isinstance(ng, Graph), ng
    verify(ng)
    feeds = {"x": rng.standard_normal(g.inputs[0].out_types[0].shape).astype(np.float32)}
    for a, b in zip(run(g, **feeds), run(ng, **feeds)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    return ng


@pytest.mark.parametrize("two_d,name", [(False, "heads_of_split3_matmul_bias"),
                                        (True, "heads_of_split3_matmul_bias_reshaped")])
def test_projection_split_into_heads_becomes_a_batched_matmul(two_d: bool, name: str) -> None:
    ng = _rewritten(_qkv_block(two_d), name)
    mm = [n for n in ng.nodes if n.op == "matmul"]
    assert len(mm) == 1 and mm[0].out_types[0].shape == (1, 6, 8, 4)
    sp = next(n for n in ng.nodes if n.op == "split")
    assert sp.attrs["axis"] == 1 and sp.attrs["sizes"] == (2, 2, 2)
    assert not any(n.op == "transpose" and n.attrs["perm"] == (0, 2, 1, 3)
                   and n.inputs[0].node.op == "reshape" and n.out_types[0].shape[1] == 2
                   and n.inputs[0].node.inputs[0].node.op == "split" for n in ng.nodes)


def test_gqa_pieces_of_different_head_counts() -> None:
    ng = _rewritten(_qkv_block(heads=(4, 2, 2)), "heads_of_split3_matmul_bias")
    sp = next(n for n in ng.nodes if n.op == "split")
    assert sp.attrs["sizes"] == (4, 2, 2)


def test_refusals_name_the_reason() -> None:
    x = input_node("x", TensorType((1, 8, 16), DType.f32))
    y = op("matmul", x.out, _c(16, 24))
    # pieces of different head sizes (8 and 4)
    a, b = op_multi("split", y, axis=2, sizes=(16, 8))
    g = Graph([x], [_heads(a, 1, 8, 2, 8), _heads(b, 1, 8, 2, 4)])
    assert _refused(g, "heads_of_split2_matmul") == ["pieces differ in head size"]
    # a reshape that does not split the last axis into heads
    g2 = Graph([x], [op("transpose", op("reshape", y, shape=(1, 4, 2, 24)), perm=(0, 2, 1, 3))])
    assert _refused(g2, "heads_of_matmul") == [
        "reshape [1, 4, 2, 24] does not split the last dim of [1, 8, 24] into heads"]


def _refused(g: Graph, name: str) -> list[str]:
    """The reasons rule ``name``'s check gave at every place its pattern matched in ``g``."""
    mt = Matcher([BY_NAME[name]])
    assert list(mt.matches(g)) == []
    return [why for (_, why) in mt.failures]


def test_the_rule_file_states_exactly_these_rules() -> None:
    stated = load_file(RULES_DIR / "split_heads.rules")
    assert {(r.kind, r.pass_name) for r in stated} == {("search", "split_heads")}
    assert {r.name for r in stated} == {f"split_heads.{r.name}" for r in RULES}
    assert {(r.kind, r.pass_name) for r in RULES} == {("search", "search")}


@pytest.mark.parametrize("target", ["h100", "a100"])
def test_search_lays_out_heads_where_it_pays(target: str) -> None:
    g = _qkv_block()
    out, rep = search_step(g, target, budget=5, rules=search_rules(g))
    assert rep["rules_applied"].get("heads_of_split3_matmul_bias") == 1
    assert rep["cost_after_us"] < rep["cost_before_us"]
    assert rep["kernels_after"] < rep["kernels_before"]
    check_graphs(g, out)


def test_symbolic_batch_and_sequence() -> None:
    x = input_node("x", TensorType(("b", "s", 16), DType.f32))
    y = op("reshape", op("matmul", op("reshape", x.out, shape=("b*s", 16)), _c(16, 16)),
           shape=("b", "s", 16))
    g = Graph([x], [_heads(y, "b", "s", 2, 8)])  # type: ignore[arg-type]
    (m,) = matches(g, BY_NAME["heads_of_matmul_reshaped"])
    ng = apply(g, BY_NAME["heads_of_matmul_reshaped"], m)
    assert isinstance(ng, Graph)
    verify(ng)
    assert ng.outputs[0].type.shape == ("b", 2, "s", 8)
    xs = rng.standard_normal((3, 5, 16)).astype(np.float32)
    np.testing.assert_allclose(run(g, x=xs)[0], run(ng, x=xs)[0], rtol=1e-4, atol=1e-5)


def test_mean_taken_before_the_kv_heads_are_repeated() -> None:
    x = input_node("x", TensorType((1, 2, 8, 4), DType.f32))
    mean = op("reduce_mean", x.out, axes=(2,), keepdims=True)
    rep = op("expand", op("reshape", mean, shape=(1, 2, 1, 1, 4)), shape=(1, 2, 3, 1, 4))
    g = Graph([x], [op("reshape", rep, shape=(1, 6, 1, 4))])
    ms = matches(g, BY_NAME["mean_before_repeat"])
    assert len(ms) == 1 and isinstance(ms[0], Match)
    ng = apply(g, BY_NAME["mean_before_repeat"], ms[0])
    assert isinstance(ng, Graph)
    verify(ng)
    red = next(n for n in ng.nodes if n.op == "reduce_mean")
    assert red.inputs[0].node.op == "expand" and red.attrs["axes"] == (3,)
    xs = rng.standard_normal((1, 2, 8, 4)).astype(np.float32)
    np.testing.assert_array_equal(run(g, x=xs)[0], run(ng, x=xs)[0])
    # a repeat of the reduced axis itself is no such place
    bad = Graph([x], [op("expand", mean, shape=(1, 2, 5, 4))])
    assert _refused(bad, "mean_before_repeat_unreshaped") == [
        "the repeat broadcasts a reduced axis or the reshape does more than insert unit dims"]


def test_cpu_target_leaves_out_the_batched_matmul_forms() -> None:
    from graphopt.passes.split_heads import BATCHED, rules_for

    assert BATCHED and {r.name for r in rules_for("h100")} == set(BY_NAME)
    cpu = {r.name for r in rules_for("cpu")}
    assert not cpu & BATCHED
    assert {"heads_through_split3", "mean_before_repeat"} <= cpu
    names = {r.name for r in search_rules(_qkv_block(), target="cpu")}
    assert "heads_through_split3" in names and not names & BATCHED
