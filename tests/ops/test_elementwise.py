"""Tricky semantics of the elementwise ops: integer division, Mod, rounding, clip bounds, casts,
ONNX import across opsets, export forms per opset, aten promotion, z3 semantics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from graphopt.errors import ShapeError
from graphopt.ir.node import input_node, op
from graphopt.ir.types import DType, TensorType
from graphopt.ops.registry import NotSymbolic, get_op

from tests.ops.op_testing import (check_export, check_import, check_lift, graph_of, onnx_model,
                        ops_of)


def _in(name: str, shape: tuple, dt: DType = DType.f32):
    return input_node(name, TensorType(shape, dt)).out


# ---- infer ---------------------------------------------------------------------------------------

def test_binary_infer_broadcasts_symbolic_dims() -> None:
    a = _in("a", ("batch", 1, 4))
    b = _in("b", ("seq", 1))
    assert op("add", a, b).type == TensorType(("batch", "seq", 4), DType.f32)
    assert op("less", a, b).type == TensorType(("batch", "seq", 4), DType.bool)


def test_binary_infer_errors_name_op_and_types() -> None:
    with pytest.raises(ShapeError, match=r"add.*different dtypes.*f32\[2\].*i64\[2\]"):
        op("add", _in("a", (2,)), _in("b", (2,), DType.i64))
    with pytest.raises(ShapeError, match=r"mul.*do not broadcast"):
        op("mul", _in("a", (2, 3)), _in("b", (4,)))
    with pytest.raises(ShapeError, match=r"add: dtype bool not supported"):
        op("add", _in("a", (2,), DType.bool), _in("b", (2,), DType.bool))
    with pytest.raises(ShapeError, match=r"and: dtype f32 not supported"):
        op("and", _in("a", (2,)), _in("b", (2,)))
    with pytest.raises(ShapeError, match=r"exp: dtype i32 not supported"):
        op("exp", _in("a", (2,), DType.i32))
    with pytest.raises(ShapeError, match=r"where: condition must be bool"):
        op("where", _in("c", (2,)), _in("a", (2,)), _in("b", (2,)))


def test_attr_normalization() -> None:
    x = _in("x", (3,))
    assert dict(op("clip", x, min=-math.inf, max=2).node.attrs) == {"min": None, "max": 2.0}
    xi = _in("xi", (3,), DType.i32)
    assert dict(op("clip", xi, min=-2.0).node.attrs) == {"min": -2, "max": None}
    with pytest.raises(ShapeError, match="clip: min=0.5 is not an integer"):
        op("clip", xi, min=0.5)
    assert op("cast", x, to="f16").node.attrs["to"] is DType.f16
    assert dict(op("leaky_relu", x).node.attrs) == {"alpha": 0.01}
    assert op("gelu", x).node is op("gelu", x, approximate="none").node  # hash-consed
    with pytest.raises(ShapeError, match="approximate"):
        op("gelu", x, approximate="fast")
    with pytest.raises(ShapeError, match="unknown attribute"):
        op("exp", x, alpha=1.0)


# ---- numeric semantics ---------------------------------------------------------------------------

def test_integer_div_truncates_toward_zero() -> None:
    a = np.array([-7, 7, -7, 7, 0, -1], np.int32)
    b = np.array([2, -2, -2, 2, -3, 5], np.int32)
    want = np.array([-3, -3, 3, 3, 0, 0], np.int32)
    d = get_op("div")
    np.testing.assert_array_equal(d.numpy([a, b], {})[0], want)
    np.testing.assert_array_equal(d.torch([torch.from_numpy(a), torch.from_numpy(b)], {})[0],
                                  want)
    g, feeds = graph_of("div", [a, b])
    check_export(g, feeds, 18)


@pytest.mark.parametrize("fmod", [0, 1])
def test_mod_signs(fmod: int) -> None:
    a = np.array([-7, 7, -7, 7, 6], np.int64)
    b = np.array([3, -3, -3, 3, -3], np.int64)
    want = np.array([-1, 1, -1, 1, 0]) if fmod else np.array([2, -2, -1, 1, 0])
    m = get_op("mod")
    attrs = m.normalize_attrs((), _attrs(fmod=fmod))
    np.testing.assert_array_equal(m.numpy([a, b], attrs)[0], want)
    np.testing.assert_array_equal(m.torch([torch.from_numpy(a), torch.from_numpy(b)], attrs)[0],
                                  want)
    g, feeds = graph_of("mod", [a, b], fmod=fmod)
    check_export(g, feeds, 18)
    af, bf = a.astype(np.float32) + 0.5, b.astype(np.float32)
    g, feeds = graph_of("mod", [af, bf], fmod=fmod)
    types = check_export(g, feeds, 18)
    assert types == (["Mod"] if fmod else ["Div", "Floor", "Mul", "Sub"])


def test_onnx_mod_float_fmod0_before_opset28_stays_opaque() -> None:
    x = np.array([1.5, -2.5], np.float32)
    m = onnx_model("Mod", {"a": x, "b": x}, ["a", "b"], 13, fmod=1)
    check_import(m, {"a": x, "b": x[::-1].copy()}, {"mod": 1})
    from graphopt.frontends.onnx import load_with_report

    bad = onnx_model("Mod", {"a": x, "b": x}, ["a", "b"], 13)
    g, report = load_with_report(bad, check=False)
    assert list(ops_of(g)) == ["opaque:Mod"]
    assert "fmod=0 on floats" in report.summary()


def test_round_half_to_even_everywhere() -> None:
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5], np.float32)
    want = np.array([-2, -2, 0, 0, 2, 2, 4], np.float32)
    r = get_op("round")
    np.testing.assert_array_equal(r.numpy([x], {})[0], want)
    np.testing.assert_array_equal(r.torch([torch.from_numpy(x)], {})[0].numpy(), want)
    g, feeds = graph_of("round", [x])
    check_export(g, feeds, 18)
    import z3

    v = z3.Real("v")
    (sym,) = r.symbolic([np.array([v], dtype=object)], {})
    for xi, wi in zip(x, want):
        got = z3.simplify(z3.substitute(sym[0], (v, z3.RealVal(float(xi)))))
        assert float(got.as_fraction()) == wi


def test_clip_min_above_max_gives_max() -> None:
    x = np.array([-3.0, 0.0, 3.0], np.float32)
    g, feeds = graph_of("clip", [x], min=1.0, max=-1.0)
    assert list(check_export(g, feeds, 18)) == ["Clip"]
    from graphopt.ir.interp import run

    np.testing.assert_array_equal(run(g, x)[0], [-1, -1, -1])


def test_cast_semantics_and_symbolic() -> None:
    c = get_op("cast")
    x = np.array([-1.7, -0.2, 0.0, 0.6, 2.9], np.float32)
    np.testing.assert_array_equal(c.numpy([x], {"to": DType.i32})[0], [-1, 0, 0, 0, 2])
    np.testing.assert_array_equal(c.numpy([x], {"to": DType.bool})[0], [1, 1, 0, 1, 1])
    import z3

    r = z3.Real("r")
    with pytest.raises(NotSymbolic):
        c.symbolic([np.array([r], dtype=object)], {"to": DType.i32})
    (b,) = c.symbolic([np.array([r], dtype=object)], {"to": DType.bool})
    assert z3.is_bool(b[0])
    (w,) = c.symbolic([np.array([r], dtype=object)], {"to": DType.f64})
    assert w[0].eq(r)  # widening is exact
    (n,) = c.symbolic([np.array([r], dtype=object)], {"to": DType.f16})
    assert not n[0].eq(r)  # narrowing is not the identity


# ---- z3 semantics --------------------------------------------------------------------------------

def _prove(claim) -> bool:
    import z3

    s = z3.Solver()
    s.add(z3.Not(claim))
    return s.check() == z3.unsat


def test_symbolic_exact_ops_prove_identities() -> None:
    import z3

    a, b, c = z3.Reals("a b c")
    A, B = np.array([a], dtype=object), np.array([b], dtype=object)
    mx = get_op("maximum").symbolic([A, B], {})[0][0]
    mn = get_op("minimum").symbolic([A, B], {})[0][0]
    assert _prove(mx + mn == a + b)
    ab = get_op("abs").symbolic([A], {})[0][0]
    assert _prove(ab == mx - mn) is False  # not an identity: checks the prover is not vacuous
    assert _prove(get_op("abs").symbolic([np.array([a - b], dtype=object)], {})[0][0] == mx - mn)
    cond = get_op("greater").symbolic([A, B], {})[0]
    w = get_op("where").symbolic([cond, A, B], {})[0][0]
    assert _prove(w == mx)
    clip = get_op("clip").symbolic([A], {"min": -1.0, "max": 1.0})[0][0]
    assert _prove(z3.And(clip >= -1, clip <= 1))
    hs = get_op("hard_sigmoid").symbolic([A], {"alpha": 0.2, "beta": 0.5})[0][0]
    assert _prove(z3.And(hs >= 0, hs <= 1))
    del c


def test_symbolic_integer_div_and_mod_are_exact() -> None:
    import z3

    a, b = z3.Ints("a b")
    A, B = np.array([a], dtype=object), np.array([b], dtype=object)
    q = get_op("div").symbolic([A, B], {})[0][0]
    r = get_op("mod").symbolic([A, B], {"fmod": 1})[0][0]
    assert _prove(z3.Implies(b != 0, a == q * b + r))
    r0 = get_op("mod").symbolic([A, B], {"fmod": 0})[0][0]
    assert _prove(z3.Implies(b > 0, z3.And(r0 >= 0, r0 < b)))
    assert _prove(z3.Implies(b < 0, z3.And(r0 <= 0, r0 > b)))


def test_symbolic_nonlinear_ops_use_shared_ufs() -> None:
    import z3

    x = z3.Real("x")
    X = np.array([x], dtype=object)
    rs = get_op("rsqrt").symbolic([X], {})[0][0]
    sq = get_op("sqrt").symbolic([X], {})[0][0]
    rc = get_op("reciprocal").symbolic([np.array([sq], dtype=object)], {})[0][0]
    assert _prove(rs == rc)  # rsqrt(x) == reciprocal(sqrt(x)) is provable
    si = get_op("silu").symbolic([X], {})[0][0]
    sg = get_op("sigmoid").symbolic([X], {})[0][0]
    assert _prove(si == x * sg)


# ---- ONNX import across opsets -------------------------------------------------------------------

def test_onnx_clip_attrs_before_11_inputs_after() -> None:
    x = np.linspace(-3, 3, 7).astype(np.float32)
    m6 = onnx_model("Clip", {"x": x}, ["x"], 6, min=-1.0, max=2.0)
    g = check_import(m6, {"x": x}, {"clip": 1})
    assert dict(g.nodes[-1].attrs) == {"min": -1.0, "max": 2.0}
    lo, hi = np.array(-1.0, np.float32), np.array(2.0, np.float32)
    m13 = onnx_model("Clip", {"x": x}, ["x", "", "hi"], 13, consts={"hi": hi})
    g = check_import(m13, {"x": x}, {"clip": 1})
    assert dict(g.nodes[-1].attrs) == {"min": None, "max": 2.0}
    m13b = onnx_model("Clip", {"x": x, "lo": lo}, ["x", "lo"], 13)  # bound computed at run time
    check_import(m13b, {"x": x, "lo": lo}, {"opaque:Clip": 1})
    xi = np.arange(-4, 4, dtype=np.int64)
    m13i = onnx_model("Clip", {"x": xi}, ["x", "lo"], 13, consts={"lo": np.array(-2)})
    check_import(m13i, {"x": xi}, {"clip": 1})


def test_onnx_binary_legacy_broadcast_and_mixed_pow() -> None:
    a = np.ones((2, 3), np.float32)
    b = np.arange(3, dtype=np.float32)
    m = onnx_model("Add", {"a": a, "b": b}, ["a", "b"], 6, broadcast=1)
    check_import(m, {"a": a, "b": b}, {"opaque:Add": 1}, ort=False)
    m = onnx_model("Add", {"a": a, "b": a}, ["a", "b"], 6)
    check_import(m, {"a": a, "b": a * 2}, {"add": 1}, ort=False)
    e = np.array([2, 3, 1], np.int64)
    m = onnx_model("Pow", {"a": b, "e": e}, ["a", "e"], 15)
    check_import(m, {"a": b, "e": e}, {"opaque:Pow": 1})
    m = onnx_model("Pow", {"a": b, "e": b}, ["a", "e"], 15)
    check_import(m, {"a": b + 1, "e": b}, {"pow": 1})


def test_onnx_variadic_max_sum() -> None:
    a, b, c = (np.random.default_rng(i).standard_normal((2, 3)).astype(np.float32)
               for i in range(3))
    m = onnx_model("Max", {"a": a, "b": b, "c": c[0]}, ["a", "b", "c"], 13)
    check_import(m, {"a": a, "b": b, "c": c[0]}, {"maximum": 2})
    m = onnx_model("Sum", {"a": a}, ["a"], 13)
    check_import(m, {"a": a}, {"identity": 1})
    m = onnx_model("Sum", {"a": a, "b": b, "c": c}, ["a", "b", "c"], 13)
    check_import(m, {"a": a, "b": b, "c": c}, {"add": 2})


def test_onnx_cast_and_unary_with_attrs() -> None:
    x = np.array([-1.7, -0.2, 0.6, 2.9], np.float32)
    m = onnx_model("Cast", {"x": x}, ["x"], 19, to=6, outputs=[("y", np.int32)])
    check_import(m, {"x": x}, {"cast": 1})
    m = onnx_model("LeakyRelu", {"x": x}, ["x"], 16, alpha=0.3)
    g = check_import(m, {"x": x}, {"leaky_relu": 1})
    assert g.nodes[-1].attrs["alpha"] == pytest.approx(0.3)
    m = onnx_model("HardSigmoid", {"x": x}, ["x"], 13)
    check_import(m, {"x": x}, {"hard_sigmoid": 1})
    m = onnx_model("Gelu", {"x": x}, ["x"], 20, approximate="tanh")
    check_import(m, {"x": x}, {"gelu": 1}, rtol=1e-5, atol=1e-6)
    m = onnx_model("Relu", {"x": x}, ["x"], 1, consumed_inputs=[0],
                   outputs=[("y", None, x.shape)])
    check_import(m, {"x": x}, {"relu": 1}, ort=False)


# ---- ONNX export forms per opset -----------------------------------------------------------------

@pytest.mark.parametrize("approx", ["none", "tanh"])
def test_gelu_export_native_from_20_composed_below(approx: str) -> None:
    x = np.linspace(-4, 4, 11).astype(np.float32)
    g, feeds = graph_of("gelu", [x], approximate=approx)
    assert check_export(g, feeds, 20) == ["Gelu"]
    types = check_export(g, feeds, 18, rtol=1e-5, atol=1e-6)
    assert "Gelu" not in types and ("Erf" in types) == (approx == "none")


def test_rsqrt_silu_less_equal_compositions() -> None:
    x = np.array([0.25, 1.0, 4.0, np.nan], np.float32)
    g, feeds = graph_of("rsqrt", [x])
    assert check_export(g, feeds, 18) == ["Sqrt", "Reciprocal"]
    g, feeds = graph_of("silu", [x])
    assert check_export(g, feeds, 18) == ["Sigmoid", "Mul"]
    y = np.array([0.25, 2.0, 4.0, 1.0], np.float32)
    g, feeds = graph_of("less_equal", [x, y])
    assert check_export(g, feeds, 18) == ["LessOrEqual"]
    assert check_export(g, feeds, 11) == ["Less", "Equal", "Or"]  # NaN <= 1 stays False


@pytest.mark.parametrize("alpha, dtype", [(1.0, np.float32), (0.5, np.float32),
                                          (1.7, np.float16), (1.0, np.float16)])
def test_onnx_swish_imports_as_silu_or_its_composition(alpha: float, dtype: type) -> None:
    x = np.linspace(-8, 8, 17).astype(dtype)
    m = onnx_model("Swish", {"x": x}, ["x"], 24, **({} if alpha == 1.0 else {"alpha": alpha}))
    want = {"silu": 1} if alpha == 1.0 else {"mul": 2, "sigmoid": 1}  # x * sigmoid(alpha x)
    tol = 1e-5 if dtype == np.float32 else 2e-3
    check_import(m, {"x": x}, want, rtol=tol, atol=tol)


def test_onnx_swish_bf16_alpha_is_cast() -> None:
    from onnx import TensorProto, helper

    vi = [helper.make_tensor_value_info(n, TensorProto.BFLOAT16, [4]) for n in ("x", "y")]
    g = helper.make_graph([helper.make_node("Swish", ["x"], ["y"], alpha=2.0)], "one",
                          vi[:1], vi[1:])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 24)])
    g = check_import(m, {}, None, ort=False)
    assert ops_of(g) == {"cast": 1, "mul": 2, "sigmoid": 1}
    cast = next(n for n in g.nodes if n.op == "cast")
    assert cast.attrs["to"] == DType.bf16 and cast.inputs[0].node.const.array == np.float32(2.0)


def test_silu_exports_as_sigmoid_mul_at_opset_24_too() -> None:
    # ONNX Runtime 1.32 fuses Sigmoid + Mul into QuickGelu; Swish-24 runs ~2.5x slower there
    x = np.linspace(-8, 8, 17).astype(np.float32)
    g, feeds = graph_of("silu", [x])
    assert check_export(g, feeds, 24) == ["Sigmoid", "Mul"]


def test_clip_export_forms() -> None:
    x = np.linspace(-3, 3, 7).astype(np.float32)
    g, feeds = graph_of("clip", [x], max=1.5)
    assert check_export(g, feeds, 13) == ["Clip"]
    assert check_export(g, feeds, 9) == ["Clip"]
    xi = np.arange(-3, 4, dtype=np.int32)
    g, feeds = graph_of("clip", [xi], min=-1, max=1)
    assert check_export(g, feeds, 13) == ["Clip"]
    from graphopt.errors import ExportError

    with pytest.raises(ExportError, match="opset 12"):
        check_export(g, feeds, 11)


# ---- aten ----------------------------------------------------------------------------------------

class _Arith(torch.nn.Module):
    def forward(self, x: torch.Tensor, i: torch.Tensor) -> tuple:
        return (x + 2, i * 0.5, i / 3, torch.div(i, 2, rounding_mode="trunc"), i + 1,
                torch.sub(x, x, alpha=2), x ** 2, 2.0 ** x, i != 3, x > 0.5, i < 2.5)


def test_aten_arith_promotes_like_torch() -> None:
    x = torch.randn(2, 3)
    i = torch.randint(-5, 5, (2, 3))
    g = check_lift(_Arith(), x, i)
    assert not any(k.startswith("opaque") for k in ops_of(g)), ops_of(g)


class _Unary(torch.nn.Module):
    def forward(self, x: torch.Tensor, i: torch.Tensor) -> tuple:
        f = torch.nn.functional
        return (f.gelu(x, approximate="tanh"), f.silu(x), x.clamp(-0.5, 0.5), f.hardtanh(x),
                f.leaky_relu(x, 0.2), f.elu(x), torch.where(x > 0, x, 0.0), i.clamp(min=0),
                torch.logical_and(x, i), ~(x > 0), x.floor(), i.floor(), i.exp(), x.to(torch.int32),
                x.sign(), x.abs().rsqrt())


def test_aten_unary_ops_lift() -> None:
    x = torch.randn(3, 4)
    i = torch.randint(-3, 3, (3, 4))
    g = check_lift(_Unary(), x, i, rtol=1e-5, atol=1e-6)
    counts = ops_of(g)
    assert not any(k.startswith("opaque") for k in counts), counts
    assert counts.get("gelu") == 1 and counts.get("clip", 0) >= 3


class _Bitwise(torch.nn.Module):
    def forward(self, i: torch.Tensor) -> torch.Tensor:
        return i & 3


def test_aten_bitwise_on_ints_stays_opaque() -> None:
    g = check_lift(_Bitwise(), torch.arange(8))
    assert any(k.startswith("opaque") for k in ops_of(g)), ops_of(g)


def _attrs(**kw):
    from graphopt.ir.node import Attrs

    return Attrs(kw)
