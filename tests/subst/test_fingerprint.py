from __future__ import annotations

import numpy as np
import pytest

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


@pytest.mark.parametrize("scenario,ops", [("attention", ("reshape", "softmax")),
                                          ("linalg", ("concat", "split", "matmul"))])
def test_interpreter_over_a_graph_matches_the_enumerators_fingerprints(
        scenario: str, ops: tuple[str, ...]) -> None:
    """The enumerator fingerprints node by node (``run_node``); a whole-graph run of the same
    interpreter gives the same residues, with size-valued attrs (reshape) re-instantiated at the
    fingerprint sizes and multi-output ops (split) per output."""
    from graphopt.subst.enumerate import Enumerator, GraphRec
    from graphopt.subst.generate import restrict
    from graphopt.subst.scenario import SCENARIOS

    sc = restrict(SCENARIOS[scenario], list(ops))
    assert sc is not None
    en = Enumerator(sc, 2).run()
    ops_seen: set[str] = set()
    for nid, node in enumerate(en.nodes):  # each node's cone as a graph, its outputs out
        rec = GraphRec(tuple(sorted(en.node_cone[nid])), en.node_outs[nid])
        ins = en.inputs_of(rec)
        g = en.to_graph(rec, ins, "g")
        feed = {en.values[i].node.attrs["name"]: en.vfp[i] for i in ins}
        outs = fp.ModPrimeInterpreter(en.samples, en.fp_env).run(g, feed)
        assert [fp.digest(o) for o in outs] == [en.vhash[v] for v in rec.outputs]
        ops_seen.add(node.op)
    assert set(ops) <= ops_seen


def test_unfingerprinted_op_is_named() -> None:
    from graphopt.errors import GraphOptError
    from graphopt.ir.graph import Graph
    from graphopt.ir.node import input_node, op
    from graphopt.ir.types import DType, TensorType

    x = input_node("x", TensorType((3,), DType.f32))
    g = Graph([x], [op("abs", x.out)])
    with pytest.raises(GraphOptError, match=r"node abs #\d+: ValueError: fingerprint: op abs"):
        fp.ModPrimeInterpreter().run(g, [(np.zeros(3, np.int64),)])
