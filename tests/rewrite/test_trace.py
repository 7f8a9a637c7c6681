"""Candidates: how a place is described (fused / rewritten, the reason and the culprit), as JSON,
and the tracer's views."""
from __future__ import annotations

from graphopt.ir.node import input_node, op
from graphopt.ir.types import DType, TensorType
from graphopt.rewrite.trace import Candidate, Tracer


def test_describe_and_to_dict() -> None:
    x = input_node("x", TensorType((4,), DType.f32))
    e = op("erf", x.out).node
    ok = Candidate("gelu", "gelu_fusion", e, True, detail="approximate=none", rule_kind="fusion")
    bad = Candidate("gelu", "gelu_fusion", e, False, "argument is not x / sqrt(2)", x,
                    rule_kind="fusion")
    other = Candidate("constant", "constant_fold", e, False, "too large", rule_kind="cleanup")
    assert ok.describe().endswith("fused by gelu_fusion (approximate=none)")
    assert "NOT fused: rule gelu_fusion, node input #" in bad.describe()
    assert bad.describe().endswith("argument is not x / sqrt(2)")
    assert "NOT rewritten" in other.describe()
    d = bad.to_dict()
    assert d["matched"] is False and d["fused"] is False and d["culprit"].startswith("input #")
    assert other.to_dict()["fused"] is None  # not a fusion


def test_tracer_keeps_a_bounded_record() -> None:
    x = input_node("x", TensorType((4,), DType.f32))
    t = Tracer(limit=2)
    for i in range(3):
        t.record(Candidate("k", "r", x, i == 0, "" if i == 0 else f"why {i}"))
    assert len(t.candidates) == 2 and t.dropped == 1
    assert t.reasons() == ["r: why 1"] and len(t.of_kind("k")) == 2
