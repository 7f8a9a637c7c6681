"""Plans on the joint graph: the name-level schedule equals the partitioned graphs, plan
closure and its refusals, cuts, the IR rewrite of passes/remat.py."""
from __future__ import annotations

import pytest
import torch

from graphopt.errors import GraphOptError
from graphopt.passes.remat import Recipes, RecomputeRule, RematPass
from graphopt.remat import optimize_training
from graphopt.remat.joint import JointGraph
from graphopt.remat.plan import Plan, complete, partition, schedule
from graphopt.rewrite.driver import sweep
from graphopt.remat.solvers import cuts, forced_saves, mincut_plan, no_recompute, sqrt_plan

from .models import transformer


@pytest.fixture(scope="module")
def traced() -> tuple[JointGraph, list[torch.Tensor]]:
    """The joint graph of a 3-block model and the values of its primals."""
    torch.manual_seed(0)
    m = transformer(3)
    x = torch.randn(2, 8, 16)
    r = optimize_training(m, (x,), solver="none", measure=False)
    return r._opts.result["joint"], [p.detach() for p in m.parameters()] + [x]


@pytest.fixture(scope="module")
def joint(traced: tuple[JointGraph, list[torch.Tensor]]) -> JointGraph:
    return traced[0]


def test_schedule_is_the_partitioned_graphs_order(joint: JointGraph) -> None:
    for plan in (no_recompute(joint), sqrt_plan(joint), mincut_plan(joint),
                 sqrt_plan(joint, 1)):
        fw, bw = partition(joint, plan)
        want_f = [n.name for n in fw.graph.nodes if n.op == "call_function"]
        want_b = [n.name for n in bw.graph.nodes if n.op == "call_function"]
        assert schedule(joint, plan) == (want_f, want_b), plan.solver


def test_cuts_are_the_residual_stream(joint: JointGraph) -> None:
    cs = cuts(joint)
    # two per block (after attention, after the MLP) except the last output, plus the first
    # projection (the block input is a primal)
    assert len(cs) >= 2 * 3 - 1
    for c in cs:
        assert joint.saveable(c) and c not in joint.rng


def test_random_values_are_saved_never_recomputed(joint: JointGraph) -> None:
    assert joint.rng, "the dropout draws are random ops"
    for f in joint.rng:
        assert str(joint.nodes[f].target).startswith("aten.bernoulli")
    masks = forced_saves(joint)
    assert masks and all(joint.nodes[m].meta["val"].dtype == torch.bool for m in masks)
    with pytest.raises(GraphOptError, match="random op that is never recomputed"):
        complete(joint, set(), "empty")  # nothing saved: the masks would be redrawn


def test_plan_closure_recomputes_down_to_saved(joint: JointGraph) -> None:
    plan = sqrt_plan(joint)
    avail = plan.saved | plan.recomputed | joint.primal_set
    for n in joint.needed:
        assert n in avail
    for r in plan.recomputed:
        assert all(u in avail for u in joint.inputs[r])
    assert not plan.saved & plan.recomputed


def _recipes(joint: JointGraph, plan: Plan) -> Recipes:
    import operator

    return Recipes(joint.ir_values, joint.inputs,
                   frozenset(f for f in joint.forward if joint.nodes[f].target is operator.getitem),
                   plan.saved, plan.recomputed, frozenset(joint.rng), frozenset(joint.primals))


def test_remat_pass_reads_exactly_the_saved_values(joint: JointGraph) -> None:
    plan = sqrt_plan(joint)
    res = RematPass(options={"recompute": _recipes(joint, plan)}).run(joint.ir_backward)
    skip = set(joint.primals) | set(joint.tangents)
    reads = {n for n in res.graph.input_names if n not in skip}
    assert reads == set(plan.saved) & (set(joint.needed) | {
        u for r in plan.recomputed for u in joint.inputs[r]})
    assert res.stats["recompute_rewritten"] > 0
    before = {n for n in joint.ir_backward.input_names if n not in skip}
    assert before == set(joint.needed) & set(joint.ir_forward)


def test_remat_pass_refuses_to_recompute_a_random_value(joint: JointGraph) -> None:
    plan = no_recompute(joint)
    mask = next(iter(forced_saves(joint) & set(joint.needed)))
    bad = Recipes(joint.ir_values, joint.inputs, frozenset(), plan.saved - {mask},
                  plan.recomputed | {mask}, frozenset(joint.rng) | {mask},
                  frozenset(joint.primals))
    out = sweep(joint.ir_backward, [RecomputeRule()], {"recompute": bad}, pass_name="remat")
    refused = [c for c in out.candidates if not c.matched]
    assert refused and "random op" in refused[0].reason
    with pytest.raises(GraphOptError, match="still reads"):
        RematPass(options={"recompute": bad}).run(joint.ir_backward)


@pytest.mark.parametrize("fraction", [None, 0.3, 0.5, 0.7, 0.95])
def test_milp_fits_every_budget_and_beats_the_baselines_that_fit(joint: JointGraph,
                                                                 fraction: float | None) -> None:
    from graphopt.remat.solvers import lowest_peak_plan, milp_plan, simulator_for

    sim = simulator_for(joint)
    ref = sim(no_recompute(joint)).activations
    lowest, low = lowest_peak_plan(joint, sim)
    budget = low.activations if fraction is None else int(fraction * ref)
    baselines = [sqrt_plan(joint), mincut_plan(joint), lowest]
    plan, peak, info = milp_plan(joint, budget, sim, baselines)
    assert peak == sim(plan) and peak.activations <= budget
    assert info["seconds"] < 10
    for b in baselines:
        if sim(b).activations <= budget:
            assert plan.recompute_time(joint) <= b.recompute_time(joint) + 1e-12, b.solver


class _Recorder(torch.fx.Interpreter):
    """Runs an FX graph, keeping every node's value by name."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[str, object] = {}

    def run_node(self, n: torch.fx.Node) -> object:
        v = super().run_node(n)
        self.values[n.name] = v
        return v


@pytest.mark.parametrize("which", ["sqrt", "mincut"])
def test_rewritten_ir_backward_computes_the_gradients(traced: tuple[JointGraph, list],
                                                      which: str) -> None:
    """The plan's IR backward (passes/remat.py), run by the IR's torch interpreter on the saved
    values, gives bitwise the joint graph's gradients."""
    from graphopt.ir.interp import run

    joint, primals = traced
    feeds = dict(zip(joint.primals, primals))
    args = [feeds.get(n.name) if n.name in feeds else torch.randn(n.meta["val"].shape)
            for n in joint.module.graph.nodes if n.op == "placeholder"]
    rec = _Recorder(joint.module)
    torch.manual_seed(7)
    rec.run(*args)
    out = next(n for n in joint.module.graph.nodes if n.op == "output")
    want = {f"grad_{p}": rec.values[a.name]
            for p, a in zip(joint.primals, list(out.args[0])[joint.num_fwd_outputs:])
            if a is not None}
    plan = sqrt_plan(joint) if which == "sqrt" else mincut_plan(joint)
    g = RematPass(options={"recompute": _recipes(joint, plan)}).run(joint.ir_backward).graph
    got = run(g, backend="torch", inputs={n: rec.values[n] for n in g.input_names})
    assert len(got) == len(want)
    for name, value in zip(g.output_names, got):
        assert torch.equal(value, want[name]), name
