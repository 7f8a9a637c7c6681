"""Fused pointwise kernels: a chain (DAG) of elementwise nodes over one output shape.

One program handles ``BLOCK`` consecutive elements of the flat index space; inputs broadcast by
strides; every value the graph reads outside the region is stored.
"""
from __future__ import annotations

from ..body import (Body, indent, launcher_input_args, launcher_inputs, module_header,
                    torch_dtype)
from ..cache import KernelSource
from ..region import Region

CONFIGS = [{"BLOCK": 1024, "num_warps": 4}, {"BLOCK": 512, "num_warps": 4},
           {"BLOCK": 2048, "num_warps": 8}, {"BLOCK": 4096, "num_warps": 8},
           {"BLOCK": 256, "num_warps": 2}]


def emit_pointwise(region: Region) -> KernelSource:
    """The kernel module computing a pointwise region."""
    body = Body(tuple(region.shape))
    for n in region.nodes:
        body.node(n)
    outs = [f"out{j}" for j in range(len(region.outputs))]
    for o, v in zip(outs, region.outputs):
        body.store(o, v)
    rank = body.rank
    args = [s.name for s in body.inputs]
    sig = body.input_args() + outs + ["N"] + body.dim_args() + ["BLOCK: tl.constexpr"]
    kernel = [
        "@triton.jit",
        f"def kernel({', '.join(sig)}):",
        *indent([
            "pid = tl.program_id(0)",
            "offs = pid * BLOCK + tl.arange(0, BLOCK)",
            "mask = offs < N",
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
            f"dev = {args[0]}.device" if args else "dev = torch.device('cuda')",
            *[f"{o} = torch.empty(S, dtype={torch_dtype(v.type.dtype)}, device=dev)"  # type: ignore[union-attr]
              for o, v in zip(outs, region.outputs)],
            "N = numel(S)",
            "grid = (cdiv(N, config['BLOCK']),)",
            f"kernel[grid]({', '.join(launcher_input_args(body.inputs, args) + outs)}, N, "
            f"{', '.join(f'S[{k}]' for k in range(rank)) + ', ' if rank else ''}"
            f"BLOCK=config['BLOCK'], num_warps=config['num_warps'])",
            f"return ({', '.join(outs)},)",
        ]),
    ]
    src = "\n".join(module_header("pointwise", region.summary()) +
                    [f"CONFIGS = {CONFIGS!r}", "", ""] + kernel + ["", ""] + launch) + "\n"
    return KernelSource("pointwise", src, [s.value for s in body.inputs], list(region.outputs),
                        region.summary())


def _shape_lines(region: Region, args: list[str]) -> list[str]:
    """Launcher lines binding ``S``, the index space, from the region's static shape or (with
    symbolic dims) from its inputs' shapes."""
    shape = tuple(region.shape)
    if all(isinstance(d, int) for d in shape):
        return [f"S = {tuple(shape)!r}"]
    if not args:
        raise ValueError(f"region {region.summary()} has symbolic dims and no inputs")
    return [f"S = tuple(torch.broadcast_shapes({', '.join(a + '.shape' for a in args)}))",
            f"assert len(S) == {len(shape)}, S"]

