"""``RematModule``: the trained module, and ``build_module`` which traces and plans it."""
from __future__ import annotations

from typing import Any

import torch
from torch.utils import _pytree as pytree

from ..errors import GraphOptError
from .measure import peak_bytes, saved_bytes
from .module import PlanOptions, plan_partition


class RematModule(torch.nn.Module):
    """Runs ``model``'s forward through the planned AOTAutograd function; ``model`` is a
    submodule, so parameters (and ``state_dict``) are shared. ``report``: the plan's facts."""

    def __init__(self, model: torch.nn.Module, compiled: Any, out_spec: Any,
                 example: tuple[Any, ...], opts: PlanOptions) -> None:
        super().__init__()
        self.model = model
        self._compiled = compiled
        self._out_spec = out_spec
        self._signature = [_sig(x) for x in example]
        self._opts = opts

    @property
    def report(self) -> Any:
        return self._opts.result["report"]

    def forward(self, *inputs: Any) -> Any:
        sig = [_sig(x) for x in inputs]
        if sig != self._signature:
            raise GraphOptError(f"inputs {sig} differ from the example inputs {self._signature} "
                                f"the plan was made for", where="RematModule")
        params = [p for _, p in self.model.named_parameters()]
        flat = self._compiled(*params, *inputs)
        return pytree.tree_unflatten(list(flat), self._out_spec["spec"])


def _sig(x: Any) -> tuple:
    if isinstance(x, torch.Tensor):
        return (tuple(x.shape), str(x.dtype))
    return ("value", repr(x))


def build_module(model: torch.nn.Module, example: tuple[Any, ...], opts: PlanOptions,
                 measure: bool) -> RematModule:
    """Trace ``model`` on ``example`` through AOTAutograd with the planning partitioner (the
    example step runs once, under a forked RNG state), and measure it when asked."""
    from torch._dynamo.backends.debugging import boxed_nop
    from torch._functorch.aot_autograd import aot_function

    names = [n for n, _ in model.named_parameters()]
    opts.num_params = len(names)
    out_spec: dict[str, Any] = {}

    def fn(*args: Any) -> tuple[Any, ...]:
        params = dict(zip(names, args[:len(names)]))
        out = torch.func.functional_call(model, params, tuple(args[len(names):]))
        flat, spec = pytree.tree_flatten(out)
        out_spec["spec"] = spec
        return tuple(flat)

    def partition_fn(joint: Any, _inputs: Any, *, num_fwd_outputs: int, **_: Any
                     ) -> tuple[Any, Any]:
        return plan_partition(joint, num_fwd_outputs, opts)

    # torch's aot_eager compiler: boxed code that drops each input (a saved tensor) after its
    # last use, so the backward frees saved values as it goes, as the schedule assumes
    compiled = aot_function(fn, fw_compiler=boxed_nop, bw_compiler=boxed_nop,
                            partition_fn=partition_fn)
    module = RematModule(model, compiled, out_spec, example, opts)
    with torch.random.fork_rng():
        _step(module, example)  # traces and plans
    if "report" not in opts.result:
        raise GraphOptError("AOTAutograd made no joint graph (does the model have parameters "
                            "that require grad?)", where="optimize_training")
    opts.result["report"].gradient_check = check_gradients(model, module, example)
    if measure:
        opts.result["report"].measured = measured(model, module, example)
    return module


GRAD_RTOL = 1e-6  # relative to each gradient's largest magnitude


def check_gradients(model: torch.nn.Module, module: torch.nn.Module, example: tuple[Any, ...]
                    ) -> dict[str, Any]:
    """The planned step's gradients against plain autograd's on ``example``, both from the same
    RNG seed (dropout draws alike); raises CheckError naming the parameter that differs by more
    than ``GRAD_RTOL`` of its largest magnitude. The module is returned only after this."""
    from ..errors import CheckError

    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        mine = _step(module, example)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        ref = _step(model, example)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    worst, bitwise = 0.0, True
    for name, a, b in zip(names, mine, ref):
        bitwise = bitwise and torch.equal(a, b)
        scale = float(b.abs().max()) if b.numel() else 0.0
        err = float((a - b).abs().max()) / scale if scale > 0 else float((a - b).abs().max())
        worst = max(worst, err)
        if err > GRAD_RTOL:
            raise CheckError(f"the rematerialized step's gradient of {name} differs from plain "
                             f"autograd's by {err:.3g} of its largest magnitude (> "
                             f"{GRAD_RTOL:g}); the module is not returned",
                             where="optimize_training")
    return {"parameters": len(names), "bitwise": bitwise, "max_relative_error": worst,
            "tolerance": GRAD_RTOL}


def _step(module: torch.nn.Module, example: tuple[Any, ...]) -> tuple[Any, ...]:
    """One forward + backward on ``example`` (loss: the sum of the float outputs), gradients
    returned, not accumulated into the parameters."""
    params = [p for p in module.parameters() if p.requires_grad]
    out = module(*example)
    leaves = [t for t in pytree.tree_leaves(out)
              if isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad]
    loss = sum(t.sum() for t in leaves)
    return torch.autograd.grad(loss, params)


def measured(model: torch.nn.Module, module: torch.nn.Module, example: tuple[Any, ...]
             ) -> dict[str, int]:
    """Saved bytes and step peaks (activations, total) of the plan and of plain autograd on
    ``example`` (``measure.py``)."""
    keep = list(model.parameters()) + list(example)
    out: dict[str, int] = {}
    with torch.random.fork_rng():
        out["saved"] = saved_bytes(lambda: module(*example), keep)
        out["saved_autograd"] = saved_bytes(lambda: model(*example), keep)
        mine = peak_bytes(lambda: _step(module, example))
        plain = peak_bytes(lambda: _step(model, example))
    out.update(peak_activations=mine["activations"], peak_total=mine["total"],
               peak_activations_autograd=plain["activations"], peak_total_autograd=plain["total"])
    return out
