"""`graphopt explain IN.onnx --kv-cache [--max-length N]`: a dry run of the KV-cache derivation
that prints, for a legal decoder, each attention's mask facts, the cache layout and the
positions that became position_ids, and for an illegal model every refusal; exit 0 both ways."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx
import pytest

from graphopt.cli import EXIT_OK, EXIT_USAGE, main
from tests import models
from tests.kv import decoders


def _explain(proto: onnx.ModelProto, tmp: Path, capsys: Any, *args: str) -> tuple[int, str]:
    path = tmp / "model.onnx"
    onnx.save(proto, str(path))
    code = main(["explain", str(path), *args])
    cap = capsys.readouterr()
    return code, cap.out + cap.err


def _kv_lines(out: str) -> list[str]:
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("kv cache: "))
    return lines[start:]


def test_legal_decoder(tmp_path: Path, capsys: Any) -> None:
    module, inputs, names = models.llama("sdpa")
    proto = decoders.export(module, inputs, names, "legacy")
    code, out = _explain(proto, tmp_path, capsys, "--kv-cache", "--max-length", "32")
    assert code == EXIT_OK, out
    kv = _kv_lines(out)
    assert kv[0] == "kv cache: legal (2 causal attentions)"
    atts = [ln for ln in kv if ln.startswith("  attention node attention #")]
    assert len(atts) == 2
    assert all(ln.endswith(": causal, all earlier tokens, padding from attention_mask")
               for ln in atts), atts
    assert "  cache: 2 layers, 2 kv heads (of 4 query heads), head size 8, window none, " \
           "context length 32, float32" in kv
    pos = [ln for ln in kv if ln.startswith("  position_ids: node ")]
    assert len(pos) == 1 and pos[0].endswith("arange(S) positions -> position_ids")
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "model.onnx"]


def test_sliding_window_decoder_json(tmp_path: Path, capsys: Any) -> None:
    module, inputs, names = decoders.tiny("window")
    proto = decoders.export(module, inputs, names, "legacy")
    code, out = _explain(proto, tmp_path, capsys, "--kv-cache", "--json")
    assert code == EXIT_OK, out
    kv = json.loads(out)["kv_cache"]
    assert kv["legal"] and kv["refusals"] == []
    assert kv["layout"]["window"] == decoders.WINDOW and kv["layout"]["num_layers"] == 1
    assert kv["layout"]["context_length"] == decoders.CONTEXT  # clipped to the position table
    (m,) = kv["masks"]
    assert m.endswith(f": causal, window {decoders.WINDOW}, padding from attention_mask")


def test_every_refusal_of_an_encoder(tmp_path: Path, capsys: Any) -> None:
    """BERT with its pooler: the pooler's read of token 0 and both bidirectional attentions
    (optimize stops at the first kind; explain lists all)."""
    module, inputs, names = models.bert("sdpa")
    proto = decoders.export(module, inputs, names, "legacy")
    code, out = _explain(proto, tmp_path, capsys, "--kv-cache")
    assert code == EXIT_OK, out
    kv = _kv_lines(out)
    assert kv[0] == "kv cache: refused (3 reasons)"
    assert sum("gather moves data along the sequence axis" in ln for ln in kv) == 1
    bidi = [ln for ln in kv if "the attention is not causal: a query sees a later key" in ln]
    assert len(bidi) == 2 and all(ln.startswith("  node attention #") for ln in bidi)


@pytest.mark.parametrize("variant,reason", [
    ("mean", "reduce_mean reduces along the sequence axis"),
    ("alibi", "the attention mask adds a bias to kept scores"),
])
def test_refusals_of_handmade_decoders(variant: str, reason: str, tmp_path: Path,
                                       capsys: Any) -> None:
    module, inputs, names = decoders.tiny(variant)
    code, out = _explain(decoders.export(module, inputs, names, "legacy"), tmp_path, capsys,
                         "--kv-cache")
    assert code == EXIT_OK, out
    kv = _kv_lines(out)
    assert kv[0] == "kv cache: refused (1 reason)" and reason in kv[1] and \
        kv[1].startswith("  node "), kv


def test_static_sequence(tmp_path: Path, capsys: Any) -> None:
    module, inputs, names = decoders.tiny("causal")
    code, out = _explain(decoders.export(module, inputs, names, "static"), tmp_path, capsys,
                         "--kv-cache")
    assert code == EXIT_OK, out
    kv = _kv_lines(out)
    assert kv[0] == "kv cache: refused (1 reason)" and "is static" in kv[1]


def test_no_kv_section_without_the_flag_and_max_length_needs_it(tmp_path: Path,
                                                                capsys: Any) -> None:
    module, inputs, names = decoders.tiny("causal")
    proto = decoders.export(module, inputs, names, "legacy")
    code, out = _explain(proto, tmp_path, capsys)
    assert code == EXIT_OK and "kv cache:" not in out
    code, out = _explain(proto, tmp_path, capsys, "--max-length", "16")
    assert code == EXIT_USAGE and "--max-length needs --kv-cache" in out


def test_api_explain_of_a_torch_module() -> None:
    """explain_model(module, inputs, kv_cache=True) exports with a dynamic sequence first (a
    static trace would be refused as 'static')."""
    from graphopt.errors import GraphOptError
    from graphopt.explanation import explain_model

    module, inputs, _ = decoders.tiny("window")
    ex = explain_model(module, inputs, kv_cache=True, max_length=16)
    assert ex.kv is not None and ex.kv.legal, ex.kv.refusals
    assert ex.kv.layout is not None and ex.kv.layout["window"] == decoders.WINDOW
    assert ex.to_dict()["kv_cache"]["max_length"] == 16
    assert explain_model(module, inputs).kv is None
    with pytest.raises(GraphOptError, match="max_length applies to the KV cache"):
        explain_model(module, inputs, max_length=16)
