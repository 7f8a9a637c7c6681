"""Weight-only quantized matmul: ``x [M, K] (f16/bf16/f32) @ dequant(W)``, dequantized in the
kernel, tile by tile, so the weight crosses memory at 1 byte (int8) or half a byte (int4) per
element.

* int8: ``W`` int8 ``[K, N]``; ``w = q * scale``.
* int4: ``W`` uint8 ``[ceil(K/2), N]``, two weights per byte along K (even k in the low nibble),
  each stored with an offset of 8 (nibble 0..15 means -8..7); ``w = (nibble - 8) * scale``.

``scale`` is ``[K / group, N]`` (``group = K``: one scale per output channel). The dequantized
tile is rounded to x's dtype before the dot, as ``matmul(x, (q * s).to(x.dtype))`` would.

In an IR graph the family matches ``matmul(x, mul(cast(W: i8 constant), scale))`` with a
per-channel scale (``[N]`` or ``[1, N]``), the form a weight-only quantization leaves.
"""
from __future__ import annotations

from dataclasses import dataclass

from graphopt.ir.node import Node, Value
from graphopt.ir.types import DType, TensorType

from ..body import indent, module_header
from ..cache import KernelSource

FLOATS = (DType.f16, DType.bf16, DType.f32)
CONFIGS = [
    {"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 64, "num_warps": 4, "num_stages": 3},
    {"BLOCK_M": 16, "BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 4, "num_stages": 4},
    {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "num_warps": 4, "num_stages": 3},
    {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 8, "num_stages": 3},
]


@dataclass(frozen=True)
class QuantSpec:
    dtype: DType  # of x and the output
    bits: int  # 8 or 4

    def summary(self) -> str:
        return f"int{self.bits} weight-only matmul, {self.dtype.value} activations"


@dataclass
class QuantMatch:
    """A weight-only quantized matmul found in a graph."""

    x: Value
    weight: Value  # the int8 constant
    scale: Value
    absorbed: list[Node]  # the cast and mul that dequantize the weight (run inside the kernel)


def quant_pattern(n: Node) -> QuantMatch | None:
    """The match of ``matmul(x, mul(cast(W: i8 const [K, N]), scale [N] | [1, N]))``, or None."""
    if n.op != "matmul" or len(n.inputs) != 2:
        return None
    x, wv = n.inputs
    xt = x.type
    if not isinstance(xt, TensorType) or xt.shape is None or len(xt.shape) < 2 or \
            xt.dtype not in FLOATS:
        return None
    mul = wv.node
    if mul.op != "mul":
        return None
    for ci in (0, 1):
        cast, sc = mul.inputs[ci].node, mul.inputs[1 - ci]
        if cast.op != "cast" or cast.inputs[0].node.op != "constant":
            continue
        q = cast.inputs[0]
        qt, st = q.type, sc.type
        if not (isinstance(qt, TensorType) and isinstance(st, TensorType)):
            continue
        if qt.dtype != DType.i8 or qt.shape is None or len(qt.shape) != 2:
            continue
        n_out = qt.shape[1]
        if st.shape not in ((n_out,), (1, n_out)) or st.dtype != xt.dtype:
            continue
        if cast.attrs["to"] != xt.dtype:
            continue
        return QuantMatch(x, q, sc, [cast, mul])
    return None


def emit_quant_matmul(spec: QuantSpec) -> KernelSource:
    if spec.bits not in (4, 8):
        raise ValueError(f"int{spec.bits} weights: 4 or 8 bits only")
    prec = ', input_precision="ieee"' if spec.dtype == DType.f32 else ""
    if spec.bits == 8:
        wload = ["w = tl.load(W + rk[:, None] * swk + rn[None, :] * swn, mask=kn, other=0)"
                 ".to(tl.float32)"]
    else:
        wload = ["byte = tl.load(W + (rk // 2)[:, None] * swk + rn[None, :] * swn, mask=kn, "
                 "other=8).to(tl.int32)",
                 "nib = (byte >> ((rk % 2) * 4)[:, None]) & 15",
                 "w = (nib - 8).to(tl.float32)"]
    kernel = [
        "@triton.jit",
        "def kernel(X, sxm, sxk, W, swk, swn, Sc, ssg, ssn, O, M, N, K, GROUP,",
        "           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):",
        *indent([
            "pid_m = tl.program_id(0)",
            "pid_n = tl.program_id(1)",
            "rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)",
            "rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)",
            "acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)",
            "for k0 in range(0, K, BLOCK_K):",
            *indent([
                "rk = k0 + tl.arange(0, BLOCK_K)",
                "x = tl.load(X + rm[:, None] * sxm + rk[None, :] * sxk, "
                "mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)",
                "kn = (rk[:, None] < K) & (rn[None, :] < N)",
                *wload,
                "sc = tl.load(Sc + (rk // GROUP)[:, None] * ssg + rn[None, :] * ssn, mask=kn, "
                "other=0.0).to(tl.float32)",
                f"acc += tl.dot(x, (w * sc).to(X.dtype.element_ty){prec})",
            ]),
            "mask = (rm[:, None] < M) & (rn[None, :] < N)",
            "tl.store(O + rm[:, None] * N + rn[None, :], acc.to(O.dtype.element_ty), mask=mask)",
        ]),
    ]
    launch = [
        "def launch(x, w, scale, config=None):",
        *indent([
            "config = config or CONFIGS[0]",
            "x2 = x.reshape(-1, x.shape[-1])",
            "M, K = x2.shape",
            "N = w.shape[1]",
            f"assert w.shape[0] == {'(K + 1) // 2' if spec.bits == 4 else 'K'}, (x.shape, w.shape)",
            "sc = scale.reshape(-1, N)",
            "group = cdiv(K, sc.shape[0])",
            "o = torch.empty((M, N), dtype=x.dtype, device=x.device)",
            "grid = (cdiv(M, config['BLOCK_M']), cdiv(N, config['BLOCK_N']))",
            "kernel[grid](x2, x2.stride(0), x2.stride(1), w, w.stride(0), w.stride(1), "
            "sc, sc.stride(0), sc.stride(1), o, M, N, K, group, BLOCK_M=config['BLOCK_M'], "
            "BLOCK_N=config['BLOCK_N'], BLOCK_K=config['BLOCK_K'], "
            "num_warps=config['num_warps'], num_stages=config['num_stages'])",
            "return (o.reshape(tuple(x.shape[:-1]) + (N,)),)",
        ]),
    ]
    src = "\n".join(module_header("quant_matmul", spec.summary()) +
                    [f"CONFIGS = {CONFIGS!r}", "", ""] + kernel + ["", ""] + launch) + "\n"
    return KernelSource("quant_matmul", src, summary=spec.summary())


def emit_quant_node(n: Node) -> KernelSource:
    m = quant_pattern(n)
    if m is None:
        raise ValueError("not a weight-only int8 matmul")
    xt = m.x.type
    assert isinstance(xt, TensorType)
    ks = emit_quant_matmul(QuantSpec(xt.dtype, 8))
    ks.inputs, ks.outputs = [m.x, m.weight, m.scale], list(n.outputs)
    return ks
