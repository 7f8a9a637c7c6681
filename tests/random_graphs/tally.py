"""Counting outcomes over a run of random graphs, and the table the script mode prints."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from graphopt.ir.graph import Graph

from .equivalence import FAILURES, Outcome


@dataclass
class Tally:
    """Outcomes by kind, reasons by kind, rewrites fired (graphs they fired in, and times), the
    ops the graphs used, and the wall time since the tally was made."""

    kinds: Counter[str] = field(default_factory=Counter)
    reasons: dict[str, Counter[str]] = field(default_factory=dict)
    fired_graphs: Counter[str] = field(default_factory=Counter)
    fired_times: Counter[str] = field(default_factory=Counter)
    ops: Counter[str] = field(default_factory=Counter)
    nodes: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def graphs(self) -> int:
        return sum(self.kinds.values())

    @property
    def failures(self) -> int:
        return sum(self.kinds[k] for k in FAILURES)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def add(self, g: Graph, outcome: Outcome) -> None:
        self.kinds[outcome.kind] += 1
        if outcome.kind != "ok":
            self.reasons.setdefault(outcome.kind, Counter())[outcome.reason] += 1
        for k, n in outcome.fired.items():
            self.fired_graphs[k] += 1
            self.fired_times[k] += n
        for n in g.nodes:
            if n.op not in ("input", "constant"):
                self.ops[n.op] += 1
                self.nodes += 1

    def pass_families(self) -> set[str]:
        """The passes (``pass.counter`` keys) and ``search`` that fired at least once."""
        return {k.split(":")[0] if k.startswith("search:") else k.split(".")[0]
                for k in self.fired_graphs}

    def render(self, title: str = "random-graph equivalence") -> str:
        """The whole tally as text tables (rich)."""
        from rich.console import Console
        from rich.table import Table

        console = Console(width=140, record=True, file=_Null())
        summary = Table(title=title)
        for col in ("graphs", "ok", "semantic changes", "other failures", "refused", "skipped",
                    "interp vs ORT", "ops / graph", "time s", "graphs / s"):
            summary.add_column(col, justify="right")
        n = max(self.graphs, 1)
        other = self.failures - self.kinds["semantic_change"]
        summary.add_row(str(self.graphs), str(self.kinds["ok"]),
                        str(self.kinds["semantic_change"]), str(other),
                        str(self.kinds["refused"]), str(self.kinds["skipped"]),
                        str(self.kinds["interp_vs_ort"]), f"{self.nodes / n:.1f}",
                        f"{self.seconds:.1f}",
                        f"{self.graphs / max(self.seconds, 1e-9):.1f}")
        console.print(summary)
        if self.reasons:
            reasons = Table(title="outcomes other than ok, by reason")
            reasons.add_column("kind")
            reasons.add_column("count", justify="right")
            reasons.add_column("reason")
            for kind, c in sorted(self.reasons.items()):
                for reason, k in c.most_common():
                    reasons.add_row(kind, str(k), reason)
            console.print(reasons)
        fired = Table(title="rewrites fired (pass.counter; search:rule)")
        fired.add_column("rewrite")
        fired.add_column("graphs", justify="right")
        fired.add_column("times", justify="right")
        for k, c in sorted(self.fired_graphs.items(), key=lambda kv: (-kv[1], kv[0])):
            fired.add_row(k, str(c), str(self.fired_times[k]))
        console.print(fired)
        ops = Table(title="ops in the generated graphs")
        ops.add_column("op")
        ops.add_column("nodes", justify="right")
        for op, c in self.ops.most_common():
            ops.add_row(op, str(c))
        console.print(ops)
        return console.export_text()


class _Null:
    """A file that drops writes (the console records, the caller prints the text)."""

    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        return None
