"""The training step's joint graph: forward + backward from AOTAutograd, lifted into the IR.

``JointGraph.build(joint_module, num_fwd_outputs)`` takes the FX joint graph AOTAutograd hands a
partitioner (placeholders ``primals_*`` and ``tangents_*``, the forward outputs first, then one
gradient per primal) and records, per FX node, what the placement solvers need:

* ``forward`` nodes: the calls that depend on no tangent and either feed a forward output or
  are not tagged ``is_backward`` by AOTAutograd (a layer norm's saved mean and rstd);
  ``backward`` nodes: the rest (also the transposes of saved values the backward's matmuls read);
* ``needed``: the forward nodes a backward node reads (each must be saved or recomputed);
* bytes and storage: each value's byte size comes from its IR type; a view (an aten op whose
  schema says its result aliases an input) shares its base's storage, so saving a view keeps its
  base alive (``storage[name]`` is the root's name);
* ``cost[name]``: the IR cost model's time for the IR nodes lifting that FX node (the CPU device
  profile; ``fusion=False``: eager torch runs each op as its own kernel);
* ``rng``: nodes whose aten op is tagged ``nondeterministic_seeded`` (dropout's
  ``native_dropout``, ``rand``, ``bernoulli``): never recomputed;
* ``kind``: "view", "pointwise" (the IR cone holds only source / view / pointwise / injective
  ops) or "heavy" (a matmul, a reduction, an opaque aten op such as ``native_layer_norm`` or
  ``_safe_softmax``): what the min-cut baseline may recompute.

``ir_forward`` maps each forward FX name to its IR value, ``ir_backward`` is the backward as an
IR graph reading every needed forward value as an ``input`` node of that name (the all-saved
plan), and ``passes/remat.py`` rewrites it into a plan's backward.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..cost.model import CostModel, kind_of, Kind
from ..errors import GraphOptError
from ..frontends.fx import ConstCache
from ..frontends.fx_lift import Lifter
from ..ir.graph import Graph, toposort
from ..ir.node import Node, Value, input_node
from ..ops.registry import nbytes
from ..passes.remat import rebuild

POINTWISE_KINDS = (Kind.SOURCE, Kind.VIEW, Kind.POINTWISE, Kind.INJECTIVE)


@dataclass
class JointGraph:
    """The joint forward/backward graph with per-node facts (see the module docstring)."""

    module: Any  # torch.fx.GraphModule
    num_fwd_outputs: int
    nodes: dict[str, Any]  # FX name -> fx.Node
    forward: list[str]  # forward call nodes, in graph order
    backward: list[str]
    primals: list[str]
    tangents: list[str]
    needed: list[str]  # forward nodes read by backward nodes, in graph order
    inputs: dict[str, list[str]]  # forward node -> the forward nodes it reads (no primals)
    tensor: dict[str, bool]  # forward node -> whether it is one tensor (a tuple is not)
    nbytes: dict[str, int]  # byte size of each tensor node (its own view, not its storage)
    storage: dict[str, str]  # tensor node -> the node owning its storage (itself unless a view)
    cost: dict[str, float]  # seconds to compute the node (IR cost model)
    rng: set[str]
    kind: dict[str, str]
    outputs: list[str]  # forward outputs (names of FX nodes)
    ir_forward: dict[str, Value]
    ir_backward: Graph
    ir_values: dict[str, Any] = field(default_factory=dict)  # FX name -> Value | tuple
    params: frozenset[str] = frozenset()  # primals that are parameters (not user inputs)

    # ---- derived facts --------------------------------------------------------------------------
    def storage_bytes(self, root: str) -> int:
        """Bytes of the storage owned by ``root`` (a primal's storage costs nothing: it is alive
        anyway)."""
        return 0 if root in self.primal_set else self.nbytes[root]

    @property
    def primal_set(self) -> set[str]:
        return set(self.primals)

    def input_dependent(self) -> set[str]:
        """Forward nodes computed from a user input or a random op (the rest derive from
        parameters and constants alone: weight transposes, causal masks)."""
        dep = set(self.primals) - set(self.params)
        for f in self.forward:
            if f in self.rng or any(a.name in dep for a in self.nodes[f].all_input_nodes):
                dep.add(f)
        return dep - set(self.primals)

    def saved_bytes(self, saved: Iterable[str]) -> int:
        """Bytes kept alive from the forward to the backward when ``saved`` are saved (each
        storage counted once)."""
        return sum(self.storage_bytes(r) for r in {self.storage[s] for s in saved})

    def saveable(self, name: str) -> bool:
        """Whether ``name`` can be saved: one tensor (a tuple-valued call cannot)."""
        return self.tensor.get(name, False)

    def recomputable(self, name: str) -> bool:
        """Whether ``name`` may be recomputed in the backward: not a random op."""
        return name not in self.rng

    # ---- construction ---------------------------------------------------------------------------
    @staticmethod
    def build(module: Any, num_fwd_outputs: int, num_params: int = 0,
              device: str = "cpu") -> "JointGraph":
        """The joint graph of ``module`` (AOTAutograd's joint FX module); its first
        ``num_params`` primals are parameters, the rest user inputs."""
        g = module.graph
        nodes = {n.name: n for n in g.nodes}
        placeholders = [n for n in g.nodes if n.op == "placeholder"]
        primals = [n.name for n in placeholders if n.name.startswith("primals")]
        tangents = [n.name for n in placeholders if n.name.startswith("tangents")]
        other = [n.name for n in placeholders if n.name not in primals and n.name not in tangents]
        if other:
            raise GraphOptError(f"joint graph inputs {other} are neither primals nor tangents "
                                f"(RNG seeds or symbolic sizes are not supported)",
                                where="remat joint graph")
        on_tangent: set[str] = set(tangents)
        calls = [n for n in g.nodes if n.op == "call_function"]
        for n in calls:
            if any(a.name in on_tangent for a in n.all_input_nodes):
                on_tangent.add(n.name)
        out_node = next(n for n in g.nodes if n.op == "output")
        fwd_outs = [a.name for a in out_node.args[0][:num_fwd_outputs] if a is not None]
        feeds_out = ancestors([nodes[o] for o in fwd_outs])
        forward = [n.name for n in calls if n.name not in on_tangent and (
            n.name in feeds_out or n.meta.get("partitioner_tag") != "is_backward")]
        fwd = set(forward)
        backward = [n.name for n in calls if n.name not in fwd]
        bwd = set(backward)
        needed = [f for f in forward if any(u.name in bwd for u in nodes[f].users)]
        inputs = {f: [a.name for a in nodes[f].all_input_nodes if a.name in fwd]
                  for f in forward}
        rng = {f for f in forward if _is_rng(nodes[f])}
        # the IR: every placeholder an input, so parameters stay values (not constants)
        kinds = {p.name: ("input", p.name) for p in placeholders}
        from torch._subclasses.fake_tensor import unset_fake_temporarily

        with unset_fake_temporarily():  # AOTAutograd partitions under its fake mode
            lifted = _without_unused_nones(module)
            lifter = Lifter(lifted, kinds, "joint", ConstCache())
            for n in lifted.graph.nodes:  # Lifter.run without its outputs: a gradient may be None
                if n.op != "output":
                    try:
                        lifter.visit(n)
                    except GraphOptError:
                        raise
                    except Exception as e:  # noqa: BLE001 - re-raised naming the node
                        raise GraphOptError(f"{type(e).__name__}: {e}",
                                            where=lifter.where(n)) from e
        by_name = {n.name: n for n in lifted.graph.nodes}
        env = {nodes[k]: lifter.env[by_name[k]] for k in nodes if by_name[k] in lifter.env}
        tensor = {f: isinstance(env.get(nodes[f]), Value) for f in forward}
        for f in forward:
            if not tensor[f] and not isinstance(env.get(nodes[f]), tuple):
                raise GraphOptError(f"forward node lifted to {type(env.get(nodes[f])).__name__}, "
                                    f"neither a tensor nor a tuple of tensors",
                                    where=f"remat joint graph, fx node {f}")
        nb: dict[str, int] = {}
        for name, n in nodes.items():
            v = env.get(n)
            if isinstance(v, Value):
                nb[name] = int(nbytes(v.type))
        storage = {}
        for name, n in nodes.items():
            if name in nb:
                storage[name] = _storage_root(n, nb, storage)
        model = CostModel(device, fusion=False)
        cost: dict[str, float] = {}
        kind: dict[str, str] = {}
        for f in forward:
            new = _new_ir_nodes(nodes[f], env)
            if f in storage and storage[f] != f:
                new = []  # an aten view: torch runs no kernel (the IR may spell it as a copy)
            outs = _values(env[nodes[f]])
            cost[f] = model.nodes_time(new, outs) if new else 0.0
            ks = {kind_of(x.op) for x in new}
            if nodes[f].target is operator.getitem or not new or ks <= {Kind.SOURCE, Kind.VIEW}:
                kind[f] = "view"
            elif ks <= set(POINTWISE_KINDS):
                kind[f] = "pointwise"
            else:
                kind[f] = "heavy"
        ir_forward = {f: env[nodes[f]] for f in forward if tensor[f]}
        ir_backward = _backward_graph(nodes, env, needed, out_node, num_fwd_outputs, primals,
                                      tangents)
        return JointGraph(module, num_fwd_outputs, nodes, forward, backward, primals, tangents,
                          needed, inputs, tensor, nb, storage, cost, rng, kind, fwd_outs,
                          ir_forward, ir_backward, dict(env_items(nodes, env)),
                          frozenset(primals[:num_params]))


def env_items(nodes: dict[str, Any], env: dict[Any, Any]) -> Iterable[tuple[str, Any]]:
    for name, n in nodes.items():
        if n in env:
            yield name, env[n]


def ancestors(roots: list[Any]) -> set[str]:
    """Names of the FX nodes ``roots`` are computed from (themselves included)."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        n = stack.pop()
        if n.name not in seen:
            seen.add(n.name)
            stack.extend(n.all_input_nodes)
    return seen


def _without_unused_nones(module: Any) -> Any:
    """A copy of ``module`` for lifting, where a multi-output call's ``None`` results that no
    ``getitem`` reads (``native_layer_norm_backward`` of an input that needs no gradient) are
    typed as empty tensors: the IR has no ``None`` value, and nothing reads these."""
    import copy

    import torch

    gm = copy.deepcopy(module)
    for n in gm.graph.nodes:
        val = n.meta.get("val")
        if n.op != "call_function" or not isinstance(val, (tuple, list)) \
                or not any(v is None for v in val):
            continue
        read = {u.args[1] for u in n.users if u.target is operator.getitem}
        like = next((v for v in val if isinstance(v, torch.Tensor)), None)
        if like is None or any(v is None and i in read for i, v in enumerate(val)):
            continue
        n.meta["val"] = type(val)(torch.empty(0, dtype=like.dtype) if v is None else v
                                  for v in val)
    return gm


def _is_rng(n: Any) -> bool:
    import torch

    tags = getattr(n.target, "tags", ())
    return torch.Tag.nondeterministic_seeded in tags


def _storage_root(n: Any, nb: dict[str, int], storage: dict[str, str]) -> str:
    """The FX node owning ``n``'s storage: the base of an aliasing view chain."""
    schema = getattr(n.target, "_schema", None)
    if n.op == "call_function" and schema is not None and schema.returns \
            and schema.returns[0].alias_info is not None:
        for a, arg in zip(n.args, schema.arguments):
            if arg.alias_info is not None and hasattr(a, "name") and a.name in storage:
                return storage[a.name]
    return n.name


def _values(v: Any) -> list[Value]:
    if isinstance(v, Value):
        return [v]
    return [x for x in v if isinstance(x, Value)]


def _new_ir_nodes(n: Any, env: dict[Any, Any]) -> list[Node]:
    """The IR nodes lifting FX node ``n``: its values' cone, down to its FX inputs' values."""
    stop: set[int] = set()
    for a in n.all_input_nodes:
        for v in _values(env.get(a, ())) if a in env else []:
            stop.add(id(v.node))
    roots = [v.node for v in _values(env[n])]
    if not roots:
        return []
    cone = toposort(roots, keep=lambda x: id(x) not in stop)
    return [x for x in cone if id(x) not in stop and x.op not in ("input", "constant")]


def _backward_graph(nodes: dict[str, Any], env: dict[Any, Any], needed: list[str],
                    out_node: Any, num_fwd_outputs: int, primals: list[str],
                    tangents: list[str]) -> Graph:
    """The backward as an IR graph over primals, tangents and one input per needed forward
    value (the all-saved plan)."""
    boundary: dict[tuple[int, int], Value] = {}
    for f in needed:
        v = env.get(nodes[f])
        if isinstance(v, Value):
            boundary[(id(v.node), v.index)] = input_node(f, v.type).out
    outs: list[Value] = []
    names: list[str] = []
    for i, a in enumerate(out_node.args[0][num_fwd_outputs:]):
        if a is None:
            continue
        v = env.get(a)
        if not isinstance(v, Value):
            raise GraphOptError(f"gradient {i} is {type(v).__name__}, not a tensor",
                                where=f"remat joint graph, fx node {a.name}")
        outs.append(v)
        names.append(f"grad_{primals[i] if i < len(primals) else i}")
    rebuilt = rebuild(outs, boundary)
    ins = [x for x in toposort([v.node for v in rebuilt]) if x.op == "input"]
    return Graph(ins, rebuilt, names, name="backward")
