"""The small valid models the CLI fuzzer mutates, built with ``onnx.helper``: an MLP, a conv net,
an MLP with its weights in an external data file, an IR-3 model (opset 8, initializers also
listed as graph inputs) and models with subgraphs (an If reading an outer value, a Loop).

``write_seed(name, folder)`` writes ``folder/model.onnx`` (and ``model.onnx.data`` for the
external one); each seed optimizes cleanly through ``graphopt optimize``.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["SEEDS", "MODEL", "write_seed"]

MODEL = "model.onnx"


def _w(name: str, *shape: int, seed: int = 0) -> onnx.TensorProto:
    rng = np.random.default_rng(seed + sum(shape))
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)


def _model(g: onnx.GraphProto, opset: int, ir: int | None = None) -> onnx.ModelProto:
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="graphopt-fuzz")
    if ir is not None:
        m.ir_version = ir
    return m


def mlp(hidden: int = 8) -> onnx.ModelProto:
    """x[N,4] -> MatMul + Add -> Relu -> Gemm -> Softmax."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="mm1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="add1"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu1"),
        helper.make_node("Gemm", ["h2", "w2", "b2"], ["h3"], name="gemm2", transB=1),
        helper.make_node("Softmax", ["h3"], ["y"], name="softmax", axis=-1),
    ]
    inits = [_w("w1", 4, hidden), _w("b1", hidden), _w("w2", 3, hidden), _w("b2", 3)]
    g = helper.make_graph(nodes, "mlp",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                          inits)
    return _model(g, 17)


def convnet() -> onnx.ModelProto:
    """x[1,3,8,8] -> Conv -> BatchNormalization -> Relu -> MaxPool -> GlobalAveragePool ->
    Flatten -> Gemm."""
    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], name="conv", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "bb", "mean", "var"], ["n"],
                         name="bn", epsilon=1e-5),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["p"], ["gp"], name="gap"),
        helper.make_node("Flatten", ["gp"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1),
    ]
    var = numpy_helper.from_array(np.full(4, 1.5, np.float32), "var")
    inits = [_w("cw", 4, 3, 3, 3), _w("cb", 4), _w("s", 4, seed=1), _w("bb", 4, seed=2),
             _w("mean", 4, seed=3), var, _w("fw", 5, 4), _w("fb", 5)]
    g = helper.make_graph(nodes, "convnet",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
                          inits)
    return _model(g, 13)


def ir3() -> onnx.ModelProto:
    """IR version 3, opset 8: initializers are also graph inputs (overridable), as old
    exporters wrote them."""
    nodes = [
        helper.make_node("Mul", ["x", "scale"], ["m"], name="mul"),
        helper.make_node("Add", ["m", "shift"], ["a"], name="add"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Transpose", ["r"], ["y"], name="transpose", perm=[1, 0]),
    ]
    inits = [_w("scale", 2, 3), _w("shift", 3)]
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
           helper.make_tensor_value_info("scale", TensorProto.FLOAT, [2, 3]),
           helper.make_tensor_value_info("shift", TensorProto.FLOAT, [3])]
    g = helper.make_graph(nodes, "ir3", ins,
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])], inits)
    return _model(g, 8, ir=3)


def if_model() -> onnx.ModelProto:
    """An If whose branches read an outer-scope value (``h``)."""
    then_g = helper.make_graph(
        [helper.make_node("Relu", ["h"], ["t"], name="then_relu")], "then", [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 4])])
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["h"], ["e"], name="else_neg")], "else", [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 4])])
    nodes = [
        helper.make_node("Add", ["x", "b"], ["h"], name="add"),
        helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["c"], name="gt"),
        helper.make_node("If", ["c"], ["z"], name="if", then_branch=then_g, else_branch=else_g),
        helper.make_node("Mul", ["z", "b"], ["y"], name="mul"),
    ]
    inits = [_w("b", 2, 4), numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    g = helper.make_graph(nodes, "if",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], inits)
    return _model(g, 17)


def loop_model() -> onnx.ModelProto:
    """A Loop of a constant trip count adding the input to a carried value."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep"),
         helper.make_node("Add", ["acc_in", "x"], ["acc_out"], name="acc")],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [3])])
    nodes = [helper.make_node("Loop", ["trips", "cond", "init"], ["acc"], name="loop",
                              body=body),
             helper.make_node("Tanh", ["acc"], ["y"], name="tanh")]
    inits = [numpy_helper.from_array(np.array(3, np.int64), "trips"),
             numpy_helper.from_array(np.array(True), "cond"), _w("init", 3)]
    g = helper.make_graph(nodes, "loop",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], inits)
    return _model(g, 17)


def _external(folder: str) -> None:
    """An MLP whose weights lie in ``model.onnx.data``."""
    m = mlp(hidden=64)
    onnx.save(m, os.path.join(folder, MODEL), save_as_external_data=True,
              all_tensors_to_one_file=True, location=MODEL + ".data", size_threshold=0)


SEEDS: dict[str, Callable[[], onnx.ModelProto] | None] = {
    "mlp": mlp, "convnet": convnet, "external": None, "ir3": ir3, "if": if_model,
    "loop": loop_model,
}


def write_seed(name: str, folder: str) -> str:
    """Write seed ``name`` into ``folder``; returns the model's path."""
    os.makedirs(folder, exist_ok=True)
    build = SEEDS[name]
    if build is None:
        _external(folder)
    else:
        onnx.save(build(), os.path.join(folder, MODEL))
    return os.path.join(folder, MODEL)
