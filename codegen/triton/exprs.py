"""Triton expressions for pointwise IR ops: one small emitter per op, over fp32 / bool operands.

Each emitter takes the operand expressions (strings naming fp32 values, or bool for predicates)
and the node, and returns the source text of the result. Float values are computed in fp32 (like
TorchInductor); a node whose result dtype is narrower rounds through it (``.to(f16).to(f32)``)
so a fused chain rounds where the eager chain would. Only builtins of ``triton.language`` are
used (no ``@jit`` library helpers such as ``tl.sigmoid``), so kernels run the same on a GPU and in
the interpreter.

``fusible(node)`` says whether a node can live inside a generated kernel, and if not why.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from graphopt.ir.node import Node, Value
from graphopt.ir.types import DType, TensorType

# dtypes a kernel may load, compute on and store
KERNEL_DTYPES = frozenset({DType.f16, DType.bf16, DType.f32, DType.bool})
FLOATS = frozenset({DType.f16, DType.bf16, DType.f32})
TL_DTYPE = {DType.f16: "tl.float16", DType.bf16: "tl.bfloat16", DType.f32: "tl.float32",
            DType.bool: "tl.int1"}

Emit = Callable[[list[str], Node], str]


def scalar_constant(v: Value) -> float | None:
    """The value of a finite one-element float constant (inlined into kernels), else None."""
    n = v.node
    if n.op != "constant" or not n.const.has_array:
        return None
    t = n.out_types[0]
    if not isinstance(t, TensorType) or t.dtype not in FLOATS or n.const.dtype not in FLOATS:
        return None
    arr = np.asarray(n.const.array)
    if arr.size != 1:
        return None
    x = float(arr.reshape(-1)[0])
    return x if math.isfinite(x) else None


def literal(x: float) -> str:
    """A float literal Triton parses (repr keeps every bit of an f32/f16 value)."""
    return repr(float(x))


def _sigmoid(a: str) -> str:
    return f"(1.0 / (1.0 + tl.exp(-({a}))))"


def _tanh(a: str) -> str:
    # 1 - 2 / (exp(2a) + 1): exact limits at +-inf, no overflow to nan
    return f"(1.0 - 2.0 / (tl.exp(2.0 * ({a})) + 1.0))"


def _pow(xs: list[str], n: Node) -> str:
    e = scalar_constant(n.inputs[1])
    a = xs[0]
    table = {1.0: f"({a})", 2.0: f"({a} * {a})", 3.0: f"({a} * {a} * {a})",
             4.0: f"(({a} * {a}) * ({a} * {a}))", 0.5: f"tl.sqrt({a})",
             -1.0: f"(1.0 / {a})", -0.5: f"tl.rsqrt({a})", -2.0: f"(1.0 / ({a} * {a}))"}
    if e is None or e not in table:
        raise KeyError("pow exponent")
    return table[e]


def _clip(xs: list[str], n: Node) -> str:
    y = xs[0]
    if n.attrs.get("min") is not None:
        y = f"tl.maximum({y}, {literal(n.attrs['min'])})"
    if n.attrs.get("max") is not None:
        y = f"tl.minimum({y}, {literal(n.attrs['max'])})"
    return y


def _gelu(xs: list[str], n: Node) -> str:
    a = xs[0]
    if n.attrs.get("approximate", "none") == "tanh":
        inner = f"0.7978845608028654 * ({a} + 0.044715 * {a} * {a} * {a})"
        return f"(0.5 * {a} * (1.0 + {_tanh(inner)}))"
    return f"(0.5 * {a} * (1.0 + tl.erf({a} * 0.7071067811865476)))"


def _softplus(xs: list[str], n: Node) -> str:
    a = xs[0]
    # logaddexp(0, a) = max(a, 0) + log(1 + exp(-|a|))
    return f"(tl.maximum({a}, 0.0) + tl.log(1.0 + tl.exp(-tl.abs({a}))))"


def _sign(xs: list[str], n: Node) -> str:
    a = xs[0]
    return f"tl.where({a} > 0.0, 1.0, tl.where({a} < 0.0, -1.0, 0.0 * {a}))"


def _cast(xs: list[str], n: Node) -> str:
    src = n.inputs[0].type.dtype  # type: ignore[union-attr]
    dst = n.attrs["to"]
    if src in FLOATS and dst in FLOATS:
        return xs[0]  # the rounding to dst happens in round_to()
    if src == DType.bool and dst in FLOATS:
        return f"tl.where({xs[0]}, 1.0, 0.0)"
    if src in FLOATS and dst == DType.bool:
        return f"({xs[0]} != 0.0)"
    raise KeyError("cast")


EMITTERS: dict[str, Emit] = {
    "add": lambda x, n: f"({x[0]} + {x[1]})",
    "sub": lambda x, n: f"({x[0]} - {x[1]})",
    "mul": lambda x, n: f"({x[0]} * {x[1]})",
    "div": lambda x, n: f"({x[0]} / {x[1]})",
    "pow": _pow,
    "maximum": lambda x, n: f"tl.maximum({x[0]}, {x[1]})",
    "minimum": lambda x, n: f"tl.minimum({x[0]}, {x[1]})",
    "equal": lambda x, n: f"({x[0]} == {x[1]})",
    "less": lambda x, n: f"({x[0]} < {x[1]})",
    "less_equal": lambda x, n: f"({x[0]} <= {x[1]})",
    "greater": lambda x, n: f"({x[0]} > {x[1]})",
    "greater_equal": lambda x, n: f"({x[0]} >= {x[1]})",
    "and": lambda x, n: f"({x[0]} & {x[1]})",
    "or": lambda x, n: f"({x[0]} | {x[1]})",
    "xor": lambda x, n: f"({x[0]} ^ {x[1]})",
    "not": lambda x, n: f"({x[0]} == 0)",
    "neg": lambda x, n: f"(-{x[0]})",
    "abs": lambda x, n: f"tl.abs({x[0]})",
    "exp": lambda x, n: f"tl.exp({x[0]})",
    "log": lambda x, n: f"tl.log({x[0]})",
    "sqrt": lambda x, n: f"tl.sqrt({x[0]})",
    "rsqrt": lambda x, n: f"tl.rsqrt({x[0]})",
    "reciprocal": lambda x, n: f"(1.0 / {x[0]})",
    "tanh": lambda x, n: _tanh(x[0]),
    "sigmoid": lambda x, n: _sigmoid(x[0]),
    "relu": lambda x, n: f"tl.maximum({x[0]}, 0.0)",
    "erf": lambda x, n: f"tl.erf({x[0]})",
    "sin": lambda x, n: f"tl.sin({x[0]})",
    "cos": lambda x, n: f"tl.cos({x[0]})",
    "floor": lambda x, n: f"tl.floor({x[0]})",
    "ceil": lambda x, n: f"tl.ceil({x[0]})",
    "sign": _sign,
    "silu": lambda x, n: f"({x[0]} * {_sigmoid(x[0])})",
    "softplus": _softplus,
    "identity": lambda x, n: x[0],
    "gelu": _gelu,
    "leaky_relu": lambda x, n: f"tl.where({x[0]} >= 0.0, {x[0]}, {literal(n.attrs['alpha'])} * {x[0]})",
    "elu": lambda x, n: (f"tl.where({x[0]} > 0.0, {x[0]}, "
                         f"{literal(n.attrs['alpha'])} * (tl.exp({x[0]}) - 1.0))"),
    "hard_sigmoid": lambda x, n: (f"tl.minimum(tl.maximum({literal(n.attrs['alpha'])} * {x[0]} + "
                                  f"{literal(n.attrs['beta'])}, 0.0), 1.0)"),
    "clip": _clip,
    "cast": _cast,
    "where": lambda x, n: f"tl.where({x[0]}, {x[1]}, {x[2]})",
}
PRED_OPS = frozenset({"equal", "less", "less_equal", "greater", "greater_equal"})
LOGICAL_OPS = frozenset({"and", "or", "xor", "not"})


def fusible(n: Node) -> str | None:
    """None when ``n`` can be computed inside a generated kernel, else the reason it cannot."""
    if n.op not in EMITTERS:
        return f"op {n.op} has no Triton expression"
    for i, t in enumerate(list(n.out_types) + [v.type for v in n.inputs]):
        if not isinstance(t, TensorType) or t.shape is None:
            return f"{n.op}: value of unknown shape"
        if t.dtype not in KERNEL_DTYPES:
            return f"{n.op}: dtype {t.dtype.value} is not generated (f16/bf16/f32/bool only)"
    ins = [v.type.dtype for v in n.inputs]  # type: ignore[union-attr]
    if n.op in PRED_OPS and any(d not in FLOATS for d in ins):
        return f"{n.op} on non-float operands"
    if n.op in LOGICAL_OPS and any(d != DType.bool for d in ins):
        return f"{n.op} on non-bool operands"
    if n.op not in PRED_OPS | LOGICAL_OPS | {"where", "cast"}:
        if any(d not in FLOATS for d in ins):
            return f"{n.op} on non-float operands"
    if n.op == "where" and (ins[0] != DType.bool or ins[1] not in FLOATS):
        return "where needs a bool condition and float branches"
    try:
        emit(n, ["a", "b", "c"][:len(n.inputs)])
    except KeyError as e:
        return f"{n.op}: unsupported form ({e.args[0]})"
    return None


def emit(n: Node, xs: list[str]) -> str:
    """Source of ``n``'s value over operand expressions ``xs``, rounded to its dtype."""
    return round_to(EMITTERS[n.op](xs, n), n.out_types[0].dtype)  # type: ignore[union-attr]


def round_to(expr: str, dtype: DType) -> str:
    """fp32 value rounded to ``dtype`` and back (no-op for f32 and bool)."""
    if dtype in (DType.f16, DType.bf16):
        return f"({expr}).to({TL_DTYPE[dtype]}).to(tl.float32)"
    return expr
