"""Exact lowerings of the fake-quant forms ``passes/quantize.py`` builds to integer kernels.

Each rule is exact over the reals (the float results differ only by rounding: an integer
accumulation is exact, the float one it replaces rounds) and stated at small sizes in
``rules/quant_lowering.rules``, which ``graphopt rules verify`` proves with z3 and replays
through this pass:

* ``MatmulInteger``: per-tensor activation codes (dynamic or static) times per-channel weight
  codes: ``deq(qa, sa, za) @ deq(qb, sb, zb) = cast((qa - za) @ (qb - zb)) * (sa * sb)``
  -> ``mul(cast(matmul_integer(qa, qb, za, zb)), mul(sa, sb))``;
* ``MatmulIntegerRows``: per-token codes ``(cast(qa) - za) * s`` (s one scale per row, za a
  constant) times weight codes with zero points 0:
  ``((cast(qa) - za) * s) @ deq(qb, sb, 0) = cast((qa - za) @ qb) * s * sb``;
* ``GatherDequantized``: rows of a per-row dequantized table are the dequantized rows:
  ``gather(deq(T, s, 0), ids) = cast(gather(T, ids)) * unsqueeze(gather(s, ids), -1)`` (only
  the rows read are dequantized, not the whole table on every run).

Weight-only matmuls keep ``matmul(x, dequantize_linear(...))``: the portable form ONNX Runtime
recognizes (it fuses 4-bit blocked DequantizeLinear + MatMul into its MatMulNBits kernel).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from graphopt.ir.node import ConstData, Node, Value, constant, op
from graphopt.ir.types import DType, TensorType
from graphopt.rewrite.context import MatchContext, const_array
from graphopt.rewrite.match import Match, MatchFail, fail
from graphopt.rewrite.passes import RewritePass
from graphopt.rewrite.rule import Rule

_INT8 = (DType.i8, DType.u8)


def _rank0(v: Value) -> bool:
    t = v.type
    return isinstance(t, TensorType) and t.shape == ()


def _weight_codes(v: Value) -> tuple[Node, Value, Value, Value] | MatchFail:
    """dequantize_linear(qb const [K, N] 8-bit, sb, zb) per tensor or per column (axis 1)."""
    d = v.node
    if d.op != "dequantize_linear":
        return fail("weight is not dequantize_linear", d)
    qb, sb, zb = d.inputs
    tq = qb.type
    if qb.node.op != "constant" or not isinstance(tq, TensorType) or tq.dtype not in _INT8:
        return fail("weight codes are not a constant 8-bit tensor", qb)
    if tq.shape is None or len(tq.shape) != 2:
        return fail("weight codes are not 2-D", qb)
    per_col = (not _rank0(sb) and int(d.attrs.get("axis", 1)) == 1
               and int(d.attrs.get("block_size", 0)) == 0)
    if not (_rank0(sb) or per_col):
        return fail("weight scale is neither per tensor nor per output column", sb)
    if sb.type.dtype != DType.f32:  # type: ignore[union-attr]
        return fail("weight scale is not f32", sb)
    return d, qb, sb, zb


class _MatmulLowering(Rule):
    """What the two integer-matmul lowerings share: their place, anchor and pass."""

    kind = "lowering"
    place = "quantized_matmul"
    place_title = "fake-quant matmuls (integer kernel lowering)"
    anchors = frozenset({"matmul"})
    pass_name = "quant_lowering"


class MatmulInteger(_MatmulLowering):
    """matmul(deq(qa, sa, za), deq(qb, sb, zb)) with per-tensor activation codes ->
    mul(cast(matmul_integer(qa, qb, za, zb), f32), mul(sa, sb))."""

    name = "quant_lowering.matmul_integer"

    def match(self, n: Node, ctx: MatchContext) -> Match | MatchFail | None:
        a = n.inputs[0].node
        if a.op != "dequantize_linear":
            return None
        w = _weight_codes(n.inputs[1])
        if isinstance(w, MatchFail):
            return w
        qa, sa, za = a.inputs
        if not (_rank0(sa) and _rank0(za)):
            return fail("activation scale is not per tensor", sa)
        if qa.type.dtype not in _INT8 or sa.type.dtype != DType.f32:  # type: ignore[union-attr]
            return fail("activation codes are not 8-bit with an f32 scale", qa)
        _, qb, sb, zb = w
        return Match(roots=[n.out], data=(qa, sa, za, qb, sb, zb),
                     detail="per-tensor activations x per-channel weights")

    def build(self, m: Match) -> Value:
        qa, sa, za, qb, sb, zb = (m.tr(v) for v in m.data)
        acc = op("matmul_integer", qa, qb, za, zb)
        return op("mul", op("cast", acc, to=DType.f32), op("mul", sa, sb))


class MatmulIntegerRows(_MatmulLowering):
    """matmul(mul(sub(cast(qa: u8), za), s), deq(qb, sb, 0)) with one scale per row of qa and a
    constant scalar za (per-token codes) -> mul(mul(cast(matmul_integer(qa, qb, za, 0)), s),
    sb). The scales are applied one after the other on purpose: ONNX Runtime 1.32 fuses
    ``Mul(Cast(acc), Mul(sa, sb))`` + a bias Add into MatMulIntegerToFloat, which then scales
    the bias by a per-row sa too (a wrong result); this order it leaves alone."""

    name = "quant_lowering.matmul_integer_rows"

    def match(self, n: Node, ctx: MatchContext) -> Match | MatchFail | None:
        m = n.inputs[0].node
        if m.op != "mul":
            return None
        found = None
        for i in (0, 1):
            c, s = m.inputs[i], m.inputs[1 - i]
            if c.node.op == "sub" and c.node.inputs[0].node.op == "cast":
                zv = const_array(c.node.inputs[1])
                qa = c.node.inputs[0].node.inputs[0]
                if zv is not None and zv.ndim == 0:
                    found = (qa, s, zv)
                    break
        if found is None:
            return None
        qa, s, zv = found
        ta, ts = qa.type, s.type
        assert isinstance(ta, TensorType) and isinstance(ts, TensorType)
        if ta.dtype not in _INT8:
            return fail("activation codes are not 8-bit", qa)
        lo, hi = (0, 255) if ta.dtype == DType.u8 else (-128, 127)
        if float(zv) != round(float(zv)) or not lo <= float(zv) <= hi:
            return fail("activation zero point is not an integer of the codes' range", qa)
        if ta.shape is None or ts.shape is None or len(ts.shape) != len(ta.shape) or \
                ts.shape[-1] != 1 or ts.shape[:-1] != ta.shape[:-1] or ts.dtype != DType.f32:
            return fail("activation scale is not one f32 scale per row", s)
        w = _weight_codes(n.inputs[1])
        if isinstance(w, MatchFail):
            return w
        _, qb, sb, zb = w
        zbv = const_array(zb)
        if zbv is None or np.any(zbv != 0):
            return fail("weight zero points are not 0", zb)
        za = np.array(int(round(float(zv))), dtype=ta.dtype.to_numpy())
        return Match(roots=[n.out], data=(qa, s, qb, sb, zb, za),
                     detail="per-token activations x per-channel weights")

    def build(self, m: Match) -> Value:
        qa, s, qb, sb, zb = (m.tr(v) for v in m.data[:5])
        za = constant(ConstData(m.data[5]))
        acc = op("matmul_integer", qa, qb, za, zb)
        return op("mul", op("mul", op("cast", acc, to=DType.f32), s), sb)


class GatherDequantized(Rule):
    """gather(dequantize_linear(T, s, 0) per row, ids) -> cast(gather(T, ids)) *
    unsqueeze(gather(s, ids), -1)."""

    name = "quant_lowering.gather_rows"
    kind = "lowering"
    place = "quantized_table"
    place_title = "gathers from dequantized tables"
    anchors = frozenset({"gather"})
    pass_name = "quant_lowering"

    def match(self, n: Node, ctx: MatchContext) -> Match | MatchFail | None:
        d = n.inputs[0].node
        if d.op != "dequantize_linear" or int(n.attrs.get("axis", 0)) != 0:
            return None
        q, s, z = d.inputs
        tq = q.type
        assert isinstance(tq, TensorType)
        if tq.shape is None or len(tq.shape) != 2 or _rank0(s) or \
                int(d.attrs.get("axis", 1)) != 0 or int(d.attrs.get("block_size", 0)) != 0:
            return fail("table is not dequantized per row", d)
        zv = const_array(z)
        if zv is None or np.any(zv != 0):
            return fail("table zero points are not 0", z)
        return Match(roots=[n.out], data=(q, s, n.inputs[1]), detail="per-row int8 table")

    def build(self, m: Match) -> Value:
        q, s, ids = (m.tr(v) for v in m.data)
        ti = ids.type
        assert isinstance(ti, TensorType) and ti.shape is not None
        dt = s.type.dtype  # type: ignore[union-attr]
        rows = op("cast", op("gather", q, ids, axis=0), to=dt)
        return op("mul", rows, op("unsqueeze", op("gather", s, ids, axis=0),
                                  axes=(len(ti.shape),)))


class DequantizeAsScale(Rule):
    """GPU targets: dequantize_linear(Wq: i8 const [K, N], sw [N], 0) per column ->
    mul(cast(Wq, f32), sw), the form graphopt.codegen's Triton dequant-matmul kernel
    (``quant_matmul``) fuses into the matmul that reads it (exact: i8 -> f32 is lossless)."""

    name = "quant_lowering.dequantize_as_scale"
    kind = "lowering"
    place = "quantized_weight"
    place_title = "dequantized int8 weights (GPU kernel form)"
    anchors = frozenset({"dequantize_linear"})
    pass_name = "quant_gpu_lowering"

    def match(self, n: Node, ctx: MatchContext) -> Match | MatchFail | None:
        w = _weight_codes(n.out)
        if isinstance(w, MatchFail):
            return None
        _, qb, sb, zb = w
        zv = const_array(zb)
        if qb.type.dtype != DType.i8 or _rank0(sb) or zv is None or np.any(zv != 0):  # type: ignore[union-attr]
            return fail("not int8 per column with zero points 0", n)
        return Match(roots=[n.out], data=(qb, sb), detail="int8 per-channel weight")

    def build(self, m: Match) -> Value:
        qb, sb = (m.tr(v) for v in m.data)
        return op("mul", op("cast", qb, to=DType.f32), sb)


class QuantGpuLowering(RewritePass):
    """Weight forms for GPU targets (the Triton kernels of graphopt.codegen)."""

    name = "quant_gpu_lowering"
    rules = (DequantizeAsScale(),)


def cleanup_after_quantize() -> list[Any]:
    """The cleanup that follows quantization: as usual, except that no fold may grow a constant
    (dequantizing a weight back to a float constant would undo the compression)."""
    from .cleanup import CSE, ConstantFold, DeadCode, RemoveNoOps

    return [ConstantFold(max_growth_bytes=0), RemoveNoOps(), CSE(), DeadCode()]


class QuantLowering(RewritePass):
    """The fake-quant forms -> integer kernels (exact rules)."""

    name = "quant_lowering"
    rules = (MatmulInteger(), MatmulIntegerRows(), GatherDequantized())

    def __init__(self, **options: Any) -> None:
        super().__init__(options=options)
