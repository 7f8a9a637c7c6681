"""The layers a quantization can touch: linears (``matmul`` with a constant 2-D weight, possibly
read through a transpose) and embedding tables (``gather`` of rows of a constant 2-D table).

The LM head (the projection onto the vocabulary) is the linear whose output width equals the row
count of an embedding table of the graph and whose output reaches a graph output through shape
ops and adds only; it stays float unless asked (``QuantConfig.lm_head``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ..ir.graph import Graph
from ..ir.node import Node, Value
from ..ir.types import TensorType

# ops a value may pass through between the LM head's matmul and a graph output
_TO_OUTPUT = frozenset({"add", "reshape", "squeeze", "unsqueeze", "identity", "transpose",
                        "cast"})


@dataclass
class Layer:
    """One quantizable place. ``weight`` is [K, N] for a linear (x [.., K] @ W), [V, H] for an
    embedding table; ``weight_node`` the constant it comes from (``transposed``: read through a
    transpose, so ``weight`` is the constant's transpose)."""

    name: str
    kind: str  # "linear" | "embedding"
    node: Node
    weight: np.ndarray
    weight_node: Node
    transposed: bool
    x: Value  # the activation (linear) or the indices (embedding)
    lm_head: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.weight.shape[0]), int(self.weight.shape[1]))

    def describe(self) -> str:
        k, n = self.shape
        what = "embedding" if self.kind == "embedding" else ("LM head" if self.lm_head
                                                            else "linear")
        return f"{what} {self.name} [{k}x{n}]"


def weight_const(v: Value) -> tuple[Node, bool] | None:
    """The constant node holding a linear's weight, and whether the weight is read through a
    transpose of it (None: the weight is not constant data)."""
    n = v.node
    if n.op == "transpose" and tuple(n.attrs.get("perm") or ()) == (1, 0):
        n, transposed = n.inputs[0].node, True
    else:
        transposed = False
    if n.op != "constant" or not n.const.has_array:
        return None
    return n, transposed


def layer_name(n: Node, weight_node: Node) -> str:
    """A readable name: the weight's origin (an ONNX initializer / torch parameter name) when
    it has one, else the node's."""
    for src in (weight_node, n):
        if src.origin is not None and src.origin.name:
            return src.origin.name
    return f"{n.op}#{n.uid}"


def find_layers(g: Graph) -> list[Layer]:
    """Every linear and embedding of ``g`` with a float constant 2-D weight, in graph order."""
    out: list[Layer] = []
    for n in g.nodes:
        if n.op == "matmul":
            w = weight_const(n.inputs[1])
            if w is None:
                continue
            arr = np.asarray(w[0].const.array)
            arr = arr.T if w[1] else arr
            if arr.ndim != 2 or arr.dtype.kind != "f":
                continue
            x = n.inputs[0]
            if not isinstance(x.type, TensorType) or not x.type.dtype.is_float:
                continue
            out.append(Layer(layer_name(n, w[0]), "linear", n, arr, w[0], w[1], x))
        elif n.op == "gather" and int(n.attrs.get("axis", 0)) == 0:
            t = n.inputs[0].node
            if t.op != "constant" or not t.const.has_array:
                continue
            arr = np.asarray(t.const.array)
            if arr.ndim != 2 or arr.dtype.kind != "f":
                continue
            out.append(Layer(layer_name(n, t), "embedding", n, arr, t, False, n.inputs[1]))
    _mark_lm_head(g, out)
    return out


def _mark_lm_head(g: Graph, layers: Iterable[Layer]) -> None:
    layers = list(layers)
    vocab = {lay.shape[0] for lay in layers if lay.kind == "embedding"}
    if not vocab:
        return
    users = g.users()
    outs = {id(v.node) for v in g.outputs}
    for lay in layers:
        if lay.kind != "linear" or lay.shape[1] not in vocab:
            continue
        n: Node = lay.node
        while id(n) not in outs:
            us = users.get(n, [])
            if len(us) != 1 or us[0][0].op not in _TO_OUTPUT:
                break
            n = us[0][0]
        lay.lm_head = id(n) in outs
