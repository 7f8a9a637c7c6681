"""Integer arithmetic modulo a prime, for the ops' ``fingerprint`` aspect.

The substitution generator (``subst/fingerprint.py``) evaluates graphs on residues mod ``P``.
Each op says how it runs there (``OpDef.exact_int`` / ``ordered`` / ``standin``, or its own
``fingerprint`` method); these are the helpers those declarations use.
"""
from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np

P = 1048573  # largest prime below 2**20: products fit int64 and float64 sums stay exact
HALF = P // 2

Array = np.ndarray


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
    """A fixed random cubic over Z_P, one per name (TASO's stand-in for a non-linear function)."""
    c0, c1, c2, c3 = _coeffs(name)

    def f(x: Array) -> Array:
        x = modp(x)
        return (((c3 * x % P + c2) * x % P + c1) * x % P + c0) % P

    return f


def axis_sum(x: Array, axes: tuple[int, ...]) -> Array:
    return modp(np.sum(x, axis=axes, keepdims=True))


def inverse_of_count(n: int) -> int:
    """The inverse of a positive count (a mean's divisor) mod P."""
    return int(inverse(np.array(n % P)))
