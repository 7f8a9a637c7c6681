"""Models with external data on the lazy path: weights are not read before they are needed, are
streamed from file to file on save, folded weights stay on disk, and a failed save leaves no
files behind. (The > 2 GB round trip and its peak memory: ``bench/large_model.py``.)"""
from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import graphopt
from bench.large_model import build_model
from graphopt.errors import ExportError
from graphopt.frontends import onnx as fe
from graphopt.frontends import onnx_export as ex
from graphopt.ir import fold
from graphopt.ir.node import spill_dir
from graphopt.passes.cleanup import DEDUPE_MAX_BYTES

LAYERS, WIDTH, TOKENS = 3, 640, 4  # 1.6 MB weights: over what CSE compares by content


class MapCounter:
    """Counts np.memmap calls of more than DEDUPE_MAX_BYTES: every read of an external weight
    as an array goes through one (smaller ones are read by design: the importer reads tensors
    of at most 64 elements as possible shape values, CSE compares constants up to
    DEDUPE_MAX_BYTES by content)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = np.memmap

        def counting(*a: Any, **kw: Any) -> np.memmap:
            dt = np.dtype(kw.get("dtype", np.uint8))
            if int(np.prod(kw.get("shape") or ())) * dt.itemsize > DEDUPE_MAX_BYTES:
                self.calls += 1
            return real(*a, **kw)

        monkeypatch.setattr(np, "memmap", counting)


def _weights(path: Path) -> dict[str, np.ndarray]:
    m = onnx.load(str(path))  # external data read by onnx itself
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


def _files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_weights_are_streamed_without_being_read_as_arrays(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    src = tmp_path / "in.onnx"
    build_model(src, LAYERS, WIDTH, TOKENS, "matmul")
    maps = MapCounter(monkeypatch)
    g = fe.load(src)
    consts = [n.const for n in g.nodes if n.op == "constant"]
    assert len(consts) == 2 * LAYERS and all(c.external is not None for c in consts)
    assert maps.calls == 0 and not any(c.loaded for c in consts if len(c.shape) == 2)
    assert WIDTH * WIDTH * 4 > DEDUPE_MAX_BYTES
    om = graphopt.optimize(str(src), passes=["default"], budget=0, check=False)
    out = tmp_path / "out" / "out.onnx"
    ex.save(om.graph, out, external_threshold=0)
    assert maps.calls == 0  # nothing needed a weight's values: bytes went file to file
    assert _files(out.parent) == ["out.onnx", "out.onnx.data"]
    mask = os.umask(0o022)
    os.umask(mask)
    for p in out.parent.iterdir():  # readable as any file the user writes, not the temp's 0600
        assert p.stat().st_mode & 0o777 == 0o666 & ~mask
    want, got = _weights(src), _weights(out)
    assert sorted(want) == sorted(got)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    x = np.random.default_rng(0).standard_normal((TOKENS, WIDTH)).astype(np.float32)
    np.testing.assert_array_equal(_ort(out, x), _ort(src, x))


def test_the_check_reads_the_weights_and_the_written_model_matches(tmp_path: Path) -> None:
    src = tmp_path / "in.onnx"
    build_model(src, LAYERS, WIDTH, TOKENS, "matmul")
    om = graphopt.optimize(str(src), budget=0)
    assert om.report["check"]["ok"]
    out = tmp_path / "out.onnx"
    ex.save(om.graph, out, external_threshold=0)
    x = np.random.default_rng(1).standard_normal((TOKENS, WIDTH)).astype(np.float32)
    np.testing.assert_allclose(_ort(out, x), _ort(src, x), rtol=1e-5, atol=1e-6)


def test_a_folded_weight_of_external_data_is_spilled_to_a_file(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    # Gemm with transB=1: the importer reads it as matmul(x, transpose(w)), and folding the
    # transpose makes a new weight. From external data it goes to a file, not to memory.
    monkeypatch.setattr(fold, "SPILL_BYTES", 0)
    src = tmp_path / "in.onnx"
    build_model(src, LAYERS, WIDTH, TOKENS, "gemm")
    om = graphopt.optimize(str(src), passes=["default"], budget=0, check=False)
    weights = [n.const for n in om.graph.nodes if n.op == "constant" and len(n.const.shape) == 2]
    assert len(weights) == LAYERS
    src_w = _weights(src)
    spilled = []
    for c in weights:
        assert c.external is not None and c.external[0].startswith(spill_dir())
        assert not c.loaded
        spilled.append(c.external[0])
    got = sorted((np.asarray(c.array) for c in weights), key=lambda a: float(a[0, 0]))
    want = sorted((src_w[f"w{i}"].T for i in range(LAYERS)), key=lambda a: float(a[0, 0]))
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    out = tmp_path / "out.onnx"
    ex.save(om.graph, out, external_threshold=0)
    x = np.random.default_rng(2).standard_normal((TOKENS, WIDTH)).astype(np.float32)
    np.testing.assert_allclose(_ort(out, x), _ort(src, x), rtol=1e-5, atol=1e-5)
    del om, weights, c, got
    gc.collect()
    assert not any(os.path.exists(p) for p in spilled)  # gone with their constants


def test_a_failed_save_leaves_no_files(tmp_path: Path) -> None:
    src = tmp_path / "in.onnx"
    build_model(src, LAYERS, WIDTH, TOKENS, "matmul")
    g = fe.load(src)
    data = tmp_path / "in.onnx.data"
    with open(data, "r+b") as f:  # the last weight's bytes go missing after the load
        f.truncate(data.stat().st_size // 2)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(ExportError, match="ends before offset"):
        ex.save(g, out_dir / "out.onnx", external_threshold=0)
    assert _files(out_dir) == []
    assert _files(tmp_path) == ["in.onnx", "in.onnx.data", "out"]
