"""What a fusion pass found: one ``Candidate`` per place it looked at, fused or not, with the
rule, the culprit node and the failed condition when it did not fuse (DESIGN.md section 5).
``graphopt explain`` and the report print these."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graphopt.ir.node import Node


@dataclass(frozen=True)
class Candidate:
    """One place a fusion rule looked at.

    ``anchor`` is the node that names the place (a softmax for attention, the shared input of a
    matmul group); ``culprit`` the node where the failed ``condition`` was seen (None when fused).
    """

    kind: str  # "attention" | "matmul_group" | "layer_norm" | "rms_norm" | "gelu" | ...
    rule: str
    anchor: Node
    fused: bool
    condition: str = ""
    culprit: Node | None = None
    detail: str = ""  # what the fused op is (e.g. "causal, GQA 4/2 heads")

    def describe(self) -> str:
        where = _node_label(self.anchor)
        if self.fused:
            extra = f" ({self.detail})" if self.detail else ""
            return f"{self.kind} at {where}: fused by {self.rule}{extra}"
        culprit = _node_label(self.culprit) if self.culprit is not None else where
        return (f"{self.kind} at {where}: NOT fused: rule {self.rule}, node {culprit}: "
                f"{self.condition}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "rule": self.rule, "anchor": _node_label(self.anchor),
                "fused": self.fused, "condition": self.condition,
                "culprit": _node_label(self.culprit) if self.culprit is not None else None,
                "detail": self.detail}


def _node_label(n: Node) -> str:
    o = f" [{n.origin}]" if n.origin else ""
    return f"{n.op} #{n.uid}{o}"


def add_notes(stats: dict[str, Any], cands: "list[Candidate]") -> None:
    """``stats["notes"]``: one line per candidate that was not fused (absent when none)."""
    notes = [c.describe() for c in cands if not c.fused]
    if notes:
        stats["notes"] = notes


class NoMatch(Exception):
    """A matcher's failed condition, with the node where it failed."""

    def __init__(self, condition: str, node: Node) -> None:
        super().__init__(condition)
        self.condition = condition
        self.node = node


def rebuild(g: Any, builders: dict[int, Any]) -> Any:
    """Rebuild ``g`` bottom-up; for a node whose id is in ``builders`` call
    ``builders[id](tr)`` (``tr`` maps a value of the old graph to its rebuilt value) to get its
    replacement outputs. Replacements may read any value upstream of the node they replace."""
    from graphopt.ir.graph import Graph
    from graphopt.ir.node import Value

    env: dict[tuple[int, int], Value] = {}

    def tr(v: Value) -> Value:
        return env.get((id(v.node), v.index), v)

    for n in g.nodes:
        if n.op == "input":
            continue
        fn = builders.get(id(n))
        if fn is not None:
            outs = tuple(fn(tr))
        else:
            outs = n.with_inputs(tuple(tr(v) for v in n.inputs)).outputs
        if len(outs) != len(n.out_types):
            raise ValueError(f"replacement of {n.op} #{n.uid} has {len(outs)} outputs, "
                             f"want {len(n.out_types)}")
        for i, v in enumerate(outs):
            if v.type != n.out_types[i]:
                raise ValueError(f"replacement of {n.op} #{n.uid} output {i} has type "
                                 f"{v.type}, want {n.out_types[i]}")
            env[(id(n), i)] = v
    return Graph(g.inputs, [tr(v) for v in g.outputs], g.output_names, g.name, g.meta)
