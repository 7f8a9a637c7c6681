"""Convolution and pooling over N-d NC... layouts: conv, max_pool, avg_pool.

Pads are (begin_0.., end_0..) over the spatial dims. The numpy reference is one loop over kernel
taps (a matmul per tap for conv), so it also runs on object arrays of z3 terms (exact); max_pool's
z3 form takes If-maxima over the taps inside the input."""
from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Iterator, Sequence

import numpy as np

from ..errors import ExportError, ShapeError
from ..ir.node import Attrs
from ..ir.types import Dim, DType, TensorType, ValueType
from . import residues
from .registry import (SYM_DEFAULT, Cost, Example, OpDef, Unsupported, nbytes, register,
                       same_dtype, tensor_types)
from .shape import aten_arg, build, check_attrs, onnx_only_attrs, onnx_tensor


# ---- shared geometry --------------------------------------------------------------------------

def out_size(d: Dim, k: int, s: int, pb: int, pe: int, dil: int, ceil_mode: bool,
             what: str) -> Dim:
    """Output extent of a sliding window along one dim (ceil_mode: the last window must start
    inside the input or its begin padding)."""
    eff = dil * (k - 1) + 1
    if not isinstance(d, int):
        if eff == 1 and s == 1 and pb == 0 and pe == 0:
            return d
        raise ShapeError(f"{what}: window over symbolic dim {d!r} has an unknown extent")
    num = d + pb + pe - eff
    if num < 0:
        raise ShapeError(f"{what}: window {eff} larger than padded dim {d + pb + pe}")
    if ceil_mode:
        o = -(-num // s) + 1
        if (o - 1) * s >= d + pb:
            o -= 1
        return o
    return num // s + 1


def _spatial_attrs(name: str, attrs: Attrs, nd: int, kernel: tuple[int, ...] | None = None
                   ) -> dict[str, Any]:
    """Defaults filled in (strides 1, pads 0, dilations 1) and lengths checked."""
    def ints(key: str, default: tuple[int, ...], n: int) -> tuple[int, ...]:
        v = attrs.get(key)
        t = default if v is None else tuple(int(x) for x in (v if isinstance(v, tuple) else (v,)))
        if len(t) != n:
            raise ShapeError(f"{name}: attr {key}={list(t)} needs {n} values")
        return t

    out: dict[str, Any] = {
        "strides": ints("strides", (1,) * nd, nd),
        "pads": ints("pads", (0,) * (2 * nd), 2 * nd),
        "dilations": ints("dilations", (1,) * nd, nd),
    }
    if any(s < 1 for s in out["strides"]) or any(d < 1 for d in out["dilations"]):
        raise ShapeError(f"{name}: strides and dilations must be >= 1")
    if any(p < 0 for p in out["pads"]):
        raise ShapeError(f"{name}: negative pads {list(out['pads'])}")
    if kernel is not None and (len(kernel) != nd or any(k < 1 for k in kernel)):
        raise ShapeError(f"{name}: kernel {list(kernel)} for {nd} spatial dims")
    return out


def _taps(kernel: Sequence[int], strides: Sequence[int], dils: Sequence[int],
          outs: Sequence[int]) -> Iterator[tuple[tuple[int, ...], tuple[slice, ...]]]:
    """Each kernel tap with the (padded-input) slices it reads for every output position."""
    for kpos in np.ndindex(*kernel):
        yield kpos, tuple(slice(kp * d, kp * d + s * (o - 1) + 1, s)
                          for kp, d, s, o in zip(kpos, dils, strides, outs))


def _padded(x: Any, pads_b: Sequence[int], pads_e: Sequence[int],
            full: Callable[[tuple[int, ...]], Any]) -> Any:
    """x (N, C, *sp) placed in a buffer from ``full`` with the given spatial padding."""
    sp = tuple(int(d) for d in x.shape[2:])
    shape = tuple(int(d) for d in x.shape[:2]) + tuple(
        d + b + e for d, b, e in zip(sp, pads_b, pads_e))
    buf = full(shape)
    idx = (slice(None), slice(None)) + tuple(slice(b, b + d) for b, d in zip(pads_b, sp))
    buf[idx] = x
    return buf


def _permute(a: Any, perm: Sequence[int]) -> Any:
    return a.permute(*perm) if hasattr(a, "permute") else np.transpose(a, perm)


def _window_plan(x_shape: Sequence[int], kernel: Sequence[int], a: Attrs, ceil_mode: bool
                 ) -> tuple[list[int], list[int], list[int]]:
    """(outs, begin pads, end pads incl. ceil-mode overhang) for concrete shapes."""
    nd = len(kernel)
    sp = [int(d) for d in x_shape[2:]]
    pads = a["pads"]
    outs = [int(out_size(sp[i], kernel[i], a["strides"][i], pads[i], pads[nd + i],
                         a["dilations"][i], ceil_mode, "window")) for i in range(nd)]
    pb = list(pads[:nd])
    pe = [max(pads[nd + i], (outs[i] - 1) * a["strides"][i]
              + a["dilations"][i] * (kernel[i] - 1) + 1 - sp[i] - pb[i]) for i in range(nd)]
    return outs, pb, pe


def _ints_of(v: Any, nd: int) -> tuple[int, ...]:
    if isinstance(v, (int, np.integer)):
        return (int(v),) * nd
    t = tuple(int(x) for x in v)
    return t * nd if len(t) == 1 and nd > 1 else t


def _auto_pad(ctx: Any, sp: Sequence[Dim], kernel: Sequence[int], strides: Sequence[int],
              dils: Sequence[int], pads: list[int] | None) -> list[int]:
    """Explicit pads for an ONNX conv/pool node (auto_pad NOTSET / VALID / SAME_*)."""
    nd = len(kernel)
    ap = ctx.attrs.get("auto_pad", "NOTSET")
    ap = ap.decode() if isinstance(ap, bytes) else str(ap)
    if ap in ("NOTSET", ""):
        return list(pads) if pads is not None else [0] * (2 * nd)
    if ap == "VALID":
        return [0] * (2 * nd)
    if ap not in ("SAME_UPPER", "SAME_LOWER"):
        raise Unsupported(f"{ctx.op_type} auto_pad={ap!r}")
    out = [0] * (2 * nd)
    for i, d in enumerate(sp):
        if not isinstance(d, int):
            raise Unsupported(f"{ctx.op_type} auto_pad={ap} over symbolic dim {d!r}")
        o = -(-d // strides[i])
        total = max((o - 1) * strides[i] + dils[i] * (kernel[i] - 1) + 1 - d, 0)
        small, big = total // 2, total - total // 2
        out[i], out[nd + i] = (small, big) if ap == "SAME_UPPER" else (big, small)
    return out


def _onnx_geometry(ctx: Any, x: Any, kernel: Sequence[int]) -> dict[str, Any]:
    nd = len(kernel)
    strides = [int(s) for s in ctx.attrs.get("strides", [1] * nd)]
    dils = [int(d) for d in ctx.attrs.get("dilations", [1] * nd)]
    pads = ctx.attrs.get("pads")
    pads = None if pads is None else [int(p) for p in pads]
    if len(strides) != nd or len(dils) != nd or (pads is not None and len(pads) != 2 * nd):
        raise Unsupported(f"{ctx.op_type}: attribute lengths do not fit kernel {list(kernel)}")
    pads = _auto_pad(ctx, x.type.shape[2:], kernel, strides, dils, pads)
    return {"strides": tuple(strides), "pads": tuple(pads), "dilations": tuple(dils)}


def _geometry_to_onnx(node: Any, kernel: Sequence[int], ctx: Any, with_dil: bool = True
                      ) -> dict[str, Any]:
    a = node.attrs
    out: dict[str, Any] = {"kernel_shape": list(kernel), "strides": list(a["strides"]),
                           "pads": list(a["pads"])}
    if with_dil:
        out["dilations"] = list(a["dilations"])
    elif any(d != 1 for d in a["dilations"]):
        raise ExportError(f"{node.op} with dilations {a['dilations']} needs a newer opset "
                          f"than {ctx.opset}", where=str(node.origin or node.op))
    return out


def _check_x(name: str, in_types: Sequence[ValueType]) -> tuple[list[TensorType], tuple[Dim, ...]]:
    ts = tensor_types(name, in_types)
    x = ts[0]
    if x.shape is None or len(x.shape) < 3:
        raise ShapeError(f"{name}({', '.join(map(str, ts))}): input must be N, C, spatial...")
    return ts, x.shape


# ---- conv -------------------------------------------------------------------------------------

def conv_loop(x: Any, w: Any, a: Attrs, full: Callable[[tuple[int, ...]], Any]) -> Any:
    """Direct convolution: one batched matmul per kernel tap (numpy, object or torch arrays)."""
    nd = w.ndim - 2
    n, c = int(x.shape[0]), int(x.shape[1])
    m, cg = int(w.shape[0]), int(w.shape[1])
    kernel = [int(k) for k in w.shape[2:]]
    g = int(a["group"])
    outs, pb, pe = _window_plan(x.shape, kernel, a, False)
    xp = _padded(x, pb, pe, full)
    xp = xp.reshape((n, g, cg) + tuple(xp.shape[2:]))
    wg = w.reshape((g, m // g, cg) + tuple(kernel))
    p = math.prod(outs)
    acc = None
    for kpos, sl in _taps(kernel, a["strides"], a["dilations"], outs):
        xs = xp[(slice(None),) * 3 + sl]  # [n, g, cg, *outs]
        xs = _permute(xs, (0, 1) + tuple(range(3, 3 + nd)) + (2,)).reshape((n, g, p, cg))
        wk = _permute(wg[(slice(None),) * 3 + kpos], (0, 2, 1))  # [g, cg, m/g]
        term = xs @ wk  # [n, g, p, m/g]
        acc = term if acc is None else acc + term
    assert acc is not None
    return _permute(acc, (0, 1, 3, 2)).reshape((n, m) + tuple(outs))


@register
class Conv(OpDef):
    """ONNX Conv: x [N, C, *sp], w [M, C/group, *k], optional bias b [M]."""

    name = "conv"
    cost_class = "heavy"
    matrix_unit = True
    exact_int = True
    attr_names = ('strides', 'pads', 'dilations', 'group')
    min_inputs, max_inputs = 2, 3
    onnx = ("Conv",)
    aten = ("aten.convolution.default", "aten.conv1d.default", "aten.conv2d.default",
            "aten.conv3d.default", "aten.conv1d.padding", "aten.conv2d.padding",
            "aten.conv3d.padding")

    def mixed_axes(self, in_types: tuple[ValueType, ...], attrs: Attrs
                   ) -> tuple[tuple[int, int], ...]:
        """The spatial axes of x (the window slides along them)."""
        t = in_types[0]
        rank = len(t.shape) if isinstance(t, TensorType) and t.shape is not None else 2
        return tuple((0, a) for a in range(2, rank))

    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        try:
            check_attrs(self.name, attrs, self.attr_names)
            _, shp = _check_x(self.name, in_types)
            a = _spatial_attrs(self.name, attrs, len(shp) - 2)
            return Attrs({**a, "group": int(attrs.get("group", 1))})
        except (ShapeError, TypeError, ValueError):
            return attrs

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        check_attrs(self.name, attrs, self.attr_names)
        ts, shp = _check_x(self.name, in_types)
        desc = f"conv({', '.join(map(str, ts))})"
        dt = same_dtype(desc, ts)
        if not dt.is_float:
            raise ShapeError(f"{desc}: dtype {dt.value} not supported (ONNX Conv is float only)")
        w = ts[1]
        nd = len(shp) - 2
        if w.shape is None or len(w.shape) != nd + 2:
            raise ShapeError(f"{desc}: weight rank must be {nd + 2}")
        kernel = w.shape[2:]
        if not all(isinstance(k, int) for k in kernel):
            raise ShapeError(f"{desc}: kernel dims must be static")
        a = _spatial_attrs(desc, attrs, nd, kernel)  # type: ignore[arg-type]
        g = int(attrs.get("group", 1))
        m, cg = w.shape[0], w.shape[1]
        if g < 1:
            raise ShapeError(f"{desc}: group {g}")
        if not isinstance(m, int) or not isinstance(cg, int):
            raise ShapeError(f"{desc}: weight dims must be static")
        if m % g:
            raise ShapeError(f"{desc}: {m} output channels not divisible by group {g}")
        if shp[1] != cg * g:
            raise ShapeError(f"{desc}: input has {shp[1]} channels, weight expects {cg * g}")
        if len(ts) == 3:
            b = ts[2]
            if b.shape != (m,):
                raise ShapeError(f"{desc}: bias must be [{m}]")
        outs = [out_size(shp[2 + i], kernel[i], a["strides"][i], a["pads"][i],  # type: ignore
                         a["pads"][nd + i], a["dilations"][i], False, desc) for i in range(nd)]
        return (TensorType((shp[0], m, *outs), dt),)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        x, w = np.asarray(xs[0]), np.asarray(xs[1])
        obj = x.dtype == object or w.dtype == object
        dt = object if obj else (np.float32 if x.dtype == np.float16 else x.dtype)
        out = conv_loop(x.astype(dt), w.astype(dt), attrs, lambda s: np.zeros(s, dtype=dt))
        if len(xs) == 3:
            b = np.asarray(xs[2]).astype(dt)
            out = out + b.reshape((1, -1) + (1,) * (out.ndim - 2))
        return (out if obj else out.astype(x.dtype),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        import torch
        import torch.nn.functional as F

        x, w = xs[0], xs[1]
        b = xs[2] if len(xs) == 3 else None
        nd = x.dim() - 2
        pads = attrs["pads"]
        if nd > 3:
            out = conv_loop(x, w, attrs, lambda s: x.new_zeros(s))
            if b is not None:
                out = out + b.reshape((1, -1) + (1,) * nd)
            return (out,)
        if tuple(pads[:nd]) == tuple(pads[nd:]):
            padding: Any = tuple(pads[:nd])
        else:
            tp: list[int] = []
            for i in reversed(range(nd)):
                tp += [pads[i], pads[nd + i]]
            x = F.pad(x, tp)
            padding = 0
        fn = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
        return (fn(x, w, b, stride=attrs["strides"], padding=padding,
                   dilation=attrs["dilations"], groups=attrs["group"]),)

    def cost(self, in_types, out_types, attrs) -> Cost:  # type: ignore[override]
        w = in_types[1]
        out = out_types[0]
        assert isinstance(w, TensorType) and isinstance(out, TensorType) and w.shape
        per_out = 1
        for d in w.shape[1:]:
            per_out *= d if isinstance(d, int) else SYM_DEFAULT
        n_out = out.static_numel(SYM_DEFAULT)
        b = sum(nbytes(t) for t in in_types) + nbytes(out)
        return Cost(2.0 * n_out * per_out + (n_out if len(in_types) == 3 else 0), float(b), 1)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        def r(*s: int) -> np.ndarray:
            return rng.standard_normal(s).astype(np.float32)

        tol = dict(rtol=1e-4, atol=1e-5)
        return [
            Example([r(2, 3, 7, 6), r(4, 3, 3, 2), r(4)],
                    {"strides": (2, 1), "pads": (1, 0, 2, 1), "dilations": (1, 2), "group": 1},
                    **tol),
            Example([r(1, 4, 9), r(6, 2, 3)],
                    {"strides": (2,), "pads": (1, 1), "dilations": (1,), "group": 2}, **tol),
            Example([r(1, 2, 3, 4, 3), r(2, 2, 2, 1, 2)],
                    {"strides": (1, 1, 1), "pads": (0, 0, 0, 0, 0, 0),
                     "dilations": (1, 1, 1), "group": 1}, **tol),
        ]

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        onnx_only_attrs(ctx, {"auto_pad", "dilations", "group", "kernel_shape", "pads",
                              "strides"})
        x, w = onnx_tensor(ctx, 0), onnx_tensor(ctx, 1)
        b = ctx.inputs[2] if len(ctx.inputs) > 2 else None
        kernel = w.type.shape[2:]
        if not all(isinstance(k, int) for k in kernel):
            raise Unsupported(f"Conv with weight {w.type}")
        ks = ctx.attrs.get("kernel_shape")
        if ks is not None and tuple(int(k) for k in ks) != tuple(kernel):
            raise Unsupported(f"Conv kernel_shape {list(ks)} differs from weight {w.type}")
        geo = _onnx_geometry(ctx, x, kernel)
        ins = [x, w] + ([b] if b is not None else [])
        return [build(ctx, "conv", ins, group=int(ctx.attrs.get("group", 1)), **geo)]

    def to_onnx(self, ctx: Any, node: Any) -> None:
        w = node.inputs[1].type
        ctx.emit("Conv", [ctx.name(v) for v in node.inputs], ctx.out_names(node),
                 group=int(node.attrs["group"]), **_geometry_to_onnx(node, w.shape[2:], ctx))

    def from_aten(self, ctx: Any) -> Any:
        x, w = ctx.args[0], ctx.args[1]
        b = aten_arg(ctx, 2, "bias", None)
        nd = len(x.type.shape) - 2
        if nd < 1:
            raise Unsupported(f"{ctx.target} on {x.type} (unbatched)")
        if ctx.target == "aten.convolution.default":
            stride, padding, dilation = ctx.args[3], ctx.args[4], ctx.args[5]
            transposed, groups = ctx.args[6], ctx.args[8]
            if transposed:
                raise Unsupported("transposed convolution")
        else:
            stride = aten_arg(ctx, 3, "stride", 1)
            padding = aten_arg(ctx, 4, "padding", 0)
            dilation = aten_arg(ctx, 5, "dilation", 1)
            groups = aten_arg(ctx, 6, "groups", 1)
        strides, dils = _ints_of(stride, nd), _ints_of(dilation, nd)
        kernel = w.type.shape[2:]
        if isinstance(padding, str):
            if padding == "valid":
                pads = (0,) * (2 * nd)
            elif padding == "same" and all(s == 1 for s in strides):
                tot = [d * (int(k) - 1) for d, k in zip(dils, kernel)]
                pads = tuple(t // 2 for t in tot) + tuple(t - t // 2 for t in tot)
            else:
                raise Unsupported(f"{ctx.target} padding={padding!r}")
        else:
            p = _ints_of(padding, nd)
            pads = p + p
        ins = [x, w] + ([b] if b is not None else [])
        return build(ctx, "conv", ins, strides=strides, pads=pads, dilations=dils,
                     group=int(groups))


# ---- pools ------------------------------------------------------------------------------------

class Pool(OpDef):
    """Base of max_pool / avg_pool: attrs kernel, strides, pads, dilations, ceil_mode."""

    min_inputs = max_inputs = 1
    cost_class = "heavy"
    attr_names: ClassVar[tuple[str, ...]] = ("kernel", "strides", "pads", "dilations",
                                             "ceil_mode")

    mixed_axes = Conv.mixed_axes  # the window slides along the spatial axes

    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        try:
            check_attrs(self.name, attrs, self.attr_names)
            _, shp = _check_x(self.name, in_types)
            kernel = tuple(int(k) for k in attrs["kernel"])
            a = _spatial_attrs(self.name, attrs, len(shp) - 2, kernel)
            return Attrs({**a, **self._extra(attrs), "kernel": kernel,
                          "ceil_mode": bool(attrs.get("ceil_mode", False))})
        except (ShapeError, TypeError, ValueError, KeyError):
            return attrs

    def _extra(self, attrs: Attrs) -> dict[str, Any]:
        return {}

    def _dtype_ok(self, t: TensorType) -> bool:
        return t.dtype.is_float

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        check_attrs(self.name, attrs, self.attr_names)
        ts, shp = _check_x(self.name, in_types)
        x = ts[0]
        desc = f"{self.name}({x})"
        if not self._dtype_ok(x):
            raise ShapeError(f"{desc}: dtype {x.dtype.value} not supported")
        nd = len(shp) - 2
        kernel = tuple(int(k) for k in attrs["kernel"])
        a = _spatial_attrs(desc, attrs, nd, kernel)
        outs = [out_size(shp[2 + i], kernel[i], a["strides"][i], a["pads"][i],
                         a["pads"][nd + i], a["dilations"][i], bool(attrs["ceil_mode"]), desc)
                for i in range(nd)]
        for i in range(nd):
            eff = a["dilations"][i] * (kernel[i] - 1) + 1
            if max(a["pads"][i], a["pads"][nd + i]) >= eff:
                raise ShapeError(f"{desc}: pads {list(a['pads'])} must be smaller than the "
                                 f"window")
        return (x.with_shape(tuple(shp[:2]) + tuple(outs)),)

    def cost(self, in_types, out_types, attrs) -> Cost:  # type: ignore[override]
        out = out_types[0]
        assert isinstance(out, TensorType)
        taps = math.prod(attrs["kernel"])
        b = nbytes(in_types[0]) + nbytes(out)
        return Cost(float(out.static_numel(SYM_DEFAULT) * taps), float(b), 1)

    def _fast_torch_ok(self, x: Any, attrs: Attrs) -> bool:
        nd = x.dim() - 2
        pads, k = attrs["pads"], attrs["kernel"]
        return (nd <= 3 and x.is_floating_point() and tuple(pads[:nd]) == tuple(pads[nd:])
                and all(p <= kk // 2 for p, kk in zip(pads[:nd], k)))


def _zmax(a: Any, b: Any) -> Any:
    import z3

    if a is None:
        return b
    if b is None:
        return a
    return z3.If(a >= b, a, b)


@register
class MaxPool(Pool):
    """ONNX MaxPool (single output, storage_order 0)."""

    name = "max_pool"
    ordered = True
    onnx = ("MaxPool", "GlobalMaxPool")
    aten = ("aten.max_pool2d_with_indices.default", "aten.max_pool3d_with_indices.default",
            "aten.max_pool1d.default", "aten.max_pool2d.default", "aten.max_pool3d.default")

    def _dtype_ok(self, t: TensorType) -> bool:
        return t.dtype.is_float or t.dtype in (DType.i8, DType.u8)  # as ONNX MaxPool

    def _run(self, x: Any, attrs: Attrs, full: Callable[[tuple[int, ...]], Any],
             combine: Callable[[Any, Any], Any]) -> Any:
        kernel = attrs["kernel"]
        outs, pb, pe = _window_plan(x.shape, kernel, attrs, attrs["ceil_mode"])
        xp = _padded(x, pb, pe, full)
        acc = None
        for _, sl in _taps(kernel, attrs["strides"], attrs["dilations"], outs):
            win = xp[(slice(None), slice(None)) + sl]
            acc = win if acc is None else combine(acc, win)
        return acc

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        x = np.asarray(xs[0])
        if x.dtype == object:
            zm = np.frompyfunc(_zmax, 2, 1)
            return (self._run(x, attrs, lambda s: np.full(s, None, dtype=object), zm),)
        low = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        return (self._run(x, attrs, lambda s: np.full(s, low, dtype=x.dtype), np.maximum),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        import torch
        import torch.nn.functional as F

        x = xs[0]
        nd = x.dim() - 2
        if self._fast_torch_ok(x, attrs):
            fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[nd - 1]
            return (fn(x, attrs["kernel"], attrs["strides"], attrs["pads"][:nd],
                       attrs["dilations"], ceil_mode=attrs["ceil_mode"]),)
        low = (float("-inf") if x.is_floating_point() else torch.iinfo(x.dtype).min)
        return (self._run(x, attrs, lambda s: torch.full(s, low, dtype=x.dtype,
                                                         device=x.device), torch.maximum),)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
        return [
            Example([x], {"kernel": (3, 2), "strides": (2, 2), "pads": (1, 0, 1, 1),
                          "dilations": (1, 1), "ceil_mode": False}),
            Example([x], {"kernel": (2, 2), "strides": (2, 3), "pads": (0, 0, 0, 0),
                          "dilations": (2, 1), "ceil_mode": True}),
            Example([rng.integers(-50, 50, (1, 2, 9)).astype(np.int8)],
                    {"kernel": (3,), "strides": (2,), "pads": (1, 1), "dilations": (1,),
                     "ceil_mode": True}),
        ]

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        x = onnx_tensor(ctx, 0)
        if ctx.op_type == "GlobalMaxPool":
            return [_global(ctx, x, "reduce_max")]
        if ctx.num_outputs != 1:
            raise Unsupported("MaxPool with its Indices output")
        onnx_only_attrs(ctx, {"auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads",
                              "storage_order", "strides"})
        if int(ctx.attrs.get("storage_order", 0)):
            raise Unsupported("MaxPool storage_order=1")
        kernel = tuple(int(k) for k in ctx.attrs["kernel_shape"])
        geo = _onnx_geometry(ctx, x, kernel)
        return [build(ctx, "max_pool", [x], kernel=kernel,
                      ceil_mode=bool(int(ctx.attrs.get("ceil_mode", 0))), **geo)]

    def onnx_opset_for(self, attrs: Attrs) -> int:
        # MaxPool's dilations and ceil_mode begin at opset 10
        return 10 if attrs["ceil_mode"] or any(d != 1 for d in attrs["dilations"]) else 0

    def to_onnx(self, ctx: Any, node: Any) -> None:
        a = node.attrs
        extra: dict[str, Any] = _geometry_to_onnx(node, a["kernel"], ctx, ctx.opset >= 10)
        if a["ceil_mode"]:
            if ctx.opset < 10:
                raise ExportError("max_pool ceil_mode needs opset >= 10",
                                  where=str(node.origin or "max_pool"))
            extra["ceil_mode"] = 1
        ctx.emit("MaxPool", [ctx.name(node.inputs[0])], ctx.out_names(node), **extra)

    def from_aten(self, ctx: Any) -> Any:
        if "with_indices" in ctx.target and 1 in ctx.used_outputs:
            raise Unsupported(f"{ctx.target} with its indices used")
        x = ctx.args[0]
        nd = len(x.type.shape) - 2
        kernel = _ints_of(aten_arg(ctx, 1, "kernel_size"), nd)
        stride = aten_arg(ctx, 2, "stride", [])
        strides = kernel if stride is None or (not isinstance(stride, int) and len(stride) == 0) \
            else _ints_of(stride, nd)
        p = _ints_of(aten_arg(ctx, 3, "padding", 0), nd)
        dils = _ints_of(aten_arg(ctx, 4, "dilation", 1), nd)
        ceil = bool(aten_arg(ctx, 5, "ceil_mode", False))
        y = build(ctx, "max_pool", [x], kernel=kernel, strides=strides, pads=p + p,
                  dilations=dils, ceil_mode=ceil)
        return (y, None) if "with_indices" in ctx.target else y


def _global(ctx: Any, x: Any, op: str) -> Any:
    onnx_only_attrs(ctx, set())
    r = len(x.type.shape)
    if r < 3:
        raise Unsupported(f"{ctx.op_type} of {x.type}")
    return build(ctx, op, [x], axes=tuple(range(2, r)), keepdims=True)


@register
class AvgPool(Pool):
    """ONNX AveragePool. count_include_pad counts the explicit pads in the divisor (never the
    ceil_mode overhang past them)."""

    name = "avg_pool"
    attr_names = ("kernel", "strides", "pads", "dilations", "ceil_mode", "count_include_pad")
    onnx = ("AveragePool", "GlobalAveragePool")
    aten = ("aten.avg_pool1d.default", "aten.avg_pool2d.default", "aten.avg_pool3d.default",
            "aten._adaptive_avg_pool2d.default", "aten.adaptive_avg_pool2d.default",
            "aten.adaptive_avg_pool1d.default")

    def _extra(self, attrs: Attrs) -> dict[str, Any]:
        return {"count_include_pad": bool(attrs.get("count_include_pad", False))}

    def _divisor(self, x_shape: Sequence[int], attrs: Attrs) -> np.ndarray:
        kernel = attrs["kernel"]
        nd = len(kernel)
        outs, _, _ = _window_plan(x_shape, kernel, attrs, attrs["ceil_mode"])
        pads = attrs["pads"]
        div = np.ones((), dtype=np.int64)
        for i in range(nd):
            d = int(x_shape[2 + i])
            lo, hi = (-pads[i], d + pads[nd + i]) if attrs["count_include_pad"] else (0, d)
            pos = (np.arange(outs[i])[:, None] * attrs["strides"][i] - pads[i]
                   + np.arange(kernel[i])[None, :] * attrs["dilations"][i])
            cnt = ((pos >= lo) & (pos < hi)).sum(axis=1)
            div = np.multiply.outer(div, cnt)
        return div

    def _sum(self, x: Any, attrs: Attrs, full: Callable[[tuple[int, ...]], Any]) -> Any:
        kernel = attrs["kernel"]
        outs, pb, pe = _window_plan(x.shape, kernel, attrs, attrs["ceil_mode"])
        xp = _padded(x, pb, pe, full)
        acc = None
        for _, sl in _taps(kernel, attrs["strides"], attrs["dilations"], outs):
            win = xp[(slice(None), slice(None)) + sl]
            acc = win if acc is None else acc + win
        return acc

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        x = np.asarray(xs[0])
        div = self._divisor(x.shape, attrs)
        if x.dtype == object:
            s = self._sum(x, attrs, lambda sh: np.zeros(sh, dtype=object))
            return (s / div.astype(object),)
        acc = np.float32 if x.dtype == np.float16 else x.dtype
        s = self._sum(x.astype(acc), attrs, lambda sh: np.zeros(sh, dtype=acc))
        return ((s / div).astype(x.dtype),)

    def fingerprint(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        """sum(window) / count, exactly: the float average times L = lcm(1..window size) is an
        integer, so avg = rint(avg * L) * L^-1 (mod P)."""
        k = int(np.prod(attrs["kernel"]))
        lcm = math.lcm(*range(1, k + 1))
        (avg,) = self.numpy([residues.to_signed(xs[0]).astype(np.float64)], attrs)
        scaled = residues.modp(np.rint(np.asarray(avg) * lcm).astype(np.int64))
        return (scaled * residues.inverse_of_count(lcm) % residues.P,)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        import torch
        import torch.nn.functional as F

        x = xs[0]
        nd = x.dim() - 2
        if self._fast_torch_ok(x, attrs) and all(d == 1 for d in attrs["dilations"]):
            fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[nd - 1]
            return (fn(x, attrs["kernel"], attrs["strides"], attrs["pads"][:nd],
                       ceil_mode=attrs["ceil_mode"],
                       count_include_pad=attrs["count_include_pad"]),)
        div = torch.from_numpy(self._divisor(tuple(x.shape), attrs)).to(x.device, x.dtype)
        s = self._sum(x, attrs, lambda sh: x.new_zeros(sh))
        return (s / div,)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
        return [
            Example([x], {"kernel": (3, 2), "strides": (2, 2), "pads": (1, 0, 1, 1),
                          "dilations": (1, 1), "ceil_mode": False, "count_include_pad": True}),
            Example([x], {"kernel": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1),
                          "dilations": (1, 1), "ceil_mode": True, "count_include_pad": True}),
            Example([x], {"kernel": (3, 2), "strides": (2, 3), "pads": (1, 0, 1, 0),
                          "dilations": (1, 1), "ceil_mode": True, "count_include_pad": False}),
            Example([x[:1, :2]], {"kernel": (2, 2), "strides": (1, 2), "pads": (1, 1, 0, 0),
                                  "dilations": (2, 1), "ceil_mode": False,
                                  "count_include_pad": False}),
        ]

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        x = onnx_tensor(ctx, 0)
        if ctx.op_type == "GlobalAveragePool":
            return [_global(ctx, x, "reduce_mean")]
        onnx_only_attrs(ctx, {"auto_pad", "ceil_mode", "count_include_pad", "dilations",
                              "kernel_shape", "pads", "strides"})
        kernel = tuple(int(k) for k in ctx.attrs["kernel_shape"])
        geo = _onnx_geometry(ctx, x, kernel)
        return [build(ctx, "avg_pool", [x], kernel=kernel,
                      ceil_mode=bool(int(ctx.attrs.get("ceil_mode", 0))),
                      count_include_pad=bool(int(ctx.attrs.get("count_include_pad", 0))),
                      **geo)]

    def onnx_opset_for(self, attrs: Attrs) -> int:
        # AveragePool's dilations begin at opset 19, ceil_mode at 10
        return 19 if any(d != 1 for d in attrs["dilations"]) else (
            10 if attrs["ceil_mode"] else 0)

    def to_onnx(self, ctx: Any, node: Any) -> None:
        a = node.attrs
        extra: dict[str, Any] = _geometry_to_onnx(node, a["kernel"], ctx, ctx.opset >= 19)
        if a["ceil_mode"]:
            if ctx.opset < 10:
                raise ExportError("avg_pool ceil_mode needs opset >= 10",
                                  where=str(node.origin or "avg_pool"))
            extra["ceil_mode"] = 1
        if a["count_include_pad"]:
            extra["count_include_pad"] = 1
        ctx.emit("AveragePool", [ctx.name(node.inputs[0])], ctx.out_names(node), **extra)

    def from_aten(self, ctx: Any) -> Any:
        x = ctx.args[0]
        shp = x.type.shape
        nd = len(shp) - 2
        if nd < 1:
            raise Unsupported(f"{ctx.target} on {x.type} (unbatched)")
        if "adaptive" in ctx.target:
            osz = _ints_of(aten_arg(ctx, 1, "output_size"), nd)
            sp = shp[2:]
            if all(o == 1 for o in osz):
                return build(ctx, "reduce_mean", [x], axes=tuple(range(2, 2 + nd)),
                             keepdims=True)
            if not all(isinstance(d, int) and d % o == 0 for d, o in zip(sp, osz)):
                raise Unsupported(f"{ctx.target} of {x.type} to {list(osz)}")
            k = tuple(int(d) // o for d, o in zip(sp, osz))
            return build(ctx, "avg_pool", [x], kernel=k, strides=k, pads=(0,) * (2 * nd),
                         dilations=(1,) * nd, ceil_mode=False, count_include_pad=False)
        kernel = _ints_of(aten_arg(ctx, 1, "kernel_size"), nd)
        stride = aten_arg(ctx, 2, "stride", [])
        strides = kernel if stride is None or (not isinstance(stride, int) and len(stride) == 0) \
            else _ints_of(stride, nd)
        p = _ints_of(aten_arg(ctx, 3, "padding", 0), nd)
        ceil = bool(aten_arg(ctx, 4, "ceil_mode", False))
        cip = bool(aten_arg(ctx, 5, "count_include_pad", True))
        if aten_arg(ctx, 6, "divisor_override", None) is not None:
            raise Unsupported(f"{ctx.target} with divisor_override")
        return build(ctx, "avg_pool", [x], kernel=kernel, strides=strides, pads=p + p,
                     dilations=(1,) * nd, ceil_mode=ceil, count_include_pad=cip)
