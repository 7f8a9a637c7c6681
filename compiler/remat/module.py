"""``optimize_training``: a module whose training step runs a rematerialization plan.

The model's forward, as a function of its parameters and inputs, goes through AOTAutograd
(``aot_function``); its partitioner hook receives the joint forward + backward graph, which
``plan_partition`` lifts into the IR (``joint.JointGraph``), plans (``solvers``), checks as an IR
rewrite (``passes/remat.py``) and splits into the forward and backward graphs AOTAutograd wraps
in one ``autograd.Function``. So the result is an ordinary module: any loss, any optimizer,
gradients land in the model's own parameters. ``plan_partition`` takes only the joint module and
the options, so a ``torch.compile`` backend can call the same code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ..cost.model import CostModel
from ..errors import GraphOptError
from .dropout import split_dropout
from .joint import JointGraph
from .plan import Peak, Plan, partition
from .report import PlanFacts, RematReport
from .solvers import (lowest_peak_plan, milp_plan, mincut_plan, no_recompute, simulator_for,
                      sqrt_plan)

SOLVERS = ("milp", "sqrt", "mincut", "none", "lowest")


@dataclass
class PlanOptions:
    """What ``plan_partition`` needs: the budget (a fraction in (0, 1] of the peak activations
    without recompute, or bytes), the solver, the cost model's target and the solver's time."""

    memory_budget: float | int = 0.4
    solver: str = "milp"
    target: str = "cpu"
    time_limit: float = 10.0
    num_params: int = 0
    result: dict[str, Any] = field(default_factory=dict)  # joint, plan, report (filled in)


def budget_bytes(memory_budget: float | int, reference: int) -> int:
    """The budget in bytes: a float in (0, 1] is a fraction of ``reference``, an int is bytes."""
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, (int, float)):
        raise GraphOptError(f"memory_budget must be a float in (0, 1] or an int of bytes, not "
                            f"{memory_budget!r}", where="optimize_training")
    if isinstance(memory_budget, int):
        if memory_budget <= 0:
            raise GraphOptError(f"memory_budget {memory_budget} bytes is not positive",
                                where="optimize_training")
        return memory_budget
    if not 0 < memory_budget <= 1:
        raise GraphOptError(f"memory_budget {memory_budget} is not a fraction in (0, 1]",
                            where="optimize_training")
    return int(memory_budget * reference)


def _facts(joint: JointGraph, plan: Plan, peak: Peak) -> PlanFacts:
    return PlanFacts(plan.solver, peak.saved, peak.activations, peak.total,
                     plan.recompute_time(joint), len(plan.saved), len(plan.recomputed))


def plan_partition(joint_module: Any, num_fwd_outputs: int, opts: PlanOptions
                   ) -> tuple[Any, Any]:
    """AOTAutograd partitioner: plan the joint graph under ``opts`` and return the forward and
    backward graph modules; ``opts.result`` receives the joint graph, the plan and the report."""
    import time

    if opts.solver not in SOLVERS:
        raise GraphOptError(f"unknown solver {opts.solver!r} (one of {', '.join(SOLVERS)})",
                            where="optimize_training")
    start = time.perf_counter()
    split_dropout(joint_module)
    joint = JointGraph.build(joint_module, num_fwd_outputs, opts.num_params, opts.target)
    sim = simulator_for(joint)
    ref_plan = no_recompute(joint)
    ref = sim(ref_plan)
    budget = budget_bytes(opts.memory_budget, ref.activations)
    baselines = [sqrt_plan(joint), mincut_plan(joint)]
    lowest, _ = lowest_peak_plan(joint, sim)
    reachable = min(sim(p).activations for p in [ref_plan, *baselines] + [lowest])
    t0 = time.perf_counter()
    rounds = 0
    if opts.solver == "milp":
        if budget < reachable:
            raise GraphOptError(
                f"memory budget {budget} bytes ({budget / ref.activations:.3f} of the "
                f"{ref.activations} bytes of peak activations without recompute) is below what "
                f"any plan reaches: the minimum reachable budget is {reachable} bytes "
                f"({reachable / ref.activations:.3f})", where="optimize_training")
        plan, _, info = milp_plan(joint, budget, sim, baselines + [lowest], opts.time_limit)
        rounds = int(info["rounds"])
    else:
        plan = {"sqrt": baselines[0], "mincut": baselines[1], "none": ref_plan,
                "lowest": lowest}[opts.solver]
    solver_s = time.perf_counter() - t0
    fw, bw = partition(joint, plan)
    rewrites, added = ir_check(joint, plan, bw, opts.target)
    report = RematReport(budget, _facts(joint, ref_plan, ref), _facts(joint, plan, sim(plan)),
                         [_facts(joint, b, sim(b)) for b in baselines + [lowest]],
                         [n for n in joint.forward if n in plan.saved],
                         [n for n in joint.forward if n in plan.recomputed],
                         solver_s, rounds, added, rewrites, time.perf_counter() - start)
    opts.result.update(joint=joint, plan=plan, report=report, fw=fw, bw=bw)
    return fw, bw


def ir_check(joint: JointGraph, plan: Plan, bw: Any, target: str) -> tuple[int, float]:
    """Rewrite the all-saved IR backward into the plan's (``passes/remat.py``), check it reads
    exactly what the FX backward's placeholders are, and price what it adds: (rewrites, s)."""
    import operator

    from ..passes.remat import Recipes, RematPass

    rec = Recipes(joint.ir_values, joint.inputs,
                  frozenset(f for f in joint.forward if joint.nodes[f].target is operator.getitem),
                  plan.saved, plan.recomputed, frozenset(joint.rng), frozenset(joint.primals))
    res = RematPass(options={"recompute": rec}).run(joint.ir_backward)
    skip = set(joint.primals) | set(joint.tangents)
    ir_reads = {n for n in res.graph.input_names if n not in skip}
    fx_reads = {n.name for n in bw.graph.nodes if n.op == "placeholder"} - skip
    if ir_reads != fx_reads:
        raise GraphOptError(f"the IR backward reads {sorted(ir_reads - fx_reads)} that the FX "
                            f"backward does not, and not {sorted(fx_reads - ir_reads)}",
                            where=f"remat plan ({plan.solver})")
    model = CostModel(target, fusion=False)
    added = model(res.graph) - model(joint.ir_backward)
    return int(res.stats.get("recompute_rewritten", 0)), added


def optimize_training(model: Any, example_inputs: Sequence[Any], memory_budget: float | int = 0.4,
                      target: str = "cpu", solver: str = "milp", time_limit: float = 10.0,
                      measure: bool = True) -> Any:
    """An ``nn.Module`` sharing ``model``'s parameters whose backward runs a rematerialization
    plan: ``solver`` "milp" (least recompute time under ``memory_budget``), "sqrt" (sqrt(n)
    checkpointing), "mincut" (recompute pointwise values only), "none" or "lowest" (the
    checkpointing plan with the lowest peak).
    ``memory_budget``: a float in (0, 1], a fraction of the peak activations plain autograd keeps
    (no recompute), or an int of bytes. ``.report`` is a ``RematReport`` (with measured peaks when
    ``measure``). Inputs must keep ``example_inputs``' shapes and dtypes."""
    from .torch_module import build_module

    return build_module(model, tuple(example_inputs), PlanOptions(
        memory_budget, solver, target, time_limit), measure)
