"""graphopt.remat: plans run through autograd with the un-rematerialised gradients (bitwise,
dropout included), budgets, the too-small-budget error, the report."""
from __future__ import annotations

import pytest
import torch

from graphopt.errors import GraphOptError
from graphopt.remat import optimize_training

from .models import transformer

SOLVERS = ["milp", "sqrt", "mincut", "none", "lowest"]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return transformer(3)


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 8, 16)


def grads(m: torch.nn.Module, params: list[torch.Tensor], x: torch.Tensor, seed: int
          ) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(seed)
    return torch.autograd.grad(m(x).pow(2).sum(), params)


@pytest.mark.parametrize("solver", SOLVERS)
def test_gradients_equal_plain_autograd_bitwise_with_dropout(model: torch.nn.Module,
                                                             x: torch.Tensor, solver: str) -> None:
    r = optimize_training(model, (x,), memory_budget=0.6, solver=solver, measure=False)
    params = list(model.parameters())
    for seed in (3, 4):
        want = grads(model, params, x, seed)
        got = grads(r, params, x, seed)
        for p, a, b in zip(model.named_parameters(), want, got):
            assert torch.equal(a, b), f"{solver}: gradient of {p[0]} differs"
    # a different seed draws other dropout masks: the plan does not freeze the randomness
    assert not torch.equal(grads(r, params, x, 5)[0], grads(r, params, x, 6)[0])
    # optimize_training checked the same before returning, and says so
    g = r.report.gradient_check
    assert g["bitwise"] and g["parameters"] == len(params)
    assert "bitwise equal" in str(r.report)


def test_training_steps_match_and_share_parameters(x: torch.Tensor) -> None:
    torch.manual_seed(0)
    a = transformer(2)
    b = transformer(2)
    b.load_state_dict(a.state_dict())
    r = optimize_training(b, (x,), memory_budget=0.5, measure=False)
    assert list(r.parameters()) == list(b.parameters())
    opts = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in (a, b)]
    y = torch.randn(2, 8, 16)
    for step in range(3):
        for m, opt in ((a, opts[0]), (r, opts[1])):
            torch.manual_seed(10 + step)
            opt.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            opt.step()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), n


def test_plan_meets_budget_and_saves_less(model: torch.nn.Module, x: torch.Tensor) -> None:
    r = optimize_training(model, (x,), memory_budget=0.5, measure=False)
    rep = r.report
    assert rep.plan.peak_activations <= rep.budget
    assert rep.budget == int(0.5 * rep.reference.peak_activations)
    assert rep.plan.saved < rep.reference.saved
    assert rep.plan.recompute_s > 0
    assert rep.ir_rewrites > 0 and rep.ir_added_s > 0
    assert set(rep.saved).isdisjoint(rep.recomputed)


def test_milp_beats_sqrt_at_sqrt_memory(model: torch.nn.Module, x: torch.Tensor) -> None:
    sq = optimize_training(model, (x,), solver="sqrt", measure=False).report.plan
    r = optimize_training(model, (x,), memory_budget=sq.peak_activations, measure=False)
    assert r.report.plan.peak_activations <= sq.peak_activations
    assert r.report.plan.recompute_s <= sq.recompute_s


def test_budget_in_bytes(model: torch.nn.Module, x: torch.Tensor) -> None:
    ref = optimize_training(model, (x,), solver="none", measure=False).report.plan
    r = optimize_training(model, (x,), memory_budget=int(ref.peak_activations * 0.7),
                          measure=False)
    assert r.report.budget == int(ref.peak_activations * 0.7)
    assert r.report.plan.peak_activations <= r.report.budget


def test_budget_below_every_plan_is_a_one_line_error(model: torch.nn.Module,
                                                     x: torch.Tensor) -> None:
    with pytest.raises(GraphOptError) as e:
        optimize_training(model, (x,), memory_budget=0.01, measure=False)
    msg = e.value.one_line()
    assert "\n" not in msg
    assert "minimum reachable budget is" in msg
    lowest = optimize_training(model, (x,), solver="lowest", measure=False).report.plan
    reach = int(msg.split("minimum reachable budget is ")[1].split()[0])
    assert reach == lowest.peak_activations
    r = optimize_training(model, (x,), memory_budget=reach, measure=False)
    assert r.report.plan.peak_activations <= reach


@pytest.mark.parametrize("bad", [0.0, 1.5, -3, "half"])
def test_bad_budgets(model: torch.nn.Module, x: torch.Tensor, bad: object) -> None:
    with pytest.raises(GraphOptError, match="memory_budget"):
        optimize_training(model, (x,), memory_budget=bad, measure=False)


def test_random_ops_are_never_recomputed(model: torch.nn.Module, x: torch.Tensor) -> None:
    for solver in SOLVERS:
        rep = optimize_training(model, (x,), memory_budget=0.4, solver=solver,
                                measure=False).report
        assert not any("dropout" in n for n in rep.recomputed), solver


def test_report_measures_and_other_shapes_refused(x: torch.Tensor) -> None:
    torch.manual_seed(0)
    m = transformer(2)
    r = optimize_training(m, (x,), memory_budget=0.5)
    meas = r.report.measured
    assert set(meas) == {"saved", "saved_autograd", "peak_activations", "peak_total",
                         "peak_activations_autograd", "peak_total_autograd"}
    assert 0 < meas["saved"] < meas["saved_autograd"]
    # the profiler sees the compiled function's values as the schedule predicts them
    pred = r.report.plan.peak_activations
    assert abs(meas["peak_activations"] - pred) <= 0.1 * pred
    # and the whole step (gradients included) as the simulated schedule predicts it: the
    # backward frees each saved value after its last use
    total = r.report.plan.peak_total
    assert abs(meas["peak_total"] - total) <= 0.15 * total
    assert meas["peak_activations"] < meas["peak_total"]
    assert "  saved (" in str(r.report) and "measured:" in str(r.report)
    with pytest.raises(GraphOptError, match="differ from the example inputs"):
        r(torch.randn(2, 4, 16))


class DictOut(torch.nn.Module):
    """Outputs in a dict (a loss head and an auxiliary value), no dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.body = transformer(2, p=0.0)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(x)
        return {"logits": self.head(h), "mean": h.mean()}


def test_pytree_outputs_and_no_random_ops(x: torch.Tensor) -> None:
    torch.manual_seed(0)
    m = DictOut()
    r = optimize_training(m, (x,), memory_budget=0.5, measure=False)
    assert not r._opts.result["joint"].rng
    got, want = r(x), m(x)
    assert set(got) == {"logits", "mean"}
    assert torch.equal(got["logits"], want["logits"]) and torch.equal(got["mean"], want["mean"])
    params = list(m.parameters())

    def loss(o: dict[str, torch.Tensor]) -> torch.Tensor:
        return o["logits"].square().sum() + o["mean"]

    for a, b in zip(torch.autograd.grad(loss(r(x)), params),
                    torch.autograd.grad(loss(m(x)), params)):
        assert torch.equal(a, b)
    assert r.report.plan.peak_activations <= r.report.budget
