"""Hand-written merge rules: match counts, result shape, numeric equivalence, verifier clean."""
from __future__ import annotations

import numpy as np
import pytest

from graphopt.ir.graph import Graph
from graphopt.ir.interp import run
from graphopt.ir.node import Value, constant, input_node, op, op_multi
from graphopt.ir.types import DType, TensorType
from graphopt.ir.verify import verify
from graphopt.rewrite.driver import apply, matches
from graphopt.passes import RULES_DIR
from graphopt.passes.merge_parallel import RULES, MergeParallel
from graphopt.subst.rulefile import load_file

BY_NAME = {r.name: r for r in RULES}
rng = np.random.default_rng(0)


def _in(name: str, *shape: int):
    return input_node(name, TensorType(shape, DType.f32))


def _c(*shape: int) -> Value:
    return constant(rng.standard_normal(shape).astype(np.float32))


def _rewrite_once(g: Graph, name: str, expect_matches: int) -> Graph:
    r = BY_NAME[name]
    ms = matches(g, r)
    assert len(ms) == expect_matches, [str(m.roots) for m in ms]
    ng = apply(g, r, ms[0])
    assert isinstance(ng, Graph), ng
    verify(ng)
    feeds = {n.attrs["name"]: rng.standard_normal(n.out_types[0].shape).astype(np.float32)
             for n in g.inputs}
    for a, b in zip(run(g, **feeds), run(ng, **feeds)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    return ng


def _ops(g: Graph) -> dict[str, int]:
    return g.op_counts()


def test_merge_matmul_shared_lhs_with_batch_broadcast() -> None:
    x = _in("x", 2, 5, 8)
    g = Graph([x], [op("matmul", x.out, _c(8, 3)), op("matmul", x.out, _c(8, 6))])
    ng = _rewrite_once(g, "merge_matmul_shared_lhs", 2)  # (a, b) and (b, a)
    assert _ops(ng) == {"concat": 1, "matmul": 1, "split": 1}


def test_merge_matmul_shared_lhs_refuses_mismatched_weights() -> None:
    x = _in("x", 5, 8)
    g = Graph([x], [op("matmul", x.out, _c(8, 3)), op("matmul", x.out, _c(8,))])
    assert matches(g, BY_NAME["merge_matmul_shared_lhs"]) == []


def test_merge_matmul_sum() -> None:
    x, h = _in("x", 1, 6), _in("h", 1, 4)
    g = Graph([x, h], [op("add", op("matmul", x.out, _c(6, 5)), op("matmul", h.out, _c(4, 5)))])
    ng = _rewrite_once(g, "merge_matmul_sum", 1)
    assert _ops(ng) == {"concat": 2, "matmul": 1}


@pytest.mark.parametrize("bias", [False, True])
def test_merge_conv_shared_input(bias: bool) -> None:
    x = _in("x", 1, 3, 6, 6)
    attrs = dict(strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), group=1)
    ins1 = [x.out, _c(4, 3, 3, 3)] + ([_c(4)] if bias else [])
    ins2 = [x.out, _c(2, 3, 3, 3)] + ([_c(2)] if bias else [])
    g = Graph([x], [op("conv", *ins1, **attrs), op("conv", *ins2, **attrs)])
    name = "merge_conv_bias_shared_input" if bias else "merge_conv_shared_input"
    ng = _rewrite_once(g, name, 2)
    assert _ops(ng)["conv"] == 1 and _ops(ng)["split"] == 1


def test_merge_conv_refuses_different_kernels_and_groups() -> None:
    x = _in("x", 1, 4, 6, 6)
    a = dict(strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1))
    g = Graph([x], [op("conv", x.out, _c(4, 4, 1, 1), group=1, **a),
                    op("conv", x.out, _c(4, 4, 3, 3), group=1, **a)])
    assert matches(g, BY_NAME["merge_conv_shared_input"]) == []
    g2 = Graph([x], [op("conv", x.out, _c(4, 2, 1, 1), group=2, **a),
                     op("conv", x.out, _c(4, 2, 1, 1), group=2, **a)])
    assert matches(g2, BY_NAME["merge_conv_shared_input"]) == []


def test_split_rules() -> None:
    y = _in("y", 3, 10)
    a, b = op_multi("split", y.out, axis=1, sizes=(4, 6))
    g = Graph([y], [op("add", a, _c(4)), op("add", b, _c(6))])
    ng = _rewrite_once(g, "merge_bias_after_split", 1)
    assert _ops(ng) == {"add": 1, "concat": 1, "split": 1}
    g = Graph([y], [op("relu", a), op("relu", b)])
    assert _ops(_rewrite_once(g, "relu_through_split", 1)) == {"relu": 1, "split": 1}
    g = Graph([y], [op("concat", a, b, axis=1)])
    ng = _rewrite_once(g, "concat_of_split", 1)
    assert ng.outputs[0] == y.out
    wrong = Graph([y], [op("concat", b, a, axis=1)])  # order swapped: not the identity
    assert matches(wrong, BY_NAME["concat_of_split"]) == []


@pytest.mark.parametrize("stride", [1, 2])
def test_enlarge_conv_kernel(stride: int) -> None:
    x = _in("x", 1, 3, 7, 7)
    g = Graph([x], [op("conv", x.out, _c(4, 3, 1, 1), _c(4), strides=(stride, stride),
                       pads=(0, 0, 0, 0), dilations=(1, 1), group=1)])
    ng = _rewrite_once(g, "enlarge_conv_bias_kernel", 1)
    conv = next(n for n in ng.nodes if n.op == "conv")
    assert conv.inputs[1].type.shape == (4, 3, 3, 3) and conv.attrs["pads"] == (1, 1, 1, 1)
    padded = Graph([x], [op("conv", x.out, _c(4, 3, 1, 1), strides=(1, 1), pads=(1, 1, 1, 1),
                            dilations=(1, 1), group=1)])
    assert matches(padded, BY_NAME["enlarge_conv_kernel"]) == []


def test_every_search_rule_is_stated_in_the_rule_file() -> None:
    stated = {r.name: r for r in load_file(RULES_DIR / "merge_parallel.rules")}
    assert {r.kind for r in stated.values()} == {"search"}
    assert {r.pass_name for r in stated.values()} == {"merge_parallel"}
    for r in RULES:
        assert r.kind == "search" and r.pass_name == "search", r.name
        assert f"merge_parallel.{r.name}" in stated, f"rule {r.name} has no text-IR statement"


def test_merge_parallel_pass_applies_each_place_once() -> None:
    # two 1x1 convs of one input: the merge claims both, so enlarge_conv_kernel does not
    # rewrite them in the same sweep (its place is already taken)
    x = _in("x", 1, 3, 5, 5)
    a = dict(strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1)
    g = Graph([x], [op("conv", x.out, _c(4, 3, 1, 1), **a), op("conv", x.out, _c(2, 3, 1, 1), **a)])
    res = MergeParallel().run(g)
    assert res.stats == {"merge_conv_shared_input": 1} and not res.candidates
    assert _ops(res.graph) == {"concat": 1, "conv": 1, "split": 1}
