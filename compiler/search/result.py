"""What a search returns: the best graph, its cost, and how the search went."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..ir.graph import Graph


@dataclass
class SearchResult:
    graph: Graph
    cost: float  # seconds, under the model
    initial_cost: float
    applied: dict[str, int]  # rule -> times applied on the way to the best graph
    expanded: int  # graphs taken off the queue
    explored: int  # candidate graphs built and costed
    seconds: float
    stopped: str  # "exhausted" (queue empty) | "time" | "graphs" | "explored" | "patience"
    windows: int = 1
    reused_windows: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # why candidates were dropped
    # matches whose rule check failed, per (rule, reason) (``rewrite.index.Matcher.failures``)
    failed_checks: dict[tuple[str, str], int] = field(default_factory=dict)
    # rewrites the search built and priced, per rule (on the best path or not)
    tried: dict[str, int] = field(default_factory=dict)
    # matches whose rewrite the search refused, per (rule, reason): "cycle", "no-op", "rhs: ..."
    refused: dict[tuple[str, str], int] = field(default_factory=dict)
    # per rule, the least estimated cost change (seconds) of a rewrite it made, over the graph
    # it rewrote (the lazy pricing's estimate; the exact one's cost when built at once)
    best_delta: dict[str, float] = field(default_factory=dict)

    @property
    def speedup(self) -> float:
        """Estimated fraction of time saved: 1 - cost/initial."""
        return 0.0 if self.initial_cost <= 0 else 1.0 - self.cost / self.initial_cost

    def to_dict(self) -> dict[str, Any]:
        return {"cost_before_us": round(self.initial_cost * 1e6, 3),
                "cost_after_us": round(self.cost * 1e6, 3),
                "estimated_speedup": round(self.speedup, 4),
                "rules_applied": dict(sorted(self.applied.items())),
                "graphs_expanded": self.expanded, "graphs_explored": self.explored,
                "seconds": round(self.seconds, 4), "stopped": self.stopped,
                "windows": self.windows, "reused_windows": self.reused_windows,
                "rejected": dict(sorted(self.rejected.items()))}
