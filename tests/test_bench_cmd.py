"""``graphopt.bench_cmd``: the rows' structure, the shared inputs, the interleaving and the
errors (no timings are asserted)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from graphopt.bench_cmd import (BenchRow, bench_models, format_table, interleaved_seconds,
                                quartiles_ms)
from graphopt.errors import GraphOptError


def _model(path: Path, scale: float, input_name: str = "x") -> str:
    """y = (x @ W) * scale + mask-as-float, with a symbolic batch."""
    w = helper.make_tensor("W", TensorProto.FLOAT, [8, 8],
                           np.random.default_rng(0).standard_normal(64).astype(np.float32))
    s = helper.make_tensor("s", TensorProto.FLOAT, [], [scale])
    nodes = [helper.make_node("MatMul", [input_name, "W"], ["h"]),
             helper.make_node("Mul", ["h", "s"], ["hs"]),
             helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["hs", "mf"], ["y"])]
    g = helper.make_graph(nodes, "g", [
        helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 8]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], [w, s])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return str(path)


def test_rows_for_two_models(tmp_path: Path) -> None:
    a = _model(tmp_path / "a.onnx", 1.0)
    b = _model(tmp_path / "b.onnx", 2.0)
    rows = bench_models([a, b, a], runs=7, warmup=2, threads=1)
    assert [r.name for r in rows] == [a, b, a]
    assert all(isinstance(r, BenchRow) and r.runs == 7 for r in rows)
    assert all(0 < r.q1_ms <= r.median_ms <= r.q3_ms for r in rows)
    assert rows[0].ratio == 1.0
    assert rows[1].ratio == pytest.approx(rows[0].median_ms / rows[1].median_ms)
    assert rows[0].max_diff == 0.0 and rows[2].max_diff == 0.0
    assert rows[1].max_diff is not None and rows[1].max_diff > 0.1  # scale 2 vs 1
    assert rows[1].spread == pytest.approx((rows[1].q3_ms - rows[1].q1_ms) / rows[1].median_ms)
    text = format_table(rows)
    assert text.splitlines()[0].split()[:3] == ["model", "median", "ms"]
    assert a in text and b in text and "7 interleaved runs" in text


def test_inputs_from_npz(tmp_path: Path) -> None:
    a = _model(tmp_path / "a.onnx", 1.0)
    x = np.ones((3, 8), np.float32)
    np.savez(tmp_path / "in.npz", x=x, attention_mask=np.ones((3, 8), np.int64))
    rows = bench_models([a], inputs=tmp_path / "in.npz", runs=3, warmup=0)
    assert len(rows) == 1 and rows[0].runs == 3
    np.savez(tmp_path / "bad.npz", x=x)
    with pytest.raises(GraphOptError, match="attention_mask"):
        bench_models([a], inputs=tmp_path / "bad.npz", runs=1)


def test_models_with_other_inputs_are_an_error(tmp_path: Path) -> None:
    a = _model(tmp_path / "a.onnx", 1.0)
    c = _model(tmp_path / "c.onnx", 1.0, input_name="pixels")
    with pytest.raises(GraphOptError, match="pixels"):
        bench_models([a, c], runs=1)


def test_bad_arguments(tmp_path: Path) -> None:
    a = _model(tmp_path / "a.onnx", 1.0)
    with pytest.raises(GraphOptError, match="nothing to bench"):
        bench_models([])
    with pytest.raises(GraphOptError, match="runs"):
        bench_models([a], runs=0)
    with pytest.raises(GraphOptError, match="no such file"):
        bench_models([str(tmp_path / "missing.onnx")])
    (tmp_path / "m.pt").write_bytes(b"")
    with pytest.raises(GraphOptError, match="ONNX"):
        bench_models([str(tmp_path / "m.pt")])
    with pytest.raises(GraphOptError, match="threads"):
        bench_models([a], threads=0)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(GraphOptError):
        bench_models([a, str(tmp_path / "junk.onnx")], runs=1)


def test_calls_are_interleaved() -> None:
    calls: list[str] = []
    ts = interleaved_seconds([lambda: calls.append("a"), lambda: calls.append("b")],
                             runs=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3
    assert [len(t) for t in ts] == [3, 3] and all(x >= 0 for t in ts for x in t)


def test_quartiles() -> None:
    med, q1, q3 = quartiles_ms([0.001, 0.002, 0.003, 0.004, 0.005])
    assert (med, q1, q3) == pytest.approx((3.0, 2.0, 4.0))
    assert quartiles_ms([0.002]) == pytest.approx((2.0, 2.0, 2.0))


def test_cli_parser(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from graphopt.bench_cmd import add_parser

    a = _model(tmp_path / "a.onnx", 1.0)
    b = _model(tmp_path / "b.onnx", 2.0)
    p = argparse.ArgumentParser()
    add_parser(p.add_subparsers(dest="command"))
    args = p.parse_args(["bench", a, b, "--runs", "3", "--warmup", "1", "--threads", "1"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert a in out and b in out and "3 interleaved runs" in out
