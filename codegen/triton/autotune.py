"""Autotuning of generated kernels on a GPU: each kernel module lists ``CONFIGS`` (block sizes,
warps, stages); the first call with a new shape signature times every config with
``triton.testing.do_bench`` and keeps the fastest. Results are cached per device in
``<cache dir>/autotune/<device name>.json`` keyed by kernel name and argument signature.

In the interpreter (or on CPU tensors) nothing is timed: the first config is used.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

from .cache import cache_dir


def signature(args: Sequence[Any]) -> str:
    """Shapes, dtypes and strides of the tensor arguments (what a config's speed depends on)."""
    parts = []
    for a in args:
        if hasattr(a, "shape") and hasattr(a, "dtype"):
            parts.append(f"{str(a.dtype).removeprefix('torch.')}{list(a.shape)}"
                         f"{list(a.stride()) if hasattr(a, 'stride') else ''}")
        else:
            parts.append(repr(a))
    return ";".join(parts)


class Autotuner:
    """Picks and remembers the best config of each (kernel, signature) on one device."""

    def __init__(self, device_name: str, path: Path | None = None) -> None:
        self.device_name = device_name
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in device_name)
        self.path = path or (cache_dir().parent / "autotune" / f"{safe}.json")
        self.table: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            try:
                self.table = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError):
                self.table = {}  # a corrupt cache is re-measured, never trusted

    def config(self, name: str, module: ModuleType, args: Sequence[Any]) -> dict[str, Any]:
        key = f"{name}|{signature(args)}"
        if key in self.table:
            return dict(self.table[key])
        best = self.tune(module, args)
        self.table[key] = best
        self._save()
        return dict(best)

    def tune(self, module: ModuleType, args: Sequence[Any]) -> dict[str, Any]:
        from triton.testing import do_bench

        timings: list[tuple[float, int]] = []
        errors: list[str] = []
        for i, cfg in enumerate(module.CONFIGS):
            try:
                ms = do_bench(lambda: module.launch(*args, config=cfg), warmup=5, rep=20)
            except Exception as e:  # noqa: BLE001 - a config may exceed shared memory etc.
                errors.append(f"{cfg}: {type(e).__name__}: {e}")
                continue
            timings.append((float(ms), i))
        if not timings:
            from graphopt.errors import GraphOptError

            raise GraphOptError("no config of the kernel runs:\n  " + "\n  ".join(errors),
                                where=f"codegen.autotune {module.__name__}")
        return dict(module.CONFIGS[min(timings)[1]])

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(self.table, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)
