"""Run-time symbol bindings for ops whose attrs hold symbolic dims."""
from __future__ import annotations

import numpy as np
import pytest

from graphopt.errors import ShapeError
from graphopt.ir.types import DType, TensorType, dim_product
from graphopt.ops.symbols import bind_symbols, bound_symbols, eval_dim, symbol_values


def test_bind_reads_plain_symbols_and_checks_conflicts() -> None:
    ts = [TensorType(("b", "s", 4), DType.f32), TensorType(("b", "b*s"), DType.f32),
          TensorType((), DType.f32)]
    vals = bind_symbols(ts, [np.zeros((2, 3, 4)), np.zeros((2, 6)), 1.5])
    assert vals == {"b": 2, "s": 3}
    with pytest.raises(ShapeError, match="'b' is bound to both 2 and 5"):
        bind_symbols(ts[:2], [np.zeros((2, 3, 4)), np.zeros((5, 6))])
    with pytest.raises(ShapeError, match="shape"):
        bind_symbols(ts[:1], [np.zeros((2, 3))])


def test_eval_dim_products_and_nesting() -> None:
    d = dim_product(["b", "s", 3])
    assert eval_dim(d, {"b": 2, "s": 5}) == 30
    assert eval_dim(d, {"b": 2}) is None
    assert eval_dim(7) == 7
    with symbol_values({"b": 2}):
        with symbol_values({"s": 4}):
            assert eval_dim(d) == 24
        assert eval_dim(d) is None and bound_symbols() == {"b": 2}
    assert bound_symbols() == {}
