"""count_collectives on a one-rank gloo group in this process: every form of each collective
(tensor and list APIs), payload bytes over dtypes, and nothing counted for other work."""
from __future__ import annotations

import warnings
from typing import Iterator

import pytest
import torch
import torch.distributed as dist

from graphopt.tp.count import CollectiveCounts, count_collectives


@pytest.fixture
def group() -> Iterator[None]:
    if dist.is_initialized():
        pytest.skip("a process group is already initialized in this process")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_counts_every_form_and_its_bytes(group: None) -> None:
    dtypes = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
              torch.int32, torch.uint8, torch.bool)

    def work() -> str:
        for dt in dtypes:
            dist.all_reduce(torch.ones(3, 5, dtype=dt))
        x = torch.ones(4, 6)
        torch.matmul(x, x.T)  # no collective
        dist.all_gather([torch.empty(4, 6)], x)
        dist.reduce_scatter(torch.empty(4, 6), [x])
        with warnings.catch_warnings():  # the forms ops/collectives.py calls (deprecated in 2.13)
            warnings.simplefilter("ignore", FutureWarning)
            dist.all_gather_into_tensor(torch.empty(4, 6), x)
            dist.reduce_scatter_tensor(torch.empty(4, 6, dtype=torch.float64), x.double())
        return "done"

    result, counts = count_collectives(work)
    assert result == "done"
    per_value = sum(torch.empty(0, dtype=dt).element_size() for dt in dtypes)
    assert counts == CollectiveCounts(
        all_reduce=len(dtypes), all_gather=2, reduce_scatter=2,
        bytes={"all_reduce": 15 * per_value, "all_gather": 2 * 96,
               "reduce_scatter": 192 + 96})
    assert counts.total == len(dtypes) + 4
    assert counts.to_dict(3)["rank"] == 3


def test_nothing_to_count(group: None) -> None:
    result, counts = count_collectives(lambda a, b: a + b, torch.ones(2), b=torch.ones(2))
    assert torch.equal(result, torch.full((2,), 2.0))
    assert counts == CollectiveCounts() and counts.total == 0
