"""Measured memory of a training step: two real trackers.

* ``saved_bytes(step)``: the bytes autograd saves for the backward, summed over distinct
  storages by ``torch.autograd.graph.saved_tensors_hooks`` (every ``save_for_backward``,
  AOTAutograd's compiled function included).
* ``peak_bytes(step)``: the peaks of live CPU allocations during the step above what was live
  when it started, from ``torch.profiler``'s memory timeline (``profile_memory=True``; each
  tensor allocation and free in time order, with the memory profiler's category of each), of
  everything and of activations.
"""
from __future__ import annotations

from typing import Callable, Iterable


def saved_bytes(step: Callable[[], object], exclude: Iterable[object] = ()) -> int:
    """Bytes of distinct storages saved for the backward while ``step`` runs its forward,
    leaving out the storages of the tensors in ``exclude`` (parameters and inputs: alive
    anyway)."""
    import torch

    skip = {t.untyped_storage().data_ptr() for t in exclude if isinstance(t, torch.Tensor)}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in skip:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values())


def peak_bytes(step: Callable[[], object]) -> dict[str, int]:
    """Peaks during ``step`` above its start, from the profiler's memory timeline: "total" (all
    CPU allocations) and "activations" (tensors the memory profiler categorises as activations
    or cannot categorise: the values inside AOTAutograd's compiled function, saved and
    recomputed ones, are uncategorised; gradients, temporaries, autograd's own buffers,
    parameters and inputs are left out)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action, Category

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                 with_stack=True) as prof:
        step()
    mp = prof._memory_profile()
    cur = {"total": 0, "activations": 0}
    peak = dict(cur)
    for _, action, (key, version), size in mp.timeline:
        sign = 1 if action == Action.CREATE else -1 if action == Action.DESTROY else 0
        if not sign:
            continue
        cur["total"] += sign * size
        if mp._categories.get(key, version) in (None, Category.ACTIVATION):
            cur["activations"] += sign * size
        for k in cur:
            peak[k] = max(peak[k], cur[k])
    return peak
