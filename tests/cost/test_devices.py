"""Device profiles: built-ins, CPU detection, user profiles (code, JSON file, env var)."""
from __future__ import annotations

import json

import pytest

from graphopt.cost import devices
from graphopt.cost.devices import (CpuInfo, Device, Fusion, cpu_device, detect_cpu, get_device,
                                   load_devices, register_device)
from graphopt.errors import GraphOptError
from graphopt.ir.types import DType


@pytest.fixture
def clean_registry():
    before = dict(devices._DEVICES)
    yield
    devices._DEVICES.clear()
    devices._DEVICES.update(before)


def test_builtin_gpus_are_ordered_by_datasheet() -> None:
    a100, h100, h200 = (get_device(n) for n in ("a100", "h100", "h200"))
    assert a100.mem_bandwidth < h100.mem_bandwidth < h200.mem_bandwidth
    assert a100.matrix_rate(DType.f16) < h100.matrix_rate(DType.f16)
    assert h100.matrix_rate(DType.f16) == h200.matrix_rate(DType.f16)
    # f16 tensor cores beat f32 on every GPU; unknown dtypes fall back to f32
    for d in (a100, h100, h200):
        assert d.kind == "gpu" and d.fusion.pointwise and d.fusion.epilogue
        assert d.matrix_rate(DType.f16) > d.matrix_rate(DType.f32)
        assert d.matrix_rate(DType.c64) == d.matrix_rate(DType.f32)


def test_names_are_case_insensitive_and_unknown_names_list_the_known() -> None:
    assert get_device("H100") is get_device("h100")
    with pytest.raises(GraphOptError, match="known: .*a100.*cpu.*h100.*h200"):
        get_device("tpu9")


def test_detect_cpu_reads_this_machine() -> None:
    c = detect_cpu()
    assert c.cores >= 1
    assert c.vector_bits in (128, 256, 512)
    assert c.l2_bytes > 0 and c.l3_bytes > 0
    assert "detected" in c.source


def test_cpu_profile_from_cpu_info() -> None:
    info = CpuInfo(cores=4, vector_bits=256, fma=True, ghz=2.0, l2_bytes=2**20, l3_bytes=2**25,
                   bf16=False, vnni=True, source="test")
    d = cpu_device(info, name="mycpu")
    # 4 cores * 2 GHz * 8 f32 lanes * 2 (FMA) * 2 FMA units
    assert d.peak_flops["f32"] == pytest.approx(4 * 2e9 * 8 * 2 * 2)
    assert d.peak_flops["i8"] == pytest.approx(4 * d.peak_flops["f32"])  # VNNI
    assert d.onchip_bytes == 2**20 and d.cache_bytes == 2**25 and d.cores == 4
    # ONNX Runtime's CPU provider: epilogues of a fixed list, no general pointwise fusion
    assert not d.fusion.pointwise and d.fusion.epilogue and "relu" in d.fusion.epilogue_ops


def test_register_a_user_device(clean_registry) -> None:
    t4 = Device.from_dict({"name": "t4", "base": "a100", "peak_flops": {"f16": 65e12},
                           "mem_bandwidth": 320e9, "fusion": {"max_epilogue": 4}})
    register_device(t4)
    got = get_device("t4")
    assert got.mem_bandwidth == 320e9
    assert got.peak_flops["f16"] == 65e12 and got.peak_flops["f32"] == 19.5e12  # merged
    assert got.fusion.max_epilogue == 4 and got.fusion.pointwise  # merged with a100's
    with pytest.raises(GraphOptError, match="already exists"):
        register_device(t4)
    from graphopt.pipeline import check_target

    assert check_target("T4") == "t4"


def test_load_devices_from_json_and_env(tmp_path, monkeypatch, clean_registry) -> None:
    p = tmp_path / "devs.json"
    p.write_text(json.dumps({"devices": [
        {"name": "edge", "kind": "cpu", "peak_flops": {"f32": 1e11}, "vector_flops": {"f32": 2e10},
         "mem_bandwidth": 1e10, "cache_bandwidth": 4e10, "cache_bytes": 4e6,
         "launch_overhead": 5e-6, "onchip_bytes": 5e5,
         "fusion": {"pointwise": False, "epilogue": True, "epilogue_ops": ["relu"],
                    "max_epilogue": 1, "reduction": False}}]}))
    (d,) = load_devices(p)
    assert d.fusion == Fusion(False, True, frozenset({"relu"}), 1, False)
    devices._DEVICES.pop("edge")
    monkeypatch.setenv("GRAPHOPT_DEVICES", str(p))
    monkeypatch.setattr(devices, "_ENV_LOADED", [])
    assert get_device("edge").launch_overhead == 5e-6


@pytest.mark.parametrize("bad, msg", [
    ({"name": "x", "kind": "cpu"}, "missing fields"),
    ({"name": "x", "base": "a100", "warp_size": 32}, "unknown fields"),
    ({"name": "x", "base": "a100", "mem_bandwidth": 0}, "mem_bandwidth must be > 0"),
    ({"name": "x", "base": "a100", "fusion": {"magic": True}}, "unknown fusion fields"),
])
def test_bad_profiles_are_refused(bad, msg) -> None:
    with pytest.raises(GraphOptError, match=msg):
        Device.from_dict(bad)


def test_bad_json_file_names_the_file(tmp_path) -> None:
    p = tmp_path / "broken.json"
    p.write_text("{nope")
    with pytest.raises(GraphOptError, match="cannot read device profiles") as e:
        load_devices(p)
    assert "broken.json" in str(e.value)


def test_key_changes_with_numbers() -> None:
    a = get_device("a100")
    b = Device.from_dict({"name": "a100", "base": "a100", "mem_bandwidth": 1e12})
    assert a.key() != b.key() and a.key() == get_device("a100").key()
