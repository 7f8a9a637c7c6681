"""IR ``Graph`` -> a ``torch.nn.Module`` that runs it with each op's ``torch`` aspect.

Constants become registered buffers (converted from numpy once), so ``.to(device)`` moves them.
Symbolic dims are bound from the inputs' shapes on each call (``graphopt.ops.symbols``).
Inputs are taken by position or by graph input name; the result is a tensor or a tuple, shaped
like the original module's output when the graph came from the PyTorch frontend (its pytree
output spec is kept in ``GraphMeta.metadata``), else a tensor for one output, a tuple otherwise.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import GraphOptError
from ..ir.graph import Graph
from ..ir.node import Node
from ..ir.types import TensorType
from .fx import OUT_SPEC_KEY, const_to_tensor

if TYPE_CHECKING:
    import torch


def to_callable(g: Graph, *, check_inputs: bool = True) -> "torch.nn.Module":
    """A torch module running ``g``; ``check_inputs`` checks input dtypes and static dims."""
    return _module_class()(g, check_inputs)


def _module_class() -> type:
    import torch

    class GraphModule(torch.nn.Module):
        """Runs an IR graph with torch ops (see graphopt.frontends.torch_export)."""

        def __init__(self, g: Graph, check_inputs: bool) -> None:
            super().__init__()
            from ..ops.registry import get_op

            self.graph = g
            self.check_inputs = check_inputs
            self._plan: list[tuple[Node, Any, list[int]]] = []
            self._const_names: dict[int, str] = {}
            nodes = g.nodes
            index = {id(n): i for i, n in enumerate(nodes)}
            last_use = {id(n): -1 for n in nodes}
            for i, n in enumerate(nodes):
                for v in n.inputs:
                    last_use[id(v.node)] = i
            for v in g.outputs:
                last_use[id(v.node)] = len(nodes)
            for i, n in enumerate(nodes):
                if n.op == "constant":
                    name = f"c{len(self._const_names)}"
                    try:
                        t = const_to_tensor(n.const)
                    except GraphOptError as e:
                        raise GraphOptError(e.message, where=_where(n)) from e
                    self.register_buffer(name, t, persistent=False)
                    self._const_names[id(n)] = name
                    continue
                if n.op == "input":
                    continue
                # inputs whose value is dead after this node
                free = sorted({index[id(v.node)] for v in n.inputs
                               if last_use[id(v.node)] == i})
                self._plan.append((n, get_op(n.op), free))
            self._index = index
            self._out_spec = _out_spec(g)

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            g = self.graph
            feed = _bind(g, args, kwargs)
            env: dict[int, tuple[Any, ...]] = {}
            for n in g.inputs:
                x = feed[n.attrs["name"]]
                if self.check_inputs:
                    _check_input(n, x)
                env[self._index[id(n)]] = (x,)
            for n in g.nodes:
                if n.op == "constant":
                    env[self._index[id(n)]] = (getattr(self, self._const_names[id(n)]),)
            from ..ops.symbols import bind_symbols, symbol_values

            try:
                syms = bind_symbols(g.input_types, [feed[nm] for nm in g.input_names])
            except GraphOptError as e:
                raise GraphOptError(f"graph {g.name}: {e.message}") from e
            with symbol_values(syms):
                outs = self._run(env)
            if self._out_spec is not None:
                from torch.utils import _pytree as pytree

                return pytree.tree_unflatten(outs, self._out_spec)
            return outs[0] if len(outs) == 1 else tuple(outs)

        def _run(self, env: dict[int, tuple[Any, ...]]) -> list[Any]:
            for n, opdef, free in self._plan:
                xs = [env[self._index[id(v.node)]][v.index] for v in n.inputs]
                try:
                    outs = opdef.torch(xs, n.attrs)
                except GraphOptError as e:
                    if e.where is None:
                        e.where = _where(n)
                    raise
                except Exception as e:  # noqa: BLE001 - re-raised naming the node
                    ins = ", ".join(_desc(x) for x in xs)
                    raise GraphOptError(f"{type(e).__name__}: {e} (inputs: {ins})",
                                        where=_where(n)) from e
                env[self._index[id(n)]] = tuple(outs)
                for k in free:
                    env.pop(k, None)
            return [env[self._index[id(v.node)]][v.index] for v in self.graph.outputs]

    return GraphModule


def _out_spec(g: Graph) -> Any:
    from torch.utils import _pytree as pytree

    for k, v in g.meta.metadata:
        if k == OUT_SPEC_KEY:
            spec = pytree.treespec_loads(v)
            if spec.num_leaves == len(g.outputs):
                return spec
    return None


def _bind(g: Graph, args: tuple, kwargs: dict) -> dict[str, Any]:
    names = g.input_names
    if len(args) > len(names):
        raise GraphOptError(f"graph {g.name} takes {len(names)} inputs {list(names)}, "
                            f"got {len(args)} positional")
    feed = dict(zip(names, args))
    for k, v in kwargs.items():
        if k not in names:
            raise GraphOptError(f"graph {g.name} has no input {k!r}; inputs: {list(names)}")
        if k in feed:
            raise GraphOptError(f"graph {g.name}: input {k!r} given twice")
        feed[k] = v
    missing = [n for n in names if n not in feed]
    if missing:
        raise GraphOptError(f"graph {g.name}: missing inputs {missing}")
    return feed


def _check_input(n: Node, x: Any) -> None:
    import torch

    t = n.out_types[0]
    name = n.attrs["name"]
    if not isinstance(t, TensorType):
        return
    if not isinstance(x, torch.Tensor):
        raise GraphOptError(f"input {name!r} must be a tensor of type {t}, got "
                            f"{type(x).__name__}")
    want = t.dtype.to_torch()
    bad = x.dtype != want
    if t.shape is not None:
        bad = bad or x.dim() != len(t.shape) or any(
            isinstance(d, int) and d != s for d, s in zip(t.shape, x.shape))
    if bad:
        raise GraphOptError(f"input {name!r} must be {t}, got {_desc(x)}")


def _desc(x: Any) -> str:
    import torch

    if isinstance(x, torch.Tensor):
        return f"{str(x.dtype).removeprefix('torch.')}{list(x.shape)}"
    return type(x).__name__


def _where(n: Node) -> str:
    return f"node {n.op} #{n.uid}" + (f" [{n.origin}]" if n.origin else "")
