"""A kernel region: the IR nodes one generated kernel computes."""
from __future__ import annotations

from dataclasses import dataclass, field

from graphopt.ir.node import Node, Value
from graphopt.ir.types import Dim

KINDS = ("pointwise", "reduction", "matmul", "attention", "decode_attention", "quant_matmul")


@dataclass
class Region:
    """``nodes`` in topological order (the anchor included); ``outputs``: the values read outside
    the region (or graph outputs), which the kernel stores; ``shape``: the index space of the
    pointwise part (the anchor's output shape for matmul / reduction regions)."""

    kind: str
    nodes: list[Node]
    outputs: list[Value] = field(default_factory=list)
    anchor: Node | None = None
    shape: tuple[Dim, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown region kind {self.kind!r}")

    @property
    def ops(self) -> list[str]:
        return [n.op for n in self.nodes]

    def summary(self) -> str:
        shape = ",".join(str(d) for d in self.shape)
        return f"{self.kind} [{shape}]: {' -> '.join(self.ops)}"
