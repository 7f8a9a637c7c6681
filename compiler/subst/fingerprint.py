"""Fingerprints: graphs evaluated on fixed random inputs in integer arithmetic modulo a prime.

Each op declares its semantics over residues mod P next to itself (``OpDef.fingerprint``; the
arithmetic is ``ops/residues.py``): linear and structural ops (``exact_int``) run their own
``numpy`` aspect on int64 arrays (exact, then reduced mod P). Ops that compare (``ordered``:
relu, max_pool, reduce_max, maximum) run on the signed representative of each residue, so
relu(relu(x)) = relu(x) and relu(x) - relu(-x) = x hold here as over the reals. Other non-linear
ops get a per-op random cubic stand-in (``standin``, TASO's trick): equal graphs stay equal,
unequal ones almost surely differ. Division (softmax, means) uses modular inverses.

A fingerprint only proposes candidates; the float re-test and z3 decide.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from ..ir.node import Attrs
from ..ops.residues import P, modp

Array = np.ndarray


def eval_op(op: str, xs: Sequence[Array], attrs: Attrs) -> tuple[Array, ...]:
    """Evaluate one op over residues mod P."""
    from ..ops.registry import NotFingerprinted, get_op

    try:
        ys = get_op(op).fingerprint(xs, attrs)
    except NotFingerprinted as e:
        raise ValueError(f"fingerprint: {e}") from None
    return tuple(modp(y) for y in ys)


def random_input(shape: tuple[int, ...], rng: np.random.Generator) -> Array:
    return rng.integers(0, P, size=shape, dtype=np.int64)


def digest(xs: Sequence[Array]) -> int:
    """A stable 64-bit hash of a value's residue arrays, one per sample (shape included)."""
    h = hashlib.blake2b(digest_size=8)
    for x in xs:
        h.update(repr(tuple(x.shape)).encode())
        h.update(np.ascontiguousarray(x, dtype=np.int64).tobytes())
    return int.from_bytes(h.digest(), "little")
