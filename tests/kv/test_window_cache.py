"""The rolling-buffer cache (``optimize(kv_cache=True, cache="window")``): a Mistral-config model
with sliding window 128 generates 512 tokens through a ring of 128 slots per layer, and its ids
equal those of the masked-window reference (transformers' Mistral without a cache over the
whole sequence, its own sliding-window mask applied: every generated id is the argmax of the
logits at the position before it) and of the dynamic cache
(the decode graph over all past tokens with the window in its mask). One prompt is longer than
the window (its prefill runs the windowed decode graph, the ring is filled with its last 128
tokens); the other is left-padded by 113 tokens.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

import graphopt

from .hf_models import example_inputs, left_padded, mistral, prompt_rows, greedy_consistent

WINDOW = 128
NEW = 512
PROMPTS = (150, 37)
MAX_LENGTH = max(PROMPTS) + NEW
POSITIONS = 704


@dataclass
class Setup:
    module: nn.Module
    ring: Any       # optimized with cache="window"
    dynamic: Any    # optimized with the default dynamic cache
    ids: torch.Tensor
    mask: torch.Tensor


def _optimize(m: nn.Module, **kw: Any) -> Any:
    return graphopt.optimize(m, example_inputs=example_inputs(), budget=0, kv_cache=True,
                             max_length=MAX_LENGTH, **kw)


@pytest.fixture(scope="module")
def setup() -> Setup:
    m = mistral(positions=POSITIONS, window=WINDOW)
    ids, mask = left_padded(prompt_rows(5, PROMPTS))
    return Setup(m, _optimize(m, cache="window"), _optimize(m), ids, mask)


@pytest.fixture(scope="module")
def ring_ids(setup: Setup) -> torch.Tensor:
    return setup.ring.generate(setup.ids, max_new_tokens=NEW, attention_mask=setup.mask)


def test_the_ring_is_the_window(setup: Setup) -> None:
    import onnx

    spec = setup.ring.kv.derivation.spec
    assert spec.window == WINDOW and spec.context_length >= MAX_LENGTH
    assert setup.ring.kv.options.cache == "window" and setup.ring.kv.ring_bytes is not None
    assert setup.dynamic.kv.ring_bytes is None
    ring = onnx.load_from_string(setup.ring.kv.ring_bytes)
    assert {v.name for v in ring.graph.input} == \
        {v.name for v in onnx.load_from_string(setup.ring.kv.decode_bytes).graph.input}


def test_512_tokens_equal_the_masked_window_reference(setup: Setup,
                                                      ring_ids: torch.Tensor) -> None:
    ok = greedy_consistent(setup.module, ring_ids, setup.mask, setup.ids.shape[1])
    assert ok.all(), f"first mismatching step per row: {(~ok).int().argmax(1).tolist()}"


def test_512_tokens_equal_the_dynamic_cache(setup: Setup, ring_ids: torch.Tensor) -> None:
    want = setup.dynamic.generate(setup.ids, max_new_tokens=NEW, attention_mask=setup.mask)
    torch.testing.assert_close(ring_ids, want, rtol=0, atol=0)


def test_the_window_matters(setup: Setup, ring_ids: torch.Tensor) -> None:
    """The same weights without a window generate other tokens, in both rows, and the
    reference tells them apart."""
    full = _optimize(mistral(positions=POSITIONS, window=None))
    assert full.kv.derivation.spec.window is None
    other = full.generate(setup.ids, max_new_tokens=NEW, attention_mask=setup.mask)
    assert all(not torch.equal(other[b], ring_ids[b]) for b in range(2))
    ok = greedy_consistent(setup.module, other, setup.mask, setup.ids.shape[1])
    assert not ok.all(dim=1).any()  # no row passes as the windowed model's greedy output


def test_a_prompt_within_the_window_and_batch_one(setup: Setup) -> None:
    """Batch 1, prompt shorter than the window: the ring starts partly empty."""
    ids = torch.tensor(prompt_rows(6, (9,)))
    got = setup.ring.generate(ids, max_new_tokens=300)
    want = setup.dynamic.generate(ids, max_new_tokens=300)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
