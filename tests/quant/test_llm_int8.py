"""LLM.int8(): outlier columns by threshold, the mixed product is exact on the float part and
the int8 vector-wise product on the rest, and keeping outliers float beats plain int8."""
from __future__ import annotations

import numpy as np
import pytest

from graphopt.errors import GraphOptError
from graphopt.quant.llm_int8 import int8_vectorwise_matmul, llm_int8_matmul, outlier_columns
from graphopt.quant.numerics import quantize_absmax, sqnr_db


def test_outlier_columns() -> None:
    cols = outlier_columns(np.array([0.5, 7.0, 6.0, 6.01, 100.0]))
    assert cols.dtype == np.int64
    np.testing.assert_array_equal(cols, [1, 3, 4])
    np.testing.assert_array_equal(outlier_columns(np.array([1.0, 2.0]), threshold=1.5), [1])
    assert outlier_columns(np.zeros(3)).size == 0


def test_vectorwise_product_is_the_dequantized_product() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 20)).astype(np.float32)
    w = rng.standard_normal((20, 5)).astype(np.float32)
    ref = (quantize_absmax(x, 8, axis=0).dequantize().astype(np.float64)
           @ quantize_absmax(w, 8, axis=1).dequantize())
    np.testing.assert_allclose(int8_vectorwise_matmul(x, w), ref, rtol=1e-5, atol=1e-5)


def _layer() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 48)).astype(np.float32)
    x[:, [2, 30]] *= 40.0
    w = rng.standard_normal((48, 16)).astype(np.float32)
    return x, w, outlier_columns(np.abs(x).max(axis=0))


def test_mixed_product() -> None:
    x, w, cols = _layer()
    np.testing.assert_array_equal(cols, [2, 30])
    y = x.astype(np.float64) @ w
    rest = np.setdiff1d(np.arange(48), cols)
    expect = x[:, cols] @ w[cols] + int8_vectorwise_matmul(x[:, rest], w[rest])
    np.testing.assert_allclose(llm_int8_matmul(x, w, cols), expect, rtol=1e-6, atol=1e-5)
    assert sqnr_db(y, llm_int8_matmul(x, w, cols)) > sqnr_db(y, llm_int8_matmul(x, w, [])) + 10
    np.testing.assert_allclose(llm_int8_matmul(x, w, np.arange(48)), x @ w, rtol=1e-6)
    np.testing.assert_allclose(llm_int8_matmul(x, w, []), int8_vectorwise_matmul(x, w))


def test_bad_shapes() -> None:
    with pytest.raises(GraphOptError, match="LLM.int8 takes"):
        llm_int8_matmul(np.ones((2, 3)), np.ones((4, 2)), [])
