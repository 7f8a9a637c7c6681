"""What ``optimize_training`` chose and what it costs: ``RematReport``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PlanFacts:
    """One plan's numbers: saved bytes at the forward/backward boundary, predicted peak of live
    activations and of the whole step, predicted recompute seconds (IR cost model)."""

    solver: str
    saved: int
    peak_activations: int
    peak_total: int
    recompute_s: float
    n_saved: int
    n_recomputed: int

    def row(self) -> str:
        return (f"{self.solver:<10} saved {_mb(self.saved):>9}  peak act {_mb(self.peak_activations):>9}"
                f"  peak all {_mb(self.peak_total):>9}  recompute {self.recompute_s * 1e3:8.3f} ms"
                f"  ({self.n_saved} saved, {self.n_recomputed} recomputed)")


@dataclass
class RematReport:
    """The chosen plan (``plan``), the reference (no recompute) and the baselines, the budget,
    the IR check of the backward and, once measured, the measured peaks."""

    budget: int  # bytes of live activations the plan must stay under
    reference: PlanFacts  # no recompute: what plain autograd keeps
    plan: PlanFacts
    baselines: list[PlanFacts]
    saved: list[str]  # FX names of the saved tensors (graph order)
    recomputed: list[str]
    solver_s: float
    solver_rounds: int
    ir_added_s: float  # cost-model seconds the rewritten IR backward adds over the all-saved one
    ir_rewrites: int  # places passes/remat.py rewrote
    plan_s: float = 0.0  # all of the planning: IR lift, baselines, solver, partition, IR check
    measured: dict[str, Any] = field(default_factory=dict)
    # the plan's gradients against plain autograd's on the example step (same RNG seed)
    gradient_check: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"remat plan ({self.plan.solver}), budget {_mb(self.budget)} "
                 f"({self.budget / max(self.reference.peak_activations, 1):.3f} of the "
                 f"{_mb(self.reference.peak_activations)} peak activations without recompute); "
                 f"solver {self.solver_s:.2f} s, {self.solver_rounds} round(s), planning "
                 f"{self.plan_s:.2f} s",
                 "  " + self.plan.row(), "  " + self.reference.row()]
        lines += ["  " + b.row() for b in self.baselines]
        lines.append(f"  IR backward: {self.ir_rewrites} reads rewritten to recomputations, "
                     f"+{self.ir_added_s * 1e3:.3f} ms predicted")
        lines.append(f"  saved ({len(self.saved)}): {_names(self.saved)}")
        lines.append(f"  recomputed ({len(self.recomputed)}): {_names(self.recomputed)}")
        if self.gradient_check:
            g = self.gradient_check
            lines.append(f"  gradients vs plain autograd: {g['parameters']} parameters, "
                         f"{'bitwise equal' if g['bitwise'] else 'max relative error %.2g' % g['max_relative_error']}")
        if self.measured:
            lines.append("  measured: " + ", ".join(
                f"{k} {_mb(v) if isinstance(v, int) else v}" for k, v in self.measured.items()))
        return "\n".join(lines)


def _names(names: list[str], shown: int = 24) -> str:
    """The first ``shown`` names, and how many more."""
    if not names:
        return "-"
    more = f", ... ({len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _mb(b: int) -> str:
    return f"{b / 2**20:.2f} MiB"
