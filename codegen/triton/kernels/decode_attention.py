"""Decode attention: a few query rows per (batch, head) over a long key/value cache (split-KV).

Every query row is its own program row. The key range is cut into ``SPLITS`` chunks; a first
kernel computes, per (batch*head*row, chunk), the chunk's running max, softmax denominator and
unnormalized output (online softmax, fp32); a second kernel merges the chunks. So a single query
row still spreads over many programs (FlashDecoding). ``launch`` takes an optional ``kv_len``
(int32 [B]): the number of valid cache entries per batch row, for caches allocated longer than
they are filled. GQA, bool and additive masks (per row) as in ``flash_attention``; causal
decoding is not this family (the ``attention`` op's causal mask is top-left aligned, so one
query row would see one key).

The lowering picks it for at most ``MAX_ROWS`` static query rows, or a symbolic row count other
than the keys' -- the decode graph of a KV cache (``graphopt.kv``): ``sequence_length`` new rows
over ``total_sequence_length`` keys with a bool mask [B, 1, rows, keys]. Its prompt call (past
length 0, as many rows as keys) runs here too, one program row per query row, each reading
every key: correct, but slower than the flash kernel for long prompts.
"""
from __future__ import annotations

from graphopt.ir.node import Node
from graphopt.ir.types import TensorType

from ..body import indent, module_header
from ..cache import KernelSource
from .flash_attention import LOG2E, AttnSpec, attention_unsupported, spec_of

MIN_KEYS = 64  # below this a decode step is cheap enough for the flash kernel
MAX_ROWS = 8  # static query rows beyond this go to the flash kernel

CONFIGS = [{"BLOCK_N": 64, "SPLITS": 16, "num_warps": 4}, {"BLOCK_N": 128, "SPLITS": 32,
                                                          "num_warps": 4},
           {"BLOCK_N": 64, "SPLITS": 64, "num_warps": 2}, {"BLOCK_N": 32, "SPLITS": 8,
                                                         "num_warps": 2}]


def decode_unsupported(n: Node) -> str | None:
    why = attention_unsupported(n)
    if why:
        return why
    q, k = n.inputs[0].type, n.inputs[1].type
    assert isinstance(q, TensorType) and isinstance(k, TensorType)
    assert q.shape is not None and k.shape is not None
    rows, keys = q.shape[2], k.shape[2]
    if isinstance(rows, int) and rows > MAX_ROWS:
        return f"{rows} query rows (decode attention takes at most {MAX_ROWS})"
    if not isinstance(rows, int) and rows == keys:
        return f"as many query rows as keys ({rows}): not a decode step"
    if n.attrs["causal"]:
        return "causal attention with one query row"
    if isinstance(keys, int) and keys < MIN_KEYS:
        return f"{keys} keys (< {MIN_KEYS}: the flash kernel is enough)"
    return None


def emit_decode_attention(spec: AttnSpec) -> KernelSource:
    D, BD = spec.head_dim, spec.block_d
    has_mask = spec.mask != "none"
    dm = f" & (rd[None, :] < {D})" if BD != D else ""
    dq = f", mask=rd < {D}, other=0.0" if BD != D else ""
    margs = ["Mk", "smb", "smh", "sms", "smt"] if has_mask else []
    loop = [
        "rn = n0 + tl.arange(0, BLOCK_N)",
        "valid = rn < end",
        f"k = tl.load(K + kbase + rn[:, None] * skt + rd[None, :] * skd, "
        f"mask=valid[:, None]{dm}, other=0.0).to(tl.float32)",
        "s = tl.sum(k * q[None, :], 1) * qk_scale",
    ]
    if spec.mask == "bool":
        loop.append("valid = valid & (tl.load(Mk + mbase + rn * smt, mask=valid, other=0) != 0)")
    elif spec.mask == "additive":
        loop.append(f"s = s + tl.load(Mk + mbase + rn * smt, mask=valid, other=0.0)"
                    f".to(tl.float32) * {LOG2E!r}")
    loop += [
        "s = tl.where(valid, s, float('-inf'))",
        "m_new = tl.maximum(m_i, tl.max(s, 0))",
        "m_use = tl.where(m_new == float('-inf'), 0.0, m_new)",
        "p = tl.exp2(s - m_use)",
        "alpha = tl.exp2(m_i - m_use)",
        "l_i = l_i * alpha + tl.sum(p, 0)",
        f"v = tl.load(V + vbase + rn[:, None] * svt + rd[None, :] * svd, "
        f"mask=valid[:, None]{dm}, other=0.0).to(tl.float32)",
        "acc = acc * alpha + tl.sum(p[:, None] * v, 0)",
        "m_i = m_new",
    ]
    sig = (["Q", "sqb", "sqh", "sqs", "sqd", "K", "skb", "skh", "skt", "skd", "V", "svb", "svh",
            "svt", "svd"] + margs +
           ["Lens", "Mp", "Lp", "Ap", "H", "S", "GROUP", "T", "qk_scale", "HAS_LEN: tl.constexpr",
            "SPLITS: tl.constexpr", "BLOCK_N: tl.constexpr"])
    split = [
        "@triton.jit",
        f"def split_kernel({', '.join(sig)}):",
        *indent([
            "pid_bh = tl.program_id(0)",  # (b, h, i): query row i of head h of batch row b
            "sp = tl.program_id(1)",
            "b = pid_bh // (H * S)",
            "h = (pid_bh // S) % H",
            "i = pid_bh % S",
            "hk = h // GROUP",
            f"rd = tl.arange(0, {BD})",
            f"q = tl.load(Q + b * sqb + h * sqh + i * sqs + rd * sqd{dq}).to(tl.float32)",
            "kbase = b * skb + hk * skh",
            "vbase = b * svb + hk * svh",
            *(["mbase = b * smb + h * smh + i * sms"] if has_mask else []),
            "n_valid = T",
            "if HAS_LEN:",
            "    n_valid = tl.minimum(tl.load(Lens + b), T)",
            "chunk = (T + SPLITS - 1) // SPLITS",
            "chunk = ((chunk + BLOCK_N - 1) // BLOCK_N) * BLOCK_N",
            "start = sp * chunk",
            "end = tl.minimum(start + chunk, n_valid)",
            "m_i = tl.full([], float('-inf'), tl.float32)",
            "l_i = tl.full([], 0.0, tl.float32)",
            f"acc = tl.zeros([{BD}], dtype=tl.float32)",
            "for n0 in range(start, end, BLOCK_N):",
            *indent(loop),
            "part = pid_bh * SPLITS + sp",
            "tl.store(Mp + part, m_i)",
            "tl.store(Lp + part, l_i)",
            f"tl.store(Ap + part * {BD} + rd, acc)",
        ]),
    ]
    merge = [
        "@triton.jit",
        "def merge_kernel(Mp, Lp, Ap, O, SPLITS: tl.constexpr, SPLITS_P2: tl.constexpr):",
        *indent([
            "pid_bh = tl.program_id(0)",
            "rs = tl.arange(0, SPLITS_P2)",
            f"rd = tl.arange(0, {BD})",
            "ok = rs < SPLITS",
            "ms = tl.load(Mp + pid_bh * SPLITS + rs, mask=ok, other=float('-inf'))",
            "ls = tl.load(Lp + pid_bh * SPLITS + rs, mask=ok, other=0.0)",
            "mg = tl.max(ms, 0)",
            "mu = tl.where(mg == float('-inf'), 0.0, mg)",
            "w = tl.where(ok, tl.exp2(ms - mu), 0.0)",
            "den = tl.sum(ls * w, 0)",
            f"a = tl.load(Ap + (pid_bh * SPLITS + rs[:, None]) * {BD} + rd[None, :], "
            f"mask=ok[:, None], other=0.0)",
            "num = tl.sum(a * w[:, None], 0)",
            "out = tl.where(den > 0.0, num / den, 0.0)",
            f"tl.store(O + pid_bh * {D} + rd, out.to(O.dtype.element_ty)"
            f"{f', mask=rd < {D}' if BD != D else ''})",
        ]),
    ]
    mlaunch = ["mst = bstrides(mask, (B, H, S, T))"] if has_mask else []
    marg = "mask, mst[0], mst[1], mst[2], mst[3], " if has_mask else ""
    launch = [
        f"def launch(q, k, v{', mask' if has_mask else ''}, kv_len=None, config=None):",
        *indent([
            "config = config or CONFIGS[0]",
            "B, H, S, D = q.shape",
            "Hkv, T = k.shape[1], k.shape[2]",
            f"assert D == {D} and H % Hkv == 0, (q.shape, k.shape)",
            *mlaunch,
            "sp = config['SPLITS']",
            "f32 = dict(dtype=torch.float32, device=q.device)",
            "mp = torch.empty(B * H * S * sp, **f32)",
            "lp = torch.empty(B * H * S * sp, **f32)",
            f"ap = torch.empty(B * H * S * sp * {BD}, **f32)",
            "lens = kv_len.to(torch.int32) if kv_len is not None else mp",
            "split_kernel[(B * H * S, sp)](q, *q.stride(), k, *k.stride(), "
            f"v, *v.stride(), {marg}lens, mp, lp, ap, H, S, H // Hkv, T, {spec.qk_scale!r}, "
            "HAS_LEN=kv_len is not None, SPLITS=sp, BLOCK_N=config['BLOCK_N'], "
            "num_warps=config['num_warps'])",
            "o = torch.empty((B, H, S, D), dtype=q.dtype, device=q.device)",
            "merge_kernel[(B * H * S,)](mp, lp, ap, o, SPLITS=sp, SPLITS_P2=next_pow2(sp))",
            "return (o,)",
        ]),
    ]
    summary = "decode " + spec.summary()
    src = "\n".join(module_header("decode_attention", summary) +
                    [f"CONFIGS = {CONFIGS!r}", "", ""] + split + ["", ""] + merge + ["", ""] +
                    launch) + "\n"
    return KernelSource("decode_attention", src, summary=summary)


def emit_decode_node(n: Node) -> KernelSource:
    why = decode_unsupported(n)
    if why:
        raise ValueError(why)
    ks = emit_decode_attention(spec_of(n))
    ks.inputs, ks.outputs = list(n.inputs), list(n.outputs)
    return ks

