"""Small ONNX models for the quantization tests, built with onnx.helper (fast, no exporter)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def embed_mlp(k: int = 64, hidden: int = 128, vocab: int = 96, seed: int = 0,
              outlier_cols: int = 0, opset: int = 17) -> onnx.ModelProto:
    """ids [B, S] -> Gather(table) -> LayerNorm -> MatMul W1 + b1 -> Relu -> MatMul W2 -> y
    [B, S, k]. ``outlier_cols``: that many LayerNorm output channels get a gain of 20 (the
    large activation columns LLM.int8 and SmoothQuant are about)."""
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((vocab, k)).astype(np.float32)
    gamma = np.ones(k, np.float32)
    gamma[:outlier_cols] = 20.0
    beta = (0.1 * rng.standard_normal(k)).astype(np.float32)
    w1 = (rng.standard_normal((k, hidden)) / np.sqrt(k)).astype(np.float32)
    b1 = (0.1 * rng.standard_normal(hidden)).astype(np.float32)
    w2 = (rng.standard_normal((hidden, k)) / np.sqrt(hidden)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((table, "table"), (gamma, "gamma"), (beta, "beta"), (w1, "fc1.weight"),
              (b1, "fc1.bias"), (w2, "fc2.weight"))]
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["e"], axis=0, name="embed"),
        helper.make_node("LayerNormalization", ["e", "gamma", "beta"], ["n"], axis=-1,
                         epsilon=1e-5, name="norm"),
        helper.make_node("MatMul", ["n", "fc1.weight"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "fc1.bias"], ["h1"], name="fc1_bias"),
        helper.make_node("Relu", ["h1"], ["h"], name="act"),
        helper.make_node("MatMul", ["h", "fc2.weight"], ["y"], name="fc2"),
    ]
    g = helper.make_graph(nodes, "embed_mlp",
                          [helper.make_tensor_value_info("ids", TensorProto.INT64, ["B", "S"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "S", k])],
                          initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def no_weights() -> onnx.ModelProto:
    """x, y -> MatMul(x, y): nothing constant to quantize."""
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "no_weights",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [8, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def calibration_ids(vocab: int = 96, batches: int = 4, seq: int = 16, seed: int = 1
                    ) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"ids": rng.integers(0, vocab, size=(2, seq)).astype(np.int64)}
            for _ in range(batches)]
