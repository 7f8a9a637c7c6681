"""Generated kernel sources: written to a cache directory keyed by their hash, imported as modules.

The cache directory is ``$GRAPHOPT_CACHE_DIR/kernels`` (default ``~/.cache/graphopt/kernels``).
A file is named ``<family>_<sha256 of the source, 16 hex>.py``; equal regions give equal source,
so they share one file and one imported module. Whether kernels run in Triton's interpreter is
fixed when triton is first imported (``TRITON_INTERPRET=1``); see ``import_triton``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from graphopt.errors import GraphOptError


@dataclass
class KernelSource:
    """One generated kernel module: a ``@triton.jit`` kernel plus its ``launch`` function.

    family:  kernels/<family>.py wrote it
    source:  the module text
    inputs / outputs: IR values the launcher takes and returns, in order (empty for kernels
    built directly from a spec, outside any graph)
    """

    family: str
    source: str
    inputs: list[Any] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)
    summary: str = ""

    @property
    def key(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return f"{self.family}_{self.key}"


def cache_dir() -> Path:
    root = os.environ.get("GRAPHOPT_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "graphopt")
    p = Path(root) / "kernels"
    p.mkdir(parents=True, exist_ok=True)
    return p


def import_triton(interpret: bool) -> ModuleType:
    """Import triton in the requested mode. The interpreter must be chosen before the first
    import (triton's library functions are built then), so a mismatch is an error."""
    if "triton" not in sys.modules and interpret:
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton
    except ImportError as e:  # pragma: no cover - triton is a declared extra
        raise GraphOptError("triton is not installed (pip install graphopt[triton])",
                            where="codegen") from e
    active = bool(triton.knobs.runtime.interpret)
    if active != interpret:
        want = "TRITON_INTERPRET=1" if interpret else "TRITON_INTERPRET unset"
        raise GraphOptError(f"triton was imported with interpret={active}; run with {want} "
                            f"set before triton is first imported", where="codegen")
    return triton


_LOADED: dict[str, ModuleType] = {}


def write(ks: KernelSource, directory: Path | None = None) -> Path:
    """Write the source (atomically) to the cache (or ``directory``); returns the file."""
    d = directory or cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{ks.name}.py"
    if path.exists() and path.read_text() == ks.source:
        return path
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(ks.source)
    os.replace(tmp, path)
    return path


def load(ks: KernelSource, interpret: bool) -> ModuleType:
    """The imported module of a kernel source (written to the cache first)."""
    import_triton(interpret)
    mod_name = f"graphopt_kernels.{ks.name}"
    if mod_name in _LOADED:
        return _LOADED[mod_name]
    path = write(ks)
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise GraphOptError(f"cannot import generated kernel {path}", where="codegen")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as e:
        sys.modules.pop(mod_name, None)
        raise GraphOptError(f"generated kernel {path} does not import: {type(e).__name__}: {e}",
                            where="codegen") from e
    _LOADED[mod_name] = mod
    return mod
