from __future__ import annotations

import numpy as np

from graphopt.ir.node import Attrs
from graphopt.ops import residues
from graphopt.subst import fingerprint as fp


def test_relu_identities_hold_mod_p() -> None:
    rng = np.random.default_rng(0)
    x = fp.random_input((50,), rng)
    relu = lambda a: fp.eval_op("relu", [a], Attrs())[0]  # noqa: E731
    neg = lambda a: fp.eval_op("neg", [a], Attrs())[0]  # noqa: E731
    assert np.array_equal(relu(relu(x)), relu(x))
    assert np.array_equal(fp.modp(relu(x) - relu(neg(x))), x)


def test_inverse() -> None:
    x = np.array([1, 2, 12345, residues.P - 1])
    assert np.array_equal(x * residues.inverse(x) % residues.P, np.ones(4, dtype=np.int64))


def test_linear_ops_exact() -> None:
    rng = np.random.default_rng(1)
    a, b, c = (fp.random_input((3, 3), rng) for _ in range(3))
    mm = lambda p, q: fp.eval_op("matmul", [p, q], Attrs())[0]  # noqa: E731
    assert np.array_equal(mm(mm(a, b), c), mm(a, mm(b, c)))


def test_softmax_standin_structural() -> None:
    rng = np.random.default_rng(2)
    x = fp.random_input((3, 4), rng)
    s1 = fp.eval_op("softmax", [x], Attrs({"axis": 1}))[0]
    t = fp.eval_op("transpose", [x], Attrs({"perm": (1, 0)}))[0]
    s0 = fp.eval_op("softmax", [t], Attrs({"axis": 0}))[0]
    assert np.array_equal(s1.T, s0)


def test_digest_stable() -> None:
    x = np.arange(6).reshape(2, 3)
    assert fp.digest([x]) == fp.digest([x.copy()])
    assert fp.digest([x]) != fp.digest([x.reshape(3, 2)])
