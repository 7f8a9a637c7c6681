"""graphopt.kv.folder: the written folder, its round trip, atomicity, and onnxruntime-genai's own
generation loop over it (in a fresh process with only the folder's files)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from graphopt.errors import GraphOptError
from graphopt.kv.folder import load_folder, run_genai, write_folder
from graphopt.kv.generate import generate
from graphopt.kv.spec import CacheSpec

from .handmade import build_model

og = pytest.importorskip("onnxruntime_genai")

RAGGED = [[5, 9, 2, 30, 1, 7], [12, 3]]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, CacheSpec]:
    m, spec, _ = build_model()
    out = write_folder(m, spec, tmp_path_factory.mktemp("kv") / "out", max_length=48)
    return out, m, spec


def test_round_trip(written: Any) -> None:
    out, m, spec = written
    assert sorted(os.listdir(out)) == ["genai_config.json", "graphopt_kv.json", "model.onnx"]
    session, back = load_folder(out)
    assert back == spec
    cfg = json.loads((out / "genai_config.json").read_text())
    assert cfg["search"]["past_present_share_buffer"] is False
    assert cfg["search"]["max_length"] == 48 and cfg["search"]["do_sample"] is False
    dec = cfg["model"]["decoder"]
    assert (dec["num_key_value_heads"], dec["num_attention_heads"], dec["head_size"]) == (1, 2, 8)
    assert dec["inputs"]["past_key_names"] == "past_key_values.%d.key"
    import onnxruntime as ort
    fresh = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(generate(session, back, RAGGED, max_new_tokens=12),
                                  generate(fresh, spec, RAGGED, max_new_tokens=12))


def test_large_weights_go_to_external_data(tmp_path: Path) -> None:
    m, spec, _ = build_model()
    before = m.SerializeToString()
    out = write_folder(m, spec, tmp_path / "ext", external_threshold=0)
    assert m.SerializeToString() == before  # the caller's proto is untouched
    assert (out / "model.onnx.data").stat().st_size > (out / "model.onnx").stat().st_size
    session, back = load_folder(out)
    inline, _ = load_folder(write_folder(m, spec, tmp_path / "inline"))
    np.testing.assert_array_equal(generate(session, back, [[1, 2, 3]], max_new_tokens=8),
                                  generate(inline, spec, [[1, 2, 3]], max_new_tokens=8))


def test_a_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m, spec, _ = build_model()
    old = write_folder(m, spec, tmp_path / "out")
    before = {p.name: p.read_bytes() for p in old.iterdir()}

    def boom(self: CacheSpec) -> str:
        raise RuntimeError("disk full")
    monkeypatch.setattr(CacheSpec, "to_json", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_folder(m, spec, tmp_path / "new")
    with pytest.raises(RuntimeError, match="disk full"):
        write_folder(m, spec, tmp_path / "out", max_length=10)
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no temporary folder, no "new"
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before
    monkeypatch.undo()
    write_folder(m, spec, tmp_path / "out", max_length=10)  # a graphopt folder is replaced
    assert json.loads((old / "genai_config.json").read_text())["search"]["max_length"] == 10
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_write_refusals(tmp_path: Path) -> None:
    m, spec, _ = build_model()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(GraphOptError, match="refusing to replace"):
        write_folder(m, spec, mine)
    assert os.listdir(mine) == ["notes.txt"]
    with pytest.raises(GraphOptError, match="max_length 65"):
        write_folder(m, spec, tmp_path / "a", max_length=65)
    with pytest.raises(GraphOptError, match="eos_token_id 32"):
        write_folder(m, spec, tmp_path / "a", eos_token_id=32)
    del m.graph.input[1]  # attention_mask
    with pytest.raises(GraphOptError, match=r"missing inputs \['attention_mask'\]"):
        write_folder(m, spec, tmp_path / "a")
    assert sorted(os.listdir(tmp_path)) == ["mine"]
    with pytest.raises(GraphOptError, match="missing .*graphopt_kv.json"):
        load_folder(mine)


_CHILD = """
import json, sys
from graphopt.kv.folder import run_genai
folder, cases = sys.argv[1], json.loads(sys.argv[2])
print(json.dumps([run_genai(folder, p, n).tolist() for p, n in cases]))
"""


def test_genai_runs_the_folder_in_a_fresh_process(written: Any, tmp_path: Path) -> None:
    out, _, spec = written
    session, _ = load_folder(out)
    cases = [([[3, 1, 4, 1, 5]], 30), ([[1, 2, 3, 4, 5], [7, 8]], 30)]
    res = subprocess.run([sys.executable, "-c", _CHILD, str(out), json.dumps(cases)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    for (prompt, n), g in zip(cases, got):
        want = generate(session, spec, prompt, max_new_tokens=n)
        np.testing.assert_array_equal(np.array(g), want)
    # the model produces vocab_size - 1, genai's first choice of a never-produced eos: the
    # tokens above came through the restart with another sentinel
    assert (np.array(got[1])[:, 5:] == spec.vocab_size - 1).any()


def test_genai_stops_at_a_given_eos(written: Any) -> None:
    out, _, spec = written
    session, _ = load_folder(out)
    full = generate(session, spec, [[3, 1, 4, 1, 5]], max_new_tokens=20)[0]
    new = full[5:].tolist()
    eos = next(t for t in new[3:] if new.index(t) >= 3)  # first appears at step >= 3
    stop = new.index(eos)
    got = run_genai(out, [[3, 1, 4, 1, 5]], 20, eos_token_id=eos)
    np.testing.assert_array_equal(got[0], full[:5 + stop + 1])


def test_genai_refusals(written: Any) -> None:
    out, _, _ = written
    with pytest.raises(GraphOptError, match="exceed the context length"):
        run_genai(out, [[1] * 40], 30)
    with pytest.raises(GraphOptError, match="holes"):
        run_genai(out, [[1, 2, 3]], 2, attention_mask=[[1, 0, 1]])
    with pytest.raises(GraphOptError, match="pad_token_id 3 ends a prompt"):
        run_genai(out, [[1, 3], [4]], 2, eos_token_id=5, pad_token_id=3)
