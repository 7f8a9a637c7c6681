from __future__ import annotations

from graphopt.rewrite.pattern import PNode, POut, Var, attr, op, pattern_ops, root_node, var, variables


def test_builder_and_variables() -> None:
    x, w = var("x"), var("w")
    mm = op.matmul(x, w)
    t = op.transpose(mm, perm=(1, 0))
    assert isinstance(t, PNode) and t.op == "transpose" and t.attrs == {"perm": (1, 0)}
    assert [v.name for v in variables([t])] == ["x", "w"]
    assert pattern_ops([t]) == 2
    s = op.split(x, axis=attr("ax"))
    o = s.out(1)
    assert isinstance(o, POut) and root_node(o) == (s, 1)
    assert op("custom", x).op == "custom"
    assert isinstance(x, Var)


def test_shared_node_counted_once() -> None:
    x = var("x")
    r = op.relu(x)
    assert pattern_ops([op.add(r, r)]) == 2
