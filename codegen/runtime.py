"""Runs a lowered graph: generated Triton kernels for its regions, torch ops for the rest.

``compile_graph(graph, target)`` lowers the graph (``graphopt.codegen.triton.lower``) and returns
a ``torch.nn.Module``. Kernels run on CUDA tensors, autotuned per device; with
``interpret=True`` they run in Triton's interpreter on CPU tensors (tests; needs
``TRITON_INTERPRET=1`` before triton's first import, which ``import_triton`` sets when it can).
Inputs go by position or by graph input name; outputs are shaped like the source module's.
The module is the torch callable (``frontends/torch_export.py``, a ``TorchInterpreter``) with the
lowering's schedule as its node walk: a kernel per region, ``run_node`` for every other node.
"""
from __future__ import annotations

import functools
from typing import Any

from graphopt.errors import GraphOptError
from graphopt.ir.graph import Graph
from graphopt.ir.interp import Env

GPU_TARGETS = ("a100", "h100", "h200")


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def wants_kernels(target: str) -> bool:
    """Generated kernels are the default for GPU targets when a GPU is present."""
    return target in GPU_TARGETS and cuda_available()


def compile_graph(g: Graph, target: str = "a100", *, interpret: bool = False,
                  autotune: bool = True) -> Any:
    """A torch module running ``g`` through generated kernels (see the module docstring)."""
    from .triton.lower import lower

    return _module_class()(lower(g, target), interpret, autotune)


@functools.lru_cache(maxsize=None)
def _module_class() -> type:
    from graphopt.frontends.torch_export import module_class

    class KernelModule(module_class()):  # type: ignore[misc]
        """Runs a ``Lowered`` graph: kernels for regions, torch ops elsewhere (a torch
        callable whose node walk is the lowering's schedule)."""

        def __init__(self, lowered: Any, interpret: bool, autotune: bool) -> None:
            super().__init__(lowered.graph, True)
            from .triton.cache import load

            self.lowered = lowered
            self.interpret = interpret
            self.autotune = autotune and not interpret
            self._tuner: Any = None
            self._kernels: list[Any] = [None if s.kernel is None else load(s.kernel, interpret)
                                        for s in lowered.steps]

        @property
        def kernel_count(self) -> int:
            return sum(1 for k in self._kernels if k is not None)

        def execute(self, g: Graph, env: Env) -> None:
            for n in g.nodes:
                if n.op == "constant":
                    self.store(env, n, self.run_node(n, []))
            for step, module in zip(self.lowered.steps, self._kernels):
                if module is None:
                    self.store(env, step.node, self.run_node(step.node,
                                                             self.args_of(step.node, env)))
                else:
                    self._run_kernel(step, module, env)

        def _run_kernel(self, step: Any, module: Any, env: Env) -> None:
            ks = step.kernel
            xs = [env[(id(v.node), v.index)] for v in ks.inputs]
            dev = xs[0].device if xs else None
            if dev is not None and dev.type != "cuda" and not self.interpret:
                raise GraphOptError(f"kernel {ks.name} got {dev.type} tensors; generated kernels "
                                    f"run on CUDA (or compile with interpret=True)",
                                    where=step.region.nodes[0].where)
            cfg = None
            if self.autotune and dev is not None and dev.type == "cuda":
                cfg = self._autotuner(dev).config(ks.name, module, xs)
            try:
                outs = module.launch(*xs, config=cfg)
            except GraphOptError:
                raise
            except Exception as e:  # noqa: BLE001 - re-raised naming the region
                raise GraphOptError(f"kernel {ks.name} ({ks.summary}) failed: "
                                    f"{type(e).__name__}: {e}",
                                    where=step.region.nodes[0].where) from e
            for v, o in zip(ks.outputs, outs):
                env[(id(v.node), v.index)] = o

        def _autotuner(self, dev: Any) -> Any:
            if self._tuner is None:
                import torch as _t

                from .triton.autotune import Autotuner

                self._tuner = Autotuner(_t.cuda.get_device_name(dev))
            return self._tuner

    return KernelModule
