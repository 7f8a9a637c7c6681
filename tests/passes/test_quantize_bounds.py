"""Hypothesis: random linear stacks, quantized by optimize() and run in ONNX Runtime, stay
within each mode's analytic error bound (compiler/quant/numerics.py):

* weight-only: |x W - x deq(W)| <= |x| @ e_W, with e_W the per-weight bound (half a step, plus
  the saturation of a clipped int4 group; NF4: half the gap around the code);
* two stacked weight-only linears: |x W1 W2 - x Ŵ1 Ŵ2| <= |x| e_1 |Ŵ2| + |x W1| e_2;
* W8A8 (activations u8 per tensor): (s_x / 2) * sum_k |Ŵ_kn| + |x| @ e_W.

Each bound gets f32 evaluation slack (relative 1e-5 of |x| |W1| |W2|)."""
from __future__ import annotations

import numpy as np
import onnx
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.quant import numerics as nx
from graphopt.quant.config import QuantConfig
from graphopt.quant.nf4 import nf4_tensor


def _stack(ws: list[np.ndarray], m: int) -> onnx.ModelProto:
    nodes, inits, cur = [], [], "x"
    for i, w in enumerate(ws):
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [cur, f"w{i}"], [f"y{i}"]))
        cur = f"y{i}"
    g = helper.make_graph(nodes, "stack",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, ws[0].shape[0]])],
                          [helper.make_tensor_value_info(cur, TensorProto.FLOAT,
                                                         [m, ws[-1].shape[1]])], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _quantized(w: np.ndarray, mode: str) -> object:
    if mode in ("int8-weight", "int8"):
        return nx.quantize_absmax(w, bits=8, axis=1)
    if mode == "int4":
        return nx.quantize_zeropoint(w, bits=4, axis=0, group_size=32, clip=True)
    return nf4_tensor(w, block=64, super_block=256)


def _run(ws: list[np.ndarray], x: np.ndarray, mode: str) -> np.ndarray:
    cfg = QuantConfig(mode, use_cost_model=False, min_weight_elements=0, group_size=32,
                      max_error_db=-1000.0)  # the bound is the test, not the budget
    om = graphopt.optimize(_stack(ws, x.shape[0]), quantize=cfg, calibration=[{"x": x}],
                           inputs={"x": x}, budget=0)
    assert om.report["quantization"]["summary"]["quantized"] == len(ws)
    return np.asarray(om(x), dtype=np.float64)


dims = st.sampled_from([64, 128])


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(["int8-weight", "int4", "nf4"]), dims, st.integers(1, 40),
       st.integers(2, 6), st.integers(0, 10_000))
def test_weight_only_linear_within_bound(mode: str, k: int, n: int, m: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((k, n)) * rng.uniform(0.01, 2.0)).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    y = _run([w], x, mode)
    qt = _quantized(w, mode)
    bound = nx.matmul_error_bound(x, qt)
    slack = 1e-5 * (np.abs(x) @ np.abs(w)) + 1e-6
    assert np.all(np.abs(x.astype(np.float64) @ w - y) <= bound + slack)


@settings(max_examples=8, deadline=None)
@given(st.sampled_from(["int8-weight", "int4"]), st.integers(0, 10_000))
def test_two_stacked_linears_within_propagated_bound(mode: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((64, 64)) / 8).astype(np.float32)
    w2 = (rng.standard_normal((64, 16)) / 8).astype(np.float32)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    y = _run([w1, w2], x, mode)
    q1, q2 = _quantized(w1, mode), _quantized(w2, mode)
    e1, e2 = (np.asarray(q.error_bound(), np.float64) for q in (q1, q2))
    ax = np.abs(x.astype(np.float64))
    bound = ax @ e1 @ np.abs(q2.dequantize()) + np.abs(x @ w1.astype(np.float64)) @ e2
    slack = 1e-5 * (ax @ np.abs(w1) @ np.abs(w2)) + 1e-6
    assert np.all(np.abs(x.astype(np.float64) @ w1 @ w2 - y) <= bound + slack)


@settings(max_examples=8, deadline=None)
@given(dims, st.integers(1, 24), st.integers(2, 6), st.integers(0, 10_000))
def test_w8a8_dynamic_within_bound(k: int, n: int, m: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((k, n)) / 4).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    y = _run([w], x, "int8")
    qt = _quantized(w, "int8")
    xs = nx.dynamic_quantize_u8(x).scale
    bound = nx.matmul_error_bound_w8a8(x, qt, xs)
    slack = 1e-5 * (np.abs(x) @ np.abs(w)) + 1e-6
    assert np.all(np.abs(x.astype(np.float64) @ w - y) <= bound + slack)
