"""One regression test per class of failure the CLI fuzzer found: each corrupt model now stops
``graphopt optimize`` with exit 2 and one error line naming the culprit, and writes nothing.
(Before: internal errors with raw numpy / protobuf exceptions, or a hang allocating the check's
input.)"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import onnx
import pytest
from onnx import TensorProto

from graphopt.cli import EXIT_USAGE, main

from .seeds import MODEL, mlp, write_seed


def _edit_raw(m: onnx.ModelProto) -> None:  # i8 declared, f32 bytes kept
    m.graph.initializer[1].data_type = TensorProto.INT8


def _negative(m: onnx.ModelProto) -> None:
    m.graph.initializer[0].dims[0] = -4


def _elem_type(m: onnx.ModelProto) -> None:
    m.graph.input[0].type.tensor_type.elem_type = 42


def _undefined_type(m: onnx.ModelProto) -> None:
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.UNDEFINED


def _no_outputs(m: onnx.ModelProto) -> None:
    del m.graph.output[:]


def _output_twice(m: onnx.ModelProto) -> None:
    m.graph.output.append(m.graph.output[0])


def _huge_input(m: onnx.ModelProto) -> None:
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2 ** 31


CASES: dict[str, tuple[Callable[[onnx.ModelProto], None], str]] = {
    "inline_size": (_edit_raw, "tensor 'b1' of i8[8] needs 8 bytes of data, raw_data has 32"),
    "negative_dims": (_negative, "Negative dimension value (tensor name: w1)"),
    "elem_type": (_elem_type, "value 'x' has element type 42, not an ONNX type"),
    "undefined_type": (_undefined_type, "graph input 'x' has no element type (UNDEFINED)"),
    "no_outputs": (_no_outputs, "the graph has no outputs"),
    "output_twice": (_output_twice, "graph output 'y' is listed twice"),
    "huge_input": (_huge_input, "input 'x': cannot generate valid values (f32[2147483648,4] is "
                                "32 GiB, more than the 1 GiB the check generates)"),
}


def _run(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], Path]:
    out = path.parent / "out" / MODEL
    out.parent.mkdir()
    code = main(["optimize", str(path), "-o", str(out), "--budget", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert not os.listdir(out.parent), "nothing is written on failure"
    return code, err, out


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_cleanly(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit, want = CASES[case]
    m = mlp()
    edit(m)
    path = tmp_path / MODEL
    path.write_bytes(m.SerializeToString())
    code, err, _ = _run(path, capsys)
    assert code == EXIT_USAGE, err
    assert len(err) == 1 and err[0].startswith("graphopt: error: ") and want in err[0], err


def test_name_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = mlp().SerializeToString()
    i = raw.find(b"softmax")
    path = tmp_path / MODEL
    path.write_bytes(raw[:i + 1] + b"\x97" + raw[i + 2:])  # node name 's\x97ftmax'
    code, err, _ = _run(path, capsys)
    assert code == EXIT_USAGE
    assert len(err) == 1 and "node[4].name (b's\\x97ftmax') is not valid UTF-8" in err[0], err


@pytest.mark.parametrize("key,value,want", [
    ("offset", "-8", "offset '-8' is not a byte count"),
    ("offset", "abc", "offset 'abc' is not a byte count"),
    ("location", "../../etc/passwd", "location '../../etc/passwd' is outside the model's folder"),
    ("location", "/etc/hostname", "location '/etc/hostname' is outside the model's folder"),
])
def test_external_data_entries(key: str, value: str, want: str, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(write_seed("external", str(tmp_path / "in")))
    m = onnx.load(str(path), load_external_data=False)
    for e in m.graph.initializer[0].external_data:
        if e.key == key:
            e.value = value
    path.write_bytes(m.SerializeToString())
    code, err, _ = _run(path, capsys)
    assert code == EXIT_USAGE
    assert len(err) == 1 and f"initializer 'w1': external data {want}" in err[0], err


def test_seed_itself_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The unedited model optimizes (so each refusal above is the edit's doing)."""
    path = tmp_path / MODEL
    path.write_bytes(mlp().SerializeToString())
    out = tmp_path / "o.onnx"
    assert main(["optimize", str(path), "-o", str(out), "--budget", "0"]) == 0
    assert out.stat().st_size > 0
