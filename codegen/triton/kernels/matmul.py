"""Tiled matmul kernels with a fused pointwise epilogue (bias, activation, residual, ...).

``a [..., M, K] @ b [K, N]`` (a's leading dims fold into M) or ``a [*B, M, K] @ b [*B, K, N]``
(equal batch dims). Operands are read through their strides (transposed weights need no copy);
the fp32 accumulator goes through the region's epilogue nodes before the store. fp32 operands
use IEEE precision (no TF32) so results match eager PyTorch.
"""
from __future__ import annotations

from graphopt.ir.node import Node
from graphopt.ir.types import DType, TensorType

from ..body import Body, indent, launcher_input_args, launcher_inputs, module_header, torch_dtype
from ..cache import KernelSource
from ..exprs import round_to
from ..region import Region

FLOATS = (DType.f16, DType.bf16, DType.f32)
CONFIGS = [
    {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 8, "num_warps": 4, "num_stages": 3},
    {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32, "GROUP_M": 8, "num_warps": 8, "num_stages": 3},
    {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 4, "num_stages": 4},
    {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 4, "num_stages": 4},
    {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3},
    {"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 4, "num_stages": 5},
    {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 8, "num_warps": 4, "num_stages": 3},
]


def matmul_unsupported(n: Node) -> str | None:
    """None when this family computes the matmul node, else why not."""
    if n.op != "matmul":
        return f"{n.op} is not a matmul"
    a, b = (v.type for v in n.inputs)
    if not (isinstance(a, TensorType) and isinstance(b, TensorType)) or a.shape is None or \
            b.shape is None:
        return "matmul operand of unknown rank"
    if a.dtype not in FLOATS or a.dtype != b.dtype:
        return f"matmul on {a.dtype.value} x {b.dtype.value} (float operands of one dtype only)"
    if len(a.shape) < 2 or len(b.shape) < 2:
        return "matmul with a 1-D operand"
    return None


def emit_matmul(region: Region) -> KernelSource:
    """The kernel module of a matmul region (the matmul first, then its epilogue)."""
    mm = region.anchor
    assert mm is not None and region.nodes[0] is mm
    why = matmul_unsupported(mm)
    if why:
        raise ValueError(why)
    at, bt = (v.type for v in mm.inputs)
    assert isinstance(at, TensorType) and isinstance(bt, TensorType)
    batched = len(bt.shape) > 2  # type: ignore[arg-type]
    shape = tuple(region.shape)
    dt = mm.out_types[0].dtype  # type: ignore[union-attr]
    body = Body(shape)
    body.lines.append(f"v_mm = {round_to('acc', dt)}")
    body.set(mm.outputs[0], "v_mm")
    for n in region.nodes[1:]:
        body.node(n)
    outs = [f"out{j}" for j in range(len(region.outputs))]
    for o, v in zip(outs, region.outputs):
        body.store(o, v)
    prec = ', input_precision="ieee"' if dt == DType.f32 else ""
    ep_args = [s.name for s in body.inputs]
    # two batch levels (outer, inner) with a stride each per operand: a broadcast batch dim
    # is a stride of 0, so x [B, 1, S, K] @ w [H, K, D] reads each operand once
    sig = (["A", "sab0", "sab1", "sam", "sak", "B", "sbb0", "sbb1", "sbk", "sbn"] +
           body.input_args() + outs + ["M", "N", "K", "NB1"] + body.dim_args() +
           [f"{c}: tl.constexpr" for c in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")])
    kernel = [
        "@triton.jit",
        f"def kernel({', '.join(sig)}):",
        *indent([
            "pid = tl.program_id(0)",
            "pid_b = tl.program_id(1)",
            "grid_m = tl.cdiv(M, BLOCK_M)",
            "grid_n = tl.cdiv(N, BLOCK_N)",
            "# grouped ordering: GROUP_M row-blocks share the B tiles in L2",
            "width = GROUP_M * grid_n",
            "first_m = (pid // width) * GROUP_M",
            "size_m = tl.minimum(grid_m - first_m, GROUP_M)",
            "pid_m = first_m + (pid % width) % size_m",
            "pid_n = (pid % width) // size_m",
            "rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)",
            "rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)",
            "b0 = pid_b // NB1",
            "b1 = pid_b % NB1",
            "acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)",
            "for k0 in range(0, K, BLOCK_K):",
            "    rk = k0 + tl.arange(0, BLOCK_K)",
            "    a = tl.load(A + b0 * sab0 + b1 * sab1 + rm[:, None] * sam + rk[None, :] * sak,",
            "                mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)",
            "    b = tl.load(B + b0 * sbb0 + b1 * sbb1 + rk[:, None] * sbk + rn[None, :] * sbn,",
            "                mask=(rk[:, None] < K) & (rn[None, :] < N), other=0.0)",
            f"    acc += tl.dot(a, b{prec})",
            "offs = pid_b * M * N + rm[:, None] * N + rn[None, :]",
            "mask = (rm[:, None] < M) & (rn[None, :] < N)",
            *body.coord_lines(),
            *body.lines,
        ]),
    ]
    if batched:
        # broadcast batch dims by expand (stride 0, no copy), then at most two batch levels:
        # more are merged into the outer one (a copy only where the strides do not merge)
        prep = ["bshape = tuple(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]))",
                "a3 = a.expand(bshape + tuple(a.shape[-2:]))",
                "b3 = b.expand(bshape + tuple(b.shape[-2:]))",
                "if len(bshape) > 2:",
                "    a3 = a3.reshape((-1,) + tuple(a3.shape[-3:]))",
                "    b3 = b3.reshape((-1,) + tuple(b3.shape[-3:]))",
                "elif len(bshape) == 1:",
                "    a3, b3 = a3.unsqueeze(0), b3.unsqueeze(0)",
                "nb, NB1 = a3.shape[0] * a3.shape[1], a3.shape[1]",
                "M, K, N = a3.shape[2], a3.shape[3], b3.shape[3]",
                "S = bshape + (M, N)",
                "sa, sb = a3.stride(), b3.stride()"]
    else:
        prep = ["a3 = a.reshape(-1, a.shape[-1])",
                "b3 = b",
                "nb, NB1 = 1, 1",
                "M, K, N = a3.shape[0], a3.shape[1], b3.shape[1]",
                "S = tuple(a.shape[:-1]) + (N,)",
                "sa = (0, 0) + tuple(a3.stride())",
                "sb = (0, 0) + tuple(b3.stride())"]
    launch = [
        f"def launch({', '.join(['a', 'b'] + ep_args + ['config=None'])}):",
        *indent([
            "config = config or CONFIGS[0]",
            *prep,
            *launcher_inputs(body.inputs, ep_args),
            *[f"{o} = torch.empty(S, dtype={torch_dtype(v.type.dtype)}, device=a.device)"  # type: ignore[union-attr]
              for o, v in zip(outs, region.outputs)],
            "grid = (cdiv(M, config['BLOCK_M']) * cdiv(N, config['BLOCK_N']), nb)",
            "kernel[grid](a3, sa[0], sa[1], sa[2], sa[3], b3, sb[0], sb[1], sb[2], sb[3], "
            f"{', '.join(launcher_input_args(body.inputs, ep_args) + outs)}, M, N, K, NB1, "
            f"{', '.join(f'S[{k}]' for k in range(len(shape)))}, "
            "BLOCK_M=config['BLOCK_M'], BLOCK_N=config['BLOCK_N'], BLOCK_K=config['BLOCK_K'], "
            "GROUP_M=config['GROUP_M'], num_warps=config['num_warps'], "
            "num_stages=config['num_stages'])",
            f"return ({', '.join(outs)},)",
        ]),
    ]
    src = "\n".join(module_header("matmul", region.summary()) +
                    [f"CONFIGS = {CONFIGS!r}", "", ""] + kernel + ["", ""] + launch) + "\n"
    return KernelSource("matmul", src, list(mm.inputs) + [s.value for s in body.inputs],
                        list(region.outputs), region.summary())
