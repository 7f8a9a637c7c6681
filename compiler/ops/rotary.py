"""Rotary position embedding (RoPE) as one op: ``rotary_embedding``.

``rotary_embedding(x, cos, sin)``: x [B, H, S, D] (D even), cos / sin [B', S, D/2] with B' 1 or
B (one cache for every sequence of the batch, or one each) ->

    y = x * cat(c, c) + rotate_half(x) * cat(s, s)
    rotate_half(x) = cat(-x[..., D/2:], x[..., :D/2])

with c / s broadcast over the heads axis (``cos[:, None]``). This is ONNX RotaryEmbedding
(opset 23) in its non-interleaved form over the full head size without position_ids; the value is
computed in x's dtype exactly as the composition above is (so a fused graph computes what the
HF-style composition computed, bit for bit in numpy and torch).

ONNX export: RotaryEmbedding at opset >= 23 for f32 / f16 / bf16 (ONNX Runtime 1.32 does not
broadcast a batch-1 cache against B > 1, so such a cache is Expanded to [B, S, D/2] first, once
per cache and batch size); below opset 23 or for other dtypes the Concat/Slice/Neg/Mul/Add
composition. Import: an ONNX RotaryEmbedding maps when it has that form (4-D input, no
position_ids, interleaved=0, rotary_embedding_dim 0 or D, a cache of x's batch); anything else
stays opaque with the reason.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import ShapeError
from ..ir.node import Attrs
from ..ir.types import DType, TensorType, ValueType
from .elementwise import (FLOAT, build, check_kind, emit1, in_type, known_rank, onnx_attrs,
                          onnx_inputs, same_dtypes)
from .registry import Cost, Example, OpDef, Unsupported, nbytes, numel, register, tensor_types
from .shape import i64_const

ONNX_FLOATS = (DType.f32, DType.f16, DType.bf16)  # RotaryEmbedding's type constraint


def rope(x: np.ndarray, c: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The reference over numpy arrays (object arrays of z3 terms too)."""
    h = x.shape[-1] // 2
    cc = np.concatenate([c, c], axis=-1)[:, None]
    ss = np.concatenate([s, s], axis=-1)[:, None]
    rot = np.concatenate([-x[..., h:], x[..., :h]], axis=-1)
    return x * cc + rot * ss


@register
class RotaryEmbedding(OpDef):
    name = "rotary_embedding"
    min_inputs = max_inputs = 3
    onnx_min_opset = 23
    onnx = ("RotaryEmbedding",)

    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        if attrs:
            raise ShapeError(f"{self.name}: takes no attributes, got {sorted(attrs)}")
        return attrs

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        x, c, s = tensor_types(self.name, in_types)
        desc = f"{self.name}({x}, {c}, {s})"
        shape = known_rank(self.name, x)
        check_kind(self.name, x, FLOAT)
        if len(shape) != 4:
            raise ShapeError(f"{desc}: x must be [B, H, S, D]")
        b, _, seq, d = shape
        if not isinstance(d, int) or d % 2:
            raise ShapeError(f"{desc}: head size D={d} must be a static even number")
        for t, nm in ((c, "cos"), (s, "sin")):
            if t.dtype != x.dtype:
                raise ShapeError(f"{desc}: {nm} dtype differs from x")
            cs = known_rank(self.name, t)
            if len(cs) != 3 or cs[0] not in (1, b) or cs[1] != seq or cs[2] != d // 2:
                raise ShapeError(f"{desc}: {nm} must be [1 or {b}, {seq}, {d // 2}]")
        if c.shape != s.shape:
            raise ShapeError(f"{desc}: cos and sin shapes differ")
        return (x,)

    # ---- semantics ---------------------------------------------------------------------------
    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        x, c, s = (np.asarray(v) for v in xs)
        return (np.asarray(rope(x, c, s)).astype(x.dtype, copy=False),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        import torch

        x, c, s = xs
        h = x.shape[-1] // 2
        cc = torch.cat([c, c], dim=-1)[:, None]
        ss = torch.cat([s, s], dim=-1)[:, None]
        rot = torch.cat([-x[..., h:], x[..., :h]], dim=-1)
        return (x * cc + rot * ss,)

    def symbolic(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        """Linear in x with cos / sin as further variables: the reference over object arrays
        (products and sums of z3 terms, no uninterpreted functions)."""
        x, c, s = (np.asarray(v, dtype=object) for v in xs)
        return (rope(x, c, s),)

    def cost(self, in_types: tuple[ValueType, ...], out_types: tuple[ValueType, ...],
             attrs: Attrs) -> Cost:
        b = sum(nbytes(t) for t in in_types) + sum(nbytes(t) for t in out_types)
        return Cost(3.0 * numel(out_types[0]), float(b), 1)  # two products and a sum

    def split_axes(self, in_types: tuple[ValueType, ...], out_types: tuple[ValueType, ...],
                   attrs: Attrs, axis: int) -> tuple[int | None, ...] | None:
        """x [B, H, S, D] with cos / sin [B or 1, S, D/2]: heads need nothing of cos / sin's
        split, batch and positions split them alike; the head size D mixes (rotate half)."""
        c = in_types[1]
        assert isinstance(c, TensorType) and c.shape is not None
        if axis == 0:
            return (0, 0, 0) if c.shape[0] != 1 else (0, None, None)
        return {1: (1, None, None), 2: (2, 1, 1)}.get(axis)

    # ---- ONNX --------------------------------------------------------------------------------
    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        a = onnx_attrs(ctx, {"interleaved": 0, "num_heads": 0, "rotary_embedding_dim": 0})
        if ctx.num_outputs != 1:
            raise Unsupported(f"{ctx.op_type}: {ctx.num_outputs} outputs")
        x, c, s, pos = onnx_inputs(ctx, 3, 4)
        if pos is not None:
            raise Unsupported(f"{ctx.op_type} with position_ids (cache indexed per token)")
        if int(a["interleaved"]) != 0:
            raise Unsupported(f"{ctx.op_type}: interleaved=1 (rotates adjacent pairs)")
        xs = x.type.shape
        if len(xs) != 4:
            raise Unsupported(f"{ctx.op_type}: input {x.type} is not 4-D [B, H, S, D]")
        if int(a["rotary_embedding_dim"]) not in (0, xs[3]):
            raise Unsupported(f"{ctx.op_type}: partial rotary_embedding_dim="
                              f"{a['rotary_embedding_dim']} of head size {xs[3]}")
        if c.type.shape is not None and len(c.type.shape) == 3 and c.type.shape[0] != xs[0]:
            raise Unsupported(f"{ctx.op_type}: cache {c.type} is not of x's batch {xs[0]}")
        same_dtypes(ctx, [x, c, s])
        return [build(ctx, self.name, [x, c, s])]

    def to_onnx(self, ctx: Any, node: Any) -> None:
        t, ct = in_type(node), in_type(node, 1)
        x, c, s = (ctx.name(v) for v in node.inputs)
        if ctx.opset >= 23 and t.dtype in ONNX_FLOATS:
            b = t.shape[0]
            if ct.shape[0] != b:  # a batch-1 cache: ONNX Runtime needs it at x's batch
                c, s = (_expand_batch(ctx, v, b) for v in (c, s))
            ctx.emit("RotaryEmbedding", [x, c, s], ctx.out_names(node))
            return
        h = t.shape[3] // 2

        def full(v: str) -> str:  # cat(v, v) with a heads axis: [B', 1, S, D]
            cat = emit1(ctx, "Concat", [v, v], axis=2)
            if ctx.opset >= 13:
                return emit1(ctx, "Unsqueeze", [cat, i64_const(ctx, [1])])
            return emit1(ctx, "Unsqueeze", [cat], axes=[1])

        def half(lo: int, hi: int) -> str:
            if ctx.opset >= 10:
                return emit1(ctx, "Slice", [x, i64_const(ctx, [lo]), i64_const(ctx, [hi]),
                                            i64_const(ctx, [3])])
            return emit1(ctx, "Slice", [x], starts=[lo], ends=[hi], axes=[3])

        rot = emit1(ctx, "Concat", [emit1(ctx, "Neg", [half(h, 2 * h)]), half(0, h)], axis=3)
        xc = emit1(ctx, "Mul", [x, full(c)])
        rs = emit1(ctx, "Mul", [rot, full(s)])
        ctx.emit("Add", [xc, rs], ctx.out_names(node))

    def examples(self, rng: np.random.Generator) -> list[Example]:
        def r(*shape: int, dt: Any = np.float32) -> np.ndarray:
            return rng.standard_normal(shape).astype(dt)

        def cs(*shape: int, dt: Any = np.float32) -> list[np.ndarray]:
            ang = rng.standard_normal(shape)
            return [np.cos(ang).astype(dt), np.sin(ang).astype(dt)]

        tol = {"rtol": 1e-5, "atol": 1e-6}
        return [
            Example([r(2, 3, 5, 8), *cs(2, 5, 4)], **tol),  # one cache per sequence
            Example([r(2, 2, 4, 6), *cs(1, 4, 3)], **tol),  # one cache for the batch
            Example([r(1, 1, 1, 2), *cs(1, 1, 1)], **tol),  # smallest: one token, D=2
            Example([r(1, 2, 3, 8, dt=np.float16), *cs(1, 3, 4, dt=np.float16)],
                    rtol=4e-3, atol=4e-3),
        ]


def _expand_batch(ctx: Any, cache: str, b: Any) -> str:
    """``cache`` [1, S, D/2] expanded to [b, S, D/2] (b static or a symbol), once per export."""
    key = ("rotary_expand", cache, b)
    hit = ctx.memo.get(key)
    if hit is not None:
        return hit
    if isinstance(b, int):
        shape = i64_const(ctx, [b, 1, 1])
    else:
        shape = emit1(ctx, "Concat", [ctx.sym_dim(b), i64_const(ctx, [1, 1])], axis=0)
    out = emit1(ctx, "Expand", [cache, shape])
    ctx.memo[key] = out
    return out
