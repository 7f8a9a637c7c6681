"""om.generate (kv_cache=True) against transformers' greedy generate with its own cache: 64 new
tokens, identical ids, for GPT-2, Llama (GQA), Mistral (sliding window 16, shorter than the
generation) and Qwen2, each optimized from the torch module and from its no-cache ONNX export by
both torch exporters (dynamic batch and sequence axes); batch 1, and batch 2 with left padding
of different lengths in the two rows.

Each (family, source) is one module-scoped fixture, its tests grouped for
``pytest -n 2 --dist loadgroup`` (plain ``-n`` works too, building a case at most twice).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import graphopt

from .hf_models import (EXPORTERS, FAMILIES, MISTRAL_WINDOW, example_inputs, export_onnx,
                        hf_generate, left_padded, prompt_rows)

NEW = 64
MAX_LENGTH = 80  # the longest prompt (11) + 64 new tokens fits
SOURCES = ("torch",) + EXPORTERS
CASES = [pytest.param((f, s), id=f"{f}-{s}", marks=pytest.mark.xdist_group(f"{f}-{s}"))
         for f in FAMILIES for s in SOURCES]


@dataclass
class Family:
    module: nn.Module
    batch1: tuple[torch.Tensor, torch.Tensor]        # prompt, reference
    batch2: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # prompt, mask, reference


def _batch2() -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows, left-padded by 2 and by 6 tokens (width 11)."""
    return left_padded(prompt_rows(12, (9, 5)), width=11)


@pytest.fixture(scope="module")
def families() -> dict[str, Family]:
    """Modules and transformers' references, built once per family on first use."""
    return {}


def _family(store: dict[str, Family], name: str) -> Family:
    if name not in store:
        m = FAMILIES[name]()
        ids1 = torch.tensor([prompt_rows(11, (7,))[0]])
        ids2, mask2 = _batch2()
        store[name] = Family(m, (ids1, hf_generate(m, ids1, None, NEW)),
                             (ids2, mask2, hf_generate(m, ids2, mask2, NEW)))
    return store[name]


@dataclass
class Case:
    name: str
    family: Family
    onnx_path: Path | None  # the no-cache export (None: optimized from the torch module)
    om: Any                 # graphopt.optimize(..., kv_cache=True)


@pytest.fixture(scope="module", params=CASES)
def case(request: pytest.FixtureRequest, families: dict[str, Family],
         tmp_path_factory: pytest.TempPathFactory) -> Case:
    """A family's model optimized with kv_cache=True from the case's source."""
    name, source = request.param
    fam = _family(families, name)
    path = None
    if source == "torch":
        src: Any = fam.module
        extra: dict[str, Any] = {"example_inputs": example_inputs()}
    else:
        path = export_onnx(fam.module, tmp_path_factory.mktemp("kv") / f"{name}.onnx", source)
        src, extra = str(path), {}
    om = graphopt.optimize(src, budget=0, kv_cache=True, max_length=MAX_LENGTH, **extra)
    return Case(name, fam, path, om)


def test_the_cache_layout(case: Case) -> None:
    """Only the key/value heads are cached (GQA: 2 of 4); Mistral's window is found."""
    spec = case.om.kv.derivation.spec
    assert (spec.num_layers, spec.num_kv_heads) == (2, 2)
    assert spec.num_heads == (2 if case.name == "gpt2" else 4)
    assert spec.window == (MISTRAL_WINDOW if case.name == "mistral" else None)
    if case.onnx_path is not None:  # the export's batch and sequence axes are symbolic
        import onnx

        for v in onnx.load(str(case.onnx_path)).graph.input:
            dims = v.type.tensor_type.shape.dim
            assert [d.HasField("dim_param") for d in dims] == [True, True], v.name


def test_batch_one_equals_transformers(case: Case) -> None:
    ids, want = case.family.batch1
    got = case.om.generate(ids, max_new_tokens=NEW)
    assert isinstance(got, torch.Tensor)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_left_padded_batch_equals_transformers(case: Case) -> None:
    ids, mask, want = case.family.batch2
    got = case.om.generate(ids, max_new_tokens=NEW, attention_mask=mask)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_the_window_matters_for_mistral(families: dict[str, Family]) -> None:
    """Without its sliding window the same Mistral generates other tokens: the tests above
    would see a cache that ignored the window."""
    fam = _family(families, "mistral")
    full = FAMILIES["mistral"](window=None)
    ids, mask, want = fam.batch2
    assert not torch.equal(hf_generate(full, ids, mask, NEW), want)
    ids1, want1 = fam.batch1
    assert not torch.equal(hf_generate(full, ids1, None, NEW), want1)


def test_the_ragged_list_form_pads_like_the_mask(case: Case) -> None:
    """Prompts as a list of lists (left-padded by om.generate) give the rows of the masked
    tensor form, shifted by the padding they do not carry."""
    ids, mask, want = case.family.batch2
    rows = [ids[b][mask[b] == 1].tolist() for b in range(2)]
    got = np.asarray(case.om.generate(rows, max_new_tokens=NEW))
    width = max(len(r) for r in rows)
    extra = ids.shape[1] - width  # columns of padding in every row of the tensor form
    np.testing.assert_array_equal(got, want[:, extra:].numpy())
