"""attention: GQA, causal (top-left), bool / additive masks with fully masked rows, scale
normalization; ONNX Attention import (4-D and 3-D) against ONNX Runtime; export as ONNX Attention
(opset 23) and as a MatMul/Softmax composition (symbolic lengths, GQA); aten sdpa variants
against torch; z3 form against the composition of the ops it fuses."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from tests.ops.frontend_fakes import check_aten, check_onnx_node, export_run, lift_onnx
from graphopt.errors import ShapeError
from graphopt.ir.graph import Graph
from graphopt.ir.interp import run
from graphopt.ir.node import Attrs, input_node, op
from graphopt.ir.types import DType, TensorType
from graphopt.ops.attention import attention_numpy
from graphopt.ops.registry import Unsupported, get_op

F32 = DType.f32
RNG = np.random.default_rng(3)
TOL = dict(rtol=1e-4, atol=1e-5)


def r(*s: int) -> np.ndarray:
    return RNG.standard_normal(s).astype(np.float32)


def v(name: str, *shape: Any, dt: DType = F32) -> Any:
    return input_node(name, TensorType(tuple(shape), dt)).out


def naive(q: np.ndarray, k: np.ndarray, vv: np.ndarray, keep: np.ndarray | None = None,
          bias: np.ndarray | None = None, scale: float | None = None) -> np.ndarray:
    """Loop-by-loop reference (GQA by head index), for cross-checking attention_numpy."""
    B, H, S, D = q.shape
    Hkv = k.shape[1]
    out = np.zeros((B, H, S, vv.shape[-1]), np.float64)
    sc = 1 / np.sqrt(D) if scale is None else scale
    for b in range(B):
        for h in range(H):
            kh = h // (H // Hkv)
            for i in range(S):
                s = (k[b, kh] @ q[b, h, i]).astype(np.float64) * sc
                if bias is not None:
                    s = s + np.broadcast_to(bias, (B, H, S, k.shape[2]))[b, h, i]
                ok = np.ones(k.shape[2], bool) if keep is None else \
                    np.broadcast_to(keep, (B, H, S, k.shape[2]))[b, h, i]
                ok = ok & np.isfinite(s)
                if not ok.any():
                    continue
                e = np.where(ok, np.exp(s - s[ok].max()), 0)
                out[b, h, i] = (e / e.sum()) @ vv[b, kh]
    return out.astype(np.float32)


def test_reference_matches_naive_gqa_causal_masks() -> None:
    q, k, vv = r(2, 4, 3, 5), r(2, 2, 6, 5), r(2, 2, 6, 3)
    causal = np.tril(np.ones((3, 6), bool))
    np.testing.assert_allclose(attention_numpy(q, k, vv, None, None, True),
                               naive(q, k, vv, keep=causal), **TOL)
    m = RNG.random((2, 1, 3, 6)) > 0.5
    m[0, 0, 1] = False
    got = attention_numpy(q, k, vv, m, 0.3, False)
    np.testing.assert_allclose(got, naive(q, k, vv, keep=m, scale=0.3), **TOL)
    assert np.all(got[0, :, 1] == 0)


def test_infer_and_scale_normalization() -> None:
    y = op("attention", v("q", "b", 8, "s", 16), v("k", "b", 2, "t", 16), v("v", "b", 2, "t", 4),
           scale=0.25, causal=True)
    assert y.type == TensorType(("b", 8, "s", 4), F32)
    assert y.node.attrs["scale"] is None  # 0.25 == 1/sqrt(16): the default, spelled once
    assert op("attention", v("q", 1, 2, 3, 16), v("k", 1, 2, 3, 16), v("v", 1, 2, 3, 16),
              scale=None).node is \
        op("attention", v("q", 1, 2, 3, 16), v("k", 1, 2, 3, 16), v("v", 1, 2, 3, 16),
           scale=0.25).node
    with pytest.raises(ShapeError, match="multiple"):
        op("attention", v("q", 1, 3, 2, 4), v("k", 1, 2, 2, 4), v("v", 1, 2, 2, 4))
    with pytest.raises(ShapeError, match="not broadcast"):
        op("attention", v("q", 1, 2, 3, 4), v("k", 1, 2, 5, 4), v("v", 1, 2, 5, 4),
           v("m", 3, 3, dt=DType.bool))
    with pytest.raises(ShapeError, match="mask must be bool or f32"):
        op("attention", v("q", 1, 2, 3, 4), v("k", 1, 2, 5, 4), v("v", 1, 2, 5, 4),
           v("m", 3, 5, dt=DType.f16))


def test_torch_zero_rows_for_additive_minus_inf() -> None:
    q, k, vv = r(1, 2, 3, 4), r(1, 2, 5, 4), r(1, 2, 5, 4)
    m = np.zeros((3, 5), np.float32)
    m[2] = -np.inf
    node = op("attention", v("q", 1, 2, 3, 4), v("k", 1, 2, 5, 4), v("v", 1, 2, 5, 4),
              v("m", 3, 5)).node
    want = get_op("attention").numpy([q, k, vv, m], node.attrs)[0]
    assert np.all(want[:, :, 2] == 0) and np.isfinite(want).all()
    got = get_op("attention").torch([torch.from_numpy(a) for a in (q, k, vv, m)], node.attrs)[0]
    np.testing.assert_allclose(got.numpy(), want, **TOL)


# ---- ONNX import --------------------------------------------------------------------------------

@pytest.mark.parametrize("case", [
    dict(shapes=[(2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 3)], attrs={}),
    dict(shapes=[(1, 4, 5, 4), (1, 2, 5, 4), (1, 2, 5, 4)], attrs={"is_causal": 1}),
    dict(shapes=[(1, 4, 3, 4), (1, 1, 6, 4), (1, 1, 6, 2)], attrs={"is_causal": 1,
                                                                   "scale": 0.4}),
    dict(shapes=[(1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 4)], attrs={}, mask="bool"),
    dict(shapes=[(1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 4)], attrs={"is_causal": 1},
         mask="float"),
])
def test_onnx_attention_4d(case: dict) -> None:
    arrays = [r(*s) for s in case["shapes"]]
    S, T = case["shapes"][0][2], case["shapes"][1][2]
    if case.get("mask") == "bool":
        m = RNG.random((1, 1, S, T)) > 0.4
        m[..., 0, :] = False
        arrays.append(m)
    elif case.get("mask") == "float":
        arrays.append(r(S, T))
    g = check_onnx_node("Attention", arrays, case["attrs"], 23, **TOL)
    assert g.op_counts() == {"attention": 1}


def test_onnx_attention_3d_heads() -> None:
    q, k, vv = r(2, 3, 4 * 2), r(2, 5, 2 * 2), r(2, 5, 2 * 3)
    g = check_onnx_node("Attention", [q, k, vv], {"q_num_heads": 4, "kv_num_heads": 2,
                                                  "is_causal": 1}, 23, **TOL)
    assert g.outputs[0].type.shape == (2, 3, 12)


def test_onnx_attention_declines() -> None:
    q, k, vv = v("q", 1, 2, 3, 4), v("k", 1, 2, 5, 4), v("v", 1, 2, 5, 4)
    with pytest.raises(Unsupported, match="softcap"):
        lift_onnx("Attention", [q, k, vv], {"softcap": 2.0}, 23)
    with pytest.raises(Unsupported, match="past"):
        lift_onnx("Attention", [q, k, vv, None, v("pk", 1, 2, 2, 4), v("pv", 1, 2, 2, 4)], {},
                  23, num_outputs=1)
    with pytest.raises(Unsupported, match="present"):
        lift_onnx("Attention", [q, k, vv], {}, 23, num_outputs=3)


# ---- export -------------------------------------------------------------------------------------

@pytest.mark.parametrize("opset", [13, 18, 23])
@pytest.mark.parametrize("mask", [None, "bool", "float"])
def test_export_symbolic_lengths_gqa_causal(opset: int, mask: str | None) -> None:
    qn = input_node("q", TensorType(("b", 4, "s", 4), F32))
    kn = input_node("k", TensorType(("b", 2, "t", 4), F32))
    vn = input_node("v", TensorType(("b", 2, "t", 3), F32))
    ins = [qn, kn, vn]
    if mask is not None:
        ins.append(input_node("m", TensorType(("s", "t"), DType.bool if mask == "bool" else F32)))
    y = op("attention", *[n.out for n in ins], scale=0.6, causal=mask != "float")
    g = Graph(ins, [y])
    for S, T in ((3, 5), (4, 4)):
        feeds = {"q": r(2, 4, S, 4), "k": r(2, 2, T, 4), "v": r(2, 2, T, 3)}
        if mask == "bool":
            m = RNG.random((S, T)) > 0.5
            m[1] = False
            feeds["m"] = m
        elif mask == "float":
            m = r(S, T)
            m[0] = -np.inf
            feeds["m"] = m
        (want,) = run(g, **feeds)
        (got,) = export_run(g, opset, feeds)
        np.testing.assert_allclose(got, want, **TOL)


# ---- aten ---------------------------------------------------------------------------------------

def test_aten_sdpa() -> None:
    q, k, vv = torch.randn(2, 4, 3, 8), torch.randn(2, 4, 5, 8), torch.randn(2, 4, 5, 6)
    target = "aten.scaled_dot_product_attention.default"
    check_aten(target, (q, k, vv), **TOL)
    check_aten(target, (q, k, vv), {"is_causal": True, "scale": 0.3}, **TOL)
    check_aten(target, (q, k, vv, torch.rand(3, 5) > 0.3), **TOL)
    check_aten(target, (q, k, vv, torch.randn(2, 1, 3, 5)), **TOL)
    check_aten(target, (q, k[:, :2], vv[:, :2]), {"enable_gqa": True, "is_causal": True}, **TOL)
    with pytest.raises(Unsupported, match="dropout"):
        check_aten(target, (q, k, vv), {"dropout_p": 0.0001})


def test_aten_sdpa_internal_variants() -> None:
    q, k, vv = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)
    check_aten("aten._scaled_dot_product_flash_attention_for_cpu.default", (q, k, vv, 0.0, True),
               used_outputs={0}, **TOL)
    check_aten("aten._scaled_dot_product_attention_math.default", (q, k, vv),
               {"scale": 0.5}, used_outputs={0}, **TOL)
    with pytest.raises(Unsupported, match="beyond the first"):
        check_aten("aten._scaled_dot_product_attention_math.default", (q, k, vv),
                   used_outputs={0, 1})


# ---- z3 ------------------------------------------------------------------------------------------

def _reals(name: str, *shape: int) -> np.ndarray:
    import z3

    out = np.empty(shape, dtype=object)
    for idx in np.ndindex(*shape):
        out[idx] = z3.Real(f"{name}{'_'.join(map(str, idx))}")
    return out


def test_symbolic_equals_matmul_softmax_composition() -> None:
    """attention's z3 form is provably the composition matmul -> mul -> softmax -> matmul
    written with the ops' own z3 forms (the equivalence a fusion rule relies on)."""
    import z3

    q, k, vv = _reals("q", 1, 1, 2, 2), _reals("k", 1, 1, 2, 2), _reals("v", 1, 1, 2, 1)
    a = Attrs({"scale": 0.5, "causal": False})
    (y,) = get_op("attention").symbolic([q, k, vv], a)
    (kt,) = get_op("transpose").symbolic([k], Attrs({"perm": (0, 1, 3, 2)}))
    (s,) = get_op("matmul").symbolic([q, kt], Attrs())
    (s,) = get_op("mul").symbolic([s, np.array(z3.RealVal(0.5), dtype=object)], Attrs())
    (p,) = get_op("softmax").symbolic([s], Attrs({"axis": 3}))
    (want,) = get_op("matmul").symbolic([p, vv], Attrs())
    solver = z3.Solver()
    solver.add(z3.Or(*[y[i] != want[i] for i in np.ndindex(*y.shape)]))
    assert solver.check() == z3.unsat


def test_symbolic_causal_row_ignores_future_keys() -> None:
    import z3

    from graphopt.ops.symbolic import uf

    q, k, vv = _reals("q", 1, 1, 2, 1), _reals("k", 1, 1, 2, 1), _reals("v", 1, 1, 2, 1)
    (y,) = get_op("attention").symbolic([q, k, vv], Attrs({"scale": 1.0, "causal": True}))
    exp = uf("exp")
    e0 = exp(q[0, 0, 0, 0] * k[0, 0, 0, 0])
    solver = z3.Solver()
    solver.add(exp(q[0, 0, 0, 0] * k[0, 0, 0, 0]) > 0)
    solver.add(y[0, 0, 0, 0] != e0 / e0 * vv[0, 0, 0, 0])
    assert solver.check() == z3.unsat


def test_additive_mask_with_fully_masked_rows_exports_exactly_at_opset_23() -> None:
    """ONNX Runtime's Attention zeroes rows whose additive mask is the lowest float everywhere;
    softmax(QK^T*s + mask) averages them. f32 masks get one Attention node after the lowest value
    is moved one ulp up (shared by every block reading the mask); f16 masks keep the composition."""
    import onnxruntime as ort

    from graphopt.frontends import onnx_export
    from graphopt.ir.graph import Graph
    from graphopt.ir.interp import run
    from graphopt.ir.node import input_node, op
    from graphopt.ir.types import DType, TensorType

    rng = np.random.default_rng(0)
    for np_dt, dt in ((np.float32, DType.f32), (np.float16, DType.f16)):
        x = rng.standard_normal((2, 2, 3, 4)).astype(np_dt)
        t = TensorType((2, 2, 3, 4), dt)
        q, k, v = (input_node(n, t) for n in "qkv")
        m_in = input_node("m", TensorType((2, 1, 3, 3), dt))
        lo = np.finfo(np_dt).min
        m = np.zeros((2, 1, 3, 3), np_dt)
        m[0, :, 0, :] = lo  # row 0 of batch 0 fully masked
        m[1, :, :, 2] = lo  # key 2 masked in batch 1
        a1 = op("attention", q.out, k.out, v.out, m_in.out, scale=None, causal=False)
        a2 = op("attention", a1, k.out, v.out, m_in.out, scale=0.3, causal=False)  # same mask
        g = Graph([q, k, v, m_in], [a2])
        model = onnx_export.to_model(g, opset=23)
        types = [n.op_type for n in model.graph.node]
        if dt == DType.f32:
            assert types.count("Attention") == 2 and types.count("Where") == 1, types
        else:
            assert "Attention" not in types, types
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        feeds = {"q": x, "k": 2 * x, "v": 3 * x, "m": m}
        got = sess.run(None, feeds)[0].astype(np.float64)
        want = run(g, x, 2 * x, 3 * x, m)[0].astype(np.float64)
        tol = 1e-5 if dt == DType.f32 else 2e-2
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
        if dt == DType.f32:  # f16: lowest + score rounds unevenly, so the row is not uniform
            # the fully masked row is the mean of v over the keys (softmax of equal scores)
            np.testing.assert_allclose(got[0, :, 0], 3 * x.astype(np.float64)[0].mean(axis=1),
                                       rtol=tol, atol=tol)
