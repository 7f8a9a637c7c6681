"""Quantization ops with ONNX semantics: ``quantize_linear``, ``dequantize_linear``,
``dynamic_quantize_linear`` and ``matmul_integer``.

``quantize_linear(x, scale, zero_point) {axis, block_size}`` -> zero_point's dtype (i8, u8, i4,
u4)::

    y = saturate(round_half_to_even(x / scale) + zero_point)

``dequantize_linear(q, scale, zero_point) {axis, block_size}`` -> scale's dtype::

    y = (q - zero_point) * scale

x and scale are f32, f16 or bf16 of one dtype; zero_point is required and has scale's shape.
The granularity follows ONNX QuantizeLinear-21 (from the shapes): scale of rank 0 per tensor
(``axis`` is then meaningless and stored as 0); 1-D of size ``x.shape[axis]`` per axis; with
``block_size`` B > 0, scale of x's rank with ``ceil(x.shape[axis] / B)`` along ``axis`` and x's
dims elsewhere (blocks of B elements along ``axis`` share a scale; the last may be partial).
``axis`` is stored non-negative. The division is computed in f32 for every float dtype (as ONNX
Runtime does at opset 21, and at opset >= 23 with ``precision=FLOAT``, which the exporter
writes); dequantization is exact in f32 before its one rounding to scale's dtype.

``dynamic_quantize_linear(x: f32)`` -> (y: u8 like x, scale: f32[], zero_point: u8[]): ONNX
DynamicQuantizeLinear-11 as ONNX Runtime computes it: the range [min(0, min x), max(0, max x)]
maps onto [0, 255], ``scale = (hi - lo) / 255`` (1 when hi == lo, e.g. an all-zero or empty x),
``zero_point = saturate(round_half_to_even(-lo / scale))``, y as quantize_linear gives it.

``matmul_integer(a, b, a_zero_point, b_zero_point)`` -> i32: ``(a - azp) @ (b - bzp)`` with
numpy matmul shapes; a, b i8 or u8 (any pairing); azp of rank 0 (a's dtype); bzp of rank 0 or
[N] per output column (b's dtype). The sum is exact modulo 2**32 (int32 wraps, as in ONNX
Runtime).

u4 / i4 values are numpy ``ml_dtypes.uint4`` / ``int4`` arrays and torch.uint4 / torch.int4
tensors (views of uint8 / int8 storage, ``ir/types.py``).

Symbolic (z3): quantize_linear is an integer-valued uninterpreted function of (x, scale,
zero_point) per element, one per output dtype (so equal applications are equal in a proof and
i8 / u8 saturation are never confused); dequantize_linear and matmul_integer are exact;
dynamic_quantize_linear is uninterpreted (its scale and zero point are functions of the exact
range [lo, hi], its y is quantize_linear's function of them). None is fingerprinted but
matmul_integer (exact over residues), so the rule generator does not enumerate the others.

ONNX: QuantizeLinear / DequantizeLinear at opset >= 21 (``onnx_min_opset``; the pipeline
raises a graph's opset to it); below 21 the i8 / u8 per-tensor and per-axis forms export as
compositions (Div / Round / Add / Clip / Cast and Cast / Sub / Mul), the 4-bit and blocked forms
raise ExportError. Imports: a missing zero point becomes a zero constant (u8 by default, or
``output_dtype``); a 1-element 1-D constant scale is per tensor; MatMulInteger's missing zero
points become zeros and ONNX Runtime's batched [..., 1, N] b_zero_point of equal rows becomes
[N] (the exporter writes it back in that form for a batched b).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import ExportError, ShapeError
from ..ir.node import Attrs
from ..ir.types import (INT4_RANGE, DType, Dim, TensorType, ValueType, torch_int4_values,
                        torch_to_int4)
from .elementwise import (build, emit1, in_type, known_rank, need_opset, onnx_attrs, onnx_inputs,
                          real, zif)
from .matmul import matmul_shape
from .registry import (SYM_DEFAULT, Cost, Example, NotSymbolic, OpDef, Unsupported, nbytes,
                       norm_axis, register, tensor_types)
from .shape import check_attrs, i64_const
from .symbolic import uf

# quantized integer types and their ranges; the float types of x / scale
QRANGE: dict[DType, tuple[int, int]] = {DType.i8: (-128, 127), DType.u8: (0, 255),
                                        **INT4_RANGE}
QFLOATS = (DType.f32, DType.f16, DType.bf16)
MM_INTS = (DType.i8, DType.u8)  # MatMulInteger's operand types
_ONNX_FLOAT = 1  # TensorProto.FLOAT, QuantizeLinear's ``precision``

# ---- granularity --------------------------------------------------------------------------------


def granularity(name: str, x: TensorType, s: TensorType, axis: int, block: int) -> str:
    """"tensor", "axis" or "block": which form scale's shape gives for x (ShapeError when it
    fits none of ONNX-21's three)."""
    xs, ss = known_rank(name, x), known_rank(name, s)
    desc = f"{name}: scale {s} for input {x} (axis {axis}, block_size {block})"
    if block > 0:
        if len(ss) != len(xs):
            raise ShapeError(f"{desc}: blocked scale must have the input's rank")
        for i, (d, e) in enumerate(zip(xs, ss)):
            if i != axis:
                if d != e:
                    raise ShapeError(f"{desc}: dim {i} must equal the input's ({d})")
            elif not isinstance(d, int):
                if not (block == 1 and d == e):
                    raise ShapeError(f"{desc}: blocked quantization needs a static size along "
                                     f"the axis")
            elif e != -(-d // block):
                raise ShapeError(f"{desc}: dim {i} must be ceil({d} / {block}) = "
                                 f"{-(-d // block)}")
        return "block"
    if len(ss) == 0:
        return "tensor"
    if len(ss) == 1 and len(xs) >= 1 and ss[0] == xs[axis]:
        return "axis"
    want = f"[{xs[axis]}]" if xs else "none (rank-0 input)"
    raise ShapeError(f"{desc}: scale must be rank 0 (per tensor), 1-D {want} (per axis), or "
                     f"of the input's rank with block_size > 0 (blocked)")


def expand(s: Any, shape: Sequence[int], axis: int, block: int, xp: Any = np) -> Any:
    """Scale (or zero point) ``s`` broadcastable against an input of ``shape``: per tensor as
    is, per axis as [C, 1, ...], blocked repeated ``block`` times along ``axis`` (cut to size).
    ``xp``: numpy (also object arrays of z3 terms) or torch."""
    rank = len(shape)
    if block > 0:
        if xp is np:
            return np.repeat(np.asarray(s), block, axis=axis).take(range(shape[axis]), axis=axis)
        return s.repeat_interleave(block, dim=axis).narrow(axis, 0, shape[axis])
    if s.ndim == 1:
        return s.reshape((-1,) + (1,) * (rank - axis - 1))
    return s


def _quant_attrs(name: str, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
    """axis (default 1) non-negative, or 0 for a per-tensor scale; block_size (default 0)."""
    check_attrs(name, attrs, ("axis", "block_size"))
    axis, block = attrs.get("axis", 1), attrs.get("block_size", 0)
    for k, v in (("axis", axis), ("block_size", block)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ShapeError(f"{name}: attr {k} must be an int, got {v!r}")
    axis, block = int(axis), int(block)
    if block < 0:
        raise ShapeError(f"{name}: block_size must be >= 0, got {block}")
    ts = [t for t in in_types[:2] if isinstance(t, TensorType) and t.shape is not None]
    if len(ts) == 2:
        if block == 0 and len(ts[1].shape or ()) == 0:
            axis = 0  # per tensor: the axis is meaningless
        else:
            axis = norm_axis(name, axis, len(ts[0].shape or ()))
    return Attrs({"axis": axis, "block_size": block})


def _dtype_in(name: str, what: str, t: TensorType, allowed: Sequence[DType]) -> None:
    if t.dtype not in allowed:
        raise ShapeError(f"{name}: {what} {t} must be one of "
                         f"{', '.join(d.value for d in allowed)}")


def _check_zero_point(name: str, s: TensorType, z: TensorType) -> None:
    if z.shape != s.shape:
        raise ShapeError(f"{name}: zero point {z} must have scale's shape {s}")


# ---- z3 helpers ---------------------------------------------------------------------------------

_INT_UF: dict[str, Any] = {}


def int_uf(name: str, arity: int) -> Any:
    """The z3 uninterpreted function Real^arity -> Int named ``name`` (integer-valued, so
    what reads its values computes on integers; its arguments are Reals as the verifier's
    inputs are, integer ones converted)."""
    import z3

    if name not in _INT_UF:
        _INT_UF[name] = z3.Function(name, *([z3.RealSort()] * arity), z3.IntSort())
    return _INT_UF[name]


def quantize_terms(x: np.ndarray, s: np.ndarray, z: np.ndarray, out: DType) -> np.ndarray:
    """quantize_linear's elements: the uninterpreted ``quantize_linear_<out>(x, s, zp)``."""
    f = int_uf(f"quantize_linear_{out.value}", 3)
    xb, sb, zb = np.broadcast_arrays(*(np.asarray(v, dtype=object) for v in (x, s, z)))
    y = np.empty(xb.shape, dtype=object)
    for idx in np.ndindex(y.shape):
        y[idx] = f(real(xb[idx]), real(sb[idx]), real(zb[idx]))
    return y


def sample_ints(rng: np.random.Generator, lo: int, hi: int, shape: tuple[int, ...],
                dt: Any) -> np.ndarray:
    """Example values: uniform integers in [lo, hi] of numpy dtype ``dt``."""
    return rng.integers(lo, hi + 1, shape).astype(dt)


def sample_scales(rng: np.random.Generator, shape: tuple[int, ...], dt: Any) -> np.ndarray:
    """Example scales: uniform in [0.02, 0.3]."""
    return rng.uniform(0.02, 0.3, shape).astype(dt)


def _scalar(v: Any) -> np.ndarray:
    out = np.empty((), dtype=object)
    out[()] = v
    return out


# ---- quantize_linear / dequantize_linear --------------------------------------------------------

class LinearQuant(OpDef):
    """What quantize_linear and dequantize_linear share: attrs, granularity, export forms."""

    min_inputs = max_inputs = 3
    onnx_min_opset = 21
    onnx_op = ""  # the ONNX op type

    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        return _quant_attrs(self.name, in_types, attrs)

    def form(self, node: Any) -> str:
        a = node.attrs
        return granularity(self.name, in_type(node), in_type(node, 1), a["axis"],
                           a["block_size"])

    def emit_native(self, ctx: Any, node: Any, **extra: Any) -> None:
        """One QuantizeLinear / DequantizeLinear node (opset >= 21)."""
        a = node.attrs
        attrs: dict[str, Any] = dict(extra)
        form = self.form(node)
        if form != "tensor":
            attrs["axis"] = a["axis"]
        if form == "block":
            attrs["block_size"] = a["block_size"]
        ctx.emit(self.onnx_op, [ctx.name(v) for v in node.inputs], ctx.out_names(node), **attrs)

    def composition_inputs(self, ctx: Any, node: Any) -> tuple[str, str, str]:
        """Below opset 21: (x, scale, zero point) as f32 ONNX values broadcasting like the op;
        ExportError for forms that need opset 21."""
        form = self.form(node)
        q = node.inputs[2].type.dtype
        if q in INT4_RANGE or form == "block":
            what = f"{q.value}" if q in INT4_RANGE else "blocked"
            raise ExportError(f"{self.name} ({what}) needs ONNX opset 21, exporting at opset "
                              f"{ctx.opset}")
        need_opset(ctx, 11, f"{self.name} as a composition (Round)")
        x, s, z = (ctx.name(v) for v in node.inputs)
        if form == "axis":
            rank = len(in_type(node).shape)
            shape = i64_const(ctx, [-1] + [1] * (rank - node.attrs["axis"] - 1))
            s, z = (emit1(ctx, "Reshape", [v, shape]) for v in (s, z))
        return tuple(self._f32(ctx, v, t) for v, t in  # type: ignore[return-value]
                     zip((x, s, z), [in_type(node, i).dtype for i in range(3)]))

    @staticmethod
    def _f32(ctx: Any, v: str, dt: DType) -> str:
        return v if dt == DType.f32 else emit1(ctx, "Cast", [v], to=DType.f32.to_onnx())

    def import_scales(self, ctx: Any, x: Any, s: Any, z: Any, qtype: DType, axis: int,
                      block: int) -> tuple[Any, Any]:
        """(scale, zero point) for the IR: a missing zero point made a zero constant of
        ``qtype``; per tensor (no block, a scalar or a 1-element 1-D scale on an axis of
        another size), both made rank 0 (ONNX takes a [1] zero point with a scalar scale)."""
        xs = x.type.shape
        per_tensor = block == 0 and (s.type.shape == () or (
            s.type.shape == (1,) and xs and xs[axis % len(xs)] != 1))
        if per_tensor:
            s = scalar_of(ctx, s)
        if z is None:
            if not all(isinstance(d, int) for d in s.type.shape):
                raise Unsupported(f"{ctx.op_type}: no zero point and scale {s.type} of "
                                  f"symbolic shape")
            z = ctx.constant(np.zeros(s.type.shape, dtype=qtype.to_numpy()))
        elif per_tensor:
            z = scalar_of(ctx, z)
        return s, z


def scalar_of(ctx: Any, v: Any) -> Any:
    """A 1-element value as rank 0 (a reshape); Unsupported for more elements."""
    shape = v.type.shape
    if shape == ():
        return v
    if any(d != 1 for d in shape):
        raise Unsupported(f"{ctx.op_type}: {v.type} where a single value (per tensor) is "
                          f"needed")
    return build(ctx, "reshape", [v], shape=())


@register
class QuantizeLinear(LinearQuant):
    name = "quantize_linear"
    onnx = ("QuantizeLinear",)
    onnx_op = "QuantizeLinear"

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        x, s, z = tensor_types(self.name, in_types)
        _dtype_in(self.name, "input", x, QFLOATS)
        if s.dtype != x.dtype:
            raise ShapeError(f"{self.name}: scale {s} must have the input's dtype ({x})")
        _dtype_in(self.name, "zero point", z, tuple(QRANGE))
        _check_zero_point(self.name, s, z)
        granularity(self.name, x, s, attrs["axis"], attrs["block_size"])
        return (TensorType(x.shape, z.dtype),)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        x, s, z = (np.asarray(v) for v in xs)
        ax, bl = attrs["axis"], attrs["block_size"]
        sb, zb = (expand(v, x.shape, ax, bl) for v in (s, z))
        lo, hi = QRANGE[DType.from_numpy(z.dtype)]
        with np.errstate(all="ignore"):
            q = np.rint(x.astype(np.float32) / sb.astype(np.float32)).astype(np.float64)
            y = np.clip(q + zb.astype(np.float64), lo, hi)
        return (np.asarray(y.astype(np.int64).astype(z.dtype)),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        import torch

        x, s, z = xs
        out = DType.from_torch(z.dtype)
        ax, bl = attrs["axis"], attrs["block_size"]
        sb = expand(s.to(torch.float32), tuple(x.shape), ax, bl, torch)
        zb = expand(torch_int4_values(z).to(torch.float64), tuple(x.shape), ax, bl, torch)
        lo, hi = QRANGE[out]
        y = (torch.round(x.to(torch.float32) / sb).to(torch.float64) + zb).clamp(lo, hi)
        if out in INT4_RANGE:
            return (torch_to_int4(y.to(torch.int64), out),)
        return (y.to(out.to_torch()),)

    def symbolic(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        raise NotSymbolic(f"{self.name}: its function depends on the output dtype (the verifier "
                          f"calls symbolic_typed)")

    def symbolic_typed(self, xs: Sequence[np.ndarray], attrs: Attrs,
                       in_types: Sequence[ValueType]) -> tuple[np.ndarray, ...]:
        """``quantize_linear_<dtype>(x, s, zp)`` per element (uninterpreted: it rounds)."""
        x, s, z = (np.asarray(v, dtype=object) for v in xs)
        zt = in_types[2]
        assert isinstance(zt, TensorType)
        ax, bl = attrs["axis"], attrs["block_size"]
        sb, zb = (expand(v, x.shape, ax, bl) for v in (s, z))
        return (quantize_terms(x, sb, zb, zt.dtype),)

    def to_onnx(self, ctx: Any, node: Any) -> None:
        if ctx.opset >= 21:
            extra = {"precision": _ONNX_FLOAT} if ctx.opset >= 23 and \
                in_type(node).dtype != DType.f32 else {}  # divide in f32 (as at opset 21)
            self.emit_native(ctx, node, **extra)
            return
        x, s, z = self.composition_inputs(ctx, node)
        out = node.out_types[0].dtype
        lo, hi = QRANGE[out]
        r = emit1(ctx, "Round", [emit1(ctx, "Div", [x, s])])
        c = emit1(ctx, "Clip", [emit1(ctx, "Add", [r, z]), ctx.const(np.float32(lo)),
                                ctx.const(np.float32(hi))])
        ctx.emit("Cast", [c], ctx.out_names(node), to=out.to_onnx())

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        a = onnx_attrs(ctx, {"axis": 1, "block_size": 0, "output_dtype": 0, "saturate": 1,
                             "precision": 0})
        x, s, z = onnx_inputs(ctx, 2, 3)
        xd = x.type.dtype
        if xd not in QFLOATS or s.type.dtype != xd:
            raise Unsupported(f"{ctx.op_type}: input {x.type} with scale {s.type} (the IR "
                              f"quantizes f32 / f16 / bf16 with a scale of the same dtype)")
        prec = int(a["precision"]) or (xd.to_onnx() if ctx.opset >= 23 else _ONNX_FLOAT)
        if prec != _ONNX_FLOAT:
            raise Unsupported(f"{ctx.op_type}: division in {DType.from_onnx(prec).value} "
                              f"(the IR divides in f32)")
        od = int(a["output_dtype"])
        try:
            out = z.type.dtype if z is not None else (DType.from_onnx(od) if od else DType.u8)
        except TypeError as e:
            raise Unsupported(f"{ctx.op_type}: {e}") from None
        if od and z is not None and DType.from_onnx(od) != out:
            raise Unsupported(f"{ctx.op_type}: output_dtype {od} differs from the zero point's "
                              f"{out.value}")
        if out not in QRANGE:
            raise Unsupported(f"{ctx.op_type} to {out.value} (not i8 / u8 / i4 / u4)")
        axis, block = int(a["axis"]), int(a["block_size"])
        s, z = self.import_scales(ctx, x, s, z, out, axis, block)
        return [build(ctx, self.name, [x, s, z], axis=axis, block_size=block)]

    def examples(self, rng: np.random.Generator) -> list[Example]:
        def f(*shape: int, dt: Any = np.float32) -> np.ndarray:
            return (rng.standard_normal(shape) * 3).astype(dt)

        def pos(*shape: int, dt: Any = np.float32) -> np.ndarray:
            return sample_scales(rng, shape, dt)

        def ints(lo: int, hi: int, shape: tuple[int, ...], dt: Any) -> np.ndarray:
            return sample_ints(rng, lo, hi, shape, dt)

        ties = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 300.0, -300.0], np.float32)
        return [
            Example([f(3, 4), np.float32(0.05), np.uint8(128)], symbolic=False),
            Example([ties, np.float32(1.0), np.int8(0)], symbolic=False),
            Example([ties, np.float32(1.0), np.uint8(3)], symbolic=False),
            Example([f(3, 5), pos(3), ints(-10, 10, (3,), np.int8)], {"axis": 0},
                    symbolic=False),
            Example([f(2, 5), pos(2, 3), ints(-3, 3, (2, 3), np.int8)],
                    {"axis": 1, "block_size": 2}, symbolic=False),
            Example([f(4, 2, 3), pos(2, 2, 3), ints(0, 255, (2, 2, 3), np.uint8)],
                    {"axis": 0, "block_size": 3}, symbolic=False),
            Example([f(2, 6, dt=np.float16), pos(6, dt=np.float16),
                     ints(0, 20, (6,), np.uint8)], {"axis": -1}, symbolic=False),
        ]


@register
class DequantizeLinear(LinearQuant):
    name = "dequantize_linear"
    onnx = ("DequantizeLinear",)
    onnx_op = "DequantizeLinear"

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        q, s, z = tensor_types(self.name, in_types)
        _dtype_in(self.name, "input", q, tuple(QRANGE))
        _dtype_in(self.name, "scale", s, QFLOATS)
        if z.dtype != q.dtype:
            raise ShapeError(f"{self.name}: zero point {z} must have the input's dtype ({q})")
        _check_zero_point(self.name, s, z)
        granularity(self.name, q, s, attrs["axis"], attrs["block_size"])
        return (TensorType(q.shape, s.dtype),)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        q, s, z = (np.asarray(v) for v in xs)
        ax, bl = attrs["axis"], attrs["block_size"]
        sb, zb = (expand(v, q.shape, ax, bl) for v in (s, z))
        d = (q.astype(np.int32) - zb.astype(np.int32)).astype(np.float32)
        return (np.asarray(d * sb.astype(np.float32)).astype(s.dtype),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        import torch

        q, s, z = xs
        ax, bl = attrs["axis"], attrs["block_size"]
        shape = tuple(q.shape)
        sb = expand(s.to(torch.float32), shape, ax, bl, torch)
        zb = expand(torch_int4_values(z).to(torch.int32), shape, ax, bl, torch)
        d = (torch_int4_values(q).to(torch.int32) - zb).to(torch.float32)
        return ((d * sb).to(s.dtype),)

    def symbolic(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        """Exact: (q - zp) * scale element by element (per-axis / blocked broadcast)."""
        q, s, z = (np.asarray(v, dtype=object) for v in xs)
        ax, bl = attrs["axis"], attrs["block_size"]
        sb, zb = (expand(v, q.shape, ax, bl) for v in (s, z))
        return (np.asarray((q - zb) * sb, dtype=object),)

    def to_onnx(self, ctx: Any, node: Any) -> None:
        if ctx.opset >= 21:
            self.emit_native(ctx, node)
            return
        q, s, z = self.composition_inputs(ctx, node)
        out = node.out_types[0].dtype
        outs = ctx.out_names(node)
        if out == DType.f32:
            ctx.emit("Mul", [emit1(ctx, "Sub", [q, z]), s], outs)
        else:  # exact in f32, then one rounding to out
            y = emit1(ctx, "Mul", [emit1(ctx, "Sub", [q, z]), s])
            ctx.emit("Cast", [y], outs, to=out.to_onnx())

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        a = onnx_attrs(ctx, {"axis": 1, "block_size": 0, "output_dtype": 0})
        q, s, z = onnx_inputs(ctx, 2, 3)
        od = int(a["output_dtype"])
        if od and od != s.type.dtype.to_onnx():
            raise Unsupported(f"{ctx.op_type}: output_dtype {od} differs from scale {s.type}")
        if q.type.dtype not in QRANGE:
            raise Unsupported(f"{ctx.op_type} of {q.type} (not i8 / u8 / i4 / u4)")
        axis, block = int(a["axis"]), int(a["block_size"])
        s, z = self.import_scales(ctx, q, s, z, q.type.dtype, axis, block)
        return [build(ctx, self.name, [q, s, z], axis=axis, block_size=block)]

    def examples(self, rng: np.random.Generator) -> list[Example]:
        def ints(lo: int, hi: int, shape: tuple[int, ...], dt: Any) -> np.ndarray:
            return sample_ints(rng, lo, hi, shape, dt)

        def pos(*shape: int, dt: Any = np.float32) -> np.ndarray:
            return sample_scales(rng, shape, dt)

        return [
            Example([ints(0, 255, (3, 4), np.uint8), np.float32(0.05), np.uint8(128)]),
            Example([ints(-128, 127, (3, 5), np.int8), pos(3), ints(-5, 5, (3,), np.int8)],
                    {"axis": 0}),
            Example([ints(-128, 127, (2, 5), np.int8), pos(2, 3), ints(-3, 3, (2, 3), np.int8)],
                    {"axis": 1, "block_size": 2}),
            Example([ints(0, 255, (5, 2, 3), np.uint8), pos(2, 2, 3),
                     ints(0, 255, (2, 2, 3), np.uint8)], {"axis": 0, "block_size": 3}),
            Example([ints(0, 255, (2, 6), np.uint8), pos(6, dt=np.float16),
                     ints(0, 255, (6,), np.uint8)], {"axis": -1}, rtol=1e-3, atol=1e-3),
        ]


# ---- dynamic_quantize_linear --------------------------------------------------------------------

def dynamic_params(lo: float, hi: float) -> tuple[np.float32, np.float32]:
    """DynamicQuantizeLinear's (scale, zero point) for the range [lo, hi] (lo <= 0 <= hi), in
    f32 as ONNX Runtime computes them."""
    lo32, hi32 = np.float32(lo), np.float32(hi)
    scale = np.float32(1.0) if hi32 == lo32 else np.float32((hi32 - lo32) / np.float32(255))
    with np.errstate(all="ignore"):
        zp = np.float32(np.clip(np.rint(np.float32(-lo32 / scale)), 0, 255))
    return scale, zp


@register
class DynamicQuantizeLinear(OpDef):
    name = "dynamic_quantize_linear"
    min_inputs = max_inputs = 1
    onnx = ("DynamicQuantizeLinear",)
    cost_class = "reduction"  # a min / max over the whole tensor, then the quantization

    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        check_attrs(self.name, attrs, ())
        return attrs

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        (x,) = tensor_types(self.name, in_types)
        known_rank(self.name, x)
        _dtype_in(self.name, "input", x, (DType.f32,))
        return (x.with_dtype(DType.u8), TensorType((), DType.f32), TensorType((), DType.u8))

    def reduced_axes(self, rank: int, attrs: Attrs) -> tuple[int, ...]:
        return tuple(range(rank))

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        x = np.asarray(xs[0], dtype=np.float32)
        lo = min(0.0, float(x.min())) if x.size else 0.0
        hi = max(0.0, float(x.max())) if x.size else 0.0
        scale, zp = dynamic_params(lo, hi)
        with np.errstate(all="ignore"):
            y = np.clip(np.rint(x / scale) + zp, 0, 255)
        return (y.astype(np.uint8), np.asarray(scale), np.asarray(zp.astype(np.uint8)))

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        import torch

        x = xs[0]
        zero = torch.zeros((), dtype=torch.float32, device=x.device)
        lo = torch.minimum(x.min(), zero) if x.numel() else zero
        hi = torch.maximum(x.max(), zero) if x.numel() else zero
        scale = torch.where(hi == lo, torch.ones_like(zero), (hi - lo) / 255.0)
        zp = torch.round(-lo / scale).clamp(0, 255)
        y = (torch.round(x / scale) + zp).clamp(0, 255)
        return (y.to(torch.uint8), scale, zp.to(torch.uint8))

    def symbolic(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        """Uninterpreted: scale and zero point are functions of the exact range [lo, hi], y is
        quantize_linear's (u8) function of x, scale and zero point."""
        x = np.asarray(xs[0], dtype=object)
        lo: Any = 0.0
        hi: Any = 0.0
        for v in x.reshape(-1):
            lo = zif(v < lo, v, lo)
            hi = zif(v > hi, v, hi)
        lo_t, hi_t = real(lo), real(hi)
        scale = uf("dynamic_quantize_linear_scale", 2)(lo_t, hi_t)
        zp = int_uf("dynamic_quantize_linear_zero_point", 2)(lo_t, hi_t)
        y = quantize_terms(x, _scalar(scale), _scalar(zp), DType.u8)
        return (y, _scalar(scale), _scalar(zp))

    def cost(self, in_types: tuple[ValueType, ...], out_types: tuple[ValueType, ...],
             attrs: Attrs) -> Cost:
        n = out_types[0].static_numel(SYM_DEFAULT) if isinstance(out_types[0], TensorType) else 1
        b = 2 * nbytes(in_types[0]) + sum(nbytes(t) for t in out_types)  # read twice
        return Cost(4.0 * n, float(b), 2)

    def to_onnx(self, ctx: Any, node: Any) -> None:
        need_opset(ctx, 11, "DynamicQuantizeLinear")
        ctx.emit("DynamicQuantizeLinear", [ctx.name(node.inputs[0])], ctx.out_names(node))

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        onnx_attrs(ctx, {})
        (x,) = onnx_inputs(ctx, 1, 1)
        return list(build(ctx, self.name, [x]).node.outputs)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        x = rng.standard_normal((3, 5)).astype(np.float32) * 2
        return [Example([x]), Example([np.abs(x[:2]) + 0.5]), Example([-np.abs(x[0])]),
                Example([np.zeros((2, 3), np.float32)]), Example([np.float32(1.7)])]


# ---- matmul_integer -----------------------------------------------------------------------------

def _signed8(t: Any, zp: Any) -> tuple[Any, Any]:
    """(t as int8, zero point as int32) with t - zp unchanged: uint8 values shift by -128."""
    import torch

    if t.dtype == torch.uint8:
        return (t.to(torch.int16) - 128).to(torch.int8), zp.to(torch.int32) - 128
    return t, zp.to(torch.int32)


def _int_mm_fits(device: Any, m: int, k: int, n: int) -> bool:
    """Whether torch._int_mm runs these sizes here (CPU: any; CUDA: m > 16, k, n multiples
    of 8)."""
    if device.type == "cpu":
        return m > 0 and k > 0 and n > 0
    return device.type == "cuda" and m > 16 and k % 8 == 0 and n % 8 == 0 and k > 0 and n > 0


def _exact_matmul(a: Any, b: Any) -> Any:
    """a @ b over integer tensors, exact modulo 2**32, as int32 (CPU in int64; elsewhere in
    float64, exact while the sums stay below 2**53)."""
    import torch

    if a.device.type == "cpu":
        return torch.matmul(a.to(torch.int64), b.to(torch.int64)).to(torch.int32)
    y = torch.matmul(a.to(torch.float64), b.to(torch.float64))
    return y.round().to(torch.int64).to(torch.int32)


@register
class MatMulInteger(OpDef):
    """(a - a_zero_point) @ (b - b_zero_point) in int32 (numpy matmul shapes)."""

    name = "matmul_integer"
    min_inputs = max_inputs = 4
    onnx = ("MatMulInteger",)
    cost_class = "heavy"
    matrix_unit = True
    exact_int = True

    def mixed_axes(self, in_types: tuple[ValueType, ...], attrs: Attrs
                   ) -> tuple[tuple[int, int], ...]:
        from .matmul import MatMul

        return MatMul.mixed_axes(self, in_types, attrs)  # type: ignore[arg-type]

    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        check_attrs(self.name, attrs, ())
        return attrs

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        a, b, az, bz = tensor_types(self.name, in_types)
        for t, what in ((a, "a"), (b, "b")):
            _dtype_in(self.name, what, t, MM_INTS)
            known_rank(self.name, t)
        for z, t, what in ((az, a, "a_zero_point"), (bz, b, "b_zero_point")):
            if z.dtype != t.dtype:
                raise ShapeError(f"{self.name}: {what} {z} must have {t}'s dtype")
        if known_rank(self.name, az) != ():
            raise ShapeError(f"{self.name}: a_zero_point {az} must be a scalar (rank 0)")
        bzs, bs = known_rank(self.name, bz), b.shape or ()
        if not (bzs == () or (len(bs) >= 2 and bzs == (bs[-1],))):
            n = f"[{bs[-1]}]" if len(bs) >= 2 else "nothing (b is 1-D)"
            raise ShapeError(f"{self.name}: b_zero_point {bz} must be rank 0 or {n} (per "
                             f"column of b {b})")
        desc = f"{self.name}({a}, {b})"
        return (TensorType(matmul_shape(desc, a.shape or (), bs), DType.i32),)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        a, b, az, bz = (np.asarray(v) for v in xs)
        if object in (a.dtype, b.dtype, az.dtype, bz.dtype):  # z3 terms / exact integers
            return (np.asarray(np.matmul(a - az, b - bz), dtype=object),)
        y = np.matmul(a.astype(np.int64) - az.astype(np.int64),
                      b.astype(np.int64) - bz.astype(np.int64))
        return (np.asarray(y).astype(np.int32),)  # wraps modulo 2**32 like int32 sums

    def fingerprint(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        from . import residues as r

        a, b, az, bz = (np.asarray(v, dtype=np.int64) for v in xs)
        return (r.modp(np.matmul(a - az, b - bz)),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        """torch._int_mm (int8 x int8 -> int32) where it runs, with the zero points as rank-1
        corrections; else an exact integer matmul."""
        import torch

        a, b, az, bz = xs
        if a.dim() >= 2 and b.dim() == 2:
            k, n = b.shape
            a8, azs = _signed8(a, az)
            b8, bzs = _signed8(b, bz)
            a2 = a8.reshape(-1, k)
            if _int_mm_fits(a.device, a2.shape[0], k, n):
                acc = torch._int_mm(a2, b8)
                y = (acc - azs * b8.sum(0, dtype=torch.int32)
                     - a2.sum(1, dtype=torch.int32)[:, None] * bzs + k * azs * bzs)
                return (y.to(torch.int32).reshape(*a.shape[:-1], n),)
        return (_exact_matmul(a.to(torch.int32) - az.to(torch.int32),
                              b.to(torch.int32) - bz.to(torch.int32)),)

    def cost(self, in_types: tuple[ValueType, ...], out_types: tuple[ValueType, ...],
             attrs: Attrs) -> Cost:
        a = in_types[0]
        assert isinstance(a, TensorType) and a.shape is not None
        k: Dim = a.shape[-1]
        kk = k if isinstance(k, int) else SYM_DEFAULT
        out = out_types[0]
        n_out = out.static_numel(SYM_DEFAULT) if isinstance(out, TensorType) else 1
        b = sum(nbytes(t) for t in in_types) + sum(nbytes(t) for t in out_types)
        return Cost(2.0 * n_out * kk, float(b), 1)

    def to_onnx(self, ctx: Any, node: Any) -> None:
        need_opset(ctx, 10, "MatMulInteger")
        a, b, az, bz = (ctx.name(v) for v in node.inputs)
        bt, bzt = in_type(node, 1), in_type(node, 3)
        assert bt.shape is not None
        if len(bt.shape) > 2 and bzt.shape:  # ONNX Runtime: [..., 1, N] for a batched b
            dims = list(bt.shape[:-2]) + [1, bt.shape[-1]]
            lead = i64_const(ctx, [1] * (len(dims) - 1) + [-1])
            target = i64_const(ctx, dims) if all(isinstance(d, int) for d in dims) else \
                emit1(ctx, "Concat", [i64_const(ctx, [d]) if isinstance(d, int) else
                                      ctx.sym_dim(d) for d in dims], axis=0)
            bz = emit1(ctx, "Expand", [emit1(ctx, "Reshape", [bz, lead]), target])
        ctx.emit("MatMulInteger", [a, b, az, bz], ctx.out_names(node))

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        onnx_attrs(ctx, {})
        a, b, az, bz = onnx_inputs(ctx, 2, 4)
        az = _import_zero_point(ctx, 2, az, a, ())
        bs = b.type.shape
        per_col = (bs[-1],) if len(bs) >= 2 else ()
        bz = _import_zero_point(ctx, 3, bz, b, per_col)
        return [build(ctx, self.name, [a, b, az, bz])]

    def examples(self, rng: np.random.Generator) -> list[Example]:
        def ints(dt: Any, *shape: int) -> np.ndarray:
            return sample_ints(rng, *QRANGE[DType.from_numpy(dt)], shape, dt)

        i8, u8 = np.int8, np.uint8
        return [
            Example([ints(i8, 3, 5), ints(i8, 5, 4), i8(0), i8(0)]),
            Example([ints(u8, 2, 3, 8), ints(i8, 8, 5), u8(128), i8(-3)]),
            Example([ints(u8, 4, 6), ints(u8, 6, 3), u8(7), ints(u8, 3)]),
            Example([ints(i8, 2, 3, 4), ints(u8, 2, 4, 5), i8(5), ints(u8, 5)]),
            Example([ints(i8, 4), ints(i8, 4, 3), i8(1), i8(-1)]),
            Example([ints(u8, 2, 4), ints(u8, 4), u8(3), u8(200)]),
        ]


def _import_zero_point(ctx: Any, i: int, z: Any, of: Any, per: tuple[Dim, ...]) -> Any:
    """A MatMulInteger zero point for the IR: zero when missing, rank 0 when it holds one
    value (or one constant repeated), [N] from ONNX Runtime's [..., 1, N] when all its rows
    agree."""
    dt = of.type.dtype
    if z is None:
        return ctx.constant(np.zeros((), dtype=dt.to_numpy()))
    zs = z.type.shape
    if zs == () or (per and zs == per):
        return z
    if all(d == 1 for d in zs):
        return scalar_of(ctx, z)
    c = ctx.const(i)
    if c is None:
        raise Unsupported(f"{ctx.op_type}: zero point {z.type} computed at run time")
    flat = c.reshape(-1)
    if flat.size and (flat == flat[0]).all():
        return ctx.constant(np.asarray(flat[0]))
    if per and c.ndim >= 2 and c.shape[-1] == per[0] and c.shape[-2] == 1:
        rows = c.reshape(-1, c.shape[-1])
        if (rows == rows[0]).all():
            return ctx.constant(rows[0])
    raise Unsupported(f"{ctx.op_type}: zero point of shape {list(c.shape)} (per row, or "
                      f"differing between batches)")
