"""Who reads a graph input, and what each reader requires of its values.

``reader_needs(g, inp, ctx)`` walks the users of one input through the ops that hand its values
on unchanged (``OpDef.index_pass_through`` / ``OpDef.value_inputs``) and asks every other reader
for its ``Need``: IR ops through ``OpDef.index_bound``, opaque ONNX nodes through the table of
``inputs.onnx_rules`` (keyed by ONNX op type and input slot). A need that depends on where an
element sits (per-position bounds, distinct axes, a joint value) is kept only when the path to
the reader preserves the elements' order (casts and views); otherwise only its per-element range.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..ir.graph import Graph
from ..ir.node import Node, Value
from ..ir.types import TensorType
from ..ops.symbols import eval_dim
from .needs import Need, Shape, Unmeetable


class Later(Exception):
    """A reader's need depends on another graph input not drawn yet (its name)."""


@dataclass
class Ctx:
    """What rules may look at: concrete sizes of symbols, constants, inputs drawn so far.
    ``wait``: a need reading an input not drawn yet raises ``Later`` (False: reads None)."""

    g: Graph
    sizes: dict[str, int]
    feeds: dict[str, Any] = field(default_factory=dict)
    wait: bool = True

    def shape(self, v: Value) -> Shape | None:
        t = v.type
        if not isinstance(t, TensorType) or t.shape is None:
            return None
        out = []
        for d in t.shape:
            n = eval_dim(d, self.sizes)
            if n is None:
                return None
            out.append(n)
        return tuple(out)

    def value(self, v: Value) -> Any:
        """The value of a constant or of a graph input already drawn; None when unknown."""
        n = v.node
        if n.op == "constant":
            return n.const.array if n.const.has_array else None
        if n.op == "input":
            name = n.attrs["name"]
            if name in self.feeds:
                return self.feeds[name]
            if self.wait:
                raise Later(name)
        return None


@dataclass
class Reader:
    """One reader of an input: ``node`` reads it at its ONNX input ``slot`` (for IR ops the
    input position) as a value of ``shape``."""

    node: Node
    slot: int
    shape: Shape
    ctx: Ctx
    attrs: dict[str, Any]

    @property
    def op_type(self) -> str:
        return rule_key(self.node) if self.node.op == "opaque" else self.node.op

    @property
    def label(self) -> str:
        o = self.node.origin
        return f"{self.op_type} {o.name!r}" if o is not None and o.name else self.op_type

    def _value_at(self, slot: int) -> Value | None:
        if self.node.op != "opaque":
            return self.node.inputs[slot] if slot < len(self.node.inputs) else None
        present = tuple(self.node.attrs.get("present") or ())
        if slot >= len(present) or not present[slot]:
            return None
        return self.node.inputs[sum(1 for p in present[:slot] if p)]

    def input_shape(self, slot: int) -> Shape | None:
        v = self._value_at(slot)
        return None if v is None else self.ctx.shape(v)

    def input_rank(self, slot: int) -> int | None:
        v = self._value_at(slot)
        t = None if v is None else v.type
        return len(t.shape) if isinstance(t, TensorType) and t.shape is not None else None

    def input_value(self, slot: int) -> Any:
        v = self._value_at(slot)
        return None if v is None else self.ctx.value(v)

    def out_shape(self, i: int = 0) -> Shape | None:
        return self.ctx.shape(self.node.outputs[i]) if i < len(self.node.outputs) else None

    def need(self, what: str, **kw: Any) -> Need:
        return Need(f"{what} of {self.label}", **kw)


Rule = Callable[[Reader], "list[Need]"]


def onnx_attrs(n: Node) -> dict[str, Any]:
    """The attributes of an opaque ONNX node, by name (graph attributes left out)."""
    import onnx
    from onnx import helper

    p = onnx.NodeProto()
    p.ParseFromString(n.attrs["proto"])
    return {a.name: helper.get_attribute_value(a) for a in p.attribute
            if a.type not in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)}


def rule_key(n: Node) -> str:
    """An opaque node's op type as the rules name it: ``Gather`` for ONNX's default domain (and
    the torch frontend's aten targets, ``aten.embedding.default``), ``domain.Type`` for others
    (``com.microsoft.GroupQueryAttention``, ``ai.onnx.ml.ArrayFeatureExtractor``)."""
    domain = str(n.attrs.get("domain") or "")
    op_type = str(n.attrs["op_type"])
    return op_type if domain in ("", "ai.onnx", "aten") else f"{domain}.{op_type}"


def _onnx_slot(n: Node, pos: int) -> int | None:
    """The ONNX input slot of an opaque node's IR input ``pos`` (None: a captured value)."""
    present = tuple(n.attrs.get("present") or ())
    if not present:
        return pos
    seen = -1
    for slot, p in enumerate(present):
        seen += bool(p)
        if seen == pos and p:
            return slot
    return None


def _passes_values(n: Node, pos: int) -> tuple[bool, bool]:
    """(does ``n`` hand input ``pos``'s values on unchanged, does it keep their order)."""
    from ..ops.registry import get_op

    op = get_op(n.op)
    if op.index_pass_through:
        return True, len(n.inputs) == 1 and (op.cost_class == "view" or op.elementwise)
    return pos in op.value_inputs, False


def reader_needs(g: Graph, inp: Node, ctx: Ctx, users: dict[Node, list[tuple[Node, int]]],
                 in_shape: Shape) -> list[Need]:
    """Every need the readers of graph input ``inp`` (of concrete shape ``in_shape``) have."""
    from .onnx_rules import RULES

    needs: list[Need] = []
    stack: list[tuple[Node, bool]] = [(inp, True)]
    seen: set[tuple[int, bool]] = set()
    while stack:
        n, direct = stack.pop()
        if (id(n), direct) in seen:
            continue
        seen.add((id(n), direct))
        for u, pos in users.get(n, []):
            passes, ordered = _passes_values(u, pos)
            if passes:
                stack.append((u, direct and ordered))
                continue
            shape = ctx.shape(u.inputs[pos])
            for nd in _needs_of(u, pos, ctx, shape, RULES):
                if direct and shape is not None and int(np.prod(shape)) == int(np.prod(in_shape)):
                    needs.append(nd.reshaped(shape, in_shape))
                elif not nd.positional:
                    needs.append(nd)
                else:
                    loose = nd.elementwise()
                    if loose is not None:
                        needs.append(loose)
    return needs


def _needs_of(u: Node, pos: int, ctx: Ctx, shape: Shape | None, rules: dict[tuple[str, int], Rule]
              ) -> list[Need]:
    """What reader ``u`` requires of its input ``pos``."""
    from ..ops.registry import get_op

    if shape is None:
        return []
    if u.op != "opaque":
        bound = get_op(u.op).index_bound(pos, tuple(v.type for v in u.inputs), u.attrs)
        hi = None if bound is None else eval_dim(bound, ctx.sizes)
        if hi is None:
            return []
        return [Reader(u, pos, shape, ctx, dict(u.attrs)).need("indices", lo=0, hi=max(hi, 1))]
    slot = _onnx_slot(u, pos)
    rule = rules.get((rule_key(u), slot if slot is not None else -1))
    if rule is None:
        return []
    attrs = onnx_attrs(u) if u.attrs.get("proto") is not None else {}
    r = Reader(u, slot if slot is not None else pos, shape, ctx, attrs)
    try:
        return rule(r)
    except Unmeetable as e:
        raise Unmeetable(f"{e} ({r.label})") from e
