"""One rank of ``bench.tensor_parallel``'s timing run, under torchrun:

    torchrun --standalone --nproc-per-node N -m bench.tp_step FOLDER --inputs X.npz \\
        --model gpt2 --config '{"hidden": 768, ...}' --reps 10 --out T.json

Every rank loads its program from the shard FOLDER (``graphopt.tp.folder``) and runs it with
``to_callable`` (its collectives call torch.distributed on the gloo group). Rank 0 also rebuilds
the single-process torch model (``tests.tp.models.MODEL(**config)``: the same seeded random
weights and inputs the bench sharded) and times it in the same process, interleaved with the
sharded steps: each repeat is one sharded step on every rank (from a barrier to a barrier: the
slowest rank's time) and then one call of the torch model on rank 0 while the other ranks wait
at the next barrier. Rank 0 writes ``{"world_size", "threads", "tp_s": [...], "single_s": [...]}``
to ``--out``. Both run with one torch thread per process.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.tp_step", description=__doc__.splitlines()[0])
    p.add_argument("folder")
    p.add_argument("--inputs", required=True, help=".npz of the model's inputs by name")
    p.add_argument("--model", required=True, help="a builder of tests.tp.models: gpt2, bert, llama")
    p.add_argument("--config", required=True, help="the builder's keyword arguments, JSON")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", required=True, help="rank 0 writes the times here (JSON)")
    return p.parse_args(argv)


def timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> int:
    import torch.distributed as dist

    from graphopt.frontends.torch_export import to_callable
    from graphopt.ir.types import numpy_to_torch
    from graphopt.tp.folder import load_folder
    from tests.tp import models

    a = parse_args(argv)
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    folder = load_folder(a.folder)
    g = folder.graph(rank)
    module = to_callable(g)
    with np.load(a.inputs, allow_pickle=False) as z:
        feed = {k: numpy_to_torch(z[k], torch.device("cpu")) for k in z.files}
    single: Any = None
    if rank == 0:
        single, example = getattr(models, a.model)(**json.loads(a.config))
        for name, x in zip(folder.inputs, example):
            if not torch.equal(x, feed[name["name"]]):
                raise SystemExit(f"bench.tp_step: input {name['name']} differs from the "
                                 f"model builder's")
    dist.init_process_group("gloo")
    tp_s: list[float] = []
    single_s: list[float] = []
    try:
        with torch.inference_mode():
            for rep in range(a.warmup + a.reps):
                dist.barrier()
                t0 = time.perf_counter()
                module.run(g, feed)
                dist.barrier()
                t = time.perf_counter() - t0
                if rank == 0:
                    s = timed(lambda: single(*example))
                    if rep >= a.warmup:
                        tp_s.append(t)
                        single_s.append(s)
    finally:
        dist.destroy_process_group()
    if rank == 0:
        Path(a.out).write_text(json.dumps({"world_size": int(os.environ["WORLD_SIZE"]),
                                           "threads": torch.get_num_threads(),
                                           "tp_s": tp_s, "single_s": single_s}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
