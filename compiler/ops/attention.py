"""Scaled dot-product attention as one op.

``attention(q, k, v, mask?) {scale, causal}``: q [B, H, S, D], k [B, Hkv, T, D],
v [B, Hkv, T, Dv] -> [B, H, S, Dv]. Grouped-query attention when Hkv < H (query head h reads
kv head h // (H / Hkv)). ``scale`` None means 1/sqrt(D). ``causal`` keeps key j for query i when
j <= i (top-left aligned, as torch's is_causal and ONNX Attention without a past). ``mask`` is
bool (True = keep) or additive in q's dtype, broadcastable to [B, H, S, T]. A query row whose
every score is masked out (-inf) gives a zero output row (torch and ONNX Attention agree).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..errors import ExportError, ShapeError
from ..ir.node import Attrs
from ..ir.types import DType, TensorType, ValueType, dim_product
from .registry import (SYM_DEFAULT, Cost, Example, NotSymbolic, OpDef, Unsupported,
                       broadcast_shapes, nbytes, register, tensor_types)
from .shape import aten_arg, build, check_attrs, i64_const, onnx_only_attrs, onnx_tensor


def default_scale(d: int) -> float:
    return 1.0 / math.sqrt(d)


def _heads_ratio(h: int, hkv: int) -> int:
    if hkv <= 0 or h % hkv:
        raise ValueError(f"{h} query heads are not a multiple of {hkv} kv heads")
    return h // hkv


def attention_numpy(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None,
                    scale: float | None, causal: bool) -> np.ndarray:
    """The reference: softmax(q k^T * scale + masks) v with zero rows where all is masked."""
    rep = _heads_ratio(q.shape[1], k.shape[1])
    if rep > 1:
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    acc = np.float32 if q.dtype == np.float16 else q.dtype
    sc = default_scale(q.shape[-1]) if scale is None else scale
    s = np.matmul(q.astype(acc), np.swapaxes(k.astype(acc), -1, -2)) * np.asarray(sc, acc)
    S, T = s.shape[-2], s.shape[-1]
    if causal:
        s = np.where(np.tril(np.ones((S, T), dtype=bool)), s, -np.inf)
    if mask is not None:
        s = np.where(mask, s, -np.inf) if mask.dtype == np.bool_ else s + mask.astype(acc)
    if T == 0:
        return np.zeros(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype)
    m = s.max(axis=-1, keepdims=True)
    dead = m == -np.inf
    with np.errstate(invalid="ignore", divide="ignore"):
        e = np.exp(s - np.where(dead, 0, m))
        p = e / e.sum(axis=-1, keepdims=True)
    p = np.where(dead, 0, p).astype(acc)
    return np.matmul(p, v.astype(acc)).astype(q.dtype)


def _sdpa_has_gqa() -> bool:
    import inspect

    import torch.nn.functional as F

    try:
        return "enable_gqa" in inspect.signature(F.scaled_dot_product_attention).parameters
    except (TypeError, ValueError):
        return False


@register
class Attention(OpDef):
    name = "attention"
    attr_names = ('scale', 'causal')
    min_inputs, max_inputs = 3, 4
    onnx = ("Attention",)
    aten = ("aten.scaled_dot_product_attention.default",
            "aten._scaled_dot_product_flash_attention_for_cpu.default",
            "aten._scaled_dot_product_attention_math.default",
            "aten._scaled_dot_product_flash_attention.default",
            "aten._scaled_dot_product_efficient_attention.default")
    cost_class = "heavy"
    matrix_unit = True
    triton_kernel = "attention"
    onnx_min_opset = 23

    def mixed_axes(self, in_types: tuple[ValueType, ...], attrs: Attrs
                   ) -> tuple[tuple[int, int], ...]:
        """Keys and values along their sequence axis, the mask along its key axis."""
        out = [(1, 2), (2, 2)]
        if len(in_types) == 4 and isinstance(in_types[3], TensorType) and in_types[3].shape:
            out.append((3, len(in_types[3].shape) - 1))
        return tuple(out)

    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        if set(attrs) - set(self.attr_names):
            return attrs  # infer names the unknown attribute
        scale = attrs.get("scale")
        if scale is not None:
            scale = float(scale)
            q = in_types[0] if in_types else None
            if (isinstance(q, TensorType) and q.shape is not None and len(q.shape) == 4
                    and isinstance(q.shape[3], int) and q.shape[3] > 0
                    and scale == default_scale(q.shape[3])):
                scale = None
        return Attrs({"scale": scale, "causal": bool(attrs.get("causal", False))})

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        check_attrs(self.name, attrs, self.attr_names)
        ts = tensor_types(self.name, in_types)
        desc = f"attention({', '.join(map(str, ts))})"
        q, k, v = ts[:3]
        for t, nm in ((q, "q"), (k, "k"), (v, "v")):
            if t.shape is None or len(t.shape) != 4:
                raise ShapeError(f"{desc}: {nm} must be [B, H, S, D]")
            if not t.dtype.is_float:
                raise ShapeError(f"{desc}: {nm} must be floating point")
        if not q.dtype == k.dtype == v.dtype:
            raise ShapeError(f"{desc}: q, k, v dtypes differ")
        B, H, S, D = q.shape  # type: ignore[misc]
        Bk, Hkv, T, Dk = k.shape  # type: ignore[misc]
        Bv, Hv, Tv, Dv = v.shape  # type: ignore[misc]
        if not (B == Bk == Bv):
            raise ShapeError(f"{desc}: batch dims differ")
        if D != Dk:
            raise ShapeError(f"{desc}: q and k head sizes differ ({D} vs {Dk})")
        if Hv != Hkv or Tv != T:
            raise ShapeError(f"{desc}: k and v heads/lengths differ")
        if H != Hkv:
            if not (isinstance(H, int) and isinstance(Hkv, int)):
                raise ShapeError(f"{desc}: symbolic head counts {H} vs {Hkv}")
            _heads_ratio(H, Hkv)
        if attrs.get("scale") is None and not isinstance(D, int):
            raise ShapeError(f"{desc}: default scale needs a static head size")
        if len(ts) == 4:
            m = ts[3]
            if m.shape is None or len(m.shape) > 4:
                raise ShapeError(f"{desc}: mask must have rank <= 4")
            if m.dtype != DType.bool and m.dtype != q.dtype:
                raise ShapeError(f"{desc}: mask must be bool or {q.dtype.value}")
            full = (B, H, S, T)
            if broadcast_shapes(desc, m.shape, full) != full:
                raise ShapeError(f"{desc}: mask {m} does not broadcast to {list(full)}")
        return (TensorType((B, H, S, Dv), q.dtype),)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        q, k, v = (np.asarray(x) for x in xs[:3])
        mask = np.asarray(xs[3]) if len(xs) == 4 else None
        if q.dtype == object:
            return self.symbolic(xs, attrs)
        return (attention_numpy(q, k, v, mask, attrs["scale"], attrs["causal"]),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        import torch
        import torch.nn.functional as F

        q, k, v = xs[:3]
        mask = xs[3] if len(xs) == 4 else None
        S, T = q.shape[-2], k.shape[-2]
        causal = attrs["causal"]
        if causal and mask is not None:
            keep = torch.ones(S, T, dtype=torch.bool, device=q.device).tril()
            mask = mask & keep if mask.dtype == torch.bool else \
                mask.masked_fill(~keep, float("-inf"))
            causal = False
        kw: dict[str, Any] = {}
        H, Hkv = q.shape[1], k.shape[1]
        if H != Hkv:
            rep = _heads_ratio(H, Hkv)
            if _sdpa_has_gqa():
                kw["enable_gqa"] = True
            else:
                k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if mask is not None and mask.dtype != torch.bool:
            # rows masked out entirely give 0 (torch's math kernel would give NaN here)
            dead = (mask == float("-inf")).all(dim=-1, keepdim=True)
        else:
            dead = None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                             scale=attrs["scale"], **kw)
        if dead is not None and bool(dead.any()):
            out = out.masked_fill(dead, 0.0)
        return (out,)

    def symbolic(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        """z3 form: exp is the uninterpreted ``exp`` (ops/symbolic.py); masked scores drop out of
        the softmax sum (a concrete bool mask or causal mask), an additive mask adds to the
        score, a symbolic bool mask selects with If."""
        import z3

        from .elementwise import is_bool_term
        from .symbolic import uf

        q, k, v = (np.asarray(x, dtype=object) for x in xs[:3])
        mask = np.asarray(xs[3]) if len(xs) == 4 else None
        rep = _heads_ratio(q.shape[1], k.shape[1])
        if rep > 1:
            k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        D = q.shape[-1]
        sc = attrs["scale"]
        s = np.matmul(q, np.swapaxes(k, -1, -2))
        if sc is None:
            s = s / z3.Sqrt(z3.RealVal(D)) if math.isqrt(D) ** 2 != D else s / math.isqrt(D)
        elif sc != 1.0:
            s = s * z3.RealVal(sc)
        S, T = s.shape[-2], s.shape[-1]
        B, H = s.shape[0], s.shape[1]
        keep: np.ndarray = np.ones((B, H, S, T), dtype=object)
        keep[:] = True
        if attrs["causal"]:
            keep = keep & np.tril(np.ones((S, T), dtype=bool))
        if mask is not None:
            mb = np.broadcast_to(np.asarray(mask, dtype=object), (B, H, S, T))
            if mask.size and all(is_bool_term(x) for x in mb.reshape(-1)):
                keep = np.vectorize(_and, otypes=[object])(keep, mb)
            else:
                # additive: -inf entries (and If-trees with -inf leaves) mask the score out
                parts = np.vectorize(_split_additive, otypes=[object])(mb)
                keep = np.vectorize(_and, otypes=[object])(
                    keep, np.vectorize(lambda kv: kv[0], otypes=[object])(parts))
                s = s + np.vectorize(lambda kv: kv[1], otypes=[object])(parts)
        exp = uf("exp")
        e = np.empty(s.shape, dtype=object)
        for idx in np.ndindex(*s.shape):
            kk = keep[idx]
            if kk is False or (isinstance(kk, (bool, np.bool_)) and not kk):
                e[idx] = z3.RealVal(0)
            elif kk is True or isinstance(kk, (bool, np.bool_)):
                e[idx] = exp(s[idx])
            else:
                e[idx] = z3.If(kk, exp(s[idx]), z3.RealVal(0))
        tot = e.sum(axis=-1, keepdims=True) if T else np.zeros(s.shape[:-1] + (1,), object)
        p = np.empty(s.shape, dtype=object)
        for idx in np.ndindex(*s.shape):
            row = idx[:-1] + (0,)
            live = keep[idx[:-1]]
            all_static = all(isinstance(x, (bool, np.bool_)) for x in live)
            if all_static and not any(live):
                p[idx] = z3.RealVal(0)
            elif all_static:
                p[idx] = e[idx] / tot[row]
            else:
                p[idx] = z3.If(z3.Or(*[x if not isinstance(x, (bool, np.bool_)) else
                                       z3.BoolVal(bool(x)) for x in live]),
                               e[idx] / tot[row], z3.RealVal(0))
        return (np.matmul(p, v),)

    def cost(self, in_types, out_types, attrs) -> Cost:  # type: ignore[override]
        q, k, v = (t for t in in_types[:3])
        assert isinstance(q, TensorType) and isinstance(k, TensorType)
        assert isinstance(v, TensorType) and q.shape and k.shape and v.shape

        def st(d: Any) -> int:
            return d if isinstance(d, int) else SYM_DEFAULT

        b, h, s, d = (st(x) for x in q.shape)
        t, dv = st(k.shape[2]), st(v.shape[3])
        pairs = b * h * s * t
        if attrs["causal"]:
            pairs = pairs // 2 + b * h * min(s, t) // 2
        flops = 2.0 * pairs * d + 2.0 * pairs * dv + 5.0 * pairs
        by = sum(nbytes(x) for x in in_types) + sum(nbytes(x) for x in out_types)
        return Cost(flops, float(by), 1)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        def r(*s: int) -> np.ndarray:
            return rng.standard_normal(s).astype(np.float32)

        tol = dict(rtol=1e-4, atol=1e-5)
        bmask = rng.random((1, 1, 3, 5)) > 0.3
        bmask[..., 1, :] = False  # a fully masked row
        return [
            Example([r(2, 2, 3, 4), r(2, 2, 5, 4), r(2, 2, 5, 3)],
                    {"scale": None, "causal": False}, **tol),
            Example([r(1, 4, 5, 3), r(1, 2, 5, 3), r(1, 2, 5, 3)],
                    {"scale": 0.7, "causal": True}, **tol),
            Example([r(1, 2, 3, 4), r(1, 1, 5, 4), r(1, 1, 5, 2), bmask],
                    {"scale": None, "causal": False}, **tol),
            Example([r(1, 2, 3, 4), r(1, 2, 3, 4), r(1, 2, 3, 4), r(3, 3)],
                    {"scale": 0.5, "causal": True}, **tol),
        ]

    # ---- frontends ---------------------------------------------------------------------------
    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        onnx_only_attrs(ctx, {"is_causal", "kv_num_heads", "q_num_heads",
                              "qk_matmul_output_mode", "scale", "softcap",
                              "softmax_precision"})
        if ctx.num_outputs != 1:
            raise Unsupported("Attention with present_key/value or qk_matmul_output outputs")
        if any(i < len(ctx.inputs) and ctx.inputs[i] is not None for i in (4, 5, 6)):
            raise Unsupported("Attention with past_key/past_value/nonpad_kv_seqlen")
        if float(ctx.attrs.get("softcap", 0.0)) != 0.0:
            raise Unsupported("Attention with softcap")
        if int(ctx.attrs.get("qk_matmul_output_mode", 0)) != 0:
            raise Unsupported("Attention with qk_matmul_output_mode")
        q, k, v = onnx_tensor(ctx, 0), onnx_tensor(ctx, 1), onnx_tensor(ctx, 2)
        mask = ctx.inputs[3] if len(ctx.inputs) > 3 else None
        if mask is not None:
            mt = mask.type
            if not isinstance(mt, TensorType) or mt.shape is None:
                raise Unsupported(f"Attention mask of type {mt}")
        sp = ctx.attrs.get("softmax_precision")
        if sp is not None and int(sp) not in (q.type.dtype.to_onnx(), DType.f32.to_onnx()):
            raise Unsupported(f"Attention softmax_precision {sp}")
        ranks = {len(t.type.shape) for t in (q, k, v)}
        scale = ctx.attrs.get("scale")
        scale = None if scale is None else float(scale)
        causal = bool(int(ctx.attrs.get("is_causal", 0)))
        if ranks == {4}:
            ins = [q, k, v] + ([mask] if mask is not None else [])
            return [build(ctx, "attention", ins, scale=scale, causal=causal)]
        if ranks != {3}:
            raise Unsupported(f"Attention with inputs of ranks {sorted(ranks)}")
        hq, hkv = ctx.attrs.get("q_num_heads"), ctx.attrs.get("kv_num_heads")
        if hq is None or hkv is None:
            raise Unsupported("3-D Attention without q_num_heads/kv_num_heads")
        hq, hkv = int(hq), int(hkv)
        q4 = _split_heads(ctx, q, hq)
        k4 = _split_heads(ctx, k, hkv)
        v4 = _split_heads(ctx, v, hkv)
        ins = [q4, k4, v4] + ([mask] if mask is not None else [])
        y = build(ctx, "attention", ins, scale=scale, causal=causal)
        yt = build(ctx, "transpose", [y], perm=(0, 2, 1, 3))
        b, s, h, dv = yt.type.shape
        if not isinstance(dv, int):
            raise Unsupported("3-D Attention with a symbolic head size")
        return [build(ctx, "reshape", [yt], shape=(b, s, dim_product([h, dv])))]

    def to_onnx(self, ctx: Any, node: Any) -> None:
        mask_t = node.inputs[3].type if len(node.inputs) == 4 else None
        # ONNX Runtime's Attention zeroes a query row whose additive mask is the dtype's lowest
        # value (or -inf) at every key, where softmax(QK^T*s + mask) averages the values. For f32
        # masks the lowest value is moved one ulp up first (_mask_off_lowest): bit-identical to the
        # composition in ONNX Runtime. f16/bf16 additive masks keep the composition (their fully
        # masked rows depend on how lowest + score rounds, which the fused kernel does not repeat).
        fused_ok = mask_t is None or mask_t.dtype in (DType.bool, DType.f32)
        if ctx.opset >= 23 and fused_ok:
            extra: dict[str, Any] = {}
            if node.attrs["causal"]:
                extra["is_causal"] = 1
            if node.attrs["scale"] is not None:
                extra["scale"] = float(node.attrs["scale"])
            names = [ctx.name(v) for v in node.inputs]
            if len(node.inputs) == 4:
                names[3] = _mask_full_st(ctx, node, _mask_off_lowest(ctx, node.inputs[3]))
            ctx.emit("Attention", names, ctx.out_names(node), **extra)
            return
        _attention_composition(ctx, node)

    def from_aten(self, ctx: Any) -> Any:
        t = ctx.target
        q, k, v = ctx.args[0], ctx.args[1], ctx.args[2]
        if t == "aten._scaled_dot_product_efficient_attention.default":
            mask = aten_arg(ctx, 3, "attn_bias", None)
            dropout = aten_arg(ctx, 5, "dropout_p", 0.0)
            causal = aten_arg(ctx, 6, "is_causal", False)
            gqa = False
        elif t in ("aten._scaled_dot_product_flash_attention_for_cpu.default",
                   "aten._scaled_dot_product_flash_attention.default"):
            dropout = aten_arg(ctx, 3, "dropout_p", 0.0)
            causal = aten_arg(ctx, 4, "is_causal", False)
            mask = ctx.kwargs.get("attn_mask")
            gqa = False
        else:  # scaled_dot_product_attention / _scaled_dot_product_attention_math
            mask = aten_arg(ctx, 3, "attn_mask", None)
            dropout = aten_arg(ctx, 4, "dropout_p", 0.0)
            causal = aten_arg(ctx, 5, "is_causal", False)
            if t == "aten._scaled_dot_product_attention_math.default" and \
                    aten_arg(ctx, 6, "dropout_mask", None) is not None:
                raise Unsupported("sdpa math with a dropout mask")
            gqa = bool(ctx.kwargs.get("enable_gqa", False))
        scale = ctx.kwargs.get("scale")
        if dropout:
            raise Unsupported(f"{t} with dropout_p={dropout}")
        if any(i in ctx.used_outputs for i in range(1, max(ctx.num_outputs, 1))):
            raise Unsupported(f"{t} with outputs beyond the first used")
        for x in (q, k, v):
            if not isinstance(x.type, TensorType) or x.type.shape is None or \
                    len(x.type.shape) != 4:
                raise Unsupported(f"{t} with input {x.type} (4-D needed)")
        if q.type.shape[1] != k.type.shape[1] and not gqa:
            raise Unsupported(f"{t}: head counts differ without enable_gqa")
        if causal and mask is not None:
            raise Unsupported(f"{t} with both attn_mask and is_causal")
        ins = [q, k, v] + ([mask] if mask is not None else [])
        y = build(ctx, "attention", ins, scale=None if scale is None else float(scale),
                  causal=bool(causal))
        if ctx.num_outputs > 1:
            return (y,) + (None,) * (ctx.num_outputs - 1)
        return y


def _split_additive(m: Any) -> tuple[Any, Any]:
    """An additive mask element as (keep, value): -inf is (False, 0), an If-tree with -inf
    leaves splits branch by branch, anything else is (True, m)."""
    import z3

    from .symbolic import holds_neg_inf, is_neg_inf

    if is_neg_inf(m):
        return False, 0
    if isinstance(m, (float, np.floating)) and not math.isfinite(float(m)):
        raise NotSymbolic("attention mask holds +inf / nan")
    if holds_neg_inf(m):
        c, a, b = m.children()
        ka, va = _split_additive(a)
        kb, vb = _split_additive(b)
        return z3.If(c, _bool(ka), _bool(kb)), z3.If(c, _num(va), _num(vb))
    return True, m


def _bool(v: Any) -> Any:
    import z3

    return z3.BoolVal(bool(v)) if isinstance(v, (bool, np.bool_)) else v


def _num(v: Any) -> Any:
    import z3

    return v if z3.is_expr(v) else z3.RealVal(v)


def _and(a: Any, b: Any) -> Any:
    import z3

    if isinstance(a, (bool, np.bool_)) and isinstance(b, (bool, np.bool_)):
        return bool(a) and bool(b)
    if isinstance(a, (bool, np.bool_)):
        return b if a else False
    if isinstance(b, (bool, np.bool_)):
        return a if b else False
    return z3.And(a, b)


def _split_heads(ctx: Any, x: Any, heads: int) -> Any:
    """[B, S, heads*D] -> [B, heads, S, D] (ONNX Attention's 3-D form)."""
    b, s, hd = x.type.shape
    if not isinstance(hd, int) or heads <= 0 or hd % heads:
        raise Unsupported(f"3-D Attention input {x.type} with {heads} heads")
    r = build(ctx, "reshape", [x], shape=(b, s, heads, hd // heads))
    return build(ctx, "transpose", [r], perm=(0, 2, 1, 3))


# ---- export below opset 23: MatMul / Softmax composition --------------------------------------

def _unsqueeze(ctx: Any, x: str, axes: list[int]) -> str:
    if ctx.opset < 13:
        return ctx.emit("Unsqueeze", [x], 1, axes=axes)[0]
    return ctx.emit("Unsqueeze", [x, i64_const(ctx, axes)], 1)[0]


def _attention_composition(ctx: Any, node: Any) -> None:
    q, k, v = node.inputs[:3]
    mask = node.inputs[3] if len(node.inputs) == 4 else None
    qt: TensorType = q.type
    H, Hkv = qt.shape[1], k.type.shape[1]
    D = qt.shape[3]
    try:
        npdt = qt.dtype.to_numpy()
    except TypeError:
        raise ExportError(f"attention on {qt.dtype.value} below opset 23",
                          where=str(node.origin or "attention")) from None
    kn, vn = ctx.name(k), ctx.name(v)
    if H != Hkv:
        # kv head j serves query heads j*rep .. j*rep+rep-1: [B,Hkv,T,D] -> [B,Hkv,rep,T,D]
        # -> [B,H,T,D]
        rep = H // Hkv
        repeated = []
        for src, t in ((kn, k.type), (vn, v.type)):
            last = t.shape[3]
            if not isinstance(last, int):
                raise ExportError("GQA attention with a symbolic head size below opset 23",
                                  where=str(node.origin or "attention"))
            u = _unsqueeze(ctx, src, [2])
            e = ctx.emit("Expand", [u, i64_const(ctx, [1, 1, rep, 1, 1])], 1)[0]
            repeated.append(ctx.emit("Reshape", [e, i64_const(ctx, [0, H, -1, last])], 1)[0])
        kn, vn = repeated
    kt = ctx.emit("Transpose", [kn], 1, perm=[0, 1, 3, 2])[0]
    s = ctx.emit("MatMul", [ctx.name(q), kt], 1)[0]
    scale = node.attrs["scale"]
    if scale is None:
        if not isinstance(D, int):
            raise ExportError("attention default scale with symbolic head size",
                              where=str(node.origin or "attention"))
        scale = default_scale(D)
    s = ctx.emit("Mul", [s, ctx.const(np.array(scale, dtype=npdt))], 1)[0]
    ninf = ctx.const(np.array(-np.inf, dtype=npdt))
    if node.attrs["causal"]:
        S, T = qt.shape[2], k.type.shape[2]
        if isinstance(S, int) and isinstance(T, int):
            keep = ctx.const(np.tril(np.ones((S, T), dtype=bool)))
        else:
            keep = _causal_keep(ctx, ctx.name(q), kn)
        s = ctx.emit("Where", [keep, s, ninf], 1)[0]
    if mask is not None:
        if mask.type.dtype == DType.bool:
            s = ctx.emit("Where", [ctx.name(mask), s, ninf], 1)[0]
        else:
            s = ctx.emit("Add", [s, ctx.name(mask)], 1)[0]
    p = ctx.emit("Softmax", [s], 1, axis=-1)[0]
    if mask is not None:
        # rows masked out entirely: Softmax gives NaN there, attention gives 0
        if ctx.opset >= 18:
            mx = ctx.emit("ReduceMax", [s, i64_const(ctx, [-1])], 1, keepdims=1)[0]
        else:
            mx = ctx.emit("ReduceMax", [s], 1, axes=[-1], keepdims=1)[0]
        dead = ctx.emit("Equal", [mx, ninf], 1)[0]
        p = ctx.emit("Where", [dead, ctx.const(np.array(0, dtype=npdt)), p], 1)[0]
    ctx.emit("MatMul", [p, vn], ctx.out_names(node))


def _causal_keep(ctx: Any, q: str, k: str) -> str:
    """keep[i, j] = j <= i for i < S (from q), j < T (from k), built from Shape / Range."""
    def length(x: str) -> str:
        shp = ctx.emit("Shape", [x], 1)[0]
        return ctx.emit("Gather", [shp, ctx.const(np.array(2, dtype=np.int64))], 1, axis=0)[0]

    zero, one = ctx.const(np.array(0, np.int64)), ctx.const(np.array(1, np.int64))
    rows = ctx.emit("Range", [zero, length(q), one], 1)[0]
    cols = ctx.emit("Range", [zero, length(k), one], 1)[0]
    r2 = _unsqueeze(ctx, rows, [1])
    c2 = _unsqueeze(ctx, cols, [0])
    if ctx.opset >= 12:
        return ctx.emit("LessOrEqual", [c2, r2], 1)[0]
    gt = ctx.emit("Greater", [c2, r2], 1)[0]
    return ctx.emit("Not", [gt], 1)[0]


def _mask_off_lowest(ctx: Any, mask: Any) -> str:
    """ONNX name of ``mask`` with its dtype's lowest value replaced by the next float up (bool
    masks unchanged). Adding either to a score rounds to the same huge negative number, so
    softmax is unchanged, but ONNX Runtime's Attention no longer treats a row of them as 'all
    masked' (which it answers with zeros). One Where per mask per export, shared by all blocks."""
    name = ctx.name(mask)
    if mask.type.dtype == DType.bool:
        return name
    key = ("attention.mask_off_lowest", name)
    hit = ctx.memo.get(key)
    if hit is None:
        np_dt = np.float32
        lo = np.array(np.finfo(np_dt).min, np_dt)
        up = np.nextafter(lo, np_dt(0)).astype(np_dt)
        eq = ctx.emit("Equal", [name, ctx.const(lo)], 1)[0]
        hit = ctx.memo[key] = ctx.emit("Where", [eq, ctx.const(up), name], 1)[0]
    return hit


def _mask_full_st(ctx: Any, node: Any, mask_name: str) -> str:
    """ONNX Runtime's Attention wants the mask's last two dims to be exactly [S, T] (it does not
    broadcast them): expand a mask that broadcasts over queries or keys (once per export)."""
    mask = node.inputs[3]
    ms = mask.type.shape
    S, T = node.inputs[0].type.shape[2], node.inputs[1].type.shape[2]
    m_s = ms[-2] if len(ms) >= 2 else 1
    m_t = ms[-1] if len(ms) >= 1 else 1
    if m_s == S and m_t == T:
        return mask_name
    key = ("attention.mask_full_st", mask_name, S, T)
    hit = ctx.memo.get(key)
    if hit is not None:
        return hit
    lead = [1] * max(len(ms) - 2, 0)
    if isinstance(S, int) and isinstance(T, int):
        out = ctx.emit("Expand", [mask_name, i64_const(ctx, lead + [S, T])], 1)[0]
    else:
        # symbolic lengths: read S from q and T from k at run time (this path is opset >= 23)
        pieces = []
        for x, d in ((node.inputs[0], S), (node.inputs[1], T)):
            pieces.append(i64_const(ctx, [d]) if isinstance(d, int) else
                          ctx.emit("Shape", [ctx.name(x)], 1, start=2, end=3)[0])
        if lead:
            pieces.insert(0, i64_const(ctx, lead))
        target = ctx.emit("Concat", pieces, 1, axis=0)[0]
        out = ctx.emit("Expand", [mask_name, target], 1)[0]
    ctx.memo[key] = out
    return out
