"""Which ONNX forms of a quantized linear layer are fast in ONNX Runtime on this CPU.

    python -m bench.quant_forms            # x [1, 128, K] and x [1, 1, K] @ W [K, N], 3 shapes
    python -m bench.quant_forms --reps 100 --no-decode --forms float,ort-dyn,w4-dq

For each weight shape, one float linear (MatMul + bias Add) and the same layer written in the
quantized forms below are built with the same random weights (W ~ N(0, 0.02), x ~ N(0, 1)), run
by ONNX Runtime (CPU, default session options, 2 intra-op threads) with the runs of all forms
interleaved in one process, and reported with median latency, spread (interquartile range over
the median), output SQNR vs the float layer, the weight bytes the session keeps after its graph
optimizations, and the ops ORT's optimizer left (read from ``optimized_model_filepath``):

    float          MatMul + Add
    ort-dyn        onnxruntime.quantization.quantize_dynamic, int8 weights, per tensor
    ort-dyn-pc     the same with per_channel=True
    tok8           per-token symmetric int8 activations with plain ops:
                   s = max|x| / 127 per row, q = Cast(Round(x / s), int8),
                   Cast(MatMulInteger(q, Wq int8)) * s * w_scale[N]
    tok8-prod      the same with the scales multiplied first: Cast(MatMulInteger) * (s * w_scale)
    tok8-ql        the same activations quantized by a blocked QuantizeLinear (opset 21)
    tok8-u8        the same activations shifted to uint8 (q + 128) with a_zero_point 128
    tok8-u8-prod   tok8-u8 with the scales multiplied first (ORT fuses MatMulIntegerToFloat)
    tok8-u8-ql     tok8-u8 with the activations quantized by one blocked QuantizeLinear
                   (uint8, zero point 128)
    dql-mmi        per-tensor uint8 activations by DynamicQuantizeLinear, per-column int8
                   weights without zero point: Cast(MatMulInteger(q, Wq, zq)) * (s * w_scale[N])
                   (the form of graphopt's exact integer lowering)
    w8-dq          weight-only int8: DequantizeLinear(Wq int8, w_scale[N], axis=1) + MatMul
    w4-dq          weight-only int4: DequantizeLinear(Wq uint4 [K, N], scale [K/128, N],
                   zp uint4, axis=0, block_size=128) + MatMul (opset 21)
    w4-dq-sym      the same, int4 codes and no zero point
    w4-nbits       com.microsoft MatMulNBits written directly (same codes as w4-dq),
                   accuracy_level 0 (float compute)
    w4-nbits-a4    the same with accuracy_level 4 (int8 compute of the activations)
    nf4-gather     NF4 codes (uint4) -> Cast int32 -> Gather(table[16]) -> Reshape -> Mul(block
                   absmax, 64 per block) -> Reshape -> MatMul
    nf4-bnb4       com.microsoft MatMulBnb4 (quant_type 1 = NF4, blocks of 64) written directly

and one embedding lookup (ids [1, seq] in a [30522, 768] table) in the forms of
``embedding_forms``: float Gather, DequantizeLinear of the int8 table then Gather, Gather of
int8 rows and their scales then Cast * scale, Gather of uint8 codes then a per-tensor
DequantizeLinear.

Nothing is downloaded; weights are seeded random.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bench.transformer_fusions import run_times

OPSET = 21
GROUP = 128  # int4 block size along K
NF4_BLOCK = 64
VOCAB = 30522  # BERT's


# ---- sessions and accuracy (also used by bench/quantize.py) -------------------------------------

def session(model: onnx.ModelProto | str, threads: int = 2,
            optimized_path: str | None = None) -> Any:
    """An ORT CPU session with default graph optimizations and ``threads`` intra-op threads;
    ``optimized_path`` names where ORT writes the graph it runs."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    # an idle session's pool threads spin-wait after each run (ORT's default); with the runs of
    # many sessions interleaved on a small machine they would steal the cores of the next one
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if optimized_path is not None:
        so.optimized_model_filepath = optimized_path
    src = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def median_spread(ts: list[float]) -> tuple[float, float]:
    """(median seconds, interquartile range / median)."""
    med = statistics.median(ts)
    q = statistics.quantiles(ts, n=4)
    return med, (q[2] - q[0]) / med


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    """10 log10(sum ref^2 / sum (ref - got)^2); inf when equal."""
    ref64, err = ref.astype(np.float64), ref.astype(np.float64) - got.astype(np.float64)
    noise = float(np.sum(err * err))
    return float("inf") if noise == 0.0 else 10.0 * np.log10(float(np.sum(ref64 * ref64)) / noise)


# ---- weight quantization (numpy) ---------------------------------------------------------------

def int8_per_column(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 codes [K, N] and scales [N] (max |w| of each column / 127)."""
    s = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127.0
    return np.clip(np.rint(w / s), -127, 127).astype(np.int8), s.astype(np.float32)


def uint4_blocks(w: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric 4-bit codes [K, N] (0..15), scales and zero points [K/block, N] for blocks of
    ``block`` rows: w ~ (q - zp) * scale."""
    k, n = w.shape
    wb = w.reshape(k // block, block, n)
    lo, hi = np.minimum(wb.min(axis=1), 0.0), np.maximum(wb.max(axis=1), 0.0)
    s = np.maximum(hi - lo, 1e-12) / 15.0
    zp = np.clip(np.rint(-lo / s), 0, 15)
    q = np.clip(np.rint(wb / s[:, None]) + zp[:, None], 0, 15)
    return q.reshape(k, n).astype(np.uint8), s.astype(np.float32), zp.astype(np.uint8)


def int4_blocks(w: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric 4-bit codes [K, N] (-8..7) and scales [K/block, N] (max |w| / 7)."""
    k, n = w.shape
    wb = w.reshape(k // block, block, n)
    s = np.maximum(np.abs(wb).max(axis=1), 1e-12) / 7.0
    q = np.clip(np.rint(wb / s[:, None]), -8, 7)
    return q.reshape(k, n).astype(np.int8), s.astype(np.float32)


def nf4_table() -> np.ndarray:
    """The 16 NF4 levels: quantiles of N(0, 1) scaled to [-1, 1], with an exact zero
    (8 positive levels, 7 negative)."""
    from scipy.stats import norm

    top = 1.0 - 0.5 * (1.0 / 32.0 + 1.0 / 30.0)  # QLoRA's offset: 0.9677
    pos = norm.ppf(np.linspace(top, 0.5, 9)[:-1])
    neg = -norm.ppf(np.linspace(top, 0.5, 8)[:-1])
    v = np.sort(np.concatenate([pos, [0.0], neg]))
    return (v / np.abs(v).max()).astype(np.float32)


def nf4_blocks(w: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """NF4 codes [K, N] (0..15) and block absmax [K/block, N]: w ~ table[q] * absmax."""
    k, n = w.shape
    wb = w.reshape(k // block, block, n)
    amax = np.maximum(np.abs(wb).max(axis=1), 1e-12)
    table = nf4_table()
    q = np.abs((wb / amax[:, None])[..., None] - table).argmin(axis=-1)
    return q.reshape(k, n).astype(np.uint8), amax.astype(np.float32)


def nbits_pack(q: np.ndarray, zp: np.ndarray | None, block: int) -> tuple[np.ndarray,
                                                                         np.ndarray | None]:
    """MatMulNBits' layout of 4-bit codes q [K, N]: B uint8 [N, K/block, block/2] (codes along
    K, low nibble first) and zero points [K/block, N] as uint8 [N * ceil(blocks/2)] (blocks
    packed two per byte, low nibble first)."""
    k, n = q.shape
    qt = q.T.reshape(n, k // block, block // 2, 2).astype(np.uint8)
    b = (qt[..., 0] | (qt[..., 1] << 4)).astype(np.uint8)
    if zp is None:
        return b, None
    z = zp.T.astype(np.uint8)  # [N, blocks]
    if z.shape[1] % 2:
        z = np.concatenate([z, np.zeros((n, 1), np.uint8)], axis=1)
    return b, (z[:, 0::2] | (z[:, 1::2] << 4)).reshape(-1).astype(np.uint8)


# ---- the forms -----------------------------------------------------------------------------------

@dataclass
class Layer:
    """A float linear layer y = x @ w + b and the activation shape it is run at."""
    w: np.ndarray
    b: np.ndarray
    x_shape: tuple[int, ...]

    @property
    def k(self) -> int:
        return int(self.w.shape[0])

    @property
    def n(self) -> int:
        return int(self.w.shape[1])


def _c(name: str, a: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(a, name)


def _model(layer: Layer, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto],
           ms: bool = False) -> onnx.ModelProto:
    """x -> nodes -> y, with ``inits`` and the bias ``b``; y = Add(y0, b) appended."""
    out_shape = list(layer.x_shape[:-1]) + [layer.n]
    g = helper.make_graph(
        nodes + [helper.make_node("Add", ["y0", "b"], ["y"])], "layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(layer.x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        inits + [_c("b", layer.b)])
    ops = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid("com.microsoft", 1)]
                                              if ms else [])
    return helper.make_model(g, opset_imports=ops, ir_version=10)


def float_form(layer: Layer) -> onnx.ModelProto:
    return _model(layer, [helper.make_node("MatMul", ["x", "W"], ["y0"])], [_c("W", layer.w)])


def ort_dynamic(layer: Layer, per_channel: bool) -> onnx.ModelProto:
    """What ``onnxruntime.quantization.quantize_dynamic`` writes for the float layer (int8
    weights)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "f.onnx"), os.path.join(d, "q.onnx")
        onnx.save(float_form(layer), src)
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=per_channel)
        return onnx.load(dst)


def _per_token_scale(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]) -> None:
    """s = max(max |x| over the last axis, tiny) / 127, kept as [..., 1]."""
    inits += [_c("axes", np.array([-1], np.int64)), _c("tiny", np.array(1e-12, np.float32)),
              _c("q127", np.array(127.0, np.float32))]
    nodes += [helper.make_node("Abs", ["x"], ["ax"]),
              helper.make_node("ReduceMax", ["ax", "axes"], ["mx"], keepdims=1),
              helper.make_node("Max", ["mx", "tiny"], ["mx1"]),
              helper.make_node("Div", ["mx1", "q127"], ["s"])]


def per_token(layer: Layer, how: str, u8: bool = False) -> onnx.ModelProto:
    """Per-token symmetric int8 activations x ~ q * s (s per row), per-column int8 weights;
    ``how``: "mul" (Cast(MMI) * s * ws), "prod" (Cast(MMI) * (s * ws)), "ql" (blocked
    QuantizeLinear, scales then multiplied as in "mul"); ``u8``: the codes shifted to uint8
    (q + 128) and MatMulInteger given a_zero_point 128."""
    wq, ws = int8_per_column(layer.w)
    nodes: list[onnx.NodeProto] = []
    inits = [_c("Wq", wq), _c("ws", ws), _c("zp128", np.array(128, np.uint8))]
    _per_token_scale(nodes, inits)
    if how == "ql" and u8:  # a blocked zero point has the scale's shape: [..., 1] of 128
        inits.append(_c("zp1", np.array([128], np.uint8)))
        nodes += [helper.make_node("Shape", ["s"], ["s_shape"]),
                  helper.make_node("Expand", ["zp1", "s_shape"], ["zq"]),
                  helper.make_node("QuantizeLinear", ["x", "s", "zq"], ["q"], axis=-1,
                                   block_size=layer.k)]
    elif how == "ql":
        nodes.append(helper.make_node("QuantizeLinear", ["x", "s"], ["q"], axis=-1,
                                      block_size=layer.k, output_dtype=TensorProto.INT8))
    else:
        nodes += [helper.make_node("Div", ["x", "s"], ["xs"]),
                  helper.make_node("Round", ["xs"], ["xr"])]
        if u8:
            inits.append(_c("c128", np.array(128.0, np.float32)))
            nodes += [helper.make_node("Add", ["xr", "c128"], ["xu"]),
                      helper.make_node("Cast", ["xu"], ["q"], to=TensorProto.UINT8)]
        else:
            nodes.append(helper.make_node("Cast", ["xr"], ["q"], to=TensorProto.INT8))
    nodes += [helper.make_node("MatMulInteger", ["q", "Wq"] + (["zp128"] if u8 else []),
                               ["acc"]),
              helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT)]
    if how == "prod":
        nodes += [helper.make_node("Mul", ["s", "ws"], ["sw"]),
                  helper.make_node("Mul", ["accf", "sw"], ["y0"])]
    else:
        nodes += [helper.make_node("Mul", ["accf", "s"], ["ys"]),
                  helper.make_node("Mul", ["ys", "ws"], ["y0"])]
    return _model(layer, nodes, inits)


def dql_matmul_integer(layer: Layer) -> onnx.ModelProto:
    """DynamicQuantizeLinear (per-tensor uint8) activations, per-column int8 weights without a
    zero point, the two scales multiplied before the output Mul."""
    wq, ws = int8_per_column(layer.w)
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "zq"]),
             helper.make_node("MatMulInteger", ["q", "Wq", "zq"], ["acc"]),
             helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["s", "ws"], ["sw"]),
             helper.make_node("Mul", ["accf", "sw"], ["y0"])]
    return _model(layer, nodes, [_c("Wq", wq), _c("ws", ws)])


def weight_int8_dq(layer: Layer) -> onnx.ModelProto:
    wq, ws = int8_per_column(layer.w)
    return _model(layer, [helper.make_node("DequantizeLinear", ["Wq", "ws"], ["Wd"], axis=1),
                          helper.make_node("MatMul", ["x", "Wd"], ["y0"])],
                  [_c("Wq", wq), _c("ws", ws)])


def weight_int4_dq(layer: Layer, symmetric: bool) -> onnx.ModelProto:
    """Blocked DequantizeLinear of 4-bit weights (blocks of GROUP along K) + MatMul."""
    if symmetric:
        q, s = int4_blocks(layer.w, GROUP)
        inits = [_c("Wq", q.astype(ml_dtypes.int4)), _c("ws", s)]
        dq_in = ["Wq", "ws"]
    else:
        q, s, zp = uint4_blocks(layer.w, GROUP)
        inits = [_c("Wq", q.astype(ml_dtypes.uint4)), _c("ws", s),
                 _c("wz", zp.astype(ml_dtypes.uint4))]
        dq_in = ["Wq", "ws", "wz"]
    return _model(layer, [helper.make_node("DequantizeLinear", dq_in, ["Wd"], axis=0,
                                           block_size=GROUP),
                          helper.make_node("MatMul", ["x", "Wd"], ["y0"])], inits)


def matmul_nbits(layer: Layer, accuracy_level: int) -> onnx.ModelProto:
    """com.microsoft MatMulNBits (4 bits, blocks of GROUP, zero points) on the codes of
    ``weight_int4_dq(symmetric=False)``."""
    q, s, zp = uint4_blocks(layer.w, GROUP)
    b, z = nbits_pack(q, zp, GROUP)
    assert z is not None
    node = helper.make_node("MatMulNBits", ["x", "B", "S", "Z"], ["y0"], domain="com.microsoft",
                            K=layer.k, N=layer.n, bits=4, block_size=GROUP,
                            accuracy_level=accuracy_level)
    return _model(layer, [node], [_c("B", b), _c("S", s.T.reshape(-1).copy()), _c("Z", z)],
                  ms=True)


def nf4_gather(layer: Layer) -> onnx.ModelProto:
    """NF4 weights dequantized by a table Gather and a block-scale Mul, then MatMul."""
    q, amax = nf4_blocks(layer.w, NF4_BLOCK)
    k, n = layer.w.shape
    inits = [_c("Wq", q.astype(ml_dtypes.uint4)), _c("table", nf4_table()),
             _c("amax", amax[:, None, :].copy()),
             _c("shape3", np.array([k // NF4_BLOCK, NF4_BLOCK, n], np.int64)),
             _c("shape2", np.array([k, n], np.int64))]
    nodes = [helper.make_node("Cast", ["Wq"], ["qi"], to=TensorProto.INT32),
             helper.make_node("Gather", ["table", "qi"], ["wn"], axis=0),
             helper.make_node("Reshape", ["wn", "shape3"], ["wb"]),
             helper.make_node("Mul", ["wb", "amax"], ["wsb"]),
             helper.make_node("Reshape", ["wsb", "shape2"], ["Wd"]),
             helper.make_node("MatMul", ["x", "Wd"], ["y0"])]
    return _model(layer, nodes, inits)


def bnb4_pack(q: np.ndarray) -> np.ndarray:
    """MatMulBnb4's layout of 4-bit codes q [K, N]: the codes of the transposed weight [N, K]
    in row-major order, two per byte, the first in the HIGH nibble."""
    flat = q.T.reshape(-1).astype(np.uint8)
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.uint8)])
    return ((flat[0::2] << 4) | flat[1::2]).astype(np.uint8)


def nf4_bnb4(layer: Layer) -> onnx.ModelProto:
    """com.microsoft MatMulBnb4 on the NF4 codes of ``nf4_gather`` (absmax [N * K/64])."""
    q, amax = nf4_blocks(layer.w, NF4_BLOCK)
    node = helper.make_node("MatMulBnb4", ["x", "B", "absmax"], ["y0"], domain="com.microsoft",
                            K=layer.k, N=layer.n, block_size=NF4_BLOCK, quant_type=1)
    return _model(layer, [node], [_c("B", bnb4_pack(q)), _c("absmax", amax.T.reshape(-1).copy())],
                  ms=True)


FORMS: dict[str, Callable[[Layer], onnx.ModelProto]] = {
    "float": float_form,
    "ort-dyn": lambda l: ort_dynamic(l, False),
    "ort-dyn-pc": lambda l: ort_dynamic(l, True),
    "tok8": lambda l: per_token(l, "mul"),
    "tok8-prod": lambda l: per_token(l, "prod"),
    "tok8-ql": lambda l: per_token(l, "ql"),
    "tok8-u8": lambda l: per_token(l, "mul", u8=True),
    "tok8-u8-prod": lambda l: per_token(l, "prod", u8=True),
    "tok8-u8-ql": lambda l: per_token(l, "ql", u8=True),
    "dql-mmi": dql_matmul_integer,
    "w8-dq": weight_int8_dq,
    "w4-dq": lambda l: weight_int4_dq(l, False),
    "w4-dq-sym": lambda l: weight_int4_dq(l, True),
    "w4-nbits": lambda l: matmul_nbits(l, 0),
    "w4-nbits-a4": lambda l: matmul_nbits(l, 4),
    "nf4-gather": nf4_gather,
    "nf4-bnb4": nf4_bnb4,
}
DECODE_FORMS = ("float", "ort-dyn", "tok8", "w8-dq", "w4-dq", "w4-dq-sym", "w4-nbits",
                "w4-nbits-a4", "nf4-gather", "nf4-bnb4")


def _embedding_model(seq: int, nodes: list[onnx.NodeProto],
                     inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "embedding",
                          [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, seq])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=10)


def int8_per_row(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 codes of a table [V, D] with one scale per row [V]."""
    q, s = int8_per_column(t.T)
    return q.T.copy(), s


def embedding_forms(table: np.ndarray, seq: int, form: str) -> onnx.ModelProto:
    """A lookup of ``seq`` ids in ``table``: "float" Gather; "dq-gather": DequantizeLinear of
    the int8 table (a scale per row, axis 0), then Gather (the fake-quant form); "gather-scale":
    Gather of the int8 rows and of their scales, then Cast * scale; "gather-dq-pt": Gather of
    uint8 codes with one scale and zero point for the table, then DequantizeLinear (what
    quantize_dynamic writes)."""
    if form == "float":
        return _embedding_model(seq, [helper.make_node("Gather", ["T", "ids"], ["y"])],
                                [_c("T", table)])
    if form == "gather-dq-pt":
        lo, hi = min(float(table.min()), 0.0), max(float(table.max()), 0.0)
        s = np.float32((hi - lo) / 255.0)
        zp = np.uint8(np.clip(np.rint(-lo / s), 0, 255))
        q = np.clip(np.rint(table / s) + zp, 0, 255).astype(np.uint8)
        return _embedding_model(seq, [helper.make_node("Gather", ["q", "ids"], ["qg"]),
                                      helper.make_node("DequantizeLinear", ["qg", "s", "z"],
                                                       ["y"])],
                                [_c("q", q), _c("s", np.array(s)), _c("z", np.array(zp))])
    q, s = int8_per_row(table)
    inits = [_c("q", q), _c("s", s)]
    if form == "dq-gather":
        return _embedding_model(seq, [helper.make_node("DequantizeLinear", ["q", "s"], ["Td"],
                                                       axis=0),
                                      helper.make_node("Gather", ["Td", "ids"], ["y"])], inits)
    inits.append(_c("last", np.array([-1], np.int64)))
    return _embedding_model(seq, [helper.make_node("Gather", ["q", "ids"], ["qg"]),
                                  helper.make_node("Gather", ["s", "ids"], ["sg"]),
                                  helper.make_node("Unsqueeze", ["sg", "last"], ["sg1"]),
                                  helper.make_node("Cast", ["qg"], ["qf"], to=TensorProto.FLOAT),
                                  helper.make_node("Mul", ["qf", "sg1"], ["y"])], inits)


EMBED_FORMS: dict[str, Callable[[np.ndarray, int], onnx.ModelProto]] = {
    f"emb-{f}": (lambda t, n, f=f: embedding_forms(t, n, f))
    for f in ("float", "dq-gather", "gather-scale", "gather-dq-pt")}


# ---- measuring -------------------------------------------------------------------------------

@dataclass
class Row:
    shape: str
    form: str
    ms: float = float("nan")
    spread: float = float("nan")
    sqnr: float = float("nan")
    weight_kib: float = float("nan")
    ops: str = ""
    error: str = ""


def optimized_facts(path: str) -> tuple[float, str]:
    """(KiB of initializers in ORT's optimized graph, its op types in order, '+'-joined)."""
    m = onnx.load(path)
    kib = sum(numpy_helper.to_array(t).nbytes for t in m.graph.initializer) / 1024
    ops = "+".join((n.op_type if n.domain in ("", "ai.onnx") else f"ms:{n.op_type}")
                   for n in m.graph.node)
    return kib, ops


def measure(shape: str, builders: dict[str, Callable[[], onnx.ModelProto]],
            feeds: dict[str, np.ndarray], reps: int, tmp: str) -> list[Row]:
    """Build each form, check its output against the first one's (the float form), time all
    forms interleaved."""
    rows, sessions, ref = [], [], None
    for i, (name, build) in enumerate(builders.items()):
        row = Row(shape, name)
        opt = os.path.join(tmp, f"{i}.{name}.{abs(hash(shape))}.opt.onnx")
        try:
            s = session(build(), optimized_path=opt)
            y = s.run(None, feeds)[0]
        except Exception as e:  # noqa: BLE001 - reported in the table
            row.error = str(e).splitlines()[0][:160]
            rows.append(row)
            continue
        if ref is None:
            ref = y
        row.sqnr = sqnr_db(ref, y)
        row.weight_kib, row.ops = optimized_facts(opt)
        rows.append(row)
        sessions.append((row, s))
    times = run_times([s for _, s in sessions], feeds, reps, warmup=3)
    for (row, _), ts in zip(sessions, times):
        med, spread = median_spread(ts)
        row.ms, row.spread = med * 1e3, spread
    return rows


def measure_linear(layer: Layer, forms: list[str], reps: int, tmp: str) -> list[Row]:
    """The forms of one linear layer on x ~ N(0, 1)."""
    feeds = {"x": np.random.default_rng(1).standard_normal(layer.x_shape).astype(np.float32)}
    shape = f"{'x'.join(map(str, layer.x_shape))} @ {layer.k}x{layer.n}"
    return measure(shape, {f: (lambda f=f: FORMS[f](layer)) for f in forms}, feeds, reps, tmp)


def measure_embedding(table: np.ndarray, seq: int, reps: int, tmp: str) -> list[Row]:
    """The forms of one embedding lookup of ``seq`` random ids."""
    ids = np.random.default_rng(1).integers(0, table.shape[0], (1, seq)).astype(np.int64)
    shape = f"ids 1x{seq} @ {table.shape[0]}x{table.shape[1]}"
    builders = {f: (lambda b=b: b(table, seq)) for f, b in EMBED_FORMS.items()}
    return measure(shape, builders, {"ids": ids}, reps, tmp)


def print_table(rows: list[Row]) -> None:
    print("| shape | form | ms | IQR/med | vs float | SQNR dB | weight KiB (ORT graph) "
          "| ops after ORT's optimizer |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    base: dict[str, float] = {}  # the first (float) form of each shape
    for r in rows:
        base.setdefault(r.shape, r.ms)
    for r in rows:
        if r.error:
            print(f"| {r.shape} | {r.form} | - | - | - | - | - | FAILED: {r.error} |")
            continue
        rel = base.get(r.shape, float("nan")) / r.ms
        sq = "exact" if r.sqnr == float("inf") else f"{r.sqnr:.1f}"
        print(f"| {r.shape} | {r.form} | {r.ms:.3f} | {r.spread:.0%} | {rel:.2f}x | {sq} "
              f"| {r.weight_kib:.0f} | {r.ops} |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--no-decode", action="store_true",
                    help="skip the decode-like x [1, 1, K] rows")
    ap.add_argument("--no-embedding", action="store_true",
                    help="skip the embedding rows (ids [1, seq] in a [30522, 768] table)")
    ap.add_argument("--forms", default=",".join(FORMS), help="comma-separated subset")
    a = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    forms = a.forms.split(",")
    unknown = [f for f in forms if f not in FORMS]
    if unknown:
        raise SystemExit(f"unknown forms {unknown}; known: {', '.join(FORMS)}")
    forms = ["float"] + [f for f in forms if f != "float"]  # the reference comes first
    rng = np.random.default_rng(0)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, n in ((768, 768), (768, 3072), (3072, 768)):
            w = (rng.standard_normal((k, n)) * 0.02).astype(np.float32)
            b = (rng.standard_normal(n) * 0.02).astype(np.float32)
            rows += measure_linear(Layer(w, b, (1, a.seq, k)), forms, a.reps, tmp)
            if not a.no_decode:
                rows += measure_linear(Layer(w, b, (1, 1, k)),
                                       [f for f in forms if f in DECODE_FORMS], a.reps * 5, tmp)
        if not a.no_embedding:
            table = (rng.standard_normal((VOCAB, 768)) * 0.02).astype(np.float32)
            rows += measure_embedding(table, a.seq, a.reps, tmp)
    print_table(rows)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
