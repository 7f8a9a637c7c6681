"""Counting the collectives a rank issues, from the process group's own records.

``count_collectives(fn, *args)`` runs ``fn`` under ``torch.profiler`` (record_shapes=True) and
counts the ``c10d::`` operator events the default process group records for each collective it
is asked to run (checked with torch 2.13 on gloo):

* all_reduce:     ``c10d::allreduce_`` (its tensor list's shapes are not recorded)
* all_gather:     ``c10d::_allgather_base_`` (all_gather_into_tensor) / ``c10d::allgather_``
* reduce_scatter: ``c10d::_reduce_scatter_base_`` (reduce_scatter_tensor) /
  ``c10d::reduce_scatter_``

The backend's own events (``gloo:all_reduce``, ``nccl:all_reduce``, ...) are not counted: gloo
implements a reduce_scatter with internal all_reduce calls, so they would count collectives the
program never asked for. torch 2.13's gloo process group has no work hook
(``_register_on_completion_hook`` is NCCL-only), hence the profiler.

Bytes are a rank's payload: the bytes of the tensor the rank contributes (its operand: the
all_reduce tensor, the all_gather input block, the reduce_scatter full input), as in the cost
model's collective cost. A ``_base_`` event records its input's shape and dtype. For a list form
(``allreduce_``, ``allgather_``, ``reduce_scatter_``) they are read from the backend event of the
same collective that starts after it and before the next c10d event; this needs synchronous
collectives (a rank program's are: each waits before the next op), and a missing backend event
is an error, not a guess.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import GraphOptError

__all__ = ["CollectiveCounts", "count_collectives", "counts_of", "C10D_EVENTS", "KINDS"]

KINDS = ("all_reduce", "all_gather", "reduce_scatter")
C10D_EVENTS = {
    "c10d::allreduce_": "all_reduce",
    "c10d::_allgather_base_": "all_gather",
    "c10d::allgather_": "all_gather",
    "c10d::_reduce_scatter_base_": "reduce_scatter",
    "c10d::reduce_scatter_": "reduce_scatter",
}
# the profiler's dtype names (c10's TypeMeta names) and their sizes in bytes
ITEMSIZE = {
    "float": 4, "double": 8, "c10::Half": 2, "c10::BFloat16": 2, "signed char": 1,
    "unsigned char": 1, "short int": 2, "int": 4, "long int": 8, "bool": 1,
    "c10::complex<float>": 8, "c10::complex<double>": 16, "unsigned short": 2,
    "unsigned int": 4, "unsigned long": 8, "c10::Float8_e4m3fn": 1, "c10::Float8_e5m2": 1,
}


@dataclass
class CollectiveCounts:
    """How many collectives of each kind a rank issued, and their payload bytes by kind."""

    all_reduce: int = 0
    all_gather: int = 0
    reduce_scatter: int = 0
    bytes: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})

    def add(self, kind: str, nbytes: int) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        self.bytes[kind] += nbytes

    @property
    def total(self) -> int:
        return self.all_reduce + self.all_gather + self.reduce_scatter

    def to_dict(self, rank: int | None = None) -> dict[str, Any]:
        """The JSON line of one rank: ``{"rank", "all_reduce", "all_gather", "reduce_scatter",
        "bytes": {kind: n}}`` (no "rank" when ``rank`` is None)."""
        d: dict[str, Any] = {} if rank is None else {"rank": rank}
        d.update({k: getattr(self, k) for k in KINDS})
        d["bytes"] = dict(self.bytes)
        return d


def _nbytes(shape: list[int], dtype: str, what: str) -> int:
    if dtype not in ITEMSIZE:
        raise GraphOptError(f"{what}: the profiler recorded dtype {dtype!r}, which "
                            f"graphopt.tp.count does not know the size of", where="torch.profiler")
    n = ITEMSIZE[dtype]
    for d in shape:
        n *= int(d)
    return n


def _backend_kind(name: str) -> str | None:
    """'all_reduce' for 'gloo:all_reduce' / 'nccl:all_reduce' (a backend's event), else None."""
    if name.startswith("c10d::") or ":" not in name:
        return None
    return name.split(":", 1)[1] if name.split(":", 1)[1] in KINDS else None


def _events(prof: Any) -> list[tuple[int, str, list, list]]:
    """(start ns, name, input shapes, input dtypes) of every event, by start time."""
    evs = [(e.start_ns(), e.name(), e.shapes(), e.dtypes())
           for e in prof.profiler.kineto_results.events()]
    return sorted(evs, key=lambda e: e[0])


def counts_of(events: list[tuple[int, str, list, list]]) -> CollectiveCounts:
    """The counts of profiler ``events`` (see ``_events``)."""
    counts = CollectiveCounts()
    c10d = [i for i, e in enumerate(events) if e[1].startswith("c10d::")]
    for j, i in enumerate(c10d):
        start, name, shapes, dtypes = events[i]
        kind = C10D_EVENTS.get(name)
        if kind is None:
            continue
        if kind != "all_reduce" and len(shapes) > 1 and shapes[1]:  # a _base_ form: (out, in)
            counts.add(kind, _nbytes(shapes[1], dtypes[1], name))
            continue
        end = events[c10d[j + 1]][0] if j + 1 < len(c10d) else None
        # gloo runs a list reduce_scatter as an all_reduce of the whole input
        kinds = (kind, "all_reduce") if kind == "reduce_scatter" else (kind,)
        backend = [e for e in events[i + 1:] if (end is None or e[0] < end)
                   and _backend_kind(e[1]) in kinds and e[2] and e[2][0]]
        if not backend:
            raise GraphOptError(f"{name} at {start} ns has no backend event ('<backend>:{kind}' "
                                f"with its input's shape) before the next collective; was it "
                                f"asynchronous?", where="torch.profiler")
        counts.add(kind, _nbytes(backend[0][2][0], backend[0][3][0], backend[0][1]))
    return counts


def count_collectives(fn: Callable[..., Any], *args: Any, **kwargs: Any
                      ) -> tuple[Any, CollectiveCounts]:
    """(``fn(*args, **kwargs)``, the collectives it issued on this rank) -- see the module
    docstring. Run it inside an initialized process group; nesting inside another profiler is
    not supported."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        result = fn(*args, **kwargs)
    return result, counts_of(_events(prof))
