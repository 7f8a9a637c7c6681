"""IR ``Graph`` -> a ``torch.nn.Module`` that runs it with each op's ``torch`` aspect.

Constants become registered buffers (converted from numpy once), so ``.to(device)`` moves them.
Symbolic dims are bound from the inputs' shapes on each call (``graphopt.ops.symbols``).
Inputs are taken by position or by graph input name; the result is a tensor or a tuple, shaped
like the original module's output when the graph came from the PyTorch frontend (its pytree
output spec is kept in ``GraphMeta.metadata``), else a tensor for one output, a tuple otherwise.
The module is a ``TorchInterpreter`` (``ir/interp.py``): the node walk, input checks and error
wrapping are the interpreter's; only the constants (buffers) and the output structure are its own.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from ..errors import GraphOptError
from ..ir.graph import Graph
from ..ir.interp import TorchInterpreter, bind_inputs
from ..ir.node import Node
from .fx import OUT_SPEC_KEY, const_to_tensor

if TYPE_CHECKING:
    import torch


def to_callable(g: Graph, *, check_inputs: bool = True) -> "torch.nn.Module":
    """A torch module running ``g``; ``check_inputs`` checks input dtypes and static dims."""
    return module_class()(g, check_inputs)


@functools.lru_cache(maxsize=None)
def module_class() -> type:
    """``GraphModule``: a ``torch.nn.Module`` that is a ``TorchInterpreter`` of its graph
    (defined on first use: the core does not import torch)."""
    import torch

    class GraphModule(torch.nn.Module, TorchInterpreter):
        """Runs an IR graph with torch ops (see graphopt.frontends.torch_export)."""

        def __init__(self, g: Graph, check_inputs: bool) -> None:
            torch.nn.Module.__init__(self)
            TorchInterpreter.__init__(self, check_inputs)
            self.graph = g
            self._const_names: dict[int, str] = {}
            for n in g.nodes:
                if n.op == "constant":
                    name = f"c{len(self._const_names)}"
                    try:
                        t = const_to_tensor(n.const)
                    except GraphOptError as e:
                        raise GraphOptError(e.message, where=n.where) from e
                    self.register_buffer(name, t, persistent=False)
                    self._const_names[id(n)] = name
            self._out_spec = _out_spec(g)

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            outs = self.run(self.graph, bind_inputs(self.graph, args, kwargs))
            if self._out_spec is not None:
                from torch.utils import _pytree as pytree

                return pytree.tree_unflatten(outs, self._out_spec)
            return outs[0] if len(outs) == 1 else tuple(outs)

        def constant(self, n: Node) -> Any:
            """The constant's buffer (converted once; follows ``.to()``)."""
            return getattr(self, self._const_names[id(n)])

    return GraphModule


def _out_spec(g: Graph) -> Any:
    from torch.utils import _pytree as pytree

    for k, v in g.meta.metadata:
        if k == OUT_SPEC_KEY:
            spec = pytree.treespec_loads(v)
            if spec.num_leaves == len(g.outputs):
                return spec
    return None
