"""Structural ops: reshape, transpose, concat, split, slice, gather, expand, squeeze, unsqueeze,
pad, tile. Their z3 semantics are the numpy reference run on object arrays (exact).

ONNX Flatten is a reshape and is lifted by ``reshape`` (on its declaration). ONNX types that are
no op of graphopt's (Dropout, Shape, Size, Range, ConstantOfShape) are lowered by the ONNX frontend
(``frontends/onnx_lowering.py``)."""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ExportError, ShapeError
from ..ir.node import Attrs
from ..ir.types import Dim, DType, TensorType, ValueType, check_dim, dim_divide, dim_product
from .registry import (Cost, Example, NotFingerprinted, NotSymbolic, OpDef, Unsupported,
                       broadcast_shapes, nbytes, norm_axis, register, same_dtype, tensor_types)
from .symbols import eval_dim

I64_MAX = 2**63 - 1
I64_MIN = -(2**63)
_BIG = 2**62  # |start| or |end| at least this means "to the end" (ONNX INT_MAX, torch sys.maxsize)


# ---- helpers ----------------------------------------------------------------------------------

def _one(name: str, in_types: Sequence[ValueType]) -> tuple[TensorType, tuple[Dim, ...]]:
    (t,) = tensor_types(name, in_types)
    if t.shape is None:
        raise ShapeError(f"{name}({t}): unknown rank")
    return t, t.shape


def _ints(name: str, what: str, v: Any) -> tuple[int, ...]:
    if v is None:
        raise ShapeError(f"{name}: attr {what!r} is missing")
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return (int(v),)
    out = []
    for x in v:
        if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
            raise ShapeError(f"{name}: attr {what}={tuple(v)} must hold ints")
        out.append(int(x))
    return tuple(out)


def _dims(name: str, what: str, v: Any) -> tuple[Dim, ...]:
    try:
        return tuple(check_dim(d) for d in v)
    except (TypeError, ValueError) as e:
        raise ShapeError(f"{name}: attr {what}={v!r}: {e}") from None


def check_attrs(name: str, attrs: Any, allowed: Sequence[str]) -> None:
    """ShapeError on attribute names the op does not know (a typo must not pass silently)."""
    extra = sorted(set(attrs) - set(allowed))
    if extra:
        raise ShapeError(f"{name}: unknown attribute(s) {extra}; it takes {list(allowed)}")


def _view_cost() -> Cost:
    return Cost(0.0, 0.0, 0)


def _move_cost(in_types: Sequence[ValueType], out_types: Sequence[ValueType]) -> Cost:
    return Cost(0.0, float(sum(nbytes(t) for t in in_types) + sum(nbytes(t) for t in out_types)),
                1)


def _keeps_normalized(fn: Callable[..., Attrs]) -> Callable[..., Attrs]:
    """normalize_attrs wrappers: on bad attrs keep them as given so infer reports the error
    with the node's location."""
    def wrapped(self: OpDef, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        try:
            return fn(self, in_types, attrs)
        except (ShapeError, ValueError, TypeError, KeyError, IndexError):
            return attrs
    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


def _r(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


# ---- import helpers (ONNX / aten contexts; see frontends) ------------------------------------

def onnx_tensor(ctx: Any, i: int) -> Any:
    """Input ``i`` of an ONNX node as a Value with a known-rank tensor type (else Unsupported)."""
    if i >= len(ctx.inputs) or ctx.inputs[i] is None:
        raise Unsupported(f"{ctx.op_type}: input {i} is missing")
    v = ctx.inputs[i]
    if not isinstance(v.type, TensorType) or v.type.shape is None:
        raise Unsupported(f"{ctx.op_type}: input {i} has type {v.type} (known rank needed)")
    return v


def onnx_ints(ctx: Any, i: int, what: str) -> list[int] | None:
    """A constant int input as a list (None when the optional input is omitted)."""
    if i >= len(ctx.inputs) or ctx.inputs[i] is None:
        return None
    arr = ctx.const(i)
    if arr is None:
        raise Unsupported(f"{ctx.op_type}: input {what} is not a constant")
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iu":
        raise Unsupported(f"{ctx.op_type}: input {what} has dtype {arr.dtype}")
    return [int(v) for v in arr.reshape(-1)]


def onnx_dims(ctx: Any, i: int, what: str) -> list[Dim] | None:
    """A 1-D int input as dims: constant ints, or symbols the importer followed from shapes
    (``ctx.dims``: e.g. Concat(Gather(Shape(x), 0), [-1]) -> ["batch", -1]); ints may be
    negative. None when the optional input is omitted; Unsupported when it is not known."""
    if i >= len(ctx.inputs) or ctx.inputs[i] is None:
        return None
    dims = ctx.dims(i) if hasattr(ctx, "dims") else None
    if dims is None:
        return onnx_ints(ctx, i, what)
    return [d if isinstance(d, str) else int(d) for d in dims]


def onnx_only_attrs(ctx: Any, allowed: set[str]) -> None:
    extra = set(ctx.attrs) - allowed
    if extra:
        raise Unsupported(f"{ctx.op_type} with attributes {sorted(extra)}")


def build(ctx: Any, op: str, inputs: list[Any], **attrs: Any) -> Any:
    """ctx.build, turning a ShapeError into Unsupported (the node then stays opaque)."""
    try:
        return ctx.build(op, inputs, **attrs)
    except ShapeError as e:
        raise Unsupported(f"{ctx.op_type if hasattr(ctx, 'op_type') else ctx.target}: "
                          f"{e.message}") from None


def aten_arg(ctx: Any, i: int, name: str, default: Any = None) -> Any:
    if len(ctx.args) > i:
        return ctx.args[i]
    return ctx.kwargs.get(name, default)


def aten_ints(ctx: Any, values: Any, what: str) -> list[int]:
    """Int list args of an aten call; a symbolic size there means the call stays opaque."""
    vals = [values] if isinstance(values, (int, str)) else list(values)
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in vals):
        raise Unsupported(f"{ctx.target}: {what}={vals} is not all ints")
    return vals


def i64_const(ctx: Any, values: Sequence[int]) -> str:
    return ctx.const(np.array(list(values), dtype=np.int64))


def resolve_shape(name: str, in_shape: tuple[Dim, ...], target: Sequence[Any],
                  allowzero: bool = False) -> tuple[Dim, ...]:
    """An ONNX / torch reshape target (ints, symbols, 0 = copy unless allowzero, one -1) made
    fully resolved against ``in_shape``; raises Unsupported when it cannot be."""
    out: list[Dim | None] = []
    minus = [i for i, d in enumerate(target) if isinstance(d, (int, np.integer)) and d == -1]
    if len(minus) > 1:
        raise Unsupported(f"{name}: more than one -1 in shape {list(target)}")
    for i, d in enumerate(target):
        if isinstance(d, (int, np.integer)) and not isinstance(d, bool):
            d = int(d)
            if d == -1:
                out.append(None)
            elif d == 0 and not allowzero:
                if i >= len(in_shape):
                    raise Unsupported(f"{name}: shape {list(target)} copies dim {i} of "
                                      f"{list(in_shape)}")
                out.append(in_shape[i])
            elif d < 0:
                raise Unsupported(f"{name}: bad dim {d} in shape {list(target)}")
            else:
                out.append(d)
        elif isinstance(d, str):
            out.append(check_dim(d))
        else:
            raise Unsupported(f"{name}: dim {d!r} of shape {list(target)} is not an int or "
                              f"symbol")
    if minus:
        known = dim_product([d for d in out if d is not None])
        total = dim_product(in_shape)
        q = dim_divide(total, known)
        if q is None:
            raise Unsupported(f"{name}: cannot infer -1 in {list(target)} for input "
                              f"{list(in_shape)} ({total} / {known})")
        out[minus[0]] = q
    return tuple(out)  # type: ignore[arg-type]


# ---- reshape ----------------------------------------------------------------------------------

def concrete_reshape(shape: Sequence[Dim], numel: int) -> tuple[int, ...]:
    """The int shape of a reshape target at run time (symbols from the bound values; one
    unbound dim is inferred from the element count)."""
    vals = [eval_dim(d) for d in shape]
    unknown = [i for i, v in enumerate(vals) if v is None]
    if len(unknown) > 1:
        names = [shape[i] for i in unknown]
        raise ShapeError(f"reshape to {list(shape)}: symbols {names} have no run-time value "
                         f"(bind them with graphopt.ops.symbols.symbol_values)")
    if unknown:
        known = math.prod(v for v in vals if v is not None)
        if known == 0 or numel % known:
            raise ShapeError(f"reshape to {list(shape)}: {numel} elements do not fit")
        vals[unknown[0]] = numel // known
    return tuple(int(v) for v in vals)  # type: ignore[arg-type]


@register
class Reshape(OpDef):
    """x viewed with a new shape of the same element count (``shape`` fully resolved)."""

    name = "reshape"
    cost_class = "view"
    exact_int = True
    index_pass_through = True
    dim_attrs = ("shape",)
    attr_names = ('shape',)
    min_inputs = max_inputs = 1
    onnx = ("Reshape", "Flatten")
    aten = ("aten.view.default", "aten._unsafe_view.default", "aten.reshape.default")

    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        try:
            return attrs.replace(shape=_dims(self.name, "shape", attrs["shape"]))
        except (ShapeError, KeyError, TypeError):
            return attrs

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        check_attrs(self.name, attrs, self.attr_names)
        t, shp = _one(self.name, in_types)
        out = _dims(self.name, "shape", attrs["shape"])
        a, b = dim_product(shp), dim_product(out)
        if a != b:
            raise ShapeError(f"reshape({t}) to {list(out)}: element counts differ ({a} vs {b})")
        return (t.with_shape(out),)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        x = np.asarray(xs[0])
        return (x.reshape(concrete_reshape(attrs["shape"], x.size)),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        x = xs[0]
        return (x.reshape(concrete_reshape(attrs["shape"], x.numel())),)

    def cost(self, in_types, out_types, attrs) -> Cost:  # type: ignore[override]
        return _view_cost()

    def examples(self, rng: np.random.Generator) -> list[Example]:
        return [Example([_r(rng, 2, 3, 5)], {"shape": (5, 6)}),
                Example([_r(rng, 6)], {"shape": (1, 2, 3, 1)}),
                Example([_r(rng, 1)], {"shape": ()})]

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        if ctx.op_type == "Flatten":
            return _flatten_from_onnx(ctx)
        x = onnx_tensor(ctx, 0)
        onnx_only_attrs(ctx, {"allowzero", "shape", "consumed_inputs"})
        if ctx.opset < 5:
            target = ctx.attrs.get("shape")
            if target is None:
                raise Unsupported("Reshape-1 without a shape attribute")
            target = list(target)
        else:
            target = onnx_dims(ctx, 1, "shape")
            if target is None:
                raise Unsupported("Reshape without a shape input")
        allowzero = bool(int(ctx.attrs.get("allowzero", 0)))
        shape = resolve_shape("Reshape", x.type.shape, target, allowzero)
        return [build(ctx, "reshape", [x], shape=shape)]

    def to_onnx(self, ctx: Any, node: Any) -> None:
        (x,) = node.inputs
        target = node.attrs["shape"]
        extra: dict[str, Any] = {}
        zero_literal = any(d == 0 for d in target)
        allow_copy = True
        if zero_literal:
            if ctx.opset >= 14:
                extra["allowzero"] = 1
                allow_copy = False
            elif any(d == 0 and (i >= len(x.type.shape) or x.type.shape[i] != 0)
                     for i, d in enumerate(target)):
                raise ExportError(f"reshape to {list(target)}: a 0-sized dim needs opset >= 14",
                                  where=str(node.origin or "reshape"))
        shp = shape_tensor(ctx, node, x, target, "reshape", allow_copy)
        ctx.emit("Reshape", [ctx.name(x), shp], ctx.out_names(node), **extra)

    def from_aten(self, ctx: Any) -> Any:
        x = ctx.args[0]
        target = list(aten_arg(ctx, 1, "shape", aten_arg(ctx, 1, "size")))
        shape = resolve_shape(ctx.target, x.type.shape, target, allowzero=True)
        return build(ctx, "reshape", [x], shape=shape)


def shape_tensor(ctx: Any, node: Any, x: Any, dims: Sequence[Dim], mode: str,
                 allow_copy: bool = True) -> str:
    """The name of a 1-D int64 ONNX tensor holding ``dims`` for Reshape (mode "reshape": 0 copies
    the same-position input dim, one -1) or Expand (mode "expand": 1 keeps the aligned input
    dim). Other symbols come from Shape(x) when x has them, else from ``ctx.sym_dim`` if the
    exporter offers it."""
    xs = x.type.shape
    off = len(dims) - len(xs)
    entries: list[int | str] = []
    minus_used = False
    need: list[int] = []
    for i, d in enumerate(dims):
        if isinstance(d, int):
            entries.append(d)
            continue
        if mode == "reshape" and allow_copy and i < len(xs) and xs[i] == d:
            entries.append(0)
        elif mode == "expand" and 0 <= i - off < len(xs) and xs[i - off] == d:
            entries.append(1)
        else:
            entries.append(d)
            need.append(i)
    if mode == "reshape" and need and allow_copy:
        # the first symbol not found in x becomes -1
        for i in need:
            if dims[i] not in xs:
                entries[i] = -1
                need.remove(i)
                minus_used = True
                break
        if not minus_used and need:
            entries[need[0]] = -1
            need = need[1:]
    if not need:
        return i64_const(ctx, [int(e) for e in entries])  # type: ignore[arg-type]
    shape_name: str | None = None
    pieces: list[str] = []
    run: list[int] = []
    for i, e in enumerate(entries):
        if i not in need:
            run.append(int(e))  # type: ignore[arg-type]
            continue
        if run:
            pieces.append(i64_const(ctx, run))
            run = []
        d = dims[i]
        if d in xs:
            if shape_name is None:
                shape_name = ctx.emit("Shape", [ctx.name(x)], 1)[0]
            pieces.append(ctx.emit("Gather", [shape_name, i64_const(ctx, [xs.index(d)])], 1,
                                   axis=0)[0])
        elif hasattr(ctx, "sym_dim"):
            pieces.append(ctx.sym_dim(d))
        else:
            raise ExportError(f"{node.op} to {list(dims)}: no run-time source for dim {d!r}",
                              where=str(node.origin or node.op))
    if run:
        pieces.append(i64_const(ctx, run))
    if len(pieces) == 1:
        return pieces[0]
    return ctx.emit("Concat", pieces, 1, axis=0)[0]


# ---- ONNX Flatten: a reshape ------------------------------------------------------------------

def _flatten_from_onnx(ctx: Any) -> Sequence[Any]:
    x = onnx_tensor(ctx, 0)
    onnx_only_attrs(ctx, {"axis"})
    shp = x.type.shape
    axis = int(ctx.attrs.get("axis", 1))
    if not -len(shp) <= axis <= len(shp):
        raise Unsupported(f"Flatten axis {axis} out of range for {x.type}")
    if axis < 0:
        axis += len(shp)
    return [build(ctx, "reshape", [x], shape=(dim_product(shp[:axis]),
                                              dim_product(shp[axis:])))]


# ---- transpose --------------------------------------------------------------------------------

@register
class Transpose(OpDef):
    """Axes permuted: out.shape[i] = x.shape[perm[i]]."""

    name = "transpose"
    cost_class = "injective"
    exact_int = True
    index_pass_through = True
    attr_names = ('perm',)
    min_inputs = max_inputs = 1
    onnx = ("Transpose",)
    aten = ("aten.permute.default", "aten.t.default", "aten.transpose.int")

    def mixed_axes(self, in_types: tuple[ValueType, ...], attrs: Attrs
                   ) -> tuple[tuple[int, int], ...]:
        return ()  # moves axes, not positions along one

    @_keeps_normalized
    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        _, shp = _one(self.name, in_types)
        perm = _ints(self.name, "perm", attrs["perm"])
        return attrs.replace(perm=tuple(norm_axis(self.name, p, len(shp)) for p in perm))

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        check_attrs(self.name, attrs, self.attr_names)
        t, shp = _one(self.name, in_types)
        perm = _ints(self.name, "perm", attrs["perm"])
        if sorted(perm) != list(range(len(shp))):
            raise ShapeError(f"transpose({t}): perm {list(perm)} is not a permutation of "
                             f"0..{len(shp) - 1}")
        return (t.with_shape(tuple(shp[p] for p in perm)),)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        # np.require, unlike np.ascontiguousarray, keeps a 0-d array 0-d
        return (np.require(np.transpose(np.asarray(xs[0]), attrs["perm"]), requirements="C"),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        return (xs[0].permute(*attrs["perm"]),)

    def cost(self, in_types, out_types, attrs) -> Cost:  # type: ignore[override]
        return _move_cost(in_types, out_types)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        return [Example([_r(rng, 2, 3, 5)], {"perm": (2, 0, 1)}),
                Example([_r(rng, 3, 7)], {"perm": (1, 0)})]

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        x = onnx_tensor(ctx, 0)
        onnx_only_attrs(ctx, {"perm"})
        r = len(x.type.shape)
        perm = ctx.attrs.get("perm")
        perm = tuple(range(r - 1, -1, -1)) if perm is None else tuple(int(p) for p in perm)
        return [build(ctx, "transpose", [x], perm=perm)]

    def to_onnx(self, ctx: Any, node: Any) -> None:
        ctx.emit("Transpose", [ctx.name(node.inputs[0])], ctx.out_names(node),
                 perm=list(node.attrs["perm"]))

    def from_aten(self, ctx: Any) -> Any:
        x = ctx.args[0]
        r = len(x.type.shape)
        if ctx.target == "aten.permute.default":
            perm = tuple(int(p) for p in aten_arg(ctx, 1, "dims"))
        elif ctx.target == "aten.t.default":
            if r < 2:
                return x
            perm = (1, 0)
        else:
            d0 = norm_axis("aten.transpose", int(ctx.args[1]), r) if r else 0
            d1 = norm_axis("aten.transpose", int(ctx.args[2]), r) if r else 0
            if r == 0:
                return x
            p = list(range(r))
            p[d0], p[d1] = p[d1], p[d0]
            perm = tuple(p)
        return build(ctx, "transpose", [x], perm=perm)


# ---- concat / split ---------------------------------------------------------------------------

@register
class Concat(OpDef):
    """Inputs joined along ``axis``."""

    name = "concat"
    cost_class = "injective"
    exact_int = True
    index_pass_through = True
    attr_names = ('axis',)
    min_inputs = 1
    onnx = ("Concat",)
    aten = ("aten.cat.default",)

    def mixed_axes(self, in_types: tuple[ValueType, ...], attrs: Attrs
                   ) -> tuple[tuple[int, int], ...]:
        return tuple((i, attrs["axis"]) for i in range(len(in_types)))

    @_keeps_normalized
    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        t = tensor_types(self.name, in_types)[0]
        if t.shape is None:
            return attrs
        return attrs.replace(axis=norm_axis(self.name, int(attrs["axis"]), len(t.shape)))

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        check_attrs(self.name, attrs, self.attr_names)
        ts = tensor_types(self.name, in_types)
        desc = f"concat({', '.join(map(str, ts))})"
        dt = same_dtype(desc, ts)
        if any(t.shape is None for t in ts):
            raise ShapeError(f"{desc}: unknown rank")
        r = len(ts[0].shape)  # type: ignore[arg-type]
        if any(len(t.shape) != r for t in ts):  # type: ignore[arg-type]
            raise ShapeError(f"{desc}: ranks differ")
        axis = norm_axis(self.name, int(attrs["axis"]), r)
        out = list(ts[0].shape)  # type: ignore[arg-type]
        for t in ts[1:]:
            for i, (a, b) in enumerate(zip(out, t.shape)):  # type: ignore[arg-type]
                if i != axis and a != b:
                    raise ShapeError(f"{desc} on axis {axis}: dim {i} differs ({a} vs {b})")
        parts = [t.shape[axis] for t in ts if t.shape[axis] != 0]  # type: ignore[index]
        if all(isinstance(d, int) for d in parts):
            out[axis] = sum(parts)  # type: ignore[arg-type]
        elif len(parts) == 1:
            out[axis] = parts[0]
        else:
            raise ShapeError(f"{desc} on axis {axis}: cannot add symbolic dims {parts}")
        return (TensorType(tuple(out), dt),)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        return (np.concatenate([np.asarray(x) for x in xs], axis=attrs["axis"]),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        import torch

        return (torch.cat(list(xs), dim=attrs["axis"]),)

    def cost(self, in_types, out_types, attrs) -> Cost:  # type: ignore[override]
        return _move_cost(in_types, out_types)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        return [Example([_r(rng, 2, 3), _r(rng, 2, 5), _r(rng, 2, 1)], {"axis": 1}),
                Example([_r(rng, 3, 2), _r(rng, 1, 2)], {"axis": -2}),
                Example([_r(rng, 4)], {"axis": 0})]

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        onnx_only_attrs(ctx, {"axis"})
        ins = [onnx_tensor(ctx, i) for i in range(len(ctx.inputs))]
        if "axis" in ctx.attrs:
            axis = int(ctx.attrs["axis"])
        elif ctx.opset < 4:
            axis = 1
        else:
            raise Unsupported("Concat without axis")
        return [build(ctx, "concat", ins, axis=axis)]

    def to_onnx(self, ctx: Any, node: Any) -> None:
        ctx.emit("Concat", [ctx.name(v) for v in node.inputs], ctx.out_names(node),
                 axis=int(node.attrs["axis"]))

    def from_aten(self, ctx: Any) -> Any:
        tensors = list(ctx.args[0])
        dim = int(aten_arg(ctx, 1, "dim", 0))
        # torch.cat skips 1-D empty tensors of any other rank (legacy behaviour)
        ts = [v for v in tensors if not (len(v.type.shape) == 1 and v.type.shape[0] == 0)]
        if not ts:
            raise Unsupported("aten.cat of empty tensors only")
        return build(ctx, "concat", ts, axis=dim)


@register
class Split(OpDef):
    """x cut along ``axis`` into pieces of ``sizes`` (one output per piece)."""

    name = "split"
    cost_class = "injective"
    exact_int = True
    index_pass_through = True
    dim_attrs = ("sizes",)
    attr_names = ('axis', 'sizes')
    min_inputs = max_inputs = 1
    onnx = ("Split",)
    aten = ("aten.split_with_sizes.default", "aten.split.Tensor")

    def mixed_axes(self, in_types: tuple[ValueType, ...], attrs: Attrs
                   ) -> tuple[tuple[int, int], ...]:
        return ((0, attrs["axis"]),)

    @_keeps_normalized
    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        _, shp = _one(self.name, in_types)
        return attrs.replace(axis=norm_axis(self.name, int(attrs["axis"]), len(shp)),
                             sizes=_ints(self.name, "sizes", attrs["sizes"]))

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        check_attrs(self.name, attrs, self.attr_names)
        t, shp = _one(self.name, in_types)
        axis = norm_axis(self.name, int(attrs["axis"]), len(shp))
        sizes = _ints(self.name, "sizes", attrs["sizes"])
        if not sizes or any(s < 0 for s in sizes):
            raise ShapeError(f"split({t}): bad sizes {list(sizes)}")
        if shp[axis] != sum(sizes):
            raise ShapeError(f"split({t}) on axis {axis}: sizes {list(sizes)} do not add up to "
                             f"{shp[axis]}")
        return tuple(t.with_shape(shp[:axis] + (s,) + shp[axis + 1:]) for s in sizes)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        cuts = np.cumsum(attrs["sizes"])[:-1]
        return tuple(np.split(np.asarray(xs[0]), cuts, axis=attrs["axis"]))

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        import torch

        return tuple(torch.split(xs[0], list(attrs["sizes"]), dim=attrs["axis"]))

    def cost(self, in_types, out_types, attrs) -> Cost:  # type: ignore[override]
        return _move_cost(in_types, out_types)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        return [Example([_r(rng, 2, 7)], {"axis": 1, "sizes": (3, 1, 3)}),
                Example([_r(rng, 5, 3)], {"axis": -2, "sizes": (5,)}),
                Example([_r(rng, 4, 3)], {"axis": 0, "sizes": (0, 4)})]

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        x = onnx_tensor(ctx, 0)
        onnx_only_attrs(ctx, {"axis", "split", "num_outputs"})
        shp = x.type.shape
        axis = norm_axis("Split", int(ctx.attrs.get("axis", 0)), len(shp))
        if ctx.opset < 13:
            split = ctx.attrs.get("split")
            split = None if split is None else [int(s) for s in split]
            if ctx.opset < 2 and split is None and len(ctx.inputs) > 1:
                split = onnx_ints(ctx, 1, "split")
        else:
            split = onnx_ints(ctx, 1, "split")
        n = ctx.num_outputs
        d = shp[axis]
        if split is None:
            if not isinstance(d, int):
                raise Unsupported(f"Split of symbolic dim {d!r} without sizes")
            if ctx.opset >= 18 and "num_outputs" in ctx.attrs:
                k = int(ctx.attrs["num_outputs"])
                if k != n:
                    raise Unsupported(f"Split num_outputs={k} but {n} outputs")
                chunk = -(-d // k)
                split = [min(chunk, max(d - chunk * i, 0)) for i in range(k)]
            else:
                if d % n:
                    raise Unsupported(f"Split of dim {d} into {n} equal parts")
                split = [d // n] * n
        if len(split) != n:
            raise Unsupported(f"Split into {len(split)} parts but {n} outputs")
        out = build(ctx, "split", [x], axis=axis, sizes=tuple(split))
        return list(out.node.outputs)

    def to_onnx(self, ctx: Any, node: Any) -> None:
        sizes = [int(s) for s in node.attrs["sizes"]]
        axis = int(node.attrs["axis"])
        outs = ctx.out_names(node)
        if ctx.opset < 13:
            ctx.emit("Split", [ctx.name(node.inputs[0])], outs, axis=axis, split=sizes)
        else:
            ctx.emit("Split", [ctx.name(node.inputs[0]), i64_const(ctx, sizes)], outs, axis=axis)

    def from_aten(self, ctx: Any) -> Any:
        x = ctx.args[0]
        shp = x.type.shape
        dim = norm_axis(ctx.target, int(aten_arg(ctx, 2, "dim", 0)), len(shp))
        if ctx.target == "aten.split.Tensor":
            (size,) = aten_ints(ctx, aten_arg(ctx, 1, "split_size"), "split_size")
            d = shp[dim]
            if not isinstance(d, int):
                raise Unsupported(f"aten.split of symbolic dim {d!r}")
            if size <= 0:
                raise Unsupported(f"aten.split with size {size}")
            sizes = [min(size, d - i) for i in range(0, d, size)] or [0]
        else:
            sizes = aten_ints(ctx, aten_arg(ctx, 1, "split_sizes"), "split_sizes")
        return tuple(build(ctx, "split", [x], axis=dim, sizes=tuple(sizes)).node.outputs)


# ---- slice ------------------------------------------------------------------------------------

def slice_plan(name: str, shape: tuple[Dim, ...], attrs: Any
               ) -> list[tuple[int, int, int, int, Dim]]:
    """Normalized slice entries (axis, start, end, step, out_dim), sorted by axis; entries that
    keep a whole axis are dropped. On static dims start/end are clamped ONNX-style and made
    tight (equal slices get equal params); an end before index 0 (negative step) is -dim-1."""
    starts = _ints(name, "starts", attrs["starts"])
    ends = _ints(name, "ends", attrs["ends"])
    n = len(starts)
    axes = (_ints(name, "axes", attrs["axes"]) if attrs.get("axes") is not None
            else tuple(range(n)))
    steps = (_ints(name, "steps", attrs["steps"]) if attrs.get("steps") is not None
             else (1,) * n)
    if not len(ends) == len(axes) == len(steps) == n:
        raise ShapeError(f"{name}: starts/ends/axes/steps lengths differ "
                         f"({n}, {len(ends)}, {len(axes)}, {len(steps)})")
    r = len(shape)
    seen: set[int] = set()
    plan = []
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = norm_axis(name, a, r)
        if a in seen:
            raise ShapeError(f"{name}: axis {a} sliced twice")
        seen.add(a)
        if st == 0:
            raise ShapeError(f"{name}: step 0 on axis {a}")
        d = shape[a]
        entry = _slice_static(s, e, st, d) if isinstance(d, int) else _slice_symbolic(s, e, st, d)
        if entry is not None:
            plan.append((a, *entry))
    return sorted(plan)


def _slice_static(s: int, e: int, st: int, d: int) -> tuple[int, int, int, Dim] | None:
    if st > 0:
        s = min(max(s + d if s < 0 else s, 0), d)
        e = min(max(e + d if e < 0 else e, 0), d)
        n = max(0, -(-(e - s) // st))
    else:
        s = min(max(s + d if s < 0 else s, 0), d - 1)
        e = min(max(e + d if e < 0 else e, -1), d - 1)
        n = max(0, -(-(s - e) // -st))
    if n == d and (st > 0 or n == 0) and (s == 0 or n == 0):
        return None
    if n == 0:
        return (0, 0, 1, 0)
    if n == 1:
        return (s, s + 1, 1, 1)
    if st > 0:
        return (s, s + (n - 1) * st + 1, st, n)
    end = s + (n - 1) * st - 1
    return (s, end if end >= 0 else -d - 1, st, n)


def _slice_symbolic(s: int, e: int, st: int, d: Dim) -> tuple[int, int, int, Dim] | None:
    if st > 0:
        s = 0 if s <= -_BIG else s
        e = I64_MAX if e >= _BIG else e
        if e <= -_BIG or s >= _BIG or (s >= 0 and 0 <= e <= s) or (s < 0 and e < 0 and e <= s):
            return (0, 0, 1, 0)
        if s == 0 and e == I64_MAX and st == 1:
            return None
        return (s, e, st, -1)  # extent unknown
    s = -1 if s >= _BIG else (0 if s <= -_BIG else s)
    e = I64_MIN if e <= -_BIG else e
    if s == -1 and e == I64_MIN and st == -1:
        return (s, e, st, d)
    return (s, e, st, -1)


def _slice_py(entry: tuple[int, int, int, int, Dim]) -> slice:
    _, s, e, st, _ = entry
    if st < 0 and e < 0 and e != -1:
        # before index 0 (normalized as -dim-1 / I64_MIN)
        return slice(s, None, st)
    if e == I64_MAX:
        return slice(s, None, st)
    return slice(s, e, st)


def _symbolic_bounds(shape: tuple[Dim, ...], starts: Sequence[Dim], ends: Sequence[Dim],
                     axes: Sequence[int], steps: Sequence[int]) -> tuple[list[int], list[int]]:
    """Slice bounds that are dims of the sliced axis itself made ints: x[:, :seq] on an axis of
    size seq keeps it whole, x[:, seq:] empties it (step 1). Other symbolic bounds are
    Unsupported (the slice op holds ints)."""
    s_out, e_out = [], []
    for s, e, a, st in zip(starts, ends, axes, steps):
        d = shape[a]
        if isinstance(s, str):
            if st != 1 or s != d:
                raise Unsupported(f"Slice start {s!r} on an axis of size {d!r}")
            s = I64_MAX
        if isinstance(e, str):
            if st != 1 or e != d:
                raise Unsupported(f"Slice end {e!r} on an axis of size {d!r}")
            e = I64_MAX
        s_out.append(int(s))
        e_out.append(int(e))
    return s_out, e_out


@register
class Slice(OpDef):
    """ONNX Slice semantics with all parameters as attrs."""

    name = "slice"
    cost_class = "injective"
    partial_read_inputs = (0,)
    exact_int = True
    index_pass_through = True
    attr_names = ('starts', 'ends', 'axes', 'steps')
    min_inputs = max_inputs = 1
    onnx = ("Slice",)
    aten = ("aten.slice.Tensor",)

    def mixed_axes(self, in_types: tuple[ValueType, ...], attrs: Attrs
                   ) -> tuple[tuple[int, int], ...]:
        return tuple((0, a) for a in attrs["axes"])

    @_keeps_normalized
    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        check_attrs(self.name, attrs, self.attr_names)
        _, shp = _one(self.name, in_types)
        plan = slice_plan(self.name, shp, attrs)
        return Attrs({"starts": tuple(p[1] for p in plan), "ends": tuple(p[2] for p in plan),
                      "axes": tuple(p[0] for p in plan), "steps": tuple(p[3] for p in plan)})

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        check_attrs(self.name, attrs, self.attr_names)
        t, shp = _one(self.name, in_types)
        out = list(shp)
        for a, s, e, st, n in slice_plan(self.name, shp, attrs):
            if n == -1:
                raise ShapeError(f"slice({t}): extent of [{s}:{e}:{st}] on symbolic dim "
                                 f"{shp[a]!r} (axis {a}) is unknown")
            out[a] = n
        return (t.with_shape(tuple(out)),)

    def _index(self, shape: tuple[int, ...], attrs: Attrs) -> list[tuple[int, slice]]:
        return [(p[0], _slice_py(p)) for p in slice_plan(self.name, shape, attrs)]

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        x = np.asarray(xs[0])
        idx = [slice(None)] * x.ndim
        for a, sl in self._index(x.shape, attrs):
            idx[a] = sl
        return (np.require(x[tuple(idx)], requirements="C"),)  # keeps 0-d arrays 0-d

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        x = xs[0]
        for a, s, _, st, n in slice_plan(self.name, tuple(x.shape), attrs):
            idx: list[slice] = [slice(None)] * x.dim()
            if n == 0:
                idx[a] = slice(0, 0)
            elif st > 0:
                idx[a] = slice(s, s + (n - 1) * st + 1, st)
            else:  # torch has no negative steps: slice the flipped axis
                f = x.shape[a] - 1 - s
                idx[a] = slice(f, f + (n - 1) * -st + 1, -st)
                x = x.flip(a)
            x = x[tuple(idx)]
        return (x,)

    def cost(self, in_types, out_types, attrs) -> Cost:  # type: ignore[override]
        return Cost(0.0, 2.0 * sum(nbytes(t) for t in out_types), 1)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        x = _r(rng, 5, 7, 3)
        big = I64_MAX
        return [
            Example([x], {"starts": (1, -5), "ends": (4, big), "axes": (0, 1), "steps": (1, 2)}),
            Example([x], {"starts": (-1, 6), "ends": (-big, 0), "axes": (2, 1),
                          "steps": (-1, -2)}),
            Example([x], {"starts": (3,), "ends": (2,), "axes": (0,), "steps": (1,)}),
            Example([x], {"starts": (0,), "ends": (big,), "axes": (-1,), "steps": (1,)}),
        ]

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        x = onnx_tensor(ctx, 0)
        r = len(x.type.shape)
        if ctx.opset < 10:
            onnx_only_attrs(ctx, {"starts", "ends", "axes"})
            starts = [int(v) for v in ctx.attrs["starts"]]
            ends = [int(v) for v in ctx.attrs["ends"]]
            axes = ([int(v) for v in ctx.attrs["axes"]] if "axes" in ctx.attrs
                    else list(range(len(starts))))
            steps = [1] * len(starts)
        else:
            onnx_only_attrs(ctx, set())
            sym_starts = onnx_dims(ctx, 1, "starts")
            sym_ends = onnx_dims(ctx, 2, "ends")
            if sym_starts is None or sym_ends is None:
                raise Unsupported("Slice without starts/ends")
            axes = onnx_ints(ctx, 3, "axes")
            axes = list(range(len(sym_starts))) if axes is None else axes
            steps = onnx_ints(ctx, 4, "steps")
            steps = [1] * len(sym_starts) if steps is None else steps
            if not (len(sym_starts) == len(sym_ends) == len(axes) == len(steps)):
                raise Unsupported("Slice parameter lengths differ")
            if any(not -r <= a < r for a in axes):
                raise Unsupported(f"Slice axes {axes} out of range for {x.type}")
            starts, ends = _symbolic_bounds(x.type.shape, sym_starts, sym_ends, axes, steps)
        if not (len(starts) == len(ends) == len(axes) == len(steps)):
            raise Unsupported("Slice parameter lengths differ")
        if any(not -r <= a < r for a in axes):
            raise Unsupported(f"Slice axes {axes} out of range for {x.type}")
        if any(st < 0 and e in (2**31 - 1, I64_MAX) for e, st in zip(ends, steps)):
            # the spec clamps such an end to dim-1 (empty slice), ONNX Runtime reads it as
            # "through index 0": ambiguous, so keep the node as it is
            raise Unsupported("Slice with a negative step and end=INT_MAX")
        return [build(ctx, "slice", [x], starts=tuple(starts), ends=tuple(ends),
                      axes=tuple(axes), steps=tuple(steps))]

    def to_onnx(self, ctx: Any, node: Any) -> None:
        a = node.attrs
        x = ctx.name(node.inputs[0])
        outs = ctx.out_names(node)
        if not a["axes"]:
            ctx.emit("Identity", [x], outs)
            return
        if ctx.opset < 10:
            if any(s != 1 for s in a["steps"]):
                raise ExportError(f"slice with steps {a['steps']} needs opset >= 10",
                                  where=str(node.origin or "slice"))
            ctx.emit("Slice", [x], outs, starts=list(a["starts"]), ends=list(a["ends"]),
                     axes=list(a["axes"]))
            return
        ctx.emit("Slice", [x, i64_const(ctx, a["starts"]), i64_const(ctx, a["ends"]),
                           i64_const(ctx, a["axes"]), i64_const(ctx, a["steps"])], outs)

    def from_aten(self, ctx: Any) -> Any:
        x = ctx.args[0]
        dim = int(aten_arg(ctx, 1, "dim", 0))
        start = aten_arg(ctx, 2, "start", None)
        end = aten_arg(ctx, 3, "end", None)
        (step,) = aten_ints(ctx, aten_arg(ctx, 4, "step", 1), "step")
        start = 0 if start is None else start
        end = I64_MAX if end is None else end
        if isinstance(end, str) and end == x.type.shape[norm_axis(ctx.target, dim,
                                                                  len(x.type.shape))]:
            end = I64_MAX  # x[..., :seq] on a dim of size seq
        if not isinstance(start, int) or not isinstance(end, int):
            raise Unsupported(f"aten.slice with symbolic bounds {start!r}:{end!r}")
        if step <= 0:
            raise Unsupported(f"aten.slice with step {step}")
        return build(ctx, "slice", [x], starts=(start,), ends=(end,), axes=(dim,), steps=(step,))


# ---- gather -----------------------------------------------------------------------------------

def _z3_take(x: np.ndarray, idx: np.ndarray, axis: int) -> np.ndarray:
    """np.take over object arrays where the indices may be z3 terms (If-chains)."""
    import z3

    concrete = []
    for v in idx.reshape(-1):
        if isinstance(v, (int, np.integer)):
            concrete.append(int(v))
        elif z3.is_int_value(v):
            concrete.append(v.as_long())
        else:
            concrete = None  # type: ignore[assignment]
            break
    if concrete is not None:
        return np.take(x, np.array(concrete, dtype=np.int64).reshape(idx.shape), axis=axis)
    d = x.shape[axis]
    if d == 0:
        raise NotSymbolic("gather from an empty axis")
    xm = np.moveaxis(x, axis, 0)  # [d, ...rest]
    out = np.empty(idx.shape + xm.shape[1:], dtype=object)
    for pos in np.ndindex(*idx.shape):
        i = idx[pos]
        for rest in np.ndindex(*xm.shape[1:]):
            term = xm[(d - 1,) + rest]
            for k in range(d - 2, -1, -1):
                term = z3.If(z3.Or(i == k, i == k - d), xm[(k,) + rest], term)
            out[pos + rest] = term
    # out is [idx..., rest...]; rest = x dims before axis then after axis
    nb = axis
    ni = idx.ndim
    perm = list(range(ni, ni + nb)) + list(range(ni)) + list(range(ni + nb, out.ndim))
    return np.transpose(out, perm)


@register
class Gather(OpDef):
    """ONNX Gather: out = take(x, indices, axis); negative indices count from the end."""

    name = "gather"
    cost_class = "injective"
    partial_read_inputs = (0,)
    attr_names = ('axis',)
    min_inputs = max_inputs = 2
    onnx = ("Gather",)
    aten = ("aten.select.int", "aten.embedding.default", "aten.index_select.default",
            "aten.index.Tensor")

    def mixed_axes(self, in_types: tuple[ValueType, ...], attrs: Attrs
                   ) -> tuple[tuple[int, int], ...]:
        return ((0, attrs["axis"]),)  # data along the axis; indices stay row-local

    @_keeps_normalized
    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        t = tensor_types(self.name, in_types)[0]
        if t.shape is None:
            return attrs
        return attrs.replace(axis=norm_axis(self.name, int(attrs["axis"]), len(t.shape)))

    def index_bound(self, pos: int, in_types: tuple[ValueType, ...], attrs: Attrs
                    ) -> Dim | None:
        x = in_types[0]
        if pos != 1 or not isinstance(x, TensorType) or not x.shape:
            return None
        return x.shape[int(attrs["axis"]) % len(x.shape)]

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        check_attrs(self.name, attrs, self.attr_names)
        x, i = tensor_types(self.name, in_types)
        if x.shape is None or i.shape is None:
            raise ShapeError(f"gather({x}, {i}): unknown rank")
        if not i.dtype.is_int:
            raise ShapeError(f"gather({x}, {i}): indices must be integers")
        if len(x.shape) == 0:
            raise ShapeError(f"gather({x}, {i}): data must have rank >= 1")
        a = norm_axis(self.name, int(attrs["axis"]), len(x.shape))
        return (x.with_shape(x.shape[:a] + i.shape + x.shape[a + 1:]),)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        x, i = np.asarray(xs[0]), np.asarray(xs[1])
        if x.dtype == object or i.dtype == object:
            return (_z3_take(x, i, attrs["axis"]),)
        return (np.take(x, i.astype(np.int64), axis=attrs["axis"]),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        import torch

        x, i = xs
        a = attrs["axis"]
        i = i.long()
        i = torch.where(i < 0, i + x.shape[a], i)
        out = x.index_select(a, i.reshape(-1))
        return (out.reshape(tuple(x.shape[:a]) + tuple(i.shape) + tuple(x.shape[a + 1:])),)

    def symbolic(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        x, i = np.asarray(xs[0], dtype=object), np.asarray(xs[1])
        return (_z3_take(x, i if i.dtype == object else i.astype(np.int64).astype(object),
                         attrs["axis"]),)

    def symbolic_domain(self, xs: Sequence[np.ndarray], attrs: Attrs
                        ) -> list[tuple[Any, Any]]:
        """Defined only where every index is an integer in [-d, d) (ONNX Gather: an index out
        of range is an error)."""
        import z3

        x, i = np.asarray(xs[0], dtype=object), np.asarray(xs[1])
        if i.dtype != object:
            return []
        d = x.shape[attrs["axis"]]
        ok = z3.And([z3.Or([v == k for k in range(-d, d)]) for v in i.reshape(-1)])
        (out,) = self.symbolic(xs, attrs)
        return [(t, ok) for t in np.asarray(out).reshape(-1)]

    def cost(self, in_types, out_types, attrs) -> Cost:  # type: ignore[override]
        return Cost(0.0, 2.0 * nbytes(out_types[0]) + nbytes(in_types[1]), 1)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        x = _r(rng, 5, 3, 2)
        return [Example([x, np.array([[0, -1], [4, 2], [1, 1]], np.int64)], {"axis": 0}),
                Example([x, np.array(-2, np.int64)], {"axis": 1}),
                Example([x, np.array([1, 0, 1], np.int32)], {"axis": -1})]

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        x, i = onnx_tensor(ctx, 0), onnx_tensor(ctx, 1)
        onnx_only_attrs(ctx, {"axis"})
        return [build(ctx, "gather", [x, i], axis=int(ctx.attrs.get("axis", 0)))]

    def to_onnx(self, ctx: Any, node: Any) -> None:
        x, i = node.inputs
        names = [ctx.name(x), ctx.name(i)]
        if i.type.dtype not in (DType.i32, DType.i64):
            names[1] = ctx.emit("Cast", [names[1]], 1, to=DType.i64.to_onnx())[0]
        ctx.emit("Gather", names, ctx.out_names(node), axis=int(node.attrs["axis"]))

    def from_aten(self, ctx: Any) -> Any:
        t = ctx.target
        if t == "aten.select.int":
            x, dim, index = ctx.args[0], int(ctx.args[1]), ctx.args[2]
            if not isinstance(index, int):
                raise Unsupported(f"aten.select with index {index!r}")
            return build(ctx, "gather", [x, ctx.constant(np.array(index, dtype=np.int64))],
                         axis=dim)
        if t == "aten.embedding.default":
            w, idx = ctx.args[0], ctx.args[1]
            return build(ctx, "gather", [w, idx], axis=0)
        if t == "aten.index_select.default":
            x, dim, idx = ctx.args[0], int(ctx.args[1]), ctx.args[2]
            return build(ctx, "gather", [x, idx], axis=dim)
        if t == "aten.index.Tensor":
            return _aten_index(ctx, ctx.args[0], list(ctx.args[1]))
        raise Unsupported(f"gather cannot lift {t}")


def _aten_index(ctx: Any, x: Any, indices: list[Any]) -> Any:
    """x[..., i0, i1, ...] with adjacent integer index tensors: one gather over the indexed dims
    flattened (linear index i0 * (d1*d2...) + i1 * (d2...) + ...; folded when all are constant)."""
    given = [k for k, v in enumerate(indices) if v is not None]
    if not given or given != list(range(given[0], given[0] + len(given))):
        raise Unsupported("aten.index with index tensors that are not adjacent")
    idxs = [indices[k] for k in given]
    for i in idxs:
        if not isinstance(i.type, TensorType) or not i.type.dtype.is_int:
            raise Unsupported(f"aten.index with index of type {i.type}")
    k0, m = given[0], len(given)
    if m == 1:
        return build(ctx, "gather", [x, idxs[0]], axis=k0)
    shape = x.type.shape
    dims = shape[k0:k0 + m] if shape is not None else ()
    if len(dims) != m or not all(isinstance(d, int) for d in dims):
        raise Unsupported(f"aten.index over symbolic dims of {x.type}")
    strides = [math.prod(dims[j + 1:]) for j in range(m)]
    if all(i.node.op == "constant" and i.node.const.has_array for i in idxs):
        arrs = [np.asarray(i.node.const.array).astype(np.int64) % d for i, d in zip(idxs, dims)]
        lin = ctx.constant(sum(a * st for a, st in zip(arrs, strides)))
    else:
        lin = None
        for i, d, st in zip(idxs, dims, strides):
            i = i if i.type.dtype == DType.i64 else build(ctx, "cast", [i], to=DType.i64)
            zero = ctx.constant(np.array(0, np.int64))
            i = build(ctx, "where", [build(ctx, "less", [i, zero]),
                                     build(ctx, "add", [i, ctx.constant(np.array(d, np.int64))]),
                                     i])
            term = i if st == 1 else build(ctx, "mul", [i, ctx.constant(np.array(st, np.int64))])
            lin = term if lin is None else build(ctx, "add", [lin, term])
    flat = build(ctx, "reshape", [x], shape=tuple(shape[:k0]) + (math.prod(dims),) +
                 tuple(shape[k0 + m:]))
    return build(ctx, "gather", [flat, lin], axis=k0)


# ---- expand -----------------------------------------------------------------------------------

def concrete_expand(shape: Sequence[Dim], x_shape: tuple[int, ...]) -> tuple[int, ...]:
    off = len(shape) - len(x_shape)
    out = []
    for i, d in enumerate(shape):
        v = eval_dim(d)
        if v is None:
            j = i - off
            if j >= 0 and x_shape[j] != 1:
                v = x_shape[j]
            else:
                raise ShapeError(f"expand to {list(shape)}: symbol {d!r} has no run-time value "
                                 f"(bind it with graphopt.ops.symbols.symbol_values)")
        out.append(int(v))
    return tuple(out)


@register
class Expand(OpDef):
    """numpy broadcast_to(x, shape): ``shape`` is the output shape."""

    name = "expand"
    cost_class = "injective"
    exact_int = True
    index_pass_through = True
    dim_attrs = ("shape",)
    attr_names = ('shape',)
    min_inputs = max_inputs = 1
    onnx = ("Expand",)
    aten = ("aten.expand.default",)

    def mixed_axes(self, in_types: tuple[ValueType, ...], attrs: Attrs
                   ) -> tuple[tuple[int, int], ...]:
        return ()  # repeats size-1 dims only

    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        try:
            return attrs.replace(shape=_dims(self.name, "shape", attrs["shape"]))
        except (ShapeError, KeyError, TypeError):
            return attrs

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        check_attrs(self.name, attrs, self.attr_names)
        t, shp = _one(self.name, in_types)
        out = _dims(self.name, "shape", attrs["shape"])
        if len(out) < len(shp):
            raise ShapeError(f"expand({t}) to {list(out)}: target has a lower rank")
        b = broadcast_shapes(f"expand({t}) to {list(out)}", shp, out)
        if b != out:
            raise ShapeError(f"expand({t}) to {list(out)}: broadcast gives {list(b)}")
        return (t.with_shape(out),)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        x = np.asarray(xs[0])
        return (np.array(np.broadcast_to(x, concrete_expand(attrs["shape"], x.shape))),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        x = xs[0]
        return (x.expand(concrete_expand(attrs["shape"], tuple(x.shape))),)

    def cost(self, in_types, out_types, attrs) -> Cost:  # type: ignore[override]
        return _move_cost(in_types, out_types)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        return [Example([_r(rng, 3, 1)], {"shape": (2, 3, 5)}),
                Example([_r(rng, 1, 4)], {"shape": (1, 4)})]

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        x = onnx_tensor(ctx, 0)
        onnx_only_attrs(ctx, set())
        target = onnx_dims(ctx, 1, "shape")
        if target is None:
            raise Unsupported("Expand without shape")
        if any(isinstance(d, int) and d < 0 for d in target):
            raise Unsupported(f"Expand to {target}")
        try:
            out = broadcast_shapes("Expand", x.type.shape, tuple(target))
        except ShapeError as e:
            raise Unsupported(e.message) from None
        return [build(ctx, "expand", [x], shape=out)]

    def to_onnx(self, ctx: Any, node: Any) -> None:
        x = node.inputs[0]
        shp = shape_tensor(ctx, node, x, node.attrs["shape"], "expand")
        ctx.emit("Expand", [ctx.name(x), shp], ctx.out_names(node))

    def from_aten(self, ctx: Any) -> Any:
        x = ctx.args[0]
        size = list(aten_arg(ctx, 1, "size"))
        xs = x.type.shape
        off = len(size) - len(xs)
        if off < 0:
            raise Unsupported(f"aten.expand of {x.type} to {size}")
        out: list[Dim] = []
        for i, d in enumerate(size):
            if isinstance(d, int) and d == -1:
                if i < off:
                    raise Unsupported(f"aten.expand with -1 in a new dim: {size}")
                out.append(xs[i - off])
            elif isinstance(d, (int, str)):
                out.append(d)
            else:
                raise Unsupported(f"aten.expand size {d!r}")
        return build(ctx, "expand", [x], shape=tuple(out))


# ---- squeeze / unsqueeze ----------------------------------------------------------------------

@register
class Squeeze(OpDef):
    """Size-1 dims at ``axes`` removed."""

    name = "squeeze"
    cost_class = "view"
    exact_int = True
    index_pass_through = True
    attr_names = ('axes',)
    min_inputs = max_inputs = 1
    onnx = ("Squeeze",)
    aten = ("aten.squeeze.dims", "aten.squeeze.dim", "aten.squeeze.default")

    @_keeps_normalized
    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        _, shp = _one(self.name, in_types)
        axes = _ints(self.name, "axes", attrs["axes"])
        return attrs.replace(axes=tuple(sorted({norm_axis(self.name, a, len(shp))
                                                for a in axes})))

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        check_attrs(self.name, attrs, self.attr_names)
        t, shp = _one(self.name, in_types)
        axes = {norm_axis(self.name, a, len(shp)) for a in _ints(self.name, "axes", attrs["axes"])}
        for a in sorted(axes):
            if shp[a] != 1:
                raise ShapeError(f"squeeze({t}): dim {a} is {shp[a]}, not 1")
        return (t.with_shape(tuple(d for i, d in enumerate(shp) if i not in axes)),)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        return (np.squeeze(np.asarray(xs[0]), axis=tuple(attrs["axes"])),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        x = xs[0]
        axes = set(attrs["axes"])
        return (x.reshape(tuple(d for i, d in enumerate(x.shape) if i not in axes)),)

    def cost(self, in_types, out_types, attrs) -> Cost:  # type: ignore[override]
        return _view_cost()

    def examples(self, rng: np.random.Generator) -> list[Example]:
        return [Example([_r(rng, 1, 3, 1, 5)], {"axes": (0, -2)}),
                Example([_r(rng, 3, 1)], {"axes": (1,)})]

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        x = onnx_tensor(ctx, 0)
        shp = x.type.shape
        if ctx.opset < 13:
            onnx_only_attrs(ctx, {"axes"})
            axes = ctx.attrs.get("axes")
            axes = None if axes is None else [int(a) for a in axes]
        else:
            onnx_only_attrs(ctx, set())
            axes = onnx_ints(ctx, 1, "axes")
        if axes is None:
            if any(not isinstance(d, int) for d in shp):
                raise Unsupported(f"Squeeze without axes of {x.type} (symbolic dims)")
            axes = [i for i, d in enumerate(shp) if d == 1]
        return [build(ctx, "squeeze", [x], axes=tuple(axes))]

    def to_onnx(self, ctx: Any, node: Any) -> None:
        _emit_axes_op(ctx, node, "Squeeze")

    def from_aten(self, ctx: Any) -> Any:
        x = ctx.args[0]
        shp = x.type.shape
        if ctx.target == "aten.squeeze.default":
            dims = list(range(len(shp)))
        elif ctx.target == "aten.squeeze.dim":
            dims = [int(aten_arg(ctx, 1, "dim"))]
        else:
            dims = [int(d) for d in aten_arg(ctx, 1, "dim")]
        if not shp:
            return x
        dims = [norm_axis(ctx.target, d, len(shp)) for d in dims]
        if any(not isinstance(shp[d], int) for d in dims):
            raise Unsupported(f"{ctx.target} of {x.type}: symbolic dim may or may not be 1")
        axes = tuple(d for d in dims if shp[d] == 1)  # torch ignores dims that are not 1
        if not axes:
            return x
        return build(ctx, "squeeze", [x], axes=axes)


@register
class Unsqueeze(OpDef):
    """Size-1 dims inserted so that they sit at ``axes`` of the output."""

    name = "unsqueeze"
    cost_class = "view"
    exact_int = True
    index_pass_through = True
    attr_names = ('axes',)
    min_inputs = max_inputs = 1
    onnx = ("Unsqueeze",)
    aten = ("aten.unsqueeze.default",)

    @_keeps_normalized
    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        _, shp = _one(self.name, in_types)
        axes = _ints(self.name, "axes", attrs["axes"])
        r = len(shp) + len(axes)
        return attrs.replace(axes=tuple(sorted(norm_axis(self.name, a, r) for a in axes)))

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        check_attrs(self.name, attrs, self.attr_names)
        t, shp = _one(self.name, in_types)
        axes = _ints(self.name, "axes", attrs["axes"])
        r = len(shp) + len(axes)
        na = [norm_axis(self.name, a, r) for a in axes]
        if len(set(na)) != len(na):
            raise ShapeError(f"unsqueeze({t}): repeated axes {list(axes)}")
        it = iter(shp)
        return (t.with_shape(tuple(1 if i in na else next(it) for i in range(r))),)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        return (np.expand_dims(np.asarray(xs[0]), tuple(attrs["axes"])),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        x = xs[0]
        axes = attrs["axes"]
        r = x.dim() + len(axes)
        it = iter(x.shape)
        return (x.reshape(tuple(1 if i in axes else next(it) for i in range(r))),)

    def cost(self, in_types, out_types, attrs) -> Cost:  # type: ignore[override]
        return _view_cost()

    def examples(self, rng: np.random.Generator) -> list[Example]:
        return [Example([_r(rng, 3, 5)], {"axes": (0, -1)}),
                Example([np.array(2.5, np.float32)], {"axes": (0,)})]

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        x = onnx_tensor(ctx, 0)
        if ctx.opset < 13:
            onnx_only_attrs(ctx, {"axes"})
            axes = ctx.attrs.get("axes")
            axes = None if axes is None else [int(a) for a in axes]
        else:
            onnx_only_attrs(ctx, set())
            axes = onnx_ints(ctx, 1, "axes")
        if axes is None:
            raise Unsupported("Unsqueeze without axes")
        return [build(ctx, "unsqueeze", [x], axes=tuple(axes))]

    def to_onnx(self, ctx: Any, node: Any) -> None:
        _emit_axes_op(ctx, node, "Unsqueeze")

    def from_aten(self, ctx: Any) -> Any:
        x = ctx.args[0]
        return build(ctx, "unsqueeze", [x], axes=(int(aten_arg(ctx, 1, "dim")),))


def _emit_axes_op(ctx: Any, node: Any, op_type: str) -> None:
    axes = [int(a) for a in node.attrs["axes"]]
    x = ctx.name(node.inputs[0])
    outs = ctx.out_names(node)
    if not axes:
        ctx.emit("Identity", [x], outs)
    elif ctx.opset < 13:
        ctx.emit(op_type, [x], outs, axes=axes)
    else:
        ctx.emit(op_type, [x, i64_const(ctx, axes)], outs)


# ---- pad --------------------------------------------------------------------------------------

_PAD_MODES = ("constant", "reflect", "edge", "wrap")


def _pad_index(d: int, b: int, e: int, mode: str) -> np.ndarray:
    """Source index of every output position along one axis (non-constant modes)."""
    i = np.arange(-b, d + e)
    if mode == "edge":
        return np.clip(i, 0, d - 1)
    if mode == "wrap":
        return np.mod(i, d)
    # reflect (no edge repeat)
    i = np.abs(i)
    return np.where(i > d - 1, 2 * (d - 1) - i, i)


def _z3_like(value: float, sample: Any) -> Any:
    import z3

    if isinstance(sample, z3.BoolRef):
        return z3.BoolVal(bool(value))
    if isinstance(sample, z3.ArithRef) and sample.is_int():
        return z3.IntVal(int(value))
    if isinstance(sample, z3.ArithRef):
        return z3.RealVal(value)
    return value


@register
class Pad(OpDef):
    """ONNX Pad: ``pads`` = (begin_0.., end_0..), non-negative; mode constant | reflect | edge |
    wrap; ``value`` for constant mode."""

    name = "pad"
    cost_class = "injective"
    exact_int = True
    attr_names = ('pads', 'mode', 'value')
    min_inputs = max_inputs = 1
    onnx = ("Pad",)
    aten = ("aten.constant_pad_nd.default", "aten.reflection_pad1d.default",
            "aten.reflection_pad2d.default", "aten.reflection_pad3d.default",
            "aten.replication_pad1d.default", "aten.replication_pad2d.default",
            "aten.replication_pad3d.default")

    def mixed_axes(self, in_types: tuple[ValueType, ...], attrs: Attrs
                   ) -> tuple[tuple[int, int], ...]:
        pads = attrs["pads"]
        n = len(pads) // 2
        return tuple((0, a) for a in range(n) if pads[a] or pads[n + a])

    @_keeps_normalized
    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        check_attrs(self.name, attrs, self.attr_names)
        mode = str(attrs.get("mode", "constant")).lower()
        value = float(attrs.get("value", 0.0)) if mode == "constant" else 0.0
        return Attrs({"pads": _ints(self.name, "pads", attrs["pads"]), "mode": mode,
                      "value": value})

    def _check(self, in_types: Sequence[ValueType], attrs: Attrs) -> tuple[TensorType, list[Dim]]:
        t, shp = _one(self.name, in_types)
        pads = _ints(self.name, "pads", attrs["pads"])
        mode = attrs.get("mode", "constant")
        r = len(shp)
        if len(pads) != 2 * r:
            raise ShapeError(f"pad({t}): {len(pads)} pads for rank {r}")
        if mode not in _PAD_MODES:
            raise ShapeError(f"pad({t}): unknown mode {mode!r}")
        if any(p < 0 for p in pads):
            raise ShapeError(f"pad({t}): negative pads {list(pads)} (crop with slice)")
        out: list[Dim] = []
        for i, d in enumerate(shp):
            b, e = pads[i], pads[r + i]
            if b == e == 0:
                out.append(d)
                continue
            if not isinstance(d, int):
                raise ShapeError(f"pad({t}): cannot pad symbolic dim {d!r}")
            if mode == "reflect" and (b > d - 1 or e > d - 1):
                raise ShapeError(f"pad({t}): reflect pads {b},{e} need dim {i} > both")
            if mode in ("edge", "wrap") and d == 0:
                raise ShapeError(f"pad({t}): {mode} padding of an empty dim")
            if mode == "wrap" and (b > d or e > d):
                raise ShapeError(f"pad({t}): wrap pads {b},{e} exceed dim {i} ({d})")
            out.append(d + b + e)
        return t, out

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        check_attrs(self.name, attrs, self.attr_names)
        t, out = self._check(in_types, attrs)
        return (t.with_shape(tuple(out)),)

    def _run(self, x: Any, attrs: Attrs, take: Callable[[Any, np.ndarray, int], Any],
             full: Callable[[tuple[int, ...]], Any]) -> Any:
        pads, mode = attrs["pads"], attrs["mode"]
        r = len(x.shape)
        if mode == "constant":
            out_shape = tuple(int(d) + pads[i] + pads[r + i] for i, d in enumerate(x.shape))
            out = full(out_shape)
            idx = tuple(slice(pads[i], pads[i] + int(d)) for i, d in enumerate(x.shape))
            out[idx] = x
            return out
        for i in range(r):
            if pads[i] or pads[r + i]:
                x = take(x, _pad_index(int(x.shape[i]), pads[i], pads[r + i], mode), i)
        return x

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        x = np.asarray(xs[0])
        v = attrs["value"]
        if x.dtype == object:
            sample = x.reshape(-1)[0] if x.size else None
            fillv = _z3_like(v, sample)
            fill = lambda s: np.full(s, fillv, dtype=object)  # noqa: E731
        else:
            fill = lambda s: np.full(s, v, dtype=x.dtype)  # noqa: E731
        return (self._run(x, attrs, lambda a, i, ax: np.take(a, i, axis=ax), fill),)

    def fingerprint(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        if attrs["mode"] == "constant" and not float(attrs["value"]).is_integer():
            raise NotFingerprinted(f"pad: fill value {attrs['value']} is not an integer")
        return super().fingerprint(xs, attrs)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        import torch

        x = xs[0]
        v = attrs["value"]
        return (self._run(
            x, attrs,
            lambda a, i, ax: a.index_select(ax, torch.from_numpy(i).to(a.device)),
            lambda s: torch.full(s, v, dtype=x.dtype, device=x.device)),)

    def cost(self, in_types, out_types, attrs) -> Cost:  # type: ignore[override]
        return _move_cost(in_types, out_types)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        x = _r(rng, 3, 4)
        return [Example([x], {"pads": (1, 0, 2, 3), "mode": "constant", "value": 1.5}),
                Example([x], {"pads": (2, 1, 1, 3), "mode": "reflect"}),
                Example([x], {"pads": (0, 3, 2, 1), "mode": "edge"}),
                Example([x], {"pads": (1, 4, 3, 2), "mode": "wrap"}),
                Example([rng.integers(0, 9, (2, 3)).astype(np.int32)],
                        {"pads": (1, 1, 0, 2), "mode": "constant", "value": 7.0})]

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        x = onnx_tensor(ctx, 0)
        r = len(x.type.shape)
        mode = str(ctx.attrs.get("mode", "constant"))
        if isinstance(ctx.attrs.get("mode"), bytes):
            mode = ctx.attrs["mode"].decode()
        if ctx.opset < 11:
            onnx_only_attrs(ctx, {"mode", "pads", "paddings", "value"})
            pads = ctx.attrs.get("pads", ctx.attrs.get("paddings"))
            if pads is None:
                raise Unsupported("Pad without pads")
            pads = [int(p) for p in pads]
            value = float(ctx.attrs.get("value", 0.0))
        else:
            onnx_only_attrs(ctx, {"mode"})
            pads = onnx_ints(ctx, 1, "pads")
            if pads is None:
                raise Unsupported("Pad without pads")
            value = 0.0
            if len(ctx.inputs) > 2 and ctx.inputs[2] is not None:
                cv = ctx.const(2)
                if cv is None:
                    raise Unsupported("Pad constant_value is not a constant")
                cv = np.asarray(cv).reshape(-1)
                if cv.size != 1:
                    raise Unsupported("Pad constant_value with several elements")
                if cv.dtype.kind in "iu" and abs(int(cv[0])) > 2**53:
                    raise Unsupported("Pad constant_value not exact as a float")
                value = float(cv[0])
            axes = onnx_ints(ctx, 3, "axes")
            if axes is not None:
                if ctx.opset < 18:
                    raise Unsupported("Pad axes input before opset 18")
                axes = [a + r if a < 0 else a for a in axes]
                if len(pads) != 2 * len(axes) or any(not 0 <= a < r for a in axes):
                    raise Unsupported(f"Pad axes {axes} with pads {pads}")
                full = [0] * (2 * r)
                for k, a in enumerate(axes):
                    full[a] = pads[k]
                    full[r + a] = pads[len(axes) + k]
                pads = full
        if mode not in _PAD_MODES or (mode == "wrap" and ctx.opset < 19):
            raise Unsupported(f"Pad mode {mode!r}")
        if len(pads) != 2 * r:
            raise Unsupported(f"Pad with {len(pads)} pads for rank {r}")
        return [pad_or_crop(ctx, x, pads[:r], pads[r:], mode, value)]

    def onnx_opset_for(self, attrs: Attrs) -> int:
        return 19 if attrs["mode"] == "wrap" else 0  # Pad's wrap mode begins at opset 19

    def to_onnx(self, ctx: Any, node: Any) -> None:
        a = node.attrs
        x = node.inputs[0]
        mode = a["mode"]
        outs = ctx.out_names(node)
        if mode == "wrap" and ctx.opset < 19:
            raise ExportError("pad mode wrap needs opset >= 19", where=str(node.origin or "pad"))
        if ctx.opset < 11:
            ctx.emit("Pad", [ctx.name(x)], outs, mode=mode, pads=list(a["pads"]),
                     value=float(a["value"]))
            return
        ins = [ctx.name(x), i64_const(ctx, a["pads"])]
        if mode == "constant" and a["value"] != 0.0:
            try:
                npdt = x.type.dtype.to_numpy()
            except TypeError:
                raise ExportError(f"pad value on {x.type.dtype.value}",
                                  where=str(node.origin or "pad")) from None
            ins.append(ctx.const(np.array(a["value"], dtype=npdt)))
        ctx.emit("Pad", ins, outs, mode=mode)

    def from_aten(self, ctx: Any) -> Any:
        x = ctx.args[0]
        r = len(x.type.shape)
        pad = aten_ints(ctx, aten_arg(ctx, 1, "pad", aten_arg(ctx, 1, "padding")), "pad")
        if len(pad) % 2 or len(pad) > 2 * r:
            raise Unsupported(f"{ctx.target} with pad {pad} on {x.type}")
        begins, ends = [0] * r, [0] * r
        for k in range(len(pad) // 2):
            begins[r - 1 - k] = pad[2 * k]
            ends[r - 1 - k] = pad[2 * k + 1]
        if ctx.target == "aten.constant_pad_nd.default":
            mode, value = "constant", float(aten_arg(ctx, 2, "value", 0.0))
        elif "reflection" in ctx.target:
            mode, value = "reflect", 0.0
        else:
            mode, value = "edge", 0.0
        return pad_or_crop(ctx, x, begins, ends, mode, value)


def pad_or_crop(ctx: Any, x: Any, begins: Sequence[int], ends: Sequence[int], mode: str,
                value: float) -> Any:
    """pad with the positive parts, then slice away the negative ones (constant mode only)."""
    r = len(begins)
    if any(p < 0 for p in (*begins, *ends)) and mode != "constant":
        raise Unsupported(f"negative pads in {mode} mode")
    pb = [max(p, 0) for p in begins]
    pe = [max(p, 0) for p in ends]
    y = x
    if any(pb) or any(pe):
        y = build(ctx, "pad", [x], pads=tuple(pb + pe), mode=mode, value=value)
    crop = [(i, -begins[i], ends[i]) for i in range(r) if begins[i] < 0 or ends[i] < 0]
    if crop:
        shp = y.type.shape
        starts, stops, axes = [], [], []
        for i, cb, ce in crop:
            d = shp[i]
            if not isinstance(d, int):
                raise Unsupported(f"cropping symbolic dim {d!r}")
            s = max(cb, 0)
            e = d + min(ce, 0)
            if e < s:
                raise Unsupported(f"crop larger than dim {i} ({d})")
            starts.append(s)
            stops.append(e)
            axes.append(i)
        y = build(ctx, "slice", [y], starts=tuple(starts), ends=tuple(stops), axes=tuple(axes),
                  steps=(1,) * len(axes))
    return y


# ---- tile -------------------------------------------------------------------------------------

@register
class Tile(OpDef):
    """numpy tile with one repeat count per dim."""

    name = "tile"
    cost_class = "injective"
    exact_int = True
    index_pass_through = True
    attr_names = ('repeats',)
    min_inputs = max_inputs = 1
    onnx = ("Tile",)
    aten = ("aten.repeat.default",)

    def mixed_axes(self, in_types: tuple[ValueType, ...], attrs: Attrs
                   ) -> tuple[tuple[int, int], ...]:
        return tuple((0, a) for a, r in enumerate(attrs["repeats"]) if r != 1)

    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        try:
            return attrs.replace(repeats=_ints(self.name, "repeats", attrs["repeats"]))
        except (ShapeError, KeyError):
            return attrs

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        check_attrs(self.name, attrs, self.attr_names)
        t, shp = _one(self.name, in_types)
        reps = _ints(self.name, "repeats", attrs["repeats"])
        if len(reps) != len(shp) or any(r < 0 for r in reps):
            raise ShapeError(f"tile({t}): repeats {list(reps)} do not fit rank {len(shp)}")
        return (t.with_shape(tuple(dim_product([d, r]) for d, r in zip(shp, reps))),)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        x = np.asarray(xs[0])
        return (np.tile(x, attrs["repeats"]) if x.ndim else x.copy(),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        x = xs[0]
        return (x.repeat(*attrs["repeats"]) if x.dim() else x.clone(),)

    def cost(self, in_types, out_types, attrs) -> Cost:  # type: ignore[override]
        return _move_cost(in_types, out_types)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        return [Example([_r(rng, 2, 3)], {"repeats": (3, 1)}),
                Example([_r(rng, 1, 2, 1)], {"repeats": (2, 2, 5)})]

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        x = onnx_tensor(ctx, 0)
        if ctx.opset < 6:
            raise Unsupported("Tile-1 (tiles/axis inputs)")
        onnx_only_attrs(ctx, set())
        reps = onnx_ints(ctx, 1, "repeats")
        if reps is None:
            raise Unsupported("Tile without repeats")
        return [build(ctx, "tile", [x], repeats=tuple(reps))]

    def to_onnx(self, ctx: Any, node: Any) -> None:
        ctx.emit("Tile", [ctx.name(node.inputs[0]), i64_const(ctx, node.attrs["repeats"])],
                 ctx.out_names(node))

    def from_aten(self, ctx: Any) -> Any:
        x = ctx.args[0]
        reps = aten_ints(ctx, aten_arg(ctx, 1, "repeats"), "repeats")
        r = len(x.type.shape)
        if len(reps) < r:
            raise Unsupported(f"aten.repeat with {len(reps)} repeats on rank {r}")
        if len(reps) > r:
            x = build(ctx, "reshape", [x], shape=(1,) * (len(reps) - r) + tuple(x.type.shape))
        return build(ctx, "tile", [x], repeats=tuple(reps))
