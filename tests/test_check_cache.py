"""``check.run_onnx`` runs a model file once per exact inputs (``check_cache``): the same file
and input bytes reuse the outputs; other inputs, a changed model file, a changed external data
file, or a model given as bytes run again."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt import check, check_cache


def _model(scale: float, external: bool, d: Path) -> Path:
    w = np.full((4, 4), scale, np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                          [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    p = d / "m.onnx"
    if external:
        onnx.save(m, str(p), save_as_external_data=True, location="m.data",
                  size_threshold=0)
    else:
        onnx.save(m, str(p))
    return p


class Sessions:
    """Counts the ONNX Runtime sessions check.run_onnx opens."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n = 0
        real = check.onnx_session

        def counting(*a: Any, **k: Any) -> Any:
            self.n += 1
            return real(*a, **k)

        monkeypatch.setattr(check, "onnx_session", counting)


@pytest.fixture(autouse=True)
def _fresh() -> Any:
    check_cache.clear()
    yield
    check_cache.clear()


def test_same_file_same_inputs_run_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    p = _model(1.0, False, tmp_path)
    s = Sessions(monkeypatch)
    x = np.ones((2, 4), np.float32)
    a = check.run_onnx(str(p), {"x": x})
    b = check.run_onnx(p, {"x": x.copy()})  # equal bytes, another array, a Path
    assert s.n == 1 and np.array_equal(a[0], b[0]) and np.all(a[0] == 4.0)
    assert not b[0].flags.writeable
    check.run_onnx(str(p), {"x": x + 1})  # other inputs
    check.run_onnx(str(p), {"x": x.astype(np.float64).astype(np.float32).reshape(2, 4)})
    assert s.n == 2
    check.run_onnx(p.read_bytes(), {"x": x})  # bytes: never remembered
    check.run_onnx(p.read_bytes(), {"x": x})
    assert s.n == 4


@pytest.mark.parametrize("external", [False, True])
def test_a_changed_file_runs_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   external: bool) -> None:
    p = _model(1.0, external, tmp_path)
    s = Sessions(monkeypatch)
    x = np.ones((2, 4), np.float32)
    assert np.all(check.run_onnx(str(p), {"x": x})[0] == 4.0)
    time.sleep(0.01)
    if external:  # only the data file changes
        data = tmp_path / "m.data"
        data.write_bytes(np.full(16, 2.0, np.float32).tobytes())  # the model file as it was
    else:
        _model(2.0, external, tmp_path)
    assert np.all(check.run_onnx(str(p), {"x": x})[0] == 8.0)
    assert s.n == 2


def test_a_small_file_rewritten_with_its_old_times_runs_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    p = _model(1.0, False, tmp_path)
    st = p.stat()
    x = np.ones((2, 4), np.float32)
    check.run_onnx(str(p), {"x": x})
    data = p.read_bytes()
    with open(p, "r+b") as f:  # the same inode and size, other weights
        f.write(data.replace(np.float32(1.0).tobytes() * 16, np.float32(3.0).tobytes() * 16))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert p.stat().st_mtime_ns == st.st_mtime_ns and p.stat().st_ino == st.st_ino
    assert np.all(check.run_onnx(str(p), {"x": x})[0] == 12.0)


def test_optimize_runs_the_original_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    import graphopt

    p = _model(1.0, False, tmp_path)
    s = Sessions(monkeypatch)
    graphopt.optimize(str(p), target="cpu", budget=0)
    assert s.n == 2  # the original, the result
    s.n = 0
    graphopt.optimize(str(p), target="cpu", budget=0)
    assert s.n == 1  # the same file, the same generated inputs: only the result runs
    s.n = 0
    graphopt.optimize(str(p), target="cpu", budget=0, check=False)
    assert s.n == 0
