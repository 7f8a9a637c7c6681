"""A saturated e-graph as extraction sees it: e-classes of e-nodes, each e-node with its own cost
and the e-classes it reads. egglog's serialized e-graph is turned into this (``saturate.py``),
so extraction (``extract.py``) needs neither egglog nor graphopt's IR."""
from __future__ import annotations

from dataclasses import dataclass, field

NodeRef = tuple[str, int]  # (e-class id, index of the e-node in that class)


@dataclass(frozen=True)
class ENode:
    """One e-node: ``op`` (a label for reports), the e-classes it reads in order, and its cost in
    seconds when it runs alone (0 for inputs, constants and views)."""

    op: str
    children: tuple[str, ...]
    cost: float


@dataclass
class EGraphView:
    """``classes``: e-class id -> its e-nodes; ``roots``: the e-classes the graph outputs.
    ``savings``: (consumer, producer) -> seconds saved when both e-nodes are chosen (the
    producer is an e-node of one of the consumer's child classes): the fusions of the target
    (epilogues, pointwise chains), which a per-node cost cannot see."""

    classes: dict[str, list[ENode]]
    roots: list[str]
    savings: dict[tuple[NodeRef, NodeRef], float] = field(default_factory=dict)

    @property
    def n_nodes(self) -> int:
        return sum(len(v) for v in self.classes.values())


Choice = dict[str, int]  # e-class id -> index of the chosen e-node, for every class reached
