"""The mask and position probes (graphopt.kv.probe): masks computed at run time from the sequence
length and the attention_mask, measured at several lengths and paddings against the canonical
causal / sliding-window / padding masks; arange and cumsum positions; size-independent values.

The graphs are hand-built IR with the masks made of the ONNX ``Shape`` / ``Range`` nodes the
importer keeps (``graphopt.kv.glue``), as exported decoders compute them."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

from graphopt.ir.graph import Graph
from graphopt.ir.node import Node, Value, constant, input_node, op
from graphopt.ir.types import DType, TensorType
from graphopt.kv import glue
from graphopt.kv.probe import MaskFacts, Prober, is_arange, size_independent
from graphopt.kv.seqaxis import analyze

H, V = 4, 8
F32_MIN = float(np.finfo(np.float32).min)


class Aux:
    """The aux values a decoder's mask computation starts from."""

    def __init__(self, ids: Value, amask: Value) -> None:
        self.ids, self.amask = ids, amask
        self.S = glue.length(ids, 1)                                   # i64 scalar
        self.r = glue.arange(constant(np.array(0, np.int64)), self.S, "s")  # [s]
        self.qi = op("unsqueeze", self.r, axes=(1,))                   # [s, 1]
        self.kj = op("unsqueeze", self.r, axes=(0,))                   # [1, s]
        self.causal = op("less_equal", self.kj, self.qi)               # [s, s]
        self.pad = op("unsqueeze", op("cast", amask, to=DType.bool), axes=(1, 2))  # [b,1,1,s]

    def window(self, w: Value) -> Value:
        return op("and", self.causal, op("greater", self.kj, op("sub", self.qi, w)))


MaskFn = Callable[[Aux], "Value | None"]


def _graph(mask: MaskFn, causal: bool = False, extra: Callable[[Aux], Value] | None = None
           ) -> tuple[Graph, Node, Value | None]:
    """A one-attention decoder whose attention reads ``mask(aux)`` (None: no mask input);
    ``extra(aux)`` is also returned as an output (to probe it)."""
    ids = input_node("input_ids", TensorType(("b", "s"), DType.i64))
    amask = input_node("attention_mask", TensorType(("b", "s"), DType.i64))
    aux = Aux(ids.out, amask.out)
    table = constant(np.random.default_rng(0).standard_normal((V, H)).astype(np.float32))
    x = op("unsqueeze", op("gather", table, ids.out, axis=0), axes=(1,))  # [b, 1, s, H]
    m = mask(aux)
    att = op("attention", x, x, x, *([m] if m is not None else []), causal=causal)
    outs, names = [att], ["y"]
    probe = extra(aux) if extra is not None else None
    return Graph([ids, amask], outs, names, name="probe_test"), att.node, probe


def _facts(mask: MaskFn, causal: bool = False, max_length: int = 16) -> "MaskFacts | str":
    g, att, _ = _graph(mask, causal)
    return Prober(g, analyze(g)).mask_facts(att, max_length)


def test_causal_flag_alone() -> None:
    assert _facts(lambda a: None, causal=True) == MaskFacts(padding=False, window=None)


def test_causal_flag_with_padding_mask() -> None:
    assert _facts(lambda a: a.pad, causal=True) == MaskFacts(padding=True, window=None)


def test_bool_causal_and_padding_mask() -> None:
    facts = _facts(lambda a: op("and", op("unsqueeze", a.causal, axes=(0, 1)), a.pad))
    assert facts == MaskFacts(padding=True, window=None)


def test_additive_causal_mask_without_bias() -> None:
    """An HF-style float mask (0 kept, the dtype's minimum dropped) is a causal mask."""
    add = lambda a: op("where", a.causal, constant(np.array(0, np.float32)),  # noqa: E731
                       constant(np.array(F32_MIN, np.float32)))
    assert _facts(add) == MaskFacts(padding=False, window=None)


def test_sliding_window_is_measured() -> None:
    w3 = lambda a: a.window(constant(np.array(3, np.int64)))  # noqa: E731
    assert _facts(w3) == MaskFacts(padding=False, window=3)
    padded = lambda a: op("and", op("unsqueeze", w3(a), axes=(0, 1)), a.pad)  # noqa: E731
    assert _facts(padded) == MaskFacts(padding=True, window=3)


def test_window_longer_than_max_length_is_not_seen() -> None:
    """The facts hold up to max_length: a window of 20 looks like full causality up to 16."""
    w20 = lambda a: a.window(constant(np.array(20, np.int64)))  # noqa: E731
    assert _facts(w20, max_length=16) == MaskFacts(padding=False, window=None)
    assert _facts(w20, max_length=32) == MaskFacts(padding=False, window=20)


def test_bidirectional_mask_is_refused() -> None:
    why = _facts(lambda a: a.pad)
    assert isinstance(why, str)
    assert why.startswith("the attention is not causal: a query sees a later key")


def test_alibi_bias_is_refused() -> None:
    def alibi(a: Aux) -> Value:
        dist = op("cast", op("sub", a.qi, a.kj), to=DType.f32)
        return op("where", a.causal, op("neg", dist), constant(np.array(F32_MIN, np.float32)))
    why = _facts(alibi)
    assert isinstance(why, str) and "adds a bias to kept scores (ALiBi" in why


def test_mask_without_the_diagonal_is_refused() -> None:
    why = _facts(lambda a: op("less", a.kj, a.qi))  # keys j < i: a token does not see itself
    assert isinstance(why, str) and "not a causal mask" in why


def test_window_that_grows_with_the_length_is_refused() -> None:
    half = lambda a: a.window(op("div", a.S, constant(np.array(2, np.int64))))  # noqa: E731
    why = _facts(half)
    assert isinstance(why, str) and "window changes with the sequence length" in why


def test_masks_are_measured_on_every_attention_mask_row() -> None:
    """A mask that keeps the padded keys of the padded rows only at some lengths (here: it
    ignores the attention_mask once the sequence is longer than 7) is not one fact."""
    def sometimes(a: Aux) -> Value:
        long = op("greater", a.S, constant(np.array(7, np.int64)))
        pad = op("or", a.pad, long)
        return op("and", op("unsqueeze", a.causal, axes=(0, 1)), pad)
    why = _facts(sometimes)
    assert isinstance(why, str) and "attention_mask differently at different lengths" in why


# ---- positions and size-independent values --------------------------------------------------

def _probe(extra: Callable[[Aux], Value]) -> tuple[Prober, Value]:
    g, _, v = _graph(lambda a: None, causal=True, extra=extra)
    assert v is not None
    return Prober(g, analyze(g)), v


def test_arange_positions() -> None:
    p, r = _probe(lambda a: a.r)
    assert is_arange(p, r)                                              # [s]
    p, r2 = _probe(lambda a: op("unsqueeze", a.r, axes=(0,)))
    assert is_arange(p, r2)                                             # [1, s]
    p, r3 = _probe(lambda a: op("add", a.r, constant(np.array(1, np.int64))))
    assert not is_arange(p, r3)
    p, m = _probe(lambda a: a.amask)
    assert not is_arange(p, m)


def test_positions_that_skip_padding() -> None:
    """cumsum(attention_mask) - 1 (clipped at 0): the contract's position_ids."""
    def skip(a: Aux) -> Value:
        (cs,) = glue.onnx_op("CumSum", [a.amask, constant(np.array(1, np.int64))],
                             [TensorType(("b", "s"), DType.i64)])
        return op("maximum", op("sub", cs, constant(np.array(1, np.int64))),
                  constant(np.array(0, np.int64)))
    p, v = _probe(skip)
    assert is_arange(p, v)


def test_size_independent_values() -> None:
    p, zero = _probe(lambda a: op("mul", a.S, constant(np.array(0, np.int64))))
    got = size_independent(p, zero)
    assert got is not None and got.shape == () and int(got) == 0
    p, s = _probe(lambda a: a.S)
    assert size_independent(p, s) is None


@pytest.mark.parametrize("batch", [2, 3])
def test_prober_feeds_pad_rows_differently(batch: int) -> None:
    g, _, _ = _graph(lambda a: None, causal=True)
    p = Prober(g, analyze(g), batch=batch)
    plain = p.feeds(7, pad=False)
    assert plain["input_ids"].shape == (batch, 7) and plain["attention_mask"].all()
    m = p.feeds(7, pad=True)["attention_mask"]
    assert m.shape == (batch, 7) and m[0].all()
    assert m[1, 0] == 0 and m[1, -1] == 1                                # left padding
    if batch > 2:
        assert m[-1, -1] == 0                                            # right padding
