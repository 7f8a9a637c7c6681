"""IR ``Graph`` -> a ``torch.nn.Module`` that runs it with each op's ``torch`` aspect.

Constants become registered buffers (converted from numpy once), so ``.to(device)`` moves them.
Symbolic dims are bound from the inputs' shapes on each call (``graphopt.ops.symbols``).
Inputs are taken by position or by graph input name; the result is a tensor or a tuple, shaped
like the original module's output when the graph came from the PyTorch frontend (its pytree
output spec is kept in ``GraphMeta.metadata``), else a tensor for one output, a tuple otherwise.
The module is a ``TorchInterpreter`` (``ir/interp.py``): the node walk, input checks and error
wrapping are the interpreter's; only the constants (buffers) and the output structure are its own.
With ``fast=True`` (the default) the walk is the plan of ``frontends.torch_quant``: lowered
quantized linears as fused torch kernels, the other nodes with less per-node overhead.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from ..errors import GraphOptError
from ..ir.graph import Graph
from ..ir.interp import TorchInterpreter, bind_inputs
from ..ir.node import Node
from .fx import OUT_SPEC_KEY, const_to_tensor
from .fx_outputs import loads_out_spec
from .torch_quant import Plan, build_plan

if TYPE_CHECKING:
    import torch


def to_callable(g: Graph, *, check_inputs: bool = True, fast: bool = True) -> "torch.nn.Module":
    """A torch module running ``g``; ``check_inputs`` checks input dtypes and static dims.
    ``fast``: run by ``frontends.torch_quant``'s plan (fused quantized linears, listed in
    ``module.plan.regions``, the others' reasons in ``module.plan.fallbacks``); False: node by
    node (the reference)."""
    return module_class()(g, check_inputs, fast)


@functools.lru_cache(maxsize=None)
def module_class() -> type:
    """``GraphModule``: a ``torch.nn.Module`` that is a ``TorchInterpreter`` of its graph
    (defined on first use: the core does not import torch)."""
    import torch

    class GraphModule(torch.nn.Module, TorchInterpreter):
        """Runs an IR graph with torch ops (see graphopt.frontends.torch_export)."""

        def __init__(self, g: Graph, check_inputs: bool, fast: bool = True) -> None:
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
            # ---- fast path: fused quantized linears, lean node steps (frontends.torch_quant)
            self._fast = fast
            self._plan: Plan | None = None

        @property
        def plan(self) -> "Plan | None":
            """The fast path's plan (built on first use); None when run node by node."""
            if self._plan is None and self._fast:
                self._plan = build_plan(self.graph, self._const_names)
            return self._plan

        def execute(self, g: Graph, env: Any) -> None:
            plan = self.plan if g is self.graph else None
            if plan is not None and plan.accepts(env):
                plan.run(self, env)
            else:
                TorchInterpreter.execute(self, g, env)
            # ---- end fast path

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


def has_out_spec(g: Graph) -> bool:
    """True when ``g`` carries its source module's output structure (its callable rebuilds it);
    False for a flat list of outputs (a graph read from ONNX, say)."""
    return _out_spec(g) is not None


def _out_spec(g: Graph) -> Any:
    for k, v in g.meta.metadata:
        if k == OUT_SPEC_KEY:
            spec = loads_out_spec(v)
            if spec.num_leaves == len(g.outputs):
                return spec
    return None
