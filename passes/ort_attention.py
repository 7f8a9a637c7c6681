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

Which blocks to lower (``mode``), measured on this machine's CPU with ONNX Runtime 1.32
(single-block models, table in docs/fusions.md):

* ``"auto"`` (target cpu): only blocks without a mask whose contrib kernel is the memory-efficient
  (flash) one: non-causal MultiHeadAttention, causal GroupQueryAttention; and only for static
  sequences of at least ``min_seq`` queries. There the contrib op is faster (S=2048: 104 vs 116
  ms non-causal, 86 vs 144 ms causal) and its memory grows ~1.3-1.5x from S=2048 to 4096 where
  standard Attention's grows ~3.6x. At S=128 standard Attention is faster (0.28 vs 0.33-0.47 ms),
  and with a mask the contrib kernels materialize the scores as standard Attention does.
* ``"always"``: every block that has a contrib form.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.node import Node, Value, constant
from graphopt.ir.types import Dim, DType, TensorType
from graphopt.rewrite.passes import Pass, PassResult

from .attention_flash import reshape_to, transpose_to
from .fusion_report import Candidate, NoMatch, add_notes, rebuild

RULE = "ort_contrib_attention"
CONTRIB_OPSETS = (("", 21), ("com.microsoft", 1))
MASK_FILL = -1e30  # finite: a fully masked row stays finite in ONNX Runtime
MODES = ("auto", "always")
DEFAULT_MIN_SEQ = 1024

_Tr = Callable[[Value], Value]


def _t(v: Value) -> TensorType:
    t = v.type
    assert isinstance(t, TensorType) and t.shape is not None
    return t


def contrib_op(n: Node, mode: str = "auto", min_seq: int = DEFAULT_MIN_SEQ) -> str:
    """The contrib op type for attention node ``n``; raises NoMatch with the reason when ``n``
    has none (or ``mode`` does not choose one)."""
    q, k, v = (_t(x) for x in n.inputs[:3])
    B, H, S, D = q.shape  # type: ignore[misc]
    _, Hkv, T, _ = k.shape  # type: ignore[misc]
    Dv = v.shape[3]  # type: ignore[index]
    masked = len(n.inputs) == 4
    causal = bool(n.attrs["causal"])
    if q.dtype not in (DType.f32, DType.f16):
        raise NoMatch(f"dtype {q.dtype.value} (contrib attention takes f32 / f16)", n)
    for d, what in ((H, "query heads"), (Hkv, "kv heads"), (D, "head size"),
                    (Dv, "value head size")):
        if not isinstance(d, int):
            raise NoMatch(f"symbolic {what} {d}", n)
    if causal and S != T:
        raise NoMatch(f"causal with {S} queries over {T} keys (contrib ops align causal masks "
                      f"to a KV cache)", n)
    # causal blocks prefer GroupQueryAttention (its causal CPU kernel does not materialize the
    # scores; MultiHeadAttention's does), non-causal ones MultiHeadAttention (flash when unmasked)
    why_not_gqa = _gqa_blocker(B, H, Hkv, S, T, D, Dv)
    if H == Hkv and (not causal or why_not_gqa):
        op = "MultiHeadAttention"
    elif why_not_gqa:
        raise NoMatch(why_not_gqa, n)
    else:
        op = "GroupQueryAttention"
    if mode == "auto":
        if masked:
            raise NoMatch("masked block: ONNX Runtime's contrib kernels materialize the scores "
                          "with a mask, standard Attention is as fast (mode auto)", n)
        if not isinstance(S, int) or S < min_seq:
            raise NoMatch(f"sequence {S} below {min_seq}: standard Attention is faster on this "
                          f"CPU (mode auto)", n)
    elif mode != "always":
        raise ValueError(f"{RULE}: unknown mode {mode!r}; valid: {', '.join(MODES)}")
    return op


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
    B, H, S, D = _t(x).shape  # type: ignore[misc]
    y = transpose_to(x, (0, 2, 1, 3), like)
    return reshape_to(y, (B, S, H * D), like)


def _bias(mask: Value, full: tuple[Dim, ...], dt: DType, like: Node) -> Value:
    """The mask as an additive [B|1, H|1, S, T] tensor of dtype ``dt``."""
    npdt = dt.to_numpy()
    t = _t(mask)
    if t.dtype == DType.bool:
        mask = Node.build("where", (mask, constant(np.zeros((), npdt)),
                                    constant(np.asarray(MASK_FILL, npdt))), {}, like.origin).out
    elif t.dtype != dt:
        mask = Node.build("cast", (mask,), {"to": dt}, like.origin).out
    shp = tuple(_t(mask).shape)  # type: ignore[arg-type]
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


def lower(n: Node, op: str, tr: _Tr) -> Value:
    """The contrib replacement of attention node ``n`` (inputs translated by ``tr``)."""
    q, k, v = (tr(x) for x in n.inputs[:3])
    mask = tr(n.inputs[3]) if len(n.inputs) == 4 else None
    qt = _t(q)
    B, H, S, D = qt.shape  # type: ignore[misc]
    Hkv, T = _t(k).shape[1], _t(k).shape[2]  # type: ignore[index]
    Dv = _t(v).shape[3]  # type: ignore[index]
    q3, k3, v3 = _merge_heads(q, n), _merge_heads(k, n), _merge_heads(v, n)
    bias = _bias(mask, (B, H, S, T), qt.dtype, n) if mask is not None else None
    attrs: dict[str, object] = {"num_heads": int(H)}  # type: ignore[arg-type]
    if n.attrs["scale"] is not None:
        attrs["scale"] = float(n.attrs["scale"])
    out3 = TensorType((B, S, H * Dv), qt.dtype)  # type: ignore[operator]
    if op == "MultiHeadAttention":
        if n.attrs["causal"]:
            attrs["unidirectional"] = 1
        y = _opaque(op, [q3, k3, v3, None, None, bias], attrs, [out3], n)
    else:
        assert isinstance(B, int) and isinstance(T, int)
        attrs["kv_num_heads"] = int(Hkv)  # type: ignore[arg-type]
        attrs["causal"] = int(bool(n.attrs["causal"]))
        seqlens = constant(np.full((B,), T - 1, np.int32))
        total = constant(np.asarray(T, np.int32))
        # present_key / present_value are asked for although unused: without them ONNX Runtime
        # 1.32's CPU kernel materializes the scores (S=4096: 302 vs 47 MiB, measured)
        present = TensorType((B, Hkv, T, D), qt.dtype)  # type: ignore[arg-type]
        y = _opaque(op, [q3, k3, v3, None, None, seqlens, total, None, None, None, bias],
                    attrs, [out3, present, present], n)
    y4 = reshape_to(y, (B, S, H, Dv), n)
    return transpose_to(y4, (0, 2, 1, 3), n)


def find_contrib(g: Graph, mode: str = "auto", min_seq: int = DEFAULT_MIN_SEQ
                 ) -> tuple[list[Candidate], dict[int, tuple[Node, str]]]:
    """Every attention node: lowered (with its contrib op, by id of the node) or not, why."""
    cands: list[Candidate] = []
    chosen: dict[int, tuple[Node, str]] = {}
    for n in g.nodes:
        if n.op != "attention":
            continue
        try:
            op = contrib_op(n, mode, min_seq)
        except NoMatch as e:
            cands.append(Candidate("contrib_attention", RULE, n, False, e.condition, e.node))
            continue
        chosen[id(n)] = (n, op)
        cands.append(Candidate("contrib_attention", RULE, n, True, detail=op))
    return cands, chosen


class OrtContribAttention(Pass):
    """Lower ``attention`` nodes to com.microsoft MultiHeadAttention / GroupQueryAttention."""

    name = "ort_contrib_attention"

    def __init__(self, mode: str = "auto", min_seq: int = DEFAULT_MIN_SEQ) -> None:
        if mode not in MODES:
            raise ValueError(f"{self.name}: unknown mode {mode!r}; valid: {', '.join(MODES)}")
        self.mode = mode
        self.min_seq = min_seq

    def run(self, g: Graph) -> PassResult:
        cands, chosen = find_contrib(g, self.mode, self.min_seq)
        builders = {key: (lambda node, op: lambda tr: (lower(node, op, tr),))(node, op)
                    for key, (node, op) in chosen.items()}
        out = rebuild(g, builders) if builders else g
        stats: dict[str, object] = {
            "contrib_mha": sum(1 for _, op in chosen.values() if op == "MultiHeadAttention"),
            "contrib_gqa": sum(1 for _, op in chosen.values() if op == "GroupQueryAttention"),
            "contrib_attention_kept": len(cands) - len(chosen)}
        add_notes(stats, cands)
        return PassResult(out, bool(chosen), stats)
