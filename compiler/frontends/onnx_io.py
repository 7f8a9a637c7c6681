"""Reading and writing ONNX files: model protos, tensor data (inline, external, numpy-less dtypes)
and atomic writes. Shared by the ONNX frontend (``onnx.py``) and exporter (``onnx_export.py``)."""
from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from ..errors import ExportError, FrontendError
from ..ir.node import ConstData
from ..ir.types import INT4_RANGE, DType

if TYPE_CHECKING:
    import onnx

# ONNX TensorProto.DataLocation.EXTERNAL
_EXTERNAL = 1
# tensors smaller than this stay inline even when a model is written with external data
INLINE_LIMIT = 1024
_ALIGN = 64


_A_GRAPH, _A_GRAPHS = 5, 10  # onnx.AttributeProto.GRAPH / GRAPHS


def subgraphs(a: "onnx.AttributeProto") -> list["onnx.GraphProto"]:
    """The subgraphs an attribute holds (If branches, Loop/Scan bodies), else []."""
    if a.type == _A_GRAPH:
        return [a.g]
    if a.type == _A_GRAPHS:
        return list(a.graphs)
    return []


def read_model(path: str | Path, *, map_initializers: bool = False) -> "onnx.ModelProto":
    """Parse an ONNX file without loading external data; errors name the file.
    map_initializers: inline initializers of ``MAP_MIN_BYTES`` or more (numpy element types)
    are not read but come back as external data located in the model file itself (the offset
    and length of their ``raw_data`` there; ``onnx_mapped``), memory-mapped when read."""
    import onnx
    from google.protobuf.message import DecodeError

    from .onnx_mapped import Unmappable, read_mapped

    p = Path(path)
    if not p.exists():
        raise FrontendError("no such file", where=str(p))
    if p.is_dir():
        raise FrontendError("is a directory, not an ONNX file", where=str(p))
    try:
        mapped = None
        if map_initializers:
            try:
                mapped = read_mapped(p.resolve(), MAP_MIN_BYTES, _mappable_types())
            except Unmappable:
                mapped = None  # another layout: parsed whole below (protobuf names any fault)
        m = mapped if mapped is not None else onnx.load(str(p), load_external_data=False)
    except DecodeError as e:
        raise FrontendError(f"not an ONNX model (protobuf does not parse: {e})",
                            where=str(p)) from None
    except (OSError, ValueError, RuntimeError) as e:
        raise FrontendError(f"cannot read ONNX model: {type(e).__name__}: {e}",
                            where=str(p)) from None
    check_model_shape(m, str(p))
    return m


def check_model_shape(m: "onnx.ModelProto", source: str) -> None:
    """Reject protos that parse but are not models (random bytes, truncated files)."""
    if not m.HasField("graph"):
        raise FrontendError("not an ONNX model (no graph; truncated or not an ONNX file?)",
                            where=source)
    if m.ir_version <= 0:
        raise FrontendError("not an ONNX model (no ir_version)", where=source)
    if m.ir_version >= 3 and len(m.opset_import) == 0:
        raise FrontendError("no opset_import (truncated file?)", where=source)
    if not m.graph.output:
        raise FrontendError("the graph has no outputs", where=source)
    bad = _non_utf8(m, "model")
    if bad is not None:
        raise FrontendError(f"{bad} is not valid UTF-8 (corrupt file?)", where=source)
    bad = _bad_elem_type(m.graph)
    if bad is not None:
        raise FrontendError(bad, where=source)
    for vi in m.graph.input:  # a model input of no element type cannot be fed
        if vi.type.WhichOneof("value") == "tensor_type" and vi.type.tensor_type.elem_type == 0:
            raise FrontendError(f"graph input {vi.name!r} has no element type (UNDEFINED)",
                                where=source)
    seen: set[str] = set()
    for o in m.graph.output:
        if o.name in seen:  # ONNX Runtime allows it; an IR graph's outputs have distinct names
            raise FrontendError(f"graph output {o.name!r} is listed twice; graphopt needs "
                                f"distinct output names", where=source)
        seen.add(o.name)


def _bad_elem_type(g: "onnx.GraphProto") -> str | None:
    """Why a value of ``g`` (or of its subgraphs) declares an element type that is not one of
    ONNX's ``TensorProto.DataType`` codes; None when all are known."""
    from onnx import TensorProto

    known = set(TensorProto.DataType.values())

    def elem_types(tp: "onnx.TypeProto") -> list[int]:
        kind = tp.WhichOneof("value")
        if kind in ("tensor_type", "sparse_tensor_type"):
            return [getattr(tp, kind).elem_type]
        if kind == "sequence_type":
            return elem_types(tp.sequence_type.elem_type)
        if kind == "optional_type":
            return elem_types(tp.optional_type.elem_type)
        if kind == "map_type":
            return [tp.map_type.key_type, *elem_types(tp.map_type.value_type)]
        return []

    for vi in list(g.input) + list(g.output) + list(g.value_info):
        for et in elem_types(vi.type):
            if et not in known:
                return f"value {vi.name!r} has element type {et}, not an ONNX type"
    for n in g.node:
        for a in n.attribute:
            for sub in subgraphs(a):
                bad = _bad_elem_type(sub)
                if bad is not None:
                    return f"node {n.name or n.op_type!r} ({n.op_type}): {bad}"
    return None


def _non_utf8(msg: Any, path: str) -> str | None:
    """Where a text field of ``msg`` (recursively) holds bytes that are not UTF-8: protobuf
    hands such a field to Python as ``bytes``, and writing it back raises. None when all are
    valid."""
    from google.protobuf.descriptor import FieldDescriptor

    for fd, value in msg.ListFields():
        if fd.type == FieldDescriptor.TYPE_STRING:
            vals = value if fd.is_repeated else [value]
            for v in vals:
                if not isinstance(v, str):
                    return f"{path}.{fd.name} ({v[:40]!r})"
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            vals = value if fd.is_repeated else [value]
            for i, v in enumerate(vals):
                label = getattr(v, "name", "") if isinstance(getattr(v, "name", ""), str) else ""
                where = _non_utf8(v, f"{path}.{fd.name}[{label or i}]")
                if where is not None:
                    return where
    return None


# inline initializers of at least this many bytes are mapped from the model file when it is read
# with ``read_model(path, map_initializers=True)``
MAP_MIN_BYTES = 1 << 16


def _mappable_types() -> frozenset[int]:
    """ONNX element type codes whose raw data maps to a numpy array (not strings, not 4-bit)."""
    return frozenset(d.to_onnx() for d in DType
                     if _has_numpy(d) and d != DType.string and d not in INT4_RANGE)


def externals_as_inputs(m: "onnx.ModelProto") -> "onnx.ModelProto":
    """For checking a model in memory: a copy whose external initializers are typed graph
    inputs instead (the checker would look for their files relative to the working directory
    and read them; the frontend checks them with ``check_external_files``, the exporter's
    placeholders have none); ``m`` itself when it has none."""
    import onnx
    from onnx import helper

    ext = [t for t in m.graph.initializer if t.data_location == _EXTERNAL]
    if not ext:
        return m
    c = onnx.ModelProto()
    c.CopyFrom(m)
    keep = [t for t in c.graph.initializer if t.data_location != _EXTERNAL]
    del c.graph.initializer[:]
    c.graph.initializer.extend(keep)
    declared = {i.name for i in c.graph.input}
    c.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                         for t in ext if t.name not in declared)
    return c


# ---- tensors -> ConstData ---------------------------------------------------------------------

def tensor_dtype(t: "onnx.TensorProto", where: str) -> DType:
    try:
        return DType.from_onnx(t.data_type)
    except TypeError:
        raise FrontendError(f"tensor {t.name!r} has unknown element type {t.data_type}",
                            where=where) from None


def _has_numpy(dt: DType) -> bool:
    try:
        dt.to_numpy()
        return True
    except TypeError:
        return dt == DType.string


def tensor_to_const(t: "onnx.TensorProto", base_dir: Path | None, where: str) -> ConstData:
    """ConstData for one TensorProto: lazily converted inline data, a lazily memory-mapped
    external slice, or (dtypes numpy lacks) the serialized proto."""
    from onnx import numpy_helper

    dt = tensor_dtype(t, where)
    shape = tuple(int(d) for d in t.dims)
    if any(d < 0 for d in shape):
        raise FrontendError(f"tensor {t.name!r} has negative dims {list(shape)}", where=where)
    if t.data_location == _EXTERNAL:
        return _external_const(t, dt, shape, base_dir, where)
    check_inline_size(t, dt, shape, where)
    if not _has_numpy(dt):
        return ConstData(dtype=dt, shape=shape, onnx_proto=t.SerializeToString())
    proto = t

    def load() -> np.ndarray:
        a = numpy_helper.to_array(proto)
        return a.astype(object) if dt == DType.string else a

    return ConstData(dtype=dt, shape=shape, loader=load)


# which typed field holds a dtype's inline values, and how many per element
_FIELDS: dict[DType, tuple[str, int]] = {
    DType.f32: ("float_data", 1), DType.c64: ("float_data", 2), DType.f64: ("double_data", 1),
    DType.c128: ("double_data", 2), DType.i64: ("int64_data", 1), DType.u32: ("uint64_data", 1),
    DType.u64: ("uint64_data", 1), DType.string: ("string_data", 1),
    **{d: ("int32_data", 1) for d in (DType.i32, DType.i16, DType.i8, DType.u8, DType.u16,
                                      DType.bool, DType.f16, DType.bf16)},
}


def check_inline_size(t: "onnx.TensorProto", dt: DType, shape: tuple[int, ...], where: str
                      ) -> None:
    """A FrontendError naming the tensor when its inline data does not hold ``shape``'s
    element count of ``dt`` (a raw_data length or a typed field's value count)."""
    numel = math.prod(shape)
    what = f"tensor {t.name!r} of {dt.value}{list(shape)}"
    if t.HasField("raw_data"):
        if dt == DType.string:
            raise FrontendError(f"{what} has raw_data (strings cannot)", where=where)
        want = math.ceil(numel * dt.itemsize)
        if len(t.raw_data) != want:
            raise FrontendError(f"{what} needs {want} bytes of data, raw_data has "
                                f"{len(t.raw_data)}", where=where)
        return
    field, per = _FIELDS.get(dt, ("", 0))
    if not field:
        return
    have = len(getattr(t, field))
    if have != numel * per:
        raise FrontendError(f"{what} needs {numel * per} values in {field}, it has {have}",
                            where=where)


def check_external_files(m: "onnx.ModelProto", base_dir: Path | None, source: str) -> None:
    """Every external initializer's file exists and is long enough (errors name the model,
    the initializer and the path)."""
    for t in m.graph.initializer:
        if t.data_location == _EXTERNAL:
            tensor_to_const(t, base_dir, source)


def _byte_count(info: dict[str, str], key: str, default: int, name: str, where: str) -> int:
    """The external-data entry ``key`` (offset, length) as a byte count >= 0."""
    if key not in info:
        return default
    try:
        v = int(info[key])
    except ValueError:
        v = -1
    if v < 0:
        raise FrontendError(f"initializer {name!r}: external data {key} {info[key]!r} is not "
                            f"a byte count", where=where)
    return v


def _external_const(t: "onnx.TensorProto", dt: DType, shape: tuple[int, ...],
                    base_dir: Path | None, where: str) -> ConstData:
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location")
    if not loc:
        raise FrontendError(f"initializer {t.name!r} is external but names no location",
                            where=where)
    if base_dir is None:
        raise FrontendError(f"initializer {t.name!r} has external data {loc!r} but the model "
                            f"was given in memory; load it from its file", where=where)
    rel = os.path.normpath(loc)
    if os.path.isabs(loc) or rel == ".." or rel.startswith(".." + os.sep):
        raise FrontendError(f"initializer {t.name!r}: external data location {loc!r} is "
                            f"outside the model's folder", where=where)
    path = (base_dir / loc).resolve()
    if not path.is_file():
        raise FrontendError(f"initializer {t.name!r}: external data file {str(path)!r} is "
                            f"missing", where=where)
    numel = math.prod(shape)
    want = int(np.ceil(numel * dt.itemsize))
    offset = _byte_count(info, "offset", 0, t.name, where)
    length = _byte_count(info, "length", want, t.name, where)
    fh = shared_file(path)
    size = os.fstat(fh.fileno()).st_size
    if offset + length > size:
        raise FrontendError(f"initializer {t.name!r}: external data {str(path)!r} has {size} "
                            f"bytes, needs {offset + length} (offset {offset}, length {length})",
                            where=where)
    if dt in INT4_RANGE:  # packed two values a byte: read and unpacked on first use
        if length != want:
            raise FrontendError(f"initializer {t.name!r}: external length {length} does not "
                                f"match {dt.value}{list(shape)} ({want} bytes)", where=where)

        def load_packed() -> np.ndarray:
            return unpack_int4(b"".join(_read_chunks(fh, offset, length)), dt, shape)

        return ConstData(dtype=dt, shape=shape, loader=load_packed,
                         external=(str(path), offset, length), file=fh)
    if _has_numpy(dt) and dt != DType.string:
        if length != want:
            raise FrontendError(f"initializer {t.name!r}: external length {length} does not "
                                f"match {dt.value}{list(shape)} ({want} bytes)", where=where)
        np_dt = dt.to_numpy().newbyteorder("<")

        def load() -> np.ndarray:
            if length == 0:
                return np.zeros(shape, np_dt)
            return np.memmap(fh, dtype=np_dt, mode="r", offset=offset, shape=shape)

        return ConstData(dtype=dt, shape=shape, loader=load,
                         external=(str(path), offset, length), file=fh)
    # numpy-less dtype: the bytes stay in the file; the proto keeps dtype and dims
    return ConstData(dtype=dt, shape=shape, onnx_proto=t.SerializeToString(),
                     external=(str(path), offset, length), file=fh)


class DataFile(io.FileIO):
    """A data file held open by the constants read from it, closed when the last one goes."""

    def __del__(self) -> None:
        self.close()


# the data files constants were found in, open while a constant reads from them, by path and
# identity: a file replaced at its path is a new entry, the old one still read by its constants
_open_files: "weakref.WeakValueDictionary[tuple[str, int, int, int, int], DataFile]" = \
    weakref.WeakValueDictionary()


def shared_file(path: Path) -> DataFile:
    """``path`` opened for reading, one file object for all constants of the same file (as it
    is now: its device, inode, size and modification time)."""
    st = path.stat()
    key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    fh = _open_files.get(key)
    if fh is None:
        fh = DataFile(path, "rb")
        _open_files[key] = fh
    return fh


def sparse_to_dense(sp: "onnx.SparseTensorProto", where: str) -> np.ndarray:
    """Dense numpy array of a SparseTensorProto (COO values + linear or per-dim indices)."""
    from onnx import numpy_helper

    vals = numpy_helper.to_array(sp.values)
    idx = numpy_helper.to_array(sp.indices).astype(np.int64)
    shape = tuple(int(d) for d in sp.dims)
    out = np.zeros(shape, vals.dtype)
    flat = out.reshape(-1)
    if idx.ndim == 2:
        idx = np.ravel_multi_index(tuple(idx.T), shape) if idx.size else idx.reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= flat.size):
        raise FrontendError(f"sparse tensor {sp.values.name!r}: index out of range", where=where)
    flat[idx] = vals.reshape(-1)
    return out


# ---- 4-bit integers ---------------------------------------------------------------------------

def pack_int4(arr: np.ndarray) -> bytes:
    """ONNX's layout of a u4 / i4 array: two values a byte, the first in the low nibble (an
    odd count leaves the last high nibble 0)."""
    v = np.asarray(arr).reshape(-1).view(np.uint8) & 0x0F
    if v.size % 2:
        v = np.concatenate([v, np.zeros(1, np.uint8)])
    return (v[0::2] | (v[1::2] << 4)).astype(np.uint8).tobytes()


def unpack_int4(raw: bytes, dt: DType, shape: tuple[int, ...]) -> np.ndarray:
    """The ``dt`` (u4 or i4) array of ``shape`` packed in ``raw`` (see ``pack_int4``)."""
    b = np.frombuffer(raw, np.uint8)
    v = np.empty(2 * b.size, np.uint8)
    v[0::2], v[1::2] = b & 0x0F, b >> 4
    v = v[:int(np.prod(shape)) if shape else 1]
    vals = (v.astype(np.int8) ^ 8) - 8 if dt == DType.i4 else v  # sign-extend the nibbles
    return vals.astype(dt.to_numpy()).reshape(shape)


# ---- ConstData -> TensorProto -----------------------------------------------------------------

class DataSink:
    """Appends tensor bytes to an (already opened, temporary) external data file."""

    def __init__(self, f: BinaryIO, location: str, temp_path: Path) -> None:
        self.f = f
        self.location = location  # the final file name the model refers to
        self.temp_path = temp_path  # where the bytes are until the write commits
        self.offset = 0

    def write(self, chunks: Any) -> tuple[int, int]:
        pad = (-self.offset) % _ALIGN
        if pad:
            self.f.write(b"\0" * pad)
            self.offset += pad
        start, n = self.offset, 0
        for c in chunks:
            self.f.write(c)
            n += len(c)
        self.offset += n
        return start, n


class MemorySink:
    """Sets large tensors' bytes aside while a model is built (``onnx_mapped.inline_parts`` puts
    them into the serialized model as raw_data): the proto never holds the weights, so building
    and serializing it copies none. A tensor set aside is a placeholder: external data at
    ``location`` with its index in ``parts`` as offset."""

    location = "<graphopt: bytes set aside>"

    def __init__(self) -> None:
        self.parts: list[list[bytes | memoryview]] = []

    def write(self, chunks: Any) -> tuple[int, int]:
        got = [c if isinstance(c, (bytes, memoryview)) else bytes(c) for c in chunks]
        self.parts.append(got)
        return len(self.parts) - 1, sum(len(c) for c in got)


def _read_chunks(src: "str | DataFile", offset: int, length: int, chunk: int = 1 << 24
                 ) -> Any:
    """``length`` bytes at ``offset`` of a file (a path, or an open file read at absolute
    positions), in chunks."""
    name = src if isinstance(src, str) else getattr(src, "name", "?")
    try:
        with contextlib.ExitStack() as stack:
            fd = (stack.enter_context(open(src, "rb")) if isinstance(src, str) else src).fileno()
            pos, left = offset, length
            while left > 0:
                b = os.pread(fd, min(chunk, left), pos)
                if not b:
                    raise ExportError(f"external data {name!r} ends before offset "
                                      f"{offset + length}")
                pos += len(b)
                left -= len(b)
                yield b
    except OSError as e:
        raise ExportError(f"cannot read external data {name!r}: {e}") from None


def _file_view(src: "str | DataFile", offset: int, length: int) -> memoryview:
    """``length`` bytes at ``offset`` of a file as a read-only view of its memory map."""
    import mmap

    name = src if isinstance(src, str) else getattr(src, "name", "?")
    if length == 0:
        return memoryview(b"")
    try:
        with contextlib.ExitStack() as stack:
            f = stack.enter_context(open(src, "rb")) if isinstance(src, str) else src
            if os.fstat(f.fileno()).st_size < offset + length:
                raise ExportError(f"external data {name!r} ends before offset "
                                  f"{offset + length}")
            start = offset - offset % mmap.ALLOCATIONGRANULARITY
            mm = mmap.mmap(f.fileno(), offset + length - start, access=mmap.ACCESS_READ,
                           offset=start)
    except OSError as e:
        raise ExportError(f"cannot read external data {name!r}: {e}") from None
    return memoryview(mm)[offset - start:]


def const_to_tensor(data: ConstData, name: str, sink: "DataSink | MemorySink | None"
                    ) -> "onnx.TensorProto":
    """A TensorProto named ``name`` holding ``data``: inline, or in ``sink`` when it is given and
    the tensor is larger than INLINE_LIMIT bytes."""
    import onnx
    from onnx import numpy_helper

    big = sink is not None and data.nbytes > INLINE_LIMIT
    if data.external is not None:
        path, offset, length = data.external
        t = onnx.TensorProto()
        if data.onnx_proto is not None:
            t.ParseFromString(data.onnx_proto)
            del t.external_data[:]
            t.data_location = 0
        t.name = name
        t.data_type = data.dtype.to_onnx()
        del t.dims[:]
        t.dims.extend(data.shape)
        src = data.file if data.file is not None else path
        if isinstance(sink, MemorySink) and big:  # a view of the file: copied once, into place
            _to_sink(t, sink, [_file_view(src, offset, length)])
        elif big:
            assert sink is not None
            _to_sink(t, sink, _read_chunks(src, offset, length))
        else:
            t.raw_data = b"".join(_read_chunks(src, offset, length))
        return t
    if data.onnx_proto is not None:
        t = onnx.TensorProto()
        t.ParseFromString(data.onnx_proto)
        t.name = name
        if big and t.HasField("raw_data"):
            assert sink is not None
            raw = t.raw_data
            t.ClearField("raw_data")
            _to_sink(t, sink, [raw])
        return t
    arr = np.asarray(data.array)
    if data.dtype == DType.string:
        t = numpy_helper.from_array(arr.astype(object), name)
        return t
    if data.dtype in INT4_RANGE:
        t = onnx.TensorProto()
        t.name = name
        t.data_type = data.dtype.to_onnx()
        t.dims.extend(data.shape)
        packed = pack_int4(arr.astype(data.dtype.to_numpy()))
        if big:
            assert sink is not None
            _to_sink(t, sink, [packed])
        else:
            t.raw_data = packed
        return t
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).reshape(data.shape)
    if big:
        assert sink is not None
        t = onnx.TensorProto()
        t.name = name
        t.data_type = data.dtype.to_onnx()
        t.dims.extend(data.shape)
        _to_sink(t, sink, [memoryview(arr.reshape(-1)).cast("B")])
        return t
    return numpy_helper.from_array(arr, name)


def _to_sink(t: "onnx.TensorProto", sink: "DataSink | MemorySink", chunks: Any) -> None:
    off, n = sink.write(chunks)
    t.data_location = _EXTERNAL
    del t.external_data[:]
    for k, v in (("location", sink.location), ("offset", str(off)), ("length", str(n))):
        e = t.external_data.add()
        e.key, e.value = k, v


# ---- atomic writes ----------------------------------------------------------------------------

def _umask() -> int:
    """The process's file mode creation mask (read from /proc, else set and restored)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class AtomicFiles:
    """Temp files in the target's directory, moved into place together on success and removed
    on failure: ``with AtomicFiles() as af: f = af.open(path); ...``."""

    def __init__(self) -> None:
        self._files: list[tuple[str, Path, BinaryIO]] = []

    def open(self, target: Path) -> BinaryIO:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=str(target.parent), prefix=f".{target.name}.",
                                   suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())  # as open() would make it, not mkstemp's 0600
        f = os.fdopen(fd, "wb")
        self._files.append((tmp, target, f))
        return f

    def temp_of(self, f: BinaryIO) -> Path:
        for tmp, _t, ff in self._files:
            if ff is f:
                return Path(tmp)
        raise KeyError("not a file of this AtomicFiles")

    def __enter__(self) -> "AtomicFiles":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        ok = exc_type is None
        try:
            for _tmp, _t, f in self._files:
                if not f.closed:
                    if ok:
                        f.flush()
                        os.fsync(f.fileno())
                    f.close()
            if ok:
                # data files first, the model (opened first) last
                for tmp, target, _f in reversed(self._files):
                    os.replace(tmp, target)
        finally:
            for tmp, _t, _f in self._files:
                if os.path.exists(tmp):
                    os.unlink(tmp)
