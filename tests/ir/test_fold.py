"""The one constant folder: the importer's and the cleanup pass's size policies, one list of
foldable ONNX op types, type checks."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from graphopt.frontends.onnx import load
from graphopt.frontends.onnx_fold import IMPORT_FOLD
from graphopt.ir.fold import FOLDABLE_ONNX, FoldPolicy, NotFolded, fold_node
from graphopt.rewrite.driver import local
from graphopt.rewrite.fold import FoldRule
from graphopt.ir.node import Node, constant, input_node, op
from graphopt.ir.types import DType, TensorType
from graphopt.ops.registry import get_op


def test_import_limits_each_output_the_pass_only_growth() -> None:
    c = constant(np.ones((300, 300), np.float32))  # 90000 elements > 2**16
    t = op("transpose", c, perm=(1, 0)).node
    got = fold_node(t, IMPORT_FOLD)
    assert isinstance(got, NotFolded) and got.kind == "large"
    (v,) = fold_node(t, FoldPolicy())  # no larger than its input: folds
    assert v.node.op == "constant" and v.type == TensorType((300, 300), DType.f32)
    grow = op("expand", constant(np.float32(1.0)), shape=(300, 300)).node
    assert fold_node(grow, FoldPolicy(max_elements=1000)).kind == "large"  # type: ignore[union-attr]


def test_cast_policy_decides_what_a_wrong_dtype_is() -> None:
    neg = get_op("neg")
    n = op("neg", constant(np.array([1.0, 2.0], np.float32))).node
    orig = type(neg).numpy
    type(neg).numpy = lambda self, xs, attrs: (np.asarray(-xs[0], np.float64),)  # type: ignore
    try:
        assert fold_node(n, FoldPolicy()).kind == "mismatch"  # type: ignore[union-attr]
        (v,) = fold_node(n, IMPORT_FOLD)  # the importer trusts the declared type
        assert v.node.const.array.dtype == np.float32
    finally:
        type(neg).numpy = orig  # type: ignore[method-assign]


def test_opaque_onnx_nodes_of_the_one_list_fold_in_the_pass() -> None:
    # GatherND has no IR op: it stays opaque, and folds (run in ONNX Runtime) once its inputs
    # are constants
    assert "GatherND" in FOLDABLE_ONNX and "RandomUniformLike" not in FOLDABLE_ONNX
    nodes = [helper.make_node("GatherND", ["d", "i"], ["y"], name="g")]
    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("d", TensorProto.FLOAT, [2, 2]),
                     helper.make_tensor_value_info("i", TensorProto.INT64, [2, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
    g = load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    assert [n.attrs["op_type"] for n in g.nodes if n.op == "opaque"] == ["GatherND"]
    d = constant(np.array([[1, 2], [3, 4]], np.float32))
    i = constant(np.array([[1], [0]], np.int64))
    g = g.replace({g.inputs[0].out: d, g.inputs[1].out: i})
    res = local(g, [FoldRule()])
    out = res.graph
    assert res.applied == {"constant_fold": 1}
    np.testing.assert_array_equal(out.outputs[0].node.const.array, [[3, 4], [1, 2]])


def test_opaque_inputs_over_the_import_limit_are_not_run() -> None:
    x = input_node("x", TensorType((4,), DType.f32))
    big = constant(np.zeros(1 << 17, np.float32))
    attrs = {"op_type": "Identity", "domain": "",
             "proto": helper.make_node("Identity", ["a"], ["b"]).SerializeToString(),
             "opsets": (("", 18),), "out_types": (big.type,), "present": (True,),
             "captured": ()}
    n = Node.build("opaque", [big], attrs)
    assert fold_node(n, IMPORT_FOLD).kind == "large"  # type: ignore[union-attr]
    assert isinstance(fold_node(n, FoldPolicy()), list)
    assert fold_node(op("neg", x.out).node) is None  # not all inputs constant
