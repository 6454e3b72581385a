"""A CPU preset (kind cpu) for the machine this runs on, from the measurement harness's own timings.

The harness times streaming kernels (kernels.harness.measure_streaming) and a few large GEMMs per dtype
(measure_gemms); this module turns those rows and what the OS says about the machine (SIMD flags, caches,
memory size) into a preset dictionary that CPUSpec accepts. CPUSpec has no "achieved rate" field, so the
measured rates are written into its fields as follows, and every section's source says so:

- memory.bandwidth_GBps: the best rate measured over the streaming kernels and a large fp32 GEMV (bytes
  of one pass / median time): a GEMV only reads its weights, so it streams faster than kernels that
  write as much as they read, and it is the memory-bound kernel a preset must predict.
- compute: `cores` = the torch threads the GEMMs ran on; `simd_width_bits` from the CPU flags;
  `frequency_GHz` is an effective clock: the measured fp32 GEMM FLOP/s / (2 x cores x pipes x fp32 lanes),
  so that CPUSpec's peak fp32 rate equals the achieved one. bf16 is listed as native SIMD arithmetic
  (CPUSpec's 2x fp32) only when the measured bf16 rate is at least sqrt(2) x the fp32 rate.
- Numbers nobody measured here (cache bandwidths, energies, power, area) are named proxies, most of them
  taken from the ampere-altra preset (per core where they scale with cores); price is left empty.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from kernels.measured import MeasuredKernel

# fp32 tensors of 1024 x 4096 (16 MiB): beyond a core's L2, and below glibc's 32 MiB mmap threshold, above
# which every output tensor is fresh mmap'ed memory whose page faults the timing would include.
HOST_STREAMING_SIZES: tuple[tuple[int, int], ...] = ((1024, 4096),)
# Large GEMMs (2 GFLOP, about 10 ms at fp32 on one recent x86 core): compute-bound, past per-call overheads.
HOST_GEMM_SHAPES: tuple[tuple[int, int, int], ...] = ((1024, 1024, 1024), (512, 2048, 1024), (2048, 1024, 512))
# A memory-bound GEMV: 64 MiB of fp32 weights, beyond the caches of the machines this runs on.
HOST_GEMV_SHAPES: tuple[tuple[int, int, int], ...] = ((1, 4096, 4096),)
HOST_GEMM_DTYPES = ("fp32", "bf16")
HOST_ROUNDS = 3  # `explore measure --cpu-preset` times everything three times over (about 30 s on one core)
PROXY_PRESET = "ampere-altra"  # where the unmeasured per-core proxies come from
SIMD_PIPES = 2  # PROXY: two FMA pipes per core (Intel Skylake-SP and later server cores, Arm Neoverse-N1)
NATIVE_BF16_RATIO = math.sqrt(2.0)  # geometric midpoint between fallback (1x fp32) and native SIMD (2x)
SYSFS_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")


@dataclass(frozen=True, kw_only=True)
class CacheLevel:
    """One data cache level as the OS reports it: its size and how many CPUs share one copy."""

    level: int
    size_B: int
    shared_by: int


@dataclass(frozen=True, kw_only=True)
class HostFacts:
    """What the OS says about this machine (nothing timed)."""

    cpu_name: str
    logical_cpus: int
    simd_width_bits: int
    simd_isa: str
    caches: tuple[CacheLevel, ...]
    memory_GB: float | None  # None where the OS does not say


def _cpu_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith(("flags", "Features")) and ":" in line:
            return set(line.split(":", 1)[1].split())
    return set()


def _simd(flags: set[str]) -> tuple[int, str]:
    """(widest SIMD register in bits, its ISA name) from /proc/cpuinfo flags."""
    if "avx512f" in flags:
        return 512, "AVX-512"
    if "avx2" in flags or "avx" in flags:
        return 256, "AVX2" if "avx2" in flags else "AVX"
    if "sve" in flags:
        return 128, "SVE (width not in the flags; 128 assumed)"
    if "asimd" in flags or platform.machine() in ("arm64", "aarch64"):
        return 128, "NEON"
    return 128, "SSE"


def _cpu_list_len(text: str) -> int:
    count = 0
    for part in text.strip().split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


def _caches() -> tuple[CacheLevel, ...]:
    """Data and unified cache levels of CPU 0 from sysfs (empty where there is no sysfs)."""
    levels = []
    for index in sorted(SYSFS_CACHE.glob("index*")):
        read = lambda name, d=index: (d / name).read_text().strip()  # noqa: E731
        if read("type") == "Instruction":
            continue
        size = read("size")
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1], 1)
        levels.append(CacheLevel(level=int(read("level")), size_B=int(size.rstrip("KMG")) * scale,
                                 shared_by=_cpu_list_len(read("shared_cpu_list"))))
    return tuple(sorted(levels, key=lambda c: c.level))


def physical_memory_GB() -> float | None:
    """The OS's physical memory in GB (sysconf), or None where it does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        return None


def host_facts() -> HostFacts:
    """Read the CPU name, SIMD width, caches and memory size of this machine."""
    from kernels.harness import device_name

    width, isa = _simd(_cpu_flags())
    return HostFacts(cpu_name=device_name("cpu"), logical_cpus=os.cpu_count() or 1, simd_width_bits=width,
                     simd_isa=isa, caches=_caches(), memory_GB=physical_memory_GB())


@dataclass(frozen=True)
class HostShape:
    """One thing measure_host times: a streaming size (rows, hidden) or a GEMM (m, n, k), in a dtype."""

    kind: str  # "streaming" or "gemm", as explore measure's kinds
    shape: tuple[int, ...]
    dtype: str


def host_shapes(dtypes: Sequence[str] = HOST_GEMM_DTYPES) -> list[HostShape]:
    """What one round of measure_host times, in order: the streaming sizes and the GEMV (fp32), then the large GEMMs
    in each dtype."""
    return ([HostShape("streaming", size, "fp32") for size in HOST_STREAMING_SIZES]
            + [HostShape("gemm", shape, "fp32") for shape in HOST_GEMV_SHAPES]
            + [HostShape("gemm", shape, dtype) for dtype in dtypes for shape in HOST_GEMM_SHAPES])


def measure_host_shape(shape: HostShape, *, name: str, repeats: int = 20,
                       source: str | None = None) -> list[MeasuredKernel]:
    """The rows of one of host_shapes, timed on the CPU with the harness."""
    from kernels import harness

    if shape.kind == "streaming":
        # Flushed: the preset's bandwidth is memory's, the rate at which weights and KV caches stream in.
        return harness.measure_streaming([shape.shape], device=name, dtype=shape.dtype, source=source,
                                         repeats=repeats, flush=True)
    return harness.measure_gemms([shape.shape], device=name, dtype=shape.dtype, source=source, repeats=repeats)


def measure_host(*, name: str, repeats: int = 20, dtypes: Sequence[str] = HOST_GEMM_DTYPES,
                 source: str | None = None, rounds: int = 1) -> list[MeasuredKernel]:
    """Time host_shapes(dtypes) with the harness, on the CPU.

    With rounds > 1 everything is timed that many times over and each row keeps its fastest round: each
    timing is already a median of its runs, and on a shared machine a neighbour only ever adds time.
    """
    shapes = host_shapes(dtypes)
    return fastest([[row for shape in shapes for row in measure_host_shape(shape, name=name, repeats=repeats,
                                                                            source=source)]
                    for _ in range(rounds)])


def fastest(rounds: Sequence[Sequence[MeasuredKernel]]) -> list[MeasuredKernel]:
    """Per row position, the row of the round with the smallest (median) time."""
    return [min(rows, key=lambda r: r.time_s) for rows in zip(*rounds, strict=True)]


def is_gemv(row: MeasuredKernel) -> bool:
    return row.kernel == "gemm" and row.m == 1


def streaming_GBps(rows: Sequence[MeasuredKernel]) -> float:
    """The best rate of one pass over memory among the streaming and GEMV rows (GB/s): eager RMSNorm and
    SiLU do more work per byte than the one pass the harness counts, so the add or the GEMV sets it."""
    streams = ("norm", "elementwise", "activation")
    rates = [r.bytes / r.time_s / 1e9 for r in rows if r.kernel in streams and r.bytes > 0]
    rates += [r.to_kernel().total_bytes / r.time_s / 1e9 for r in rows if is_gemv(r)]
    if not rates:
        raise ValueError("no streaming or GEMV rows to take a bandwidth from")
    return max(rates)


def gemm_GFLOPs(rows: Sequence[MeasuredKernel], dtype: str) -> float | None:
    """Median achieved GFLOP/s of the (compute-bound, not GEMV) GEMM rows in a dtype; None when none."""
    rates = [r.to_kernel().flops / r.time_s / 1e9 for r in rows
             if r.kernel == "gemm" and not is_gemv(r) and r.dtype == dtype]
    return statistics.median(rates) if rates else None


def _fmt(x: float) -> float:
    """Four significant digits: the measurements are not better than that."""
    return float(f"{x:.4g}")


def _compute(facts: HostFacts, threads: int, fp32: float, bf16: float | None, proxy, provenance: str) -> dict:
    lanes = facts.simd_width_bits / 32
    clock_GHz = fp32 / (2 * threads * SIMD_PIPES * lanes)
    native_bf16 = bf16 is not None and bf16 >= NATIVE_BF16_RATIO * fp32
    dtypes = ["fp64", "fp32"] + ["bf16"] * native_bf16
    if bf16 is None:
        bf16_text = "bf16 not measured: it runs at the fp32 rate (fallback)"
    else:
        verdict = ("listed as native, so CPUSpec prices it at 2x fp32" if native_bf16 else
                   "below sqrt(2) x fp32, so it is not listed and runs at the fp32 rate")
        bf16_text = (f"bf16 measured {bf16:.4g} GFLOP/s = {bf16 / fp32:.2f}x fp32, {verdict}"
                     + ("; CPUSpec has no matrix-engine (e.g. AMX) rate, so a bf16 rate above 2x fp32 is"
                        " underestimated" if bf16 > 2 * fp32 else ""))
    source = (f"MEASURED with the harness ({provenance}). cores: the {threads} torch thread(s) the GEMMs ran on"
              f" (the machine shows {facts.logical_cpus} logical CPUs); threads: null, all of them, and no"
              f" thread_scaling section: the rates are achieved at that count, its thread losses included."
              f" simd_width_bits: {facts.simd_isa} from"
              f" /proc/cpuinfo flags. simd_pipes: PROXY, {SIMD_PIPES} FMA pipes per core (not read from the"
              f" machine). frequency_GHz is an EFFECTIVE clock, not the nominal one: the median achieved fp32"
              f" FLOP/s of torch.mm over {', '.join('x'.join(map(str, s)) for s in HOST_GEMM_SHAPES)}"
              f" (m x n x k), {fp32:.4g} GFLOP/s, divided by 2 x cores x pipes x {lanes:g} fp32 lanes, so CPUSpec's"
              f" peak fp32 rate is the achieved one (CPUSpec has no achieved-rate field). fp64: architectural"
              f" (half the fp32 lanes), not measured; fp16 and int8 not measured, they run at the fp32 rate."
              f" {bf16_text}. scale_lane_ops_per_weight: PROXY from the {PROXY_PRESET} preset (llama.cpp's NEON Q8_0"
              f" count; this machine's kernels differ)")
    dequant = {**asdict(proxy.compute.dequant_lane_ops_per_weight), "source": (
        f"PROXY from the {PROXY_PRESET} preset (llama.cpp's NEON counts; this machine's kernels differ)")}
    return {"cores": threads, "threads": None, "frequency_GHz": _fmt(clock_GHz),
            "simd_width_bits": facts.simd_width_bits,
            "simd_pipes": SIMD_PIPES, "simd_dtypes": dtypes,
            "scale_lane_ops_per_weight": proxy.compute.scale_lane_ops_per_weight,
            "dequant_lane_ops_per_weight": dequant, "source": source}


def _caches_section(facts: HostFacts, threads: int, clock_GHz: float, memory_GBps: float, proxy) -> dict:
    """l1, l2, l3 from sysfs: capacity measured by the OS, bandwidths and energies proxies."""
    proxy_levels = list(proxy.caches.levels().items())
    found = {c.level: c for c in facts.caches if c.level in (1, 2, 3)}
    if not found:
        # sysfs lists no caches: one level with the proxy preset's first-level capacity per core.
        name, first = proxy_levels[0]
        per_core_B = int(first.capacity_MB * 1e6 / proxy.compute.cores)
        return {"l1": {"capacity_MB": _fmt(per_core_B * threads / 1e6), "bandwidth_GBps": _fmt(memory_GBps),
                       "read_pJ_per_byte": first.read_pJ_per_byte,
                       "source": (f"PROXY: {SYSFS_CACHE} lists no caches on this machine; the {PROXY_PRESET} "
                                  f"preset's {name} capacity per core x {threads} core(s), its energy, and the "
                                  "measured streaming bandwidth")}}
    section = {}
    for level, cache in sorted(found.items()):
        private = cache.shared_by <= 1
        capacity_MB = cache.size_B * (threads if private else 1) / 1e6
        load_B = facts.simd_width_bits / 8 * (2 if level == 1 else 1)
        if level < 3:
            bandwidth = load_B * clock_GHz * threads
            how = (f"PROXY, {'two' if level == 1 else 'one'} {facts.simd_width_bits}-bit load(s) per cycle x the"
                   f" effective clock x cores; not measured")
        else:
            bandwidth = memory_GBps
            how = ("PROXY, the measured streaming bandwidth: the harness's cache flush (64 MiB) does not evict a"
                   " larger last-level cache, so that rate already mixes this level and DRAM; not measured apart")
        proxy_name, energy = proxy_levels[min(level, len(proxy_levels)) - 1]
        section[f"l{level}"] = {
            "capacity_MB": _fmt(capacity_MB), "bandwidth_GBps": _fmt(bandwidth),
            "read_pJ_per_byte": energy.read_pJ_per_byte,
            "source": (f"Capacity: {cache.size_B // 2**10} KiB from {SYSFS_CACHE}, shared by {cache.shared_by} CPU(s)"
                       f"{f' (x {threads} cores)' if private else ''}. Bandwidth: {how}. Energy: PROXY from the"
                       f" {PROXY_PRESET} preset's {proxy_name} figure (Horowitz ISSCC 2014, 45 nm)")}
    return section


def cpu_preset(rows: Sequence[MeasuredKernel], facts: HostFacts, *, name: str, threads: int, provenance: str,
               proxy=None) -> dict:
    """The preset dictionary (kind cpu) of this machine from harness rows; `provenance` names the harness
    command, date, machine, torch version and threads and is written into every section's source."""
    from hw_models.registry import read_device_yaml, validate_spec

    if proxy is None:
        proxy = validate_spec(*read_device_yaml(PROXY_PRESET))
    fp32 = gemm_GFLOPs(rows, "fp32")
    if fp32 is None:
        raise ValueError("no fp32 GEMM rows: the effective clock is fitted to the fp32 GEMM rate")
    memory_GBps = streaming_GBps(rows)
    compute = _compute(facts, threads, fp32, gemm_GFLOPs(rows, "bf16"), proxy, provenance)
    per_core = threads / proxy.compute.cores
    pp = proxy.power
    return {
        "name": name, "kind": "cpu",
        "description": (f"{facts.cpu_name}, {threads} thread(s) of {facts.logical_cpus} logical CPUs, as the"
                        f" measurement harness sees it: bandwidth and math rates are achieved, not peak"),
        "compute": compute,
        "caches": _caches_section(facts, threads, compute["frequency_GHz"], memory_GBps, proxy),
        "memory": {"type": "host DRAM (type not visible to the harness)",
                   "capacity_GB": _fmt(facts.memory_GB or proxy.memory.capacity_GB),
                   "bandwidth_GBps": _fmt(memory_GBps),
                   "source": (f"MEASURED with the harness ({provenance}). bandwidth_GBps: the best of"
                              f" RMSNorm / SiLU / add over fp32 activations of"
                              f" {', '.join(f'{r}x{h}' for r, h in HOST_STREAMING_SIZES)} and an fp32 GEMV"
                              f" {', '.join('x'.join(map(str, s)) for s in HOST_GEMV_SHAPES)} (bytes of one pass /"
                              f" median time) achieved by {threads} thread(s): an achieved rate, not the DRAM"
                              f" peak. capacity_GB: "
                              + ("the OS's physical memory (sysconf)" if facts.memory_GB else
                                 f"PROXY, the {PROXY_PRESET} preset's (sysconf does not say here)"))},
        "energy": {"mac_pJ": dict(proxy.energy.mac_pJ), "lane_op_pJ": proxy.energy.lane_op_pJ,
                   "dram_pJ_per_bit": proxy.energy.dram_pJ_per_bit,
                   "source": (f"NOT MEASURED. PROXY: the {PROXY_PRESET} preset's energy section"
                              f" ({proxy.energy.source})")},
        "power": {"tdp_W": _fmt(pp.tdp_W * per_core), "idle_W": _fmt(pp.idle_W * per_core),
                  "source": (f"NOT MEASURED (a virtual machine's share of a CPU has no published power). PROXY:"
                             f" the {PROXY_PRESET} preset's tdp_W and idle_W per core ({pp.tdp_W:g} W and"
                             f" {pp.idle_W:g} W / {proxy.compute.cores} cores) x {threads} core(s); energy"
                             f" results for this preset are placeholders")},
        "area": {"die_mm2": _fmt(proxy.area.die_mm2 * per_core), "process": "unknown",
                 "source": (f"NOT PUBLISHED for this machine (the hypervisor names the CPU only"
                            f" '{facts.cpu_name}'). PROXY: the {PROXY_PRESET} preset's die area per core"
                            f" ({proxy.area.die_mm2:g} mm2 / {proxy.compute.cores} cores) x {threads} core(s)")},
        "price": {"usd": None, "usd_per_hour": None,
                  "source": "not priced: the machine the project's tests ran on, not a product"},
    }


def preset_yaml(data: dict) -> str:
    """The preset as YAML text, keys in the order written."""
    import yaml

    return yaml.safe_dump(data, sort_keys=False, width=100_000, allow_unicode=True)
