"""Device profiles: what the cost model knows about a target.

A profile holds peak flops per dtype, memory (and cache) bandwidth, kernel launch overhead,
on-chip memory, and which fusions the target's runtime performs. Built in: ``a100``, ``h100``,
``h200`` (datasheet numbers, dense) and ``cpu`` (cores, vector width, frequency and caches read
from this machine where possible). Users add their own with ``register_device`` or a JSON file
(``load_devices(path)``; the file named by ``$GRAPHOPT_DEVICES`` is loaded on first lookup)::

    {"devices": [{"name": "t4", "base": "a100", "peak_flops": {"f16": 65e12, "f32": 8.1e12},
                  "mem_bandwidth": 320e9}]}

``base`` copies an existing profile and overrides the fields given.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from ..errors import GraphOptError
from ..ir.types import DType


@dataclass(frozen=True)
class Fusion:
    """Which fusions the target's runtime performs (the cost model groups nodes accordingly).

    pointwise:     chains of pointwise / index-mapping ops run as one kernel
    epilogue:      pointwise ops after a matmul / conv / pool run inside it
    epilogue_ops:  the pointwise ops an epilogue may hold (None: any)
    max_epilogue:  how many pointwise ops one heavy kernel absorbs
    reduction:     pointwise prologues/epilogues and same-row reductions fuse with a reduction
                   (when a row fits in on-chip memory)
    split_views:   a split whose pieces are contiguous (only 1s before its axis) hands out
                   views instead of copies (torch and Triton do; ONNX Runtime's Split copies)
    """

    pointwise: bool = True
    epilogue: bool = True
    epilogue_ops: frozenset[str] | None = None
    max_epilogue: int = 64
    reduction: bool = True
    split_views: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["epilogue_ops"] = None if self.epilogue_ops is None else sorted(self.epilogue_ops)
        return d

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "Fusion":
        d = dict(d)
        unknown = set(d) - {f.name for f in fields(Fusion)}
        if unknown:
            raise GraphOptError(f"unknown fusion fields {sorted(unknown)}", where="device profile")
        if d.get("epilogue_ops") is not None:
            d["epilogue_ops"] = frozenset(d["epilogue_ops"])
        return Fusion(**d)


@dataclass(frozen=True)
class Device:
    """A target's performance profile. Rates are per second, sizes in bytes.

    peak_flops:      dtype name -> dense peak flop/s of matrix units (matmul, conv)
    vector_flops:    dtype name -> flop/s of ordinary (pointwise, reduction) code
    mem_bandwidth:   bytes/s of main memory (HBM, DRAM)
    cache_bytes:     last-level cache; a kernel whose boundary bytes fit moves them at
    cache_bandwidth  (bytes/s)
    launch_overhead: seconds per kernel launch (GPU) or per op dispatch (CPU runtime)
    onchip_bytes:    fast memory of one core / SM (shared memory, L2 per core): a reduction row
                     must fit here for the reduction to fuse with its neighbours
    matmul_efficiency: fraction of peak a well-shaped matmul reaches
    link_bandwidth:  bytes/s one device sends to its neighbour in a ring (tensor parallelism's
                     collectives: NVLink per direction on GPUs, gloo on one host for cpu)
    link_latency:    seconds per step of a ring collective (alpha of alpha + beta * bytes)
    """

    name: str
    kind: str  # "gpu" | "cpu"
    peak_flops: Mapping[str, float]
    vector_flops: Mapping[str, float]
    mem_bandwidth: float
    cache_bandwidth: float
    cache_bytes: float
    launch_overhead: float
    onchip_bytes: float
    cores: int = 1
    vector_bits: int = 0
    matmul_efficiency: float = 0.7
    fusion: Fusion = field(default_factory=Fusion)
    notes: str = ""
    link_bandwidth: float = 10e9
    link_latency: float = 20e-6

    def __post_init__(self) -> None:
        for k in ("mem_bandwidth", "cache_bandwidth", "launch_overhead", "onchip_bytes",
                  "link_latency"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or v < 0:
                raise GraphOptError(f"{k} must be a number >= 0, got {v!r}",
                                    where=f"device {self.name}")
        if self.mem_bandwidth <= 0:
            raise GraphOptError("mem_bandwidth must be > 0", where=f"device {self.name}")
        if not isinstance(self.link_bandwidth, (int, float)) or self.link_bandwidth <= 0:
            raise GraphOptError(f"link_bandwidth must be a number > 0, got "
                                f"{self.link_bandwidth!r}", where=f"device {self.name}")
        if "f32" not in self.peak_flops or "f32" not in self.vector_flops:
            raise GraphOptError("peak_flops and vector_flops need an 'f32' entry",
                                where=f"device {self.name}")
        object.__setattr__(self, "peak_flops", dict(self.peak_flops))
        object.__setattr__(self, "vector_flops", dict(self.vector_flops))

    def matrix_rate(self, dtype: DType | None) -> float:
        """flop/s of matrix units for ``dtype`` (f32's rate for dtypes it does not list)."""
        return _rate(self.peak_flops, dtype)

    def vector_rate(self, dtype: DType | None) -> float:
        return _rate(self.vector_flops, dtype)

    def bandwidth(self, nbytes: float) -> float:
        """Bandwidth for a kernel moving ``nbytes`` across its boundary."""
        return self.cache_bandwidth if nbytes <= self.cache_bytes else self.mem_bandwidth

    def key(self) -> str:
        """A short identity for caches (changes when any number changes)."""
        import hashlib

        return f"{self.name}-{hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:8]}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fusion"] = self.fusion.to_dict()
        d["peak_flops"] = dict(self.peak_flops)
        d["vector_flops"] = dict(self.vector_flops)
        return d

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "Device":
        """A profile from a dict; ``base`` names a registered profile to start from."""
        d = dict(d)
        if "name" not in d:
            raise GraphOptError("a device profile needs a 'name'", where="device profile")
        base_name = d.pop("base", None)
        unknown = set(d) - {f.name for f in fields(Device)}
        if unknown:
            raise GraphOptError(f"unknown fields {sorted(unknown)}", where=f"device {d['name']}")
        if "fusion" in d and not isinstance(d["fusion"], Fusion):
            base_fusion = get_device(base_name).fusion.to_dict() if base_name else {}
            base_fusion.update(d["fusion"])
            d["fusion"] = Fusion.from_dict(base_fusion)
        if base_name is not None:
            base = get_device(base_name)
            for k in ("peak_flops", "vector_flops"):
                if k in d:
                    merged = dict(getattr(base, k))
                    merged.update(d[k])
                    d[k] = merged
            return replace(base, **d)
        missing = [f.name for f in fields(Device) if f.name not in d and f.default is MISSING
                   and f.default_factory is MISSING]
        if missing:
            raise GraphOptError(f"missing fields {missing} (or give 'base')",
                                where=f"device {d['name']}")
        return Device(**d)


def _rate(table: Mapping[str, float], dtype: DType | None) -> float:
    if dtype is not None and dtype.value in table:
        return float(table[dtype.value])
    if dtype is not None and dtype.is_int and "i8" in table and dtype.itemsize <= 1:
        return float(table["i8"])
    return float(table["f32"])


# ---- built-in GPU profiles (datasheet, dense, SXM parts) ------------------------------------------

# one step of a ring collective between NVLink-connected GPUs (NCCL's small-message all-reduce
# on 2 GPUs takes two such steps, ~10 us)
NVLINK_STEP_LATENCY = 5e-6
# gloo between processes on one host (loopback TCP): per-step latency and copy bandwidth
GLOO_STEP_LATENCY = 30e-6
GLOO_BANDWIDTH = 3e9

_GPU_FUSION = Fusion(pointwise=True, epilogue=True, epilogue_ops=None, max_epilogue=64,
                     reduction=True)


def _gpu(name: str, f32: float, tf32: float, f16: float, i8: float, f8: float | None,
         f64: float, bw: float, l2: float, smem: float, sms: int, link: float,
         notes: str) -> Device:
    peak = {"f32": f32, "tf32": tf32, "f16": f16, "bf16": f16, "i8": i8, "f64": f64}
    if f8 is not None:
        peak.update({"f8e4m3fn": f8, "f8e5m2": f8})
    vec = {"f32": f32, "f16": 2 * f32, "bf16": 2 * f32, "f64": f64}
    return Device(name=name, kind="gpu", peak_flops=peak, vector_flops=vec, mem_bandwidth=bw,
                  cache_bandwidth=2.5 * bw, cache_bytes=l2, launch_overhead=4e-6,
                  onchip_bytes=smem, cores=sms, vector_bits=0, matmul_efficiency=0.7,
                  fusion=_GPU_FUSION, notes=notes, link_bandwidth=link,
                  link_latency=NVLINK_STEP_LATENCY)


A100 = _gpu("a100", f32=19.5e12, tf32=156e12, f16=312e12, i8=624e12, f8=None, f64=19.5e12,
            bw=2.039e12, l2=40 * 2**20, smem=164 * 2**10, sms=108, link=300e9,
            notes="A100 SXM4 80GB: 312 TF f16/bf16 dense, 2.0 TB/s HBM2e, 40 MB L2, "
                  "NVLink3 300 GB/s per direction")
H100 = _gpu("h100", f32=67e12, tf32=495e12, f16=989e12, i8=1979e12, f8=1979e12, f64=67e12,
            bw=3.35e12, l2=50 * 2**20, smem=228 * 2**10, sms=132, link=450e9,
            notes="H100 SXM5 80GB: 989 TF f16/bf16 dense, 3.35 TB/s HBM3, 50 MB L2, "
                  "NVLink4 450 GB/s per direction")
H200 = _gpu("h200", f32=67e12, tf32=495e12, f16=989e12, i8=1979e12, f8=1979e12, f64=67e12,
            bw=4.8e12, l2=50 * 2**20, smem=228 * 2**10, sms=132, link=450e9,
            notes="H200 SXM 141GB: H100 compute, 4.8 TB/s HBM3e, NVLink4 450 GB/s per direction")


# ---- the CPU at hand ----------------------------------------------------------------------------

@dataclass(frozen=True)
class CpuInfo:
    cores: int
    vector_bits: int
    fma: bool
    ghz: float
    l2_bytes: float
    l3_bytes: float
    bf16: bool
    vnni: bool
    source: str  # what was detected and what was assumed


def detect_cpu() -> CpuInfo:
    """Cores (affinity), vector width and extensions (/proc/cpuinfo flags), clock, caches (sysfs).
    What cannot be read is assumed and named in ``source``."""
    assumed: list[str] = []
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    flags: set[str] = set()
    ghz = 0.0
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^(flags|Features)\s*:\s*(.*)$", text, re.M)
        if m:
            flags = set(m.group(2).split())
        ghz = _clock_ghz(text)
    except OSError:
        pass
    if "avx512f" in flags:
        bits = 512
    elif "avx2" in flags or "avx" in flags:
        bits = 256
    elif flags & {"sse2", "asimd", "neon"}:
        bits = 128
    else:
        bits = 128
        assumed.append("vector width 128")
    fma = bool(flags & {"fma", "asimd"})
    if ghz <= 0:
        ghz = 2.5
        assumed.append("2.5 GHz")
    l2 = _cache_size(2)
    l3 = _cache_size(3)
    if l2 is None:
        l2 = 1 * 2**20
        assumed.append("L2 1 MiB")
    if l3 is None:
        l3 = 8 * 2**20
        assumed.append("L3 8 MiB")
    src = (f"detected {cores} cores, {bits}-bit vectors{' + FMA' if fma else ''}, {ghz:.2f} GHz, "
           f"L2 {l2 / 2**20:.1f} MiB, L3 {l3 / 2**20:.0f} MiB")
    if assumed:
        src += f" (assumed: {', '.join(assumed)})"
    return CpuInfo(cores, bits, fma, ghz, float(l2), float(l3), "avx512_bf16" in flags,
                   bool(flags & {"avx512_vnni", "avx_vnni"}), src)


def _clock_ghz(cpuinfo: str) -> float:
    """The CPU's nominal clock in GHz (0 when unknown), stable from run to run so that the
    profile -- and the search's choices -- do not follow frequency scaling: the maximum of
    cpufreq (sysfs), else the clock in the model name ("@ 2.50GHz"), else /proc/cpuinfo's
    current "cpu MHz" rounded to 100 MHz."""
    try:
        khz = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()
        if khz.strip().isdigit() and int(khz) > 0:
            return int(khz) / 1e6
    except OSError:
        pass
    m = re.search(r"^model name\s*:.*@\s*([0-9.]+)\s*GHz", cpuinfo, re.M)
    if m:
        return float(m.group(1))
    m = re.search(r"^cpu MHz\s*:\s*([0-9.]+)", cpuinfo, re.M)
    if m:
        return round(float(m.group(1)) / 100) / 10
    return 0.0


def _cache_size(level: int) -> int | None:
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        for d in sorted(base.glob("index*")):
            if (d / "level").read_text().strip() == str(level) and \
                    (d / "type").read_text().strip() in ("Unified", "Data"):
                return _parse_size((d / "size").read_text().strip())
    except OSError:
        return None
    return None


def _parse_size(s: str) -> int | None:
    m = re.match(r"^(\d+)\s*([KMG]?)", s)
    if not m:
        return None
    return int(m.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[m.group(2)]


def cpu_fusion() -> Fusion:
    """ONNX Runtime's CPU provider fuses MatMul+Add (Gemm), Conv+Add/activation and a few named
    activation patterns (the ops declaring ``cpu_epilogue``); it does not fuse general pointwise
    chains."""
    from ..ops.registry import all_ops

    ops = frozenset(name for name, op in all_ops().items() if op.cpu_epilogue)
    return Fusion(pointwise=False, epilogue=True, epilogue_ops=ops, max_epilogue=2,
                  reduction=False, split_views=False)


def cpu_device(info: CpuInfo | None = None, name: str = "cpu") -> Device:
    """A profile of this machine's CPU (as ONNX Runtime's CPU provider runs on it)."""
    c = info or detect_cpu()
    lanes32 = c.vector_bits // 32
    fma_units = 2 if c.vector_bits >= 256 else 1
    per_core = c.ghz * 1e9 * lanes32 * (2 if c.fma else 1) * fma_units
    f32 = c.cores * per_core
    peak = {"f32": f32, "f64": f32 / 2, "f16": f32, "bf16": 2 * f32 if c.bf16 else f32,
            "i8": 4 * f32 if c.vnni else 2 * f32}
    # pointwise code: no FMA pairing, roughly one vector op per cycle per core
    vec = {"f32": c.cores * c.ghz * 1e9 * lanes32, "f64": c.cores * c.ghz * 1e9 * lanes32 / 2}
    # DRAM bandwidth cannot be read from the system: ~8 GB/s per core, at most 100 GB/s
    mem_bw = min(100e9, 8e9 * c.cores)
    return Device(name=name, kind="cpu", peak_flops=peak, vector_flops=vec,
                  mem_bandwidth=mem_bw, cache_bandwidth=4 * mem_bw,
                  cache_bytes=c.l3_bytes, launch_overhead=3e-6,
                  onchip_bytes=c.l2_bytes, cores=c.cores, vector_bits=c.vector_bits,
                  matmul_efficiency=0.6, fusion=cpu_fusion(),
                  notes=c.source + f"; DRAM {mem_bw / 1e9:.0f} GB/s assumed; gloo link "
                  f"{GLOO_BANDWIDTH / 1e9:.0f} GB/s, {GLOO_STEP_LATENCY * 1e6:.0f} us per step "
                  f"assumed", link_bandwidth=GLOO_BANDWIDTH, link_latency=GLOO_STEP_LATENCY)


# ---- registry -----------------------------------------------------------------------------------

_DEVICES: dict[str, Device] = {}
_BUILTIN = ("cpu", "a100", "h100", "h200")
_ENV_LOADED: list[str] = []


def _ensure() -> None:
    if not _DEVICES:
        for d in (A100, H100, H200):
            _DEVICES[d.name] = d
    env = os.environ.get("GRAPHOPT_DEVICES")
    if env and env not in _ENV_LOADED:
        _ENV_LOADED.append(env)
        load_devices(env)


def register_device(dev: Device, *, replace_existing: bool = False) -> Device:
    """Add a user profile (``replace_existing`` to redefine a name)."""
    _ensure()
    if dev.name in _DEVICES and not replace_existing:
        raise GraphOptError(f"device {dev.name!r} already exists (pass replace_existing=True)",
                            where="register_device")
    _DEVICES[dev.name] = dev
    return dev


def load_devices(path: str | os.PathLike[str]) -> list[Device]:
    """Register the profiles of a JSON file (``{"devices": [...]}`` or a list)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise GraphOptError(f"cannot read device profiles: {e}", where=str(p)) from e
    items = data.get("devices", []) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise GraphOptError("expected a list of device profiles", where=str(p))
    out = []
    for it in items:
        try:
            dev = Device.from_dict(it)
        except GraphOptError as e:
            raise GraphOptError(e.message, where=f"{p}: {e.where}") from e
        except TypeError as e:
            raise GraphOptError(f"bad device profile: {e}", where=str(p)) from e
        out.append(register_device(dev, replace_existing=True))
    return out


def get_device(name: "str | Device") -> Device:
    """A profile by name (case-insensitive); a Device is returned as is."""
    if isinstance(name, Device):
        return name
    _ensure()
    key = str(name).lower()
    if key == "cpu" and "cpu" not in _DEVICES:
        _DEVICES["cpu"] = cpu_device()
    if key not in _DEVICES:
        raise GraphOptError(f"unknown target {name!r}; known: {', '.join(device_names())}",
                            where="target")
    return _DEVICES[key]


def device_names() -> list[str]:
    _ensure()
    return sorted(set(_DEVICES) | set(_BUILTIN))
