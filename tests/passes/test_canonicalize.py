"""Canonical forms: golden-IR rewrite tests (match count, golden IR, numerics, verifier)."""
from __future__ import annotations

import numpy as np
import pytest

from graphopt.ir.text import parse
from graphopt.ir.types import DType
from graphopt.passes.canonicalize import RULES, Canonicalize, lossless
from tests.passes.golden import assert_rewrite


def test_div_by_constant_becomes_mul_by_reciprocal() -> None:
    assert_rewrite(Canonicalize(), """
graph t(%x: f32[2,3]) {
  %c: f32[3] = constant() {data=dense<f32[3]>[2.0, 4.0, 0.5]}
  %0: f32[2,3] = div(%x, %c)
  return %0 as "y"
}""", """
graph t(%x: f32[2,3]) {
  %c: f32[3] = constant() {data=dense<f32[3]>[0.5, 0.25, 2.0]}
  %0: f32[2,3] = mul(%x, %c)
  return %0 as "y"
}""", {"div_to_mul": 1})


def test_div_to_mul_rounding_is_within_tolerance() -> None:
    # 1/3 is not exact: the result may differ by an ulp, which the numeric check allows
    assert_rewrite(Canonicalize(), """
graph t(%x: f32[64]) {
  %c: f32[] = constant() {data=dense<f32[]>[3.0]}
  %0: f32[64] = div(%x, %c)
  return %0 as "y"
}""", """
graph t(%x: f32[64]) {
  %c: f32[] = constant() {data=dense<f32[]>[0.3333333432674408]}
  %0: f32[64] = mul(%x, %c)
  return %0 as "y"
}""", {"div_to_mul": 1})


@pytest.mark.parametrize("src", [
    # integer division truncates: never a multiplication
    """graph t(%x: i32[4]) {
  %c: i32[] = constant() {data=dense<i32[]>[2]}
  %0: i32[4] = div(%x, %c)
  return %0 as "y"
}""",
    # the divisor is not a constant
    """graph t(%x: f32[4], %d: f32[4]) {
  %0: f32[4] = div(%x, %d)
  return %0 as "y"
}""",
    # a constant dividend is not the pattern
    """graph t(%x: f32[4]) {
  %c: f32[] = constant() {data=dense<f32[]>[2.0]}
  %0: f32[4] = div(%c, %x)
  return %0 as "y"
}""",
])
def test_div_not_rewritten(src: str) -> None:
    g = parse(src)
    res = Canonicalize().run(g)
    assert not res.changed and res.graph == g


def test_div_to_mul_can_be_switched_off() -> None:
    g = parse("""graph t(%x: f32[4]) {
  %c: f32[] = constant() {data=dense<f32[]>[2.0]}
  %0: f32[4] = div(%x, %c)
  return %0 as "y"
}""")
    assert not Canonicalize(div_to_mul=False).run(g).changed


def test_sub_constant_becomes_add_of_negation() -> None:
    assert_rewrite(Canonicalize(), """
graph t(%x: f16[3]) {
  %c: f16[3] = constant() {data=dense<f16[3]>[1.0, -2.0, 0.0]}
  %0: f16[3] = sub(%x, %c)
  return %0 as "y"
}""", """
graph t(%x: f16[3]) {
  %c: f16[3] = constant() {data=dense<f16[3]>[-1.0, 2.0, -0.0]}
  %0: f16[3] = add(%x, %c)
  return %0 as "y"
}""", {"sub_to_add": 1})


def test_sub_of_ints_is_kept() -> None:
    g = parse("""graph t(%x: i64[3]) {
  %c: i64[] = constant() {data=dense<i64[]>[1]}
  %0: i64[3] = sub(%x, %c)
  return %0 as "y"
}""")
    assert not Canonicalize().run(g).changed


def test_transpose_pairs_compose() -> None:
    assert_rewrite(Canonicalize(), """
graph t(%x: f32[2,3,4]) {
  %0: f32[3,4,2] = transpose(%x) {perm=(1, 2, 0)}
  %1: f32[4,3,2] = transpose(%0) {perm=(1, 0, 2)}
  %2: f32[2,3,4] = transpose(%1) {perm=(2, 1, 0)}
  %3: f32[4,2,3] = transpose(%2) {perm=(2, 0, 1)}
  return %3 as "y"
}""", """
graph t(%x: f32[2,3,4]) {
  %0: f32[4,2,3] = transpose(%x) {perm=(2, 0, 1)}
  return %0 as "y"
}""", {"transpose_pair": 2})  # the first three compose to the identity


def test_reshape_pairs_collapse() -> None:
    assert_rewrite(Canonicalize(), """
graph t(%x: f32[2,3,4]) {
  %0: f32[6,4] = reshape(%x) {shape=(6, 4)}
  %1: f32[24] = reshape(%0) {shape=(24,)}
  %2: f32[4,6] = reshape(%1) {shape=(4, 6)}
  %3: f32[2,3,4] = reshape(%0) {shape=(2, 3, 4)}
  return %2 as "y", %3 as "z"
}""", """
graph t(%x: f32[2,3,4]) {
  %0: f32[4,6] = reshape(%x) {shape=(4, 6)}
  return %0 as "y", %x as "z"
}""", {"reshape_pair": 3})


def test_reshape_pair_keeps_symbolic_dims() -> None:
    assert_rewrite(Canonicalize(), """
graph t(%x: f32[batch,4]) {
  %0: f32[batch,2,2] = reshape(%x) {shape=("batch", 2, 2)}
  %1: f32[batch,1,4] = reshape(%0) {shape=("batch", 1, 4)}
  return %1 as "y"
}""", """
graph t(%x: f32[batch,4]) {
  %0: f32[batch,1,4] = reshape(%x) {shape=("batch", 1, 4)}
  return %0 as "y"
}""", {"reshape_pair": 1})


def test_lossless_cast_pairs_merge() -> None:
    assert_rewrite(Canonicalize(), """
graph t(%x: f16[3], %i: i32[3]) {
  %0: f32[3] = cast(%x) {to=dtype:f32}
  %1: f64[3] = cast(%0) {to=dtype:f64}
  %2: i64[3] = cast(%i) {to=dtype:i64}
  %3: i32[3] = cast(%2) {to=dtype:i32}
  return %1 as "a", %3 as "b"
}""", """
graph t(%x: f16[3], %i: i32[3]) {
  %0: f64[3] = cast(%x) {to=dtype:f64}
  return %0 as "a", %i as "b"
}""", {"cast_pair": 2})


def test_lossy_cast_pairs_are_kept() -> None:
    g = parse("""
graph t(%x: f32[3]) {
  %0: f16[3] = cast(%x) {to=dtype:f16}
  %1: f32[3] = cast(%0) {to=dtype:f32}
  %2: i32[3] = cast(%x) {to=dtype:i32}
  %3: f32[3] = cast(%2) {to=dtype:f32}
  return %1 as "a", %3 as "b"
}""")
    assert not Canonicalize().run(g).changed


@pytest.mark.parametrize("src,dst,ok", [
    (DType.f16, DType.f32, True), (DType.bf16, DType.f32, True), (DType.f32, DType.f64, True),
    (DType.f16, DType.bf16, False), (DType.bf16, DType.f16, False), (DType.f32, DType.f16, False),
    (DType.i8, DType.i16, True), (DType.i64, DType.i32, False), (DType.u8, DType.i16, True),
    (DType.u16, DType.i16, False), (DType.i8, DType.u8, False), (DType.i16, DType.f32, True),
    (DType.i32, DType.f32, False), (DType.i32, DType.f64, True), (DType.u8, DType.f16, True),
    (DType.i8, DType.bf16, True), (DType.u16, DType.f16, False), (DType.bool, DType.i8, True),
    (DType.f32, DType.i64, False), (DType.i64, DType.f64, False),
])
def test_lossless_table(src: DType, dst: DType, ok: bool) -> None:
    assert lossless(src, dst) is ok


def test_lossless_table_agrees_with_numpy_round_trips() -> None:
    # every value of src survives src -> dst -> src exactly where the table says lossless
    for src in (DType.i8, DType.u8, DType.i16, DType.u16, DType.f16):
        info = np.iinfo if src.is_int else np.finfo
        lo, hi = info(src.to_numpy()).min, info(src.to_numpy()).max
        vals = (np.arange(int(lo), int(hi) + 1) if src.is_int else
                np.arange(2 ** 16, dtype=np.uint16).view(np.float16))
        vals = vals.astype(src.to_numpy())
        vals = vals[np.isfinite(vals.astype(np.float64))]
        for dst in (DType.i16, DType.i32, DType.u16, DType.f16, DType.f32, DType.f64):
            if lossless(src, dst):
                back = vals.astype(dst.to_numpy()).astype(src.to_numpy())
                np.testing.assert_array_equal(back, vals, err_msg=f"{src}->{dst}")


def test_squeeze_and_unsqueeze_become_reshape_when_static() -> None:
    assert_rewrite(Canonicalize(), """
graph t(%x: f32[2,1,3]) {
  %0: f32[2,3] = squeeze(%x) {axes=(1,)}
  %1: f32[2,3,1] = unsqueeze(%0) {axes=(2,)}
  %2: f32[2,3,1] = exp(%1)
  return %2 as "y"
}""", """
graph t(%x: f32[2,1,3]) {
  %0: f32[2,3,1] = reshape(%x) {shape=(2, 3, 1)}
  %1: f32[2,3,1] = exp(%0)
  return %1 as "y"
}""", {"squeeze_to_reshape": 1, "unsqueeze_to_reshape": 1, "reshape_pair": 1})


def test_squeeze_with_symbolic_dims_is_kept() -> None:
    g = parse("""
graph t(%x: f32[batch,1]) {
  %0: f32[batch] = squeeze(%x) {axes=(1,)}
  return %0 as "y"
}""")
    assert not Canonicalize().run(g).changed


def test_commutative_ops_get_the_constant_on_the_right() -> None:
    assert_rewrite(Canonicalize(), """
graph t(%x: f32[3]) {
  %c: f32[3] = constant() {data=dense<f32[3]>[1.0, 2.0, 3.0]}
  %0: f32[3] = add(%c, %x)
  %1: f32[3] = mul(%c, %0)
  %2: f32[3] = maximum(%c, %1)
  %3: f32[3] = sub(%c, %2)
  return %3 as "y"
}""", """
graph t(%x: f32[3]) {
  %c: f32[3] = constant() {data=dense<f32[3]>[1.0, 2.0, 3.0]}
  %0: f32[3] = add(%x, %c)
  %1: f32[3] = mul(%0, %c)
  %2: f32[3] = maximum(%1, %c)
  %3: f32[3] = sub(%c, %2)
  return %3 as "y"
}""", {"const_right": 3})


def test_neg_neg() -> None:
    assert_rewrite(Canonicalize(), """
graph t(%x: f32[3]) {
  %0: f32[3] = neg(%x)
  %1: f32[3] = neg(%0)
  %2: f32[3] = neg(%1)
  %3: f32[3] = neg(%2)
  %4: f32[3] = neg(%3)
  return %4 as "y"
}""", """
graph t(%x: f32[3]) {
  %0: f32[3] = neg(%x)
  return %0 as "y"
}""", {"neg_neg": 2})


def test_rules_can_be_selected_and_unknown_rules_are_errors() -> None:
    g = parse("""
graph t(%x: f32[3]) {
  %0: f32[3] = neg(%x)
  %1: f32[3] = neg(%0)
  %c: f32[] = constant() {data=dense<f32[]>[2.0]}
  %2: f32[3] = div(%1, %c)
  return %2 as "y"
}""")
    res = Canonicalize(rules=["neg_neg"]).run(g)
    assert res.stats == {"neg_neg": 1}
    assert res.graph.outputs[0].node.op == "div"
    with pytest.raises(ValueError, match="unknown canonicalize rules.*nope"):
        Canonicalize(rules=["nope"])


def test_every_rule_is_stated_in_the_rule_file() -> None:
    from graphopt.passes import RULES_DIR
    from graphopt.subst.rulefile import load_file

    stated = load_file(RULES_DIR / "canonicalize.rules")
    assert {r.pass_name for r in stated} == {"canonicalize"}
    assert {r.kind for r in stated} == {"canonical"}
    for name, r in RULES.items():
        assert r.kind == "canonical" and r.pass_name == "canonicalize" and not r.place
        assert any(s.name == f"canonicalize.{name}" or s.name.startswith(f"canonicalize.{name}_")
                   for s in stated), f"rule {name} has no text-IR statement"


def test_canonicalize_keeps_origins() -> None:
    g = parse("""
graph t(%x: f32[3]) {
  %c: f32[] = constant() {data=dense<f32[]>[2.0]}
  %0: f32[3] = div(%x, %c)   # onnx:"/layer/div" "Div"
  return %0 as "y"
}""")
    out = Canonicalize().run(g).graph.outputs[0].node
    assert out.op == "mul" and out.origin is not None and out.origin.name == "/layer/div"
