"""The named steps of optimize(): sources, targets, passes, steps and their order."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graphopt import pipeline
from graphopt.errors import FrontendError, GraphOptError
from graphopt.ir.graph import Graph
from graphopt.ir.text import parse
from graphopt.passes.canonicalize import Canonicalize
from graphopt.passes.cleanup import CSE, ConstantFold, DeadCode, RemoveNoOps

SRC = """graph t(%x: f32[2,3]) {
  %c: f32[] = constant() {data=dense<f32[]>[4.0]}
  %0: f32[2,3] = div(%x, %c)
  %1: f32[2,3] = identity(%0)
  return %1 as "y"
}"""


def test_targets() -> None:
    assert pipeline.TARGETS == ("cpu", "a100", "h100", "h200")
    assert pipeline.check_target("H100") == "h100"
    with pytest.raises(GraphOptError, match="valid targets: cpu, a100, h100, h200"):
        pipeline.check_target("v100")


def test_resolve_source(tmp_path: Path) -> None:
    import onnx
    import torch

    g = parse(SRC)
    assert pipeline.resolve_source(g).kind == "graph"
    p = tmp_path / "m.onnx"
    p.write_bytes(b"")
    s = pipeline.resolve_source(p)
    assert s.kind == "onnx" and s.model == str(p) and s.label == str(p)
    with pytest.raises(FrontendError, match="no such file"):
        pipeline.resolve_source(tmp_path / "none.onnx")
    assert pipeline.resolve_source(onnx.ModelProto()).kind == "onnx"
    lin = torch.nn.Linear(2, 2)
    s = pipeline.resolve_source(lin, torch.ones(1, 2))
    assert s.kind == "torch" and isinstance(s.example_inputs, tuple) and len(s.example_inputs) == 1
    with pytest.raises(GraphOptError, match="needs example_inputs"):
        pipeline.resolve_source(lin)
    with pytest.raises(GraphOptError, match="cannot optimize a int"):
        pipeline.resolve_source(3)


def test_resolve_passes() -> None:
    default = pipeline.resolve_passes(None)
    names = [p.name for p in default]
    assert names == ["constant_fold", "remove_noops", "cse", "dead_code", "canonicalize",
                     "constant_fold", "remove_noops", "cse", "dead_code"]
    assert [type(p) for p in pipeline.resolve_passes(["cleanup"])] == [
        ConstantFold, RemoveNoOps, CSE, DeadCode]
    mine = Canonicalize(div_to_mul=False)
    assert pipeline.resolve_passes(["cse", mine]) [1] is mine
    assert pipeline.resolve_passes([]) == []
    with pytest.raises(GraphOptError, match="unknown pass 'x'; known: attention_chunking, attention_flash, canonicalize"):
        pipeline.resolve_passes(["x"])
    names = ["rms_norm_fusion", "gelu_fusion", "rotary_fusion", "silu_fusion"]
    assert [p.name for p in pipeline.resolve_passes(names)] == names


def test_steps_time_and_announce() -> None:
    events: list[tuple[str, object]] = []
    steps = pipeline.Steps(lambda n, t: events.append((n, t)))
    assert steps.run("a", lambda: 41 + 1) == 42
    steps.run("a", lambda: None)
    assert [e[0] for e in events] == ["a"] * 4
    assert events[0][1] is None and isinstance(events[1][1], float)
    assert set(steps.times) == {"a"} and steps.times["a"] >= 0


def test_run_on_a_graph_reports_steps_in_order() -> None:
    events: list[str] = []
    out = pipeline.run(pipeline.resolve_source(parse(SRC)), "cpu",
                       progress=lambda n, t: events.append(n if t is None else f"/{n}"))
    tops = [e for e in events if ": " not in e]
    assert tops == ["load", "/load", "verify", "/verify", "simplify", "/simplify", "fuse", "/fuse",
                    "search",
                    "/search", "check", "/check"]
    assert any(e.startswith("simplify: canonicalize (round 1)") for e in events)
    assert out.graph.op_counts() == {"mul": 1}
    assert out.original.op_counts() == {"div": 1, "identity": 1}
    r = out.report
    assert r["check"]["ok"] and r["target"] == "cpu"
    assert r["rewrites"] == {"canonicalize.div_to_mul": 1, "remove_noops.identity_noop": 1}


def test_run_without_check_and_with_inputs() -> None:
    src = pipeline.resolve_source(parse(SRC))
    out = pipeline.run(src, "h200", check=False)
    assert out.report["check"] is None and "check" not in out.report["steps"]
    out = pipeline.run(src, inputs={"x": np.ones((2, 3), np.float32)})
    assert out.report["check"]["inputs"] == {"x": "f32[2,3]"}


def test_lift_dispatches_on_the_source_kind(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    g = parse(SRC)
    assert pipeline.lift(pipeline.Source("graph", g, "g")) is g
    m = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]),
        opset_imports=[helper.make_opsetid("", 18)])
    p = tmp_path / "r.onnx"
    onnx.save(m, str(p))
    lifted = pipeline.lift(pipeline.resolve_source(str(p)))
    assert isinstance(lifted, Graph) and lifted.op_counts() == {"relu": 1}


def test_fused_ops_raise_the_export_opset() -> None:
    from graphopt.ir.graph import GraphMeta
    from graphopt.ir.node import input_node, op
    from graphopt.ir.types import DType, TensorType

    x = input_node("x", TensorType((2, 3), DType.f32))
    meta = GraphMeta(opsets=(("", 17), ("com.microsoft", 1)))
    plain = Graph([x], [op("relu", x.out)], meta=meta)
    assert pipeline.raise_opset_for_fused_ops(plain) is plain
    fused = Graph([x], [op("gelu", x.out, approximate="none")], meta=meta)
    up = pipeline.raise_opset_for_fused_ops(fused)
    assert up.meta.opsets == (("", 20), ("com.microsoft", 1))
    assert up.outputs == fused.outputs


def test_default_pipeline_runs_the_fuse_step() -> None:
    from graphopt.ir.node import input_node, op
    from graphopt.ir.types import DType, TensorType

    x = input_node("x", TensorType((2, 3), DType.f32))
    g = Graph([x], [op("relu", x.out)])
    out = pipeline.run(pipeline.resolve_source(g), budget=0)
    assert "fuse" in out.report["steps"]
    assert any(p["name"] == "attention_flash" for p in out.report["passes"])
