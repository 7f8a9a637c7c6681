"""Row-reduction kernels: softmax, log_softmax, layer_norm, rms_norm with a fused pointwise
prologue (the nodes computing the reduced input) and epilogue (pointwise users of the result).

The index space is ``S`` viewed as ``[M, N]``: N is the product of the reduced (trailing) dims.
One program handles ``BLOCK_M`` whole rows held in registers (``BLOCK_N`` = next power of two
>= N), so a row is read once and written once; statistics are kept in fp32.
"""
from __future__ import annotations

from graphopt.ir.node import Node
from graphopt.ir.types import DType, TensorType
from graphopt.ops.registry import get_op

from ..body import (Body, indent, launcher_input_args, launcher_inputs, module_header,
                    torch_dtype)
from ..cache import KernelSource
from ..exprs import literal, round_to
from ..region import Region
from .pointwise import _shape_lines

MAX_ROW = 32768  # elements of one row a program keeps in registers


def reduced_axis(n: Node) -> int:
    """First reduced dim of a reduction node (softmax: its axis; norms: their axis)."""
    return int(n.attrs["axis"])


def reduction_unsupported(n: Node) -> str | None:
    """None when the reduction node fits this family (its op declares
    ``triton_kernel = "reduction"``), else why not."""
    if get_op(n.op).triton_kernel != "reduction":
        return f"{n.op} is not a row reduction"
    t = n.inputs[0].type
    if not isinstance(t, TensorType) or t.shape is None or t.dtype not in (
            DType.f16, DType.bf16, DType.f32):
        return f"{n.op} on {t}: needs a float tensor of known rank"
    r = len(t.shape)
    if r == 0:
        return f"{n.op} on a scalar"
    if n.op in ("softmax", "log_softmax") and reduced_axis(n) != r - 1:
        return f"{n.op} over axis {reduced_axis(n)} of rank {r} (only the last axis is a row)"
    row = 1
    for d in t.shape[reduced_axis(n):]:
        if not isinstance(d, int):
            return f"{n.op}: reduced dim {d} is symbolic (the row size must be static)"
        row *= d
    if row > MAX_ROW:
        return f"{n.op}: row of {row} elements exceeds {MAX_ROW}"
    return None


def _reduce_lines(n: Node, x: str, nrow: int) -> tuple[list[str], str]:
    """Lines computing the anchor over tile ``x`` (fp32, [BLOCK_M, BLOCK_N]); returns (lines,
    name of the normalized result before scale/bias)."""
    dt = n.out_types[0].dtype  # type: ignore[union-attr]
    if n.op in ("softmax", "log_softmax"):
        lines = [f"xm = tl.where(mask, {x}, float('-inf'))",
                 "mx = tl.max(xm, 1)",
                 "e = tl.where(mask, tl.exp(xm - mx[:, None]), 0.0)",
                 "den = tl.sum(e, 1)"]
        if n.op == "softmax":
            lines.append(f"red = {round_to('e / den[:, None]', dt)}")
        else:
            lines.append(f"red = {round_to('xm - mx[:, None] - tl.log(den)[:, None]', dt)}")
        return lines, "red"
    eps = literal(n.attrs["epsilon"])
    if n.op == "layer_norm":
        lines = [f"xz = tl.where(mask, {x}, 0.0)",
                 f"mean = tl.sum(xz, 1) / {nrow}",
                 "xc = tl.where(mask, xz - mean[:, None], 0.0)",
                 f"var = tl.sum(xc * xc, 1) / {nrow}",
                 f"red = {round_to(f'xc * tl.rsqrt(var + {eps})[:, None]', dt)}"]
        return lines, "red"
    lines = [f"xz = tl.where(mask, {x}, 0.0)",
             f"ms = tl.sum(xz * xz, 1) / {nrow}",
             f"red = {round_to(f'xz / tl.sqrt(ms + {eps})[:, None]', dt)}"]
    return lines, "red"


def emit_reduction(region: Region) -> KernelSource:
    """The kernel module computing a reduction region (prologue, anchor, epilogue)."""
    anchor = region.anchor
    assert anchor is not None and get_op(anchor.op).triton_kernel == "reduction"
    why = reduction_unsupported(anchor)
    if why:
        raise ValueError(why)
    shape = tuple(region.shape)
    ax = reduced_axis(anchor)
    nrow = 1
    for d in shape[ax:]:
        nrow *= int(d)
    body = Body(shape)
    at = region.nodes.index(anchor)
    for n in region.nodes[:at]:
        body.node(n)
    x = body.operand(anchor.inputs[0])
    lines, red = _reduce_lines(anchor, x, nrow)
    body.lines += lines
    dt = anchor.out_types[0].dtype  # type: ignore[union-attr]
    y = red
    if len(anchor.inputs) > 1:
        s = body.operand(anchor.inputs[1])
        body.lines.append(f"red_s = {round_to(f'{y} * {s}', dt)}")
        y = "red_s"
    if len(anchor.inputs) > 2:
        b = body.operand(anchor.inputs[2])
        body.lines.append(f"red_b = {round_to(f'{y} + {b}', dt)}")
        y = "red_b"
    body.set(anchor.outputs[0], y)
    for n in region.nodes[at + 1:]:
        body.node(n)
    outs = [f"out{j}" for j in range(len(region.outputs))]
    for o, v in zip(outs, region.outputs):
        body.store(o, v)
    rank = body.rank
    args = [s.name for s in body.inputs]
    sig = (body.input_args() + outs + ["M"] + body.dim_args() +
           ["BLOCK_M: tl.constexpr", "BLOCK_N: tl.constexpr"])
    kernel = [
        "@triton.jit",
        f"def kernel({', '.join(sig)}):",
        *indent([
            "pid = tl.program_id(0)",
            "rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]",
            "cols = tl.arange(0, BLOCK_N)[None, :]",
            f"offs = rows * {nrow} + cols",
            f"mask = (rows < M) & (cols < {nrow})",
            *body.coord_lines(),
            *body.lines,
        ]),
    ]
    launch = [
        f"def launch({', '.join(args + ['config=None'])}):",
        *indent([
            "config = config or CONFIGS[0]",
            *_shape_lines(region, args),
            *launcher_inputs(body.inputs, args),
            f"dev = {args[0]}.device",
            *[f"{o} = torch.empty(S, dtype={torch_dtype(v.type.dtype)}, device=dev)"  # type: ignore[union-attr]
              for o, v in zip(outs, region.outputs)],
            f"M = numel(S) // {nrow}",
            "grid = (cdiv(M, config['BLOCK_M']),)",
            f"kernel[grid]({', '.join(launcher_input_args(body.inputs, args) + outs)}, M, "
            f"{', '.join(f'S[{k}]' for k in range(rank))}, BLOCK_M=config['BLOCK_M'], "
            f"BLOCK_N={_pow2(nrow)}, num_warps=config['num_warps'])",
            f"return ({', '.join(outs)},)",
        ]),
    ]
    configs = _configs(nrow)
    src = "\n".join(module_header("reduction", region.summary()) +
                    [f"CONFIGS = {configs!r}", "", ""] + kernel + ["", ""] + launch) + "\n"
    return KernelSource("reduction", src, [s.value for s in body.inputs], list(region.outputs),
                        region.summary())


def _pow2(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


def _configs(nrow: int) -> list[dict[str, int]]:
    """Rows per program so a tile holds ~2-16K elements; warps grow with the row."""
    bn = _pow2(nrow)
    out = []
    for target in (4096, 2048, 8192, 16384):
        bm = max(1, min(64, target // bn))
        w = 4 if bn * bm <= 4096 else 8
        c = {"BLOCK_M": bm, "num_warps": w}
        if c not in out:
            out.append(c)
    return out
