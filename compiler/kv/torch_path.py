"""Torch callables of the cached forms of a decoder (``graphopt.kv.derive.Derivation``).

* ``decode_callable``: the decode graph (decoder with past) as a torch module. Inputs by the
  contract's names (``input_ids``, ``attention_mask``, ``position_ids``,
  ``past_key_values.{i}.key/value``; see ``graphopt.kv.spec``) or by position in that order;
  the result is a dict ``{"logits": ..., "present.0.key": ..., ...}`` in the decode graph's
  output order.
* ``prefill_callable``: the original network plus each layer's keys / values (inputs
  ``input_ids`` and ``attention_mask`` as the original takes them); result
  ``{"logits": ..., "present.{i}.key/value": ...}``.

CPU targets run the graph with each op's torch aspect (``frontends.torch_export``); GPU targets
(with CUDA present) or ``interpret=True`` run it through ``codegen.runtime.compile_graph``, fused
regions as generated Triton kernels -- the decode graph's attention (a few query rows over past +
new keys) as the split-KV decode-attention kernel. The decode graph's glue nodes (the cache
append ``Concat``, ``Shape``, ``Range``) run as torch ops on the inputs' device
(``ops.onnx_torch``), so a step makes no host round trip.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import GraphOptError
from ..ir.graph import Graph
from ..ir.interp import bind_inputs
from .derive import Derivation

if TYPE_CHECKING:
    import torch

LOGITS = "logits"


def graph_module(g: Graph, target: str = "cpu", kernels: bool | None = None,
                 interpret: bool = False) -> "torch.nn.Module":
    """``g`` as a torch module: generated kernels when ``kernels`` (default: a GPU target with
    CUDA present) or ``interpret`` (Triton's interpreter on CPU tensors), else torch ops."""
    from ..codegen.runtime import GPU_TARGETS, compile_graph, wants_kernels
    from ..frontends import torch_export

    if kernels is None:
        kernels = wants_kernels(target)
    if kernels or interpret:
        if target not in GPU_TARGETS:
            raise GraphOptError(f"generated kernels are for GPU targets {list(GPU_TARGETS)}, "
                                f"not {target!r}", where="kv.torch_path")
        return compile_graph(g, target, interpret=interpret)
    return torch_export.to_callable(g)


@functools.lru_cache(maxsize=None)
def _named_module_class() -> type:
    import torch

    class NamedOutputs(torch.nn.Module):
        """Runs a graph module and returns its outputs as a dict by ``names`` (in order)."""

        def __init__(self, module: torch.nn.Module, names: Sequence[str]) -> None:
            super().__init__()
            self.module = module
            self.names = list(names)

        @property
        def graph(self) -> Graph:
            return self.module.graph  # type: ignore[no-any-return]

        def forward(self, *args: Any, **kwargs: Any) -> dict[str, "torch.Tensor"]:
            g = self.module.graph
            with torch.no_grad():
                outs = self.module.run(g, bind_inputs(g, args, kwargs))
            return dict(zip(self.names, outs))

    return NamedOutputs


def _named(g: Graph, names: Sequence[str], target: str, kernels: bool | None,
           interpret: bool) -> "torch.nn.Module":
    return _named_module_class()(graph_module(g, target, kernels, interpret), names)


def decode_callable(derivation: Derivation, target: str = "cpu", kernels: bool | None = None,
                    interpret: bool = False) -> "torch.nn.Module":
    """The decode graph as a torch module (see the module docstring): inputs by the contract's
    names, outputs a dict in the decode graph's output order (``logits``, then
    ``present.{i}.key``, ``present.{i}.value`` per layer). ``.to(device)`` moves its
    constants."""
    g = derivation.decode
    return _named(g, g.output_names, target, kernels, interpret)


def prefill_callable(derivation: Derivation, target: str = "cpu", kernels: bool | None = None,
                     interpret: bool = False) -> "torch.nn.Module":
    """The prefill graph (the original plus ``present.{i}.key/value``) as a torch module taking
    the original's inputs; outputs a dict ``logits``, ``present.*`` (the original's output
    is named ``logits``)."""
    g = derivation.prefill
    n_cache = 2 * derivation.spec.num_layers
    head = list(g.output_names[:-n_cache])
    if len(head) == 1:
        head = [LOGITS]
    return _named(g, head + list(g.output_names[-n_cache:]), target, kernels, interpret)
