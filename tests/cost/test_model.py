"""The fusion-aware cost model: rooflines, grouping per target, boundary bytes, no cycles."""
from __future__ import annotations

import numpy as np
import pytest

from graphopt.cost.devices import Device, Fusion, get_device
from graphopt.cost.model import CostModel, Kind, estimate, kind_of
from graphopt.ir.graph import Graph
from graphopt.ir.node import constant, input_node, op, op_multi
from graphopt.ir.types import DType, TensorType

F32 = DType.f32


def _in(name: str, *shape: int):
    return input_node(name, TensorType(shape, F32))


def _w(*shape: int):
    return constant(np.ones(shape, np.float32))


def _toy(fusion: Fusion) -> Device:
    """Round numbers: 1 Gflop/s vector, 10 Gflop/s matrix (efficiency 1), 1 GB/s, 1 us launch."""
    return Device(name="toy", kind="gpu", peak_flops={"f32": 1e10}, vector_flops={"f32": 1e9},
                  mem_bandwidth=1e9, cache_bandwidth=1e9, cache_bytes=0, launch_overhead=1e-6,
                  onchip_bytes=1e6, matmul_efficiency=1.0, fusion=fusion)


GPU = _toy(Fusion())
NOFUSE = _toy(Fusion(pointwise=False, epilogue=False, reduction=False))


def _regions(m: CostModel, g: Graph) -> list[list[str]]:
    gc = m.graph_cost(g, detail=True)
    assert gc.detail is not None
    return [[n.op for n in r.nodes] for r in gc.detail]


def test_single_matmul_is_a_roofline_plus_a_launch() -> None:
    x = _in("x", 64, 32)
    g = Graph([x], [op("matmul", x.out, _w(32, 16))])
    flops = 2 * 64 * 32 * 16
    nbytes = 4 * (64 * 32 + 32 * 16 + 64 * 16)
    expect = max(flops / 1e10, nbytes / 1e9) + 1e-6
    gc = CostModel(GPU).graph_cost(g)
    assert gc.time == pytest.approx(expect)
    assert (gc.flops, gc.bytes, gc.launches) == (flops, nbytes, 1)


def test_pointwise_chain_is_one_kernel_and_interior_tensors_are_free() -> None:
    x = _in("x", 1000)
    y = op("tanh", op("exp", op("relu", x.out)))
    g = Graph([x], [y])
    fused = CostModel(GPU).graph_cost(g)
    assert fused.launches == 1
    assert fused.bytes == 2 * 4000  # read x, write y: the two interior tensors cost nothing
    split = CostModel(NOFUSE).graph_cost(g)
    assert split.launches == 3 and split.bytes == 6 * 4000
    assert split.time > fused.time
    assert CostModel(GPU).summed_time(g) == pytest.approx(split.time)


def test_views_are_free_and_transparent() -> None:
    x = _in("x", 4, 250)
    y = op("exp", op("reshape", op("relu", x.out), shape=(1000,)))
    g = Graph([x], [y])
    assert CostModel(GPU).graph_cost(g).launches == 1  # relu | reshape | exp fuse through it
    assert kind_of("reshape") == Kind.VIEW and kind_of("matmul") == Kind.HEAVY


def test_cpu_epilogues_follow_onnx_runtime() -> None:
    cpu = get_device("cpu")
    x = _in("x", 8, 16)
    mm = op("matmul", x.out, _w(16, 4))
    bias_relu = Graph([x], [op("relu", op("add", mm, _w(4)))])
    assert _regions(CostModel(cpu), bias_relu) == [["matmul", "add", "relu"]]
    # exp is not an ORT epilogue; an add of two activations is not a bias
    assert _regions(CostModel(cpu), Graph([x], [op("exp", mm)])) == [["matmul"], ["exp"]]
    y = _in("y", 8, 4)
    assert len(_regions(CostModel(cpu), Graph([x, y], [op("add", mm, y.out)]))) == 2
    # and pointwise chains do not fuse on the CPU runtime
    assert len(_regions(CostModel(cpu), Graph([y], [op("exp", op("relu", y.out))]))) == 2


def test_gpu_epilogue_needs_the_same_shape() -> None:
    x = _in("x", 8, 16)
    mm = op("matmul", x.out, _w(16, 4))
    g = Graph([x], [op("relu", mm), op("exp", op("reduce_sum", mm, axes=(1,), keepdims=True))])
    regs = _regions(CostModel(GPU), g)
    assert ["matmul", "relu"] in regs
    assert ["reduce_sum", "exp"] in regs  # the reduction keeps its own kernel and epilogue


def test_constant_subgraphs_are_folded_hence_free() -> None:
    x = _in("x", 8, 16)
    w = op("concat", _w(16, 4), _w(16, 4), axis=1)  # constant after folding
    g = Graph([x], [op("matmul", x.out, w)])
    gc = CostModel(GPU).graph_cost(g, detail=True)
    assert gc.launches == 1 and [n.op for n in gc.detail[0].nodes] == ["matmul"]


def test_fusion_never_makes_a_cycle() -> None:
    # a (pointwise) -> matmul -> reduce_sum -> c = a * s. c may not join a's kernel: that kernel
    # would both feed and read the matmul
    x = _in("x", 8, 8)
    a = op("exp", x.out)
    s = op("reduce_sum", op("matmul", a, _w(8, 8)), axes=(1,), keepdims=True)
    c = op("mul", a, s)
    regs = _regions(CostModel(GPU), Graph([x], [c]))
    region_of = {o: i for i, r in enumerate(regs) for o in r}
    assert region_of["exp"] != region_of["mul"]
    assert sorted(sum(regs, [])) == ["exp", "matmul", "mul", "reduce_sum"]


def test_reduction_fuses_prologue_when_the_row_fits_on_chip() -> None:
    x = _in("x", 4, 64)
    g = Graph([x], [op("softmax", op("mul", x.out, _w(1)), axis=1)])
    assert len(_regions(CostModel(GPU), g)) == 1
    tiny = _toy(Fusion())
    tiny = Device(**{**tiny.__dict__, "onchip_bytes": 16.0})
    assert len(_regions(CostModel(tiny), g)) == 2


def test_graph_outputs_inside_a_region_are_written() -> None:
    x = _in("x", 100)
    r = op("relu", x.out)
    g = Graph([x], [r, op("exp", r)])
    gc = CostModel(GPU).graph_cost(g)
    assert gc.launches == 1 and gc.bytes == 3 * 400  # x in, relu and exp out


def test_estimate_is_deterministic_and_positive_for_every_target() -> None:
    x = _in("x", 2, 8, 32)
    h = op("layer_norm", x.out, _w(32), _w(32), axis=2, epsilon=1e-5)
    h = op("gelu", op("add", op("matmul", h, _w(32, 64)), _w(64)), approximate="none")
    g = Graph([x], [op("matmul", h, _w(64, 32))])
    for t in ("cpu", "a100", "h100", "h200"):
        a, b = estimate(g, t), estimate(g, t)
        assert a.time == b.time > 0
    assert estimate(g, "h200").time <= estimate(g, "a100").time
    assert "matmul" in CostModel("h100").explain(g)


def test_contiguous_splits_are_views_where_the_runtime_allows() -> None:
    x = _in("x", 1, 8, 4, 4)
    a, b = op_multi("split", x.out, axis=1, sizes=(3, 5))
    g = Graph([x], [op("relu", a), op("exp", b)])
    gpu = CostModel("h100").graph_cost(g, detail=True)
    assert [[n.op for n in r.nodes] for r in gpu.detail] == [["relu"], ["exp"]]
    assert gpu.bytes == 2 * 4 * 8 * 16  # each piece read once, written once
    cpu = CostModel("cpu").graph_cost(g)  # ONNX Runtime's Split copies
    assert cpu.launches == 3
    y = _in("y", 2, 8)  # pieces of a split on axis 1 of [2, 8] are strided: computed, not views
    c, d = op_multi("split", y.out, axis=1, sizes=(4, 4))
    strided = CostModel("h100").graph_cost(Graph([y], [op("relu", c), op("exp", d)]), detail=True)
    assert [[n.op for n in r.nodes] for r in strided.detail] == [["split", "relu", "exp"]]
