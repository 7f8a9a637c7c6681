"""Imported by the fuzzer's fork server before it forks any CLI run: runs ``graphopt optimize
--no-check`` once on every seed model (output discarded), so that the forked runs start with
graphopt's modules imported and its registries and rule sets loaded (a cold run takes ~3 s, a
warm one ~0.2 s). Nothing here starts a thread: no ONNX Runtime session runs without the check.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile

from graphopt.cli import main

from .seeds import MODEL, SEEDS, write_seed


def warm() -> None:
    """One quiet ``--no-check`` optimize of each seed; raises if a seed does not optimize."""
    with tempfile.TemporaryDirectory(prefix="graphopt-fuzz-warm-") as d:
        for name in SEEDS:
            src = write_seed(name, os.path.join(d, name))
            out = os.path.join(d, name, "out_" + MODEL)
            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()) as err:
                code = main(["optimize", src, "-o", out, "--no-check", "--budget", "0.2"])
            if code != 0:
                raise RuntimeError(f"seed {name} does not optimize: {err.getvalue().strip()}")


warm()
