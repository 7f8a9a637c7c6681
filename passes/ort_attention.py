"""``attention`` -> ONNX Runtime's ``com.microsoft`` MultiHeadAttention / GroupQueryAttention.

Only run when the user allows contrib ops (the result runs in ONNX Runtime only). The new node is
an ``opaque`` node carrying the contrib NodeProto, so the reference interpreter runs it in ONNX
Runtime and the exporter writes it as is (with the ``com.microsoft`` opset import).

Forms (q [B, H, S, D], k/v [B, Hkv, T, D(v)] of ``attention``):

* MultiHeadAttention (H == Hkv): query [B, S, H*D], key [B, T, H*D], value [B, T, H*Dv],
  ``unidirectional`` for causal (S == T), ``attention_bias`` [B|1, H|1, S, T] for a mask.
* GroupQueryAttention (H a multiple of Hkv, D == Dv a multiple of 8, static B and T):
  query [B, S, H*D], key/value [B, T, Hkv*D], ``seqlens_k`` = T-1 per batch,
  ``total_sequence_length`` = T, present_key/value outputs requested (see ``lower``), ``causal``
  attribute (S == T when causal), ``attention_bias`` for a mask.

A bool mask becomes an additive bias (0 / ``MASK_FILL``). Rows whose every key is masked differ:
``attention`` gives 0 there, the contrib ops average over the keys (a finite fill). Only mode
``always`` lowers masked blocks (``auto`` takes unmasked ones), and graphopt's numeric check
rejects the result when its inputs produce such rows.

Which blocks to lower (``mode``):

* ``"auto"`` (what ``fusion_passes("cpu", allow_contrib_ops=True)`` runs): a cost-model decision
  per block (``passes/attention_cost.py``). The two forms of the block, the standard
  ``attention`` node over q/k/v [B, H, S, D] and the contrib node over [B, S, H*D] (the layout
  ops around it cancel against the model's own head split and merge, see
  ``test_layout_ops_cancel_and_export_runs_in_ort``), are priced for the target (pass option
  ``target``, default ``cpu``): on this host (``cpu``) both run in ONNX Runtime, timed
  interleaved and cached per block shape, and the contrib op is chosen when it is faster. The
  contrib kernels only win where their memory-efficient paths avoid materializing the
  [B, H, S, T] scores (docs/fusions.md: 0.28 vs 0.33-0.47 ms at S=128, 104 vs 116 ms
  non-causal and 86 vs 144 ms causal at S=2048), which the measurement finds by itself. Before
  any timing, the structural conditions: a form must exist, no mask (ONNX Runtime's contrib
  kernels materialize the scores with a mask: nothing to gain, and fully masked rows differ)
  and static S and T (a form is timed at its shape). The analytic model has no price for the
  opaque contrib kernel, so on other targets (or with ``cost="analytic"``) blocks are kept.
* ``"always"``: every block that has a contrib form (what ``--passes ort_contrib_attention``
  and the rule file ``passes/rules/ort_contrib_attention.rules`` replay).

Pass options: ``target`` (default ``cpu``) and ``cost`` (None: measured on this host, analytic
elsewhere; ``"measured"``, ``"analytic"`` or a function ``Graph -> seconds``).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from graphopt.cost.measured import HOST, cost_mode
from graphopt.errors import GraphOptError
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node, Value, constant
from graphopt.ir.types import Dim, DType, TensorType
from graphopt.rewrite.context import MatchContext, tensor_type
from graphopt.rewrite.match import Match, fail
from graphopt.rewrite.passes import RewritePass, Stats
from graphopt.rewrite.rule import Rule
from graphopt.rewrite.trace import Candidate

from .attention_cost import describe_time, form, form_times
from .attention_mask import reshape_to, transpose_to

RULE = "ort_contrib_attention"
CONTRIB_OPSETS = (("", 21), ("com.microsoft", 1))
MASK_FILL = -1e30  # finite: a fully masked row stays finite in ONNX Runtime
MODES = ("auto", "always")

Tr = Callable[[Value], Value]


def contrib_op(n: Node) -> str:
    """The contrib op type for attention node ``n``; raises MatchFail with the reason when ``n``
    has none."""
    q, k, v = (tensor_type(x) for x in n.inputs[:3])
    B, H, S, D = q.shape  # type: ignore[misc]
    _, Hkv, T, _ = k.shape  # type: ignore[misc]
    Dv = v.shape[3]  # type: ignore[index]
    causal = bool(n.attrs["causal"])
    if q.dtype not in (DType.f32, DType.f16):
        raise fail(f"dtype {q.dtype.value} (contrib attention takes f32 / f16)", n)
    for d, what in ((H, "query heads"), (Hkv, "kv heads"), (D, "head size"),
                    (Dv, "value head size")):
        if not isinstance(d, int):
            raise fail(f"symbolic {what} {d}", n)
    if causal and S != T:
        raise fail(f"causal with {S} queries over {T} keys (contrib ops align causal masks "
                   f"to a KV cache)", n)
    # causal blocks prefer GroupQueryAttention (its causal CPU kernel does not materialize the
    # scores; MultiHeadAttention's does), non-causal ones MultiHeadAttention (flash when unmasked)
    why_not_gqa = _gqa_blocker(B, H, Hkv, S, T, D, Dv)
    if H == Hkv and (not causal or why_not_gqa):
        return "MultiHeadAttention"
    if why_not_gqa:
        raise fail(why_not_gqa, n)
    return "GroupQueryAttention"


def auto_choice(n: Node, op: str, ctx: MatchContext) -> str:
    """Mode auto: why ``n`` is lowered to ``op`` (the cost model's numbers); raises MatchFail
    saying why it is kept."""
    if len(n.inputs) == 4:
        raise fail("masked block: ONNX Runtime's contrib kernels materialize the scores "
                   "with a mask, standard Attention is as fast (mode auto)", n)
    S, T = tensor_type(n.inputs[0]).shape[2], tensor_type(n.inputs[1]).shape[2]  # type: ignore[index]
    if not (isinstance(S, int) and isinstance(T, int)):
        raise fail(f"symbolic sequence ({S}, {T}): the forms are priced at static shapes "
                   f"(mode auto)", n)
    target = str(ctx.option("target", HOST))
    cost = ctx.option("cost")
    if cost_mode(target, cost) == "analytic":
        raise fail(f"the analytic cost model has no price for the com.microsoft kernel "
                   f"(target {target}; measured on this host only) (mode auto)", n)
    qkv = n.inputs[:3]
    standard = form([x.type for x in qkv], lambda xs: Node.build("attention", xs, n.attrs).out)
    contrib = form([_merged_type(x) for x in qkv],
                   lambda xs: contrib_call(n, op, xs[0], xs[1], xs[2], None))
    try:
        ts, tc = form_times([standard, contrib], target, cost)
    except GraphOptError as e:
        raise fail(f"no cost for the forms: {e.one_line()} (mode auto)", n) from e
    if ts is None or tc is None:
        raise fail(f"the {op} form could not be timed on {target} (mode auto)", n)
    if not tc < ts:
        raise fail(f"{op} is not faster on {target}: {describe_time(tc)} vs "
                   f"{describe_time(ts)} for standard Attention (cost model) (mode auto)", n)
    return f"{op}: {describe_time(tc)} vs {describe_time(ts)} for standard Attention"


def _gqa_blocker(B: Dim, H: int, Hkv: int, S: Dim, T: Dim, D: int, Dv: int) -> str:
    """Why GroupQueryAttention cannot take this block ("" when it can)."""
    if D != Dv:
        return f"GroupQueryAttention needs equal q/v head sizes ({D} vs {Dv})"
    if D % 8:
        return f"GroupQueryAttention needs a head size multiple of 8 (got {D})"
    if not (isinstance(B, int) and isinstance(T, int)):
        return f"GroupQueryAttention needs static batch and key length ({B}, {T})"
    if S != T:
        return f"GroupQueryAttention needs as many queries as keys ({S} vs {T})"
    return ""


def _merge_heads(x: Value, like: Node) -> Value:
    """[B, H, S, D] -> [B, S, H*D]."""
    B, H, S, D = tensor_type(x).shape  # type: ignore[misc]
    y = transpose_to(x, (0, 2, 1, 3), like)
    return reshape_to(y, (B, S, H * D), like)


def _bias(mask: Value, full: tuple[Dim, ...], dt: DType, like: Node) -> Value:
    """The mask as an additive [B|1, H|1, S, T] tensor of dtype ``dt``."""
    npdt = dt.to_numpy()
    t = tensor_type(mask)
    if t.dtype == DType.bool:
        mask = Node.build("where", (mask, constant(np.zeros((), npdt)),
                                    constant(np.asarray(MASK_FILL, npdt))), {}, like.origin).out
    elif t.dtype != dt:
        mask = Node.build("cast", (mask,), {"to": dt}, like.origin).out
    shp = tuple(tensor_type(mask).shape)  # type: ignore[arg-type]
    if len(shp) < 4:
        shp = (1,) * (4 - len(shp)) + shp
        mask = reshape_to(mask, shp, like)
    want = (shp[0], shp[1], full[2], full[3])
    if shp != want:
        mask = Node.build("expand", (mask,), {"shape": want}, like.origin).out
    return mask


def _opaque(op: str, ins: Sequence[Value | None], attrs: dict[str, object],
            outs_t: Sequence[TensorType], like: Node) -> Value:
    """The contrib node as an opaque node; returns its first output."""
    from onnx import helper

    names = [f"in{i}" if x is not None else "" for i, x in enumerate(ins)]
    outs = [f"out{i}" for i in range(len(outs_t))]
    while names and not names[-1]:
        names.pop()
    proto = helper.make_node(op, names, outs, domain="com.microsoft", **attrs)
    oattrs = {
        "op_type": op, "domain": "com.microsoft", "proto": proto.SerializeToString(),
        "opsets": CONTRIB_OPSETS, "out_types": tuple(outs_t),
        "present": tuple(bool(x) for x in names),
        "captured": (), "call": None, "functions": (),
    }
    node = Node.build("opaque", tuple(x for x in ins if x is not None), oattrs, like.origin)
    return node.outputs[0]


def _merged_type(x: Value) -> TensorType:
    """[B, H, S, D] -> the contrib ops' [B, S, H*D]."""
    t = tensor_type(x)
    B, H, S, D = t.shape  # type: ignore[misc]
    return TensorType((B, S, H * D), t.dtype)  # type: ignore[operator]


def contrib_call(n: Node, op: str, q3: Value, k3: Value, v3: Value, bias: Value | None
                 ) -> Value:
    """The contrib node standing for attention node ``n`` over q/k/v in the merged [B, S, H*D]
    layout (and the additive ``bias``); its output is [B, S, H*Dv]."""
    qt, kt, vt = (tensor_type(x) for x in n.inputs[:3])
    B, H, S, D = qt.shape  # type: ignore[misc]
    Hkv, T = kt.shape[1], kt.shape[2]  # type: ignore[index]
    Dv = vt.shape[3]  # type: ignore[index]
    attrs: dict[str, object] = {"num_heads": int(H)}  # type: ignore[arg-type]
    if n.attrs["scale"] is not None:
        attrs["scale"] = float(n.attrs["scale"])
    out3 = TensorType((B, S, H * Dv), qt.dtype)  # type: ignore[operator]
    if op == "MultiHeadAttention":
        if n.attrs["causal"]:
            attrs["unidirectional"] = 1
        return _opaque(op, [q3, k3, v3, None, None, bias], attrs, [out3], n)
    assert isinstance(B, int) and isinstance(T, int)
    attrs["kv_num_heads"] = int(Hkv)  # type: ignore[arg-type]
    attrs["causal"] = int(bool(n.attrs["causal"]))
    seqlens = constant(np.full((B,), T - 1, np.int32))
    total = constant(np.asarray(T, np.int32))
    # present_key / present_value are asked for although unused: without them ONNX Runtime
    # 1.32's CPU kernel materializes the scores (S=4096: 302 vs 47 MiB, measured)
    present = TensorType((B, Hkv, T, D), qt.dtype)  # type: ignore[arg-type]
    return _opaque(op, [q3, k3, v3, None, None, seqlens, total, None, None, None, bias],
                   attrs, [out3, present, present], n)


def lower(n: Node, op: str, tr: Tr) -> Value:
    """The contrib replacement of attention node ``n`` (inputs translated by ``tr``)."""
    q, k, v = (tr(x) for x in n.inputs[:3])
    mask = tr(n.inputs[3]) if len(n.inputs) == 4 else None
    qt = tensor_type(q)
    B, H, S, _ = qt.shape  # type: ignore[misc]
    T, Dv = tensor_type(k).shape[2], tensor_type(v).shape[3]  # type: ignore[index]
    bias = _bias(mask, (B, H, S, T), qt.dtype, n) if mask is not None else None
    y = contrib_call(n, op, _merge_heads(q, n), _merge_heads(k, n), _merge_heads(v, n), bias)
    y4 = reshape_to(y, (B, S, H, Dv), n)
    return transpose_to(y4, (0, 2, 1, 3), n)


class ContribAttentionRule(Rule):
    """``attention`` -> com.microsoft MultiHeadAttention / GroupQueryAttention (mode
    ``always``: every block that has a contrib form; ``auto``: where the cost model says the
    contrib kernel is faster)."""

    name = RULE
    kind = "lowering"
    place = "contrib_attention"
    place_title = "com.microsoft attention lowering"
    anchors = frozenset({"attention"})
    pass_name = "ort_contrib_attention"

    def __init__(self, mode: str = "auto") -> None:
        if mode not in MODES:
            raise ValueError(f"{RULE}: unknown mode {mode!r}; valid: {', '.join(MODES)}")
        self.mode = mode

    def match(self, n: Node, ctx: MatchContext) -> Match:
        op = contrib_op(n)
        detail = auto_choice(n, op, ctx) if self.mode == "auto" else op
        return Match(roots=[n.out], data=(n, op), detail=detail, spelling=f"mode {self.mode}")

    def build(self, m: Match) -> Value:
        n, op = m.data
        return lower(n, op, m.tr)


class OrtContribAttention(RewritePass):
    """Lower ``attention`` nodes to com.microsoft MultiHeadAttention / GroupQueryAttention.
    Stats: ``contrib_mha``, ``contrib_gqa``, ``contrib_attention_kept``."""

    name = "ort_contrib_attention"

    def __init__(self, mode: str = "auto", options: dict[str, Any] | None = None) -> None:
        super().__init__(rules=(ContribAttentionRule(mode),), options=options)

    def summarize(self, before: Graph, after: Graph, candidates: Sequence[Candidate]
                  ) -> Stats:
        done = [c.detail.split(":")[0] for c in candidates if c.rule == RULE and c.matched]
        return {"contrib_mha": done.count("MultiHeadAttention"),
                "contrib_gqa": done.count("GroupQueryAttention"),
                "contrib_attention_kept": sum(1 for c in candidates
                                              if c.rule == RULE and not c.matched)}
