"""``torchrun --nproc-per-node N -m graphopt.launch OUT_DIR --inputs X.npz [--output Y.npz]
[--backend auto|gloo|nccl] [--count-collectives]``: runs a shard folder (graphopt.tp.folder), one
rank a process.

Each process reads RANK / WORLD_SIZE / LOCAL_RANK (set by torchrun), checks the folder and the
inputs (by name, dtype and shape against shard.json) before joining the process group, then
initializes torch.distributed (auto: NCCL on cuda:LOCAL_RANK when CUDA is available, else gloo
on the CPU), runs its rank program (``to_callable``; its collectives call torch.distributed) and
gathers on rank 0 a digest of every rank's outputs, which must agree (the outputs are replicated).
Rank 0 writes the outputs by name to ``--output`` (default OUT_DIR/outputs.npz; atomic, and only
after every check passed) and a sidecar JSON (``Y.npz`` -> ``Y.json``: world size, backend, output
digests, and with ``--count-collectives`` one record per rank, also printed as JSON lines); every
rank destroys the process group. Errors print one line ``graphopt.launch: rank R: ...`` and exit
with status 1.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import GraphOptError

__all__ = ["main", "parse_args", "rank_env", "read_inputs", "sidecar_path", "OUTPUT_FILE"]

OUTPUT_FILE = "outputs.npz"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="graphopt.launch",
                                description="Run a tensor-parallel shard folder under torchrun.")
    p.add_argument("folder", help="the folder graphopt shard wrote")
    p.add_argument("--inputs", required=True, help=".npz of the model's inputs, by name")
    p.add_argument("--output", help=f"where rank 0 writes the outputs (default "
                                    f"FOLDER/{OUTPUT_FILE}); its .json sidecar goes beside it")
    p.add_argument("--backend", choices=("auto", "gloo", "nccl"), default="auto",
                   help="auto: nccl when CUDA is available, else gloo")
    p.add_argument("--count-collectives", action="store_true",
                   help="count each rank's collectives and their bytes (torch.profiler)")
    return p.parse_args(argv)


def rank_env(world_size: int) -> tuple[int, int, int]:
    """(RANK, WORLD_SIZE, LOCAL_RANK) from torchrun's environment, checked against the folder's
    ``world_size``."""
    missing = [k for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
               if k not in os.environ]
    if missing:
        raise GraphOptError(f"{', '.join(missing)} not set: run it under torchrun "
                            f"(torchrun --nproc-per-node {world_size} -m graphopt.launch ...)",
                            where="environment")
    try:
        rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError:
        raise GraphOptError("RANK / WORLD_SIZE / LOCAL_RANK must be integers",
                            where="environment") from None
    if world != world_size:
        raise GraphOptError(f"WORLD_SIZE={world} but the folder holds {world_size} rank "
                            f"programs: run torchrun --nproc-per-node {world_size}",
                            where="environment")
    return rank, world, local


def _dims_fit(shape: Sequence[Any], got: tuple[int, ...]) -> bool:
    return len(shape) == len(got) and all(not isinstance(d, int) or d == g
                                          for d, g in zip(shape, got))


def read_inputs(path: str | os.PathLike[str], specs: Sequence[dict[str, Any]]
                ) -> dict[str, np.ndarray]:
    """The arrays of the .npz at ``path`` by input name, checked against shard.json's input
    ``specs`` (every input, no unknown name, dtype and static dims; a symbol takes any size but
    one size throughout)."""
    from .ir.types import DType

    p = Path(path)
    if not p.is_file():
        raise GraphOptError("no such inputs file", where=str(p))
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise GraphOptError(f"not a readable .npz: {e}", where=str(p)) from None
    names = [s["name"] for s in specs]
    unknown = sorted(set(arrays) - set(names))
    missing = [n for n in names if n not in arrays]
    if missing or unknown:
        raise GraphOptError(f"the model takes inputs {names}; missing {missing}, unknown "
                            f"{unknown}", where=str(p))
    symbols: dict[str, int] = {}
    for s in specs:
        a = arrays[s["name"]]
        want = f"{s['dtype']}[{','.join(str(d) for d in s['shape'])}]"
        try:
            dt = DType.from_numpy(a.dtype).value
        except TypeError:
            dt = str(a.dtype)
        if dt != s["dtype"] or not _dims_fit(s["shape"], a.shape):
            raise GraphOptError(f"input {s['name']!r} must be {want}, got {dt}{list(a.shape)}",
                                where=str(p))
        for d, g in zip(s["shape"], a.shape):
            if isinstance(d, str) and symbols.setdefault(d, g) != g:
                raise GraphOptError(f"input {s['name']!r}: dim {d!r} is {g} here and "
                                    f"{symbols[d]} in another input", where=str(p))
    return {n: arrays[n] for n in names}


def sidecar_path(output: Path) -> Path:
    """``Y.npz`` -> ``Y.json``."""
    return output.with_suffix(".json")


def _digest(arrays: Sequence[np.ndarray]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _write_npz_atomic(arrays: dict[str, np.ndarray], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _backend(choice: str, local_rank: int) -> tuple[str, Any]:
    """(process group backend, device) for ``--backend choice``."""
    import torch

    if choice == "auto":
        choice = "nccl" if torch.cuda.is_available() else "gloo"
    if choice == "nccl":
        if not torch.cuda.is_available():
            raise GraphOptError("--backend nccl needs CUDA, which this torch cannot use",
                                where="torch.distributed")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        return "nccl", device
    return "gloo", torch.device("cpu")


def _run_rank(folder: Any, rank: int, feed: dict[str, np.ndarray], device: Any, count: bool
              ) -> tuple[list[np.ndarray], dict[str, Any] | None]:
    """This rank's outputs (numpy) and, when ``count``, its collective counts."""
    import torch

    from .frontends.torch_export import to_callable
    from .ir.types import numpy_to_torch, torch_to_numpy
    from .tp.count import count_collectives

    g = folder.graph(rank)
    module = to_callable(g).to(device)
    tensors = {k: numpy_to_torch(v, device) for k, v in feed.items()}
    with torch.inference_mode():
        if count:
            outs, counts = count_collectives(module.run, g, tensors)
        else:
            outs, counts = module.run(g, tensors), None
    arrays = [torch_to_numpy(o.detach().cpu()) for o in outs]
    return arrays, (counts.to_dict(rank) if counts is not None else None)


def _main(args: argparse.Namespace) -> int:
    from .tp.folder import load_folder

    folder = load_folder(args.folder)
    rank, world, local = rank_env(folder.world_size)
    feed = read_inputs(args.inputs, folder.inputs)
    output = Path(args.output) if args.output else Path(args.folder) / OUTPUT_FILE
    folder.graph(rank)  # a corrupt or missing file fails here, before joining the group
    import torch.distributed as dist

    backend, device = _backend(args.backend, local)
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    try:
        outs, counts = _run_rank(folder, rank, feed, device, args.count_collectives)
        mine = {"rank": rank, "digest": _digest(outs), "counts": counts}
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, mine)
        # every rank has its peers' data before any tears down its connections (a rank leaving
        # while another is still in the gather aborts gloo at exit)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    if rank != 0:
        return 0
    digests = {g["digest"] for g in gathered}
    if len(digests) != 1:
        short = [g["digest"][:12] for g in gathered]
        raise GraphOptError(f"the ranks' outputs differ (digests {short}); a rank program's "
                            f"outputs must be replicated", where=str(args.folder))
    result = dict(zip(folder.outputs, outs))
    side: dict[str, Any] = {"world_size": world, "backend": backend, "outputs": folder.outputs,
                            "digest": digests.pop()}
    if args.count_collectives:
        side["collectives"] = [g["counts"] for g in gathered]
    _write_npz_atomic(result, output)
    from .report import write_json_atomic

    write_json_atomic(side, sidecar_path(output))
    shapes = ", ".join(f"{k} {a.dtype}{list(a.shape)}" for k, a in result.items())
    print(f"graphopt.launch: {world} ranks ({backend}) ran {args.folder}; wrote {output} "
          f"({shapes})")
    for c in side.get("collectives", []):
        print(json.dumps(c))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return _main(args)
    except GraphOptError as e:
        rank = os.environ.get("RANK", "?")
        print(f"graphopt.launch: rank {rank}: {e.one_line()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    code = main()
    # The work is done (outputs gathered, compared and written, the process group destroyed):
    # leave without the interpreter's teardown, where gloo's background threads can abort the
    # process ("terminate called without an active exception", seen under load with 4 ranks).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
