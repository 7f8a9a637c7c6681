"""Fingerprints: graphs evaluated on fixed random inputs in integer arithmetic modulo a prime.

Linear and structural ops run their own ``numpy`` aspect on int64 arrays (exact, then reduced
mod P). Ops that compare (relu, max_pool, reduce_max, maximum) run on the signed representative
of each residue, so relu(relu(x)) = relu(x) and relu(x) - relu(-x) = x hold here as over the
reals. Other non-linear ops get a per-op random cubic stand-in (TASO's trick): equal graphs stay
equal, unequal ones almost surely differ. Division (softmax, means) uses modular inverses.

A fingerprint only proposes candidates; the float re-test and z3 decide.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import numpy as np

from ..ir.node import Attrs

P = 1048573  # largest prime below 2**20: products fit int64 and float64 sums stay exact
HALF = P // 2

Array = np.ndarray
StandIn = Callable[[Sequence[Array], Attrs], tuple[Array, ...]]


def to_signed(x: Array) -> Array:
    return np.where(x > HALF, x - P, x)


def modp(x: Array) -> Array:
    return np.mod(np.asarray(x, dtype=np.int64), P)


def inverse(x: Array) -> Array:
    """Modular inverse (0 stays 0) by square-and-multiply on arrays."""
    x = modp(x)
    out = np.ones_like(x)
    base = x.copy()
    e = P - 2
    while e:
        if e & 1:
            out = (out * base) % P
        base = (base * base) % P
        e >>= 1
    return out


def _coeffs(name: str) -> tuple[int, int, int, int]:
    h = hashlib.sha256(f"graphopt-standin-{name}".encode()).digest()
    return tuple(int.from_bytes(h[i:i + 4], "little") % P for i in range(0, 16, 4))  # type: ignore


def cubic(name: str) -> Callable[[Array], Array]:
    """A fixed random cubic over Z_P, one per op name."""
    c0, c1, c2, c3 = _coeffs(name)

    def f(x: Array) -> Array:
        x = modp(x)
        return (((c3 * x % P + c2) * x % P + c1) * x % P + c0) % P

    return f


def _unary_standin(name: str) -> StandIn:
    f = cubic(name)
    return lambda xs, attrs: (f(xs[0]),)


def _ordered(op: str) -> StandIn:
    """Evaluate an order-based op on signed representatives (exact: |values| < 2**19)."""

    def run(xs: Sequence[Array], attrs: Attrs) -> tuple[Array, ...]:
        from ..ops.registry import get_op

        ys = get_op(op).numpy([to_signed(x).astype(np.float64) for x in xs], attrs)
        return tuple(modp(np.rint(y).astype(np.int64)) for y in ys)

    return run


def _axis_sum(x: Array, axes: tuple[int, ...]) -> Array:
    return modp(np.sum(x, axis=axes, keepdims=True))


def _softmax(xs: Sequence[Array], attrs: Attrs) -> tuple[Array, ...]:
    e = cubic("exp")(xs[0])
    s = _axis_sum(e, (attrs["axis"],))
    return (e * inverse(s) % P,)


def _log_softmax(xs: Sequence[Array], attrs: Attrs) -> tuple[Array, ...]:
    e = cubic("exp")(xs[0])
    s = _axis_sum(e, (attrs["axis"],))
    return (modp(xs[0] - cubic("log")(s)),)


def _reduce_mean(xs: Sequence[Array], attrs: Attrs) -> tuple[Array, ...]:
    x = xs[0]
    axes = tuple(attrs["axes"]) or tuple(range(x.ndim))
    n = int(np.prod([x.shape[a] for a in axes])) if axes else 1
    s = np.sum(x, axis=axes, keepdims=bool(attrs.get("keepdims", True)))
    return (modp(s) * int(inverse(np.array(n % P))) % P,)


def _layer_norm(xs: Sequence[Array], attrs: Attrs) -> tuple[Array, ...]:
    x = xs[0]
    axes = tuple(range(attrs["axis"], x.ndim))
    n = int(np.prod([x.shape[a] for a in axes]))
    inv_n = int(inverse(np.array(n % P)))
    mean = _axis_sum(x, axes) * inv_n % P
    c = modp(x - mean)
    var = _axis_sum(c * c % P, axes) * inv_n % P
    y = c * cubic("rsqrt")(var) % P
    if len(xs) > 1 and xs[1] is not None:
        y = y * xs[1] % P
    if len(xs) > 2 and xs[2] is not None:
        y = modp(y + xs[2])
    return (y,)


def _div(xs: Sequence[Array], attrs: Attrs) -> tuple[Array, ...]:
    return (modp(xs[0]) * inverse(xs[1]) % P,)


def _reciprocal(xs: Sequence[Array], attrs: Attrs) -> tuple[Array, ...]:
    return (inverse(xs[0]),)


def _avg_pool(xs: Sequence[Array], attrs: Attrs) -> tuple[Array, ...]:
    """sum(window) / count, exactly: the op's own float average times L = lcm(1..window size)
    is an integer, so avg = rint(avg * L) * L^-1 (mod P)."""
    import math

    from ..ops.registry import get_op

    k = int(np.prod(attrs["kernel"]))
    lcm = math.lcm(*range(1, k + 1))
    (avg,) = get_op("avg_pool").numpy([to_signed(xs[0]).astype(np.float64)], attrs)
    scaled = modp(np.rint(np.asarray(avg) * lcm).astype(np.int64))
    return (scaled * int(inverse(np.array(lcm % P))) % P,)


STANDINS: dict[str, StandIn] = {
    "relu": _ordered("relu"),
    "maximum": _ordered("maximum"),
    "minimum": _ordered("minimum"),
    "max_pool": _ordered("max_pool"),
    "reduce_max": _ordered("reduce_max"),
    "reduce_min": _ordered("reduce_min"),
    "softmax": _softmax,
    "log_softmax": _log_softmax,
    "reduce_mean": _reduce_mean,
    "layer_norm": _layer_norm,
    "div": _div,
    "reciprocal": _reciprocal,
    "avg_pool": _avg_pool,
}
for _name in ("exp", "log", "gelu", "tanh", "sigmoid", "silu", "erf", "sqrt", "rsqrt",
              "softplus", "sin", "cos"):
    STANDINS[_name] = _unary_standin(_name)

# ops whose numpy aspect is exact on int64 residues (then reduced mod P)
EXACT_INT = {"add", "sub", "mul", "neg", "matmul", "transpose", "concat", "split", "reshape",
             "reduce_sum", "slice", "expand", "squeeze", "unsqueeze", "identity", "conv",
             "tile", "pad"}


def supported(op: str) -> bool:
    return op in STANDINS or op in EXACT_INT


def eval_op(op: str, xs: Sequence[Array], attrs: Attrs) -> tuple[Array, ...]:
    """Evaluate one op over residues mod P."""
    fn = STANDINS.get(op)
    if fn is not None:
        return tuple(modp(y) for y in fn(xs, attrs))
    if op not in EXACT_INT:
        raise ValueError(f"fingerprint: op {op!r} has no mod-{P} semantics (add a stand-in in "
                         f"compiler/subst/fingerprint.py)")
    from ..ops.registry import get_op

    ys = get_op(op).numpy(list(xs), attrs)
    out = []
    for y in ys:
        y = np.asarray(y)
        if y.dtype.kind == "f":  # an op computing in floats: exact while |y| < 2**53
            y = np.rint(y).astype(np.int64)
        out.append(modp(y))
    return tuple(out)


def random_input(shape: tuple[int, ...], rng: np.random.Generator) -> Array:
    return rng.integers(0, P, size=shape, dtype=np.int64)


def digest(xs: Sequence[Array]) -> int:
    """A stable 64-bit hash of a value's residue arrays, one per sample (shape included)."""
    h = hashlib.blake2b(digest_size=8)
    for x in xs:
        h.update(repr(tuple(x.shape)).encode())
        h.update(np.ascontiguousarray(x, dtype=np.int64).tobytes())
    return int.from_bytes(h.digest(), "little")
