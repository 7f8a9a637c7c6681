"""Search budgets: graph counts and wall time, with a clock that can be shared and split.

A budget given in seconds (``Budget.of_seconds``, what ``optimize(budget=S)`` and ``graphopt
optimize --budget S`` make) is counted in work, not time: ``S * EXPLORED_PER_SECOND`` candidate
graphs explored, so the search stops at the same graph on every run and on every machine and the
same input gives the same output. The wall clock is only a safety stop, at ``SAFETY_FACTOR * S +
SAFETY_SLACK_S`` seconds; a search it stops reports ``stopped: "time"`` (``time_stopped``), and
only such a search may differ between runs (docs/determinism.md).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

# candidate graphs per second of a budget in seconds (the lazy search prices 200-450 a second on
# a 2-core CPU; counting fewer leaves slower machines inside the nominal time)
EXPLORED_PER_SECOND = 100
# the wall-clock safety stop of a budget in seconds: SAFETY_FACTOR * seconds + SAFETY_SLACK_S
SAFETY_FACTOR = 3.0
SAFETY_SLACK_S = 2.0


@dataclass
class Budget:
    """How long a search may run.

    seconds:     wall-clock limit (None: none); with a count limit set, a safety stop (a search
                 it stops depends on the machine's speed and load)
    max_graphs:  graphs taken off the queue and expanded (TASO's budget; None: none)
    max_explored: candidate graphs built and costed (None: none)
    patience:    stop after this many expansions without a better graph (None: never)
    safety_clock: the clock is a safety stop (``of_seconds``): a share of the budget gets all
                 the time left, not a fraction of it (the counts split the work)
    """

    seconds: float | None = 10.0
    max_graphs: int | None = 1000
    max_explored: int | None = None
    patience: int | None = None
    safety_clock: bool = False
    clock: Callable[[], float] = field(default=time.perf_counter, repr=False)
    started: float | None = field(default=None, repr=False)
    expanded: int = 0
    explored: int = 0

    def __post_init__(self) -> None:
        if self.seconds is not None and self.seconds < 0:
            raise ValueError(f"budget seconds must be >= 0, got {self.seconds}")
        for k in ("max_graphs", "max_explored", "patience"):
            v = getattr(self, k)
            if v is not None and v < 0:
                raise ValueError(f"budget {k} must be >= 0, got {v}")

    @staticmethod
    def of_seconds(seconds: float, max_graphs: int | None = None,
                   patience: int | None = None) -> "Budget":
        """A deterministic budget worth ``seconds`` of search: ``seconds * EXPLORED_PER_SECOND``
        candidate graphs explored (at least 1), the wall clock stopping it only at
        ``SAFETY_FACTOR * seconds + SAFETY_SLACK_S``."""
        if seconds < 0:
            raise ValueError(f"budget seconds must be >= 0, got {seconds}")
        return Budget(seconds=SAFETY_FACTOR * seconds + SAFETY_SLACK_S, max_graphs=max_graphs,
                      max_explored=max(1, int(round(seconds * EXPLORED_PER_SECOND))),
                      patience=patience, safety_clock=True)

    @property
    def deterministic(self) -> bool:
        """Whether a count limits the search (then only a safety stop by the clock makes two
        runs differ)."""
        return self.max_graphs is not None or self.max_explored is not None

    def start(self) -> "Budget":
        if self.started is None:
            self.started = self.clock()
        return self

    @property
    def elapsed(self) -> float:
        return 0.0 if self.started is None else self.clock() - self.started

    @property
    def remaining(self) -> float:
        """Seconds left (inf without a time limit)."""
        if self.seconds is None:
            return float("inf")
        return max(0.0, self.seconds - self.elapsed)

    def out_of_time(self) -> bool:
        return self.seconds is not None and self.elapsed >= self.seconds

    def exhausted(self) -> str | None:
        """Why the search must stop now ("time", "graphs", "explored"), or None."""
        if self.out_of_time():
            return "time"
        if self.max_graphs is not None and self.expanded >= self.max_graphs:
            return "graphs"
        if self.max_explored is not None and self.explored >= self.max_explored:
            return "explored"
        return None

    def share(self, fraction: float) -> "Budget":
        """A child budget with ``fraction`` of what is left (counts, and time unless the clock
        is a safety stop: then all the time left), started now."""
        f = min(max(fraction, 0.0), 1.0)
        secs = None if self.seconds is None else \
            self.remaining if self.safety_clock else self.remaining * f

        def part(limit: int | None, used: int) -> int | None:
            return None if limit is None else max(1, int(round((limit - used) * f)))

        return Budget(secs, part(self.max_graphs, self.expanded),
                      part(self.max_explored, self.explored), self.patience, self.safety_clock,
                      self.clock).start()

    def charge(self, child: "Budget") -> None:
        """Count a child's work against this budget."""
        self.expanded += child.expanded
        self.explored += child.explored
