"""The graphopt command: in-process ``cli.main([...])`` for most cases, a few real subprocesses."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from graphopt import cli
from graphopt.cli import EXIT_INTERNAL, EXIT_MISMATCH, EXIT_OK, EXIT_USAGE, main

if TYPE_CHECKING:
    import onnx


def _model(op_type: str = "Div", value: float = 2.0, n: int = 4,
           domain: str = "") -> "onnx.ModelProto":
    from onnx import TensorProto, helper, numpy_helper

    c = numpy_helper.from_array(np.full((n,), value, np.float32), "c")
    z = numpy_helper.from_array(np.zeros((n,), np.float32), "z")
    nodes = [helper.make_node(op_type, ["x", "c"], ["a"], name="first", domain=domain),
             helper.make_node("Identity", ["a"], ["b"], name="ident"),
             helper.make_node("Add", ["b", "z"], ["y"], name="add_zero")]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n])], [c, z])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _save(m: "onnx.ModelProto", path: Path, **kw: object) -> Path:
    import onnx

    onnx.save(m, str(path), **kw)
    return path


@pytest.fixture()
def small(tmp_path: Path) -> Path:
    return _save(_model(), tmp_path / "small.onnx")


def test_optimize_writes_model_table_and_report(
        small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnx

    out, rep = tmp_path / "out.onnx", tmp_path / "r.json"
    assert main(["optimize", str(small), "-o", str(out), "--report", str(rep)]) == EXIT_OK
    text = capsys.readouterr().out
    assert "| op (ONNX)" in text and "| Div " in text and "| Identity " in text
    assert "| size " in text and "check: ok" in text and f"wrote {out}" in text
    m = onnx.load(str(out))
    assert sorted(n.op_type for n in m.graph.node) == ["Mul"]
    report = json.loads(rep.read_text())
    assert report["target"] == "cpu" and report["check"]["ok"]
    assert report["after"]["ops"] == {"mul": 1}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_optimize_with_target_inputs_and_verbose(
        small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    npz = tmp_path / "in.npz"
    np.savez(npz, x=np.ones((3, 4), np.float32))
    out = tmp_path / "o.onnx"
    code = main(["optimize", str(small), "-o", str(out), "--target", "h100", "--inputs",
                 str(npz), "--verbose"])
    cap = capsys.readouterr()
    assert code == EXIT_OK
    assert "target h100" in cap.out and "rewrites:" in cap.out  # the IR table and rewrites
    assert "graphopt: load done in" in cap.err  # progress lines on stderr


def test_default_target_follows_the_machine(
        small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "detect_target", lambda: "a100")
    assert main(["optimize", str(small), "-o", str(tmp_path / "o.onnx")]) == EXIT_OK
    assert "target a100" in capsys.readouterr().out
    monkeypatch.undo()  # the real one answers for this machine
    assert cli.detect_target() in ("cpu", "a100", "h100", "h200")


def test_bad_target_is_a_usage_error(
        small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["optimize", str(small), "-o", str(tmp_path / "o.onnx"),
                 "--target", "tpu"]) == EXIT_USAGE
    assert "invalid choice: 'tpu'" in capsys.readouterr().err
    assert main([]) == EXIT_USAGE
    assert main(["--help"]) == EXIT_OK


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Broken model files, each with the words its one-line error must contain."""
    from onnx import TensorProto, helper

    good = _model().SerializeToString()
    cases: dict[str, tuple[Path, str]] = {}
    cases["missing"] = (tmp_path / "missing.onnx", "no such file")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(bytes(range(256)) * 3)
    cases["not onnx"] = (junk, "not an ONNX model")
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(good[: len(good) // 2])
    cases["truncated"] = (trunc, "not an ONNX model")
    ext = _save(_model(n=300), tmp_path / "ext.onnx", save_as_external_data=True,
                all_tensors_to_one_file=True, location="ext.onnx.data", size_threshold=0)
    os.remove(tmp_path / "ext.onnx.data")
    cases["missing external data"] = (ext, "initializer 'c': external data file")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    cyc = helper.make_graph([helper.make_node("Add", ["x", "b"], ["a"], name="n1"),
                             helper.make_node("Relu", ["a"], ["b"], name="n2"),
                             helper.make_node("Identity", ["a"], ["y"], name="n3")],
                            "t", [x], [y])
    cases["cyclic"] = (_save(helper.make_model(cyc, opset_imports=[
        helper.make_opsetid("", 18)]), tmp_path / "cyc.onnx"), "topologically sorted, however "
                       "input 'b' of node: name: n1")
    cases["unknown domain"] = (_save(_model("Frob", domain="com.foo"), tmp_path / "dom.onnx"),
                               "domain 'com.foo' ==> Context: Bad node spec for node. Name: first")
    return cases


@pytest.mark.parametrize("case", ["missing", "not onnx", "truncated", "missing external data",
                                  "cyclic", "unknown domain"])
def test_bad_input_gives_one_line_and_exit_2(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, words = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out.onnx"
    assert main(["optimize", str(path), "-o", str(out)]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("graphopt: error: ") and path.name in err and words in err
    assert "Traceback" not in err
    assert not out.exists()


def test_verbose_adds_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["optimize", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "o.onnx"),
                 "-v"]) == EXIT_USAGE
    assert "Traceback" in capsys.readouterr().err


def test_unrunnable_original_is_bad_input_unless_unchecked(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from onnx import helper

    m = _model("Frob", domain="com.foo")
    m.opset_import.append(helper.make_opsetid("com.foo", 1))  # declared, but nobody runs it
    src = _save(m, tmp_path / "custom.onnx")
    out = tmp_path / "out.onnx"
    assert main(["optimize", str(src), "-o", str(out)]) == EXIT_USAGE
    assert "ONNX Runtime cannot run the original model" in capsys.readouterr().err
    assert not out.exists()
    assert main(["optimize", str(src), "-o", str(out), "--no-check"]) == EXIT_OK
    assert "com.foo::Frob" in capsys.readouterr().out  # kept opaque, passed through


def test_check_mismatch_exits_1_and_writes_nothing(
        small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from graphopt import pipeline
    from graphopt.ir.node import Node
    from graphopt.rewrite.passes import FunctionPass, PassResult

    def break_mul(g):  # type: ignore[no-untyped-def]
        def fn(n):  # type: ignore[no-untyped-def]
            return (Node.build("add", n.inputs).out,) if n.op == "mul" else None
        out = g.map_nodes(fn)
        return PassResult(out, True, {})

    real = pipeline.resolve_passes
    monkeypatch.setattr(pipeline, "resolve_passes",
                        lambda p: [*real(p), FunctionPass("break", break_mul)])
    out = tmp_path / "out.onnx"
    out.write_bytes(b"previous")
    assert main(["optimize", str(small), "-o", str(out)]) == EXIT_MISMATCH
    err = capsys.readouterr().err
    assert err.startswith("graphopt: check failed: output 'y'") and "MISMATCH" in err
    assert out.read_bytes() == b"previous"  # never replaced by a bad or partial model


def test_internal_errors_exit_3(
        small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from graphopt import pipeline

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise RuntimeError("something broke")

    monkeypatch.setattr(pipeline, "check_against", boom)
    assert main(["optimize", str(small), "-o", str(tmp_path / "o.onnx")]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "graphopt: internal error: RuntimeError: something broke" in err
    assert "--verbose" in err and "Traceback" not in err
    assert not (tmp_path / "o.onnx").exists()


def test_missing_output_directory(
        small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["optimize", str(small), "-o", str(tmp_path / "no" / "o.onnx")]) == EXIT_USAGE
    assert "output directory does not exist" in capsys.readouterr().err
    # -o naming a folder (existing, or with a trailing separator): refused before any work
    for out in (str(tmp_path), str(tmp_path / "new") + "/"):
        assert main(["optimize", str(small), "-o", out]) == EXIT_USAGE
        err = capsys.readouterr().err
        assert f"graphopt: error: {out}: -o names a folder" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.onnx"]  # nothing written


def test_inspect(small: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(small)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "x: f32[batch,4]" in out and "y: f32[batch,4]" in out
    assert "parameters: 8 in 2 tensors (32 B)" in out
    assert "ops (3 nodes):" in out and "Identity" in out
    assert main(["inspect", str(small), "--json"]) == EXIT_OK
    info = json.loads(capsys.readouterr().out)
    assert info["ops"] == {"Add": 1, "Div": 1, "Identity": 1}
    assert info["parameters"] == {"count": 8, "bytes": 32, "tensors": 2, "external": False}


def test_inspect_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "j.onnx"
    junk.write_bytes(b"\x00\x01garbage" * 20)
    assert main(["inspect", str(junk)]) == EXIT_USAGE
    assert "j.onnx" in capsys.readouterr().err


def test_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _save(_model(), tmp_path / "a.onnx")
    b = _save(_model("Mul", 0.5), tmp_path / "b.onnx")
    c = _save(_model("Mul", 0.6), tmp_path / "c.onnx")
    assert main(["check", str(a), str(b)]) == EXIT_OK
    assert "check: ok" in capsys.readouterr().out
    assert main(["check", str(a), str(c)]) == EXIT_MISMATCH
    cap = capsys.readouterr()
    assert "MISMATCH" in cap.out and "MISMATCH" in cap.err
    npz = tmp_path / "in.npz"
    np.savez(npz, x=np.zeros((2, 4), np.float32))  # zeros: 0 * 0.5 == 0 * 0.6
    assert main(["check", str(a), str(c), "--inputs", str(npz)]) == EXIT_OK
    assert main(["check", str(a), str(tmp_path / "nope.onnx")]) == EXIT_USAGE
    capsys.readouterr()
    other = _model()
    other.graph.input[0].name = "renamed"
    other.graph.node[0].input[0] = "renamed"
    d = _save(other, tmp_path / "d.onnx")
    assert main(["check", str(a), str(d)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "d.onnx: ONNX Runtime cannot run the model to compare" in err


def test_rules_subcommand_is_dispatched(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fake = types.ModuleType("graphopt.subst.cli")

    def add_parser(sub, **kwargs) -> None:  # type: ignore[no-untyped-def]
        p = sub.add_parser("rules", help="substitution rules")
        p.add_argument("what")
        p.set_defaults(func=lambda args: 7 if args.what == "seven" else 0)

    fake.add_parser = add_parser  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "graphopt.subst.cli", fake)
    assert main(["rules", "seven"]) == 7
    assert main(["rules", "x"]) == 0


def test_real_rules_subcommand_is_registered(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "--help"]) == EXIT_OK
    assert "usage: graphopt rules" in capsys.readouterr().out


def test_classify() -> None:
    from graphopt.errors import (CheckError, ExportError, FrontendError, GraphOptError,
                                 PassError, VerifyError)

    assert cli.classify(CheckError("x")) == EXIT_MISMATCH
    assert cli.classify(FrontendError("x")) == EXIT_USAGE
    assert cli.classify(GraphOptError("x")) == EXIT_USAGE
    assert cli.classify(FileNotFoundError("x")) == EXIT_USAGE
    for e in (PassError("x"), ExportError("x"), VerifyError("x"), KeyError("x")):
        assert cli.classify(e) == EXIT_INTERNAL


# ---- real subprocesses ---------------------------------------------------------------------------

def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_python_dash_m_graphopt(small: Path, tmp_path: Path) -> None:
    r = _run([sys.executable, "-m", "graphopt", "optimize", str(small), "-o", "out.onnx",
              "--report", "r.json"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.onnx").exists() and json.loads((tmp_path / "r.json").read_text())
    r = _run([sys.executable, "-m", "graphopt", "inspect", "missing.onnx"], tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == "graphopt: error: missing.onnx: no such file"


@pytest.mark.skipif(shutil.which("graphopt") is None, reason="console script not installed")
def test_console_script(small: Path, tmp_path: Path) -> None:
    r = _run(["graphopt", "check", str(small), str(small)], tmp_path)
    assert r.returncode == 0 and "check: ok" in r.stdout, r.stderr
    r = _run(["graphopt", "optimize", str(small)], tmp_path)  # -o is required
    assert r.returncode == 2 and "required" in r.stderr


def test_optimize_html_bench_and_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--html writes the page (with the --bench latency chart); diff compares two files."""
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed (.ci/run installs it)")
    src = Path(__file__).resolve().parents[1] / "examples" / "tiny_gpt2.onnx"
    out, page = tmp_path / "o.onnx", tmp_path / "r.html"
    assert main(["optimize", str(src), "-o", str(out), "--budget", "0.2", "--html", str(page),
                 "--bench", "3", "--quiet"]) == EXIT_OK
    text = capsys.readouterr().out
    assert f"wrote {page}" in text and "vs first" in text
    html = page.read_text()
    assert "<svg" in html and "latency-chart" in html and "attention" in html
    assert main(["diff", str(src), str(out), "--html", str(tmp_path / "d.html")]) == EXIT_OK
    assert "only after" in capsys.readouterr().out
    assert main(["optimize", str(src), "-o", str(out), "--html",
                 str(tmp_path / "no" / "r.html")]) == EXIT_USAGE


def test_optimize_transformers_folder(tmp_path: Path) -> None:
    """graphopt optimize DIR: a save_pretrained folder in, the written model matches the model
    (at sizes other than the example's: batch and sequence stay dynamic)."""
    import onnxruntime as ort
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100,
                                       n_positions=32, eos_token_id=0, bos_token_id=0)).eval()
    model.save_pretrained(tmp_path / "gpt2")
    out = tmp_path / "gpt2.onnx"
    assert main(["optimize", str(tmp_path / "gpt2"), "-o", str(out), "--budget", "0.2",
                 "--quiet"]) == EXIT_OK
    ids = torch.randint(0, 100, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.int64)
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).logits.numpy()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert main(["optimize", str(tmp_path / "gpt2.onnx"), "-o", str(out), "--task",
                 "causal-lm"]) == EXIT_USAGE  # folder options on a file
