"""The shard folder: write_folder / load_folder round trips, per-rank weights, atomic writes,
refusals and clear errors naming the file."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto
from safetensors.numpy import load_file

from graphopt.errors import GraphOptError
from graphopt.ir.graph import Graph
from graphopt.ir.node import ConstData, constant, input_node, op
from graphopt.ir.types import DType, TensorType
from graphopt.tp.folder import (LAUNCH_FILE, PROGRAM_FILE, SHARD_FILE, WEIGHTS_FILE, ShardFolder,
                                load_folder, write_folder)

from .handmade import X_TYPE, block, mlp_programs


def _siblings(p: Path) -> list[str]:
    return sorted(x.name for x in p.parent.iterdir())


def test_round_trip_and_contents(tmp_path: Path) -> None:
    graphs, w, _ = mlp_programs(world=2)
    out = write_folder(tmp_path / "tp", graphs, {"plan": {"w1": "column"}})
    info = json.loads((out / SHARD_FILE).read_text())
    assert info["world_size"] == 2 and info["meta"] == {"plan": {"w1": "column"}}
    assert info["inputs"] == [{"name": "x", "dtype": "f32", "shape": ["b", 8]}]
    assert info["outputs"] == ["y", "z"]
    launch = out / LAUNCH_FILE
    assert launch.stat().st_mode & stat.S_IXUSR
    assert "--nproc-per-node 2 -m graphopt.launch" in launch.read_text()
    folder = load_folder(out)
    assert (folder.world_size, folder.outputs, folder.meta) == (2, ["y", "z"], info["meta"])
    for r in range(2):
        assert folder.graph(r).fingerprint() == graphs[r].fingerprint()
    assert _siblings(out) == ["tp"]  # no temporary folder left


def test_each_rank_holds_only_its_shards(tmp_path: Path) -> None:
    graphs, w, _ = mlp_programs(world=2)
    out = write_folder(tmp_path / "tp", graphs)
    info = json.loads((out / SHARD_FILE).read_text())
    split = w["w1"].nbytes + w["w2"].nbytes + w["w3"].nbytes  # b2 (8 values) prints inline
    for r in range(2):
        stored = load_file(str(out / f"rank{r}" / WEIGHTS_FILE))
        want = [block(w["w1"], 1, r, 2), block(w["w2"], 0, r, 2), block(w["w3"], 0, r, 2)]
        assert sorted(a.tobytes() for a in stored.values()) == sorted(a.tobytes() for a in want)
        assert info["ranks"][r]["weight_bytes"] == split // 2
        assert info["ranks"][r]["param_bytes"] == split // 2 + w["b2"].nbytes
        size = (out / f"rank{r}" / WEIGHTS_FILE).stat().st_size
        assert split // 2 < size < split // 2 + 1024  # the data plus a small header
    assert sum(r["weight_bytes"] for r in info["ranks"]) == split


def test_dtypes_numpy_lacks_round_trip(tmp_path: Path) -> None:
    bits = np.arange(-20, 20, dtype=np.int16).reshape(4, 10)  # bf16 bit patterns
    proto = TensorProto(data_type=DType.bf16.to_onnx(), dims=[4, 10], raw_data=bits.tobytes())
    bf16 = ConstData(dtype=DType.bf16, shape=(4, 10), onnx_proto=proto.SerializeToString())
    u4 = ConstData((np.arange(40).reshape(4, 10) % 16).astype(ml_dtypes.uint4))
    x = input_node("x", TensorType((4, 10), DType.bf16))
    y = op("add", x.out, constant(bf16))
    g = Graph([x], [y, constant(u4)], ["y", "q"])
    out = write_folder(tmp_path / "tp", [g])
    back = load_folder(out).graph(0)
    consts = {n.const.dtype: n.const for n in back.nodes if n.op == "constant"}
    from graphopt.frontends.fx import const_to_tensor
    import torch

    assert np.array_equal(const_to_tensor(consts[DType.bf16]).view(torch.int16).numpy(), bits)
    assert np.array_equal(consts[DType.u4].array.astype(np.uint8),
                          u4.array.astype(np.uint8))


def test_failure_leaves_nothing_and_old_folder_intact(tmp_path: Path) -> None:
    proto = TensorProto(data_type=DType.f8e4m3fn.to_onnx(), dims=[32], raw_data=bytes(32))
    f8 = ConstData(dtype=DType.f8e4m3fn, shape=(32,), onnx_proto=proto.SerializeToString())
    x = input_node("x", TensorType((32,), DType.f32))
    bad = Graph([x], [x.out, constant(f8)], ["y", "c"])
    with pytest.raises(GraphOptError, match="f8e4m3fn.*safetensors") as e:
        write_folder(tmp_path / "new", [bad])
    assert "constant" in str(e.value)  # names the node
    assert _siblings(tmp_path / "new") == []
    graphs, _, _ = mlp_programs()
    old = write_folder(tmp_path / "old", graphs)
    before = (old / "rank0" / PROGRAM_FILE).read_text()
    with pytest.raises(GraphOptError):
        write_folder(old, [bad])
    assert (old / "rank0" / PROGRAM_FILE).read_text() == before
    assert _siblings(old) == ["old"]


def test_check_sees_the_folder_read_back_before_it_moves_in(tmp_path: Path) -> None:
    graphs, _, _ = mlp_programs()
    seen: list[str] = []

    def check(folder: ShardFolder) -> None:
        seen.extend(folder.graph(r).fingerprint() for r in range(folder.world_size))
        assert not (tmp_path / "tp").exists()
        raise GraphOptError("rank 1 differs from the original")

    with pytest.raises(GraphOptError, match="rank 1 differs"):
        write_folder(tmp_path / "tp", graphs, check=check)
    assert seen == [g.fingerprint() for g in graphs]
    assert list(tmp_path.iterdir()) == []
    write_folder(tmp_path / "tp", graphs, check=lambda f: None)
    assert load_folder(tmp_path / "tp").world_size == 2


def test_replaces_a_shard_folder_refuses_anything_else(tmp_path: Path) -> None:
    graphs, _, _ = mlp_programs()
    out = write_folder(tmp_path / "tp", graphs)
    (out / "stale.txt").write_text("from the old folder")
    single = [Graph(graphs[0].inputs, [graphs[0].inputs[0].out], ["x"])]
    write_folder(out, single)
    assert not (out / "stale.txt").exists() and load_folder(out).world_size == 1
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(GraphOptError, match="not a shard folder.*refusing"):
        write_folder(other, graphs)
    assert (other / "notes.txt").read_text() == "keep me"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(GraphOptError, match="refusing"):
        write_folder(tmp_path / "afile", graphs)
    (tmp_path / "empty").mkdir()
    assert load_folder(write_folder(tmp_path / "empty", graphs)).world_size == 2


def _global_view(world: int) -> Graph:
    x = input_node("x", X_TYPE)
    return Graph([x], [op("all_reduce", *([x.out] * world), world_size=world)], ["y"])


def test_refuses_programs_that_are_not_rank_programs(tmp_path: Path) -> None:
    graphs, _, _ = mlp_programs(world=2)
    with pytest.raises(GraphOptError, match="global view"):
        write_folder(tmp_path / "a", [_global_view(2), _global_view(2)])
    with pytest.raises(GraphOptError, match="rank 1.*shard takes rank 0's block"):
        write_folder(tmp_path / "b", [graphs[0], graphs[0]])
    with pytest.raises(GraphOptError, match="world_size=2, the folder has 3 ranks"):
        write_folder(tmp_path / "c", graphs + [graphs[0]])
    other = Graph([input_node("q", X_TYPE)], [graphs[1].outputs[0]], ["y"])
    with pytest.raises(GraphOptError, match="inputs .* differ from rank 0's"):
        write_folder(tmp_path / "d", [graphs[0], other])
    with pytest.raises(GraphOptError, match="meta is not JSON"):
        write_folder(tmp_path / "e", graphs, {"x": object()})
    assert _siblings(tmp_path / "a") == []


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    graphs, _, _ = mlp_programs(world=2)
    return write_folder(tmp_path / "tp", graphs)


def test_corrupt_program_names_the_file(folder: Path) -> None:
    prog = folder / "rank1" / PROGRAM_FILE
    prog.write_text(prog.read_text().replace("matmul", "matmull", 1))
    loaded = load_folder(folder)
    loaded.graph(0)
    with pytest.raises(GraphOptError, match="corrupt program") as e:
        loaded.graph(1)
    assert str(prog) in str(e.value)


def test_missing_or_corrupt_weights_name_the_file(folder: Path) -> None:
    w1 = folder / "rank1" / WEIGHTS_FILE
    w1.write_bytes(w1.read_bytes()[:40])
    with pytest.raises(GraphOptError, match="unreadable safetensors") as e:
        load_folder(folder).graph(1)
    assert str(w1) in str(e.value)
    os.unlink(w1)
    with pytest.raises(GraphOptError, match="missing weights file") as e:
        load_folder(folder)
    assert str(w1) in str(e.value)


def test_rank_count_and_shard_json_errors(folder: Path) -> None:
    (folder / "rank2").mkdir()
    with pytest.raises(GraphOptError, match=r"wants folders \['rank0', 'rank1'\], found"):
        load_folder(folder)
    (folder / "rank2").rmdir()
    loaded = load_folder(folder)
    with pytest.raises(GraphOptError, match=r"rank 2 is not in \[0, 2\)"):
        loaded.graph(2)
    info = json.loads((folder / SHARD_FILE).read_text())
    (folder / SHARD_FILE).write_text(json.dumps(dict(info, world_size=3)))
    with pytest.raises(GraphOptError, match="world_size 3 but 2 ranks listed"):
        load_folder(folder)
    (folder / SHARD_FILE).write_text("{not json")
    with pytest.raises(GraphOptError, match=f"corrupt {SHARD_FILE}"):
        load_folder(folder)
    os.unlink(folder / SHARD_FILE)
    with pytest.raises(GraphOptError, match=f"not a shard folder: missing {SHARD_FILE}"):
        load_folder(folder)
