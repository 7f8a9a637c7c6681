"""Shared source writer for the pointwise part of every kernel family.

A kernel iterates over an index space of shape ``S`` (the region's output shape). The family
provides a flat offset tensor ``offs`` (row-major position in ``S``) and a ``mask``; ``Body``
writes the loads of the region's inputs, one line per pointwise node, and the stores.

Inputs whose static shape equals ``S`` are read at ``offs`` (the launcher makes them contiguous);
broadcast inputs are read through per-dimension strides (0 where broadcast) computed by the
launcher from the tensor itself, so views (transposes, slices) need no copy. Coordinates of ``S``
are recovered from ``offs`` only for the dimensions some broadcast input needs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from graphopt.ir.node import Node, Value
from graphopt.ir.types import Dim, DType, TensorType

from .exprs import FLOATS, emit, literal, scalar_constant


def vkey(v: Value) -> tuple[int, int]:
    return (id(v.node), v.index)


@dataclass
class InputSpec:
    """One tensor a kernel reads: its position among the launcher's arguments and how."""

    value: Value
    name: str  # kernel pointer argument
    full: bool  # same shape as S: read at offs
    dims: tuple[int, ...]  # dims of S (0..r-1) along which it varies (broadcast ones omitted)

    @property
    def dtype(self) -> DType:
        return self.value.type.dtype  # type: ignore[union-attr]


def aligned_dims(t: TensorType, shape: tuple[Dim, ...]) -> tuple[int, ...]:
    """Dims of ``shape`` along which a value of type ``t`` (numpy-broadcast into it) varies."""
    assert t.shape is not None
    r, k = len(shape), len(t.shape)
    return tuple(r - k + i for i, d in enumerate(t.shape) if d != 1)


@dataclass
class Body:
    """Writes loads, pointwise nodes and stores over an index space of shape ``shape``."""

    shape: tuple[Dim, ...]
    inputs: list[InputSpec] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    names: dict[tuple[int, int], str] = field(default_factory=dict)
    coords: set[int] = field(default_factory=set)
    offs: str = "offs"
    mask: str = "mask"

    @property
    def rank(self) -> int:
        return len(self.shape)

    def add_input(self, v: Value, prefix: str = "x") -> InputSpec:
        t = v.type
        assert isinstance(t, TensorType) and t.shape is not None
        spec = InputSpec(v, f"{prefix}{len(self.inputs)}", tuple(t.shape) == tuple(self.shape),
                         aligned_dims(t, self.shape))
        self.inputs.append(spec)
        return spec

    # ---- kernel signature pieces --------------------------------------------------------------
    def dim_args(self) -> list[str]:
        return [f"S{k}" for k in range(self.rank)]

    def input_args(self) -> list[str]:
        out: list[str] = []
        for s in self.inputs:
            out.append(s.name)
            if not s.full:
                out += [f"{s.name}_s{k}" for k in s.dims]
        return out

    def coord_lines(self) -> list[str]:
        """Lines computing the coordinates ``c{k}`` some broadcast input needs (emit first)."""
        if not self.coords:
            return []
        out = []
        need = min(self.coords)
        # D{k}: row-major stride of dim k in S
        out.append(f"D{self.rank - 1} = 1")
        for k in range(self.rank - 2, need - 1, -1):
            out.append(f"D{k} = D{k + 1} * S{k + 1}")
        for k in sorted(self.coords):
            c = f"({self.offs} // D{k})" if k < self.rank - 1 else self.offs
            out.append(f"c{k} = {c} % S{k}" if k > 0 else f"c{k} = {c}")
        return out

    # ---- body ------------------------------------------------------------------------------------
    def load(self, spec: InputSpec, var: str) -> None:
        if spec.full:
            ptr = f"{spec.name} + {self.offs}"
        elif spec.dims:
            self.coords.update(spec.dims)
            ptr = f"{spec.name} + " + " + ".join(f"c{k} * {spec.name}_s{k}" for k in spec.dims)
        else:
            ptr = f"{spec.name} + {self.offs} * 0"
        if spec.dtype == DType.bool:
            self.lines.append(f"{var} = tl.load({ptr}, mask={self.mask}, other=0) != 0")
        else:
            self.lines.append(f"{var} = tl.load({ptr}, mask={self.mask}, other=0.0)"
                              f".to(tl.float32)")
        self.names[vkey(spec.value)] = var

    def operand(self, v: Value, prefix: str = "x") -> str:
        """The expression of ``v`` inside the kernel: a computed value, an inlined scalar
        constant, or a new input loaded here."""
        k = vkey(v)
        if k in self.names:
            return self.names[k]
        c = scalar_constant(v)
        if c is not None:
            return literal(c)
        spec = self.add_input(v, prefix)
        self.load(spec, f"{spec.name}_v")
        return self.names[k]

    def node(self, n: Node) -> str:
        xs = [self.operand(v) for v in n.inputs]
        var = f"v{len(self.names)}"
        self.lines.append(f"{var} = {emit(n, xs)}")
        self.names[vkey(n.outputs[0])] = var
        return var

    def set(self, v: Value, var: str) -> None:
        self.names[vkey(v)] = var

    def store(self, ptr: str, v: Value) -> None:
        var = self.names[vkey(v)]
        t = v.type
        assert isinstance(t, TensorType)
        if t.dtype in FLOATS:
            self.lines.append(f"tl.store({ptr} + {self.offs}, {var}.to({ptr}.dtype.element_ty), "
                              f"mask={self.mask})")
        else:
            self.lines.append(f"tl.store({ptr} + {self.offs}, {var}, mask={self.mask})")


def launcher_inputs(inputs: list[InputSpec], args: list[str], shape_var: str = "S") -> list[str]:
    """Launcher lines preparing each input tensor ``args[i]``: contiguous when read at offs, else
    its broadcast strides into the index space (a tuple of dim sizes named ``shape_var``)."""
    out = []
    for s, a in zip(inputs, args):
        if s.full:
            out.append(f"{a} = {a}.contiguous()")
        elif s.dims:
            out.append(f"{a}_st = bstrides({a}, {shape_var})")
    return out


def launcher_input_args(inputs: list[InputSpec], args: list[str]) -> list[str]:
    out = []
    for s, a in zip(inputs, args):
        out.append(a)
        if not s.full:
            out += [f"{a}_st[{k}]" for k in s.dims]
    return out


def module_header(family: str, summary: str) -> list[str]:
    """First lines of every generated kernel module."""
    return [f'"""graphopt generated kernel ({family}): {summary}"""',
            "import torch",
            "import triton",
            "import triton.language as tl",
            "",
            "from graphopt.codegen.triton.launch import bstrides, cdiv, next_pow2, numel",
            ""]


def indent(lines: list[str], n: int = 4) -> list[str]:
    return [(" " * n + ln) if ln else ln for ln in lines]


def torch_dtype(d: DType) -> str:
    return {DType.f16: "torch.float16", DType.bf16: "torch.bfloat16", DType.f32: "torch.float32",
            DType.bool: "torch.bool"}[d]
