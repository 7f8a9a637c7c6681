import numpy as np
import pytest

from graphopt.errors import ParseError
from graphopt.ir.graph import Graph
from graphopt.ir.node import Origin, constant, input_node, op
from graphopt.ir.text import parse, print_graph, print_graph_with_weights
from graphopt.ir.types import DType, TensorType

TEXT = """graph main(%x: f32[batch,4]) {
  %0: f32[1,4] = constant() {data=dense<f32[1,4]>[1.0, -2.5, inf, nan]}
  %1: f32[batch,4] = add(%x, %0)   # onnx:"/h.0/Add" "Add"
  %2: f32[batch,4] = relu(%1)
  return %2 as "y", %1 as "z"
}
"""


def test_parse_print_round_trip() -> None:
    g = parse(TEXT)
    assert print_graph(g) == TEXT
    add = [n for n in g.nodes if n.op == "add"][0]
    assert add.origin == Origin("onnx", "/h.0/Add", "Add")


def test_large_constants_travel_in_a_side_table() -> None:
    x = input_node("x", TensorType((64,), DType.f32))
    w = np.arange(64, dtype=np.float32)
    g = Graph([x], [op("mul", x.out, constant(w))])
    text, weights = print_graph_with_weights(g)
    assert "@c0" in text
    g2 = parse(text, weights)
    assert print_graph_with_weights(g2)[0] == text
    with pytest.raises(ParseError, match="no weight"):
        parse(text)


def test_parse_errors_name_the_line() -> None:
    bad = TEXT.replace("%1: f32[batch,4] = add(%x, %0)", "%1: f32[batch,5] = add(%x, %0)")
    with pytest.raises(ParseError, match="line 3"):
        parse(bad)
    with pytest.raises(ParseError, match="unknown value"):
        parse(TEXT.replace("relu(%1)", "relu(%9)"))
