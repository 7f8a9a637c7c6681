"""Inputs for the numeric check, valid for the model without being told.

``make_inputs(g)`` draws one value per graph input, inside what the graph's readers of that
input require (a small constraint inference over the IR):

* every symbolic dim gets one concrete size (2..8), the same for every use of the symbol;
* each input's readers are found through the ops that hand its values on unchanged
  (``OpDef.index_pass_through``, ``OpDef.value_inputs``), and each states its ``Need``: IR ops
  through ``OpDef.index_bound`` (gather's indices), opaque ONNX nodes through the table of
  ``inputs/onnx_rules.py`` keyed by ONNX op type and input slot (indices in range, distinct
  axes inside the rank, reshape targets that factor the element count, broadcastable expand
  shapes, split sizes summing to the dim, class labels, Resize scales / sizes,
  NonMaxSuppression's thresholds, OneHot's depth, sequence lengths, ...);
* the needs of one input are intersected and a value is drawn inside them; an input whose needs
  read another input (OneHot's indices read its depth) is drawn after it;
* inputs nobody constrains: integer or bool inputs named ``*mask*`` are 0/1 masks with at least
  one 1 per row; other bools are random; other integers are in ``[1, 8)``; floats are standard
  normal; strings are short random words; sequences hold 1-3 such tensors.

When the needs cannot be met (more distinct axes than the rank, conflicting ranges) or an input
has a type nothing can be drawn for, ``InputsNeeded`` says which input and how to pass inputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..ir.graph import Graph
from ..ir.node import Node
from ..ir.types import DType, OpaqueType, TensorType, dim_factors
from .needs import INT_DEFAULT_RANGE, HOW_TO_PASS, InputsNeeded, Need, Unmeetable, draw_value, \
    inputs_needed
from .readers import Ctx, Later, reader_needs
from .values import SeqPlan, draw_opaque, draw_strings, mask

SYM_MIN, SYM_MAX = 2, 8

__all__ = ["SYM_MIN", "SYM_MAX", "INT_DEFAULT_RANGE", "HOW_TO_PASS", "InputsNeeded", "Need",
           "Generated", "generate_inputs", "make_inputs", "symbol_sizes", "index_bounds",
           "input_needs", "rejected_inputs"]


@dataclass
class Generated:
    """Generated inputs: ``feeds`` by input name; ``guessed``: the integer inputs drawn in the
    default range because no reader said what they must be (the first suspects when the model
    fails on them); ``needs``: per input, what its readers require (``Need.why``)."""

    feeds: dict[str, Any]
    guessed: list[str] = field(default_factory=list)
    needs: dict[str, list[str]] = field(default_factory=dict)


def symbol_sizes(g: Graph, seed: int = 0, given: Mapping[str, int] | None = None
                 ) -> dict[str, int]:
    """A concrete size for every symbol in the graph's input dims (consistent per symbol)."""
    rng = np.random.default_rng(seed + 7919)
    sizes: dict[str, int] = dict(given or {})
    for t in g.input_types:
        if not isinstance(t, TensorType) or t.shape is None:
            continue
        for d in t.shape:
            if isinstance(d, str):
                for s in dim_factors(d)[1]:
                    if s not in sizes:
                        sizes[s] = int(rng.integers(SYM_MIN, SYM_MAX + 1))
    return sizes


def input_needs(g: Graph, sizes: Mapping[str, int], feeds: Mapping[str, Any] | None = None
                ) -> dict[str, list[Need]]:
    """Per tensor input, what its readers require (readers that read other inputs see them as
    unknown unless ``feeds`` has them)."""
    ctx = Ctx(g, dict(sizes), dict(feeds or {}), wait=False)
    users = g.users()
    out: dict[str, list[Need]] = {}
    for inp in g.inputs:
        shape = ctx.shape(inp.out)
        if shape is not None:
            out[inp.attrs["name"]] = _needs(g, inp, ctx, users, shape)
    return out


def index_bounds(g: Graph, sizes: Mapping[str, int]) -> dict[str, int]:
    """For each integer input whose readers bound its values from above (gather indices, class
    labels, ...), the exclusive upper bound."""
    out: dict[str, int] = {}
    for name, needs in input_needs(g, sizes).items():
        t = g.input_types[g.input_names.index(name)]
        his = [int(np.min(n.hi)) for n in needs if n.hi is not None]
        if isinstance(t, TensorType) and t.dtype.is_int and his:
            out[name] = min(his)
    return out


def make_inputs(g: Graph, seed: int = 0, sizes: Mapping[str, int] | None = None
                ) -> dict[str, Any]:
    """Random inputs valid for ``g`` (see the module docstring for the rules)."""
    return generate_inputs(g, seed, sizes).feeds


def generate_inputs(g: Graph, seed: int = 0, sizes: Mapping[str, int] | None = None
                    ) -> Generated:
    """``make_inputs`` with what was guessed and what was inferred (``Generated``)."""
    rng = np.random.default_rng(seed)
    ctx = Ctx(g, symbol_sizes(g, seed, sizes))
    users = g.users()
    out = Generated({})
    plan = SeqPlan.draw(rng)
    pending = list(g.inputs)
    while pending:
        waiting: list[Node] = []
        for inp in pending:
            try:
                ctx.feeds[inp.attrs["name"]] = _draw(g, inp, ctx, users, rng, out, plan)
            except Later:
                waiting.append(inp)
        if len(waiting) == len(pending):
            ctx.wait = False  # needs that read each other: drawn as if the others were unknown
        pending = waiting
    out.feeds = {n: ctx.feeds[n] for n in g.input_names}
    return out


def _needs(g: Graph, inp: Node, ctx: Ctx, users: dict[Node, list[tuple[Node, int]]],
           shape: tuple[int, ...]) -> list[Need]:
    name = inp.attrs["name"]
    try:
        return reader_needs(g, inp, ctx, users, shape)
    except Unmeetable as e:
        raise inputs_needed(name, str(e)) from e


def _draw(g: Graph, inp: Node, ctx: Ctx, users: dict[Node, list[tuple[Node, int]]],
          rng: np.random.Generator, out: Generated, plan: SeqPlan) -> Any:
    name = inp.attrs["name"]
    t = inp.out_types[0]
    if inp.attrs.get("default") is not None:  # an overridable ONNX initializer: its value
        return inp.attrs["default"].array
    if isinstance(t, OpaqueType):
        return draw_opaque(name, t, rng, ctx.sizes, plan)
    if not isinstance(t, TensorType) or t.shape is None:
        raise inputs_needed(name, f"its type {t} has no known shape")
    shape = ctx.shape(inp.out)
    assert shape is not None  # every symbol of an input dim has a size
    dt = t.dtype
    if dt == DType.string:
        return draw_strings(rng, shape)
    needs = _needs(g, inp, ctx, users, shape)
    out.needs[name] = [n.why for n in needs]
    if needs and (dt.is_int or dt.is_float or dt == DType.bool):
        return draw_value(name, dt.to_numpy(), shape, needs, rng)
    if dt == DType.bool or (dt.is_int and "mask" in name.lower()):
        arr = mask(rng, shape) if "mask" in name.lower() else \
            rng.integers(0, 2, size=shape).astype(bool)
        return arr.astype(dt.to_numpy())
    if dt.is_int:
        out.guessed.append(name)
        return rng.integers(*INT_DEFAULT_RANGE, size=shape).astype(dt.to_numpy())
    if dt in (DType.f16, DType.f32, DType.f64):
        return rng.standard_normal(shape).astype(dt.to_numpy())
    if dt in (DType.c64, DType.c128):
        z = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
        return z.astype(dt.to_numpy())
    raise inputs_needed(name, f"the check draws no values of dtype {dt.value}")


def rejected_inputs(g: Graph, seed: int, why: str) -> InputsNeeded:
    """The error for a model that cannot run on the inputs generated for it: names the inputs
    whose values were guessed (no reader said what they must be), else all of them."""
    gen = generate_inputs(g, seed)
    names = gen.guessed or list(g.input_names)
    listed = ", ".join(repr(n) for n in names[:6]) + (", ..." if len(names) > 6 else "")
    first = why.strip().splitlines()[0] if why.strip() else why
    return InputsNeeded(f"the model cannot run on generated values of {listed} ({first[:300]}); "
                        f"{HOW_TO_PASS}", where=f"input {names[0]!r}" if names else "inputs")
