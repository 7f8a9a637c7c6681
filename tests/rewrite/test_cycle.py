"""TASO's cycle check, one function for the sweep driver (before building: what the match binds)
and the search (after building: the replacement values)."""
from __future__ import annotations

from graphopt.ir.graph import Graph
from graphopt.ir.node import input_node, op as build
from graphopt.ir.types import DType, TensorType
from graphopt.rewrite.context import MatchContext
from graphopt.rewrite.driver import reads_replaced, sweep
from graphopt.rewrite.pattern import op
from graphopt.rewrite.rule import rule
from graphopt.search.backtrack import rewrite_once


def _graph() -> Graph:
    x = input_node("x", TensorType((4,), DType.f32))
    a = build("relu", x.out)
    return Graph([x], [build("exp", build("neg", a))])


# roots relu(u) and exp(v): v binds neg(relu(u)), which reads the first root
CYC = rule("cyc", lambda u, v: (op.relu(u), op.exp(v)),
           lambda m: [build("abs", m["v"]), build("exp", m["u"])], place="test")


def test_reads_replaced_walks_inputs_and_new_nodes() -> None:
    g = _graph()
    pos = {id(n): i for i, n in enumerate(g.nodes)}
    neg = g.outputs[0].node.inputs[0]
    relu = neg.node.inputs[0]
    assert reads_replaced([neg], [relu], pos)
    assert reads_replaced([build("abs", neg)], [relu], pos)  # a new node reading it
    assert not reads_replaced([relu], [relu], pos)  # the value itself is not read through
    assert not reads_replaced([g.inputs[0].out], [relu], pos)


def test_sweep_and_search_reject_the_same_cyclic_rewrite() -> None:
    g = _graph()
    out = sweep(g, [CYC])
    assert not out.changed
    (c,) = out.candidates
    assert c.reason == "the replacement would read a value it replaces"
    relu = g.outputs[0].node.inputs[0].node.inputs[0].node
    m = next(iter(CYC.matches(relu, MatchContext(g))))
    pos = {id(n): i for i, n in enumerate(g.nodes)}
    assert rewrite_once(g, CYC, m, pos) == "cycle"
