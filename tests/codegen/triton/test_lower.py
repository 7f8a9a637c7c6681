"""Partitioning into kernel regions: kinds, epilogues, prologues, no cycles, reasons, cost model."""
from __future__ import annotations

import numpy as np
import torch

from graphopt.codegen.runtime import compile_graph
from graphopt.codegen.triton.lower import lower
from graphopt.ir.graph import Graph
from graphopt.ir.node import constant, op
from graphopt.ir.types import DType
from tests.codegen.helpers import close, inp


def _mlp_block() -> tuple[Graph, list]:
    x = inp("x", (2, 5, 16))
    w = constant(np.random.default_rng(0).standard_normal((16, 24)).astype(np.float32))
    b = constant(np.random.default_rng(1).standard_normal((24,)).astype(np.float32))
    s = constant(np.ones((16,), np.float32))
    h = op("layer_norm", op("mul", x.out, constant(np.float32(2.0))), s, s, axis=2,
           epsilon=1e-5)
    y = op("relu", op("add", op("matmul", h, w), b))
    r = op("reshape", y, shape=(10, 24))
    z = op("softmax", op("sub", r, constant(np.float32(1.0))), axis=1)
    return Graph([x], [z, y]), [x]


def test_regions_and_reasons() -> None:
    g, _ = _mlp_block()
    low = lower(g, "a100")
    kinds = [(r.kind, r.ops) for r in low.regions]
    assert ("reduction", ["mul", "layer_norm"]) in kinds  # prologue fused
    assert ("matmul", ["matmul", "add", "relu"]) in kinds  # bias + activation epilogue
    assert ("reduction", ["sub", "softmax"]) in kinds
    torch_ops = [s.node.op for s in low.steps if s.node is not None]
    assert torch_ops == ["reshape"]
    assert any("no Triton expression" in r for r in low.kept.values())
    summ = low.summary()
    assert summ["kernels"] == 3 and summ["est_fused_s"] < summ["est_unfused_s"]


def test_no_cyclic_regions() -> None:
    # a -> exp -> (reshape: torch) -> add(exp, back) : the add cannot join exp's region, since
    # the path leaves it through the reshape and comes back
    a = inp("a", (4, 4))
    e = op("exp", a.out)
    back = op("reshape", op("reshape", e, shape=(16,)), shape=(4, 4))
    y = op("add", e, back)
    low = lower(Graph([a], [y]), "a100")
    assert [r.ops for r in low.regions] == [["exp"], ["add"]]
    m = compile_graph(Graph([a], [y]), "a100", interpret=True)
    t = torch.randn(4, 4)
    close(m(t), t.exp() * 2, DType.f32)


def test_attention_regions_and_dump(tmp_path) -> None:
    q, kv = inp("q", (1, 2, 1, 64)), inp("kv", (1, 2, 80, 64))
    d = op("attention", q.out, kv.out, kv.out, scale=None, causal=False)
    f = op("attention", kv.out, kv.out, kv.out, scale=None, causal=True)
    low = lower(Graph([q, kv], [d, f]), "h100")
    assert sorted(r.kind for r in low.regions) == ["attention", "decode_attention"]
    files = low.dump(tmp_path)
    assert len(files) == 2 and all(p.suffix == ".py" for p in files)
    assert all("@triton.jit" in p.read_text() for p in files)


def test_quant_matmul_region() -> None:
    x = inp("x", (3, 32))
    w = constant(np.random.default_rng(0).integers(-128, 127, (32, 16)).astype(np.int8))
    s = constant(np.full((16,), 0.01, np.float32))
    y = op("matmul", x.out, op("mul", op("cast", w, to=DType.f32), s))
    g = Graph([x], [y])
    low = lower(g, "a100")
    assert [r.kind for r in low.regions] == ["quant_matmul"] and not any(
        s.node is not None for s in low.steps)
    t = torch.randn(3, 32)
    want = t @ (torch.from_numpy(w.node.const.array).float() * 0.01)
    close(compile_graph(g, "a100", interpret=True)(t), want, DType.f32)
