"""The tensor-parallel output folder (``graphopt shard IN.onnx --tp N -o OUT_DIR``):

    OUT_DIR/
      shard.json                  world size, the inputs (name, dtype, shape), the outputs' names,
                                  graphopt's version, each rank's folder, weight_bytes (its
                                  weights file's tensors) and param_bytes (every constant of its
                                  program, the small ones printed inline too), ``meta``
      launch.sh                   torchrun --standalone --nproc-per-node N -m graphopt.launch
                                  OUT_DIR "$@" (one machine; a free port each launch)
      rank0/program.graph         rank 0's program: the IR text form (``print_graph_with_weights``)
      rank0/weights.safetensors   the constants its text names ``@c0, @c1, ...``: only rank 0's
      rank1/...                   shards and the replicated weights it needs

``write_folder`` writes it atomically: everything goes into a temporary sibling folder that is
renamed onto OUT_DIR at the end, so a failure leaves nothing behind. An existing OUT_DIR is
replaced only when it is empty or a previous shard folder (it holds ``shard.json``); any other
existing path is refused, never deleted. ``load_folder`` checks the files and loads each rank's
program on demand; its errors name the file.

Weights are stored with ``safetensors.numpy``. Constants of a numpy dtype are stored as they are;
dtypes numpy lacks are stored as their bits with the graphopt dtype in the file's metadata: u4 /
i4 (ml_dtypes arrays, one value a byte) as u8 / i8, bf16 (an ONNX proto in the IR) as i16. Other
constants (strings, float8 / float4 kinds) are refused with the node named.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import GraphOptError
from ..ir.graph import Graph
from ..ir.node import ConstData, Node
from ..ir.text import format_type, parse, print_graph_with_weights
from ..ir.types import INT4_RANGE, DType, TensorType
from ..report import param_stats

__all__ = ["write_folder", "load_folder", "ShardFolder", "SHARD_FILE", "LAUNCH_FILE",
           "PROGRAM_FILE", "WEIGHTS_FILE", "FORMAT", "rank_dir", "COLLECTIVES"]

SHARD_FILE = "shard.json"
LAUNCH_FILE = "launch.sh"
PROGRAM_FILE = "program.graph"
WEIGHTS_FILE = "weights.safetensors"
FORMAT = "graphopt-shard/1"
COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter")
# safetensors metadata: {tensor name: graphopt dtype} of the tensors stored as bits
_DTYPES_KEY = "graphopt_dtypes"
_BITS = {DType.u4: np.uint8, DType.i4: np.int8, DType.bf16: np.int16}

LAUNCH_SCRIPT = """#!/bin/sh
# Runs this tensor-parallel folder on {world} processes (gloo on CPU, NCCL on GPU), e.g.
#   ./launch.sh --inputs X.npz [--output Y.npz] [--count-collectives]
# (--standalone: the rendezvous takes a free port, so two launches never collide)
exec torchrun --standalone --nproc-per-node {world} -m graphopt.launch "$(dirname "$0")" "$@"
"""


def rank_dir(r: int) -> str:
    return f"rank{r}"


# ---- writing ----------------------------------------------------------------------------------

def _input_specs(g: Graph) -> list[dict[str, Any]]:
    out = []
    for n in g.inputs:
        t = n.out_types[0]
        if not isinstance(t, TensorType) or t.shape is None:
            raise GraphOptError(f"input {n.attrs['name']!r} has type {format_type(t)}; a rank "
                                f"program's inputs must be tensors of known rank",
                                where=f"graph {g.name}")
        out.append({"name": n.attrs["name"], "dtype": t.dtype.value, "shape": list(t.shape)})
    return out


def _check_rank_program(g: Graph, rank: int, world: int, first: Graph) -> None:
    """``g`` is a rank program of a ``world``-rank folder: the same inputs and outputs as rank
    0's, collectives in a rank's view over ``world`` ranks, shards of this rank."""
    where = f"rank {rank} (graph {g.name})"
    if _input_specs(g) != _input_specs(first):
        raise GraphOptError(f"inputs {_input_specs(g)} differ from rank 0's "
                            f"{_input_specs(first)}", where=where)
    if g.output_names != first.output_names:
        raise GraphOptError(f"outputs {list(g.output_names)} differ from rank 0's "
                            f"{list(first.output_names)}", where=where)
    for n in g.nodes:
        if n.op not in COLLECTIVES and n.op != "shard":
            continue
        if n.attrs["world_size"] != world:
            raise GraphOptError(f"{n.op} has world_size={n.attrs['world_size']}, the folder "
                                f"has {world} ranks", where=f"{where}, node {n.where}")
        if n.op in COLLECTIVES and len(n.inputs) != 1:
            raise GraphOptError(f"{n.op} has {len(n.inputs)} operands (the global view); a rank "
                                f"program holds only a rank's view (one operand)",
                                where=f"{where}, node {n.where}")
        if n.op == "shard" and n.attrs["rank"] != rank:
            raise GraphOptError(f"shard takes rank {n.attrs['rank']}'s block in rank {rank}'s "
                                f"program", where=f"{where}, node {n.where}")


def _stored(name: str, data: ConstData, owner: Node | None) -> tuple[np.ndarray, str | None]:
    """(the array safetensors stores for ``data``, the graphopt dtype when stored as bits)."""
    where = owner.where if owner is not None else f"weight @{name}"
    if data.dtype in INT4_RANGE:
        return np.ascontiguousarray(np.asarray(data.array).view(_BITS[data.dtype])), \
            data.dtype.value
    if data.dtype == DType.bf16:
        from ..frontends.fx import const_to_tensor
        import torch

        bits = const_to_tensor(data).contiguous().view(torch.int16).numpy()
        return np.ascontiguousarray(bits.reshape(data.shape)), data.dtype.value
    try:
        data.dtype.to_numpy()
    except TypeError:
        raise GraphOptError(f"constant of type {format_type(data.type)}: the shard folder stores "
                            f"weights in safetensors, which holds numeric dtypes only", where=where
                            ) from None
    if data.dtype == DType.string:
        raise GraphOptError("a string constant cannot be stored in safetensors", where=where)
    if not data.has_array:
        raise GraphOptError(f"constant {data!r} has no data to store", where=where)
    return np.ascontiguousarray(data.array), None


def _const_owners(g: Graph) -> dict[int, Node]:
    """The node that holds each constant (for error messages), by the ConstData's id."""
    owners: dict[int, Node] = {}
    for n in g.nodes:
        for v in n.attrs.values():
            if isinstance(v, ConstData):
                owners.setdefault(id(v), n)
    return owners


def _write_rank(g: Graph, d: Path) -> int:
    """Write one rank's program and weights into ``d``; returns the weights' bytes."""
    from safetensors.numpy import save_file

    text, weights = print_graph_with_weights(g)
    owners = _const_owners(g)
    arrays: dict[str, np.ndarray] = {}
    bits: dict[str, str] = {}
    for name, data in weights.items():
        arrays[name], dt = _stored(name, data, owners.get(id(data)))
        if dt is not None:
            bits[name] = dt
    d.mkdir()
    (d / PROGRAM_FILE).write_text(text)
    save_file(arrays, str(d / WEIGHTS_FILE), metadata={_DTYPES_KEY: json.dumps(bits)})
    return int(sum(w.nbytes for w in weights.values()))


def _check_target(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir())
                                               and not (out / SHARD_FILE).is_file())):
        raise GraphOptError(f"exists and is not a shard folder (no {SHARD_FILE}) nor empty; "
                            f"refusing to replace it", where=str(out))


def write_folder(out_dir: str | os.PathLike[str], rank_graphs: Sequence[Graph],
                 meta: Mapping[str, Any] | None = None, *,
                 check: Callable[["ShardFolder"], None] | None = None) -> Path:
    """Write the rank programs ``rank_graphs`` (rank r's at index r) as a shard folder at
    ``out_dir`` (see the module docstring), with ``meta`` (JSON; the plan's report) in
    shard.json. ``check`` gets the finished folder as read back from disk (``load_folder`` of
    the temporary folder) before it is moved into place; an exception from it aborts the write.
    Atomic: a failure leaves ``out_dir`` as it was. Returns the folder."""
    from .. import __version__

    out = Path(out_dir)
    world = len(rank_graphs)
    if world < 1:
        raise GraphOptError("no rank programs to write", where=str(out))
    for r, g in enumerate(rank_graphs):
        _check_rank_program(g, r, world, rank_graphs[0])
    try:
        meta_json = json.loads(json.dumps(dict(meta or {})))
    except (TypeError, ValueError) as e:
        raise GraphOptError(f"meta is not JSON: {e}", where=str(out / SHARD_FILE)) from None
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        ranks = []
        for r, g in enumerate(rank_graphs):
            nbytes = _write_rank(g, tmp / rank_dir(r))
            ranks.append({"dir": rank_dir(r), "weight_bytes": nbytes,
                          "param_bytes": param_stats(g)["bytes"]})
        info = {"format": FORMAT, "graphopt_version": __version__, "world_size": world,
                "inputs": _input_specs(rank_graphs[0]),
                "outputs": list(rank_graphs[0].output_names), "ranks": ranks, "meta": meta_json}
        (tmp / SHARD_FILE).write_text(json.dumps(info, indent=2) + "\n")
        launch = tmp / LAUNCH_FILE
        launch.write_text(LAUNCH_SCRIPT.format(world=world))
        launch.chmod(launch.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a folder is readable like any other
        if check is not None:
            check(load_folder(tmp))
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished folder ``tmp`` onto ``out`` (an old shard folder is moved aside first
    and deleted only once the new one is in place)."""
    from ..kv.folder import _replace

    _replace(tmp, out)


# ---- reading ----------------------------------------------------------------------------------

@dataclass
class ShardFolder:
    """A shard folder ``write_folder`` wrote; ``graph(rank)`` loads one rank's program."""

    path: Path
    world_size: int
    inputs: list[dict[str, Any]]
    outputs: list[str]
    meta: dict[str, Any]
    info: dict[str, Any]
    _graphs: dict[int, Graph] = field(default_factory=dict, repr=False)

    def program_path(self, rank: int) -> Path:
        return self.path / rank_dir(rank) / PROGRAM_FILE

    def weights_path(self, rank: int) -> Path:
        return self.path / rank_dir(rank) / WEIGHTS_FILE

    def graph(self, rank: int) -> Graph:
        """Rank ``rank``'s program with its weights (loaded on first use, then kept)."""
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < self.world_size:
            raise GraphOptError(f"rank {rank!r} is not in [0, {self.world_size})",
                                where=str(self.path))
        if rank not in self._graphs:
            g = _load_program(self.program_path(rank), self.weights_path(rank))
            if _input_specs(g) != self.inputs or list(g.output_names) != self.outputs:
                raise GraphOptError(f"the program's inputs {_input_specs(g)} / outputs "
                                    f"{list(g.output_names)} differ from {SHARD_FILE}'s "
                                    f"{self.inputs} / {self.outputs}",
                                    where=str(self.program_path(rank)))
            self._graphs[rank] = g
        return self._graphs[rank]


def _load_weights(path: Path) -> dict[str, ConstData]:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise GraphOptError("missing weights file", where=str(path))
    try:
        with safe_open(str(path), framework="numpy") as f:
            bits = json.loads((f.metadata() or {}).get(_DTYPES_KEY, "{}"))
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise GraphOptError(f"unreadable safetensors file: {e}", where=str(path)) from None
    return {k: _const(a, bits.get(k), path, k) for k, a in arrays.items()}


def _const(a: np.ndarray, dtype: str | None, path: Path, name: str) -> ConstData:
    """The constant stored as ``a`` (its bits when ``dtype`` names a dtype numpy lacks)."""
    if dtype is None:
        return ConstData(a)
    try:
        d = DType(dtype)
    except ValueError:
        d = None
    if d is None or d not in _BITS or a.dtype != np.dtype(_BITS[d]):
        raise GraphOptError(f"tensor {name!r}: metadata dtype {dtype!r} does not fit its "
                            f"stored {a.dtype}", where=str(path))
    if d in INT4_RANGE:
        return ConstData(a.view(d.to_numpy()))
    from onnx import TensorProto

    p = TensorProto(data_type=d.to_onnx(), dims=list(a.shape), raw_data=a.tobytes())
    return ConstData(dtype=d, shape=a.shape, onnx_proto=p.SerializeToString())


def _load_program(program: Path, weights_file: Path) -> Graph:
    if not program.is_file():
        raise GraphOptError("missing program file", where=str(program))
    weights = _load_weights(weights_file)
    try:
        return parse(program.read_text(), weights)
    except (GraphOptError, ValueError) as e:  # ParseError, a node that does not build, ...
        raise GraphOptError(f"corrupt program: {e}", where=str(program)) from None
    except UnicodeDecodeError as e:
        raise GraphOptError(f"corrupt program (not text): {e}", where=str(program)) from None


def _read_info(folder: Path) -> dict[str, Any]:
    p = folder / SHARD_FILE
    if not folder.is_dir():
        raise GraphOptError("no such folder", where=str(folder))
    if not p.is_file():
        raise GraphOptError(f"not a shard folder: missing {SHARD_FILE}", where=str(folder))
    try:
        info = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise GraphOptError(f"corrupt {SHARD_FILE}: {e}", where=str(p)) from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        got = info.get("format") if isinstance(info, dict) else type(info).__name__
        raise GraphOptError(f"format {got!r} is not {FORMAT!r}", where=str(p))
    for key, typ in (("world_size", int), ("inputs", list), ("outputs", list),
                     ("ranks", list), ("meta", dict)):
        if not isinstance(info.get(key), typ) or isinstance(info.get(key), bool):
            raise GraphOptError(f"{key!r} is missing or not a {typ.__name__}", where=str(p))
    return info


def load_folder(out_dir: str | os.PathLike[str]) -> ShardFolder:
    """Open a shard folder: shard.json is read and every rank's files checked to exist (their
    contents load with ``graph(rank)``)."""
    folder = Path(out_dir)
    info = _read_info(folder)
    world = info["world_size"]
    p = folder / SHARD_FILE
    if world < 1 or len(info["ranks"]) != world:
        raise GraphOptError(f"world_size {world} but {len(info['ranks'])} ranks listed",
                            where=str(p))
    on_disk = sorted(d.name for d in folder.iterdir() if d.is_dir() and d.name.startswith("rank"))
    expected = [rank_dir(r) for r in range(world)]
    if sorted(on_disk) != sorted(expected):
        raise GraphOptError(f"world_size {world} wants folders {expected}, found {on_disk}",
                            where=str(folder))
    for r in range(world):
        for f in (PROGRAM_FILE, WEIGHTS_FILE):
            if not (folder / rank_dir(r) / f).is_file():
                raise GraphOptError(f"missing {f.split('.')[0]} file",
                                    where=str(folder / rank_dir(r) / f))
    return ShardFolder(folder, world, info["inputs"], [str(o) for o in info["outputs"]],
                       info["meta"], info)
