"""The graph interpreter: one node walk, with each semantics a subclass.

``Interpreter`` (in the style of ``torch.fx.Interpreter``) binds a graph's inputs, visits its
nodes in order, evaluates each and keeps a value only as long as a later node reads it; errors
name the node. What a node *means* is a hook a subclass overrides:

* ``placeholder(node, value)``: a graph input's value (the torch callable checks it);
* ``constant(node)``: a constant's value (the torch callable reads its buffer; the verifier may
  read a scalar as a named constant);
* ``call_op(node, opdef, args)``: any other op, given its inputs' values; returns the outputs.

``run_node(node, args)`` dispatches one node to these and wraps its errors (``GraphOptError``
with ``where`` = the node); ``execute(g, env)`` is the walk (the codegen runtime replaces it by
its kernel schedule). Semantics: ``NumpyInterpreter`` and ``TorchInterpreter`` here, the z3
verifier's ``subst.verify_z3.Z3Interpreter``, the generator's fingerprints
``subst.fingerprint.ModPrimeInterpreter``; the torch callable (``frontends.torch_export``) and the
codegen runtime (``codegen.runtime``) are ``TorchInterpreter`` modules.

``run(g, inputs)`` takes the inputs as a mapping by input name or a sequence by position.
Symbolic dims are bound from the inputs' shapes (``ops/symbols.py``) where the semantics needs
them (``binds_symbols``).
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, ClassVar, ContextManager, Mapping, Sequence

from ..errors import GraphOptError, ShapeError
from .graph import Graph
from .node import Node
from .types import TensorType

if TYPE_CHECKING:
    from ..ops.registry import OpDef

Env = dict[tuple[int, int], Any]  # (id(node), output index) -> value
Inputs = Mapping[str, Any] | Sequence[Any]
BACKENDS = ("numpy", "torch")


def describe_value(x: Any) -> str:
    """A value in an error message: ``dtype[shape]`` for arrays and tensors."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"{str(x.dtype).removeprefix('torch.')}{list(x.shape)}"
    return type(x).__name__


def bind_inputs(g: Graph, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
                ) -> dict[str, Any]:
    """The feed by input name from values by position (``args``) and by name (``kwargs``):
    every input exactly once, no unknown names."""
    names = g.input_names
    if len(args) > len(names):
        raise GraphOptError(f"graph {g.name} takes {len(names)} inputs {list(names)}, "
                            f"got {len(args)} positional")
    feed = dict(zip(names, args))
    for k, v in (kwargs or {}).items():
        if k not in names:
            raise GraphOptError(f"graph {g.name} has no input {k!r}; inputs: {list(names)}")
        if k in feed:
            raise GraphOptError(f"graph {g.name}: input {k!r} given twice")
        feed[k] = v
    for n in g.inputs:  # an input with a default (an overridable ONNX initializer)
        if n.attrs["name"] not in feed and n.attrs.get("default") is not None:
            feed[n.attrs["name"]] = n.attrs["default"].array
    missing = [n for n in names if n not in feed]
    if missing:
        raise GraphOptError(f"graph {g.name}: missing inputs {missing}")
    return feed


class Interpreter:
    """Evaluates graphs node by node; subclasses give the semantics (see the module docstring).

    Values live in an ``Env`` keyed by (node id, output index). Stateless between runs unless a
    subclass keeps state (the z3 verifier's domain conditions)."""

    binds_symbols: ClassVar[bool] = True  # bind symbolic dims from the inputs' shapes
    drops_values: ClassVar[bool] = True  # drop each value after its last reader
    _sched: "tuple[Graph, list[tuple[Node, tuple[Node, ...]]]] | None" = None

    def run(self, g: Graph, inputs: Inputs = ()) -> list[Any]:
        """``g``'s output values; ``inputs`` by input name (mapping) or by position (list or
        tuple)."""
        if isinstance(inputs, Mapping):
            feed = bind_inputs(g, (), inputs)
        elif isinstance(inputs, (list, tuple)):
            feed = bind_inputs(g, inputs)
        else:
            raise TypeError(f"inputs must be a mapping by name or a list by position, got "
                            f"{type(inputs).__name__}")
        env: Env = {}
        for n in g.inputs:
            env[(id(n), 0)] = self.placeholder(n, feed[n.attrs["name"]])
        with self.symbols(g, feed):
            self.execute(g, env)
        return [env[(id(v.node), v.index)] for v in g.outputs]

    def execute(self, g: Graph, env: Env) -> None:
        """Evaluate every node of ``g`` into ``env`` (graph inputs are bound already), dropping
        each value after its last reader (``drops_values``)."""
        for n, dead in self.schedule(g):
            self.store(env, n, self.run_node(n, self.args_of(n, env)))
            for d in dead if self.drops_values else ():
                for k in range(len(d.out_types)):
                    env.pop((id(d), k), None)

    def schedule(self, g: Graph) -> list[tuple[Node, tuple[Node, ...]]]:
        """The nodes to evaluate in order, each with the nodes whose values die after it
        (remembered for the last graph run)."""
        if self._sched is not None and self._sched[0] is g:
            return self._sched[1]
        nodes = g.nodes
        last: dict[int, int] = {}
        for i, n in enumerate(nodes):
            for v in n.inputs:
                last[id(v.node)] = i
        for v in g.outputs:
            last[id(v.node)] = len(nodes)
        dead: list[list[Node]] = [[] for _ in nodes]
        for n in nodes:
            i = last.get(id(n), len(nodes))
            if i < len(nodes):
                dead[i].append(n)
        plan = [(n, tuple(dead[i])) for i, n in enumerate(nodes) if n.op != "input"]
        self._sched = (g, plan)
        return plan

    @staticmethod
    def args_of(n: Node, env: Env) -> list[Any]:
        return [env[(id(v.node), v.index)] for v in n.inputs]

    @staticmethod
    def store(env: Env, n: Node, outs: Sequence[Any]) -> None:
        for i, o in enumerate(outs):
            env[(id(n), i)] = o

    def symbols(self, g: Graph, feed: Mapping[str, Any]) -> ContextManager[None]:
        """The binding of ``g``'s symbolic dims from the inputs' shapes, while nodes run."""
        if not self.binds_symbols:
            return contextlib.nullcontext()
        from ..ops.symbols import bind_symbols, symbol_values

        try:
            syms = bind_symbols(g.input_types, [feed[nm] for nm in g.input_names])
        except ShapeError as e:
            raise ShapeError(f"graph {g.name}: {e.message}", where=e.where) from e
        return symbol_values(syms)

    # ---- one node ----------------------------------------------------------------------------
    def run_node(self, n: Node, args: Sequence[Any]) -> tuple[Any, ...]:
        """Node ``n``'s output values given its inputs' (not for graph inputs: ``run`` binds
        those); an error names the node."""
        from ..ops.registry import get_op

        try:
            if n.op == "constant":
                return (self.constant(n),)
            return tuple(self.call_op(n, get_op(n.op), args))
        except GraphOptError as e:
            if e.where is None:
                e.where = n.where
            raise
        except Exception as e:  # noqa: BLE001 - re-raised naming the node
            ins = ", ".join(describe_value(x) for x in args)
            raise GraphOptError(f"{type(e).__name__}: {e}" + (f" (inputs: {ins})" if ins else ""),
                                where=n.where) from e

    def placeholder(self, n: Node, value: Any) -> Any:
        """The value graph input ``n`` takes when given ``value``."""
        return value

    def constant(self, n: Node) -> Any:
        """A constant node's value; default: the ``constant`` op's semantics."""
        from ..ops.registry import get_op

        return self.call_op(n, get_op("constant"), [])[0]

    def call_op(self, n: Node, opdef: "OpDef", args: Sequence[Any]) -> Sequence[Any]:
        raise NotImplementedError(f"{type(self).__name__}.call_op")


class NumpyInterpreter(Interpreter):
    """The reference semantics: each op's ``numpy`` aspect."""

    def call_op(self, n: Node, opdef: "OpDef", args: Sequence[Any]) -> Sequence[Any]:
        return opdef.numpy(list(args), n.attrs)


class TorchInterpreter(Interpreter):
    """Each op's ``torch`` aspect; ``check_inputs``: inputs must be tensors of their declared
    dtype and static dims."""

    def __init__(self, check_inputs: bool = False) -> None:
        self.check_inputs = check_inputs

    def placeholder(self, n: Node, value: Any) -> Any:
        if n.attrs.get("default") is not None and type(value).__module__ == "numpy":
            import numpy as np
            import torch  # an input's default (bind_inputs) is numpy

            value = torch.from_numpy(np.array(value))
        if self.check_inputs:
            check_input(n, value)
        return value

    def call_op(self, n: Node, opdef: "OpDef", args: Sequence[Any]) -> Sequence[Any]:
        return opdef.torch(list(args), n.attrs)


def check_input(n: Node, x: Any) -> None:
    """``x`` is a tensor of input ``n``'s dtype, rank and static dims."""
    import torch

    t = n.out_types[0]
    name = n.attrs["name"]
    if not isinstance(t, TensorType):
        return
    if not isinstance(x, torch.Tensor):
        raise GraphOptError(f"input {name!r} must be a tensor of type {t}, got "
                            f"{type(x).__name__}")
    bad = x.dtype != t.dtype.to_torch()
    if t.shape is not None:
        bad = bad or x.dim() != len(t.shape) or any(
            isinstance(d, int) and d != s for d, s in zip(t.shape, x.shape))
    if bad:
        raise GraphOptError(f"input {name!r} must be {t}, got {describe_value(x)}")


def run(g: Graph, /, *args: Any, backend: str = "numpy", inputs: Inputs | None = None,
        **kwargs: Any) -> list[Any]:
    """Evaluate ``g`` (backend: numpy | torch). Inputs go by position, by name as keywords, or
    as one mapping / list in ``inputs=``. ``backend`` and ``inputs`` are this function's own
    keywords: a graph input of either name goes by position or in ``inputs=`` (any name may)."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        hint = ("; the graph has an input named 'backend': pass it by position or in inputs="
                if "backend" in g.input_names else "")
        raise GraphOptError(f"unknown backend {backend!r}: numpy or torch{hint}")
    interp = NumpyInterpreter() if backend == "numpy" else TorchInterpreter()
    if inputs is None:
        return interp.run(g, bind_inputs(g, args, kwargs))
    if not isinstance(inputs, (Mapping, list, tuple)):
        hint = ("; the graph has an input named 'inputs': pass it by position or in inputs="
                if "inputs" in g.input_names else "")
        raise GraphOptError(f"inputs= takes a mapping by name or a list by position{hint}")
    if args or kwargs:
        raise GraphOptError("give the inputs either in inputs= or as arguments, not both")
    return interp.run(g, inputs)
