"""The sequence-axis analysis (graphopt.kv.seqaxis) and the ``OpDef.mixed_axes`` declarations it
reads: which values carry the token stream, and every op that mixes positions anywhere but in
attention is refused with its node and the reason.

The graphs are hand-built IR: a one-block decoder over ``input_ids`` [b, s] whose hidden state
[b, s, 4] goes through a chosen op before a causal attention."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

from graphopt.ir.graph import Graph
from graphopt.ir.node import Node, Value, constant, input_node, op
from graphopt.ir.types import DType, TensorType
from graphopt.kv.seqaxis import (KVCacheError, Refusal, analyze, find_tokens, require_legal)
from graphopt.ops.registry import get_op

H, V = 4, 8
RNG = np.random.default_rng(0)


def _w(*shape: int) -> Value:
    return constant(RNG.standard_normal(shape).astype(np.float32))


def _decoder(mix: Callable[[Value], Value] | None = None, *, seq: object = "s",
             extra: str | None = None, mask_from_tokens: bool = False,
             const_output: bool = False) -> Graph:
    """ids -> embedding -> mix(x) -> causal attention (one head) -> logits [b, s, V]."""
    ids = input_node("input_ids", TensorType(("b", seq), DType.i64))
    amask = input_node("attention_mask", TensorType(("b", seq), DType.i64))
    inputs = [ids, amask]
    x = op("gather", _w(V, H), ids.out, axis=0)                      # [b, s, H]
    if extra is not None:
        e = input_node(extra, TensorType(("b", seq), DType.i64))
        inputs.append(e)
        x = op("add", x, op("gather", _w(2, H), e.out, axis=0))
    if mix is not None:
        x = mix(x)
    qkv = op("unsqueeze", op("matmul", x, _w(H, H)), axes=(1,))      # [b, 1, s, H]
    if mask_from_tokens:
        pad = op("unsqueeze", op("greater", ids.out, constant(np.array(0, np.int64))),
                 axes=(1, 2))                                         # [b, 1, 1, s]
        att = op("attention", qkv, qkv, qkv, pad, causal=True)
    else:
        att = op("attention", qkv, qkv, qkv, causal=True)
    logits = op("matmul", op("squeeze", att, axes=(1,)), _w(H, V))
    outs, names = [logits], ["logits"]
    if const_output:
        outs.append(_w(2, 2))
        names.append("table")
    return Graph(inputs, outs, names, name="tiny")


def _only(info, op_name: str) -> Refusal:
    rs = [r for r in info.refusals if r.node.op == op_name]
    assert len(rs) == 1, [str(r) for r in info.refusals]
    return rs[0]


def test_legal_decoder_classifies_rows_aux_const() -> None:
    g = _decoder()
    info = analyze(g)
    assert info.refusals == []
    assert info.seq == "s" and info.batch == "b"
    assert info.tokens.attrs["name"] == "input_ids" and info.mask is not None
    assert info.positions is None
    kinds = {n.op: info.kind[n] for n in g.nodes if n.op in ("gather", "attention", "matmul")}
    assert kinds == {"gather": "rows", "attention": "rows", "matmul": "rows"}
    assert info.kind[info.mask] == "aux"
    assert all(info.kind[n] == "const" for n in g.nodes if n.op == "constant")
    assert [a.op for a in info.attentions] == ["attention"]
    x = next(n for n in g.nodes if n.op == "gather").out
    assert info.seq_axes(x) == [1]


def test_row_local_ops_are_legal() -> None:
    """Norms and softmax over the hidden axis, reshapes that merge batch and sequence, slices,
    pads, tiles and concats along the hidden axis: all row-local."""
    def mix(x: Value) -> Value:
        y = op("layer_norm", x, _w(H), _w(H), axis=-1)
        y = op("softmax", y, axis=2)
        flat = op("matmul", op("reshape", y, shape=("b*s", H)), _w(H, H))  # [b*s, H]
        y = op("reshape", flat, shape=("b", "s", H))
        y = op("concat", op("slice", y, starts=(0,), ends=(2,), axes=(2,), steps=(1,)),
               op("pad", op("slice", y, starts=(2,), ends=(3,), axes=(2,), steps=(1,)),
                    pads=(0, 0, 0, 0, 0, 1), mode="constant", value=0.0), axis=2)
        y = op("slice", op("tile", y, repeats=(1, 1, 2)), starts=(0,), ends=(H,), axes=(2,),
               steps=(1,))
        return op("add", x, op("reduce_sum", y, axes=(2,), keepdims=True))
    g = _decoder(mix)
    info = analyze(g)
    assert info.refusals == [], [str(r) for r in info.refusals]
    flat = next(n for n in g.nodes if n.op == "reshape")
    assert info.seq_axes(flat.out) == [0]  # b*s: the merged axis still carries the sequence
    assert info.has_seq("b*s") and not info.has_seq("b")


MIXERS: dict[str, tuple[Callable[[Value], Value], str, str]] = {
    # name: (the op on x [b, s, H], the refused op, the reason's words)
    "sum over the sequence": (
        lambda x: op("add", x, op("reduce_sum", x, axes=(1,), keepdims=True)), "reduce_sum",
        "reduce_sum reduces along the sequence axis (axis 1 of input 0, dim s)"),
    "mean over the sequence": (
        lambda x: op("add", x, op("reduce_mean", x, axes=(-2,), keepdims=True)), "reduce_mean",
        "reduce_mean reduces along the sequence axis (axis 1 of input 0, dim s)"),
    "softmax over the sequence": (
        lambda x: op("softmax", x, axis=1), "softmax",
        "softmax reduces along the sequence axis"),
    "norm over the sequence": (
        lambda x: op("transpose", op("layer_norm", op("transpose", x, perm=(0, 2, 1)), _w(1),
                                     _w(1), axis=-1), perm=(0, 2, 1)), "layer_norm",
        "layer_norm reduces along the sequence axis (axis 2 of input 0, dim s)"),
    "first token (a pooler)": (
        lambda x: op("add", x, op("unsqueeze", op("gather", x, constant(np.array(0, np.int64)),
                                                  axis=1), axes=(1,))), "gather",
        "gather moves data along the sequence axis (axis 1 of input 0, dim s)"),
    "matmul over the sequence": (
        lambda x: op("matmul", op("transpose", x, perm=(0, 2, 1)), x), "matmul",
        "matmul combines positions along the sequence axis (axis 2 of input 0, dim s)"),
}


@pytest.mark.parametrize("name", sorted(MIXERS))
def test_position_mixing_op_is_refused_with_node_and_reason(name: str) -> None:
    mix, refused, reason = MIXERS[name]
    info = analyze(_decoder(mix))
    r = _only(info, refused)
    assert reason in r.reason, r.reason
    assert "a token's value would depend on other positions" in r.reason
    assert str(r).startswith(r.node.where) and f"{refused} #" in str(r)
    with pytest.raises(KVCacheError, match="illegal for this model") as e:
        require_legal(info)
    assert r.node.where in str(e.value)


def test_tile_along_the_sequence_is_refused() -> None:
    """(Concat, slice and pad along a symbolic sequence have no IR form: the importers keep
    them opaque, refused as unknown; their declarations are tested below.)"""
    info = analyze(_decoder(lambda x: op("tile", x, repeats=(1, 2, 1))))  # [b, 2*s, H]
    assert "tile moves data along the sequence axis (axis 1 of input 0, dim s)" in \
        _only(info, "tile").reason


def test_mask_computed_from_token_values_is_refused() -> None:
    info = analyze(_decoder(mask_from_tokens=True))
    r = _only(info, "attention")
    assert "the attention mask is computed from the token values" in r.reason


def test_input_no_generation_loop_feeds_is_refused() -> None:
    info = analyze(_decoder(extra="segment_ids"))
    (r,) = info.refusals
    assert r.node.op == "input"
    assert "input 'segment_ids' is not one a generation loop feeds" in str(r)


def test_output_without_tokens_is_refused() -> None:
    info = analyze(_decoder(const_output=True))
    (r,) = info.refusals
    assert "output 'table' does not depend on the tokens" in r.reason


def test_static_sequence_is_refused() -> None:
    with pytest.raises(KVCacheError, match=r"sequence axis of 'input_ids' is static \(6\)"):
        analyze(_decoder(seq=6))


def test_token_input_found_by_type_or_refused_when_ambiguous() -> None:
    ids = input_node("tokens", TensorType(("b", "s"), DType.i64))
    amask = input_node("attention_mask", TensorType(("b", "s"), DType.i64))
    g = Graph([amask, ids], [op("gather", _w(V, H), ids.out, axis=0)], ["y"], name="t")
    assert find_tokens(g) is ids
    other = input_node("more_ids", TensorType(("b", "s"), DType.i32))
    g2 = Graph([amask, ids, other], [op("gather", _w(V, H), ids.out, axis=0)], ["y"], name="t")
    with pytest.raises(KVCacheError, match="cannot tell which input holds the token ids"):
        find_tokens(g2)


def test_require_legal_lists_at_most_limit_refusals() -> None:
    def mix(x: Value) -> Value:
        for _ in range(5):
            x = op("add", x, op("reduce_sum", x, axes=(1,), keepdims=True))
        return x
    info = analyze(_decoder(mix))
    assert len(info.refusals) == 5
    with pytest.raises(KVCacheError) as e:
        require_legal(info, limit=3)
    assert str(e.value).count("reduce_sum reduces") == 3 and "... and 2 more" in str(e.value)
    require_legal(analyze(_decoder()))  # legal: no error


# ---- OpDef.mixed_axes, one test per op that declares it (or relies on its reduced_axes) -----

def _t(*shape: object, dtype: DType = DType.f32) -> TensorType:
    return TensorType(tuple(shape), dtype)  # type: ignore[arg-type]


def _axes(name: str, ins: list[TensorType], **attrs: object) -> tuple[tuple[int, int], ...] | None:
    """mixed_axes of the node ``name`` built over inputs of the given types."""
    vals = [input_node(f"x{i}", t).out for i, t in enumerate(ins)]
    n = Node.build(name, vals, attrs)
    return get_op(name).mixed_axes(tuple(v.type for v in n.inputs), n.attrs)


def test_mixed_axes_matmul_contraction_axes() -> None:
    assert _axes("matmul", [_t(2, 3, 4), _t(4, 5)]) == ((0, 2), (1, 0))
    assert _axes("matmul", [_t(2, 3, 4), _t(2, 4, 5)]) == ((0, 2), (1, 1))
    assert _axes("matmul", [_t(3, 4), _t(4)]) == ((0, 1), (1, 0))
    q = _t(3, 4, dtype=DType.u8)
    w = _t(4, 5, dtype=DType.i8)
    zq = _t(dtype=DType.u8)
    zw = _t(dtype=DType.i8)
    assert _axes("matmul_integer", [q, w, zq, zw]) == ((0, 1), (1, 0))


def test_mixed_axes_concat_split_slice() -> None:
    assert _axes("concat", [_t(2, 3), _t(2, 5), _t(2, 1)], axis=1) == ((0, 1), (1, 1), (2, 1))
    assert _axes("concat", [_t(2, 3), _t(2, 5)], axis=-1) == ((0, 1), (1, 1))
    assert _axes("split", [_t(2, 7)], axis=1, sizes=(3, 4)) == ((0, 1),)
    assert _axes("slice", [_t(5, 7, 3)], starts=(1, 0), ends=(4, 2), axes=(0, 2),
                 steps=(1, 1)) == ((0, 0), (0, 2))


def test_mixed_axes_pad_tile_gather_only_the_axes_they_move() -> None:
    assert _axes("pad", [_t(3, 4, 5)], pads=(0, 1, 0, 0, 0, 0), mode="constant",
                 value=0.0) == ((0, 1),)
    assert _axes("pad", [_t(3, 4)], pads=(0, 0, 0, 0), mode="constant", value=0.0) == ()
    assert _axes("tile", [_t(2, 3, 4)], repeats=(1, 2, 1)) == ((0, 1),)
    assert _axes("tile", [_t(2, 3)], repeats=(1, 1)) == ()
    # gather: the data along its axis; the indices stay row-local (an embedding lookup)
    assert _axes("gather", [_t(8, 4), _t(2, 3, dtype=DType.i64)], axis=0) == ((0, 0),)
    assert _axes("gather", [_t(2, 5, 4), _t(dtype=DType.i64)], axis=1) == ((0, 1),)


def test_mixed_axes_layout_ops_move_no_positions() -> None:
    assert _axes("transpose", [_t(2, 3, 5)], perm=(2, 0, 1)) == ()
    assert _axes("expand", [_t(3, 1)], shape=(2, 3, 5)) == ()
    assert _axes("reshape", [_t(2, 3, 5)], shape=(6, 5)) == ()
    assert _axes("unsqueeze", [_t(3, 5)], axes=(0,)) == ()
    assert _axes("add", [_t(2, 3), _t(3)]) == ()
    assert _axes("rotary_embedding", [_t(1, 2, 3, 4), _t(1, 3, 2), _t(1, 3, 2)]) == ()


def test_mixed_axes_conv_and_pools_slide_along_spatial_axes() -> None:
    assert _axes("conv", [_t(2, 3, 7), _t(4, 3, 3)], strides=(1,), pads=(1, 1),
                 dilations=(1,), group=1) == ((0, 2),)
    assert _axes("conv", [_t(2, 3, 7, 6), _t(4, 3, 3, 2)], strides=(1, 1),
                 pads=(0, 0, 0, 0), dilations=(1, 1), group=1) == ((0, 2), (0, 3))
    for pool in ("max_pool", "avg_pool"):
        assert _axes(pool, [_t(2, 3, 7, 6)], kernel=(3, 2), strides=(1, 1),
                     pads=(0, 0, 0, 0), dilations=(1, 1), ceil_mode=False) == ((0, 2), (0, 3))


def test_mixed_axes_reductions_are_their_reduced_axes() -> None:
    x = _t(2, 3, 4)
    assert _axes("reduce_sum", [x], axes=(1,), keepdims=True) == ((0, 1),)
    assert set(_axes("reduce_mean", [x], axes=(-1, 0), keepdims=False) or ()) == {(0, 2),
                                                                                  (0, 0)}
    assert _axes("reduce_max", [x], axes=(1,), keepdims=True) == ((0, 1),)
    assert _axes("softmax", [x], axis=1) == ((0, 1),)
    assert _axes("log_softmax", [x], axis=-1) == ((0, 2),)
    assert _axes("argmax", [x], axis=0) == ((0, 0),)
    assert _axes("layer_norm", [x, _t(4), _t(4)], axis=-1) == ((0, 2),)
    assert _axes("rms_norm", [x, _t(4)], axis=-1) == ((0, 2),)


def test_mixed_axes_attention_keys_values_and_mask_key_axis() -> None:
    q, k = _t(1, 2, 3, 4), _t(1, 2, 5, 4)
    assert _axes("attention", [q, k, k], causal=False) == ((1, 2), (2, 2))
    assert _axes("attention", [q, k, k, _t(1, 1, 3, 5, dtype=DType.bool)],
                 causal=False) == ((1, 2), (2, 2), (3, 3))
    assert _axes("attention", [q, k, k, _t(3, 5, dtype=DType.bool)],
                 causal=False) == ((1, 2), (2, 2), (3, 1))


def test_mixed_axes_undeclared_is_none() -> None:
    """An op that declares nothing (opaque) is refused as unknown, never taken as row-local."""
    assert get_op("opaque").mixed_axes((_t(2, 3),), {}) is None  # type: ignore[arg-type]
