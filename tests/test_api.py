"""The public API: graphopt.optimize / load / save / explain and OptimizedModel."""
from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import graphopt
from graphopt.errors import CheckError, FrontendError, GraphOptError
from graphopt.ir.graph import Graph
from graphopt.rewrite.passes import FunctionPass, PassResult


def _model():  # type: ignore[no-untyped-def]
    """((x / 2 + 0) -> identity - 3) * (2 * 3), over a symbolic batch."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.full((4,), v, np.float32), n)
             for n, v in (("two", 2.0), ("zero", 0.0), ("three", 3.0))]
    nodes = [helper.make_node("Div", ["x", "two"], ["a"], name="div"),
             helper.make_node("Add", ["a", "zero"], ["b"], name="add0"),
             helper.make_node("Identity", ["b"], ["c"], name="id"),
             helper.make_node("Sub", ["c", "three"], ["d"], name="sub"),
             helper.make_node("Mul", ["two", "three"], ["six"], name="six"),
             helper.make_node("Mul", ["d", "six"], ["y"], name="mul")]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.fixture()
def onnx_path(tmp_path):  # type: ignore[no-untyped-def]
    import onnx

    p = tmp_path / "small.onnx"
    onnx.save(_model(), str(p))
    return p


def _expected(x: np.ndarray) -> np.ndarray:
    return ((x / 2 + 0) - 3) * 6


def test_optimize_onnx_path(onnx_path: Path) -> None:
    om = graphopt.optimize(str(onnx_path))
    r = om.report
    assert r["target"] == "cpu" and r["source"] == str(onnx_path)
    # (the frontend already folded two * three at import)
    assert r["before"]["ops"] == {"add": 1, "div": 1, "identity": 1, "mul": 1, "sub": 1}
    assert r["after"]["ops"] == {"add": 1, "mul": 2}
    assert r["rewrites"] == {"canonicalize.div_to_mul": 1, "canonicalize.sub_to_add": 1,
                             "remove_noops.add_zero": 1, "remove_noops.identity_noop": 1}
    assert r["check"]["ok"] and r["check"]["inputs"]["x"].startswith("f32[")
    assert r["before"]["params"] == 16 and r["before"]["param_bytes"] == 64
    assert r["after"]["params"] == 12
    assert set(r["steps"]) == {"load", "verify", "simplify", "fuse", "search", "check"}
    assert all(p["seconds"] >= 0 for p in r["passes"])
    json.dumps(r)  # JSON-able
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    y = om(x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    np.testing.assert_allclose(y, _expected(x), rtol=1e-6)
    np.testing.assert_allclose(om(x=x), y)


def test_optimize_proto_and_graph_and_passes_argument() -> None:
    m = _model()
    om = graphopt.optimize(m, passes=[])
    assert om.report["passes"] == [] and om.report["after"]["ops"] == om.report["before"]["ops"]
    om2 = graphopt.optimize(m, passes=["cleanup"])
    assert "div" in om2.report["after"]["ops"]  # canonicalize did not run
    assert "identity" not in om2.report["after"]["ops"]
    g = graphopt.load(m)
    om3 = graphopt.optimize(g)
    assert om3.report["after"]["ops"] == {"add": 1, "mul": 2}
    assert om3.report["check"]["reference"].startswith("the original graph")
    with pytest.raises(GraphOptError, match="unknown pass 'nope'"):
        graphopt.optimize(m, passes=["nope"])
    with pytest.raises(GraphOptError, match="neither a Pass nor a pass name"):
        graphopt.optimize(m, passes=[42])


def test_search_mode_is_checked_and_reported() -> None:
    with pytest.raises(GraphOptError, match="search must be one of backtrack, egraph, got 'bfs'"):
        graphopt.optimize(_model(), search="bfs", budget=0)
    pytest.importorskip("egglog")
    om = graphopt.optimize(_model(), target="h100", search="egraph")
    assert om.report["search"]["search_mode"] == "egraph"
    assert graphopt.optimize(_model(), target="h100").report["search"]["search_mode"] == \
        "backtrack"


def test_unknown_target_lists_valid_ones() -> None:
    with pytest.raises(GraphOptError, match="unknown target 'tpu'; valid targets: cpu, a100, "
                                            "h100, h200"):
        graphopt.optimize(_model(), target="tpu")
    for t in ("cpu", "a100", "h100", "H200"):
        assert graphopt.optimize(_model(), target=t, check=False).target == t.lower()


def test_a_wrong_pass_is_caught_by_the_check() -> None:
    def break_it(g: Graph) -> PassResult:
        from graphopt.ir.node import Node

        def fn(n: Node):  # type: ignore[no-untyped-def]
            if n.op == "mul" and n.inputs[1].node.op == "constant":
                return (Node.build("add", n.inputs).out,)
            return None
        out = g.map_nodes(fn)
        return PassResult(out, out != g, {})

    with pytest.raises(CheckError, match="differs"):
        graphopt.optimize(_model(), passes=[FunctionPass("break", break_it)])
    om = graphopt.optimize(_model(), passes=[FunctionPass("break", break_it)], check=False)
    assert om.report["check"] is None


def test_check_inputs_can_be_given(tmp_path: Path) -> None:
    x = np.ones((5, 4), np.float32)
    om = graphopt.optimize(_model(), inputs={"x": x})
    assert om.report["check"]["inputs"] == {"x": "f32[5,4]"}
    p = tmp_path / "in.npz"
    np.savez(p, x=x[:2])
    assert graphopt.optimize(_model(), inputs=str(p)).report["check"]["inputs"] == {
        "x": "f32[2,4]"}


def test_save_and_onnx_model(tmp_path: Path, onnx_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    om = graphopt.optimize(str(onnx_path))
    m = om.onnx_model()
    assert isinstance(m, onnx.ModelProto)
    assert sorted(n.op_type for n in m.graph.node) == ["Add", "Mul", "Mul"]
    out = tmp_path / "out.onnx"
    om.save(out)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], _expected(x), rtol=1e-6)
    out2 = tmp_path / "graph.onnx"
    graphopt.save(om.graph, out2)
    assert out2.exists()
    with pytest.raises(GraphOptError, match="cannot save a int"):
        graphopt.save(3, tmp_path / "x.onnx")  # type: ignore[arg-type]


def test_load_variants(tmp_path: Path, onnx_path: Path) -> None:
    g = graphopt.load(str(onnx_path))
    assert isinstance(g, Graph) and g.input_names == ("x",)
    ir = tmp_path / "g.ir"
    ir.write_text(g.to_text(inline_limit=100))
    g2 = graphopt.load(str(ir))
    assert g2.to_text() == g.to_text()
    assert graphopt.load(g) is g
    with pytest.raises(FrontendError, match="no such file"):
        graphopt.load(str(tmp_path / "missing.onnx"))
    with pytest.raises(GraphOptError, match="cannot optimize a dict"):
        graphopt.load({})


def test_explain_reports_rewrites_and_opaque_nodes() -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["a"], name="id"),
         helper.make_node("Hardmax", ["a"], ["y"], name="hm")], "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    om = graphopt.optimize(m)
    text = graphopt.explain(om)
    assert "remove_noops.identity_noop: 1" in text
    assert "hm (Hardmax)" in text
    assert om.report["opaque"][0]["op_type"] == "Hardmax"
    assert om.report["opaque"][0]["reason"]
    assert graphopt.explain(om.report) == text == om.explain()
    assert "hm (Hardmax)" in graphopt.explain(om.graph)
    with pytest.raises(GraphOptError, match="cannot explain"):
        graphopt.explain(3)


def test_optimize_torch_module() -> None:
    import torch

    class M(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.lin(x)) / 2.0

    torch.manual_seed(0)
    mod = M().eval()
    x = torch.randn(2, 4)
    om = graphopt.optimize(mod, (x,))
    assert om.report["check"]["ok"] and "torch" in om.report["check"]["reference"]
    with torch.no_grad():
        want = mod(x)
    got = om(x)
    assert isinstance(got, torch.Tensor)
    torch.testing.assert_close(got, want)
    np.testing.assert_allclose(om(x.numpy()), want.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(GraphOptError, match="example_inputs"):
        graphopt.optimize(mod)


def test_calling_with_bad_inputs() -> None:
    om = graphopt.optimize(_model(), check=False)
    x = np.ones((1, 4), np.float32)
    with pytest.raises(GraphOptError, match="takes 1 inputs"):
        om(x, x)
    with pytest.raises(GraphOptError, match="has no input 'q'"):
        om(q=x)
    with pytest.raises(GraphOptError, match="missing inputs"):
        om()
    assert "OptimizedModel" in repr(om)


def test_import_graphopt_is_light() -> None:
    code = ("import sys, graphopt; graphopt.Graph; graphopt.parse; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'z3') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert set(graphopt.__all__) >= {"optimize", "load", "save", "Graph", "parse", "explain"}
    with pytest.raises(AttributeError):
        graphopt.nope  # noqa: B018


# name -> (attention blocks, RotaryEmbedding, RMSNormalization) in the saved ONNX
TRANSFORMERS = {"gpt2": (2, 0, 0), "bert": (2, 0, 0), "llama": (2, 4, 5), "mistral": (2, 4, 5),
                "t5": (6, 0, 12), "vit": (2, 0, 0)}


@pytest.mark.parametrize("name", sorted(TRANSFORMERS))
def test_optimize_transformer_onnx_passes_its_own_check(name: str) -> None:
    """The whole pipeline (fuse, search, numeric check on generated inputs: padded attention
    masks with fully masked rows included) on legacy-exporter ONNX of each family; the saved
    model has the fused nodes."""
    from tests.passes.test_attention_flash import _onnx

    res = graphopt.optimize(_onnx(name, dynamo=False), target="cpu", budget=1)
    ops = [n.op_type for n in res.onnx_model().graph.node]
    att, rope, rms = TRANSFORMERS[name]
    assert (ops.count("Attention"), ops.count("RotaryEmbedding"),
            ops.count("RMSNormalization")) == (att, rope, rms)
    assert "Softmax" not in ops


def test_save_checks_the_written_bytes_of_torch_and_graph_sources(tmp_path: Path,
                                                                    monkeypatch: Any) -> None:
    """A torch module's check runs the torch callable and a Graph's the interpreter; save then
    runs the ONNX bytes it writes in ONNX Runtime against the original, and writes nothing when
    they differ or do not run."""
    import torch

    import graphopt
    from graphopt import check
    from graphopt.errors import CheckError, ExportError

    class M(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(x) * 2.0 + 1.0

    om = graphopt.optimize(M(), (torch.randn(3, 4),), budget=0)
    out = tmp_path / "m.onnx"
    om.save(out)
    assert out.exists() and om.report["check_written"]["ok"]
    assert "ONNX Runtime" not in om.report["check"]["reference"]

    om = graphopt.optimize(M(), (torch.randn(3, 4),), budget=0)
    real = check.run_onnx_graph
    monkeypatch.setattr(check, "run_onnx_graph",
                        lambda g, feeds: [x + 1e-2 for x in real(g, feeds)])
    bad = tmp_path / "bad.onnx"
    with pytest.raises(CheckError, match="as written"):
        om.save(bad)
    assert not bad.exists()
    monkeypatch.setattr(check, "run_onnx_graph", real)

    g = graphopt.parse("""graph m(%w: f64[3]) {
      %0: f64[3] = softplus(%w)
      return %0 as "y"
    }""")
    om = graphopt.optimize(g, budget=0)

    def no_kernel(g: Any, feeds: Any) -> Any:
        raise RuntimeError("NOT_IMPLEMENTED : Could not find an implementation for Softplus")
    monkeypatch.setattr(check, "run_onnx_graph", no_kernel)
    with pytest.raises(ExportError, match="cannot run the model as it would be written"):
        om.save(bad)
    assert not bad.exists()


def test_fold_initializer_inputs(tmp_path: Path) -> None:
    """An IR >= 4 initializer also listed as a graph input stays an overridable input unless
    fold_initializer_inputs / --fold-initializer-inputs is given."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((4,), 2.0, np.float32), "w")
    g = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "m",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
                           helper.make_tensor_value_info("w", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    src = tmp_path / "m.onnx"
    onnx.save(m, src)
    x = np.arange(4, dtype=np.float32)
    kept, folded = tmp_path / "kept.onnx", tmp_path / "folded.onnx"
    from graphopt.cli import main

    assert main(["optimize", str(src), "-o", str(kept), "--budget", "0", "--quiet"]) == 0
    assert main(["optimize", str(src), "-o", str(folded), "--budget", "0", "--quiet",
                 "--fold-initializer-inputs"]) == 0
    s = ort.InferenceSession(str(kept), providers=["CPUExecutionProvider"])
    assert [i.name for i in s.get_inputs()] == ["x"]
    assert [i.name for i in s.get_overridable_initializers()] == ["w"]
    np.testing.assert_array_equal(s.run(None, {"x": x})[0], 2 * x)  # the default
    np.testing.assert_array_equal(s.run(None, {"x": x, "w": np.ones(4, np.float32)})[0], x)
    s = ort.InferenceSession(str(folded), providers=["CPUExecutionProvider"])
    assert [i.name for i in s.get_inputs()] == ["x"] and not s.get_overridable_initializers()
    np.testing.assert_array_equal(s.run(None, {"x": x})[0], 2 * x)
