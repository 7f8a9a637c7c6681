import gc

import numpy as np
import pytest

from graphopt.errors import ShapeError, UnknownOpError
from graphopt.ir.node import Attrs, ConstData, Node, constant, input_node, op
from graphopt.ir.types import DType, TensorType

F32 = TensorType((2, 3), DType.f32)


def test_hash_consing_makes_equal_nodes_identical() -> None:
    x = input_node("x", F32).out
    a = op("add", x, x)
    b = op("add", x, x)
    assert a.node is b.node
    assert op("relu", a).node is op("relu", b).node


def test_constants_hash_by_identity_not_content() -> None:
    a = constant(np.ones(3, np.float32))
    b = constant(np.ones(3, np.float32))
    assert a.node is not b.node
    d = ConstData.of(np.ones(3, np.float32))
    assert constant(d).node is constant(d).node


def test_impure_nodes_are_never_shared() -> None:
    x = input_node("x", F32).out
    attrs = {"op_type": "RandomUniformLike", "domain": "", "proto": None, "opsets": (("", 17),),
             "out_types": (F32,), "present": (True,), "captured": ()}
    a = Node.build("opaque", [x], attrs)
    b = Node.build("opaque", [x], attrs)
    assert a is not b


def test_types_are_inferred_and_bad_nodes_cannot_be_built() -> None:
    x = input_node("x", F32).out
    y = input_node("y", TensorType((4,), DType.f32)).out
    assert op("add", x, x).type == F32
    with pytest.raises(ShapeError, match="add"):
        op("add", x, y)
    with pytest.raises(ShapeError, match="2 inputs"):
        Node.build("add", [x])
    with pytest.raises(UnknownOpError):
        op("no_such_op", x)


def test_attrs_are_frozen_and_hashable() -> None:
    a = Attrs({"axes": [1, 2], "name": "n"})
    assert a["axes"] == (1, 2)
    assert hash(a) == hash(Attrs({"name": "n", "axes": (1, 2)}))
    assert a.replace(name="m")["name"] == "m"
    with pytest.raises(TypeError):
        Attrs({"bad": np.zeros(2)})


def test_intern_table_is_weak() -> None:
    from graphopt.ir import node as node_mod

    x = input_node("x_weak", F32).out
    gc.collect()
    before = len(node_mod._intern)
    y = op("relu", op("relu", x))
    assert len(node_mod._intern) == before + 2
    del y
    gc.collect()
    assert len(node_mod._intern) == before
