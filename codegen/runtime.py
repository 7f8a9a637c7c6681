"""Runs a lowered graph: generated Triton kernels for its regions, torch ops for the rest.

``compile_graph(graph, target)`` lowers the graph (``graphopt.codegen.triton.lower``) and returns
a ``torch.nn.Module``. Kernels run on CUDA tensors, autotuned per device; with
``interpret=True`` they run in Triton's interpreter on CPU tensors (tests; needs
``TRITON_INTERPRET=1`` before triton's first import, which ``import_triton`` sets when it can).
Inputs go by position or by graph input name; outputs are shaped like the source module's.
"""
from __future__ import annotations

from typing import Any

from graphopt.errors import GraphOptError
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node

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


def _module_class() -> type:
    import torch

    from graphopt.frontends.fx import const_to_tensor
    from graphopt.frontends.torch_export import _bind, _check_input, _out_spec

    class KernelModule(torch.nn.Module):
        """Runs a ``Lowered`` graph: kernels for regions, torch ops elsewhere."""

        def __init__(self, lowered: Any, interpret: bool, autotune: bool) -> None:
            super().__init__()
            from graphopt.ops.registry import get_op

            from .triton.cache import load

            self.lowered = lowered
            self.graph: Graph = lowered.graph
            self.interpret = interpret
            self.autotune = autotune and not interpret
            self._tuner: Any = None
            self._const: dict[int, str] = {}
            for n in self.graph.nodes:
                if n.op == "constant":
                    name = f"c{len(self._const)}"
                    self.register_buffer(name, const_to_tensor(n.const), persistent=False)
                    self._const[id(n)] = name
            self._plan: list[tuple[str, Any, Any]] = []
            for s in lowered.steps:
                if s.kernel is not None:
                    self._plan.append(("kernel", s, load(s.kernel, interpret)))
                else:
                    self._plan.append(("torch", s.node, get_op(s.node.op)))
            self._out_spec = _out_spec(self.graph)

        @property
        def kernel_count(self) -> int:
            return sum(1 for k, _, _ in self._plan if k == "kernel")

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            from graphopt.ops.symbols import bind_symbols, symbol_values

            g = self.graph
            feed = _bind(g, args, kwargs)
            env: dict[tuple[int, int], Any] = {}
            for n in g.inputs:
                _check_input(n, feed[n.attrs["name"]])
                env[(id(n), 0)] = feed[n.attrs["name"]]
            for nid, name in self._const.items():
                env[(nid, 0)] = getattr(self, name)
            with symbol_values(bind_symbols(g.input_types, [feed[nm] for nm in g.input_names])):
                for kind, a, b in self._plan:
                    if kind == "torch":
                        self._run_torch(a, b, env)
                    else:
                        self._run_kernel(a, b, env)
            outs = [env[(id(v.node), v.index)] for v in g.outputs]
            if self._out_spec is not None:
                from torch.utils import _pytree as pytree

                return pytree.tree_unflatten(outs, self._out_spec)
            return outs[0] if len(outs) == 1 else tuple(outs)

        def _run_torch(self, n: Node, opdef: Any, env: dict) -> None:
            xs = [env[(id(v.node), v.index)] for v in n.inputs]
            try:
                outs = opdef.torch(xs, n.attrs)
            except GraphOptError:
                raise
            except Exception as e:  # noqa: BLE001 - re-raised naming the node
                raise GraphOptError(f"{type(e).__name__}: {e}", where=_where(n)) from e
            for i, o in enumerate(outs):
                env[(id(n), i)] = o

        def _run_kernel(self, step: Any, module: Any, env: dict) -> None:
            ks = step.kernel
            xs = [env[(id(v.node), v.index)] for v in ks.inputs]
            dev = xs[0].device if xs else None
            if dev is not None and dev.type != "cuda" and not self.interpret:
                raise GraphOptError(f"kernel {ks.name} got {dev.type} tensors; generated kernels "
                                    f"run on CUDA (or compile with interpret=True)",
                                    where=_where(step.region.nodes[0]))
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
                                    where=_where(step.region.nodes[0])) from e
            for v, o in zip(ks.outputs, outs):
                env[(id(v.node), v.index)] = o

        def _autotuner(self, dev: Any) -> Any:
            if self._tuner is None:
                import torch as _t

                from .triton.autotune import Autotuner

                self._tuner = Autotuner(_t.cuda.get_device_name(dev))
            return self._tuner

    return KernelModule


def _where(n: Node) -> str:
    return f"node {n.op} #{n.uid}" + (f" [{n.origin}]" if n.origin else "")
