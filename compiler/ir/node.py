"""Immutable, hash-consed IR nodes.

A node is built with :meth:`Node.build`; its output types are inferred by the op at that moment,
so a badly typed node cannot exist. Structurally equal pure nodes are the same Python object
(hash-consing), which gives structural equality, hashing and CSE for free.
"""
from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, NamedTuple

import numpy as np

from .types import DType, TensorType, ValueType


class Origin(NamedTuple):
    """Where a node came from (kept outside the structural hash)."""

    source: str  # "onnx", "fx", "pass:<name>", "text"
    name: str  # ONNX node name, FX node name, ...
    detail: str = ""  # user source line, ONNX op type, ...

    def __str__(self) -> str:
        s = f"{self.source}:{self.name}"
        return f"{s} ({self.detail})" if self.detail else s


# external constants over this many bytes are mapped on each use, not kept mapped (ConstData.array)
MAP_CACHE_BYTES = 1 << 20
_SPILL_CHUNK = 1 << 24  # bytes of a view copied at a time when it is spilled
_spill_folder: list[tuple[int, str]] = []  # (pid, folder) of this process


def spill_dir() -> str:
    """This process's folder of spilled constants (``ConstData.spilled``), made on first use and
    removed at exit."""
    import os

    if not _spill_folder or _spill_folder[0][0] != os.getpid():  # a forked child makes its own
        import atexit
        import tempfile

        d = tempfile.mkdtemp(prefix="graphopt-spill-")
        atexit.register(_remove_folder, d, os.getpid())
        _spill_folder[:] = [(os.getpid(), d)]
    return _spill_folder[0][1]


def _remove_folder(path: str, owner: int) -> None:
    """Remove a spill folder at exit, only in the process that made it."""
    import os
    import shutil

    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)


def _remove_file(path: str) -> None:
    import os

    try:
        os.unlink(path)
    except OSError:
        pass


class ConstData:
    """Handle to a constant's data. Hashes by identity, never by content.

    The data is either an in-memory numpy array, a lazily memory-mapped slice of an external file,
    or (for element types numpy lacks) a serialized ``onnx.TensorProto``. An external slice may
    come with ``file``, the binary file it was found in, held open: it is read from there, so a
    file replaced at its path after loading (a model optimized in place) is still read as it was.
    """

    __slots__ = ("_array", "_loader", "dtype", "shape", "onnx_proto", "external", "file",
                 "__weakref__")

    def __init__(self, array: np.ndarray | None = None, *, dtype: DType | None = None,
                 shape: tuple[int, ...] | None = None, loader: Any = None,
                 onnx_proto: bytes | None = None,
                 external: tuple[str, int, int] | None = None, file: Any = None) -> None:
        self._array = array
        self._loader = loader
        self.onnx_proto = onnx_proto
        self.external = external  # (path, offset, length) when the data lives in a file
        self.file = file  # the open file of ``external`` (None: opened by path when read)
        if array is not None:
            self.dtype = DType.from_numpy(array.dtype)
            self.shape = tuple(int(d) for d in array.shape)
        else:
            if dtype is None or shape is None:
                raise ValueError("ConstData without an array needs dtype and shape")
            self.dtype = dtype
            self.shape = tuple(int(d) for d in shape)

    @staticmethod
    def of(x: Any) -> "ConstData":
        return ConstData(np.asarray(x))

    @staticmethod
    def spilled(array: np.ndarray) -> "ConstData":
        """``array``'s data written to a temporary file (``spill_dir()``) and held as an
        external constant memory-mapped from it, so a large computed constant (a folded weight
        of a model with external data) is not held in memory. The file is removed when the
        ConstData is collected (the whole folder at exit)."""
        import os
        import tempfile

        arr = np.asarray(array)
        dt = arr.dtype.newbyteorder("<")
        fd, path = tempfile.mkstemp(dir=spill_dir(), suffix=".bin")
        with os.fdopen(fd, "wb") as f:
            if arr.ndim == 0 or arr.flags.c_contiguous:  # one pass, no copy
                f.write(memoryview(np.ascontiguousarray(arr, dt).reshape(-1)).cast("B"))
            else:  # a view (a transposed weight): copied a block along axis 0 at a time
                step = max(1, _SPILL_CHUNK // max(1, arr[0:1].nbytes))
                for i in range(0, arr.shape[0], step):
                    f.write(np.ascontiguousarray(arr[i:i + step], dt).tobytes())
        shape = tuple(int(d) for d in arr.shape)
        n = int(arr.nbytes)

        def load() -> np.ndarray:
            if n == 0:
                return np.zeros(shape, dt)
            return np.memmap(path, dtype=dt, mode="r", shape=shape)

        c = ConstData(dtype=DType.from_numpy(arr.dtype), shape=shape, loader=load,
                      external=(path, 0, n))
        weakref.finalize(c, _remove_file, path)
        return c

    @property
    def has_array(self) -> bool:
        return self._array is not None or self._loader is not None

    @property
    def array(self) -> np.ndarray:
        """The data as a numpy array. External data over ``MAP_CACHE_BYTES`` is mapped anew on
        each use and unmapped when the caller drops it: a graph holding the constant (the
        original, kept for the check) does not keep the pages it once read resident."""
        if self._array is not None:
            return self._array
        if self._loader is None:
            raise ValueError(f"constant of type {self.dtype.value} has no numpy form")
        a = self._loader()
        if self.external is None or self.nbytes <= MAP_CACHE_BYTES:
            self._array = a
        return a

    @property
    def loaded(self) -> bool:
        """Whether the data is held by this ConstData (read, converted or mapped and kept)."""
        return self._array is not None

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return int(n * self.dtype.itemsize)

    @property
    def type(self) -> TensorType:
        return TensorType(self.shape, self.dtype)

    def __repr__(self) -> str:
        return f"ConstData({self.dtype.value}{list(self.shape)})"


class Attrs(Mapping[str, Any]):
    """An immutable, hashable attribute mapping (values: int, float, str, bool, bytes, DType,
    None, ConstData, and tuples of those)."""

    __slots__ = ("_items", "_hash")

    def __init__(self, items: Mapping[str, Any] | None = None) -> None:
        d = dict(items or {})
        self._items: tuple[tuple[str, Any], ...] = tuple(
            (k, _freeze(d[k], k)) for k in sorted(d))
        self._hash = hash(self._items)

    def __getitem__(self, k: str) -> Any:
        for kk, v in self._items:
            if kk == k:
                return v
        raise KeyError(k)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Attrs) and self._items == other._items

    def replace(self, **kw: Any) -> "Attrs":
        d = dict(self._items)
        d.update(kw)
        return Attrs(d)

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k}={v!r}" for k, v in self._items) + "}"


def _freeze(v: Any, k: str) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x, k) for x in v)
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        raise TypeError(f"attribute {k!r}: arrays are not attributes; use a constant input")
    if v is None or isinstance(v, (bool, int, float, str, bytes, DType, ConstData, TensorType)):
        return v
    from .types import OpaqueType

    if isinstance(v, OpaqueType):
        return v
    raise TypeError(f"attribute {k!r}: unsupported value {v!r} of type {type(v).__name__}")


class Value(NamedTuple):
    """One output of a node."""

    node: "Node"
    index: int = 0

    @property
    def type(self) -> ValueType:
        return self.node.out_types[self.index]

    def __repr__(self) -> str:
        return f"Value({self.node.op}#{self.node.uid}:{self.index})"


_intern: "weakref.WeakValueDictionary[tuple, Node]" = weakref.WeakValueDictionary()
_counter = itertools.count()


class Node:
    """An immutable IR node. Build with :meth:`Node.build`."""

    __slots__ = ("op", "inputs", "attrs", "out_types", "origin", "uid", "_key", "__weakref__")

    op: str
    inputs: tuple[Value, ...]
    attrs: Attrs
    out_types: tuple[ValueType, ...]
    origin: Origin | None
    uid: int

    def __init__(self) -> None:  # pragma: no cover - use Node.build
        raise TypeError("use Node.build(op, inputs, attrs)")

    @staticmethod
    def build(op: str, inputs: "tuple[Value, ...] | list[Value]" = (),
              attrs: Mapping[str, Any] | None = None, origin: Origin | None = None) -> "Node":
        """Build (or find) the node ``op(inputs) {attrs}``; infers and checks output types."""
        from ..ops.registry import get_op

        opdef = get_op(op)
        ins = tuple(v if isinstance(v, Value) else Value(*v) for v in inputs)
        for v in ins:
            if not isinstance(v.node, Node):
                raise TypeError(f"{op}: input {v!r} is not a Value")
        a = attrs if isinstance(attrs, Attrs) else Attrs(attrs)
        a = opdef.normalize_attrs(tuple(v.type for v in ins), a)
        in_key = tuple((id(v.node), v.index) for v in ins)
        key: tuple = (op, a, in_key)
        if not opdef.pure:
            key = key + (next(_counter),)
        found = _intern.get(key)
        if found is not None:
            return found
        out_types = opdef.checked_infer(tuple(v.type for v in ins), a, origin)
        return Node._make(op, ins, a, tuple(out_types), origin, key)

    def with_inputs(self, inputs: "tuple[Value, ...] | list[Value]") -> "Node":
        """The same op and attrs over new inputs (the node itself when nothing changed).
        Inputs of the same types as the old ones give the same normalized attrs and output
        types (an op's ``normalize_attrs`` and ``infer`` read only the input types and the
        attrs), so the node is found or made without inferring again."""
        inputs = tuple(inputs)
        if inputs == self.inputs and all(a.node is b.node for a, b in zip(inputs, self.inputs)):
            return self
        ins = tuple(v if isinstance(v, Value) else Value(*v) for v in inputs)
        if len(ins) != len(self.inputs) or not all(
                isinstance(v.node, Node) and v.node.out_types[v.index] == w.type
                for v, w in zip(ins, self.inputs)):
            # an impure node is never shared: rebuilding it makes a new one with the same origin
            return Node.build(self.op, ins, self.attrs, self.origin)
        from ..ops.registry import get_op

        key: tuple = (self.op, self.attrs, tuple((id(v.node), v.index) for v in ins))
        if not get_op(self.op).pure:  # never shared: a fresh key
            key = key + (next(_counter),)
        else:
            found = _intern.get(key)
            if found is not None:
                return found
        return Node._make(self.op, ins, self.attrs, self.out_types, self.origin, key)

    @staticmethod
    def _make(op: str, ins: "tuple[Value, ...]", attrs: Attrs,
              out_types: "tuple[ValueType, ...]", origin: Origin | None, key: tuple) -> "Node":
        """A new node (its types already inferred), interned under ``key``."""
        n = object.__new__(Node)
        n.op, n.inputs, n.attrs, n.out_types, n.origin = op, ins, attrs, out_types, origin
        n.uid = next(_counter)
        n._key = key
        _intern[key] = n
        return n

    @property
    def outputs(self) -> tuple[Value, ...]:
        return tuple(Value(self, i) for i in range(len(self.out_types)))

    @property
    def out(self) -> Value:
        if len(self.out_types) != 1:
            raise ValueError(f"{self.op} has {len(self.out_types)} outputs")
        return Value(self, 0)

    @property
    def type(self) -> ValueType:
        if len(self.out_types) != 1:
            raise ValueError(f"{self.op} has {len(self.out_types)} outputs")
        return self.out_types[0]

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    @property
    def where(self) -> str:
        """How errors name the node: ``node <op> #<uid> [origin]`` (an opaque node with its
        ONNX / aten op type)."""
        what = self.op if self.op != "opaque" else f"opaque {self.attrs.get('op_type', '')}"
        return f"node {what} #{self.uid}" + (f" [{self.origin}]" if self.origin else "")

    @property
    def is_constant(self) -> bool:
        return self.op == "constant"

    @property
    def const(self) -> ConstData:
        if self.op != "constant":
            raise ValueError(f"{self.op} is not a constant")
        return self.attrs["data"]

    def __repr__(self) -> str:
        return f"<Node #{self.uid} {self.op} -> {', '.join(map(str, self.out_types))}>"

    # identity semantics: hash-consing makes structural equality identity for pure nodes
    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other


# convenience builders -------------------------------------------------------------------------

def input_node(name: str, type: ValueType) -> Node:
    return Node.build("input", (), {"name": name, "type": type})


def constant(x: Any, origin: Origin | None = None) -> Value:
    data = x if isinstance(x, ConstData) else ConstData.of(x)
    return Node.build("constant", (), {"data": data}, origin).out


def op(name: str, *inputs: Value, origin: Origin | None = None, **attrs: Any) -> Value:
    """Build a single-output node and return its value: ``op("add", a, b)``."""
    return Node.build(name, inputs, attrs, origin).out


def op_multi(name: str, *inputs: Value, origin: Origin | None = None,
             **attrs: Any) -> tuple[Value, ...]:
    return Node.build(name, inputs, attrs, origin).outputs


@dataclass(frozen=True)
class NodeRef:
    """A printable reference to a node for error messages."""

    node: Node

    def __str__(self) -> str:
        o = f" [{self.node.origin}]" if self.node.origin else ""
        return f"{self.node.op} #{self.node.uid}{o}"
