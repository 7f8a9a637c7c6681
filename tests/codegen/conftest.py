"""Codegen tests write kernels to a per-session cache directory (tests/conftest.py puts Triton in
its interpreter when there is no GPU)."""
from __future__ import annotations

import os
import tempfile

os.environ.setdefault("GRAPHOPT_CACHE_DIR", tempfile.mkdtemp(prefix="graphopt-codegen-"))

import pytest  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    # masked-off lanes of interpreted kernels compute log(0), 1/0, ... and numpy warns about them
    config.addinivalue_line("filterwarnings",
                            "ignore::RuntimeWarning:triton.runtime.interpreter")

