"""The progress display: live on a terminal, plain lines in a pipe, nothing with --quiet."""
from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from graphopt.progress import StepProgress

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "tiny_gpt2.onnx"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_pipe_gets_plain_lines_for_long_steps_only() -> None:
    buf = io.StringIO()
    p = StepProgress(buf, min_seconds=1.0, line_every=0.0)
    p("load", None)
    p("load", 0.1)
    p("simplify", None)
    p("simplify: cse (round 1)", None)
    p("simplify", 2.5)
    assert buf.getvalue() == ("graphopt: simplify: cse (round 1)\n"
                              "graphopt: simplify done in 2.50s\n")
    assert "\x1b" not in buf.getvalue()  # no terminal control codes in a pipe


def test_pipe_messages_are_rate_limited() -> None:
    buf = io.StringIO()
    p = StepProgress(buf, line_every=60.0)
    p("search", None)
    for k in range(50):
        p.say(f"{k}/50 graphs")
    assert buf.getvalue() == ""  # started < 60 s ago: no line yet


def test_quiet_prints_nothing() -> None:
    buf = _Tty()
    p = StepProgress(buf, quiet=True, verbose=True)
    p("load", None)
    p.say("1/2")
    p("load", 3.0)
    p.close()
    assert buf.getvalue() == ""


def test_terminal_gets_a_live_line_that_goes_away() -> None:
    t = _Tty()
    p = StepProgress(t, verbose=True)
    p("check", None)
    p.say("3/10 outputs")
    time.sleep(0.6)
    p("check", 0.7)
    s = t.getvalue()
    assert "graphopt: check: 3/10 outputs" in s  # the live line (rich)
    assert s.endswith("graphopt: check done in 0.70s\n")
    p("load", None)  # a step that fails: no end event; the command closes the display
    p.close()
    n = len(t.getvalue())
    time.sleep(0.6)
    assert len(t.getvalue()) == n  # nothing ticks over the error message


def _cli(args: list[str], tmp: Path) -> list[str]:
    return [sys.executable, "-m", "graphopt", "optimize", str(EXAMPLE), "-o",
            str(tmp / "out.onnx"), "--budget", "0.5", *args]


def test_cli_in_a_pipe_and_quiet(tmp_path: Path) -> None:
    r = subprocess.run(_cli(["--verbose"], tmp_path), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "graphopt: load done in" in r.stderr and "graphopt: check done in" in r.stderr
    assert "\x1b" not in r.stderr
    r = subprocess.run(_cli(["--quiet"], tmp_path), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""


def test_cli_on_a_terminal(tmp_path: Path) -> None:
    """The real command under a pseudo-terminal: the live line shows (rich's cursor control)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdout and stderr are the terminal
        os.execv(sys.executable, _cli(["--verbose"], tmp_path))
    out = b""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 1.0)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert os.WEXITSTATUS(status) == 0, text
    assert "\x1b[?25l" in text  # rich's live display hid the cursor while it drew the line
    assert "graphopt: check done in" in text
