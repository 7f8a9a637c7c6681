"""The optimization report: summaries, opaque reasons, tables, explain text, atomic JSON."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from graphopt import report
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node, Origin, constant, input_node, op
from graphopt.ir.text import parse
from graphopt.ir.types import DType, TensorType

SRC = """graph t(%x: f32[batch,3]) {
  %w: f32[3,2] = constant() {data=dense<f32[3,2]>[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}
  %b: f16[2] = constant() {data=dense<f16[2]>[1.0, 2.0]}
  %0: f32[batch,2] = matmul(%x, %w)
  %1: f32[batch,2] = relu(%0)
  %2: f32[batch,2] = relu(%1)
  return %2 as "y"
}"""


def test_param_stats_and_summary() -> None:
    g = parse(SRC)
    assert report.param_stats(g) == {"tensors": 1, "params": 6, "bytes": 24}  # %b is dead
    s = report.graph_summary(g)
    assert s["ops"] == {"matmul": 1, "relu": 2} and s["nodes"] == 3
    assert s["inputs"] == [{"name": "x", "dtype": "f32", "shape": ["batch", 3]}]
    assert s["outputs"] == [{"name": "y", "dtype": "f32", "shape": ["batch", 2]}]
    json.dumps(s)


def _opaque(op_type: str, x, origin: Origin | None = None, **extra):  # type: ignore[no-untyped-def]
    from onnx import helper

    proto = helper.make_node(op_type, ["x"], ["y"]).SerializeToString()
    return Node.build("opaque", [x], {
        "op_type": op_type, "domain": "", "proto": proto, "opsets": (("", 18),),
        "out_types": (x.type,), "present": (True,), "captured": (), "call": None,
        "functions": (), **extra}, origin)


def test_opaque_reasons() -> None:
    x = input_node("x", TensorType((2,), DType.f32))
    a = _opaque("Hardmax", x.out, Origin("onnx", "hm"))
    b = _opaque("Foo", a.out, Origin("fx", "foo", "kept opaque: aten.foo has no op"))
    c = _opaque("Bar", b.out, reason="told so")
    g = Graph([x], [c.out])
    rows = report.opaque_nodes(g)
    assert rows[0] == {"op_type": "Hardmax", "domain": "", "name": "hm",
                       "reason": "graphopt has no op for Hardmax"}
    assert rows[1]["reason"] == "aten.foo has no op"
    assert rows[2]["reason"] == "told so" and rows[2]["name"].startswith("#")


def test_opaque_reason_survives_rebuilding_through_the_original() -> None:
    from onnx import TensorProto, helper

    from graphopt.frontends.onnx import load
    from graphopt.passes.cleanup import cleanup

    m = helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["x"], ["a"]),
         helper.make_node("Hardmax", ["a"], ["y"], name="hm")], "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])]),
        opset_imports=[helper.make_opsetid("", 18)])
    g = load(m)
    after = cleanup(g).graph  # the opaque node is rebuilt over %x
    (row,) = report.opaque_nodes(after, g)
    (orig,) = report.opaque_nodes(g)
    assert row["reason"] == orig["reason"] and "Hardmax" in row["reason"]


def test_build_report_and_rewrite_totals() -> None:
    g = parse(SRC)
    after = Graph(g.inputs, [g.outputs[0].node.inputs[0]], ["y"])  # one relu fewer
    passes = [{"name": "p", "stats": {"a": 1, "nodes": 5, "notes": ["n"]}},
              {"name": "p", "stats": {"a": 2, "zero": 0}}, {"name": "q", "stats": {"b": 1}}]
    r = report.build_report(source="s", target="cpu", before=g, after=after, passes=passes,
                            steps={"load": 0.1234567891}, check=None)
    assert r["rewrites"] == {"p.a": 3, "q.b": 1}
    assert r["before"]["nodes"] == 3 and r["after"]["nodes"] == 2
    assert r["steps"] == {"load": 0.123457} and r["check"] is None and r["opaque"] == []
    json.dumps(r)
    text = report.format_report(r)
    assert "| relu" in text and "| param bytes |" in text and "rewrites: p.a=3, q.b=1" in text
    ex = report.explain_text(r)
    assert "p.a: 3" in ex and "p notes: n" in ex and "opaque nodes: none" in ex


def test_comparison_table_layout() -> None:
    t = report.comparison_table({"Add": 2, "Mul": 1}, {"Mul": 3}, [("size", "1 KiB", "2 B")])
    lines = t.splitlines()
    assert lines[1] == "| op   | before | after |"
    assert "| Add  |      2 |     0 |" in lines and "| Mul  |      1 |     3 |" in lines
    assert "| size |  1 KiB |   2 B |" in lines
    assert len({len(ln) for ln in lines}) == 1  # a rectangle


def test_human_bytes() -> None:
    assert report.human_bytes(12) == "12 B"
    assert report.human_bytes(2048) == "2.0 KiB"
    assert report.human_bytes(3 * 1024 ** 3) == "3.0 GiB"


def test_write_json_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "r.json"
    report.write_json_atomic({"a": np.float32(1.5), "t": DType.f16}, p)
    assert json.loads(p.read_text()) == {"a": 1.5, "t": "f16"}

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise RuntimeError("disk full")

    # a file mode as open() gives it (umask applied), not a temp file's 0600
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask

    monkeypatch.setattr(os, "fsync", boom)  # the write fails after the temp file was written
    with pytest.raises(RuntimeError):
        report.write_json_atomic({"b": 1}, p)
    assert json.loads(p.read_text()) == {"a": 1.5, "t": "f16"}  # old file intact
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]  # no temp file left


def test_constants_are_counted_once() -> None:
    x = input_node("x", TensorType((4,), DType.f32))
    c = constant(np.ones(4, np.float32))
    g = Graph([x], [op("add", x.out, c), op("mul", x.out, c)])
    assert report.param_stats(g)["params"] == 4


def test_explain_lists_places_not_rewritten_and_rewrites_only_count_rewrites() -> None:
    import graphopt
    from graphopt.ir.text import parse

    g = parse("""graph t(%x: f32[4]) {
  %c: f32[] = constant() {data=dense<f32[]>[0.8]}
  %u: f32[4] = mul(%x, %c)
  %e: f32[4] = erf(%u)
  %one: f32[] = constant() {data=dense<f32[]>[1.0]}
  %a: f32[4] = add(%e, %one)
  %h: f32[] = constant() {data=dense<f32[]>[0.5]}
  %xh: f32[4] = mul(%x, %h)
  %y: f32[4] = mul(%xh, %a)
  return %y as "y"
}""")
    om = graphopt.optimize(g, budget=0)
    assert not any("not_" in k for k in om.report["rewrites"]), om.report["rewrites"]
    text = om.explain()
    assert "gelu_fusion: gelu at erf #" in text and "not rewritten: rule gelu_fusion" in text
    assert "erf argument is not x / sqrt(2)" in text, text
