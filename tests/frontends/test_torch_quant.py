"""Tests of the torch callable's fast path (graphopt.frontends.torch_quant): lowered quantized
linears run as fused torch kernels, checked against the node-by-node interpreter."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import graphopt
from graphopt.errors import GraphOptError
from graphopt.frontends import torch_quant
from graphopt.frontends.torch_export import to_callable
from graphopt.ir.graph import Graph
from graphopt.ir.node import Value, constant, input_node, op, op_multi
from graphopt.ir.types import DType, TensorType
from graphopt.quant.config import QuantConfig

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def sqnr(ref: torch.Tensor, got: torch.Tensor) -> float:
    err = (ref.double() - got.double()).pow(2).sum()
    return float("inf") if err == 0 else float(10 * torch.log10(ref.double().pow(2).sum() / err))


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(64, 96), nn.Linear(96, 64), nn.Linear(64, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


@pytest.fixture(scope="module")
def mlp() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return Mlp().eval(), torch.randn(2, 8, 64)


def quantized(m: nn.Module, x: torch.Tensor, activations: str) -> Any:
    cfg = QuantConfig("int8", activations=activations, use_cost_model=False)  # tiny layers
    return graphopt.optimize(m, example_inputs=(x,), quantize=cfg)


def run_both(g: Graph, *xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Module]:
    """(fast path, node by node) outputs, and the fast module."""
    fast, ref = to_callable(g), to_callable(g, fast=False)
    with torch.no_grad():
        return fast(*xs), ref(*xs), fast


def test_per_tensor_linears_run_fused(mlp: tuple[nn.Module, torch.Tensor]) -> None:
    m, x = mlp
    om = quantized(m, x, "per-tensor")
    got, ref, fast = run_both(om.graph, x)
    plan = fast.plan
    assert len(plan.regions) == 3 and not plan.fallbacks
    assert all("quantized.linear_dynamic" in r.kernel for r in plan.regions)
    assert [r.bias is not None for r in plan.regions] == [True] * 3
    # the regions' integer ops, scales and bias adds are not run node by node
    ops = {st.node.op for *_, st in plan.steps if st.node is not None}
    assert not ops & {"matmul_integer", "dynamic_quantize_linear", "cast", "mul"}
    assert plan.runs == 1
    with torch.no_grad():
        want = m(x)
    # the kernel quantizes the activations itself: the same math up to their rounding
    assert sqnr(ref, got) > 35.0
    assert sqnr(want, got) > 30.0
    assert abs(sqnr(want, got) - sqnr(want, ref)) < 1.5


def test_per_token_linears_run_fused_bit_for_bit(mlp: tuple[nn.Module, torch.Tensor]) -> None:
    m, x = mlp
    om = quantized(m, x, "per-token")
    got, ref, fast = run_both(om.graph, x)
    assert [r.kernel for r in fast.plan.regions] == ["torch._int_mm"] * 3
    assert not fast.plan.fallbacks
    assert torch.equal(got, ref)  # the graph's codes and scales, exact int32 accumulation


def test_optimize_checks_what_the_fast_path_runs(mlp: tuple[nn.Module, torch.Tensor]) -> None:
    m, x = mlp
    om = quantized(m, x, "per-tensor")
    mod = om.torch_module()
    assert len(mod.plan.regions) == 3
    with torch.no_grad():
        torch.testing.assert_close(om(x), mod(x))


# ---- hand-built lowered forms ---------------------------------------------------------------

K, N = 32, 24


def weights(seed: int = 0, zb: int = 0) -> tuple[Value, Value, Value]:
    rng = np.random.default_rng(seed)
    wq = rng.integers(-127, 128, (K, N)).astype(np.int8)
    sw = rng.uniform(0.001, 0.01, N).astype(np.float32)
    return constant(wq), constant(np.full(N, zb, np.int8)), constant(sw)


def per_tensor(x: Value, seed: int = 0, zb: int = 0, bias: bool = True) -> Value:
    """The lowered per-tensor form, as passes/quant_lowering.py writes it."""
    q, s, z = op_multi("dynamic_quantize_linear", x)
    wq, zw, sw = weights(seed, zb)
    y = op("mul", op("cast", op("matmul_integer", q, wq, z, zw), to=DType.f32), op("mul", s, sw))
    b = np.random.default_rng(seed + 1).standard_normal(N).astype(np.float32)
    return op("add", y, constant(b)) if bias else y


def graph(shape: tuple[int, ...], build: object) -> tuple[Graph, torch.Tensor]:
    xn = input_node("x", TensorType(shape, DType.f32))
    outs = build(xn.out)  # type: ignore[operator]
    g = Graph([xn], [outs] if isinstance(outs, Value) else list(outs))
    return g, torch.randn(*shape)


def test_rank3_activations_and_no_bias() -> None:
    g, x = graph((2, 5, K), lambda v: per_tensor(v, bias=False))
    got, ref, fast = run_both(g, x)
    assert len(fast.plan.regions) == 1 and fast.plan.regions[0].bias is None
    assert got.shape == ref.shape == (2, 5, N)
    assert sqnr(ref, got) > 35.0


def test_falls_back_with_a_reason_when_the_kernel_does_not_fit() -> None:
    def build(v: Value) -> tuple[Value, ...]:
        asym = per_tensor(v, seed=1, zb=3)  # nonzero weight zero points
        q, s, z = op_multi("dynamic_quantize_linear", op("neg", v))
        wq, zw, sw = weights(2)
        acc = op("matmul_integer", q, wq, z, zw)
        shared = op("mul", op("cast", acc, to=DType.f32), op("mul", s, sw))
        static = op("quantize_linear", v, constant(np.float32(0.05)), constant(np.int8(0)))
        wq3, zw3, sw3 = weights(3)
        st = op("mul", op("cast", op("matmul_integer", static, wq3, constant(np.int8(0)), zw3),
                          to=DType.f32), op("mul", constant(np.float32(0.05)), sw3))
        return asym, shared, acc, st  # acc: the accumulator is also an output

    g, x = graph((6, K), build)
    got, ref, fast = run_both(g, x)
    reasons = sorted(f.reason for f in fast.plan.fallbacks)
    assert not fast.plan.regions and len(reasons) == 3
    assert "not read by one cast to f32 only" in " ".join(reasons)
    assert "zero points are not constant zeros" in " ".join(reasons)
    assert "static quantize_linear" in " ".join(reasons)
    assert all(str(f).startswith("node matmul_integer #") for f in fast.plan.fallbacks)
    for a, b in zip(got, ref):
        assert torch.equal(a, b)  # node by node: the interpreter's ops


def test_a_kernel_torch_cannot_build_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise RuntimeError("no quantized engine")

    monkeypatch.setattr(torch_quant, "_packed", refuse)
    g, x = graph((4, K), per_tensor)
    got, ref, fast = run_both(g, x)
    assert not fast.plan.regions
    (fb,) = fast.plan.fallbacks
    assert "fused kernel cannot be built here: RuntimeError: no quantized engine" in fb.reason
    assert torch.equal(got, ref)


def test_shared_activation_codes_read_outside_a_region() -> None:
    """dynamic_quantize_linear's codes feed a fused linear and a node-by-node one: it still
    runs for the latter, the fused kernel reads x."""
    def build(v: Value) -> tuple[Value, Value]:
        q, s, z = op_multi("dynamic_quantize_linear", v)
        outs = []
        for seed, zb in ((0, 0), (1, 5)):
            wq, zw, sw = weights(seed, zb)
            acc = op("matmul_integer", q, wq, z, zw)
            outs.append(op("mul", op("cast", acc, to=DType.f32), op("mul", s, sw)))
        return outs[0], outs[1]

    g, x = graph((8, K), build)
    (a, b), (ra, rb), fast = run_both(g, x)
    assert len(fast.plan.regions) == 1 and len(fast.plan.fallbacks) == 1
    assert any(st.node is not None and st.node.op == "dynamic_quantize_linear"
               for *_, st in fast.plan.steps)
    assert torch.equal(b, rb) and sqnr(ra, a) > 35.0


def test_seven_bit_activations_where_the_cpu_needs_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without VNNI fbgemm's int16 pair sums saturate: the kernel then quantizes to 7 bits,
    about 6 dB noisier but still the same math."""
    assert isinstance(torch_quant.needs_reduce_range(torch.backends.quantized.engine), bool)
    monkeypatch.setattr(torch_quant, "needs_reduce_range", lambda engine: True)
    g, x = graph((16, K), per_tensor)
    got, ref, fast = run_both(g, x)
    assert "reduce_range" in fast.plan.regions[0].kernel
    assert sqnr(ref, got) > 28.0


def test_fused_kernel_errors_name_the_region() -> None:
    g, _ = graph((4, K), per_tensor)
    f = to_callable(g, check_inputs=False)
    with pytest.raises(GraphOptError, match=r"fused node matmul_integer #\d+: per-tensor int8 "
                                            r"linear \[32, 24\] \+ bias"):
        f(torch.randn(4, K + 1))


def test_non_cpu_inputs_take_the_node_walk() -> None:
    g, x = graph((4, K), per_tensor)
    plan = to_callable(g).plan
    assert plan.accepts({(0, 0): x})
    assert not plan.accepts({(0, 0): torch.empty(4, K, device="meta")})


def test_lean_steps_keep_the_interpreter_semantics() -> None:
    """Without quantized regions the plan is the node walk with less overhead (constants are
    read from the buffers, not run as steps); the results are the same."""
    def build(v: Value) -> tuple[Value, Value]:
        c = constant(np.arange(K, dtype=np.float32))
        h = op("reshape", op("add", v, c), shape=(2, 2, K))
        return op("relu", h), h

    g, x = graph((4, K), build)
    (a, b), (ra, rb), fast = run_both(g, x)
    assert torch.equal(a, ra) and torch.equal(b, rb)
    assert [st.node.op for *_, st in fast.plan.steps] == ["add", "reshape", "relu"]
