"""Elementwise ops (numpy broadcasting).

A binary op's ``fn`` is written once over the operators numpy and torch share; ops whose numpy,
torch or z3 forms differ override ``ref_np`` / ``ref_torch`` / ``ref_z3``. Unary ops declare
``ref_np`` / ``ref_torch`` over whole arrays and ``ref_z3`` over one z3 term (mapped elementwise).

Semantics follow ONNX: integer ``div`` truncates toward zero, ``mod`` follows ONNX Mod (``fmod``
0: sign of the divisor, 1: sign of the dividend), ``round`` rounds half to even, comparisons and
logical ops return bool. Binary ops need equal dtypes (frontends insert ``cast``).

The helpers at the top (symbolic mapping, ONNX import/export, aten type promotion) are shared
with ``reduce.py``.
"""
from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from ..errors import ExportError, ShapeError
from ..ir.node import Attrs, Node, Value
from ..ir.types import INT4_RANGE, DType, TensorType, ValueType, torch_int4_values, torch_to_int4
from . import residues
from .registry import (Cost, Example, NotGenerated, NotSymbolic, OpDef, Unsupported,
                       broadcast_shapes, numel, register, same_dtype, tensor_types, nbytes)
from .symbolic import Axiom, concrete_value, is_neg_inf, ite, lift_neg_inf, neg_inf, uf

# ---- dtype kinds --------------------------------------------------------------------------------

NUMERIC = "numeric"  # ints and floats
FLOAT = "float"
BOOL = "bool"
ANY = "any"  # every dtype with a numpy/torch counterpart (and bool)
COMPARABLE = "comparable"  # numeric and bool


# element types the ops compute on (float8 / int4 / ... only pass through opaque nodes)
FLOATS = frozenset({DType.f16, DType.bf16, DType.f32, DType.f64})
INTS = frozenset({DType.i8, DType.i16, DType.i32, DType.i64, DType.u8, DType.u16, DType.u32,
                  DType.u64})


def check_kind(name: str, t: TensorType, kind: str) -> None:
    """Raise ShapeError when ``t``'s dtype is not of ``kind``."""
    d = t.dtype
    ok = {
        NUMERIC: d in FLOATS or d in INTS,
        FLOAT: d in FLOATS,
        BOOL: d == DType.bool,
        COMPARABLE: d in FLOATS or d in INTS or d == DType.bool,
        ANY: d in FLOATS or d in INTS or d == DType.bool,
    }[kind]
    if not ok:
        raise ShapeError(f"{name}: dtype {d.value} not supported (needs {kind}); input {t}")


def known_rank(name: str, t: TensorType) -> tuple:
    if t.shape is None:
        raise ShapeError(f"{name}: input {t} has unknown rank")
    return t.shape


# ---- symbolic (z3) helpers ----------------------------------------------------------------------

def zmap(fn: Callable[..., Any], *xs: np.ndarray) -> np.ndarray:
    """Apply ``fn`` to each element of broadcast object arrays; returns an object array (0-d too).

    numpy's own ufuncs call ``bool()`` on z3 comparisons, which z3 refuses, hence this loop."""
    arrs = np.broadcast_arrays(*[np.asarray(x, dtype=object) for x in xs])
    out = np.empty(arrs[0].shape, dtype=object)
    for idx in np.ndindex(out.shape):
        out[idx] = fn(*(a[idx] for a in arrs))
    return out


def ufmap(name: str, *xs: np.ndarray) -> np.ndarray:
    """The uninterpreted function ``name`` applied elementwise (exp(-inf) is 0 exactly)."""
    f = uf(name, len(xs))
    if name == "exp" and len(xs) == 1:
        return zmap(lambda v: lift_neg_inf("exp", _exp_at, v), xs[0])
    return zmap(lambda *v: f(*v), *xs)


def _exp_at(v: Any) -> Any:
    return real(0) if is_neg_inf(v) else uf("exp")(v)


def is_concrete(v: Any) -> bool:
    return isinstance(v, (bool, int, float, np.generic))


def zif(c: Any, a: Any, b: Any) -> Any:
    """``a if c else b`` for a Python or z3 condition."""
    if isinstance(c, (bool, np.bool_)):
        return a if c else b
    import z3

    return z3.If(c, a, b)


def is_int_term(v: Any) -> bool:
    """Whether a symbolic element is integer-valued (a Python int or a z3 Int term)."""
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, (int, np.integer)):
        return True
    if isinstance(v, (float, np.floating)):
        return False
    import z3

    return z3.is_int(v)


def is_bool_term(v: Any) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return True
    if isinstance(v, (int, float, np.generic)):
        return False
    import z3

    return z3.is_bool(v)


def real(v: Any) -> Any:
    """A z3 Real term for ``v`` (so that ``1 / real(0.0)`` builds a term instead of raising)."""
    import z3

    if isinstance(v, (bool, np.bool_)):
        return z3.RealVal(int(v))
    if isinstance(v, (float, np.floating)) and v == -math.inf:
        return neg_inf()  # masked scores; see ops/symbolic.py
    if isinstance(v, (float, np.floating)) and not math.isfinite(v):
        raise NotSymbolic(f"non-finite constant {v}")
    if isinstance(v, (int, float, np.integer, np.floating)):
        return z3.RealVal(float(v)) if isinstance(v, (float, np.floating)) else z3.RealVal(int(v))
    if z3.is_int(v):
        return z3.ToReal(v)
    return v


def z_floor(v: Any) -> Any:
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(math.floor(v))
    import z3

    return z3.ToReal(z3.ToInt(real(v)))


def z_trunc(v: Any) -> Any:
    return zif(v >= 0, z_floor(v), -z_floor(-v))


def z_tdiv(a: Any, b: Any) -> Any:
    """Integer division truncating toward zero (ONNX/C semantics)."""
    if isinstance(a, (int, np.integer)) and isinstance(b, (int, np.integer)):
        if b == 0:
            raise NotSymbolic("integer division by zero")
        q = abs(int(a)) // abs(int(b))
        return q if (a >= 0) == (b >= 0) else -q
    za = zif(a >= 0, a, -a)
    zb = zif(b >= 0, b, -b)
    q = za / zb  # z3 Int division: floor for a non-negative dividend and a positive divisor
    import z3

    return z3.If((a >= 0) == (b >= 0), q, -q)


def z_fdiv(a: Any, b: Any) -> Any:
    """Integer division rounding toward minus infinity."""
    if isinstance(a, (int, np.integer)) and isinstance(b, (int, np.integer)):
        if b == 0:
            raise NotSymbolic("integer division by zero")
        return int(a) // int(b)
    # z3's Int division is Euclidean: it is floor division for a positive divisor
    return zif(b > 0, a / b, (-a) / (-b))


# ---- Triton expression helpers (source text only; see OpDef.triton_format) ---------------------

def triton_literal(x: float) -> str:
    """A float literal Triton parses (repr keeps every bit of an f32/f16 value)."""
    return repr(float(x))


def tl_sigmoid(a: str) -> str:
    return f"(1.0 / (1.0 + tl.exp(-({a}))))"


def tl_tanh(a: str) -> str:
    # 1 - 2 / (exp(2a) + 1): exact limits at +-inf, no overflow to nan
    return f"(1.0 - 2.0 / (tl.exp(2.0 * ({a})) + 1.0))"


def scalar_constant(v: Value, dtypes: frozenset[DType] = FLOATS) -> float | None:
    """The value of a finite one-element constant of a float dtype in ``dtypes``, else None."""
    n = v.node
    if n.op != "constant" or not n.const.has_array:
        return None
    t = n.out_types[0]
    if not isinstance(t, TensorType) or t.dtype not in dtypes or n.const.dtype not in dtypes:
        return None
    arr = np.asarray(n.const.array)
    if arr.size != 1:
        return None
    x = float(arr.reshape(-1)[0])
    return x if math.isfinite(x) else None


# ---- ONNX import helpers ------------------------------------------------------------------------

def where_of(ctx: Any) -> str:
    return str(getattr(ctx, "op_type", None) or getattr(ctx, "target", "?"))


def onnx_attrs(ctx: Any, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The node's attributes with ONNX defaults filled in. ``consumed_inputs`` (opset 1-5, a
    memory hint without semantics) is dropped; any attribute not in ``defaults`` is Unsupported."""
    got = {k: v for k, v in dict(ctx.attrs).items() if k != "consumed_inputs"}
    unknown = sorted(set(got) - set(defaults))
    if unknown:
        raise Unsupported(f"{ctx.op_type} (opset {ctx.opset}): attribute(s) {unknown} not modeled")
    out = dict(defaults)
    out.update(got)
    return out


def onnx_inputs(ctx: Any, lo: int, hi: int) -> list[Any]:
    """The node's inputs (None for omitted optional ones), padded to ``hi``; every given input
    must be a tensor of known rank."""
    ins = list(ctx.inputs)
    while ins and ins[-1] is None:
        ins.pop()
    if len(ins) < lo or len(ins) > hi or any(v is None for v in ins[:lo]):
        raise Unsupported(f"{ctx.op_type}: expected {lo}..{hi} inputs, got {len(ctx.inputs)}")
    for i, v in enumerate(ins):
        if v is not None and (not isinstance(v.type, TensorType) or v.type.shape is None):
            raise Unsupported(f"{ctx.op_type}: input {i} has type {v.type} (not a ranked tensor)")
    return ins + [None] * (hi - len(ins))


def onnx_const_ints(ctx: Any, i: int) -> list[int] | None:
    """Input ``i`` as a list of ints when it is a constant; None when it is omitted;
    Unsupported when it is computed at run time."""
    if i >= len(ctx.inputs) or ctx.inputs[i] is None:
        return None
    c = ctx.const(i)
    if c is None:
        raise Unsupported(f"{ctx.op_type}: input {i} is not a constant")
    return [int(v) for v in np.asarray(c).reshape(-1)]


def build(ctx: Any, op: str, inputs: Sequence[Value], **attrs: Any) -> Value:
    """``ctx.build`` turning a typing failure into Unsupported (the node then stays opaque)."""
    try:
        return ctx.build(op, list(inputs), **attrs)
    except ShapeError as e:
        raise Unsupported(f"{where_of(ctx)}: {e.one_line()}") from e


def same_shapes_for_legacy(ctx: Any, vs: Sequence[Value], since: int) -> None:
    """Before ``since`` ONNX had no numpy broadcasting for this op: only map equal shapes."""
    if ctx.opset < since and len({v.type.shape for v in vs}) > 1:
        raise Unsupported(f"{ctx.op_type} (opset {ctx.opset}): legacy broadcasting of "
                          f"{', '.join(str(v.type) for v in vs)}")


def same_dtypes(ctx: Any, vs: Sequence[Value]) -> None:
    if len({v.type.dtype for v in vs}) > 1:
        raise Unsupported(f"{where_of(ctx)}: mixed dtypes {', '.join(str(v.type) for v in vs)}")


# ---- ONNX export helpers ------------------------------------------------------------------------

def need_opset(ctx: Any, since: int, what: str) -> None:
    if ctx.opset < since:
        raise ExportError(f"{what} needs ONNX opset {since}, exporting at opset {ctx.opset}")


def onnx_type_ok(op_type: str, opset: int, dtype: DType, slot: int = 0) -> bool:
    """Whether ONNX ``op_type`` at ``opset`` accepts ``dtype`` in input ``slot``."""
    from onnx import defs, helper

    try:
        schema = defs.get_schema(op_type, opset)
    except Exception:  # noqa: BLE001 - no such op at this opset
        return False
    param = schema.inputs[min(slot, len(schema.inputs) - 1)].type_str
    tname = "tensor(" + helper.tensor_dtype_to_string(dtype.to_onnx()).split(".")[-1].lower() + ")"
    for c in schema.type_constraints:
        if c.type_param_str == param:
            return tname in c.allowed_type_strs
    return param == tname


def need_type(ctx: Any, op_type: str, dtype: DType, slot: int = 0) -> None:
    """ExportError unless ONNX ``op_type`` takes ``dtype`` at the export opset."""
    if not onnx_type_ok(op_type, ctx.opset, dtype, slot):
        raise ExportError(f"ONNX {op_type} (opset {ctx.opset}) does not take {dtype.value}")


def emit1(ctx: Any, op_type: str, inputs: Sequence[str], **attrs: Any) -> str:
    """Emit one ONNX node with a fresh output name; returns that name."""
    return ctx.emit(op_type, list(inputs), 1, **attrs)[0]


def const_of(ctx: Any, value: Any, dtype: DType) -> str:
    """An initializer holding ``value`` in ``dtype`` (via a Cast for dtypes numpy lacks)."""
    try:
        return ctx.const(np.asarray(value, dtype=dtype.to_numpy()))
    except TypeError:
        f = ctx.const(np.asarray(value, dtype=np.float32))
        return emit1(ctx, "Cast", [f], to=dtype.to_onnx())


def emit_reduce(ctx: Any, op_type: str, x: str, axes: Sequence[int], keepdims: bool,
                outputs: "list[str] | int" = 1) -> list[str]:
    """ReduceXxx over ``axes`` (empty: all), axes as an input from opset 13 (ReduceSum) or 18
    (the others), as an attribute below."""
    as_input = ctx.opset >= (13 if op_type == "ReduceSum" else 18)
    if as_input:
        ins = [x] + ([ctx.const(np.asarray(list(axes), dtype=np.int64))] if axes else [])
        return ctx.emit(op_type, ins, outputs, keepdims=int(keepdims))
    extra = {"axes": list(axes)} if axes else {}
    return ctx.emit(op_type, [x], outputs, keepdims=int(keepdims), **extra)


def in_type(node: Any, i: int = 0) -> TensorType:
    t = node.inputs[i].type
    assert isinstance(t, TensorType)
    return t


# ---- aten helpers -------------------------------------------------------------------------------

def aten_tensor(ctx: Any, x: Any, what: str = "input") -> Value:
    """``x`` when it is a Value of a ranked tensor, else Unsupported."""
    if not isinstance(x, Value) or not isinstance(x.type, TensorType) or x.type.shape is None:
        raise Unsupported(f"{ctx.target}: {what} is {x!r}, not a ranked tensor")
    return x


def aten_arg(ctx: Any, i: int, name: str, default: Any) -> Any:
    """Positional arg ``i`` or keyword ``name`` of the aten call."""
    if i < len(ctx.args):
        return ctx.args[i]
    return ctx.kwargs.get(name, default)


def cast_to(ctx: Any, v: Value, dt: DType) -> Value:
    return v if v.type.dtype == dt else build(ctx, "cast", [v], to=dt)


def aten_float(ctx: Any, v: Value) -> Value:
    """torch promotes integer and bool inputs of float functions (exp, sqrt, ...) to float32."""
    import torch

    if v.type.dtype.is_float:
        return v
    return cast_to(ctx, v, DType.from_torch(torch.get_default_dtype()))


def aten_result_dtype(ctx: Any, xs: Sequence[Any]) -> DType:
    """torch's result dtype for one or two operands (Values or Python numbers)."""
    import torch

    probes: list[Any] = []
    for x in xs:
        if isinstance(x, Value):
            t = aten_tensor(ctx, x).type
            try:
                tdt = t.dtype.to_torch()
            except TypeError as e:
                raise Unsupported(f"{ctx.target}: {e}") from e
            probes.append(torch.empty((1,) * min(len(t.shape), 1), dtype=tdt))
        elif isinstance(x, (bool, int, float)):
            probes.append(x)
        else:
            raise Unsupported(f"{ctx.target}: operand {x!r} is not a tensor or a number")
    if not any(isinstance(p, torch.Tensor) for p in probes):
        raise Unsupported(f"{ctx.target}: no tensor operand")
    if len(probes) == 1:
        return DType.from_torch(probes[0].dtype)
    if len(probes) != 2:
        raise Unsupported(f"{ctx.target}: promotion of {len(probes)} operands")
    return DType.from_torch(torch.result_type(probes[0], probes[1]))


def aten_operands(ctx: Any, xs: Sequence[Any], dt: DType | None = None) -> list[Value]:
    """Operands promoted like torch (or to ``dt``): tensors cast, numbers made 0-d constants."""
    dt = dt or aten_result_dtype(ctx, xs)
    tensors = [cast_to(ctx, aten_tensor(ctx, x), dt) for x in xs if isinstance(x, Value)]
    out: list[Value] = []
    k = 0
    for x in xs:
        if isinstance(x, Value):
            out.append(tensors[k])
            k += 1
        else:
            out.append(ctx.scalar(x, like=tensors[0]))
    return out


# ---- binary ops ---------------------------------------------------------------------------------

class Binary(OpDef):
    """Base of binary elementwise ops: same dtype on both sides, numpy broadcasting."""

    min_inputs = max_inputs = 2
    elementwise = True
    out_dtype: ClassVar[DType | None] = None  # None: the input dtype; DType.bool for comparisons
    kind: ClassVar[str] = NUMERIC
    onnx_since: ClassVar[int] = 7  # first opset with numpy broadcasting for this op
    flops_per_elem: ClassVar[float] = 1.0

    @staticmethod
    def fn(a: Any, b: Any) -> Any:
        raise NotImplementedError

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        a, b = tensor_types(self.name, in_types)
        dt = same_dtype(self.name, [a, b])
        check_kind(self.name, a, self.kind)
        if a.shape is None or b.shape is None:
            raise ValueError("unknown rank")
        return (TensorType(broadcast_shapes(self.name, a.shape, b.shape), self.out_dtype or dt),)

    def ref_np(self, a: np.ndarray, b: np.ndarray, attrs: Attrs) -> Any:
        return self.fn(a, b)

    def ref_torch(self, a: Any, b: Any, attrs: Attrs) -> Any:
        return self.fn(a, b)

    def ref_z3(self, a: Any, b: Any, attrs: Attrs) -> Any:
        return self.fn(a, b)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        a, b = np.asarray(xs[0]), np.asarray(xs[1])
        with np.errstate(all="ignore"):
            out = np.asarray(self.ref_np(a, b, attrs))
        dt = self.out_dtype.to_numpy() if self.out_dtype else np.result_type(a, b)
        return (out.astype(dt, copy=False),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        return (self.ref_torch(xs[0], xs[1], attrs),)

    def symbolic(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        def one(a: Any, b: Any) -> Any:
            return lift_neg_inf(self.name, lambda x, y: self.ref_z3(x, y, attrs), a, b)

        return (zmap(one, xs[0], xs[1]),)

    def cost(self, in_types: tuple[ValueType, ...], out_types: tuple[ValueType, ...],
             attrs: Attrs) -> Cost:
        b = sum(nbytes(t) for t in in_types) + sum(nbytes(t) for t in out_types)
        return Cost(self.flops_per_elem * sum(numel(t) for t in out_types), float(b), 1)

    # ONNX: one node, no attributes; variadic ONNX ops (Max, Min, Sum) fold pairwise
    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        attrs = self.import_attrs(onnx_attrs(ctx, self.onnx_defaults(ctx)))
        variadic = ctx.op_type in ("Max", "Min", "Sum")
        ins = onnx_inputs(ctx, 1 if variadic else 2, max(len(ctx.inputs), 2) if variadic else 2)
        ins = [v for v in ins if v is not None]
        if any(v is None for v in ctx.inputs):
            raise Unsupported(f"{ctx.op_type}: omitted input")
        same_dtypes(ctx, ins)
        same_shapes_for_legacy(ctx, ins, 8 if variadic else self.onnx_since)
        if len(ins) == 1:
            return [build(ctx, "identity", ins)]
        acc = ins[0]
        for v in ins[1:]:
            acc = build(ctx, self.name, [acc, v], **attrs)
        return [acc]

    def onnx_defaults(self, ctx: Any) -> dict[str, Any]:
        return {}

    def import_attrs(self, a: dict[str, Any]) -> dict[str, Any]:
        return a

    def to_onnx(self, ctx: Any, node: Any) -> None:
        if not self.onnx:
            raise ExportError(f"op {self.name} has no ONNX mapping")
        if ctx.opset < self.onnx_since and in_type(node, 0).shape != in_type(node, 1).shape:
            raise ExportError(f"{self.onnx[0]} with broadcasting needs ONNX opset "
                              f"{self.onnx_since}, exporting at opset {ctx.opset}")
        need_type(ctx, self.onnx[0], in_type(node).dtype)
        ctx.emit(self.onnx[0], [ctx.name(v) for v in node.inputs], ctx.out_names(node))

    def from_aten(self, ctx: Any) -> Any:
        a, b = aten_arg(ctx, 0, "self", None), aten_arg(ctx, 1, "other", None)
        x, y = aten_operands(ctx, [a, b])
        return build(ctx, self.name, [x, y])

    def examples(self, rng: np.random.Generator) -> list[Example]:
        a = rng.standard_normal((2, 3, 4)).astype(np.float32)
        b = rng.standard_normal((3, 1)).astype(np.float32)
        c = rng.standard_normal((5,)).astype(np.float32)
        return [Example([a, b]), Example([a, a[0]]), Example([c[:1].reshape(()), c])]


def int_examples(rng: np.random.Generator, nonzero_b: bool = False) -> list[Example]:
    a = rng.integers(-20, 20, (3, 4)).astype(np.int32)
    b = rng.integers(-5, 6, (4,)).astype(np.int32)
    if nonzero_b:
        b[b == 0] = 3
    return [Example([a, b]), Example([a.astype(np.int64), b.astype(np.int64)[None]])]


def add_scaled(ctx: Any, name: str) -> Any:
    """aten add/sub with ``alpha``: ``a op alpha * b``."""
    a, b = aten_arg(ctx, 0, "self", None), aten_arg(ctx, 1, "other", None)
    alpha = ctx.kwargs.get("alpha", ctx.args[2] if len(ctx.args) > 2 else 1)
    x, y = aten_operands(ctx, [a, b])
    if alpha != 1:
        if x.type.dtype == DType.bool:
            raise Unsupported(f"{ctx.target}: alpha on bool")
        y = build(ctx, "mul", [y, ctx.scalar(alpha, like=y)])
    return build(ctx, name, [x, y])


@register
class Add(Binary):
    name = "add"
    commutative = True
    associative = True
    exact_int = True
    cpu_epilogue = True
    triton_format = "({0} + {1})"
    onnx = ("Add", "Sum")
    aten = ("aten.add.Tensor", "aten.add.Scalar")

    @staticmethod
    def fn(a: Any, b: Any) -> Any:
        return a + b

    def from_aten(self, ctx: Any) -> Any:
        return add_scaled(ctx, "add")

    def examples(self, rng: np.random.Generator) -> list[Example]:
        return super().examples(rng) + int_examples(rng)


@register
class Sub(Binary):
    name = "sub"
    exact_int = True
    triton_format = "({0} - {1})"
    onnx = ("Sub",)
    aten = ("aten.sub.Tensor", "aten.sub.Scalar")

    @staticmethod
    def fn(a: Any, b: Any) -> Any:
        return a - b

    def from_aten(self, ctx: Any) -> Any:
        return add_scaled(ctx, "sub")

    def examples(self, rng: np.random.Generator) -> list[Example]:
        return super().examples(rng) + int_examples(rng)


@register
class Mul(Binary):
    name = "mul"
    commutative = True
    associative = True
    exact_int = True
    triton_format = "({0} * {1})"
    onnx = ("Mul",)
    aten = ("aten.mul.Tensor", "aten.mul.Scalar")

    @staticmethod
    def fn(a: Any, b: Any) -> Any:
        return a * b

    def examples(self, rng: np.random.Generator) -> list[Example]:
        return super().examples(rng) + int_examples(rng)


def np_tdiv(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer division truncating toward zero (numpy's // floors)."""
    q = np.floor_divide(a, b)
    fix = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
    return np.where(fix, q + 1, q).astype(np.result_type(a, b))


@register
class Div(Binary):
    name = "div"
    triton_format = "({0} / {1})"
    onnx = ("Div",)
    aten = ("aten.div.Tensor", "aten.div.Scalar", "aten.div.Tensor_mode", "aten.div.Scalar_mode")

    @staticmethod
    def fn(a: Any, b: Any) -> Any:
        return a / b

    def ref_np(self, a: np.ndarray, b: np.ndarray, attrs: Attrs) -> Any:
        if a.dtype.kind in "iu":
            return np_tdiv(a, b)
        return a / b

    def ref_torch(self, a: Any, b: Any, attrs: Attrs) -> Any:
        import torch

        if a.dtype.is_floating_point:
            return a / b
        return torch.div(a, b, rounding_mode="trunc")

    def ref_z3(self, a: Any, b: Any, attrs: Attrs) -> Any:
        if is_int_term(a) and is_int_term(b):
            return z_tdiv(a, b)
        # a * (1/b): the same term as a multiply by a reciprocal (x / sqrt(v) and
        # x * rsqrt(v) normalize alike); equal to a / b wherever b != 0
        return real(a) * (real(1) / b)

    def fingerprint(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        return (residues.modp(xs[0]) * residues.inverse(xs[1]) % residues.P,)

    def from_aten(self, ctx: Any) -> Any:
        import torch

        a, b = aten_arg(ctx, 0, "self", None), aten_arg(ctx, 1, "other", None)
        mode = ctx.kwargs.get("rounding_mode", ctx.args[2] if len(ctx.args) > 2 else None)
        dt = aten_result_dtype(ctx, [a, b])
        if mode is None:
            if not dt.is_float:  # true division of integers gives the default float dtype
                dt = DType.from_torch(torch.get_default_dtype())
        elif mode == "trunc":
            if not dt.is_int:
                raise Unsupported(f"{ctx.target}: rounding_mode='trunc' on {dt.value}")
        else:
            raise Unsupported(f"{ctx.target}: rounding_mode={mode!r}")
        x, y = aten_operands(ctx, [a, b], dt)
        return build(ctx, "div", [x, y])

    def examples(self, rng: np.random.Generator) -> list[Example]:
        ex = super().examples(rng)
        for e in int_examples(rng, nonzero_b=True):
            ex.append(e)
        return ex


@register
class Pow(Binary):
    name = "pow"
    onnx = ("Pow",)
    aten = ("aten.pow.Tensor_Scalar", "aten.pow.Tensor_Tensor", "aten.pow.Scalar")
    flops_per_elem = 8.0

    @staticmethod
    def fn(a: Any, b: Any) -> Any:
        return a ** b

    def ref_np(self, a: np.ndarray, b: np.ndarray, attrs: Attrs) -> Any:
        return np.power(a, b)

    def ref_torch(self, a: Any, b: Any, attrs: Attrs) -> Any:
        import torch

        return torch.pow(a, b)

    def ref_z3(self, a: Any, b: Any, attrs: Attrs) -> Any:
        n = concrete_value(b)
        if n is not None and math.isfinite(n) and n == int(n) and abs(n) <= 16:
            k = int(n)
            if k == 0:
                return 1 if is_int_term(a) else real(1)
            p = a
            for _ in range(abs(k) - 1):
                p = p * a
            if k > 0:
                return p
            if is_int_term(a):
                raise NotSymbolic("integer pow with a negative exponent")
            return real(1) / p
        if is_int_term(a) or is_int_term(b):
            raise NotSymbolic("integer pow with a symbolic exponent")
        if n == 0.5:
            return uf("sqrt")(a)
        if n == -0.5:
            return real(1) / uf("sqrt")(a)  # rsqrt's own form
        return uf("pow", 2)(a, b)

    def triton_expr(self, xs: Sequence[str], node: Node) -> str:
        e = scalar_constant(node.inputs[1])
        a = xs[0]
        forms = {1.0: f"({a})", 2.0: f"({a} * {a})", 3.0: f"({a} * {a} * {a})",
                 4.0: f"(({a} * {a}) * ({a} * {a}))", 0.5: f"tl.sqrt({a})",
                 -1.0: f"(1.0 / {a})", -0.5: f"tl.rsqrt({a})", -2.0: f"(1.0 / ({a} * {a}))"}
        if e is None or e not in forms:
            raise NotGenerated("unsupported form (pow exponent)")
        return forms[e]

    def from_aten(self, ctx: Any) -> Any:
        a, b = aten_arg(ctx, 0, "self", None), aten_arg(ctx, 1, "exponent", None)
        x, y = aten_operands(ctx, [a, b])
        return build(ctx, "pow", [x, y])

    def examples(self, rng: np.random.Generator) -> list[Example]:
        a = (np.abs(rng.standard_normal((2, 3))) + 0.1).astype(np.float32)
        b = rng.standard_normal((3,)).astype(np.float32)
        ai = rng.integers(-4, 5, (2, 3)).astype(np.int64)
        bi = rng.integers(0, 4, (3,)).astype(np.int64)
        return [Example([a, b], rtol=1e-5, atol=1e-5),
                Example([a, np.asarray(2.0, np.float32)]),
                Example([a, np.asarray(-3.0, np.float32)], rtol=1e-5, atol=1e-5),
                Example([ai, bi], symbolic=False)]


@register
class Maximum(Binary):
    name = "maximum"
    commutative = True
    ordered = True
    triton_format = "tl.maximum({0}, {1})"
    onnx = ("Max",)
    aten = ("aten.maximum.default",)
    onnx_since = 8

    @staticmethod
    def fn(a: Any, b: Any) -> Any:
        raise NotImplementedError

    def ref_np(self, a: np.ndarray, b: np.ndarray, attrs: Attrs) -> Any:
        return np.maximum(a, b)

    def ref_torch(self, a: Any, b: Any, attrs: Attrs) -> Any:
        import torch

        return torch.maximum(a, b)

    def ref_z3(self, a: Any, b: Any, attrs: Attrs) -> Any:
        return zif(a >= b, a, b)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        return super().examples(rng) + int_examples(rng)


@register
class Minimum(Maximum):
    name = "minimum"
    triton_format = "tl.minimum({0}, {1})"
    onnx = ("Min",)
    aten = ("aten.minimum.default",)

    def ref_np(self, a: np.ndarray, b: np.ndarray, attrs: Attrs) -> Any:
        return np.minimum(a, b)

    def ref_torch(self, a: Any, b: Any, attrs: Attrs) -> Any:
        import torch

        return torch.minimum(a, b)

    def ref_z3(self, a: Any, b: Any, attrs: Attrs) -> Any:
        return zif(a <= b, a, b)


@register
class Mod(Binary):
    """ONNX Mod. fmod=0: result has the sign of the divisor (Python %, torch.remainder);
    fmod=1: the sign of the dividend (C fmod, torch.fmod)."""

    name = "mod"
    triton_missing = "fmod / floor-mod of fp32 operands has no exact tl builtin"
    onnx = ("Mod",)
    aten = ("aten.remainder.Tensor", "aten.remainder.Scalar", "aten.fmod.Tensor",
            "aten.fmod.Scalar")

    @staticmethod
    def fn(a: Any, b: Any) -> Any:
        raise NotImplementedError

    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        f = attrs.get("fmod", 0)
        if f not in (0, 1) or isinstance(f, float):
            raise ShapeError(f"mod: fmod must be 0 or 1, got {f!r}")
        return attrs.replace(fmod=int(f))

    def ref_np(self, a: np.ndarray, b: np.ndarray, attrs: Attrs) -> Any:
        return np.fmod(a, b) if attrs["fmod"] else np.mod(a, b)

    def ref_torch(self, a: Any, b: Any, attrs: Attrs) -> Any:
        import torch

        return torch.fmod(a, b) if attrs["fmod"] else torch.remainder(a, b)

    def ref_z3(self, a: Any, b: Any, attrs: Attrs) -> Any:
        if is_int_term(a) and is_int_term(b):
            q = z_tdiv(a, b) if attrs["fmod"] else z_fdiv(a, b)
            return a - b * q
        r = real(a) / b
        q = z_trunc(r) if attrs["fmod"] else z_floor(r)
        return a - b * q

    def onnx_defaults(self, ctx: Any) -> dict[str, Any]:
        return {"fmod": 0}

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        a = onnx_attrs(ctx, {"fmod": 0})
        x = ctx.inputs[0] if ctx.inputs else None
        if (a["fmod"] == 0 and ctx.opset < 28 and isinstance(getattr(x, "type", None), TensorType)
                and x.type.dtype.is_float):
            raise Unsupported("Mod: fmod=0 on floats is invalid before opset 28")
        return super().from_onnx(ctx)

    def to_onnx(self, ctx: Any, node: Any) -> None:
        need_opset(ctx, 10, "Mod")
        a, b = (ctx.name(v) for v in node.inputs)
        fmod = node.attrs["fmod"]
        if fmod == 0 and in_type(node).dtype.is_float and ctx.opset < 28:
            # A - floor(A / B) * B: the definition opset 28 gives for floats
            q = emit1(ctx, "Floor", [emit1(ctx, "Div", [a, b])])
            ctx.emit("Sub", [a, emit1(ctx, "Mul", [q, b])], ctx.out_names(node))
            return
        need_type(ctx, "Mod", in_type(node).dtype)
        ctx.emit("Mod", [a, b], ctx.out_names(node), fmod=fmod)

    def from_aten(self, ctx: Any) -> Any:
        a, b = aten_arg(ctx, 0, "self", None), aten_arg(ctx, 1, "other", None)
        x, y = aten_operands(ctx, [a, b])
        return build(ctx, "mod", [x, y], fmod=int(ctx.target.startswith("aten.fmod")))

    def examples(self, rng: np.random.Generator) -> list[Example]:
        a = (rng.standard_normal((3, 4)) * 5).astype(np.float32)
        b = np.asarray([1.5, -2.0, 3.0, -0.7], np.float32)
        out = []
        for f in (0, 1):
            out.append(Example([a, b], {"fmod": f}, rtol=1e-5, atol=1e-5))
            for e in int_examples(rng, nonzero_b=True):
                out.append(Example(e.inputs, {"fmod": f}))
        return out


class Compare(Binary):
    out_dtype = DType.bool
    kind = NUMERIC

    def symbolic(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        return (zmap(lambda a, b: self.fn(a, b), xs[0], xs[1]),)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        a = rng.integers(-2, 3, (2, 3, 4)).astype(np.float32)
        b = rng.integers(-2, 3, (3, 1)).astype(np.float32)
        ai = rng.integers(-2, 3, (3, 4)).astype(np.int64)
        return [Example([a, b]), Example([a, a[1]]), Example([ai, ai[::-1]])]

    def from_aten(self, ctx: Any) -> Any:
        a, b = aten_arg(ctx, 0, "self", None), aten_arg(ctx, 1, "other", None)
        x, y = aten_operands(ctx, [a, b])
        name = ctx.target.split(".")[1]
        if name == "ne":
            return build(ctx, "not", [build(ctx, "equal", [x, y])])
        return build(ctx, self.name, [x, y])


@register
class Equal(Compare):
    name = "equal"
    commutative = True
    triton_format = "({0} == {1})"
    kind = COMPARABLE
    onnx = ("Equal",)
    aten = ("aten.eq.Tensor", "aten.eq.Scalar", "aten.ne.Tensor", "aten.ne.Scalar")

    @staticmethod
    def fn(a: Any, b: Any) -> Any:
        return a == b

    def to_onnx(self, ctx: Any, node: Any) -> None:
        if in_type(node).dtype.is_float:
            need_opset(ctx, 11, "Equal on floats")
        super().to_onnx(ctx, node)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        c = rng.integers(0, 2, (3, 4)).astype(bool)
        return super().examples(rng) + [Example([c, c[0]])]


@register
class Less(Compare):
    name = "less"
    triton_format = "({0} < {1})"
    onnx = ("Less",)
    aten = ("aten.lt.Tensor", "aten.lt.Scalar")

    @staticmethod
    def fn(a: Any, b: Any) -> Any:
        return a < b


@register
class Greater(Compare):
    name = "greater"
    triton_format = "({0} > {1})"
    onnx = ("Greater",)
    aten = ("aten.gt.Tensor", "aten.gt.Scalar")

    @staticmethod
    def fn(a: Any, b: Any) -> Any:
        return a > b


@register
class LessEqual(Compare):
    name = "less_equal"
    triton_format = "({0} <= {1})"
    onnx = ("LessOrEqual",)
    aten = ("aten.le.Tensor", "aten.le.Scalar")
    strict: ClassVar[str] = "Less"

    @staticmethod
    def fn(a: Any, b: Any) -> Any:
        return a <= b

    def to_onnx(self, ctx: Any, node: Any) -> None:
        if ctx.opset >= 12:
            return super().to_onnx(ctx, node)
        # Or(strict, Equal) is exact with NaNs too (Not(Greater) would not be)
        a, b = (ctx.name(v) for v in node.inputs)
        if in_type(node).dtype.is_float:
            need_opset(ctx, 11, "LessOrEqual on floats (as Or(Less, Equal))")
        ctx.emit("Or", [emit1(ctx, self.strict, [a, b]), emit1(ctx, "Equal", [a, b])],
                 ctx.out_names(node))


@register
class GreaterEqual(LessEqual):
    name = "greater_equal"
    triton_format = "({0} >= {1})"
    onnx = ("GreaterOrEqual",)
    aten = ("aten.ge.Tensor", "aten.ge.Scalar")
    strict = "Greater"

    @staticmethod
    def fn(a: Any, b: Any) -> Any:
        return a >= b


class Logical(Binary):
    out_dtype = DType.bool
    kind = BOOL
    triton_operands = "bool"

    def symbolic(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        return (zmap(lambda a, b: self.ref_z3(a, b, attrs), xs[0], xs[1]),)

    def from_aten(self, ctx: Any) -> Any:
        a = aten_tensor(ctx, aten_arg(ctx, 0, "self", None))
        b = aten_tensor(ctx, aten_arg(ctx, 1, "other", None))
        if "bitwise" in ctx.target:
            if a.type.dtype != DType.bool or b.type.dtype != DType.bool:
                raise Unsupported(f"{ctx.target} on {a.type}, {b.type} (only bool is modeled)")
        # logical_* treat any nonzero value as true; cast to bool is exactly that
        return build(ctx, self.name, [cast_to(ctx, a, DType.bool), cast_to(ctx, b, DType.bool)])

    def examples(self, rng: np.random.Generator) -> list[Example]:
        a = rng.integers(0, 2, (2, 3, 4)).astype(bool)
        b = rng.integers(0, 2, (3, 1)).astype(bool)
        return [Example([a, b]), Example([a, a[0]])]


@register
class And(Logical):
    name = "and"
    commutative = True
    triton_format = "({0} & {1})"
    onnx = ("And",)
    aten = ("aten.logical_and.default", "aten.bitwise_and.Tensor")

    @staticmethod
    def fn(a: Any, b: Any) -> Any:
        return a & b

    def ref_z3(self, a: Any, b: Any, attrs: Attrs) -> Any:
        import z3

        return z3.And(a, b)


@register
class Or(Logical):
    name = "or"
    commutative = True
    triton_format = "({0} | {1})"
    onnx = ("Or",)
    aten = ("aten.logical_or.default", "aten.bitwise_or.Tensor")

    @staticmethod
    def fn(a: Any, b: Any) -> Any:
        return a | b

    def ref_z3(self, a: Any, b: Any, attrs: Attrs) -> Any:
        import z3

        return z3.Or(a, b)


@register
class Xor(Logical):
    name = "xor"
    commutative = True
    triton_format = "({0} ^ {1})"
    onnx = ("Xor",)
    aten = ("aten.logical_xor.default", "aten.bitwise_xor.Tensor")

    @staticmethod
    def fn(a: Any, b: Any) -> Any:
        return a ^ b

    def ref_z3(self, a: Any, b: Any, attrs: Attrs) -> Any:
        import z3

        return z3.Xor(a, b)


# ---- unary ops ----------------------------------------------------------------------------------

class Unary(OpDef):
    """Base of unary elementwise ops keeping the input's shape (and dtype unless ``out_dtype``)."""

    min_inputs = max_inputs = 1
    elementwise = True
    kind: ClassVar[str] = FLOAT
    out_dtype: ClassVar[DType | None] = None
    onnx_since: ClassVar[int] = 1
    flops_per_elem: ClassVar[float] = 1.0
    # attribute name -> default (both in the IR and in ONNX, where the op has attributes)
    defaults: ClassVar[dict[str, Any]] = {}

    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        if not self.defaults:
            return attrs
        d = {k: v for k, v in self.defaults.items()}
        d.update(attrs)
        for k, v in self.defaults.items():
            if isinstance(v, float):
                if isinstance(d[k], bool) or not isinstance(d[k], (int, float)):
                    raise ShapeError(f"{self.name}: attr {k} must be a number, got {d[k]!r}")
                d[k] = float(d[k])
        return Attrs(d)

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        (a,) = tensor_types(self.name, in_types)
        check_kind(self.name, a, self.kind)
        known_rank(self.name, a)
        unknown = sorted(set(attrs) - set(self.defaults))
        if unknown:
            raise ShapeError(f"{self.name}: unknown attribute(s) {unknown}")
        return (a.with_dtype(self.out_dtype) if self.out_dtype else a,)

    # semantics hooks
    def ref_np(self, x: np.ndarray, attrs: Attrs) -> Any:
        raise NotImplementedError(f"{self.name}.ref_np")

    def ref_torch(self, x: Any, attrs: Attrs) -> Any:
        raise NotImplementedError(f"{self.name}.ref_torch")

    def ref_z3(self, v: Any, attrs: Attrs) -> Any:
        raise NotImplementedError(f"{self.name}.ref_z3")

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        x = np.asarray(xs[0])
        with np.errstate(all="ignore"):
            out = np.asarray(self.ref_np(x, attrs))
        dt = self.out_dtype.to_numpy() if self.out_dtype else x.dtype
        return (out.astype(dt, copy=False),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        return (self.ref_torch(xs[0], attrs),)

    def symbolic(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        return (zmap(lambda v: lift_neg_inf(self.name, lambda x: self.z3_at(x, attrs), v),
                     xs[0]),)

    def z3_at(self, v: Any, attrs: Attrs) -> Any:
        """``ref_z3`` with IEEE's value at -inf (``value_at_neg_inf``) for masked scores."""
        if is_neg_inf(v):
            at = self.at_neg_inf(attrs)
            if at is None:
                raise NotSymbolic(f"{self.name}(-inf) is not modelled")
            if isinstance(at, bool):
                import z3

                return z3.BoolVal(at)
            return neg_inf() if at == "-inf" else real(at)
        return self.ref_z3(v, attrs)

    def at_neg_inf(self, attrs: Attrs) -> float | str | None:
        return self.value_at_neg_inf

    def cost(self, in_types: tuple[ValueType, ...], out_types: tuple[ValueType, ...],
             attrs: Attrs) -> Cost:
        b = sum(nbytes(t) for t in in_types) + sum(nbytes(t) for t in out_types)
        return Cost(self.flops_per_elem * sum(numel(t) for t in out_types), float(b), 1)

    # ONNX: one node whose attributes are ``defaults`` under the same names
    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        attrs = onnx_attrs(ctx, self.defaults)
        (x,) = onnx_inputs(ctx, 1, 1)
        return [build(ctx, self.name, [x], **attrs)]

    def to_onnx(self, ctx: Any, node: Any) -> None:
        if not self.onnx:
            raise ExportError(f"op {self.name} has no ONNX mapping")
        need_opset(ctx, self.onnx_since, self.onnx[0])
        need_type(ctx, self.onnx[0], in_type(node).dtype)
        ctx.emit(self.onnx[0], [ctx.name(node.inputs[0])], ctx.out_names(node),
                 **{k: node.attrs[k] for k in self.defaults})

    def from_aten(self, ctx: Any) -> Any:
        x = aten_tensor(ctx, aten_arg(ctx, 0, "self", None))
        if self.kind == FLOAT:
            x = aten_float(ctx, x)
        return build(ctx, self.name, [x])

    def examples(self, rng: np.random.Generator) -> list[Example]:
        x = rng.standard_normal((2, 5)).astype(np.float32)
        return [Example([x]), Example([x.astype(np.float64)]),
                Example([np.asarray(0.5, np.float32)])]


def float_examples(rng: np.random.Generator, positive: bool = False, tol: float = 1e-6,
                   symbolic: bool = True) -> list[Example]:
    x = rng.standard_normal((3, 5)).astype(np.float32) * 2
    if positive:
        x = np.abs(x) + 0.1
    x16 = x.astype(np.float16)
    return [Example([x], rtol=tol, atol=tol, symbolic=symbolic),
            Example([x.astype(np.float64)[:, :2]], symbolic=symbolic),
            Example([x16], rtol=2e-3, atol=2e-3, symbolic=symbolic)]


class NumUnary(Unary):
    """A unary op defined on ints and floats."""

    kind = NUMERIC

    def examples(self, rng: np.random.Generator) -> list[Example]:
        xi = rng.integers(-5, 6, (2, 3)).astype(np.int32)
        return float_examples(rng) + [Example([xi]), Example([xi.astype(np.int64)])]


@register
class IsNan(Unary):
    """True where x is NaN (ONNX IsNaN, aten.isnan). torch's SDPA decomposition guards its
    softmax with ``where(isnan(p), 0, p)``. In z3 it is False: the verifier's values are reals
    (NaN is an undefined original, which proofs leave out)."""

    name = "isnan"
    out_dtype = DType.bool
    value_at_neg_inf = False
    triton_format = "({0} != {0})"
    onnx = ("IsNaN",)
    aten = ("aten.isnan.default",)

    def ref_np(self, x: np.ndarray, attrs: Attrs) -> Any:
        return np.isnan(x)

    def ref_torch(self, x: Any, attrs: Attrs) -> Any:
        import torch

        return torch.isnan(x)

    def ref_z3(self, v: Any, attrs: Attrs) -> Any:
        import z3

        return z3.BoolVal(False)

    def fingerprint(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        return (np.zeros(np.shape(xs[0]), dtype=np.int64),)  # residues are never NaN

    def examples(self, rng: np.random.Generator) -> list[Example]:
        x = rng.standard_normal((3, 4)).astype(np.float32)
        x[0, 1] = np.nan
        x[2, 3] = np.inf
        return [Example([x], symbolic=False), Example([x[1:2]])]


@register
class Not(Unary):
    name = "not"
    kind = BOOL
    triton_operands = "bool"
    triton_format = "({0} == 0)"
    onnx = ("Not",)
    aten = ("aten.logical_not.default", "aten.bitwise_not.default")

    def ref_np(self, x: np.ndarray, attrs: Attrs) -> Any:
        return np.logical_not(x)

    def ref_torch(self, x: Any, attrs: Attrs) -> Any:
        import torch

        return torch.logical_not(x)

    def ref_z3(self, v: Any, attrs: Attrs) -> Any:
        import z3

        return z3.Not(v)

    def from_aten(self, ctx: Any) -> Any:
        x = aten_tensor(ctx, aten_arg(ctx, 0, "self", None))
        if ctx.target.startswith("aten.bitwise") and x.type.dtype != DType.bool:
            raise Unsupported(f"{ctx.target} on {x.type} (only bool is modeled)")
        return build(ctx, "not", [cast_to(ctx, x, DType.bool)])

    def examples(self, rng: np.random.Generator) -> list[Example]:
        return [Example([rng.integers(0, 2, (3, 4)).astype(bool)])]


@register
class Neg(NumUnary):
    name = "neg"
    exact_int = True
    triton_format = "(-{0})"
    onnx = ("Neg",)
    aten = ("aten.neg.default",)

    def ref_np(self, x: np.ndarray, attrs: Attrs) -> Any:
        return np.negative(x)

    def ref_torch(self, x: Any, attrs: Attrs) -> Any:
        return -x

    def ref_z3(self, v: Any, attrs: Attrs) -> Any:
        return -v


@register
class Abs(NumUnary):
    name = "abs"
    triton_format = "tl.abs({0})"
    onnx = ("Abs",)
    aten = ("aten.abs.default",)

    def ref_np(self, x: np.ndarray, attrs: Attrs) -> Any:
        return np.abs(x)

    def ref_torch(self, x: Any, attrs: Attrs) -> Any:
        return x.abs()

    def ref_z3(self, v: Any, attrs: Attrs) -> Any:
        return zif(v >= 0, v, -v)


class Transcendental(Unary):
    """A float function modeled in z3 by the uninterpreted function of the op's name."""

    flops_per_elem = 8.0
    np_name: ClassVar[str] = ""
    positive: ClassVar[bool] = False  # examples on positive inputs only

    def ref_np(self, x: np.ndarray, attrs: Attrs) -> Any:
        return getattr(np, self.np_name or self.name)(x)

    def ref_torch(self, x: Any, attrs: Attrs) -> Any:
        import torch

        return getattr(torch, self.name)(x)

    def ref_z3(self, v: Any, attrs: Attrs) -> Any:
        return uf(self.name)(v)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        return float_examples(rng, positive=self.positive, tol=1e-5)


@register
class Exp(Transcendental):
    name = "exp"
    value_at_neg_inf = 0.0
    axioms = (Axiom("exp_pos", "exp", 1, lambda f, x: ite(f(x) > 0, 1, 0),
                    lambda f, x: 1),)
    standin = "exp"
    triton_format = "tl.exp({0})"
    onnx = ("Exp",)
    aten = ("aten.exp.default",)


@register
class Log(Transcendental):
    name = "log"
    standin = "log"
    triton_format = "tl.log({0})"
    onnx = ("Log",)
    aten = ("aten.log.default",)
    positive = True


@register
class Sqrt(Transcendental):
    name = "sqrt"
    axioms = (Axiom("sqrt_pos", "sqrt", 1, lambda f, x: ite(f(x) > 0, 1, 0), lambda f, x: 1,
                    guard=lambda f, x: x > 0, samples=((0.25,), (1.0,), (3.0,), (1e-6,))),)
    standin = "sqrt"
    triton_format = "tl.sqrt({0})"
    onnx = ("Sqrt",)
    aten = ("aten.sqrt.default",)
    positive = True


@register
class Tanh(Transcendental):
    name = "tanh"
    value_at_neg_inf = -1.0
    standin = "tanh"
    cpu_epilogue = True
    triton_format = tl_tanh("{0}")
    onnx = ("Tanh",)
    aten = ("aten.tanh.default",)


@register
class Sin(Transcendental):
    name = "sin"
    standin = "sin"
    triton_format = "tl.sin({0})"
    onnx = ("Sin",)
    aten = ("aten.sin.default",)
    onnx_since = 7


@register
class Cos(Transcendental):
    name = "cos"
    standin = "cos"
    triton_format = "tl.cos({0})"
    onnx = ("Cos",)
    aten = ("aten.cos.default",)
    onnx_since = 7


def np_sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (1 / (1 + np.exp(-x))).astype(x.dtype, copy=False)


@register
class Sigmoid(Transcendental):
    name = "sigmoid"
    value_at_neg_inf = 0.0
    standin = "sigmoid"
    cpu_epilogue = True
    triton_format = tl_sigmoid("{0}")
    onnx = ("Sigmoid",)
    aten = ("aten.sigmoid.default",)

    def ref_np(self, x: np.ndarray, attrs: Attrs) -> Any:
        return np_sigmoid(x)


_ERF = np.frompyfunc(math.erf, 1, 1)


def np_erf(x: np.ndarray) -> np.ndarray:
    """erf computed in float64 (numpy has none), returned in float64."""
    return np.asarray(_ERF(np.asarray(x, np.float64)), dtype=np.float64)


@register
class Erf(Transcendental):
    name = "erf"
    value_at_neg_inf = -1.0
    standin = "erf"
    triton_format = "tl.erf({0})"
    onnx = ("Erf",)
    aten = ("aten.erf.default",)
    onnx_since = 9

    def ref_np(self, x: np.ndarray, attrs: Attrs) -> Any:
        return np_erf(x)


@register
class Rsqrt(Unary):
    """1 / sqrt(x); no ONNX op of its own (exported as Reciprocal(Sqrt(x)))."""

    name = "rsqrt"
    standin = "rsqrt"
    triton_format = "tl.rsqrt({0})"
    aten = ("aten.rsqrt.default",)
    onnx_missing = "no ONNX op; exported as Reciprocal(Sqrt(x))"
    flops_per_elem = 8.0

    def ref_np(self, x: np.ndarray, attrs: Attrs) -> Any:
        return 1 / np.sqrt(x)

    def ref_torch(self, x: Any, attrs: Attrs) -> Any:
        return x.rsqrt()

    def ref_z3(self, v: Any, attrs: Attrs) -> Any:
        return real(1) / uf("sqrt")(v)

    def to_onnx(self, ctx: Any, node: Any) -> None:
        s = emit1(ctx, "Sqrt", [ctx.name(node.inputs[0])])
        ctx.emit("Reciprocal", [s], ctx.out_names(node))

    def examples(self, rng: np.random.Generator) -> list[Example]:
        return float_examples(rng, positive=True, tol=1e-5)


@register
class Reciprocal(Unary):
    name = "reciprocal"
    triton_format = "(1.0 / {0})"
    onnx = ("Reciprocal",)
    aten = ("aten.reciprocal.default",)

    def ref_np(self, x: np.ndarray, attrs: Attrs) -> Any:
        return 1 / x

    def ref_torch(self, x: Any, attrs: Attrs) -> Any:
        return x.reciprocal()

    def ref_z3(self, v: Any, attrs: Attrs) -> Any:
        return real(1) / v

    def fingerprint(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        return (residues.inverse(xs[0]),)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        return float_examples(rng, positive=True, tol=1e-5)


@register
class Relu(NumUnary):
    name = "relu"
    value_at_neg_inf = 0.0
    ordered = True
    cpu_epilogue = True
    triton_format = "tl.maximum({0}, 0.0)"
    axioms = (Axiom("relu_def", "relu", 1, lambda f, x: f(x),
                    lambda f, x: ite(x > 0, x, 0 * x)),)
    onnx = ("Relu",)
    aten = ("aten.relu.default",)

    def ref_np(self, x: np.ndarray, attrs: Attrs) -> Any:
        return np.maximum(x, np.zeros((), x.dtype))

    def ref_torch(self, x: Any, attrs: Attrs) -> Any:
        import torch

        return torch.relu(x)

    def ref_z3(self, v: Any, attrs: Attrs) -> Any:
        return uf("relu")(v)

    def to_onnx(self, ctx: Any, node: Any) -> None:
        t = in_type(node)
        if not onnx_type_ok("Relu", ctx.opset, t.dtype):  # ints from opset 14, no uints
            need_opset(ctx, 8, "Max with broadcasting")
            need_type(ctx, "Max", t.dtype)
            ctx.emit("Max", [ctx.name(node.inputs[0]), const_of(ctx, 0, t.dtype)],
                     ctx.out_names(node))
            return
        super().to_onnx(ctx, node)


class Rounding(Unary):
    """floor / ceil / round: float only in ONNX; torch returns integer inputs unchanged."""

    def from_aten(self, ctx: Any) -> Any:
        x = aten_tensor(ctx, aten_arg(ctx, 0, "self", None))
        if ctx.kwargs.get("decimals", 0) != 0 or len(ctx.args) > 1:
            raise Unsupported(f"{ctx.target} with decimals")
        if not x.type.dtype.is_float:
            return build(ctx, "identity", [x])
        return build(ctx, self.name, [x])

    def examples(self, rng: np.random.Generator) -> list[Example]:
        x = np.asarray([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, -1.2, 3.7], np.float32)
        return float_examples(rng) + [Example([x]), Example([x.astype(np.float16)])]


@register
class Floor(Rounding):
    name = "floor"
    triton_format = "tl.floor({0})"
    onnx = ("Floor",)
    aten = ("aten.floor.default",)

    def ref_np(self, x: np.ndarray, attrs: Attrs) -> Any:
        return np.floor(x)

    def ref_torch(self, x: Any, attrs: Attrs) -> Any:
        return x.floor()

    def ref_z3(self, v: Any, attrs: Attrs) -> Any:
        return z_floor(v)


@register
class Ceil(Rounding):
    name = "ceil"
    triton_format = "tl.ceil({0})"
    onnx = ("Ceil",)
    aten = ("aten.ceil.default",)

    def ref_np(self, x: np.ndarray, attrs: Attrs) -> Any:
        return np.ceil(x)

    def ref_torch(self, x: Any, attrs: Attrs) -> Any:
        return x.ceil()

    def ref_z3(self, v: Any, attrs: Attrs) -> Any:
        return -z_floor(-v)


@register
class Round(Rounding):
    """Round half to even (ONNX Round, numpy.round, torch.round)."""

    name = "round"
    triton_missing = "round half to even has no tl builtin (libdevice.rint is not used)"
    onnx = ("Round",)
    aten = ("aten.round.default",)
    onnx_since = 11

    def ref_np(self, x: np.ndarray, attrs: Attrs) -> Any:
        return np.round(x)

    def ref_torch(self, x: Any, attrs: Attrs) -> Any:
        return x.round()

    def ref_z3(self, v: Any, attrs: Attrs) -> Any:
        import z3

        f = z_floor(v)
        d = v - f
        if isinstance(f, float):
            even = int(f) % 2 == 0
        else:
            even = z3.ToInt(f) % 2 == 0
        return zif(d < 0.5, f, zif(d > 0.5, f + 1, zif(even, f, f + 1)))


@register
class Sign(NumUnary):
    name = "sign"
    triton_format = "tl.where({0} > 0.0, 1.0, tl.where({0} < 0.0, -1.0, 0.0 * {0}))"
    onnx = ("Sign",)
    aten = ("aten.sign.default",)
    onnx_since = 9

    def ref_np(self, x: np.ndarray, attrs: Attrs) -> Any:
        return np.sign(x)

    def ref_torch(self, x: Any, attrs: Attrs) -> Any:
        return x.sign()

    def ref_z3(self, v: Any, attrs: Attrs) -> Any:
        one, zero = (1, 0) if is_int_term(v) else (real(1), real(0))
        return zif(v > 0, one, zif(v < 0, -one, zero))


@register
class Silu(Unary):
    """x * sigmoid(x). Imported from ONNX Swish (opset 24; alpha != 1 becomes the composition
    x * sigmoid(alpha x)); exported as Mul(x, Sigmoid(x)) at every opset, Swish-24 included: ONNX
    Runtime 1.32 fuses that pair into its QuickGelu kernel, while it expands Swish's function
    body (Cast, Mul, Sigmoid, Mul) and runs it ~2.5x slower (docs/fusions.md)."""

    name = "silu"
    standin = "silu"
    cpu_epilogue = True
    triton_format = "({0} * " + tl_sigmoid("{0}") + ")"
    onnx = ("Swish",)
    aten = ("aten.silu.default",)
    flops_per_elem = 9.0

    def ref_np(self, x: np.ndarray, attrs: Attrs) -> Any:
        return x * np_sigmoid(x)

    def ref_torch(self, x: Any, attrs: Attrs) -> Any:
        import torch

        return torch.nn.functional.silu(x)

    def ref_z3(self, v: Any, attrs: Attrs) -> Any:
        return v * uf("sigmoid")(v)

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        alpha = float(onnx_attrs(ctx, {"alpha": 1.0})["alpha"])
        (x,) = onnx_inputs(ctx, 1, 1)
        if alpha == 1.0:
            return [build(ctx, "silu", [x])]
        # Swish's function body: x * Sigmoid(CastLike(alpha, x) * x)
        dt = x.type.dtype
        try:
            a = ctx.constant(np.asarray(alpha, dtype=dt.to_numpy()))
        except TypeError:  # bf16: numpy has no such dtype
            a = build(ctx, "cast", [ctx.constant(np.asarray(alpha, np.float32))], to=dt)
        return [build(ctx, "mul", [x, build(ctx, "sigmoid", [build(ctx, "mul", [x, a])])])]

    def to_onnx(self, ctx: Any, node: Any) -> None:
        x = ctx.name(node.inputs[0])
        ctx.emit("Mul", [x, emit1(ctx, "Sigmoid", [x])], ctx.out_names(node))

    def examples(self, rng: np.random.Generator) -> list[Example]:
        return float_examples(rng, tol=1e-5)


@register
class Softplus(Transcendental):
    """log(1 + exp(x)) (ONNX Softplus; torch's threshold=20 linearization only differs below
    float32 resolution)."""

    name = "softplus"
    standin = "softplus"
    # logaddexp(0, a) = max(a, 0) + log(1 + exp(-|a|))
    triton_format = "(tl.maximum({0}, 0.0) + tl.log(1.0 + tl.exp(-tl.abs({0}))))"
    onnx = ("Softplus",)
    aten = ("aten.softplus.default",)

    def ref_np(self, x: np.ndarray, attrs: Attrs) -> Any:
        return np.logaddexp(np.zeros((), x.dtype), x)

    def ref_torch(self, x: Any, attrs: Attrs) -> Any:
        import torch

        return torch.logaddexp(x, torch.zeros((), dtype=x.dtype))

    def from_aten(self, ctx: Any) -> Any:
        beta = aten_arg(ctx, 1, "beta", 1)
        threshold = aten_arg(ctx, 2, "threshold", 20)
        if beta != 1 or threshold != 20:
            raise Unsupported(f"{ctx.target}: beta={beta}, threshold={threshold}")
        return super().from_aten(ctx)


@register
class Identity(Unary):
    name = "identity"
    value_at_neg_inf = "-inf"
    cost_class = "view"
    exact_int = True
    index_pass_through = True
    triton_format = "{0}"
    kind = ANY
    onnx = ("Identity",)
    aten = ("aten.clone.default", "aten.alias.default", "aten.detach.default",
            "aten.lift_fresh_copy.default")
    flops_per_elem = 0.0

    def ref_np(self, x: np.ndarray, attrs: Attrs) -> Any:
        return x

    def ref_torch(self, x: Any, attrs: Attrs) -> Any:
        return x

    def ref_z3(self, v: Any, attrs: Attrs) -> Any:
        return v

    def examples(self, rng: np.random.Generator) -> list[Example]:
        return [Example([rng.standard_normal((2, 3)).astype(np.float32)]),
                Example([rng.integers(0, 2, (4,)).astype(bool)]),
                Example([rng.integers(0, 9, (1, 2, 1)).astype(np.int64)])]


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def np_gelu(x: np.ndarray, approximate: str) -> np.ndarray:
    x64 = np.asarray(x, np.float64)
    if approximate == "tanh":
        y = 0.5 * x64 * (1 + np.tanh(_SQRT_2_OVER_PI * (x64 + 0.044715 * x64 ** 3)))
    else:
        y = 0.5 * x64 * (1 + np_erf(x64 / math.sqrt(2.0)))
    return y.astype(x.dtype)


@register
class Gelu(Unary):
    """GELU, exact (erf) or tanh approximation; ONNX Gelu from opset 20, a composition below."""

    name = "gelu"
    standin = "gelu"
    cpu_epilogue = True
    onnx_min_opset = 20
    onnx = ("Gelu",)
    aten = ("aten.gelu.default",)
    defaults = {"approximate": "none"}
    flops_per_elem = 12.0
    # gelu_k3: the tanh form's cubic coefficient 0.044715 (named: graphs hold it rounded)
    symbolic_constants = {"sqrt(2)": math.sqrt(2.0), "1/sqrt(2)": 1.0 / math.sqrt(2.0),
                          "sqrt(2/pi)": math.sqrt(2.0 / math.pi), "gelu_k3": 0.044715,
                          "sqrt(2/pi)*gelu_k3": math.sqrt(2.0 / math.pi) * 0.044715}
    value_at_neg_inf = 0.0

    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        a = super().normalize_attrs(in_types, attrs)
        if a["approximate"] not in ("none", "tanh"):
            raise ShapeError(f"gelu: approximate must be 'none' or 'tanh', got "
                             f"{a['approximate']!r}")
        return a

    def ref_np(self, x: np.ndarray, attrs: Attrs) -> Any:
        return np_gelu(x, attrs["approximate"])

    def ref_torch(self, x: Any, attrs: Attrs) -> Any:
        import torch

        return torch.nn.functional.gelu(x, approximate=attrs["approximate"])

    def ref_z3(self, v: Any, attrs: Attrs) -> Any:
        """The defining composition, over erf / tanh and the named constants (so the fusion
        rules are proven against it): 0.5 x (1 + erf(x / sqrt 2)), or the tanh form."""
        from .symbolic import named_constant

        x = real(v)
        if attrs["approximate"] == "none":
            inner = uf("erf")(x * named_constant("1/sqrt(2)"))
        else:
            k3 = named_constant("gelu_k3")
            inner = uf("tanh")(named_constant("sqrt(2/pi)") * (x + k3 * x * x * x))
        return real(0.5) * x * (1 + inner)

    def triton_expr(self, xs: Sequence[str], node: Node) -> str:
        a = xs[0]
        if node.attrs["approximate"] == "tanh":
            inner = f"0.7978845608028654 * ({a} + 0.044715 * {a} * {a} * {a})"
            return f"(0.5 * {a} * (1.0 + {tl_tanh(inner)}))"
        return f"(0.5 * {a} * (1.0 + tl.erf({a} * 0.7071067811865476)))"

    def to_onnx(self, ctx: Any, node: Any) -> None:
        if ctx.opset >= 20:
            return super().to_onnx(ctx, node)
        dt = in_type(node).dtype
        x = ctx.name(node.inputs[0])
        if node.attrs["approximate"] == "tanh":
            # 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))
            x3 = emit1(ctx, "Mul", [emit1(ctx, "Mul", [x, x]), x])
            inner = emit1(ctx, "Add", [x, emit1(ctx, "Mul", [x3, const_of(ctx, 0.044715, dt)])])
            t = emit1(ctx, "Tanh", [emit1(ctx, "Mul", [inner, const_of(ctx, _SQRT_2_OVER_PI,
                                                                          dt)])])
        else:
            # 0.5 * x * (1 + erf(x / sqrt(2)))
            need_opset(ctx, 9, "Gelu as Erf composition")
            t = emit1(ctx, "Erf", [emit1(ctx, "Mul", [x, const_of(ctx, 1 / math.sqrt(2.0), dt)])])
        one_t = emit1(ctx, "Add", [t, const_of(ctx, 1.0, dt)])
        half_x = emit1(ctx, "Mul", [x, const_of(ctx, 0.5, dt)])
        ctx.emit("Mul", [half_x, one_t], ctx.out_names(node))

    def from_aten(self, ctx: Any) -> Any:
        x = aten_float(ctx, aten_tensor(ctx, aten_arg(ctx, 0, "self", None)))
        approx = aten_arg(ctx, 1, "approximate", "none")
        return build(ctx, "gelu", [x], approximate=approx)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        x = rng.standard_normal((3, 5)).astype(np.float32) * 2
        return [Example([x], {"approximate": a}, rtol=1e-5, atol=1e-5) for a in ("none", "tanh")] \
            + [Example([x.astype(np.float16)], {"approximate": "tanh"}, rtol=2e-3, atol=2e-3)]


@register
class LeakyRelu(Unary):
    name = "leaky_relu"
    cpu_epilogue = True
    onnx = ("LeakyRelu",)
    aten = ("aten.leaky_relu.default",)
    defaults = {"alpha": 0.01}

    def ref_np(self, x: np.ndarray, attrs: Attrs) -> Any:
        return np.where(x >= 0, x, x * x.dtype.type(attrs["alpha"]))

    def ref_torch(self, x: Any, attrs: Attrs) -> Any:
        import torch

        return torch.nn.functional.leaky_relu(x, attrs["alpha"])

    def ref_z3(self, v: Any, attrs: Attrs) -> Any:
        return zif(v >= 0, v, real(attrs["alpha"]) * v)

    def triton_expr(self, xs: Sequence[str], node: Node) -> str:
        a = xs[0]
        return f"tl.where({a} >= 0.0, {a}, {triton_literal(node.attrs['alpha'])} * {a})"

    def from_aten(self, ctx: Any) -> Any:
        x = aten_float(ctx, aten_tensor(ctx, aten_arg(ctx, 0, "self", None)))
        return build(ctx, self.name, [x], alpha=float(aten_arg(ctx, 1, "negative_slope", 0.01)))

    def examples(self, rng: np.random.Generator) -> list[Example]:
        x = rng.standard_normal((3, 5)).astype(np.float32)
        return [Example([x]), Example([x], {"alpha": 0.2})]


@register
class Elu(Transcendental):
    name = "elu"
    onnx = ("Elu",)
    aten = ("aten.elu.default",)
    defaults = {"alpha": 1.0}

    def ref_np(self, x: np.ndarray, attrs: Attrs) -> Any:
        return np.where(x > 0, x, x.dtype.type(attrs["alpha"]) * np.expm1(x))

    def ref_torch(self, x: Any, attrs: Attrs) -> Any:
        import torch

        return torch.nn.functional.elu(x, attrs["alpha"])

    def ref_z3(self, v: Any, attrs: Attrs) -> Any:
        return zif(v > 0, v, real(attrs["alpha"]) * (uf("exp")(v) - 1))

    def triton_expr(self, xs: Sequence[str], node: Node) -> str:
        a = xs[0]
        return (f"tl.where({a} > 0.0, {a}, "
                f"{triton_literal(node.attrs['alpha'])} * (tl.exp({a}) - 1.0))")

    def from_aten(self, ctx: Any) -> Any:
        x = aten_float(ctx, aten_tensor(ctx, aten_arg(ctx, 0, "self", None)))
        alpha = aten_arg(ctx, 1, "alpha", 1.0)
        scale = aten_arg(ctx, 2, "scale", 1.0)
        input_scale = aten_arg(ctx, 3, "input_scale", 1.0)
        if scale != 1 or input_scale != 1:
            raise Unsupported(f"{ctx.target}: scale={scale}, input_scale={input_scale}")
        return build(ctx, self.name, [x], alpha=float(alpha))

    def examples(self, rng: np.random.Generator) -> list[Example]:
        x = rng.standard_normal((3, 5)).astype(np.float32)
        return [Example([x], rtol=1e-5, atol=1e-6), Example([x], {"alpha": 0.5}, rtol=1e-5)]


@register
class HardSigmoid(Unary):
    """max(0, min(1, alpha * x + beta)); torch's hardsigmoid is alpha=1/6, beta=0.5."""

    name = "hard_sigmoid"
    cpu_epilogue = True
    onnx = ("HardSigmoid",)
    aten = ("aten.hardsigmoid.default",)
    defaults = {"alpha": 0.2, "beta": 0.5}
    onnx_since = 6
    flops_per_elem = 4.0

    def ref_np(self, x: np.ndarray, attrs: Attrs) -> Any:
        t = x.dtype.type
        return np.clip(x * t(attrs["alpha"]) + t(attrs["beta"]), t(0), t(1))

    def ref_torch(self, x: Any, attrs: Attrs) -> Any:
        return (x * attrs["alpha"] + attrs["beta"]).clamp(0, 1)

    def ref_z3(self, v: Any, attrs: Attrs) -> Any:
        y = real(attrs["alpha"]) * v + real(attrs["beta"])
        y = zif(y < 0, real(0), y)
        return zif(y > 1, real(1), y)

    def triton_expr(self, xs: Sequence[str], node: Node) -> str:
        alpha, beta = (triton_literal(node.attrs[k]) for k in ("alpha", "beta"))
        return f"tl.minimum(tl.maximum({alpha} * {xs[0]} + {beta}, 0.0), 1.0)"

    def from_aten(self, ctx: Any) -> Any:
        x = aten_float(ctx, aten_tensor(ctx, aten_arg(ctx, 0, "self", None)))
        return build(ctx, self.name, [x], alpha=1.0 / 6.0, beta=0.5)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        x = rng.standard_normal((3, 5)).astype(np.float32) * 4
        return [Example([x]), Example([x], {"alpha": 1 / 6, "beta": 0.5})]


@register
class Clip(Unary):
    """min(max(x, min), max) with constant bounds (None: unbounded); min > max gives max."""

    name = "clip"
    cpu_epilogue = True
    kind = NUMERIC
    onnx = ("Clip",)
    aten = ("aten.clamp.default", "aten.clamp_min.default", "aten.clamp_max.default",
            "aten.hardtanh.default")
    defaults = {"min": None, "max": None}
    flops_per_elem = 2.0

    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        d: dict[str, Any] = {"min": None, "max": None}
        d.update(attrs)
        t = in_types[0] if in_types else None
        is_int = isinstance(t, TensorType) and not t.dtype.is_float
        for k in ("min", "max"):
            v = d[k]
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
                raise ShapeError(f"clip: {k} must be a number or None, got {v!r}")
            if math.isinf(v) and (v < 0) == (k == "min"):
                d[k] = None  # an infinite bound on its own side bounds nothing
            elif is_int:
                if v != int(v):
                    raise ShapeError(f"clip: {k}={v} is not an integer for input {t}")
                d[k] = int(v)
            else:
                d[k] = float(v)
        return Attrs(d)

    def ref_np(self, x: np.ndarray, attrs: Attrs) -> Any:
        t = x.dtype.type
        y = x
        if attrs["min"] is not None:
            y = np.maximum(y, t(attrs["min"]))
        if attrs["max"] is not None:
            y = np.minimum(y, t(attrs["max"]))
        return y

    def ref_torch(self, x: Any, attrs: Attrs) -> Any:
        import torch

        y = x
        if attrs["min"] is not None:
            y = torch.clamp_min(y, attrs["min"])
        if attrs["max"] is not None:
            y = torch.clamp_max(y, attrs["max"])
        return y

    def ref_z3(self, v: Any, attrs: Attrs) -> Any:
        y = v
        lo, hi = attrs["min"], attrs["max"]
        if lo is not None:
            y = zif(y < lo, lo if is_int_term(v) else real(lo), y)
        if hi is not None:
            y = zif(y > hi, hi if is_int_term(v) else real(hi), y)
        return y

    def triton_expr(self, xs: Sequence[str], node: Node) -> str:
        y = xs[0]
        if node.attrs.get("min") is not None:
            y = f"tl.maximum({y}, {triton_literal(node.attrs['min'])})"
        if node.attrs.get("max") is not None:
            y = f"tl.minimum({y}, {triton_literal(node.attrs['max'])})"
        return y

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        if ctx.opset < 11:
            a = onnx_attrs(ctx, {"min": None, "max": None})
            (x,) = onnx_inputs(ctx, 1, 1)
            lo, hi = a["min"], a["max"]  # absent: unbounded (opset 6 defaults to the limits)
        else:
            onnx_attrs(ctx, {})
            x, lo_v, hi_v = onnx_inputs(ctx, 1, 3)
            lo = hi = None
            for i, v in ((1, lo_v), (2, hi_v)):
                if v is None:
                    continue
                c = ctx.const(i)
                if c is None:
                    raise Unsupported(f"Clip: bound input {i} is not a constant")
                c = np.asarray(c)
                if c.size != 1 or c.dtype != x.type.dtype.to_numpy():
                    raise Unsupported(f"Clip: bound input {i} is {c.dtype}{list(c.shape)}")
                val = c.reshape(()).item()
                if isinstance(val, float) and math.isnan(val):
                    raise Unsupported("Clip: NaN bound")
                if i == 1:
                    lo = val
                else:
                    hi = val
        return [build(ctx, "clip", [x], min=lo, max=hi)]

    def to_onnx(self, ctx: Any, node: Any) -> None:
        t = in_type(node)
        x = ctx.name(node.inputs[0])
        lo, hi = node.attrs["min"], node.attrs["max"]
        if ctx.opset >= 11:
            if not t.dtype.is_float:
                need_opset(ctx, 12, "Clip on integers")
            need_type(ctx, "Clip", t.dtype)
            ins = [x, const_of(ctx, lo, t.dtype) if lo is not None else "",
                   const_of(ctx, hi, t.dtype) if hi is not None else ""]
            while ins[-1] == "":
                ins.pop()
            ctx.emit("Clip", ins, ctx.out_names(node))
            return
        if not t.dtype.is_float:
            raise ExportError(f"Clip on {t.dtype.value} needs ONNX opset 12, "
                              f"exporting at opset {ctx.opset}")
        attrs = {}
        if lo is not None:
            attrs["min"] = float(lo)
        if hi is not None:
            attrs["max"] = float(hi)
        ctx.emit("Clip", [x], ctx.out_names(node), **attrs)

    def from_aten(self, ctx: Any) -> Any:
        x = aten_tensor(ctx, aten_arg(ctx, 0, "self", None))
        t = ctx.target
        if t == "aten.hardtanh.default":
            lo, hi = aten_arg(ctx, 1, "min_val", -1.0), aten_arg(ctx, 2, "max_val", 1.0)
        elif t == "aten.clamp_min.default":
            lo, hi = aten_arg(ctx, 1, "min", None), None
        elif t == "aten.clamp_max.default":
            lo, hi = None, aten_arg(ctx, 1, "max", None)
        else:
            lo, hi = aten_arg(ctx, 1, "min", None), aten_arg(ctx, 2, "max", None)
        for b in (lo, hi):
            if b is not None and not isinstance(b, (int, float)):
                raise Unsupported(f"{t}: bound {b!r} is not a number")
            if isinstance(b, bool):
                raise Unsupported(f"{t}: bool bound")
        if not x.type.dtype.is_float and any(isinstance(b, float) for b in (lo, hi)):
            raise Unsupported(f"{t}: float bound on {x.type} promotes")
        return build(ctx, "clip", [x], min=lo, max=hi)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        x = rng.standard_normal((3, 5)).astype(np.float32)
        xi = rng.integers(-9, 9, (2, 6)).astype(np.int64)
        return [Example([x], {"min": -0.5, "max": 0.5}), Example([x], {"min": 0.0}),
                Example([x], {"max": 0.25}), Example([x], {"min": 1.0, "max": -1.0}),
                Example([xi], {"min": -3, "max": 4}), Example([x.astype(np.float16)],
                                                             {"min": -1.0, "max": 1.0})]


# ONNX (opset 1-5) spelled Cast's target as a string
_ONNX_CAST_NAMES = {"FLOAT": DType.f32, "FLOAT16": DType.f16, "DOUBLE": DType.f64,
                    "INT8": DType.i8, "INT16": DType.i16, "INT32": DType.i32, "INT64": DType.i64,
                    "UINT8": DType.u8, "UINT16": DType.u16, "UINT32": DType.u32,
                    "UINT64": DType.u64, "BOOL": DType.bool, "UINT4": DType.u4,
                    "INT4": DType.i4}


# float types whose every value the key's values are exactly representable in
_FLOAT_HOLDS = {DType.f16: (DType.f16, DType.f32, DType.f64),
                DType.bf16: (DType.bf16, DType.f32, DType.f64),
                DType.f32: (DType.f32, DType.f64), DType.f64: (DType.f64,)}


@register
class Cast(Unary):
    """Convert to dtype ``to``: float -> int truncates, anything -> bool is ``!= 0``, an
    integer out of the target's range keeps its low bits (u4 / i4 too: 17 -> u4 1, 8 -> i4 -8)."""

    name = "cast"
    index_pass_through = True
    triton_operands = None
    kind = ANY
    onnx = ("Cast",)
    aten = ("aten._to_copy.default",)
    defaults = {"to": None}
    flops_per_elem = 0.0

    def normalize_attrs(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> Attrs:
        to = attrs.get("to")
        if isinstance(to, str):
            try:
                to = DType(to)
            except ValueError:
                raise ShapeError(f"cast: unknown dtype {to!r}") from None
        if not isinstance(to, DType):
            raise ShapeError(f"cast: attr 'to' must be a DType, got {to!r}")
        return attrs.replace(to=to)

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        (a,) = tensor_types(self.name, in_types)
        known_rank(self.name, a)
        for d in (a.dtype, attrs["to"]):
            if not (d in FLOATS or d in INTS or d in INT4_RANGE or d == DType.bool):
                raise ShapeError(f"cast: dtype {d.value} not modeled (input {a})")
        return (a.with_dtype(attrs["to"]),)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        x, to = np.asarray(xs[0]), attrs["to"]
        with np.errstate(all="ignore"):
            if to in INT4_RANGE and x.dtype.kind in "fb":  # truncated first, as to other ints
                x = x.astype(np.int64)
            return (x.astype(to.to_numpy()),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        to = attrs["to"]
        if to in INT4_RANGE:
            return (torch_to_int4(xs[0], to),)
        return (torch_int4_values(xs[0]).to(to.to_torch()),)

    def symbolic_typed(self, xs: Sequence[np.ndarray], attrs: Attrs,
                       in_types: Sequence[ValueType]) -> tuple[np.ndarray, ...]:
        """A cast to a float type holding every value of the source float type is exact."""
        src = in_types[0].dtype if in_types and isinstance(in_types[0], TensorType) else None
        if src is not None and attrs["to"] in _FLOAT_HOLDS.get(src, ()):
            return (np.asarray(xs[0], dtype=object),)
        return self.symbolic(xs, attrs)

    def ref_z3(self, v: Any, attrs: Attrs) -> Any:
        to: DType = attrs["to"]
        if is_bool_term(v):
            if to == DType.bool:
                return v
            return zif(v, 1, 0) if to.is_int else zif(v, real(1), real(0))
        if to == DType.bool:
            return v != 0
        if is_int_term(v):
            if to.is_float:
                return real(v)
            if to == DType.i64:
                return v
            raise NotSymbolic(f"cast to {to.value} may wrap around")
        if to.is_int:
            raise NotSymbolic(f"cast of a float to {to.value}")
        if to == DType.f64:
            return v  # widening to f64 is exact from every float type
        return uf(f"round_{to.value}")(v)  # rounding to a narrower type (or a no-op)

    def triton_expr(self, xs: Sequence[str], node: Node) -> str:
        src, dst = in_type(node).dtype, node.attrs["to"]
        if src.is_float and dst.is_float:
            return xs[0]  # the rounding to dst happens where the kernel stores or rounds
        if src == DType.bool and dst.is_float:
            return f"tl.where({xs[0]}, 1.0, 0.0)"
        if src.is_float and dst == DType.bool:
            return f"({xs[0]} != 0.0)"
        raise NotGenerated("unsupported form (cast)")

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        a = onnx_attrs(ctx, {"to": None, "saturate": 1, "round_mode": "up"})
        (x,) = onnx_inputs(ctx, 1, 1)
        to = a["to"]
        try:
            dt = _ONNX_CAST_NAMES[to] if isinstance(to, (str, bytes)) and not isinstance(
                to, int) else DType.from_onnx(int(to))
        except (KeyError, TypeError, ValueError) as e:
            raise Unsupported(f"Cast to {to!r}: {e}") from None
        # saturate and round_mode only concern float8 / float4 targets, which are not modeled
        return [build(ctx, "cast", [x], to=dt)]

    def to_onnx(self, ctx: Any, node: Any) -> None:
        src, to = in_type(node).dtype, node.attrs["to"]
        x = ctx.name(node.inputs[0])
        if src in INT4_RANGE or to in INT4_RANGE:
            need_opset(ctx, 21, f"Cast from {src.value} to {to.value}")
            if to in INT4_RANGE and not src.is_int:  # ONNX Runtime rounds floats to 4 bits
                x = emit1(ctx, "Cast", [x], to=DType.i32.to_onnx())
        ctx.emit("Cast", [x], ctx.out_names(node), to=to.to_onnx())

    def from_aten(self, ctx: Any) -> Any:
        x = aten_tensor(ctx, aten_arg(ctx, 0, "self", None))
        extra = set(ctx.kwargs) - {"dtype", "layout", "device", "pin_memory", "non_blocking",
                                   "memory_format"}
        if extra or len(ctx.args) > 1:
            raise Unsupported(f"{ctx.target}: arguments {sorted(extra)} / {ctx.args[1:]}")
        dt = ctx.kwargs.get("dtype")
        if dt is None:  # a device / layout / memory-format copy
            return build(ctx, "identity", [x])
        try:
            to = DType.from_torch(dt)
        except TypeError as e:
            raise Unsupported(f"{ctx.target}: {e}") from None
        return build(ctx, "cast", [x], to=to)

    def examples(self, rng: np.random.Generator) -> list[Example]:
        x = (rng.standard_normal((3, 4)) * 4).astype(np.float32)
        xi = rng.integers(-3, 4, (2, 3)).astype(np.int64)
        b = rng.integers(0, 2, (5,)).astype(bool)
        return [Example([x], {"to": DType.f16}, rtol=1e-3, atol=1e-3),
                Example([x], {"to": DType.f64}),
                Example([x], {"to": DType.i32}, symbolic=False),
                Example([x], {"to": DType.bool}),
                Example([xi], {"to": DType.f32}), Example([xi], {"to": DType.i32},
                                                          symbolic=False),
                Example([b], {"to": DType.f32}), Example([b], {"to": DType.i64})]


@register
class Where(OpDef):
    """cond ? a : b with numpy broadcasting of all three."""

    name = "where"
    triton_operands = None
    min_inputs = max_inputs = 3
    elementwise = True
    value_inputs = (1, 2)
    onnx = ("Where",)
    aten = ("aten.where.self",)

    def infer(self, in_types: tuple[ValueType, ...], attrs: Attrs) -> tuple[ValueType, ...]:
        c, a, b = tensor_types(self.name, in_types)
        if c.dtype != DType.bool:
            raise ShapeError(f"where: condition must be bool, got {c}")
        dt = same_dtype(self.name, [a, b])
        for t in (c, a, b):
            known_rank(self.name, t)
        return (TensorType(broadcast_shapes(self.name, c.shape, a.shape, b.shape), dt),)

    def numpy(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        a, b = np.asarray(xs[1]), np.asarray(xs[2])
        dt = np.result_type(a, b)  # one dtype in a typed graph; the wider when fed otherwise
        return (np.asarray(np.where(xs[0], a, b)).astype(dt, copy=False),)

    def torch(self, xs: Sequence[Any], attrs: Attrs) -> tuple[Any, ...]:
        import torch

        return (torch.where(xs[0], xs[1], xs[2]),)

    def symbolic(self, xs: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, ...]:
        return (zmap(zif, xs[0], xs[1], xs[2]),)

    def triton_expr(self, xs: Sequence[str], node: Node) -> str:
        if in_type(node, 0).dtype != DType.bool or not in_type(node, 1).dtype.is_float:
            raise NotGenerated("needs a bool condition and float branches")
        return f"tl.where({xs[0]}, {xs[1]}, {xs[2]})"

    def from_onnx(self, ctx: Any) -> Sequence[Any]:
        onnx_attrs(ctx, {})
        c, a, b = onnx_inputs(ctx, 3, 3)
        same_dtypes(ctx, [a, b])
        return [build(ctx, "where", [c, a, b])]

    def to_onnx(self, ctx: Any, node: Any) -> None:
        need_opset(ctx, 9, "Where")
        need_type(ctx, "Where", in_type(node, 1).dtype, 1)
        ctx.emit("Where", [ctx.name(v) for v in node.inputs], ctx.out_names(node))

    def from_aten(self, ctx: Any) -> Any:
        c = aten_tensor(ctx, aten_arg(ctx, 0, "condition", None), "condition")
        a, b = aten_arg(ctx, 1, "self", None), aten_arg(ctx, 2, "other", None)
        x, y = aten_operands(ctx, [a, b])
        return build(ctx, "where", [cast_to(ctx, c, DType.bool), x, y])

    def examples(self, rng: np.random.Generator) -> list[Example]:
        c = rng.integers(0, 2, (2, 3, 4)).astype(bool)
        a = rng.standard_normal((3, 4)).astype(np.float32)
        b = rng.standard_normal((2, 1, 1)).astype(np.float32)
        ai = rng.integers(-5, 5, (4,)).astype(np.int64)
        return [Example([c, a, b]), Example([c[0, 0], ai, ai[::-1]]),
                Example([np.asarray(True), a, a[::-1]])]
