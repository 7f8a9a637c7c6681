"""Mutations of a seed model folder for the CLI fuzzer.

Each mutation reads a valid model folder (``model.onnx``, maybe ``model.onnx.data``), changes it
in one way a corrupt or hand-edited file might be wrong, and writes the result into a new
folder; it returns a short description of what it did. Structural mutations edit the
``ModelProto`` (no checker runs: the proto may be invalid), byte mutations edit the file.
"""
from __future__ import annotations

import os
import shutil
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from .seeds import MODEL

__all__ = ["KINDS", "mutate"]

Rng = np.random.Generator
Mutation = Callable[[onnx.ModelProto, Rng, str], str]

_ELEM_TYPES = [0, 2, 3, 6, 7, 8, 9, 10, 11, 16, 17, 21, 23, 42]


def _nodes(m: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Every node, nested subgraphs included."""
    out: list[onnx.NodeProto] = []

    def walk(g: onnx.GraphProto) -> None:
        for n in g.node:
            out.append(n)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                for sg in a.graphs:
                    walk(sg)

    walk(m.graph)
    return out


def _pick(rng: Rng, xs: list) -> object:
    return xs[int(rng.integers(len(xs)))]


def _tensor_vis(m: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    g = m.graph
    return [v for v in list(g.input) + list(g.output) if v.type.HasField("tensor_type")]


def wrong_dims(m: onnx.ModelProto, rng: Rng, folder: str) -> str:
    """A dim of an initializer (its data not resized) or of a graph input / output changed."""
    if m.graph.initializer and rng.random() < 0.5:
        t = _pick(rng, list(m.graph.initializer))
        if not t.dims:
            t.dims.append(2)
            return f"initializer {t.name} gets dims [2]"
        k = int(rng.integers(len(t.dims)))
        t.dims[k] = int(t.dims[k]) + int(rng.integers(1, 4))
        return f"initializer {t.name} dim {k} -> {t.dims[k]}"
    v = _pick(rng, _tensor_vis(m))
    dims = v.type.tensor_type.shape.dim
    if not dims:
        v.type.tensor_type.shape.dim.add().dim_value = 3
        return f"{v.name} gets a dim"
    k = int(rng.integers(len(dims)))
    dims[k].dim_value = int(rng.integers(1, 9)) + (dims[k].dim_value or 0)
    return f"{v.name} dim {k} -> {dims[k].dim_value}"


def negative_dims(m: onnx.ModelProto, rng: Rng, folder: str) -> str:
    if m.graph.initializer and rng.random() < 0.5:
        t = _pick(rng, list(m.graph.initializer))
        if t.dims:
            t.dims[int(rng.integers(len(t.dims)))] = -int(rng.integers(1, 5))
            return f"initializer {t.name} gets a negative dim"
    v = _pick(rng, _tensor_vis(m))
    d = v.type.tensor_type.shape.dim
    (d[int(rng.integers(len(d)))] if d else d.add()).dim_value = -int(rng.integers(1, 5))
    return f"{v.name} gets a negative dim"


def huge_dims(m: onnx.ModelProto, rng: Rng, folder: str) -> str:
    big = int(_pick(rng, [2 ** 31, 2 ** 40, 2 ** 62, 10 ** 9]))
    if m.graph.initializer and rng.random() < 0.4:
        t = _pick(rng, list(m.graph.initializer))
        if t.dims:
            t.dims[0] = big
            return f"initializer {t.name} dim 0 -> {big}"
    v = _pick(rng, list(m.graph.input))
    d = v.type.tensor_type.shape.dim
    (d[int(rng.integers(len(d)))] if d else d.add()).dim_value = big
    return f"input {v.name} gets dim {big}"


def dangling_input(m: onnx.ModelProto, rng: Rng, folder: str) -> str:
    n = _pick(rng, _nodes(m))
    if not n.input:
        n.input.append("fuzz_missing")
    else:
        n.input[int(rng.integers(len(n.input)))] = "fuzz_missing"
    return f"node {n.name} reads an undefined value"


def duplicate_output(m: onnx.ModelProto, rng: Rng, folder: str) -> str:
    nodes = list(m.graph.node)
    r = rng.random()
    if r < 0.4 and len(nodes) > 1:
        a, b = rng.choice(len(nodes), 2, replace=False)
        nodes[int(b)].output[0] = nodes[int(a)].output[0]
        return f"nodes {nodes[int(a)].name} and {nodes[int(b)].name} write the same value"
    if r < 0.7:
        m.graph.output.append(m.graph.output[0])
        return "graph output listed twice"
    n = _pick(rng, nodes)
    n.output[0] = m.graph.input[0].name
    return f"node {n.name} writes a graph input"


def cycle(m: onnx.ModelProto, rng: Rng, folder: str) -> str:
    n = _pick(rng, list(m.graph.node))
    later = list(m.graph.node)[-1]
    n.input[0] = _pick(rng, [n.output[0], later.output[0]])
    return f"node {n.name} reads {n.input[0]} (a cycle)"


def bogus_attribute(m: onnx.ModelProto, rng: Rng, folder: str) -> str:
    n = _pick(rng, _nodes(m))
    r = rng.random()
    if r < 0.25 or not n.attribute:
        n.attribute.append(helper.make_attribute("fuzz_attr", int(rng.integers(100))))
        return f"node {n.name} gets unknown attribute fuzz_attr"
    a = _pick(rng, list(n.attribute))
    if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        a.ClearField("g")
        return f"node {n.name} attribute {a.name}: empty subgraph"
    if r < 0.5:  # another type under the same name
        new = helper.make_attribute(a.name, _pick(rng, [1.5, "fuzz", [7, -3], 9]))
        a.CopyFrom(new)
        return f"node {n.name} attribute {a.name} retyped"
    if r < 0.75:  # out-of-range values
        if a.type == onnx.AttributeProto.INTS:
            a.ints[:] = [int(x) for x in rng.integers(-9, 99, size=max(1, len(a.ints)))]
        elif a.type == onnx.AttributeProto.INT:
            a.i = int(_pick(rng, [-99, 99, 2 ** 40, -1]))
        elif a.type == onnx.AttributeProto.FLOAT:
            a.f = float(_pick(rng, [float("nan"), -1e30, float("inf")]))
        else:  # strings, tensors: emptied
            a.ClearField("s")
            a.ClearField("t")
            del a.strings[:]
        return f"node {n.name} attribute {a.name} out of range"
    a.type = int(_pick(rng, [onnx.AttributeProto.UNDEFINED, onnx.AttributeProto.STRINGS,
                             onnx.AttributeProto.TENSOR, onnx.AttributeProto.SPARSE_TENSOR]))
    return f"node {n.name} attribute {a.name} type code changed"


def unknown_domain(m: onnx.ModelProto, rng: Rng, folder: str) -> str:
    n = _pick(rng, _nodes(m))
    n.domain = str(_pick(rng, ["com.example.fuzz", "ai.onnx.ml", "com.microsoft"]))
    if rng.random() < 0.5:
        m.opset_import.append(helper.make_opsetid(n.domain, 1))
    return f"node {n.name} in domain {n.domain}"


def unknown_op(m: onnx.ModelProto, rng: Rng, folder: str) -> str:
    n = _pick(rng, _nodes(m))
    n.op_type = str(_pick(rng, ["FuzzOp", "", "relu", "Conv2d"]))
    return f"node {n.name} op_type {n.op_type!r}"


def opset(m: onnx.ModelProto, rng: Rng, folder: str) -> str:
    r = rng.random()
    if r < 0.3:
        m.opset_import[0].version = int(_pick(rng, [0, 1, 99, 10 ** 6, -4]))
        return f"default opset -> {m.opset_import[0].version}"
    if r < 0.5:
        del m.opset_import[:]
        return "no opset_import"
    if r < 0.7:
        m.opset_import.append(helper.make_opsetid("", 11))
        return "default domain imported twice"
    if r < 0.85:
        m.ir_version = int(_pick(rng, [0, 1, 2, 99, -1]))
        return f"ir_version -> {m.ir_version}"
    m.opset_import.append(helper.make_opsetid("com.example.fuzz", 3))
    return "unknown domain imported"


def wrong_dtype(m: onnx.ModelProto, rng: Rng, folder: str) -> str:
    et = int(_pick(rng, _ELEM_TYPES))
    if m.graph.initializer and rng.random() < 0.5:
        t = _pick(rng, list(m.graph.initializer))
        t.data_type = et
        return f"initializer {t.name} data_type -> {et}"
    v = _pick(rng, _tensor_vis(m))
    v.type.tensor_type.elem_type = et
    return f"{v.name} elem_type -> {et}"


def removed_initializer(m: onnx.ModelProto, rng: Rng, folder: str) -> str:
    inits = m.graph.initializer
    if not inits:
        return removed_node(m, rng, folder)
    k = int(rng.integers(len(inits)))
    name = inits[k].name
    del inits[k]
    return f"initializer {name} removed"


def removed_node(m: onnx.ModelProto, rng: Rng, folder: str) -> str:
    k = int(rng.integers(len(m.graph.node)))
    name = m.graph.node[k].name
    del m.graph.node[k]
    return f"node {name} removed"


def removed_outputs(m: onnx.ModelProto, rng: Rng, folder: str) -> str:
    if rng.random() < 0.5:
        del m.graph.output[:]
        return "no graph outputs"
    m.graph.output[0].name = "fuzz_nothing"
    return "graph output names an undefined value"


def external_data(m: onnx.ModelProto, rng: Rng, folder: str) -> str:
    """The external data file missing, short, or referred to wrongly."""
    data = os.path.join(folder, MODEL + ".data")
    ext = [t for t in m.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    if not ext or not os.path.exists(data):  # a seed without external data: point one there
        t = _pick(rng, list(m.graph.initializer))
        t.ClearField("raw_data")
        del t.float_data[:]
        t.data_location = TensorProto.EXTERNAL
        loc = str(_pick(rng, ["missing.bin", "short.bin", "../short.bin", "/etc/hostname"]))
        if loc.endswith("short.bin"):
            with open(os.path.join(folder, os.path.basename(loc)), "wb") as f:
                f.write(b"\0" * 3)
        e = t.external_data.add()
        e.key, e.value = "location", loc
        return f"initializer {t.name} refers to external data {loc!r}"
    r = rng.random()
    if r < 0.3:
        os.unlink(data)
        return "external data file removed"
    if r < 0.55:
        size = os.path.getsize(data)
        with open(data, "r+b") as f:
            f.truncate(int(rng.integers(0, max(1, size))))
        return "external data file truncated"
    t = _pick(rng, ext)
    info = {e.key: e for e in t.external_data}
    if r < 0.7 and "offset" in info:
        info["offset"].value = str(_pick(rng, [10 ** 9, -8, 3, "abc"]))
        return f"initializer {t.name} offset -> {info['offset'].value}"
    if r < 0.85 and "location" in info:
        info["location"].value = str(_pick(rng, ["../../etc/passwd", "/dev/zero", "", "nope"]))
        return f"initializer {t.name} location -> {info['location'].value!r}"
    if "length" in info:
        info["length"].value = str(int(_pick(rng, [1, 10 ** 12, -1])))
        return f"initializer {t.name} length -> {info['length'].value}"
    del t.external_data[:]
    return f"initializer {t.name} external without location"


STRUCTURAL: dict[str, Mutation] = {
    "wrong_dims": wrong_dims, "negative_dims": negative_dims, "huge_dims": huge_dims,
    "dangling_input": dangling_input, "duplicate_output": duplicate_output, "cycle": cycle,
    "bogus_attribute": bogus_attribute, "unknown_domain": unknown_domain,
    "unknown_op": unknown_op, "opset": opset, "wrong_dtype": wrong_dtype,
    "removed_initializer": removed_initializer, "removed_node": removed_node,
    "removed_outputs": removed_outputs, "external_data": external_data,
}
BYTES = ("byte_flip", "truncate")
KINDS: tuple[str, ...] = tuple(STRUCTURAL) + BYTES


def _bytes(kind: str, path: str, rng: Rng) -> str:
    raw = bytearray(open(path, "rb").read())
    if kind == "truncate":
        cut = int(rng.integers(0, len(raw)))
        raw = raw[:cut]
        desc = f"cut at {cut} of {len(raw)}"
    else:
        k = int(rng.integers(1, 9))
        for i in rng.integers(0, len(raw), size=k):
            raw[int(i)] ^= int(rng.integers(1, 256))
        desc = f"{k} bytes flipped"
    with open(path, "wb") as f:
        f.write(bytes(raw))
    return desc


def mutate(kind: str, seed_folder: str, folder: str, rng: Rng) -> str:
    """Copy ``seed_folder`` to ``folder`` and apply mutation ``kind``; returns what it did."""
    shutil.copytree(seed_folder, folder)
    path = os.path.join(folder, MODEL)
    if kind in BYTES:
        return _bytes(kind, path, rng)
    m = onnx.load(path, load_external_data=False)
    desc = STRUCTURAL[kind](m, rng, folder)
    with open(path, "wb") as f:
        f.write(m.SerializeToString())
    return desc
