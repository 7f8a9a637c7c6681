"""The folder ``graphopt optimize X.onnx -o DIR --kv-cache`` writes, run by onnxruntime-genai's own
generation loop in a fresh process that sees only the folder's files: its greedy tokens equal
transformers' greedy ``generate`` for GPT-2 and a GQA Llama (no-cache ONNX exports by both torch
exporters), through ``run_genai`` and through a plain onnxruntime-genai script on the config as
written, and ``graphopt generate DIR --prompt-ids ...`` prints the same ids. Models the
derivation refuses exit with code 2, name the reasons and leave no folder behind: BertModel (its
pooler's gather of token 0 and its bidirectional attention), BERT's encoder without the pooler
(the attention alone) and a decoder that mixes positions with a cumsum.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from graphopt.cli import main

from .hf_models import FAMILIES, export_onnx, hf_generate, left_padded, prompt_rows

pytest.importorskip("onnxruntime_genai")

NEW = 64
MAX_LENGTH = 80
# (family, exporter of its no-cache ONNX model)
MODELS = [pytest.param(("gpt2", "legacy"), id="gpt2"), pytest.param(("llama", "dynamo"),
                                                                    id="llama-gqa")]
FILES = ["genai_config.json", "graphopt_kv.json", "model.onnx"]

_CHILD = """
import json, sys
from graphopt.kv.folder import run_genai
cases = json.loads(sys.argv[1])
print(json.dumps([run_genai(".", rows, n).tolist() for rows, n in cases]))
"""


@pytest.fixture(scope="module", params=MODELS)
def written(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[nn.Module, Path]:
    """(the transformers model, the folder the CLI wrote from its no-cache ONNX export)."""
    family, exporter = request.param
    module = FAMILIES[family]()
    tmp = tmp_path_factory.mktemp(family)
    src = export_onnx(module, tmp / "decoder.onnx", exporter)
    out = tmp / "out"
    rc = main(["optimize", str(src), "-o", str(out), "--kv-cache", "--max-length",
               str(MAX_LENGTH), "--budget", "0"])
    assert rc == 0
    return module, out


def _hf_rows(module: nn.Module, rows: list[list[int]], n: int) -> np.ndarray:
    ids, mask = left_padded(rows)
    return hf_generate(module, ids, mask, n).numpy()


def test_genai_in_a_fresh_process_equals_transformers(written: Any, tmp_path: Path) -> None:
    module, out = written
    assert sorted(os.listdir(out)) == FILES
    alone = tmp_path / "alone"  # a copy with nothing beside it; the child runs inside it
    shutil.copytree(out, alone)
    cases = [(prompt_rows(21, (7,)), NEW), (prompt_rows(22, (9, 4)), NEW)]
    res = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cases)], cwd=alone,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    for (rows, n), g in zip(cases, got):
        np.testing.assert_array_equal(np.array(g), _hf_rows(module, rows, n))


_PLAIN = """
import json, sys
import numpy as np
import onnxruntime_genai as og
prompt = json.loads(sys.argv[1])
model = og.Model(".")
params = og.GeneratorParams(model)
params.set_search_options(max_length=len(prompt) + int(sys.argv[2]))
gen = og.Generator(model, params)
gen.append_tokens(np.array([prompt], np.int32))
while not gen.is_done():
    gen.generate_next_token()
print(json.dumps(np.asarray(gen.get_sequence(0)).tolist()))
"""


def test_a_plain_genai_script_runs_the_folder_as_written(written: Any, tmp_path: Path) -> None:
    """Only onnxruntime-genai and the folder (genai_config.json as written: greedy, eos =
    vocab - 1): the ids up to its stop equal transformers'."""
    module, out = written
    alone = tmp_path / "alone"
    shutil.copytree(out, alone)
    prompt = prompt_rows(24, (8,))[0]
    res = subprocess.run([sys.executable, "-c", _PLAIN, json.dumps(prompt), str(NEW)],
                         cwd=alone, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    got = np.array(json.loads(res.stdout.strip().splitlines()[-1]))
    want = _hf_rows(module, [prompt], NEW)[0]
    eos = json.loads((alone / "genai_config.json").read_text())["model"]["eos_token_id"]
    stop = len(want) if eos not in want[len(prompt):] else \
        len(prompt) + list(want[len(prompt):]).index(eos) + 1
    assert len(got) > len(prompt) + 8
    np.testing.assert_array_equal(got, want[:stop])


def test_graphopt_generate_prints_transformers_ids(written: Any,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    module, out = written
    rows = prompt_rows(23, (6, 10))
    argv = ["generate", str(out), "--max-new-tokens", str(NEW)]
    for r in rows:
        argv += ["--prompt-ids", ",".join(map(str, r))]
    assert main(argv) == 0
    printed = [[int(x) for x in line.split(",")]
               for line in capsys.readouterr().out.strip().splitlines()]
    np.testing.assert_array_equal(np.array(printed), _hf_rows(module, rows, NEW))
    assert main(["generate", str(out), "--prompt-ids", ",".join(map(str, rows[0])),
                 "--max-new-tokens", str(NEW), "--json"]) == 0
    (one,) = json.loads(capsys.readouterr().out)
    np.testing.assert_array_equal(np.array([one]), _hf_rows(module, rows[:1], NEW))


class _CumsumDecoder(nn.Module):
    """input_ids, attention_mask -> logits of a running mean over the tokens (a cumsum along
    the sequence: causal, but no attention, so no cache can be derived)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(128, 16)
        self.head = nn.Linear(16, 128)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids) * attention_mask[..., None]
        return self.head(torch.cumsum(x, dim=1))


def _bert() -> nn.Module:
    """BertModel with its pooler (hidden state of token 0: a gather along the sequence)."""
    from tests.models import bert

    return bert()[0]


class _BertEncoder(nn.Module):
    """BertModel without the pooler: input_ids, attention_mask -> last hidden state (only the
    bidirectional attention mixes positions)."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        cfg = BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=32)
        torch.manual_seed(0)
        self.bert = BertModel(cfg, add_pooling_layer=False).eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)[0]


NOT_CAUSAL = "the attention is not causal: a query sees a later key (bidirectional)"


@pytest.mark.parametrize("build,reasons", [
    (_bert, ["gather moves data along the sequence axis", NOT_CAUSAL]),
    (_BertEncoder, [NOT_CAUSAL]),
    (_CumsumDecoder, ["cumsum on the token stream"])], ids=["bert", "bert-encoder", "cumsum"])
def test_a_refused_model_leaves_no_folder(build: Any, reasons: list[str], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    src = export_onnx(build(), tmp_path / "model.onnx", "legacy")
    out = tmp_path / "out"
    assert main(["optimize", str(src), "-o", str(out), "--kv-cache", "--budget", "0"]) == 2
    err = capsys.readouterr().err
    assert "graphopt: error: the kv-cache rewrite is illegal" in err.lower(), err
    assert all(r in err.lower() for r in reasons), err
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"]  # no folder, no temporary leftovers
