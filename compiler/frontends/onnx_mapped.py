"""Reading an ONNX file without its large inline weights, and writing a serialized model whose
weights never entered its proto.

A model file with its weights inline (``raw_data`` of the graph's initializers) is mostly those
bytes. ``read_mapped`` parses everything else and turns each large inline initializer into an
external-data reference to the model file itself (its ``raw_data``'s offset and length there),
so the weights are memory-mapped when something reads them (``onnx_io.tensor_to_const``) and the
model proto the frontend checks, shape-infers and walks is small.

``inline_parts`` is the way back for the exporter (``onnx_export.to_bytes``): a model built and
serialized with its large tensors set aside as placeholders gets their bytes as ``raw_data``,
giving exactly the bytes protobuf writes for the model holding them.

Protobuf's Python API does not say where a field's bytes lie, so the few fields on the way to
``raw_data`` are found by reading the wire format (tag varint, then the field's payload):
``ModelProto.graph`` (7) -> ``GraphProto.initializer`` (5) -> ``TensorProto.raw_data`` (9).
Every other byte is parsed (or serialized) by protobuf itself.
"""
from __future__ import annotations

import mmap
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, NamedTuple

if TYPE_CHECKING:
    import onnx

_MODEL_GRAPH, _GRAPH_INITIALIZER = 7, 5
_TENSOR_DATA_TYPE, _TENSOR_RAW_DATA, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 2, 9, 13, 14
# float_data, int32_data, string_data, int64_data, double_data, uint64_data: a tensor with one of
# these beside raw_data is invalid; it is parsed whole, for the checker to say so
_TENSOR_TYPED_DATA = frozenset((4, 5, 6, 7, 10, 11))
_LEN = 2  # wire type of length-delimited fields
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


class Unmappable(Exception):
    """The file's layout is not the one ``read_mapped`` reads (a field split in parts, a
    deprecated group, a truncated field): the caller parses the file whole, which also gives
    protobuf's own error for a corrupt file."""


class Field(NamedTuple):
    """One wire-format field of a message: its number and wire type, where its bytes start
    (tag), where its payload starts and where it ends."""

    number: int
    wire: int
    start: int
    payload: int
    end: int


def _varint(buf: "bytes | mmap.mmap", pos: int, end: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    value, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise Unmappable("a varint runs past its message")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def fields(buf: "bytes | mmap.mmap", start: int, end: int) -> Iterator[Field]:
    """The fields of the message whose bytes are ``buf[start:end]``, in order."""
    pos = start
    while pos < end:
        tag, p = _varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        payload = p
        if wire == 0:
            _, p = _varint(buf, p, end)
        elif wire == 1:
            p += 8
        elif wire == 5:
            p += 4
        elif wire == _LEN:
            n, payload = _varint(buf, p, end)
            p = payload + n
        else:
            raise Unmappable(f"wire type {wire} (a group) in field {number}")
        if p > end:
            raise Unmappable(f"field {number} runs past its message")
        yield Field(number, wire, pos, payload, p)
        pos = p


def _initializer(buf: "bytes | mmap.mmap", f: Field, min_bytes: int, numpy_types: frozenset[int]
                 ) -> tuple[bytes, tuple[int, int] | None]:
    """The TensorProto bytes of one initializer field, without its raw data when that is
    mapped, and the data's (offset, length) in the file (None: parsed whole)."""
    raw: list[Field] = []
    dtype, whole = 0, False
    for t in fields(buf, f.payload, f.end):
        if t.number == _TENSOR_RAW_DATA and t.wire == _LEN:
            raw.append(t)
        elif t.number == _TENSOR_DATA_TYPE and t.wire == 0:
            dtype = _varint(buf, t.payload, t.end)[0]
        elif t.number in (_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION) or \
                t.number in _TENSOR_TYPED_DATA:
            whole = True  # external already, or typed data beside the raw data
    if whole or len(raw) != 1 or raw[0].end - raw[0].payload < min_bytes or \
            dtype not in numpy_types:
        return buf[f.payload:f.end], None
    r = raw[0]
    return buf[f.payload:r.start] + buf[r.end:f.end], (r.payload, r.end - r.payload)


def read_mapped(path: Path, min_bytes: int, numpy_types: frozenset[int]
                ) -> "onnx.ModelProto | None":
    """The model in ``path`` with each inline initializer of at least ``min_bytes`` of raw data
    (of an element type in ``numpy_types``, ONNX codes) as external data located in the file
    itself; None when no initializer is that large. Raises ``Unmappable`` for a layout it
    does not read."""
    import onnx

    with open(path, "rb") as fh:
        if fh.seek(0, 2) == 0:
            raise Unmappable("empty file")
        buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        top = list(fields(buf, 0, len(buf)))
        graphs = [f for f in top if f.number == _MODEL_GRAPH]
        if len(graphs) != 1 or graphs[0].wire != _LEN:
            raise Unmappable("the graph field is not one message")
        g = graphs[0]
        rest: list[bytes] = []
        inits: list[tuple[bytes, tuple[int, int] | None]] = []
        for f in fields(buf, g.payload, g.end):
            if f.number == _GRAPH_INITIALIZER and f.wire == _LEN:
                inits.append(_initializer(buf, f, min_bytes, numpy_types))
            else:
                rest.append(buf[f.start:f.end])
        if all(where is None for _, where in inits):
            return None
        model = onnx.ModelProto()
        model.ParseFromString(b"".join(buf[f.start:f.end] for f in top if f is not g))
        model.graph.ParseFromString(b"".join(rest))
    finally:
        buf.close()
    location = path.name
    for data, where in inits:
        t = model.graph.initializer.add()
        t.ParseFromString(data)
        if where is not None:
            t.data_location = _EXTERNAL
            for k, v in (("location", location), ("offset", str(where[0])),
                         ("length", str(where[1]))):
                e = t.external_data.add()
                e.key, e.value = k, v
    return model


# ---- writing: large tensors' bytes put into a serialized model ---------------------------------

def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        if not n:
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def _len_header(number: int, length: int) -> bytes:
    """The tag and length of a length-delimited field."""
    return _varint_bytes(number << 3 | _LEN) + _varint_bytes(length)


def _inline_tensor(buf: bytes, f: Field, location: str, parts: "list[list[bytes | memoryview]]"
                   ) -> "tuple[list[bytes | memoryview], int] | None":
    """The pieces and byte count of one initializer with its placeholder external data
    (location ``location``, offset = index into ``parts``) replaced by ``raw_data``; None
    when the initializer is not a placeholder."""
    import onnx

    index = None
    for t in fields(buf, f.payload, f.end):
        if t.number == _TENSOR_EXTERNAL_DATA and t.wire == _LEN:
            e = onnx.StringStringEntryProto.FromString(buf[t.payload:t.end])
            if e.key == "location" and e.value != location:
                return None
            if e.key == "offset":
                index = int(e.value)
    if index is None:
        return None
    data = parts[index]
    n = sum(len(c) for c in data)
    before: list[bytes | memoryview] = []
    after: list[bytes | memoryview] = []
    for t in fields(buf, f.payload, f.end):
        if t.number in (_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION):
            continue
        if t.number == _TENSOR_RAW_DATA:
            raise ValueError("a placeholder tensor already has raw_data")
        (before if t.number < _TENSOR_RAW_DATA else after).append(buf[t.start:t.end])
    pieces = [*before, _len_header(_TENSOR_RAW_DATA, n), *data, *after]
    return pieces, sum(len(p) for p in pieces)


def inline_parts(skeleton: bytes, location: str, parts: "list[list[bytes | memoryview]]"
                 ) -> bytes:
    """The serialized model ``skeleton`` with each graph initializer whose external data is a
    placeholder (location ``location``, offset: index into ``parts``) holding those bytes as
    ``raw_data`` instead: the bytes protobuf writes for the model with the data inline (fields
    in number order), without the data ever entering a proto. Raises ValueError when a
    placeholder is missing or found twice."""
    top = list(fields(skeleton, 0, len(skeleton)))
    graphs = [f for f in top if f.number == _MODEL_GRAPH and f.wire == _LEN]
    if len(graphs) != 1:
        raise ValueError(f"the model has {len(graphs)} graph fields")
    g = graphs[0]
    pieces: list[bytes | memoryview] = []
    size, used = 0, 0
    for f in fields(skeleton, g.payload, g.end):
        got = _inline_tensor(skeleton, f, location, parts) if (
            f.number == _GRAPH_INITIALIZER and f.wire == _LEN) else None
        if got is None:
            pieces.append(skeleton[f.start:f.end])
            size += f.end - f.start
            continue
        tensor, n = got
        head = _len_header(_GRAPH_INITIALIZER, n)
        pieces += [head, *tensor]
        size += len(head) + n
        used += 1
    if used != len(parts):
        raise ValueError(f"{len(parts)} tensors were set aside, {used} placeholders found")
    return b"".join([skeleton[:g.start], _len_header(_MODEL_GRAPH, size), *pieces,
                     skeleton[g.end:]])
