"""Calibration data in every accepted form, and the refusals, against a small ONNX model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graphopt.frontends.onnx import load
from graphopt.quant.calibration import collect, load_batches
from graphopt.quant.config import QuantConfig, QuantError
from graphopt.quant.layers import find_layers
from tests.passes.quant_models import embed_mlp


@pytest.fixture(scope="module")
def graph():  # type: ignore[no-untyped-def]
    return load(embed_mlp())


def _ids(seed: int, dtype: type = np.int64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 96, size=(2, 5)).astype(dtype)


def test_forms_give_the_same_batches(graph, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = QuantConfig("int8")
    npz = tmp_path / "c.npz"
    np.savez(npz, ids=np.stack([_ids(0), _ids(1)]))  # two batches stacked on a leading axis
    forms = [str(npz), [{"ids": _ids(0)}, {"ids": _ids(1)}], [(_ids(0),), (_ids(1),)],
             [{"ids": _ids(0, np.int32)}, {"ids": _ids(1, np.int32)}]]  # int32 ids: same values
    seen = []
    for f in forms:
        batches, src = load_batches(graph, f, cfg)
        assert len(batches) == 2 and "2 batches" in src
        assert all(b["ids"].dtype == np.int64 for b in batches)
        seen.append(np.stack([b["ids"] for b in batches]))
    assert all(np.array_equal(seen[0], s) for s in seen[1:])
    one, src = load_batches(graph, {"ids": _ids(3)}, cfg)
    assert len(one) == 1 and src == "1 batch given"


def test_generated_batches_warn_for_modes_that_need_data(graph) -> None:  # type: ignore[no-untyped-def]
    with pytest.warns(UserWarning, match="no calibration data given"):
        batches, src = load_batches(graph, None, QuantConfig("smoothquant"))
    assert len(batches) == 8 and "generated" in src
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rtn int8 needs no real data: no warning
        load_batches(graph, None, QuantConfig("int8"))


@pytest.mark.parametrize("bad,needle", [
    ([{"ids": np.zeros((2, 5), np.float32)}], "dtype"),
    ([{"ids": _ids(0), "extra": np.zeros(2)}], "does not take"),
    ([(_ids(0), _ids(1))], "2 arrays"),
    ([], "no batch"),
    (42, "calibration must be"),
])
def test_batches_that_do_not_fit(graph, bad: object, needle: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(QuantError, match=needle):
        load_batches(graph, bad, QuantConfig("int8"))


def test_collect_keeps_rows_and_column_maxima(graph) -> None:  # type: ignore[no-untyped-def]
    layers = find_layers(graph)
    cfg = QuantConfig("int8", calibration_rows=7)
    stats = collect(graph, layers, [{"ids": _ids(0)}, {"ids": _ids(1)}], cfg)
    lin = [lay for lay in layers if lay.kind == "linear"]
    assert {id(lay.node) for lay in lin} == set(stats)
    for lay in lin:
        st = stats[id(lay.node)]
        assert st.rows.shape == (7, lay.shape[0])  # 20 token rows sampled down to 7
        assert st.col_absmax.shape == (lay.shape[0],)
        assert np.all(st.col_absmax >= np.abs(st.rows).max(axis=0) - 1e-6)
