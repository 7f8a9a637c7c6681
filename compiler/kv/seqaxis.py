"""The sequence-axis analysis behind the KV-cache rewrite: which values carry the token stream,
and whether any op mixes positions other than causal attention.

A decoder without a cache computes, for a sequence of length S, every value from three kinds of
sources:

* **rows**: the token stream, values that depend on the token inputs (``input_ids``, and
  ``position_ids`` when the graph takes them). Along the sequence axis (every dim whose factors
  include the sequence symbol) row i must depend on rows <= i only, so the rows of earlier
  tokens can be cached.
* **aux**: values computed from the sequence *length* and the ``attention_mask`` only, never from
  token values: position indices, rotary tables, masks. An op that reads a rows value only for
  its shape (ONNX ``Shape``) gives an aux value.
* **const**: constants and what is computed from them.

An op on rows values is row-local when its ``mixed_axes`` (an ``OpDef`` declaration) contain no
axis whose dim is the sequence. The one mixing op allowed is ``attention`` along its key axis;
whether its mask really is causal is measured in ``probe``. Everything else that mixes positions
(a norm or sum over the sequence, a cumsum, a convolution along it, an unfused attention's
softmax, a slice of some positions) makes the rewrite illegal; ``analyze`` lists each such node
with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import GraphOptError
from ..ir.graph import Graph
from ..ir.node import Node, Value
from ..ir.types import Dim, TensorType, dim_factors
from ..ops.registry import get_op

TOKENS, MASK, POSITIONS = "input_ids", "attention_mask", "position_ids"
SHAPE_READS = frozenset({"Shape", "Size"})  # ONNX ops that read a tensor's shape only


class KVCacheError(GraphOptError):
    """The model cannot get a KV cache (a position-mixing op, a non-causal attention, an input
    the rewrite does not know); the message names the node and the reason."""


@dataclass(frozen=True)
class Refusal:
    node: Node
    reason: str

    def __str__(self) -> str:
        return f"{self.node.where}: {self.reason}"


@dataclass
class StreamInfo:
    """What ``analyze`` found."""

    seq: str                                    # the sequence-length symbol
    batch: Dim                                  # the batch dim of the token input
    tokens: Node
    mask: Node | None
    positions: Node | None
    kind: dict[Node, str] = field(default_factory=dict)  # "rows" | "aux" | "const"
    attentions: list[Node] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)

    def of(self, v: Value) -> str:
        return self.kind[v.node]

    def has_seq(self, d: Dim) -> bool:
        return isinstance(d, str) and self.seq in dim_factors(d)[1]

    def seq_axes(self, v: Value) -> list[int]:
        t = v.type
        if not isinstance(t, TensorType) or t.shape is None:
            return []
        return [a for a, d in enumerate(t.shape) if self.has_seq(d)]


def _input(g: Graph, name: str) -> Node | None:
    for n in g.inputs:
        if n.attrs["name"] == name:
            return n
    return None


def find_tokens(g: Graph) -> Node:
    """The token-id input: ``input_ids``, else the one integer [batch, seq] input that is neither
    the attention mask nor the position ids."""
    n = _input(g, TOKENS)
    if n is not None:
        return n
    cands = [n for n in g.inputs
             if n.attrs["name"] not in (MASK, POSITIONS) and isinstance(n.type, TensorType)
             and n.type.dtype.is_int and n.type.shape is not None and len(n.type.shape) == 2]
    if len(cands) != 1:
        raise KVCacheError(f"cannot tell which input holds the token ids (inputs "
                           f"{list(g.input_names)}); name it {TOKENS!r}", where=f"graph {g.name}")
    return cands[0]


def analyze(g: Graph) -> StreamInfo:
    """Classify every node and list the ones that make the KV-cache rewrite illegal."""
    tokens = find_tokens(g)
    t = tokens.type
    assert isinstance(t, TensorType) and t.shape is not None
    seq = t.shape[1]
    if not isinstance(seq, str) or "*" in seq:
        raise KVCacheError(f"the sequence axis of {tokens.attrs['name']!r} is static ({seq}); "
                           f"a KV cache needs a model exported with a dynamic sequence length "
                           f"(e.g. torch.onnx.export(..., dynamic_axes=...) / dynamic_shapes)",
                           where=f"graph {g.name}")
    info = StreamInfo(seq=seq, batch=t.shape[0], tokens=tokens, mask=_input(g, MASK),
                      positions=_input(g, POSITIONS))
    for n in g.inputs:
        name = n.attrs["name"]
        if n is tokens or n is info.positions:
            info.kind[n] = "rows"
        elif n is info.mask:
            info.kind[n] = "aux"
        else:
            info.kind[n] = "aux"
            info.refusals.append(Refusal(n, f"input {name!r} is not one a generation loop "
                                            f"feeds ({TOKENS}, {MASK}, {POSITIONS})"))
    for n in g.nodes:
        if n.op == "input":
            continue
        kinds = [info.kind[v.node] for v in n.inputs]
        if n.op == "opaque" and n.attrs.get("op_type") in SHAPE_READS:
            info.kind[n] = "aux" if kinds else "const"
            continue
        if "rows" in kinds:
            info.kind[n] = "rows"
            reason = _mixing(info, n)
            if reason:
                info.refusals.append(Refusal(n, reason))
        elif "aux" in kinds:
            info.kind[n] = "aux"
        else:
            info.kind[n] = "aux" if n.op == "opaque" else "const"
    for v, name in zip(g.outputs, g.output_names):
        if info.of(v) != "rows":
            info.refusals.append(Refusal(v.node, f"output {name!r} does not depend on the "
                                                 f"tokens; a decoder-with-past has per-token "
                                                 f"outputs only"))
    return info


def _mixing(info: StreamInfo, n: Node) -> str | None:
    """Why node ``n`` (which reads the token stream) is not row-local, or None."""
    if n.op == "attention":
        info.attentions.append(n)
        if len(n.inputs) == 4 and info.of(n.inputs[3]) == "rows":
            return "the attention mask is computed from the token values"
        return None  # mixes keys along the sequence: causality is measured by probe
    opdef = get_op(n.op)
    in_types = tuple(v.type for v in n.inputs)
    axes = opdef.mixed_axes(in_types, n.attrs)
    if axes is None:
        what = f"opaque {n.attrs.get('op_type')}" if n.op == "opaque" else n.op
        return (f"{what} on the token stream: graphopt cannot tell whether it mixes positions "
                f"(declare OpDef.mixed_axes)")
    for i, a in axes:
        t = in_types[i] if i < len(in_types) else None
        if isinstance(t, TensorType) and t.shape is not None and a < len(t.shape) and \
                info.has_seq(t.shape[a]):
            return (f"{n.op} {_verb(opdef.cost_class)} along the sequence axis (axis {a} of "
                    f"input {i}, dim {t.shape[a]}): a token's value would depend on other "
                    f"positions than causal attention lets it")
    return None


def _verb(cost_class: str) -> str:
    return {"reduction": "reduces", "heavy": "combines positions", "injective": "moves data"
            }.get(cost_class, "mixes positions")


def require_legal(info: StreamInfo, limit: int = 8) -> None:
    """Raise KVCacheError listing the refusals (at most ``limit``), if any."""
    if not info.refusals:
        return
    lines = [str(r) for r in info.refusals[:limit]]
    more = len(info.refusals) - len(lines)
    if more > 0:
        lines.append(f"... and {more} more")
    raise KVCacheError("the KV-cache rewrite is illegal for this model:\n  " + "\n  ".join(lines))
