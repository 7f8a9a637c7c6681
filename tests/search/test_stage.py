"""The search step inside optimize(): report, folding, the numeric check catching a wrong rule,
and the CLI on a small BERT exported by torch.onnx."""
from __future__ import annotations

import json

import numpy as np
import pytest

import graphopt
from bench.taso_models import TINY
from graphopt.errors import CheckError
from graphopt.ir.graph import Graph
from graphopt.ir.node import input_node, op as build
from graphopt.ir.types import DType, TensorType
from graphopt.rewrite.pattern import op
from graphopt.pipeline import search_rules
from graphopt.rewrite.rule import rule
from graphopt.search.budget import EXPLORED_PER_SECOND
from graphopt.search.stage import format_search, make_budget, search_step


def test_search_step_reports_and_folds_merged_weights() -> None:
    g = TINY["bert"]()
    out, rep = search_step(g, "h100", budget=20, rules=search_rules(g))
    assert rep["rules_applied"].get("merge_matmul_shared_lhs", 0) >= 2
    assert rep["cost_after_us"] < rep["cost_before_us"] and rep["estimated_speedup"] > 0
    assert rep["kernels_after"] < rep["kernels_before"]
    assert rep["folded_after_search"] >= 2  # the concatenated weights became constants
    assert not any(n.op == "concat" for n in out.nodes)
    assert rep["graphs_explored"] >= rep["graphs_expanded"] >= 1
    assert "merge_matmul_shared_lhs x" in format_search(rep)


def test_optimize_runs_the_search_and_checks_it() -> None:
    g = TINY["nasrnn"]()
    # the simplify passes only: the fuse step's matmul merge would leave the search nothing to do
    om = graphopt.optimize(g, target="cpu", budget=5, passes=["default"])
    s = om.report["search"]
    assert s["rules_applied"] and s["cost_after_us"] < s["cost_before_us"]
    assert om.report["check"]["ok"]
    assert om.report["steps"]["search"] > 0
    off = graphopt.optimize(g, target="cpu", budget=0)
    assert off.report["search"] is None


def test_a_wrong_rule_is_caught_by_the_check_and_nothing_is_returned() -> None:
    x = input_node("x", TensorType((4, 8), DType.f32))
    y = input_node("y", TensorType((4, 8), DType.f32))
    g = Graph([x, y], [build("relu", build("add", x.out, y.out))])
    # "x + y == x": cheaper (one op fewer), so the search takes it
    wrong = rule("drop_add", lambda a, b: op.add(a, b), lambda m: m["a"])
    with pytest.raises(CheckError, match="the search applied: drop_add x1"):
        graphopt.optimize(g, target="cpu", rules=[wrong], budget=5)


def test_budget_values() -> None:
    b = make_budget(3)
    # counted in graphs (deterministic); the clock is a safety stop past the 3 seconds
    assert b.max_explored == 3 * EXPLORED_PER_SECOND and b.seconds > 3.0
    assert b.max_graphs and b.patience and b.deterministic
    with pytest.raises(graphopt.GraphOptError):
        make_budget(-1)


@pytest.fixture(scope="module")
def small_bert(tmp_path_factory):
    from bench.export_transformers import export

    path = tmp_path_factory.mktemp("bert") / "bert.onnx"
    export("bert-base", str(path), seq=16, layers=2, hidden=64, heads=4)
    return path


def test_cli_optimizes_a_small_bert(small_bert, tmp_path, capsys) -> None:
    from graphopt import cli

    out, rep = tmp_path / "out.onnx", tmp_path / "r.json"
    rc = cli.main(["optimize", str(small_bert), "-o", str(out), "--target", "h100",
                   "--budget", "5", "--report", str(rep), "--passes", "default"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "search (analytic cost, h100)" in text
    r = json.loads(rep.read_text())
    s = r["search"]
    assert s["seconds"] <= 5.5 and s["graphs_explored"] >= 1
    assert s["rules_applied"].get("merge_matmul_shared_lhs", 0) >= 2  # q/k/v, per layer
    assert r["check"]["ok"] and r["check"]["max_abs"] < 1e-3

    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    ids = np.random.default_rng(0).integers(0, 100, (1, 16))
    (res,) = sess.run(None, {"input_ids": ids, "attention_mask": np.ones((1, 16), np.int64)})
    assert res.shape == (1, 16, 64) and np.isfinite(res).all()
