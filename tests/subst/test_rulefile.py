from __future__ import annotations

import numpy as np
import pytest

from graphopt.errors import ParseError
from graphopt.ir.interp import run
from graphopt.subst.rulefile import dump, instantiate_rule, loads
from tests.subst.samples import MERGE_MATMULS



def test_roundtrip() -> None:
    rules = loads(MERGE_MATMULS)
    again = loads(dump(rules))
    assert [r.text() for r in rules] == [r.text() for r in again]
    assert rules[0].dim_vars() == ("a", "b", "c")


def test_instantiate_other_sizes() -> None:
    (r,) = loads(MERGE_MATMULS)
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
        loads(MERGE_MATMULS.replace('%3 as "o1"', '%3 as "oX"'))
    with pytest.raises(ParseError):
        loads("rule x\nlhs:\ngraph lhs(%x: f32[5]) {\n")
