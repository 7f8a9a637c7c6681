"""Value types of the IR: dtypes, dims (int or symbolic), tensor types and opaque types."""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import numpy as np

if TYPE_CHECKING:
    import torch


class DType(enum.Enum):
    """Element types. The value is the short name used in the text form."""

    f16 = "f16"
    bf16 = "bf16"
    f32 = "f32"
    f64 = "f64"
    i8 = "i8"
    i16 = "i16"
    i32 = "i32"
    i64 = "i64"
    u8 = "u8"
    u16 = "u16"
    u32 = "u32"
    u64 = "u64"
    bool = "bool"
    c64 = "c64"
    c128 = "c128"
    string = "string"
    # types only opaque ONNX nodes produce or consume (no numpy/torch counterpart here), except
    # u4 / i4: numpy ml_dtypes.uint4 / int4 (a value a byte in memory, two a byte in ONNX files),
    # torch.uint4 / torch.int4 (views of uint8 / int8 storage: see numpy_to_torch)
    f8e4m3fn = "f8e4m3fn"
    f8e4m3fnuz = "f8e4m3fnuz"
    f8e5m2 = "f8e5m2"
    f8e5m2fnuz = "f8e5m2fnuz"
    u4 = "u4"
    i4 = "i4"
    f4e2m1 = "f4e2m1"
    u2 = "u2"
    i2 = "i2"
    f8e8m0 = "f8e8m0"

    @property
    def is_float(self) -> bool:
        return self in _FLOATS

    @property
    def is_int(self) -> bool:
        return self in _INTS

    @property
    def itemsize(self) -> float:
        return _ITEMSIZE[self]

    def to_numpy(self) -> np.dtype:
        if self in INT4_RANGE:  # ml_dtypes loads on first use (its import takes ~0.4 s)
            import ml_dtypes

            return np.dtype(getattr(ml_dtypes, _INT4_NUMPY[self]))
        if self not in _TO_NUMPY:
            raise TypeError(f"dtype {self.value} has no numpy counterpart")
        return np.dtype(_TO_NUMPY[self])

    @staticmethod
    def from_numpy(dt: np.dtype | type) -> "DType":
        dt = np.dtype(dt)
        if dt.kind == "V" and dt.name in _INT4_NUMPY.values():  # ml_dtypes.uint4 / int4
            return next(k for k, v in _INT4_NUMPY.items() if v == dt.name)
        for k, v in _TO_NUMPY.items():
            if np.dtype(v) == dt:
                return k
        if dt.kind in ("U", "S", "O"):
            return DType.string
        raise TypeError(f"numpy dtype {dt} has no graphopt counterpart")

    def to_torch(self):  # -> torch.dtype
        import torch

        table = {
            DType.f16: torch.float16, DType.bf16: torch.bfloat16, DType.f32: torch.float32,
            DType.f64: torch.float64, DType.i8: torch.int8, DType.i16: torch.int16,
            DType.i32: torch.int32, DType.i64: torch.int64, DType.u8: torch.uint8,
            DType.bool: torch.bool, DType.c64: torch.complex64, DType.c128: torch.complex128,
            DType.u16: torch.uint16, DType.u32: torch.uint32, DType.u64: torch.uint64,
            DType.u4: torch.uint4, DType.i4: torch.int4,
        }
        if self not in table:
            raise TypeError(f"dtype {self.value} has no torch counterpart")
        return table[self]

    @staticmethod
    def from_torch(dt) -> "DType":
        import torch

        for d in DType:
            try:
                if d.to_torch() == dt:
                    return d
            except TypeError:
                continue
        raise TypeError(f"torch dtype {dt} has no graphopt counterpart ({torch.__version__})")

    def to_onnx(self) -> int:
        return _ONNX[self]

    @staticmethod
    def from_onnx(code: int) -> "DType":
        for k, v in _ONNX.items():
            if v == code:
                return k
        raise TypeError(f"ONNX element type {code} has no graphopt counterpart")


_FLOATS = {DType.f16, DType.bf16, DType.f32, DType.f64, DType.f8e4m3fn, DType.f8e4m3fnuz,
           DType.f8e5m2, DType.f8e5m2fnuz, DType.f4e2m1, DType.f8e8m0}
_INTS = {DType.i8, DType.i16, DType.i32, DType.i64, DType.u8, DType.u16, DType.u32, DType.u64,
         DType.i4, DType.u4, DType.i2, DType.u2}
_ITEMSIZE: dict[DType, float] = {
    DType.f16: 2, DType.bf16: 2, DType.f32: 4, DType.f64: 8, DType.i8: 1, DType.i16: 2,
    DType.i32: 4, DType.i64: 8, DType.u8: 1, DType.u16: 2, DType.u32: 4, DType.u64: 8,
    DType.bool: 1, DType.c64: 8, DType.c128: 16, DType.string: 8, DType.f8e4m3fn: 1,
    DType.f8e4m3fnuz: 1, DType.f8e5m2: 1, DType.f8e5m2fnuz: 1, DType.u4: 0.5, DType.i4: 0.5,
    DType.f4e2m1: 0.5, DType.u2: 0.25, DType.i2: 0.25, DType.f8e8m0: 1,
}
_TO_NUMPY = {
    DType.f16: np.float16, DType.f32: np.float32, DType.f64: np.float64, DType.i8: np.int8,
    DType.i16: np.int16, DType.i32: np.int32, DType.i64: np.int64, DType.u8: np.uint8,
    DType.u16: np.uint16, DType.u32: np.uint32, DType.u64: np.uint64, DType.bool: np.bool_,
    DType.c64: np.complex64, DType.c128: np.complex128,
}
# the 4-bit integers: their value ranges and their ml_dtypes names
INT4_RANGE: dict[DType, tuple[int, int]] = {DType.u4: (0, 15), DType.i4: (-8, 7)}
_INT4_NUMPY = {DType.u4: "uint4", DType.i4: "int4"}
# onnx.TensorProto.DataType codes
_ONNX = {
    DType.f32: 1, DType.u8: 2, DType.i8: 3, DType.u16: 4, DType.i16: 5, DType.i32: 6,
    DType.i64: 7, DType.string: 8, DType.bool: 9, DType.f16: 10, DType.f64: 11, DType.u32: 12,
    DType.u64: 13, DType.c64: 14, DType.c128: 15, DType.bf16: 16, DType.f8e4m3fn: 17,
    DType.f8e4m3fnuz: 18, DType.f8e5m2: 19, DType.f8e5m2fnuz: 20, DType.u4: 21, DType.i4: 22,
    DType.f4e2m1: 23, DType.f8e8m0: 24, DType.u2: 25, DType.i2: 26,
}

# A dim is a non-negative int or a symbol name such as "batch" (or a product "batch*seq").
Dim = Union[int, str]
_SYM = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*(\*[A-Za-z_][A-Za-z0-9_.]*)*$")


def is_symbolic(d: Dim) -> bool:
    return isinstance(d, str)


def check_dim(d: Dim) -> Dim:
    if isinstance(d, bool):
        raise TypeError(f"bad dim {d!r}")
    if isinstance(d, (int, np.integer)):
        if int(d) < 0:
            raise ValueError(f"negative dim {d}")
        return int(d)
    if isinstance(d, str) and _SYM.match(d):
        return d
    raise ValueError(f"bad dim {d!r}: expected an int >= 0 or a symbol name")


def dim_factors(d: Dim) -> tuple[int, tuple[str, ...]]:
    """A dim as (integer coefficient, sorted symbol factors)."""
    if isinstance(d, int):
        return d, ()
    coef, syms = 1, []
    for s in d.split("*"):
        if s.startswith("_x") and s[2:].isdigit():
            coef *= int(s[2:])
        else:
            syms.append(s)
    return coef, tuple(sorted(syms))


def dim_product(dims: "tuple[Dim, ...] | list[Dim]") -> Dim:
    """Product of dims; symbolic factors are kept as a sorted 'a*b' product."""
    coef, syms = 1, []
    for d in dims:
        c, s = dim_factors(d)
        coef *= c
        syms.extend(s)
    if coef == 0:
        return 0
    if not syms:
        return coef
    if coef != 1:
        # an int times symbols is spelled with a '_xK' factor, e.g. "seq*_x12"
        syms.append(f"_x{coef}")
    return "*".join(sorted(syms))


def dim_divide(num: Dim, den: Dim) -> Dim | None:
    """num / den when it is exact and representable, else None."""
    nc, ns = dim_factors(num)
    dc, ds = dim_factors(den)
    ns_l = list(ns)
    for s in ds:
        if s not in ns_l:
            return None
        ns_l.remove(s)
    if dc == 0 or nc % dc:
        return None
    return dim_product([nc // dc, *ns_l]) if ns_l else nc // dc


@dataclass(frozen=True)
class TensorType:
    """A tensor's type. ``shape is None`` means the rank is unknown (only opaque nodes make those)."""

    shape: tuple[Dim, ...] | None
    dtype: DType

    def __post_init__(self) -> None:
        if self.shape is not None:
            object.__setattr__(self, "shape", tuple(check_dim(d) for d in self.shape))
        if not isinstance(self.dtype, DType):
            raise TypeError(f"dtype must be a DType, got {self.dtype!r}")

    @property
    def rank(self) -> int:
        if self.shape is None:
            raise ValueError(f"rank of {self} is unknown")
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    @property
    def numel(self) -> Dim:
        if self.shape is None:
            raise ValueError(f"size of {self} is unknown")
        return dim_product(self.shape)

    def static_numel(self, default_sym: int = 1) -> int:
        """Element count with every symbolic dim replaced by ``default_sym`` (for cost estimates)."""
        if self.shape is None:
            return default_sym
        n = 1
        for d in self.shape:
            n *= d if isinstance(d, int) else default_sym
        return n

    def with_shape(self, shape: tuple[Dim, ...]) -> "TensorType":
        return TensorType(tuple(shape), self.dtype)

    def with_dtype(self, dtype: DType) -> "TensorType":
        return TensorType(self.shape, dtype)

    def __str__(self) -> str:
        if self.shape is None:
            return f"{self.dtype.value}[?]"
        return f"{self.dtype.value}[{','.join(str(d) for d in self.shape)}]"


@dataclass(frozen=True)
class OpaqueType:
    """A non-tensor value (ONNX sequence, optional, map) or a tensor whose type ONNX could not infer.

    ``proto`` is the serialized ``onnx.TypeProto``; graphopt passes such values through untouched.
    """

    proto: bytes
    summary: str = "opaque"

    def __str__(self) -> str:
        return f"opaque<{self.summary}>"


ValueType = Union[TensorType, OpaqueType]


# ---- arrays between numpy and torch ---------------------------------------------------------------

def numpy_to_torch(a: np.ndarray, device: "str | torch.device | None" = None
                   ) -> "torch.Tensor":
    """A torch tensor holding a copy of ``a`` (on ``device`` when given). u4 / i4 arrays become
    torch.uint4 / torch.int4 tensors: views of uint8 / int8 storage holding one value a byte
    (torch copies and computes nothing of these dtypes: they move as bytes, and ops view them
    back as uint8 / int8, see ``ops/quant.py``)."""
    import torch

    arr = np.asarray(a)
    if arr.dtype.kind == "V" and arr.dtype.name in _INT4_NUMPY.values():
        d = DType.from_numpy(arr.dtype)
        byte = torch.from_numpy(arr.astype(np.uint8 if d == DType.u4 else np.int8))
        return (byte if device is None else byte.to(device)).view(d.to_torch())
    t = torch.from_numpy(np.array(arr))
    return t if device is None else t.to(device)


def torch_to_numpy(t: "torch.Tensor") -> np.ndarray:
    """A numpy array of a (cpu) torch tensor; torch.uint4 / torch.int4 become ml_dtypes arrays."""
    import torch

    for d in INT4_RANGE:
        if t.dtype == d.to_torch():
            byte = torch.uint8 if d == DType.u4 else torch.int8
            return t.view(byte).numpy().astype(d.to_numpy())
    return t.numpy()


def torch_int4_values(t: "torch.Tensor") -> "torch.Tensor":
    """``t``, or for a torch.uint4 / torch.int4 tensor its values as a uint8 / int8 view."""
    import torch

    if t.dtype == torch.uint4:
        return t.view(torch.uint8)
    if t.dtype == torch.int4:
        return t.view(torch.int8)
    return t


def torch_to_int4(t: "torch.Tensor", d: DType) -> "torch.Tensor":
    """The integer values of ``t`` (floats truncated) as a ``d`` (u4 / i4) tensor, keeping
    their low 4 bits as a cast does."""
    import torch

    v = torch_int4_values(t).to(torch.int64) & 15
    if d == DType.i4:
        v = (v ^ 8) - 8  # sign-extend the nibble
    return v.to(torch.uint8 if d == DType.u4 else torch.int8).view(d.to_torch())
