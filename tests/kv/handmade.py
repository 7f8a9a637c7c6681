"""A tiny decoder-with-past built by hand with onnx.helper, following the contract in
graphopt.kv.spec exactly, and a numpy reference that runs whole sequences without a cache.

The network: token embedding + learned position embedding (read by position_ids), 2 pre-norm
blocks of GQA attention (2 query heads, 1 KV head, head size 8) over concat(past, new) with a
causal mask (and an optional sliding window) on sequence indices and the attention_mask as
padding, a SiLU MLP, a final norm and the LM head. Weights are random (seeded).

``build_model(window=None) -> (model, spec, reference)`` where ``reference(ids, mask=None,
window=spec.window) -> logits [B, N, V]``; ``reference_generate`` is greedy generation over it.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from graphopt.kv.spec import IO, CacheSpec

LAYERS, HIDDEN, HEADS, KV_HEADS, HEAD, VOCAB, FFN, CONTEXT = 2, 16, 2, 1, 8, 32, 32, 64
OPSET = 18
NEG = -1e9  # score of a masked key (finite: a row with every key masked stays finite)

Reference = Callable[..., np.ndarray]


def _weights(seed: int) -> dict[str, np.ndarray]:
    r = np.random.default_rng(seed)

    def w(*shape: int, scale: float = 0.3) -> np.ndarray:
        return (r.standard_normal(shape) * scale).astype(np.float32)

    p = {"tok": w(VOCAB, HIDDEN, scale=1.0), "pos": w(CONTEXT, HIDDEN, scale=1.0),
         "lnf.g": 1 + w(HIDDEN, scale=0.1), "lnf.b": w(HIDDEN, scale=0.1),
         "lm": w(HIDDEN, VOCAB, scale=1.0)}
    for i in range(LAYERS):
        p.update({f"l{i}.ln1.g": 1 + w(HIDDEN, scale=0.1), f"l{i}.ln1.b": w(HIDDEN, scale=0.1),
                  f"l{i}.wq": w(HIDDEN, HEADS * HEAD), f"l{i}.wk": w(HIDDEN, KV_HEADS * HEAD),
                  f"l{i}.wv": w(HIDDEN, KV_HEADS * HEAD), f"l{i}.wo": w(HEADS * HEAD, HIDDEN),
                  f"l{i}.ln2.g": 1 + w(HIDDEN, scale=0.1), f"l{i}.ln2.b": w(HIDDEN, scale=0.1),
                  f"l{i}.w1": w(HIDDEN, FFN), f"l{i}.w2": w(FFN, HIDDEN)})
    return p


class _G:
    """A small node list with fresh names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.names: set[str] = set()
        self.n = 0

    def op(self, op: str, *ins: str, out: str | None = None, **attrs: object) -> str:
        self.n += 1
        o = out or f"t{self.n}_{op}"
        self.nodes.append(helper.make_node(op, list(ins), [o], name=f"n{self.n}_{op}", **attrs))
        return o

    def const(self, name: str, a: np.ndarray) -> str:
        """An initializer (made once per name)."""
        if name not in self.names:
            self.names.add(name)
            self.inits.append(numpy_helper.from_array(np.asarray(a), name))
        return name


def _mask_graph(g: _G, window: int | None) -> str:
    """allowed [B, 1, S, T] (bool): key index j <= query index (past + i), inside the window,
    and not padding."""
    s = g.op("Squeeze", g.op("Shape", IO.INPUT_IDS, start=1, end=2), g.const("ax0", np.array([0])))
    t = g.op("Squeeze", g.op("Shape", IO.ATTENTION_MASK, start=1, end=2), "ax0")
    one = g.const("one", np.array(1, np.int64))
    zero = g.const("zero", np.array(0, np.int64))
    q_idx = g.op("Unsqueeze", g.op("Range", g.op("Sub", t, s), t, one),
                 g.const("ax1", np.array([1])))                          # [S, 1]
    k_idx = g.op("Unsqueeze", g.op("Range", zero, t, one), "ax0")        # [1, T]
    allowed = g.op("LessOrEqual", k_idx, q_idx)
    if window is not None:
        lo = g.op("Sub", q_idx, g.const("window", np.array(window, np.int64)))
        allowed = g.op("And", allowed, g.op("Greater", k_idx, lo))
    pad = g.op("Unsqueeze", g.op("Cast", IO.ATTENTION_MASK, to=TensorProto.BOOL),
               g.const("ax12", np.array([1, 2])))                        # [B, 1, 1, T]
    return g.op("And", allowed, pad)


def _heads(g: _G, x: str, n: int) -> str:
    """[B, S, n*D] -> [B, n, S, D]."""
    r = g.op("Reshape", x, g.const(f"shape_h{n}", np.array([0, 0, n, HEAD])))
    return g.op("Transpose", r, perm=[0, 2, 1, 3])


def _expand_kv(g: _G, kv: str) -> str:
    """[B, Hkv, T, D] -> [B, H, T, D], each KV head shared by HEADS / KV_HEADS query heads."""
    u = g.op("Unsqueeze", kv, g.const("ax2", np.array([2])))
    e = g.op("Expand", u, g.const("rep", np.array([1, 1, HEADS // KV_HEADS, 1, 1])))
    return g.op("Reshape", e, g.const("shape_gqa", np.array([0, HEADS, -1, HEAD])))


def _block(g: _G, i: int, x: str, allowed: str) -> str:
    h = g.op("LayerNormalization", x, f"l{i}.ln1.g", f"l{i}.ln1.b", axis=-1, epsilon=1e-5)
    q = _heads(g, g.op("MatMul", h, f"l{i}.wq"), HEADS)
    k = _heads(g, g.op("MatMul", h, f"l{i}.wk"), KV_HEADS)
    v = _heads(g, g.op("MatMul", h, f"l{i}.wv"), KV_HEADS)
    pk = g.op("Concat", IO.past_key(i), k, axis=2, out=IO.present_key(i))
    pv = g.op("Concat", IO.past_value(i), v, axis=2, out=IO.present_value(i))
    kt = g.op("Transpose", _expand_kv(g, pk), perm=[0, 1, 3, 2])
    scores = g.op("Mul", g.op("MatMul", q, kt), g.const("scale", np.array(HEAD ** -0.5,
                                                                          np.float32)))
    scores = g.op("Where", allowed, scores, g.const("neg", np.array(NEG, np.float32)))
    ctx = g.op("MatMul", g.op("Softmax", scores, axis=-1), _expand_kv(g, pv))
    ctx = g.op("Reshape", g.op("Transpose", ctx, perm=[0, 2, 1, 3]),
               g.const("shape_merge", np.array([0, 0, HEADS * HEAD])))
    x = g.op("Add", x, g.op("MatMul", ctx, f"l{i}.wo"))
    h = g.op("LayerNormalization", x, f"l{i}.ln2.g", f"l{i}.ln2.b", axis=-1, epsilon=1e-5)
    u = g.op("MatMul", h, f"l{i}.w1")
    return g.op("Add", x, g.op("MatMul", g.op("Mul", u, g.op("Sigmoid", u)), f"l{i}.w2"))


def _onnx(p: dict[str, np.ndarray], window: int | None) -> onnx.ModelProto:
    g = _G()
    for k, a in p.items():
        g.const(k, a)
    allowed = _mask_graph(g, window)
    x = g.op("Add", g.op("Gather", "tok", IO.INPUT_IDS), g.op("Gather", "pos", IO.POSITION_IDS))
    for i in range(LAYERS):
        x = _block(g, i, x, allowed)
    x = g.op("LayerNormalization", x, "lnf.g", "lnf.b", axis=-1, epsilon=1e-5)
    g.op("MatMul", x, "lm", out=IO.LOGITS)

    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    kv_in = ["batch_size", KV_HEADS, "past_sequence_length", HEAD]
    kv_out = ["batch_size", KV_HEADS, "total_sequence_length", HEAD]
    inputs = [helper.make_tensor_value_info(IO.INPUT_IDS, i64, ["batch_size", "sequence_length"]),
              helper.make_tensor_value_info(IO.ATTENTION_MASK, i64,
                                            ["batch_size", "total_sequence_length"]),
              helper.make_tensor_value_info(IO.POSITION_IDS, i64,
                                            ["batch_size", "sequence_length"])]
    outputs = [helper.make_tensor_value_info(IO.LOGITS, f,
                                             ["batch_size", "sequence_length", VOCAB])]
    for i in range(LAYERS):
        inputs += [helper.make_tensor_value_info(IO.past_key(i), f, kv_in),
                   helper.make_tensor_value_info(IO.past_value(i), f, kv_in)]
        outputs += [helper.make_tensor_value_info(IO.present_key(i), f, kv_out),
                    helper.make_tensor_value_info(IO.present_value(i), f, kv_out)]
    graph = helper.make_graph(g.nodes, "handmade_decoder", inputs, outputs, g.inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                          producer_name="tests.kv.handmade")
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def _ln(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * g + b


def positions(mask: np.ndarray) -> np.ndarray:
    """Position ids of a left-padded batch: cumsum(mask) - 1, clipped at 0."""
    return np.maximum(np.cumsum(mask, axis=1) - 1, 0)


def _reference(p: dict[str, np.ndarray], model_window: int | None) -> Reference:
    def reference(ids: np.ndarray, mask: np.ndarray | None = None,
                  window: int | None = model_window) -> np.ndarray:
        """Logits [B, N, V] of the whole sequence at once (float64, no cache)."""
        ids = np.asarray(ids, np.int64)
        mask = np.ones_like(ids) if mask is None else np.asarray(mask, np.int64)
        n = ids.shape[1]
        q, k = np.arange(n)[:, None], np.arange(n)[None, :]
        keep = k <= q
        if window is not None:
            keep &= k > q - window
        keep = keep[None, None] & (mask[:, None, None, :] == 1)           # [B, 1, N, N]
        pp = {a: b.astype(np.float64) for a, b in p.items()}
        x = pp["tok"][ids] + pp["pos"][positions(mask)]
        b = ids.shape[0]
        for i in range(LAYERS):
            h = _ln(x, pp[f"l{i}.ln1.g"], pp[f"l{i}.ln1.b"])
            qh = (h @ pp[f"l{i}.wq"]).reshape(b, n, HEADS, HEAD).transpose(0, 2, 1, 3)
            kh = (h @ pp[f"l{i}.wk"]).reshape(b, n, KV_HEADS, HEAD).transpose(0, 2, 1, 3)
            vh = (h @ pp[f"l{i}.wv"]).reshape(b, n, KV_HEADS, HEAD).transpose(0, 2, 1, 3)
            kh = np.repeat(kh, HEADS // KV_HEADS, axis=1)
            vh = np.repeat(vh, HEADS // KV_HEADS, axis=1)
            s = np.where(keep, qh @ kh.transpose(0, 1, 3, 2) * HEAD ** -0.5, NEG)
            s = np.exp(s - s.max(-1, keepdims=True))
            ctx = (s / s.sum(-1, keepdims=True)) @ vh
            x = x + ctx.transpose(0, 2, 1, 3).reshape(b, n, HEADS * HEAD) @ pp[f"l{i}.wo"]
            u = _ln(x, pp[f"l{i}.ln2.g"], pp[f"l{i}.ln2.b"]) @ pp[f"l{i}.w1"]
            x = x + (u / (1 + np.exp(-u))) @ pp[f"l{i}.w2"]
        return _ln(x, pp["lnf.g"], pp["lnf.b"]) @ pp["lm"]
    return reference


def build_model(window: int | None = None, seed: int = 0
                ) -> tuple[onnx.ModelProto, CacheSpec, Reference]:
    """The tiny decoder-with-past (a sliding window of ``window`` keys in the graph when given),
    its CacheSpec and its cache-free numpy reference."""
    p = _weights(seed)
    spec = CacheSpec(num_layers=LAYERS, num_kv_heads=KV_HEADS, num_heads=HEADS, head_size=HEAD,
                     hidden_size=HIDDEN, vocab_size=VOCAB, window=window,
                     context_length=CONTEXT, dtype="float32")
    return _onnx(p, window), spec, _reference(p, window)


def reference_generate(reference: Reference, ids: np.ndarray, mask: np.ndarray | None,
                       max_new_tokens: int, window: int | None = None) -> np.ndarray:
    """Greedy generation re-running the whole sequence each step: prompt + new ids [B, L + n]
    (``window`` overrides the reference's own window when given)."""
    ids = np.asarray(ids, np.int64)
    mask = np.ones_like(ids) if mask is None else np.asarray(mask, np.int64)
    for _ in range(max_new_tokens):
        logits = reference(ids, mask) if window is None else reference(ids, mask, window=window)
        nxt = logits[:, -1].argmax(-1)
        ids = np.concatenate([ids, nxt[:, None]], axis=1)
        mask = np.concatenate([mask, np.ones_like(nxt)[:, None]], axis=1)
    return ids
