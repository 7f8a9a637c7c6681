"""Graphs: derived from their outputs; edits are functional and share unchanged nodes."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

from .node import Node, Value
from .types import TensorType, ValueType


@dataclass(frozen=True)
class GraphMeta:
    """Model-level facts the exporter needs to write the model back faithfully."""

    opsets: tuple[tuple[str, int], ...] = (("", 18),)  # (domain, version)
    ir_version: int | None = None
    producer: str = "graphopt"
    doc: str = ""
    metadata: tuple[tuple[str, str], ...] = ()
    # ONNX local functions of the source model (serialized FunctionProto), kept for opaque nodes
    functions: tuple[bytes, ...] = ()
    source: str = ""  # file or module the graph came from (for error messages)

    def opset(self, domain: str = "") -> int | None:
        for d, v in self.opsets:
            if d == domain:
                return v
        return None


class Graph:
    """An IR graph: its inputs (``input`` nodes), outputs (values) and output names.

    The node list is derived: a toposort from the outputs, so dead code is gone by construction.
    """

    __slots__ = ("inputs", "outputs", "output_names", "name", "meta", "_nodes", "__weakref__")

    def __init__(self, inputs: Sequence[Node], outputs: Sequence[Value],
                 output_names: Sequence[str] | None = None, name: str = "main",
                 meta: GraphMeta | None = None) -> None:
        self.inputs: tuple[Node, ...] = tuple(inputs)
        self.outputs: tuple[Value, ...] = tuple(outputs)
        for n in self.inputs:
            if n.op != "input":
                raise ValueError(f"graph input must be an 'input' node, got {n.op}")
        names = [n.attrs["name"] for n in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate graph input names: {names}")
        if output_names is None:
            output_names = [f"out{i}" for i in range(len(self.outputs))]
        self.output_names: tuple[str, ...] = tuple(output_names)
        if len(self.output_names) != len(self.outputs):
            raise ValueError("one name per output is needed")
        self.name = name
        self.meta = meta or GraphMeta()
        self._nodes: tuple[Node, ...] | None = None

    # ---- structure -------------------------------------------------------------------------
    @property
    def nodes(self) -> tuple[Node, ...]:
        """All nodes reachable from the outputs (plus the graph inputs), in topological order."""
        if self._nodes is None:
            self._nodes = tuple(toposort([v.node for v in self.outputs], self.inputs))
        return self._nodes

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(n.attrs["name"] for n in self.inputs)

    @property
    def input_types(self) -> tuple[ValueType, ...]:
        return tuple(n.out_types[0] for n in self.inputs)

    @property
    def output_types(self) -> tuple[ValueType, ...]:
        return tuple(v.type for v in self.outputs)

    def users(self) -> dict[Node, list[tuple[Node, int]]]:
        """For each node, the (user node, input position) pairs that read one of its outputs."""
        out: dict[Node, list[tuple[Node, int]]] = {n: [] for n in self.nodes}
        for n in self.nodes:
            for i, v in enumerate(n.inputs):
                out[v.node].append((n, i))
        return out

    def op_counts(self, skip_sources: bool = True) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            if skip_sources and n.op in ("input", "constant"):
                continue
            k = n.op if n.op != "opaque" else f"opaque:{n.attrs['op_type']}"
            counts[k] = counts.get(k, 0) + 1
        return dict(sorted(counts.items()))

    def key(self) -> tuple:
        """Structural identity within this process (hash-consing makes it cheap)."""
        return (tuple(id(n) for n in self.inputs),
                tuple((id(v.node), v.index) for v in self.outputs), self.output_names)

    def fingerprint(self) -> str:
        """A stable content hash (sha256 of the text form, constants by content)."""
        from .text import print_graph

        h = hashlib.sha256(print_graph(self, inline_limit=0).encode())
        for n in self.nodes:
            if n.op == "constant" and n.const.has_array:
                h.update(n.const.array.tobytes())
        return h.hexdigest()

    def __hash__(self) -> int:
        return hash(self.key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Graph) and self.key() == other.key()

    # ---- functional edits ------------------------------------------------------------------
    def with_outputs(self, outputs: Sequence[Value], output_names: Sequence[str] | None = None
                     ) -> "Graph":
        return Graph(self.inputs, outputs, output_names or self.output_names, self.name, self.meta)

    def replace(self, mapping: Mapping[Value, Value]) -> "Graph":
        """Replace every use of each key value by its mapped value; rebuilds downstream nodes."""
        if not mapping:
            return self
        for old, new in mapping.items():
            if old.type != new.type and isinstance(old.type, TensorType):
                raise ValueError(f"replacement changes type {old.type} -> {new.type}")
        m = {(id(k.node), k.index): v for k, v in mapping.items()}
        return self.map_nodes(lambda n: None, _pre=m)

    def map_nodes(self, fn: Callable[[Node], "Sequence[Value] | None"],
                  _pre: dict | None = None) -> "Graph":
        """Rebuild the graph bottom-up. ``fn`` sees each node already rebuilt over new inputs and
        returns replacement values for its outputs, or None to keep it."""
        env: dict[tuple[int, int], Value] = dict(_pre or {})
        for n in self.nodes:
            if n.op == "input":
                continue
            ins = tuple(env.get((id(v.node), v.index), v) for v in n.inputs)
            nn = n.with_inputs(ins)
            repl = fn(nn)
            outs = tuple(repl) if repl is not None else nn.outputs
            if len(outs) != len(n.out_types):
                raise ValueError(f"replacement of {n.op} has {len(outs)} outputs, "
                                 f"want {len(n.out_types)}")
            for i, v in enumerate(outs):
                key = (id(n), i)
                if key not in env:
                    env[key] = v
        new_outs = [env.get((id(v.node), v.index), v) for v in self.outputs]
        return Graph(self.inputs, new_outs, self.output_names, self.name, self.meta)

    def to_text(self, inline_limit: int = 16) -> str:
        from .text import print_graph

        return print_graph(self, inline_limit=inline_limit)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return (f"<Graph {self.name}: {len(self.inputs)} inputs, {len(self.nodes)} nodes, "
                f"{len(self.outputs)} outputs>")


def toposort(roots: Iterable[Node], extra: Iterable[Node] = (),
             keep: Callable[[Node], bool] | None = None) -> list[Node]:
    """Iterative post-order DFS (no recursion limit on deep graphs); deterministic. ``keep``:
    only nodes it accepts are visited (a part of a graph; the walk stops at the others)."""
    order: list[Node] = []
    seen: set[int] = set()
    for n in extra:
        if id(n) not in seen:
            seen.add(id(n))
            order.append(n)
    for root in roots:
        if id(root) in seen or (keep is not None and not keep(root)):
            continue
        stack: list[tuple[Node, int]] = [(root, 0)]
        seen.add(id(root))
        while stack:
            node, i = stack[-1]
            if i < len(node.inputs):
                stack[-1] = (node, i + 1)
                child = node.inputs[i].node
                if id(child) not in seen and (keep is None or keep(child)):
                    seen.add(id(child))
                    stack.append((child, 0))
            else:
                stack.pop()
                order.append(node)
    return order


@dataclass
class Stats:
    """Counters a pass or stage reports."""

    counts: dict[str, int] = field(default_factory=dict)

    def bump(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n
