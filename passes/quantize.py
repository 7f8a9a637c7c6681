"""Quantization as rewrites: the one inexact rule, and the exact rules around it.

``QuantizeLayer`` (kind ``quantization``, ``exact=False``) is the only step that changes what a
model computes beyond float rounding: it replaces a linear ``matmul(x, W)`` or an embedding
``gather(T, ids)`` with its *fake-quant form*, built from the layer's plan
(``graphopt.quant.plan.LayerPlan``: scales chosen and weights rounded by the planner):

* weights: ``dequantize_linear(Wq, scale, zero_point)`` (int8 per channel, int4 group-wise),
  or for NF4 ``gather(table, cast(codes)) * dequantize_linear(absmax_q, s2, z2)`` per block;
* activations (W8A8): ``dequantize_linear(dynamic_quantize_linear(x))`` (per tensor, u8),
  ``(cast(round(x / s) + 128, u8) - 128) * s`` with ``s = max|row| / 127`` (per token), or
  ``dequantize_linear(quantize_linear(x, s, 128))`` with a calibrated ``s`` (static; u8 codes
  with zero point 128 hold the int8 range).

Its error measure: the layer's output SQNR on the check's inputs and on the calibration
activations (in the report), and the model's output SQNR against the mode's budget (the numeric
check). The exact rules around it:

* ``SmoothLinears`` (pass ``smoothing``): ``x @ W_i = (x * (1/s)) @ (diag(s) W_i)`` for the
  linears reading one activation (SmoothQuant, AWQ);
* ``ScaleIntoNorm`` (pass ``smoothing_fold``): ``norm(x, g, b) * c = norm(x, g * c, b * c)``,
  stated in ``rules/smoothing_fold.rules`` (verified and replayed);
* ``SplitOutlierColumns`` (pass ``llm_int8_split``): ``x @ W = x[:, O] @ W[O] + x[:, R] @ W[R]``;
* the integer-kernel lowerings of ``passes/quant_lowering.py`` (``rules/quant_lowering.rules``).

The smoothing and split rules take their parameters (s, O) from the plan, so they cannot be
replayed from a rule file alone; ``tests/passes/test_quant_rules.py`` proves them with z3 on
instances and refutes wrong scales and columns.

Plans are looked up by the identity of the layer's weight constant (``ConstData``), so the
smoothing and split rules, which make new weight constants, register the plans of the
constants they make (precomputed by the planner).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.node import ConstData, Node, Value, constant, op, op_multi
from graphopt.ir.types import DType, TensorType
from graphopt.quant.layers import weight_const
from graphopt.quant.nf4 import NF4Tensor, nf4_table
from graphopt.quant.numerics import TINY
from graphopt.quant.plan import LayerPlan
from graphopt.rewrite.context import MatchContext, const_array
from graphopt.rewrite.match import Match, MatchFail, fail
from graphopt.rewrite.passes import RewritePass, Stats
from graphopt.rewrite.rule import Rule
from graphopt.rewrite.trace import Candidate

ERROR = ("the layer's output SQNR (dB) on the calibration activations, and the model's output "
         "SQNR against the mode's budget (graphopt's check)")


def plan_key(const: ConstData, kind: str) -> tuple[int, str]:
    """How plans are found: the weight constant's identity and the layer kind ("linear" or
    "embedding": a tied table is both)."""
    return (id(const), kind)


def plan_at(n: Node, ctx: MatchContext) -> LayerPlan | None:
    plans: Mapping[tuple[int, str], LayerPlan] = ctx.option("plans", {})
    if n.op == "matmul":
        w, kind = weight_const(n.inputs[1]), "linear"
    elif n.op == "gather" and int(n.attrs.get("axis", 0)) == 0:
        w = (n.inputs[0].node, False) if n.inputs[0].node.op == "constant" else None
        kind = "embedding"
    else:
        return None
    return None if w is None else plans.get(plan_key(w[0].const, kind))


# ---- fake-quant forms ---------------------------------------------------------------------------

def _const(a: np.ndarray) -> Value:
    a = np.asarray(a)
    return constant(ConstData(a if a.flags.c_contiguous else a.copy(order="C")))


def dequantized_weight(p: LayerPlan, qt: Any = None) -> Value:
    """The plan's weight as IR, in the original weight's float dtype (the scales are stored in
    it): dequantize_linear of the codes, or the NF4 lookup."""
    w = qt if qt is not None else p.weight
    dt = np.dtype(p.layer.weight.dtype)
    if isinstance(w, NF4Tensor):
        return nf4_weight(w, dt)
    return _dequantize(w.q, np.asarray(w.scale).astype(dt), np.asarray(w.zero_point),
                       int(w.axis), int(w.block_size))


def _dequantize(q: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int, block: int
                ) -> Value:
    """dequantize_linear; one scale for everything is written per tensor (ONNX Runtime refuses
    a blocked form with a single scale)."""
    if scale.size == 1:
        scale, zp, block = scale.reshape(()), zp.reshape(()), 0
    return op("dequantize_linear", _const(q), _const(scale), _const(zp), axis=axis,
              block_size=block)


def nf4_weight(w: NF4Tensor, dt: np.dtype = np.dtype(np.float32)) -> Value:
    """[K, N] f32 from NF4 codes [K, N]: table[codes] times the absmax of each block of
    ``w.block`` rows, the absmax values double-quantized (1-D blocked dequantize_linear)."""
    assert w.absmax_q is not None, "NF4 weights are stored with double-quantized scales"
    k, n = w.codes.shape
    nb = k // w.block
    dq = w.absmax_q
    vals = op("gather", _const(nf4_table().astype(dt)), op("cast", _const(w.codes),
                                                           to=DType.i64), axis=0)
    absmax = _dequantize(dq.codes, np.asarray(dq.scale).astype(dt), np.asarray(dq.zero_point),
                         0, int(w.super_block))
    blocks = op("reshape", vals, shape=(nb, w.block, n))
    scaled = op("mul", blocks, op("reshape", absmax, shape=(nb, 1, n)))
    return op("reshape", scaled, shape=(k, n))


def quantized_activation(x: Value, p: LayerPlan, form: str) -> Value:
    """x as the W8A8 form quantizes it (and dequantizes it back: the fake-quant form)."""
    t = x.type
    assert isinstance(t, TensorType) and t.shape is not None
    if form == "w8a8-dynamic":
        q, s, z = op_multi("dynamic_quantize_linear", x)
        return op("dequantize_linear", q, s, z)
    if form == "w8a8-static":
        # int8 codes stored as u8 with zero point 128, as for per-token activations: ONNX
        # Runtime's u8 x i8 integer matmul is the fast one (i8 x i8 runs about 6x slower)
        assert p.act_scale is not None
        s, z = _const(np.array(p.act_scale, np.float32)), _const(np.array(128, np.uint8))
        return op("dequantize_linear", op("quantize_linear", x, s, z), s, z)
    if form == "w8a8-per-token":
        # symmetric int8 codes per row, stored shifted by 128 as u8 (ONNX Runtime's integer
        # matmul is fast for u8 activations; zero point 128 makes the shift exact)
        rank = len(t.shape)
        amax = op("reduce_max", op("abs", x), axes=(rank - 1,), keepdims=True)
        s = op("maximum", op("div", amax, _const(np.array(127.0, np.float32))),
               _const(np.array(TINY, np.float32)))
        q = op("cast", op("add", op("round", op("div", x, s)),
                          _const(np.array(128.0, np.float32))), to=DType.u8)
        return op("mul", op("sub", op("cast", q, to=DType.f32),
                            _const(np.array(128.0, np.float32))), s)
    raise AssertionError(form)


class QuantizeLayer(Rule):
    """A linear or embedding table -> its fake-quant form, as the layer's plan says."""

    name = "quantize.layer"
    kind = "quantization"
    place = "quantizable_layer"
    place_title = "linears and embedding tables with constant weights"
    anchors = frozenset({"matmul", "gather"})
    pass_name = "quantize"
    exact = False
    error = ERROR

    def match(self, n: Node, ctx: MatchContext) -> Match | MatchFail | None:
        p = plan_at(n, ctx)
        if p is None:
            return None
        if not p.quantized:
            return fail(f"left float: {p.reason}", n)
        if p.form == "llm-int8":
            return fail("llm-int8 layers are split first (pass llm_int8_split)", n)
        sq = "" if p.sqnr_db is None else f", layer SQNR {p.sqnr_db:.1f} dB"
        return Match(roots=[n.out], data=p,
                     detail=f"{p.layer.describe()} -> {p.form} ({p.detail}{sq})")

    def build(self, m: Match) -> Value:
        p: LayerPlan = m.data
        n = m.roots[0].node  # the layer's node, or the linear a smoothing / split rule made
        if n.op == "gather":
            return op("gather", dequantized_weight(p), m.tr(n.inputs[1]), axis=0)
        x = m.tr(n.inputs[0])
        w = dequantized_weight(p)
        if p.form.startswith("w8a8"):
            x = quantized_activation(x, p, p.form)
        return op("matmul", x, w)


class Quantize(RewritePass):
    """Apply the plans (pass option ``plans``: ``plan_key(weight ConstData, kind)`` ->
    LayerPlan)."""

    name = "quantize"
    rules = (QuantizeLayer(),)

    def __init__(self, plans: Mapping[tuple[int, str], LayerPlan] | None = None) -> None:
        super().__init__(options={"plans": dict(plans or {})})

    def summarize(self, before: Graph, after: Graph, candidates: Sequence[Candidate]
                  ) -> Stats:
        return {"layers_quantized": sum(1 for c in candidates if c.matched)}


# ---- smoothing (SmoothQuant, AWQ): exact --------------------------------------------------------

class SmoothLinears(Rule):
    """The constant-weight linears reading one activation x, with a planned per-channel s:
    x @ W_i -> (x * (1/s)) @ (diag(s) W_i). Exact over the reals (the float result differs by
    the rounding of the scaled values)."""

    name = "smoothing.linears"
    kind = "canonical"
    place = "smoothed_activation"
    place_title = "activations divided by per-channel smoothing scales"
    anchors = frozenset({"matmul"})
    pass_name = "smoothing"

    def match(self, n: Node, ctx: MatchContext) -> Match | MatchFail | None:
        smooth: Mapping[int, tuple[np.ndarray, ConstData]] = ctx.option("smooth", {})
        w = weight_const(n.inputs[1])
        if w is None or id(w[0].const) not in smooth:
            return None
        x = n.inputs[0]
        s = smooth[id(w[0].const)][0]
        group = []
        for u, pos in ctx.users_of(x.node):
            if u.op != "matmul" or pos != 0 or u.inputs[0] != x:
                continue
            wu = weight_const(u.inputs[1])
            if wu is None or id(wu[0].const) not in smooth:
                return fail("a linear reading the same activation has no smoothing plan", u)
            if not np.array_equal(smooth[id(wu[0].const)][0], s):
                return fail("linears reading one activation have different scales", u)
            group.append(u)
        group = sorted(set(group), key=lambda u: ctx.position[id(u)])
        if group[0] is not n:
            return None  # the group's place is its first linear
        scaled = [smooth[id(weight_const(u.inputs[1])[0].const)][1]  # type: ignore[index]
                  for u in group]
        return Match(roots=[u.out for u in group], data=(x, s, scaled),
                     detail=f"{len(group)} linear(s) over x / s ({s.size} channels)")

    def build(self, m: Match) -> list[Value]:
        x, s, scaled = m.data
        xs = op("mul", m.tr(x), _const((1.0 / s).astype(np.float32)))
        return [op("matmul", xs, constant(cd)) for cd in scaled]


class Smoothing(RewritePass):
    """Divide activations by their smoothing scales and scale the weights that read them
    (option ``smooth``: id(weight ConstData) -> (s, ConstData of diag(s) W))."""

    name = "smoothing"

    def __init__(self, smooth: Mapping[int, tuple[np.ndarray, ConstData]] | None = None
                 ) -> None:
        super().__init__(rules=[SmoothLinears()], options={"smooth": dict(smooth or {})})


class ScaleIntoNorm(Rule):
    """mul(layer_norm(x, g, b), c) -> layer_norm(x, g * c, b * c) (rms_norm: g * c), for a
    constant per-channel c and a norm read only by this mul."""

    name = "smoothing.scale_into_norm"
    kind = "canonical"
    place = "scaled_norm"
    place_title = "norms scaled per channel (smoothing divisors)"
    anchors = frozenset({"mul"})
    pass_name = "smoothing_fold"

    def match(self, n: Node, ctx: MatchContext) -> Match | MatchFail | None:
        for i in (0, 1):
            norm, cv = n.inputs[i].node, const_array(n.inputs[1 - i])
            if norm.op in ("layer_norm", "rms_norm") and cv is not None:
                break
        else:
            return None
        if len(ctx.users_of(norm)) != 1:
            return fail("the norm has other readers (they need it unscaled)", norm)
        t = norm.out_types[0]
        assert isinstance(t, TensorType) and t.shape is not None
        width = t.shape[-1]
        if cv.ndim != 1 or cv.shape[0] != width:
            return fail(f"the scale is not one value per channel ({width})", n)
        if len(norm.inputs) < 2:
            return fail("the norm has no gain to fold the scale into", norm)
        if int(norm.attrs.get("axis", -1)) not in (-1, len(t.shape) - 1):
            return fail("the norm does not run over the last axis alone", norm)
        params = [const_array(v) for v in norm.inputs[1:]]
        if any(p is None or p.shape != (width,) for p in params):
            return fail("the norm's gain / bias are not constant vectors", norm)
        return Match(roots=[n.out], data=(norm, cv, params))

    def build(self, m: Match) -> Value:
        norm, cv, params = m.data
        new = [_const((p * cv).astype(p.dtype)) for p in params]
        return op(norm.op, m.tr(norm.inputs[0]), *new, **dict(norm.attrs))


class FoldScaleIntoNorm(RewritePass):
    """Fold the smoothing divisor into the norm before it where the norm has no other reader."""

    name = "smoothing_fold"
    rules = (ScaleIntoNorm(),)


# ---- LLM.int8: the column split (exact) ---------------------------------------------------------

class SplitOutlierColumns(Rule):
    """x @ W -> x[..., O] @ W[O] + x[..., R] @ W[R] for the planned outlier columns O (the
    rest R quantized afterwards by QuantizeLayer)."""

    name = "llm_int8.split"
    kind = "canonical"
    place = "outlier_split"
    place_title = "linears split into outlier and regular input columns"
    anchors = frozenset({"matmul"})
    pass_name = "llm_int8_split"

    def match(self, n: Node, ctx: MatchContext) -> Match | MatchFail | None:
        split: Mapping[int, tuple[np.ndarray, np.ndarray, ConstData, ConstData]] = \
            ctx.option("split", {})
        w = weight_const(n.inputs[1])
        if w is None or id(w[0].const) not in split:
            return None
        return Match(roots=[n.out], data=split[id(w[0].const)],
                     detail=f"{split[id(w[0].const)][0].size} outlier columns")

    def build(self, m: Match) -> Value:
        n = m.roots[0].node
        cols, rest, w_out, w_rest = m.data
        x = m.tr(n.inputs[0])
        t = x.type
        assert isinstance(t, TensorType) and t.shape is not None
        ax = len(t.shape) - 1
        y_rest = op("matmul", op("gather", x, _const(rest), axis=ax), constant(w_rest))
        if cols.size == 0:
            return y_rest
        y_out = op("matmul", op("gather", x, _const(cols), axis=ax), constant(w_out))
        return op("add", y_out, y_rest)


class SplitOutliers(RewritePass):
    name = "llm_int8_split"
    rules = (SplitOutlierColumns(),)

    def __init__(self, split: Mapping[int, Any] | None = None) -> None:
        super().__init__(options={"split": dict(split or {})})
