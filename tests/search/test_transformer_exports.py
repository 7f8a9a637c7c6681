"""The search pays on real transformer exports: tiny BERT, GPT-2, Llama and ViT (random weights
with biases off zero), each from one of the two torch.onnx exporters, optimized end to end for
a GPU target: head-layout rules applied, the estimate lower, the check passed, and the report
saying why the other rules did not fire."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import graphopt

# per layer: the head layout; Llama (GQA 4/2 heads) also the mean of v before its repeat
CASES = [("bert-base", False, ["heads_of_split3_matmul_bias"]),
         ("gpt2", True, ["heads_of_split3_matmul_bias_reshaped"]),
         ("llama", False, ["heads_through_split3", "mean_before_repeat"]),
         ("vit", True, ["heads_of_split3_matmul_bias"])]


@pytest.mark.parametrize("name,dynamo,applied", CASES)
def test_search_applies_head_layout_rules(name: str, dynamo: bool, applied: list[str],
                                          tmp_path: Path) -> None:
    from bench.export_transformers import export

    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export(name, str(path), seq=17 if name == "vit" else 16, layers=2, hidden=64, heads=4,
               dynamo=dynamo, trained_like=True)
    om = graphopt.optimize(str(path), target="h100", budget=5)
    s = om.report["search"]
    assert s["rules_applied"] == {r: 2 for r in applied}, s["rules_applied"]  # 2 layers
    assert s["cost_after_us"] < s["cost_before_us"]
    assert s["kernels_after"] < s["kernels_before"]
    assert om.report["check"]["ok"]
    why = s["why_not"]
    assert why["absent_ops"]["directions"] > 0
    assert all(r["count"] >= 1 and r["reason"] for r in why["refused"])
    assert not set(applied) & {r["rule"] for r in why["not_cheaper"]}
