"""Progress display for the ``graphopt`` command (``rich``).

One object serves every command. It takes the pipeline's step events (``progress(name, None)``
when a step starts, ``progress(name, seconds)`` when it ends; a name with ``": "`` is a sub-step
message of the running step) and free-form messages (``say``), and shows them three ways:

* on a terminal: a live ``rich`` status line (spinner, step, sub-step, elapsed time); a message
  ending in ``k/N`` turns it into a bar; it is removed when the step ends, and a step that took
  at least ``min_seconds`` leaves one "done in" line;
* not on a terminal (a pipe, a log file): plain lines, one per step that took ``min_seconds`` or
  more (every step with ``verbose``) and sub-step messages at most every ``line_every`` seconds;
* ``quiet``: nothing.
"""
from __future__ import annotations

import re
import sys
import time
from typing import Any, TextIO

_FRACTION = re.compile(r"(\d+)\s*/\s*(\d+)\s*\S*\s*$")


class StepProgress:
    """See the module docstring. ``prefix`` starts every line ("graphopt")."""

    def __init__(self, stream: TextIO | None = None, *, verbose: bool = False,
                 quiet: bool = False, min_seconds: float = 1.0, line_every: float = 5.0,
                 prefix: str = "graphopt", tty: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.verbose = verbose
        self.quiet = quiet
        self.min_seconds = min_seconds
        self.line_every = line_every
        self.prefix = prefix
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self.step = ""
        self.detail = ""
        self._last_line = 0.0
        self._live: Any = None  # rich.progress.Progress while a step runs on a terminal
        self._task: Any = None

    # ---- the pipeline's protocol -----------------------------------------------------------------
    def __call__(self, name: str, seconds: float | None) -> None:
        if self.quiet:
            return
        if seconds is None:
            if ": " in name:
                self.say(name.split(": ", 1)[1], step=name.split(": ", 1)[0])
                return
            self.step, self.detail = name, ""
            self._last_line = time.monotonic()
            if self.tty:
                self._show()
            return
        self._hide()
        if self.verbose or seconds >= self.min_seconds:
            self._line(f"{name} done in {seconds:.2f}s")

    def say(self, message: str, step: str | None = None) -> None:
        """A sub-step message of the running step (or a command's own status)."""
        if self.quiet:
            return
        if step is not None and step != self.step:
            self.step = step
        self.detail = message
        if self.tty:
            self._show()
            return
        now = time.monotonic()
        if self.verbose or now - self._last_line >= self.line_every:
            self._last_line = now
            self._line(f"{self.step}: {message}" if self.step else message)

    def close(self) -> None:
        """Stop the live line (a failed step never sends its end event)."""
        self._hide()

    # ---- output ----------------------------------------------------------------------------
    def _line(self, text: str) -> None:
        self.stream.write(f"{self.prefix}: {text}\n")
        self.stream.flush()

    def _show(self) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                                   TextColumn, TimeElapsedColumn)

        label = f"{self.prefix}: {self.step}" + (f": {self.detail}" if self.detail else "")
        m = _FRACTION.search(self.detail)
        done, total = (int(m.group(1)), int(m.group(2))) if m else (0, None)
        if self._live is None:
            console = Console(file=self.stream, force_terminal=True, highlight=False)
            self._live = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                  BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                  console=console, transient=True, refresh_per_second=4)
            self._live.start()
            self._task = self._live.add_task(label, total=total, completed=done)
            return
        self._live.update(self._task, description=label, total=total, completed=done)

    def _hide(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = self._task = None


def for_args(args: Any, prefix: str = "graphopt") -> StepProgress:
    """The progress display a command's parsed arguments ask for (``--quiet``, ``--verbose``)."""
    return StepProgress(sys.stderr, verbose=bool(getattr(args, "verbose", False)),
                        quiet=bool(getattr(args, "quiet", False)), prefix=prefix)
