import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.interp import run
from graphopt.ir.node import constant, input_node, op
from graphopt.ir.types import DType, TensorType

T = TensorType(("n", 4), DType.f32)


def _graph() -> tuple[Graph, object]:
    x = input_node("x", T)
    a = op("add", x.out, constant(np.ones((1, 4), np.float32)))
    dead = op("relu", a)  # never reaches an output
    del dead
    return Graph([x], [op("relu", a)], ["y"]), a


def test_nodes_are_derived_from_outputs() -> None:
    g, _ = _graph()
    assert [n.op for n in g.nodes] == ["input", "constant", "add", "relu"]
    assert g.op_counts() == {"add": 1, "relu": 1}


def test_replace_is_functional_and_shares_nodes() -> None:
    g, a = _graph()
    x = g.inputs[0].out
    g2 = g.replace({a: op("mul", x, x)})
    assert g.op_counts() == {"add": 1, "relu": 1}
    assert g2.op_counts() == {"mul": 1, "relu": 1}
    xs = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(run(g2, xs)[0], np.maximum(xs * xs, 0))


def test_structural_equality_via_hash_consing() -> None:
    g1, _ = _graph()
    g2 = g1.map_nodes(lambda n: None)
    assert g1 == g2 and hash(g1) == hash(g2)
    assert g1.fingerprint() == g2.fingerprint()


def test_users_and_deep_graphs_without_recursion_limit() -> None:
    x = input_node("x", T)
    v = x.out
    for _ in range(5000):
        v = op("relu", v)
    g = Graph([x], [v])
    assert len(g.nodes) == 5001
    users = g.users()
    assert len(users[x]) == 1
