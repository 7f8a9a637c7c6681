from __future__ import annotations

from graphopt.rewrite.dims import DimExpr, generalize_attr, instantiate_attr, representable, unify


def test_factor_and_eval() -> None:
    e = DimExpr.of(2 * 5 * 7)
    assert e == DimExpr(2, ("a", "b"))
    assert e.eval({"a": 3, "b": 4}) == 24
    assert e.eval({"a": "seq", "b": 4}) == "_x8*seq"
    assert DimExpr.of(3).is_literal


def test_representable() -> None:
    assert representable(10) and representable(5 * 7) and representable(3)
    assert representable(36)  # 4 * 9: a literal made of 2s and 3s
    assert not representable(29) and not representable(5 * 29)  # 29: not a dim variable


def test_unify() -> None:
    env: dict = {}
    assert unify(DimExpr(1, ("a",)), 8, env) is True and env["a"] == 8
    assert unify(DimExpr(2, ("a",)), 16, env) is True
    assert unify(DimExpr(2, ("a",)), 15, env) is False
    assert unify(DimExpr(1, ("b", "c")), 12, {}) is None
    env2: dict = {}
    assert unify(DimExpr(2, ("c",)), "seq*_x2", env2) is True and env2["c"] == "seq"


def test_attrs() -> None:
    g = generalize_attr("split", "sizes", (11, 11))
    assert instantiate_attr(g, {"c": 4}) == (4, 4)
    assert generalize_attr("concat", "axis", 5) == 5  # not a dim-valued attr
