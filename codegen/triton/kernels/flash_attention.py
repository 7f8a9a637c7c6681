"""Flash attention forward (FlashAttention-2 loop order) for the ``attention`` op.

Each program owns ``BLOCK_M`` query rows of one (batch, head) and streams the keys/values in
``BLOCK_N`` blocks, keeping the running row max ``m``, the softmax denominator ``l`` and the
unnormalized output in registers (online softmax, exp2 with the scale folded in); the output is
divided by ``l`` once at the end. Causal (top-left aligned, key j kept for query i when j <= i)
stops the key loop at the diagonal; a bool mask (True = keep) or an additive mask is read through
its broadcast strides; GQA maps query head h to key/value head h // (H / Hkv). A row with every
score masked gives zeros, like the op's reference. The source is specialized on the dtype, the
head dim, causal and the mask kind.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from graphopt.ir.node import Node
from graphopt.ir.types import DType, TensorType

from ..body import indent, module_header
from ..cache import KernelSource

LOG2E = 1.4426950408889634
TL = {DType.f16: "tl.float16", DType.bf16: "tl.bfloat16", DType.f32: "tl.float32"}


@dataclass(frozen=True)
class AttnSpec:
    """What a generated attention kernel is specialized on."""

    dtype: DType
    head_dim: int
    causal: bool = False
    mask: str = "none"  # none | bool | additive
    scale: float | None = None  # None: 1/sqrt(head_dim)

    @property
    def block_d(self) -> int:
        return max(16, 1 << (self.head_dim - 1).bit_length())

    @property
    def qk_scale(self) -> float:
        s = self.scale if self.scale is not None else 1.0 / math.sqrt(self.head_dim)
        return s * LOG2E

    def summary(self) -> str:
        return (f"attention {self.dtype.value} d={self.head_dim} causal={self.causal} "
                f"mask={self.mask} scale={self.scale}")


def attention_unsupported(n: Node) -> str | None:
    if n.op != "attention":
        return f"{n.op} is not attention"
    ts = [v.type for v in n.inputs]
    if not all(isinstance(t, TensorType) and t.shape is not None for t in ts):
        return "attention operand of unknown rank"
    q, k, v = ts[:3]
    if q.dtype not in TL or k.dtype != q.dtype or v.dtype != q.dtype:  # type: ignore[union-attr]
        return f"attention on {q.dtype.value}: f16/bf16/f32 only"  # type: ignore[union-attr]
    if len(q.shape) != 4 or len(k.shape) != 4 or len(v.shape) != 4:  # type: ignore[union-attr]
        return "attention needs 4-D q, k, v"
    d = q.shape[3]  # type: ignore[index]
    if not isinstance(d, int) or k.shape[3] != d or v.shape[3] != d:  # type: ignore[index]
        return "attention head dims must be static and equal for q, k, v"
    if len(ts) > 3 and ts[3].dtype not in (DType.bool, q.dtype):  # type: ignore[union-attr]
        return f"attention mask of dtype {ts[3].dtype.value}"  # type: ignore[union-attr]
    return None


def spec_of(n: Node) -> AttnSpec:
    q = n.inputs[0].type
    assert isinstance(q, TensorType) and q.shape is not None
    mask = "none"
    if len(n.inputs) > 3:
        mt = n.inputs[3].type
        assert isinstance(mt, TensorType)
        mask = "bool" if mt.dtype == DType.bool else "additive"
    return AttnSpec(q.dtype, int(q.shape[3]), bool(n.attrs["causal"]), mask, n.attrs["scale"])


CONFIGS = [
    {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2},
    {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3},
    {"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 8, "num_stages": 3},
    {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 3},
    {"BLOCK_M": 128, "BLOCK_N": 32, "num_warps": 4, "num_stages": 4},
    {"BLOCK_M": 64, "BLOCK_N": 128, "num_warps": 4, "num_stages": 3},
]


def emit_flash_attention(spec: AttnSpec) -> KernelSource:
    D, BD = spec.head_dim, spec.block_d
    prec = ', input_precision="ieee"' if spec.dtype == DType.f32 else ""
    dmask_q = f" & (rd[None, :] < {D})" if BD != D else ""
    dmask_k = f" & (rd[:, None] < {D})" if BD != D else ""
    has_mask = spec.mask != "none"
    margs = ["Mk", "smb", "smh", "sms", "smt"] if has_mask else []
    loop = [
        "rn = n0 + tl.arange(0, BLOCK_N)",
        f"kt = tl.load(K + kbase + rn[None, :] * skt + rd[:, None] * skd, "
        f"mask=(rn[None, :] < T){dmask_k}, other=0.0)",
        f"s = tl.dot(q, kt{prec}) * qk_scale",
        "keep = (rn[None, :] < T) & (rm[:, None] >= 0)",
    ]
    if spec.causal:
        loop.append("keep = keep & (rn[None, :] <= rm[:, None])")
    if has_mask:
        loop.append("mptr = Mk + mbase + rm[:, None] * sms + rn[None, :] * smt")
        loop.append("mval = (rm[:, None] < S) & (rn[None, :] < T)")
        if spec.mask == "bool":
            loop.append("keep = keep & (tl.load(mptr, mask=mval, other=0) != 0)")
        else:
            loop.append(f"s = s + tl.load(mptr, mask=mval, other=0.0).to(tl.float32) * {LOG2E!r}")
    loop += [
        "s = tl.where(keep, s, float('-inf'))",
        "m_new = tl.maximum(m_i, tl.max(s, 1))",
        "m_use = tl.where(m_new == float('-inf'), 0.0, m_new)",
        "p = tl.exp2(s - m_use[:, None])",
        "alpha = tl.exp2(m_i - m_use)",
        "l_i = l_i * alpha + tl.sum(p, 1)",
        f"v = tl.load(V + vbase + rn[:, None] * svt + rd[None, :] * svd, "
        f"mask=(rn[:, None] < T){dmask_q}, other=0.0)",
        f"acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v{prec})",
        "m_i = m_new",
    ]
    sig = (["Q", "sqb", "sqh", "sqs", "sqd", "K", "skb", "skh", "skt", "skd",
            "V", "svb", "svh", "svt", "svd"] + margs + ["O", "H", "GROUP", "S", "T", "qk_scale",
                                                        "BLOCK_M: tl.constexpr",
                                                        "BLOCK_N: tl.constexpr"])
    hi = "tl.minimum(T, (pid_m + 1) * BLOCK_M)" if spec.causal else "T"
    kernel = [
        "@triton.jit",
        f"def kernel({', '.join(sig)}):",
        *indent([
            "pid_m = tl.program_id(0)",
            "pid_bh = tl.program_id(1)",
            "b = pid_bh // H",
            "h = pid_bh % H",
            "hk = h // GROUP",
            "rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)",
            f"rd = tl.arange(0, {BD})",
            "kbase = b * skb + hk * skh",
            "vbase = b * svb + hk * svh",
            *(["mbase = b * smb + h * smh"] if has_mask else []),
            f"q = tl.load(Q + b * sqb + h * sqh + rm[:, None] * sqs + rd[None, :] * sqd, "
            f"mask=(rm[:, None] < S){dmask_q}, other=0.0)",
            "m_i = tl.zeros([BLOCK_M], dtype=tl.float32) + float('-inf')",
            "l_i = tl.zeros([BLOCK_M], dtype=tl.float32)",
            f"acc = tl.zeros([BLOCK_M, {BD}], dtype=tl.float32)",
            f"for n0 in range(0, {hi}, BLOCK_N):",
            *indent(loop),
            "out = tl.where(l_i[:, None] > 0.0, acc / l_i[:, None], 0.0)",
            f"optr = O + pid_bh * S * {D} + rm[:, None] * {D} + rd[None, :]",
            f"tl.store(optr, out.to(O.dtype.element_ty), mask=(rm[:, None] < S){dmask_q})",
        ]),
    ]
    mlaunch = (["mst = bstrides(mask, (B, H, S, T))"] if has_mask else [])
    margs_l = ["mask, mst[0], mst[1], mst[2], mst[3], "] if has_mask else [""]
    launch = [
        f"def launch(q, k, v{', mask' if has_mask else ''}, config=None):",
        *indent([
            "config = config or CONFIGS[0]",
            "B, H, S, D = q.shape",
            "Hkv, T = k.shape[1], k.shape[2]",
            f"assert D == {D} and H % Hkv == 0, (q.shape, k.shape)",
            *mlaunch,
            "o = torch.empty((B, H, S, D), dtype=q.dtype, device=q.device)",
            "grid = (cdiv(S, config['BLOCK_M']), B * H)",
            "kernel[grid](q, *q.stride(), k, *k.stride(), v, *v.stride(), "
            f"{margs_l[0]}o, H, H // Hkv, S, T, {spec.qk_scale!r}, "
            "BLOCK_M=config['BLOCK_M'], BLOCK_N=config['BLOCK_N'], "
            "num_warps=config['num_warps'], num_stages=config['num_stages'])",
            "return (o,)",
        ]),
    ]
    src = "\n".join(module_header("flash_attention", spec.summary()) +
                    [f"CONFIGS = {CONFIGS!r}", "", ""] + kernel + ["", ""] + launch) + "\n"
    return KernelSource("flash_attention", src, summary=spec.summary())


def emit_attention_node(n: Node) -> KernelSource:
    why = attention_unsupported(n)
    if why:
        raise ValueError(why)
    ks = emit_flash_attention(spec_of(n))
    ks.inputs, ks.outputs = list(n.inputs), list(n.outputs)
    return ks
