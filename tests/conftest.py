"""Suite-wide settings: Triton runs in its interpreter when there is no GPU (the mode is fixed at
triton's first import, so it is set here, before any test module loads), `gpu` tests skip, and
hypothesis is derandomized under CI."""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# CI (``CI`` set, as ``.ci/run`` does): hypothesis draws the same examples on every run (the seed
# is derived from each test) and keeps no example database, so a landing never depends on a
# random draw; a local run explores new examples each time and replays the failures it saved.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for it in items:
        if "gpu" in it.keywords:
            it.add_marker(skip)
