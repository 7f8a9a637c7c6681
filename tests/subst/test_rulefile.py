from __future__ import annotations

import numpy as np
import pytest

from graphopt.errors import ParseError
from graphopt.ir.interp import run
from graphopt.subst.rulefile import dump, instantiate_rule, loads

TEXT = """
rule t-merge
lhs:
graph lhs(%x: f32[5,7], %y: f32[7,11], %z: f32[7,11]) {
  %0: f32[5,11] = matmul(%x, %y)
  %1: f32[5,11] = matmul(%x, %z)
  return %0 as "o0", %1 as "o1"
}
rhs:
graph rhs(%x: f32[5,7], %y: f32[7,11], %z: f32[7,11]) {
  %0: f32[7,22] = concat(%y, %z) {axis=1}
  %1: f32[5,22] = matmul(%x, %0)
  %2: f32[5,11], %3: f32[5,11] = split(%1) {axis=1, sizes=(11, 11)}
  return %2 as "o0", %3 as "o1"
}
end
"""


def test_roundtrip() -> None:
    rules = loads(TEXT)
    again = loads(dump(rules))
    assert [r.text() for r in rules] == [r.text() for r in again]
    assert rules[0].dim_vars() == ("a", "b", "c")


def test_instantiate_other_sizes() -> None:
    (r,) = loads(TEXT)
    lhs, rhs = instantiate_rule(r, {"a": 2, "b": 3, "c": 4})
    assert str(lhs.output_types[0]) == "f32[2,4]"
    rng = np.random.default_rng(0)
    xs = {n: rng.standard_normal(t.shape) for n, t in zip(lhs.input_names, lhs.input_types)}
    for a, b in zip(run(lhs, **xs), run(rhs, **xs)):
        np.testing.assert_allclose(a, b)
    lhs_s, _ = instantiate_rule(r, {"a": "batch", "b": 3, "c": 4})
    assert str(lhs_s.input_types[0]) == "f32[batch,3]"


def test_bad_rule_file() -> None:
    with pytest.raises(ParseError):
        loads(TEXT.replace('%3 as "o1"', '%3 as "oX"'))
    with pytest.raises(ParseError):
        loads("rule x\nlhs:\ngraph lhs(%x: f32[5]) {\n")
