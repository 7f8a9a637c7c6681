"""Measured memory of a training step: two real trackers.

* ``saved_bytes(step)``: the bytes autograd saves for the backward, summed over distinct
  storages by ``torch.autograd.graph.saved_tensors_hooks`` (every ``save_for_backward``,
  AOTAutograd's compiled function included).
* ``peak_bytes(step)``: the peak of live CPU allocations during the step above what was live when
  it started, from ``torch.profiler``'s memory timeline (``profile_memory=True``; each tensor
  allocation and free in time order).
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


def peak_bytes(step: Callable[[], object]) -> int:
    """Peak bytes allocated (and not yet freed) during ``step``, above the start."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                 with_stack=True) as prof:
        step()
    cur = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        if action == Action.CREATE:
            cur += size
        elif action == Action.DESTROY:
            cur -= size
        peak = max(peak, cur)
    return peak
