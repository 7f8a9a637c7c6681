"""Matmul fusion: golden IR (match count, golden IR, numerics, verifier), the cost model's
decision, and the reasons given for groups left alone."""
from __future__ import annotations

import numpy as np
import pytest

from graphopt.check import check_graphs
from graphopt.ir.graph import Graph
from graphopt.ir.node import ConstData, Node, constant, input_node
from graphopt.ir.text import parse
from graphopt.ir.types import DType, TensorType
from graphopt.passes.matmul_fusion import MatmulFusion, group_at, group_costs
from graphopt.rewrite.context import MatchContext
from graphopt.rewrite.match import MatchFail
from graphopt.rewrite.passes import Pipeline
from tests.passes.golden import assert_rewrite

SRC = """
graph t(%x: f32[4,3]) {
  %wq: f32[3,2] = constant() {data=dense<f32[3,2]>[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}
  %wk: f32[3,1] = constant() {data=dense<f32[3,1]>[0.5, -1.0, 2.0]}
  %bq: f32[2] = constant() {data=dense<f32[2]>[0.25, -0.5]}
  %q: f32[4,2] = matmul(%x, %wq)
  %qb: f32[4,2] = add(%q, %bq)
  %k: f32[4,1] = matmul(%x, %wk)
  %r: f32[4,1] = relu(%k)
  return %qb as "q", %r as "k"
}"""


def test_unequal_widths_with_bias_merge_into_one_matmul_and_split() -> None:
    assert_rewrite(MatmulFusion(force=True), SRC, """
graph t(%x: f32[4,3]) {
  %0: f32[3,3] = constant() {data=dense<f32[3,3]>[1.0, 2.0, 0.5, 3.0, 4.0, -1.0, 5.0, 6.0, 2.0]}
  %1: f32[4,3] = matmul(%x, %0)
  %2: f32[3] = constant() {data=dense<f32[3]>[0.25, -0.5, 0.0]}
  %3: f32[4,3] = add(%1, %2)
  %4: f32[4,2], %5: f32[4,1] = split(%3) {axis=1, sizes=(2, 1)}
  %6: f32[4,1] = relu(%5)
  return %4 as "q", %6 as "k"
}""", {"matmul_group_fused": 1, "matmuls_merged": 2})


def test_cost_model_rejects_a_tiny_merge_and_says_why() -> None:
    res = MatmulFusion().run(parse(SRC))
    assert not res.changed
    assert res.stats["matmul_group_not_fused"] == 1 and res.stats["matmul_group_fused"] == 0
    (c,) = res.candidates
    note = c.describe()
    assert "rule matmul_fusion" in note and "cost model" in note and "matmul #" in note
    assert c.culprit is not None and c.culprit.op == "matmul"
    assert "2 matmuls (1 with bias)" in c.reason and "us ->" in c.reason  # both estimates


def _qkv_graph(tokens: int, width: int, outs: tuple[int, ...]) -> Graph:
    rng = np.random.default_rng(0)
    x = input_node("x", TensorType((tokens, width), DType.f32))
    ys = []
    for n in outs:
        w = constant(ConstData(rng.standard_normal((width, n)).astype(np.float32)))
        b = constant(ConstData(rng.standard_normal(n).astype(np.float32)))
        ys.append(Node.build("add", (Node.build("matmul", (x.out, w)).out, b)).out)
    return Graph([x], ys, [f"y{i}" for i in range(len(ys))])


def test_cost_model_merges_qkv_projections() -> None:
    g = _qkv_graph(64, 128, (128, 64, 64))  # GQA: k/v narrower than q
    grp = group_at(g.outputs[0].node.inputs[0].node, MatchContext(g))
    assert grp is not None and len(grp.members) == 3
    sep, mer = group_costs(grp, "cpu")
    assert mer < sep
    res = Pipeline([MatmulFusion()]).run(g)
    assert res.stats["matmul_group_fused"] == 1 and res.stats["matmuls_merged"] == 3
    (c,) = res.candidates
    assert c.matched and f"{sep * 1e6:.1f}us -> {mer * 1e6:.1f}us on cpu" in c.detail
    assert res.graph.op_counts() == {"add": 1, "matmul": 1, "split": 1}
    check_graphs(g, res.graph)


def test_non_constant_weight_is_reported() -> None:
    g = parse("""
graph t(%x: f32[4,3], %w: f32[3,2]) {
  %c: f32[3,2] = constant() {data=dense<f32[3,2]>[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}
  %a: f32[4,2] = matmul(%x, %w)
  %b: f32[4,2] = matmul(%x, %c)
  return %a as "a", %b as "b"
}""")
    res = MatmulFusion(force=True).run(g)
    assert not res.changed and len(res.candidates) == 1
    c = res.candidates[0]
    assert not c.fused and c.reason == "weight is not a constant"
    assert c.culprit is not None and c.culprit.op == "input"
    first = next(n for n in g.nodes if n.op == "matmul")
    with pytest.raises(MatchFail, match="weight is not a constant"):
        group_at(first, MatchContext(g))


def test_models_qkv_merged_and_results_unchanged() -> None:
    import warnings

    import torch

    from graphopt.frontends.fx import from_module
    from graphopt.frontends.torch_export import to_callable
    from graphopt.pipeline import default_passes
    from tests import models

    warnings.filterwarnings("ignore")
    m, ins, _ = models.build("llama")
    simp = Pipeline(default_passes(), fixed_point=True)
    g = simp.run(from_module(m, ins)).graph
    res = Pipeline([MatmulFusion(force=True)]).run(g)
    # per layer: q/k/v (GQA widths 32/16/16) and gate/up
    assert res.stats["matmul_group_fused"] == 4 and res.stats["matmuls_merged"] == 10
    with torch.no_grad():
        ref = m(*ins)[0]
        out = to_callable(simp.run(res.graph).graph)(*ins)[0]
    assert float((ref - out).abs().max() / ref.abs().max()) < 1e-5
