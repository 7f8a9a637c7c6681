"""Reductions and normalizations: reduce_*, argmax/argmin, softmax/log_softmax, layer_norm,
rms_norm, batch_norm.

Reductions take ``axes`` (any order, negative allowed, ``()`` = all axes) and ``keepdims``
(default False); ``normalize_attrs`` stores the axes explicitly, non-negative and sorted, so
``()`` on a rank-2 input is stored as ``(0, 1)``. The norms follow ONNX: with float16 / bfloat16
inputs the statistics are computed in float32 (ONNX ``stash_type`` 1) and the normalized value is
rounded to the input type before ``scale`` and ``bias`` apply.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from ..errors import ExportError, ShapeError
from ..ir.node import Attrs, Value
from ..ir.types import DType, TensorType, ValueType
from .elementwise import (FLOAT, NUMERIC, aten_arg, aten_float, aten_tensor, build, cast_to,
                          check_kind, const_of, emit1, emit_reduce, in_type, known_rank, need_type,
                          onnx_attrs, onnx_const_ints, onnx_inputs, same_dtypes, ufmap, zif,
                          zmap)
from .registry import (Cost, Example, OpDef, Unsupported, broadcast_shapes, nbytes, norm_axis,
                       numel, register, tensor_types)
from .residues import P, axis_sum, cubic, inverse, inverse_of_count, modp

# ---- helpers ------------------------------------------------------------------------------------


def obj_reduce(x: np.ndarray, axes: Sequence[int], keepdims: bool,
               fn: Callable[[Any, Any], Any], empty: Any = None) -> np.ndarray:
    """Fold ``fn`` over ``axes`` of an object array (numpy's reductions would call ``bool()`` on
    z3 terms); returns an object array, 0-d included."""
    x = np.asarray(x, dtype=object)
    rank = x.ndim
    axes = tuple(axes)
    rest = [i for i in range(rank) if i not in axes]
    xt = np.transpose(x, rest + list(axes))
    flat = xt.reshape(tuple(x.shape[i] for i in rest) + (-1,))
    out = np.empty(flat.shape[:-1], dtype=object)
    for idx in np.ndindex(out.shape):
        items = list(flat[idx])
        if not items:
            if empty is None:
                raise ShapeError("reduction over an empty axis has no value")
            out[idx] = empty
        else:
            out[idx] = functools.reduce(fn, items)
    if keepdims:
        out = out.reshape(tuple(1 if i in axes else x.shape[i] for i in range(rank)))
    return out


def stat_dtype(dt: np.dtype) -> np.dtype:
    """Statistics of float16 inputs are computed in float32 (ONNX stash_type=1)."""
    return np.dtype(np.float32) if dt == np.float16 else dt


def torch_stat_dtype(x: Any) -> Any:
    import torch

    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def emit_seq(ctx: Any, node: Any, cur: str, ops: Sequence[tuple[str, list[str], dict]]) -> None:
    """Emit ``ops`` as a chain starting from ``cur`` (each op's first input is the previous
    result); the last one writes the node's outputs."""
    if not ops:
        ctx.emit("Identity", [cur], ctx.out_names(node))
        return
    for i, (op_type, extra, attrs) in enumerate(ops):
        last = i == len(ops) - 1
        outs = ctx.out_names(node) if last else 1
        cur = ctx.emit(op_type, [cur] + list(extra), outs, **attrs)[0]


def ones_or_zeros(ctx: Any, shape: Sequence[Any], like: Value, value: float, what: str) -> Value:
    if not all(isinstance(d, int) for d in shape):
        raise Unsupported(f"{ctx.target}: {what} is None and its shape {list(shape)} is symbolic")
    return ctx.constant(np.full(tuple(shape), value, dtype=like.type.dtype.to_numpy()))


# ---- reductions ---------------------------------------------------------------------------------


class Reduce(OpDef):
    """Base of reduce_*: attrs axes (explicit, sorted, non-negative) and keepdims (bool)."""

    min_inputs = max_inputs = 1
    cost_class = "reduction"
    kind: ClassVar[str] = NUMERIC
    onnx_axes_input_since: ClassVar[int] = 18  # ReduceSum: 13
    empty_value: ClassVar[Any] = None  # value of a reduction over no elements (symbolic)

    # the ONNX pooling op computing this reduction over all spatial axes (keepdims) of a rank
    # >= 3 f16/f32 tensor: ONNX Runtime has specialized (NCHWc) kernels for it
    onnx_global_pool: ClassVar[str | None] = None

    def global_pool_form(self, node: Any) -> bool:
        """Export as ``onnx_global_pool``: the reduction is one, and the node did not come
        from an ONNX Reduce* node (the source's own spelling is kept: ONNX Runtime's kernels
        for the two differ in the last bit)."""
        t = in_type(node)
        if self.onnx_global_pool is None or t.shape is None or len(t.shape) < 3 or \
                t.dtype not in (DType.f16, DType.f32):
            return False
        if not node.attrs["keepdims"] or tuple(node.attrs["axes"]) != tuple(
                range(2, len(t.shape))):
            return False
        o = node.origin
        return not (o is not None and o.source == "onnx" and o.detail in self.onnx)

    def reduced_axes(self, rank: int, attrs: Attrs) -> tuple[int, ...]:
        return tuple(attrs.get("axes") or range(rank))

    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        extra = sorted(set(attrs) - {"axes", "keepdims"})
        if extra:
            raise ShapeError(f"{self.name}: unknown attribute(s) {extra}")
        t = in_types[0] if len(in_types) == 1 else None
        if not isinstance(t, TensorType) or t.shape is None:
            return attrs  # infer reports the bad input
        rank = len(t.shape)
        axes = attrs.get("axes", ())
        if isinstance(axes, int) and not isinstance(axes, bool):
            axes = (axes,)
        if not isinstance(axes, tuple) or not all(isinstance(a, int) and not isinstance(a, bool)
                                                  for a in axes):
            raise ShapeError(f"{self.name}: axes must be a tuple of ints, got {axes!r}")
        if rank == 0 and axes:
            raise ShapeError(f"{self.name}: axes {list(axes)} on a rank-0 input {t}")
        norm = [norm_axis(self.name, a, rank) for a in axes]
        if len(set(norm)) != len(norm):
            raise ShapeError(f"{self.name}: repeated axes {list(axes)} for {t}")
        keep = attrs.get("keepdims", False)
        if keep not in (0, 1) or isinstance(keep, float):
            raise ShapeError(f"{self.name}: keepdims must be a bool, got {keep!r}")
        return Attrs({"axes": tuple(sorted(norm)) if norm else tuple(range(rank)),
                      "keepdims": bool(keep)})

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        (x,) = tensor_types(self.name, in_types)
        shape = known_rank(self.name, x)
        check_kind(self.name, x, self.kind)
        axes = attrs["axes"]
        if any(not 0 <= a < len(shape) for a in axes):
            raise ShapeError(f"{self.name}: axes {list(axes)} out of range for {x}")
        out = []
        for i, d in enumerate(shape):
            if i in axes:
                if attrs["keepdims"]:
                    out.append(1)
            else:
                out.append(d)
        return (TensorType(tuple(out), x.dtype),)

    def cost(self, in_types: tuple[ValueType, ...], out_types: tuple[ValueType, ...],
             attrs: Attrs) -> Cost:
        b = sum(nbytes(t) for t in in_types) + sum(nbytes(t) for t in out_types)
        return Cost(float(sum(numel(t) for t in in_types)), float(b), 1)

    # numpy / torch / z3 -----------------------------------------------------------------------
    def np_reduce(self, x: np.ndarray, axes: tuple[int, ...], keep: bool) -> np.ndarray:
        raise NotImplementedError

    def torch_reduce(self, x: Any, axes: tuple[int, ...], keep: bool) -> Any:
        raise NotImplementedError

    def z3_fold(self, a: Any, b: Any) -> Any:
        raise NotImplementedError

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        x = np.asarray(xs[0])
        with np.errstate(all="ignore"):
            out = self.np_reduce(x, attrs["axes"], attrs["keepdims"])
        return (np.asarray(out).astype(x.dtype, copy=False),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        x = xs[0]
        if not attrs["axes"]:  # rank 0 (torch reads dim=() as "all dims")
            return (x.clone(),)
        return (self.torch_reduce(x, attrs["axes"], attrs["keepdims"]).to(x.dtype),)

    def symbolic(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        return (obj_reduce(xs[0], attrs["axes"], attrs["keepdims"], self.z3_fold,
                           self.empty_value),)

    # ONNX ----------------------------------------------------------------------------------
    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        if ctx.opset >= self.onnx_axes_input_since:
            a = onnx_attrs(ctx, {"keepdims": 1, "noop_with_empty_axes": 0})
            x, _ = onnx_inputs(ctx, 1, 2)
            axes = onnx_const_ints(ctx, 1)
        else:
            a = onnx_attrs(ctx, {"keepdims": 1, "axes": None})
            (x,) = onnx_inputs(ctx, 1, 1)
            axes = a["axes"]
            a["noop_with_empty_axes"] = 0
        if not axes:
            if a["noop_with_empty_axes"]:
                return [build(ctx, "identity", [x])]
            axes = []
        return [build(ctx, self.name, [x], axes=tuple(int(v) for v in axes),
                      keepdims=bool(a["keepdims"]))]

    def to_onnx(self, ctx: Any, node: Any) -> None:
        if not self.onnx:
            raise ExportError(f"op {self.name} has no ONNX mapping")
        need_type(ctx, self.onnx[0], in_type(node).dtype)
        if self.global_pool_form(node):
            ctx.emit(self.onnx_global_pool, [ctx.name(node.inputs[0])], ctx.out_names(node))
            return
        emit_reduce(ctx, self.onnx[0], ctx.name(node.inputs[0]), node.attrs["axes"],
                    node.attrs["keepdims"], ctx.out_names(node))

    # aten ----------------------------------------------------------------------------------
    def from_aten(self, ctx: Any) -> Any:
        x = aten_tensor(ctx, aten_arg(ctx, 0, "self", None))
        if ctx.target.endswith(".default") and self.name in ("reduce_sum", "reduce_mean",
                                                             "reduce_prod"):
            dims, keep = None, False  # sum/mean/prod.default: all dims
            extra_args = ctx.args[1:]
        else:
            dims = aten_arg(ctx, 1, "dim", None)
            keep = aten_arg(ctx, 2, "keepdim", False)
            extra_args = ctx.args[3:]
        if extra_args:
            raise Unsupported(f"{ctx.target}: extra arguments {extra_args}")
        dt = ctx.kwargs.get("dtype")
        if dt is not None:
            x = cast_to(ctx, x, DType.from_torch(dt))
        elif self.name in ("reduce_sum", "reduce_prod") and not x.type.dtype.is_float:
            x = cast_to(ctx, x, DType.i64)  # torch sums / multiplies integers and bools in int64
        if isinstance(dims, int):
            dims = [dims]
        axes = tuple(dims) if dims else ()
        return build(ctx, self.name, [x], axes=axes, keepdims=bool(keep))

    def examples(self, rng: np.random.Generator) -> list[Example]:
        x = rng.standard_normal((2, 3, 4)).astype(np.float32)
        xi = rng.integers(-4, 5, (3, 5)).astype(np.int64)
        return [Example([x], {"axes": (-1,), "keepdims": False}, rtol=1e-5, atol=1e-5),
                Example([x], {"axes": (2, 0), "keepdims": True}, rtol=1e-5, atol=1e-5),
                Example([x], {"axes": (), "keepdims": False}, rtol=1e-5, atol=1e-5),
                Example([x[0, 0, 0].copy()], {}),
                Example([x.astype(np.float16)], {"axes": (1,)}, rtol=3e-3, atol=3e-3),
                Example([xi], {"axes": (0,), "keepdims": True})]


@register
class ReduceSum(Reduce):
    name = "reduce_sum"
    exact_int = True
    onnx = ("ReduceSum",)
    aten = ("aten.sum.dim_IntList", "aten.sum.default")
    onnx_axes_input_since = 13
    empty_value = 0

    def np_reduce(self, x: np.ndarray, axes: tuple[int, ...], keep: bool) -> np.ndarray:
        return np.sum(x, axis=axes, keepdims=keep, dtype=stat_dtype(x.dtype))

    def torch_reduce(self, x: Any, axes: tuple[int, ...], keep: bool) -> Any:
        import torch

        return torch.sum(x, dim=axes, keepdim=keep, dtype=torch_stat_dtype(x))

    def z3_fold(self, a: Any, b: Any) -> Any:
        return a + b


@register
class ReduceMean(ReduceSum):
    name = "reduce_mean"
    exact_int = False  # a mean: multiplies by the inverse of the count (fingerprint)
    kind = FLOAT
    onnx = ("ReduceMean",)
    onnx_global_pool = "GlobalAveragePool"
    aten = ("aten.mean.dim", "aten.mean.default")
    onnx_axes_input_since = 18

    def np_reduce(self, x: np.ndarray, axes: tuple[int, ...], keep: bool) -> np.ndarray:
        return np.mean(x, axis=axes, keepdims=keep, dtype=stat_dtype(x.dtype))

    def torch_reduce(self, x: Any, axes: tuple[int, ...], keep: bool) -> Any:
        import torch

        return torch.mean(x, dim=axes, keepdim=keep, dtype=torch_stat_dtype(x))

    def symbolic(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        from .elementwise import real

        x = np.asarray(xs[0], dtype=object)
        n = int(np.prod([x.shape[a] for a in attrs["axes"]], dtype=np.int64))
        s = obj_reduce(x, attrs["axes"], attrs["keepdims"], self.z3_fold, None)
        return (np.vectorize(lambda v: real(v) / n, otypes=[object])(s) if s.size else s,)

    def fingerprint(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        x = xs[0]
        axes = tuple(attrs["axes"]) or tuple(range(x.ndim))
        n = int(np.prod([x.shape[a] for a in axes])) if axes else 1
        s = np.sum(x, axis=axes, keepdims=bool(attrs.get("keepdims", True)))
        return (modp(s) * inverse_of_count(n) % P,)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        return [e for e in super().examples(rng) if e.inputs[0].dtype.kind == "f"]


@register
class ReduceProd(ReduceSum):
    name = "reduce_prod"
    exact_int = False  # products of residues overflow int64
    onnx = ("ReduceProd",)
    aten = ("aten.prod.dim_int", "aten.prod.default")
    onnx_axes_input_since = 18
    empty_value = 1

    def np_reduce(self, x: np.ndarray, axes: tuple[int, ...], keep: bool) -> np.ndarray:
        return np.prod(x, axis=axes, keepdims=keep, dtype=stat_dtype(x.dtype))

    def torch_reduce(self, x: Any, axes: tuple[int, ...], keep: bool) -> Any:
        y = x.to(torch_stat_dtype(x))
        for a in sorted(axes, reverse=True):
            y = y.prod(dim=a, keepdim=keep)
        return y

    def z3_fold(self, a: Any, b: Any) -> Any:
        return a * b

    def from_aten(self, ctx: Any) -> Any:
        if ctx.target == "aten.prod.dim_int":
            dim = aten_arg(ctx, 1, "dim", None)
            if not isinstance(dim, int):
                raise Unsupported(f"{ctx.target}: dim {dim!r}")
        return super().from_aten(ctx)


@register
class ReduceMax(Reduce):
    name = "reduce_max"
    ordered = True
    onnx = ("ReduceMax",)
    onnx_global_pool = "GlobalMaxPool"
    aten = ("aten.amax.default",)

    def np_reduce(self, x: np.ndarray, axes: tuple[int, ...], keep: bool) -> np.ndarray:
        # ONNX: over no elements, -inf (the dtype's lowest value where it has no infinity)
        if x.size:
            return np.max(x, axis=axes, keepdims=keep)
        return np.max(x, axis=axes, keepdims=keep, initial=_extreme(x.dtype, low=True))

    def torch_reduce(self, x: Any, axes: tuple[int, ...], keep: bool) -> Any:
        import torch

        return torch.amax(x, dim=axes, keepdim=keep)

    def z3_fold(self, a: Any, b: Any) -> Any:
        return zif(b > a, b, a)


def _extreme(dt: np.dtype, low: bool) -> Any:
    """The integer dtype's lowest / highest value (bool: False / True), else -inf / +inf: what
    an ONNX ReduceMax / ReduceMin of no elements gives."""
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return info.min if low else info.max
    if dt.kind == "b":
        return not low
    return -np.inf if low else np.inf


@register
class ReduceMin(Reduce):
    name = "reduce_min"
    ordered = True
    onnx = ("ReduceMin",)
    aten = ("aten.amin.default",)

    def np_reduce(self, x: np.ndarray, axes: tuple[int, ...], keep: bool) -> np.ndarray:
        # ONNX: over no elements, +inf (the dtype's highest value where it has no infinity)
        if x.size:
            return np.min(x, axis=axes, keepdims=keep)
        return np.min(x, axis=axes, keepdims=keep, initial=_extreme(x.dtype, low=False))

    def torch_reduce(self, x: Any, axes: tuple[int, ...], keep: bool) -> Any:
        import torch

        return torch.amin(x, dim=axes, keepdim=keep)

    def z3_fold(self, a: Any, b: Any) -> Any:
        return zif(b < a, b, a)


# ---- argmax / argmin ----------------------------------------------------------------------------


@register
class ArgMax(OpDef):
    """Index (i64) of the largest value along ``axis``: the first one on ties, the last one with
    ``select_last_index``."""

    name = "argmax"
    min_inputs = max_inputs = 1
    cost_class = "reduction"
    onnx = ("ArgMax",)
    aten = ("aten.argmax.default",)
    better: ClassVar[Callable[[Any, Any], Any]] = staticmethod(lambda v, best: v > best)

    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        extra = sorted(set(attrs) - {"axis", "keepdims", "select_last_index"})
        if extra:
            raise ShapeError(f"{self.name}: unknown attribute(s) {extra}")
        d = {"axis": 0, "keepdims": False, "select_last_index": False}
        d.update(attrs)
        for k in ("keepdims", "select_last_index"):
            if d[k] not in (0, 1) or isinstance(d[k], float):
                raise ShapeError(f"{self.name}: {k} must be a bool, got {d[k]!r}")
            d[k] = bool(d[k])
        t = in_types[0] if len(in_types) == 1 else None
        if isinstance(t, TensorType) and t.shape is not None:
            if len(t.shape) == 0:
                raise ShapeError(f"{self.name}: input {t} has rank 0")
            d["axis"] = norm_axis(self.name, int(d["axis"]), len(t.shape))
        return Attrs(d)

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        (x,) = tensor_types(self.name, in_types)
        shape = known_rank(self.name, x)
        check_kind(self.name, x, NUMERIC)
        ax = attrs["axis"]
        if not 0 <= ax < len(shape):
            raise ShapeError(f"{self.name}: axis {ax} out of range for {x}")
        if shape[ax] == 0:
            raise ShapeError(f"{self.name}: axis {ax} of {x} is empty")
        out = [1 if i == ax else d for i, d in enumerate(shape) if i != ax or attrs["keepdims"]]
        return (TensorType(tuple(out), DType.i64),)

    def np_arg(self, x: np.ndarray, axis: int) -> np.ndarray:
        return np.argmax(x, axis=axis)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        x, ax = np.asarray(xs[0]), attrs["axis"]
        if attrs["select_last_index"]:
            idx = x.shape[ax] - 1 - self.np_arg(np.flip(x, ax), ax)
        else:
            idx = self.np_arg(x, ax)
        if attrs["keepdims"]:
            idx = np.expand_dims(idx, ax)
        return (np.asarray(idx, dtype=np.int64),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        import torch

        x, ax = xs[0], attrs["axis"]
        f = torch.argmax if self.name == "argmax" else torch.argmin
        if attrs["select_last_index"]:
            idx = x.shape[ax] - 1 - f(torch.flip(x, (ax,)), dim=ax, keepdim=attrs["keepdims"])
        else:
            idx = f(x, dim=ax, keepdim=attrs["keepdims"])
        return (idx.to(torch.int64),)

    def symbolic(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        import z3

        x = np.moveaxis(np.asarray(xs[0], dtype=object), attrs["axis"], -1)
        out = np.empty(x.shape[:-1], dtype=object)
        last = attrs["select_last_index"]
        for idx in np.ndindex(out.shape):
            row = x[idx]
            best, arg = row[0], z3.IntVal(0)
            for k in range(1, len(row)):
                c = self.better(row[k], best)
                if last:
                    c = z3.Or(c, row[k] == best) if not isinstance(c, bool) else (
                        c or bool(row[k] == best))
                best, arg = zif(c, row[k], best), zif(c, z3.IntVal(k), arg)
            out[idx] = arg
        if attrs["keepdims"]:
            out = np.expand_dims(out, attrs["axis"])
        return (out,)

    def cost(self, in_types: tuple[ValueType, ...], out_types: tuple[ValueType, ...],
             attrs: Attrs) -> Cost:
        b = sum(nbytes(t) for t in in_types) + sum(nbytes(t) for t in out_types)
        return Cost(float(sum(numel(t) for t in in_types)), float(b), 1)

    def reduced_axes(self, rank: int, attrs: Attrs) -> tuple[int, ...]:
        return (attrs["axis"],)

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        a = onnx_attrs(ctx, {"axis": 0, "keepdims": 1, "select_last_index": 0})
        (x,) = onnx_inputs(ctx, 1, 1)
        return [build(ctx, self.name, [x], axis=int(a["axis"]), keepdims=bool(a["keepdims"]),
                      select_last_index=bool(a["select_last_index"]))]

    def to_onnx(self, ctx: Any, node: Any) -> None:
        extra = {}
        if node.attrs["select_last_index"]:
            if ctx.opset < 12:
                raise ExportError(f"{self.onnx[0]} select_last_index needs ONNX opset 12, "
                                  f"exporting at opset {ctx.opset}")
            extra["select_last_index"] = 1
        need_type(ctx, self.onnx[0], in_type(node).dtype)
        ctx.emit(self.onnx[0], [ctx.name(node.inputs[0])], ctx.out_names(node),
                 axis=node.attrs["axis"], keepdims=int(node.attrs["keepdims"]), **extra)

    def from_aten(self, ctx: Any) -> Any:
        x = aten_tensor(ctx, aten_arg(ctx, 0, "self", None))
        dim = aten_arg(ctx, 1, "dim", None)
        keep = bool(aten_arg(ctx, 2, "keepdim", False))
        if dim is not None:
            return build(ctx, self.name, [x], axis=int(dim), keepdims=keep)
        # dim=None: over the flattened input
        flat = build(ctx, "reshape", [x], shape=(x.type.numel,))
        idx = build(ctx, self.name, [flat], axis=0, keepdims=False)
        if keep:
            idx = build(ctx, "reshape", [idx], shape=(1,) * len(x.type.shape))
        return idx

    def examples(self, rng: np.random.Generator) -> list[Example]:
        x = rng.integers(-3, 4, (3, 4, 5)).astype(np.float32)  # ties on purpose
        xi = rng.integers(-3, 4, (4, 6)).astype(np.int32)
        return [Example([x], {"axis": -1}), Example([x], {"axis": 1, "keepdims": True}),
                Example([x], {"axis": 0, "select_last_index": True}),
                Example([xi], {"axis": 1, "select_last_index": True, "keepdims": True})]


@register
class ArgMin(ArgMax):
    name = "argmin"
    onnx = ("ArgMin",)
    aten = ("aten.argmin.default",)
    better = staticmethod(lambda v, best: v < best)

    def np_arg(self, x: np.ndarray, axis: int) -> np.ndarray:
        return np.argmin(x, axis=axis)


# ---- softmax ------------------------------------------------------------------------------------


@register
class Softmax(OpDef):
    """exp(x) / sum(exp(x)) along one axis (computed in float32 for float16 inputs)."""

    name = "softmax"
    min_inputs = max_inputs = 1
    cost_class = "reduction"
    triton_kernel = "reduction"
    onnx = ("Softmax",)
    aten = ("aten._softmax.default", "aten.softmax.int")
    flops_per_elem: ClassVar[float] = 5.0

    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        extra = sorted(set(attrs) - {"axis"})
        if extra:
            raise ShapeError(f"{self.name}: unknown attribute(s) {extra}")
        ax = attrs.get("axis", -1)
        if isinstance(ax, bool) or not isinstance(ax, int):
            raise ShapeError(f"{self.name}: axis must be an int, got {ax!r}")
        t = in_types[0] if len(in_types) == 1 else None
        if isinstance(t, TensorType) and t.shape is not None and len(t.shape) > 0:
            ax = norm_axis(self.name, ax, len(t.shape))
        return Attrs({"axis": ax})

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        (x,) = tensor_types(self.name, in_types)
        shape = known_rank(self.name, x)
        check_kind(self.name, x, FLOAT)
        if not 0 <= attrs["axis"] < len(shape):
            raise ShapeError(f"{self.name}: axis {attrs['axis']} out of range for {x}")
        return (x,)

    def np_softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        if x.size == 0:  # an empty axis (or another empty dim): nothing to normalize
            return x.copy()
        m = np.max(x, axis=axis, keepdims=True)
        e = np.exp(x - m)
        return e / np.sum(e, axis=axis, keepdims=True)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        x = np.asarray(xs[0])
        with np.errstate(all="ignore"):
            y = self.np_softmax(x.astype(stat_dtype(x.dtype)), attrs["axis"])
        return (np.asarray(y).astype(x.dtype),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        import torch

        x = xs[0]
        f = torch.softmax if self.name == "softmax" else torch.log_softmax
        return (f(x.to(torch_stat_dtype(x)), attrs["axis"]).to(x.dtype),)

    def symbolic(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        e, s = self._sums(xs, attrs)
        return (e / s,)

    def _sums(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, np.ndarray]:
        e = ufmap("exp", xs[0])  # exp(-inf) is 0: masked scores drop out
        return e, obj_reduce(e, (attrs["axis"],), True, lambda a, b: a + b)

    def symbolic_domain(self, xs: Sequence[np.ndarray], attrs: Attrs
                        ) -> list[tuple[Any, Any]]:
        """A row is defined when some score in it is not -inf (its exp sum is not 0)."""
        from .elementwise import real

        _, s = self._sums(xs, attrs)
        return [(real(t), real(t) != 0) for t in s.reshape(-1)]

    def fingerprint(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        e = cubic("exp")(xs[0])
        return (e * inverse(axis_sum(e, (attrs["axis"],))) % P,)

    def cost(self, in_types: tuple[ValueType, ...], out_types: tuple[ValueType, ...],
             attrs: Attrs) -> Cost:
        b = sum(nbytes(t) for t in in_types) + sum(nbytes(t) for t in out_types)
        return Cost(self.flops_per_elem * sum(numel(t) for t in in_types), float(b), 1)

    def reduced_axes(self, rank: int, attrs: Attrs) -> tuple[int, ...]:
        return (attrs["axis"],)

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        a = onnx_attrs(ctx, {"axis": 1 if ctx.opset < 13 else -1})
        (x,) = onnx_inputs(ctx, 1, 1)
        rank = len(x.type.shape)
        ax = int(a["axis"])
        if ctx.opset < 13:
            # opset < 13 flattens to 2-D [prod(d[:axis]), prod(d[axis:])]: a single-axis
            # softmax only when axis is the last one
            if rank == 0 or not -rank <= ax < rank or ax % rank != rank - 1:
                raise Unsupported(f"{ctx.op_type} (opset {ctx.opset}) axis={ax} on rank {rank} "
                                  f"normalizes over several axes")
        return [build(ctx, self.name, [x], axis=ax)]

    def to_onnx(self, ctx: Any, node: Any) -> None:
        x = ctx.name(node.inputs[0])
        rank = len(in_type(node).shape)
        ax = node.attrs["axis"]
        if ctx.opset >= 13 or ax == rank - 1:
            ctx.emit(self.onnx[0], [x], ctx.out_names(node), axis=ax)
            return
        # opset < 13 works on the trailing axes: move ``axis`` last and back
        perm = [i for i in range(rank) if i != ax] + [ax]
        inv = [perm.index(i) for i in range(rank)]
        t = emit1(ctx, "Transpose", [x], perm=perm)
        s = emit1(ctx, self.onnx[0], [t], axis=rank - 1)
        ctx.emit("Transpose", [s], ctx.out_names(node), perm=inv)

    def from_aten(self, ctx: Any) -> Any:
        x = aten_tensor(ctx, aten_arg(ctx, 0, "self", None))
        dim = aten_arg(ctx, 1, "dim", None)
        if ctx.target.startswith("aten._"):
            if aten_arg(ctx, 2, "half_to_float", False):
                x = cast_to(ctx, x, DType.f32)
        else:
            dt = aten_arg(ctx, 2, "dtype", None)
            if dt is not None:
                x = cast_to(ctx, x, DType.from_torch(dt))
        x = aten_float(ctx, x)
        return build(ctx, self.name, [x], axis=int(dim))

    def examples(self, rng: np.random.Generator) -> list[Example]:
        x = rng.standard_normal((2, 3, 4)).astype(np.float32) * 3
        return [Example([x], {"axis": -1}, rtol=1e-5, atol=1e-6),
                Example([x], {"axis": 1}, rtol=1e-5, atol=1e-6),
                Example([x[0].astype(np.float16)], {"axis": 0}, rtol=2e-3, atol=2e-3),
                Example([x.astype(np.float64)], {"axis": 0})]


@register
class LogSoftmax(Softmax):
    name = "log_softmax"
    onnx = ("LogSoftmax",)
    aten = ("aten._log_softmax.default", "aten.log_softmax.int")

    def np_softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        if x.size == 0:
            return x.copy()
        # shift by the max where it is finite (as ONNX Runtime and scipy's logsumexp do): a
        # finite entry beside an infinite one is -inf, not the NaN of inf - inf
        m = np.max(x, axis=axis, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)
        return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))

    def symbolic(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        e = ufmap("exp", xs[0])
        s = obj_reduce(e, (attrs["axis"],), True, lambda a, b: a + b)
        return (np.asarray(xs[0], dtype=object) - ufmap("log", s),)

    def fingerprint(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        s = axis_sum(cubic("exp")(xs[0]), (attrs["axis"],))
        return (modp(xs[0] - cubic("log")(s)),)


# ---- normalizations -----------------------------------------------------------------------------


class Norm(OpDef):
    """Base of layer_norm / rms_norm: attrs axis (first normalized axis), epsilon."""

    min_inputs = 1
    max_inputs = 3
    cost_class = "reduction"
    triton_kernel = "reduction"
    flops_per_elem: ClassVar[float] = 8.0

    def reduced_axes(self, rank: int, attrs: Attrs) -> tuple[int, ...]:
        return tuple(range(attrs["axis"], rank))

    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        extra = sorted(set(attrs) - {"axis", "epsilon"})
        if extra:
            raise ShapeError(f"{self.name}: unknown attribute(s) {extra}")
        ax = attrs.get("axis", -1)
        eps = attrs.get("epsilon", 1e-5)
        if isinstance(ax, bool) or not isinstance(ax, int):
            raise ShapeError(f"{self.name}: axis must be an int, got {ax!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)):
            raise ShapeError(f"{self.name}: epsilon must be a number, got {eps!r}")
        t = in_types[0] if in_types else None
        if isinstance(t, TensorType) and t.shape is not None and len(t.shape) > 0:
            ax = norm_axis(self.name, ax, len(t.shape))
        return Attrs({"axis": ax, "epsilon": float(eps)})

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        ts = tensor_types(self.name, in_types)
        x = ts[0]
        shape = known_rank(self.name, x)
        check_kind(self.name, x, FLOAT)
        if not 0 <= attrs["axis"] < len(shape):
            raise ShapeError(f"{self.name}: axis {attrs['axis']} out of range for {x}")
        for i, p in enumerate(ts[1:], 1):
            if p.dtype != x.dtype:
                raise ShapeError(f"{self.name}: input {i} {p} has a different dtype than {x}")
            known_rank(self.name, p)
            if broadcast_shapes(self.name, shape, p.shape) != tuple(shape):
                raise ShapeError(f"{self.name}: input {i} {p} does not broadcast to {x}")
        return (x,)

    def cost(self, in_types: tuple[ValueType, ...], out_types: tuple[ValueType, ...],
             attrs: Attrs) -> Cost:
        b = sum(nbytes(t) for t in in_types) + sum(nbytes(t) for t in out_types)
        return Cost(self.flops_per_elem * numel(in_types[0]), float(b), 1)

    def normalized_np(self, x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
        raise NotImplementedError

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        x = np.asarray(xs[0])
        axes = tuple(range(attrs["axis"], x.ndim))
        with np.errstate(all="ignore"):
            n = self.normalized_np(x.astype(stat_dtype(x.dtype)), axes, attrs["epsilon"])
            y = np.asarray(n).astype(x.dtype)
            if len(xs) > 1:
                y = y * xs[1]
            if len(xs) > 2:
                y = y + xs[2]
        return (np.asarray(y).astype(x.dtype, copy=False),)


@register
class LayerNorm(Norm):
    """ONNX LayerNormalization (one output): (x - mean) / sqrt(var + eps) * scale + bias over
    axes ``axis..rank-1``; scale and bias are optional (bias only with scale)."""

    name = "layer_norm"
    onnx = ("LayerNormalization",)
    aten = ("aten.native_layer_norm.default",)

    def normalized_np(self, x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
        mean = np.mean(x, axis=axes, keepdims=True)
        d = x - mean
        var = np.mean(d * d, axis=axes, keepdims=True)
        return d * (1 / np.sqrt(var + x.dtype.type(eps)))

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        import torch

        x = xs[0]
        ax, eps = attrs["axis"], attrs["epsilon"]
        nshape = tuple(x.shape[ax:])
        params = list(xs[1:])
        if (x.dtype in (torch.float32, torch.float64)
                and all(tuple(p.shape) == nshape for p in params)):
            w = params[0] if params else None
            b = params[1] if len(params) > 1 else None
            return (torch.nn.functional.layer_norm(x, nshape, w, b, eps),)
        xc = x.to(torch_stat_dtype(x))
        dims = tuple(range(ax, x.dim()))
        mean = xc.mean(dim=dims, keepdim=True)
        d = xc - mean
        var = (d * d).mean(dim=dims, keepdim=True)
        y = (d * torch.rsqrt(var + eps)).to(x.dtype)
        if params:
            y = y * params[0]
        if len(params) > 1:
            y = y + params[1]
        return (y,)

    def symbolic(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        from .elementwise import real

        x = np.asarray(xs[0], dtype=object)
        axes = tuple(range(attrs["axis"], x.ndim))
        n = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
        mean = obj_reduce(x, axes, True, lambda a, b: a + b) / real(n)
        d = x - mean
        var = obj_reduce(d * d, axes, True, lambda a, b: a + b) / real(n)
        inv = zmap(lambda v: real(1) / v, ufmap("sqrt", var + real(attrs["epsilon"])))
        y = d * inv
        for i, p in enumerate(xs[1:]):
            p = np.asarray(p, dtype=object)
            y = y * p if i == 0 else y + p
        return (y,)

    def fingerprint(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        x = xs[0]
        axes = tuple(range(attrs["axis"], x.ndim))
        inv_n = inverse_of_count(int(np.prod([x.shape[a] for a in axes])))
        mean = axis_sum(x, axes) * inv_n % P
        c = modp(x - mean)
        var = axis_sum(c * c % P, axes) * inv_n % P
        y = c * cubic("rsqrt")(var) % P
        if len(xs) > 1 and xs[1] is not None:
            y = y * xs[1] % P
        if len(xs) > 2 and xs[2] is not None:
            y = modp(y + xs[2])
        return (y,)

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        a = onnx_attrs(ctx, {"axis": -1, "epsilon": 1e-5, "stash_type": 1})
        if ctx.num_outputs != 1:
            raise Unsupported(f"{ctx.op_type}: Mean / InvStdDev outputs requested")
        ins = [v for v in onnx_inputs(ctx, 2, 3) if v is not None]
        check_stash(ctx, ins[0], a["stash_type"])
        same_dtypes(ctx, ins)
        return [build(ctx, "layer_norm", ins, axis=int(a["axis"]), epsilon=float(a["epsilon"]))]

    def to_onnx(self, ctx: Any, node: Any) -> None:
        t = in_type(node)
        ax, eps = node.attrs["axis"], node.attrs["epsilon"]
        nshape = tuple(t.shape[ax:])
        names = [ctx.name(v) for v in node.inputs]
        params_fit = all(in_type(node, i).shape == nshape for i in range(1, len(names)))
        if (ctx.opset >= 17 and t.dtype in (DType.f32, DType.f16, DType.bf16) and params_fit
                and (len(names) > 1 or all(isinstance(d, int) for d in nshape))):
            if len(names) == 1:
                names.append(const_of(ctx, np.ones(nshape), t.dtype))
            ctx.emit("LayerNormalization", names, ctx.out_names(node), axis=ax, epsilon=eps)
            return
        x, axes = stash_in(ctx, names[0], t.dtype), tuple(range(ax, len(t.shape)))
        sdt = stash_dtype(t.dtype)
        mean = emit_reduce(ctx, "ReduceMean", x, axes, True)[0]
        d = emit1(ctx, "Sub", [x, mean])
        var = emit_reduce(ctx, "ReduceMean", emit1(ctx, "Mul", [d, d]), axes, True)[0]
        std = emit1(ctx, "Sqrt", [emit1(ctx, "Add", [var, const_of(ctx, eps, sdt)])])
        inv = emit1(ctx, "Reciprocal", [std])
        ops: list[tuple[str, list[str], dict]] = [("Mul", [inv], {})]
        if sdt != t.dtype:
            ops.append(("Cast", [], {"to": t.dtype.to_onnx()}))
        if len(names) > 1:
            ops.append(("Mul", [names[1]], {}))
        if len(names) > 2:
            ops.append(("Add", [names[2]], {}))
        emit_seq(ctx, node, d, ops)

    def from_aten(self, ctx: Any) -> Any:
        if ctx.used_outputs - {0}:
            raise Unsupported(f"{ctx.target}: mean / rstd outputs are used")
        x = aten_tensor(ctx, aten_arg(ctx, 0, "input", None))
        nshape = list(aten_arg(ctx, 1, "normalized_shape", None))
        w, b = aten_arg(ctx, 2, "weight", None), aten_arg(ctx, 3, "bias", None)
        eps = float(aten_arg(ctx, 4, "eps", 1e-5))
        rank = len(x.type.shape)
        if not nshape or len(nshape) > rank or list(x.type.shape[rank - len(nshape):]) != nshape:
            raise Unsupported(f"{ctx.target}: normalized_shape {nshape} vs {x.type}")
        ins = [x]
        if w is not None or b is not None:
            ins.append(aten_tensor(ctx, w, "weight") if w is not None
                       else ones_or_zeros(ctx, nshape, x, 1.0, "weight"))
        if b is not None:
            ins.append(aten_tensor(ctx, b, "bias"))
        same_dtypes(ctx, ins)
        y = build(ctx, "layer_norm", ins, axis=rank - len(nshape), epsilon=eps)
        return (y, None, None)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        x = rng.standard_normal((2, 3, 4)).astype(np.float32)
        s = rng.standard_normal((4,)).astype(np.float32)
        b = rng.standard_normal((4,)).astype(np.float32)
        s2 = rng.standard_normal((3, 4)).astype(np.float32)
        tol = {"rtol": 1e-4, "atol": 1e-5}
        return [Example([x, s, b], {"axis": -1}, **tol),
                Example([x, s2], {"axis": 1, "epsilon": 1e-3}, **tol),
                Example([x], {"axis": 2}, **tol),
                Example([x, s, b], {"axis": 1}, **tol),
                Example([x.astype(np.float16), s.astype(np.float16), b.astype(np.float16)],
                        {"axis": -1}, rtol=3e-3, atol=3e-3)]


def check_stash(ctx: Any, x: Value, stash_type: int) -> None:
    """ONNX norms compute statistics in ``stash_type``; the IR computes them in float32 for
    float16 / bfloat16 / float32 inputs, so only that case maps."""
    dt = x.type.dtype
    if not (stash_type == 1 and dt in (DType.f32, DType.f16, DType.bf16)):
        raise Unsupported(f"{ctx.op_type}: stash_type {stash_type} with input {x.type}")


def stash_dtype(dt: DType) -> DType:
    return DType.f32 if dt in (DType.f16, DType.bf16) else dt


def stash_in(ctx: Any, x: str, dt: DType) -> str:
    sdt = stash_dtype(dt)
    return x if sdt == dt else emit1(ctx, "Cast", [x], to=sdt.to_onnx())


@register
class RmsNorm(Norm):
    """ONNX RMSNormalization: x / sqrt(mean(x^2) + eps) * scale over axes ``axis..rank-1``."""

    name = "rms_norm"
    min_inputs = max_inputs = 2
    onnx_min_opset = 23
    onnx = ("RMSNormalization",)
    flops_per_elem = 5.0

    def normalized_np(self, x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
        ms = np.mean(x * x, axis=axes, keepdims=True)
        return x / np.sqrt(ms + x.dtype.type(eps))

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        import torch

        x, s = xs
        ax, eps = attrs["axis"], attrs["epsilon"]
        xc = x.to(torch_stat_dtype(x))
        dims = tuple(range(ax, x.dim()))
        ms = (xc * xc).mean(dim=dims, keepdim=True)
        return ((xc / torch.sqrt(ms + eps)).to(x.dtype) * s,)

    def symbolic(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        return self.symbolic_typed(xs, attrs, ())

    def symbolic_typed(self, xs: Sequence[np.ndarray], attrs: Attrs,
                       in_types: Sequence[ValueType]) -> tuple[np.ndarray, ...]:
        """x / sqrt(mean(x^2) + eps) * scale; for f16 / bf16 inputs the normalized value is
        rounded to the input type before the scale (statistics in f32, as ``numpy``)."""
        from .elementwise import real

        x = np.asarray(xs[0], dtype=object)
        axes = tuple(range(attrs["axis"], x.ndim))
        n = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
        ms = obj_reduce(x * x, axes, True, lambda a, b: a + b) / real(n)
        rms = ufmap("sqrt", ms + real(attrs["epsilon"]))
        normed = x * zmap(lambda r: real(1) / r, rms)  # the reciprocal form, as div's

        t = in_types[0] if in_types else None
        if isinstance(t, TensorType) and t.dtype in (DType.f16, DType.bf16):
            normed = ufmap(f"round_{t.dtype.value}", normed)
        return (normed * np.asarray(xs[1], dtype=object),)

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        a = onnx_attrs(ctx, {"axis": -1, "epsilon": 1e-5, "stash_type": 1})
        if ctx.num_outputs != 1:
            raise Unsupported(f"{ctx.op_type}: {ctx.num_outputs} outputs")
        x, s = onnx_inputs(ctx, 2, 2)
        check_stash(ctx, x, a["stash_type"])
        same_dtypes(ctx, [x, s])
        return [build(ctx, "rms_norm", [x, s], axis=int(a["axis"]), epsilon=float(a["epsilon"]))]

    def to_onnx(self, ctx: Any, node: Any) -> None:
        t = in_type(node)
        ax, eps = node.attrs["axis"], node.attrs["epsilon"]
        xn, sn = (ctx.name(v) for v in node.inputs)
        if ctx.opset >= 23 and t.dtype in (DType.f32, DType.f16, DType.bf16):
            ctx.emit("RMSNormalization", [xn, sn], ctx.out_names(node), axis=ax, epsilon=eps)
            return
        x, axes = stash_in(ctx, xn, t.dtype), tuple(range(ax, len(t.shape)))
        sdt = stash_dtype(t.dtype)
        ms = emit_reduce(ctx, "ReduceMean", emit1(ctx, "Mul", [x, x]), axes, True)[0]
        rms = emit1(ctx, "Sqrt", [emit1(ctx, "Add", [ms, const_of(ctx, eps, sdt)])])
        ops: list[tuple[str, list[str], dict]] = [("Div", [rms], {})]
        if sdt != t.dtype:
            ops.append(("Cast", [], {"to": t.dtype.to_onnx()}))
        ops.append(("Mul", [sn], {}))
        emit_seq(ctx, node, x, ops)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        x = rng.standard_normal((2, 3, 4)).astype(np.float32)
        s = rng.standard_normal((4,)).astype(np.float32)
        tol = {"rtol": 1e-4, "atol": 1e-5}
        return [Example([x, s], {"axis": -1}, **tol),
                Example([x, rng.standard_normal((3, 4)).astype(np.float32)],
                        {"axis": 1, "epsilon": 1e-6}, **tol),
                Example([x.astype(np.float16), s.astype(np.float16)], {"axis": 2},
                        rtol=3e-3, atol=3e-3)]


@register
class BatchNorm(OpDef):
    """Inference batch norm over channel axis 1: (x - mean) / sqrt(var + eps) * scale + bias;
    scale, bias, mean, var have shape [C]."""

    name = "batch_norm"
    min_inputs = max_inputs = 5
    onnx = ("BatchNormalization",)
    aten = ("aten._native_batch_norm_legit_no_training.default",)

    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        extra = sorted(set(attrs) - {"epsilon"})
        if extra:
            raise ShapeError(f"{self.name}: unknown attribute(s) {extra}")
        eps = attrs.get("epsilon", 1e-5)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)):
            raise ShapeError(f"{self.name}: epsilon must be a number, got {eps!r}")
        return Attrs({"epsilon": float(eps)})

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        ts = tensor_types(self.name, in_types)
        x = ts[0]
        shape = known_rank(self.name, x)
        check_kind(self.name, x, FLOAT)
        if len(shape) < 2:
            raise ShapeError(f"{self.name}: input {x} needs rank >= 2 (N, C, ...)")
        for i, p in enumerate(ts[1:], 1):
            if p.dtype != x.dtype:
                raise ShapeError(f"{self.name}: input {i} {p} has a different dtype than {x}")
            if p.shape != (shape[1],):
                raise ShapeError(f"{self.name}: input {i} {p} must have shape [{shape[1]}]")
        return (x,)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        x = np.asarray(xs[0])
        shp = (-1,) + (1,) * (x.ndim - 2)
        s, b, m, v = (np.asarray(p).reshape(shp) for p in xs[1:])
        with np.errstate(all="ignore"):
            y = (x - m) / np.sqrt(v + x.dtype.type(attrs["epsilon"])) * s + b
        return (np.asarray(y).astype(x.dtype, copy=False),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        import torch

        x, s, b, m, v = xs
        return (torch.nn.functional.batch_norm(x, m, v, s, b, False, 0.0, attrs["epsilon"]),)

    def symbolic(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        from .elementwise import real

        x = np.asarray(xs[0], dtype=object)
        shp = (-1,) + (1,) * (x.ndim - 2)
        s, b, m, v = (np.asarray(p, dtype=object).reshape(shp) for p in xs[1:])
        return ((x - m) / ufmap("sqrt", v + real(attrs["epsilon"])) * s + b,)

    def cost(self, in_types: tuple[ValueType, ...], out_types: tuple[ValueType, ...],
             attrs: Attrs) -> Cost:
        b = sum(nbytes(t) for t in in_types) + sum(nbytes(t) for t in out_types)
        return Cost(4.0 * numel(in_types[0]), float(b), 1)

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        if ctx.opset < 7:
            raise Unsupported(f"{ctx.op_type} (opset {ctx.opset}): is_test/spatial legacy form")
        a = onnx_attrs(ctx, {"epsilon": 1e-5, "momentum": 0.9, "spatial": 1, "training_mode": 0})
        if a["spatial"] != 1 or a["training_mode"] != 0:
            raise Unsupported(f"{ctx.op_type}: spatial={a['spatial']}, "
                              f"training_mode={a['training_mode']}")
        if ctx.num_outputs != 1:
            raise Unsupported(f"{ctx.op_type}: {ctx.num_outputs} outputs (training statistics)")
        ins = onnx_inputs(ctx, 5, 5)
        same_dtypes(ctx, ins)
        return [build(ctx, "batch_norm", ins, epsilon=float(a["epsilon"]))]

    def to_onnx(self, ctx: Any, node: Any) -> None:
        if ctx.opset < 7:
            raise ExportError(f"BatchNormalization needs ONNX opset 7, exporting at opset "
                              f"{ctx.opset}")
        ctx.emit("BatchNormalization", [ctx.name(v) for v in node.inputs], ctx.out_names(node),
                 epsilon=node.attrs["epsilon"])

    def from_aten(self, ctx: Any) -> Any:
        if ctx.used_outputs - {0}:
            raise Unsupported(f"{ctx.target}: saved mean / invstd outputs are used")
        x = aten_tensor(ctx, aten_arg(ctx, 0, "input", None))
        w, b = aten_arg(ctx, 1, "weight", None), aten_arg(ctx, 2, "bias", None)
        m = aten_tensor(ctx, aten_arg(ctx, 3, "running_mean", None), "running_mean")
        v = aten_tensor(ctx, aten_arg(ctx, 4, "running_var", None), "running_var")
        eps = float(aten_arg(ctx, 6, "eps", 1e-5))
        if len(x.type.shape) < 2:
            raise Unsupported(f"{ctx.target}: input {x.type}")
        c = [x.type.shape[1]]
        w = aten_tensor(ctx, w, "weight") if w is not None else ones_or_zeros(ctx, c, x, 1.0,
                                                                               "weight")
        b = aten_tensor(ctx, b, "bias") if b is not None else ones_or_zeros(ctx, c, x, 0.0,
                                                                             "bias")
        ins = [x, w, b, m, v]
        same_dtypes(ctx, ins)
        return (build(ctx, "batch_norm", ins, epsilon=eps), None, None)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
        p = [rng.standard_normal((3,)).astype(np.float32) for _ in range(3)]
        var = (np.abs(rng.standard_normal((3,))) + 0.5).astype(np.float32)
        tol = {"rtol": 1e-5, "atol": 1e-5}
        return [Example([x, p[0], p[1], p[2], var], **tol),
                Example([x[:, :, 0, 0].copy(), p[0], p[1], p[2], var], {"epsilon": 1e-3}, **tol)]
