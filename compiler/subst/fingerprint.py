"""Fingerprints: graphs evaluated on fixed random inputs in integer arithmetic modulo a prime.

Each op declares its semantics over residues mod P next to itself (``OpDef.fingerprint``; the
arithmetic is ``ops/residues.py``): linear and structural ops (``exact_int``) run their own
``numpy`` aspect on int64 arrays (exact, then reduced mod P). Ops that compare (``ordered``:
relu, max_pool, reduce_max, maximum) run on the signed representative of each residue, so
relu(relu(x)) = relu(x) and relu(x) - relu(-x) = x hold here as over the reals. Other non-linear
ops get a per-op random cubic stand-in (``standin``, TASO's trick): equal graphs stay equal,
unequal ones almost surely differ. Division (softmax, means) uses modular inverses.

A fingerprint only proposes candidates; the float re-test and z3 decide. ``ModPrimeInterpreter``
is these semantics as an ``ir.interp.Interpreter``; the enumerator (``enumerate.py``) and the
pruning (``prune.py``) evaluate their nodes one at a time through its ``run_node``.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ..ir.interp import Interpreter
from ..ir.node import Attrs, Node
from ..ops.residues import P, modp

if TYPE_CHECKING:
    from ..ops.registry import OpDef

Array = np.ndarray


def eval_op(op: "str | OpDef", xs: Sequence[Array], attrs: Attrs) -> tuple[Array, ...]:
    """Evaluate one op (by name or declaration) over residues mod P, on one sample."""
    from ..ops.registry import NotFingerprinted, get_op

    opdef = get_op(op) if isinstance(op, str) else op
    try:
        ys = opdef.fingerprint(xs, attrs)
    except NotFingerprinted as e:
        raise ValueError(f"fingerprint: {e}") from None
    return tuple(modp(y) for y in ys)


class ModPrimeInterpreter(Interpreter):
    """Graphs over residues mod P, on several samples at once: a value is a tuple of residue
    arrays, one per sample. ``sizes``: the dim variables' values the samples are drawn at (the
    generator's small fingerprint sizes); each node's size-valued attrs are re-instantiated at
    them (``rewrite/dims.py``), the rest of its attrs kept."""

    binds_symbols = False

    def __init__(self, samples: int = 1, sizes: Mapping[str, int] | None = None) -> None:
        self.samples = samples
        self.sizes = dict(sizes) if sizes is not None else None
        self._attrs: dict[Node, Attrs] = {}

    def attrs_of(self, n: Node) -> Attrs:
        """``n``'s attrs at the sample sizes."""
        if self.sizes is None:
            return n.attrs
        got = self._attrs.get(n)
        if got is None:
            from ..rewrite.dims import generalize_attr, instantiate_attr

            got = Attrs({k: instantiate_attr(generalize_attr(n.op, k, v), self.sizes)
                         for k, v in n.attrs.items()})
            self._attrs[n] = got
        return got

    def call_op(self, n: Node, opdef: "OpDef", args: Sequence[Any]) -> Sequence[Any]:
        attrs = self.attrs_of(n)
        per_sample = [eval_op(opdef, [x[r] for x in args], attrs) for r in range(self.samples)]
        return tuple(tuple(np.asarray(o[k]) for o in per_sample)
                     for k in range(len(n.out_types)))


def random_input(shape: tuple[int, ...], rng: np.random.Generator) -> Array:
    return rng.integers(0, P, size=shape, dtype=np.int64)


def digest(xs: Sequence[Array]) -> int:
    """A stable 64-bit hash of a value's residue arrays, one per sample (shape included)."""
    h = hashlib.blake2b(digest_size=8)
    for x in xs:
        h.update(repr(tuple(x.shape)).encode())
        h.update(np.ascontiguousarray(x, dtype=np.int64).tobytes())
    return int.from_bytes(h.digest(), "little")
