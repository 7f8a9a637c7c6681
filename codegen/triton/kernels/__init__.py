"""Kernel families, one file each; ``emit_region`` picks the family of a region."""
from __future__ import annotations

from ..cache import KernelSource
from ..region import Region


def emit_region(region: Region) -> KernelSource:
    """The generated kernel module of ``region`` (its inputs/outputs name the IR values)."""
    if region.kind == "pointwise":
        from .pointwise import emit_pointwise

        return emit_pointwise(region)
    if region.kind == "reduction":
        from .reduction import emit_reduction

        return emit_reduction(region)
    if region.kind == "matmul":
        from .matmul import emit_matmul

        return emit_matmul(region)
    assert region.anchor is not None
    if region.kind == "attention":
        from .flash_attention import emit_attention_node

        return emit_attention_node(region.anchor)
    if region.kind == "decode_attention":
        from .decode_attention import emit_decode_node

        return emit_decode_node(region.anchor)
    if region.kind == "quant_matmul":
        from .quant_matmul import emit_quant_node

        return emit_quant_node(region.anchor)
    raise ValueError(f"no kernel family for region kind {region.kind!r}")
