"""CPUSpec: a CPU preset (SIMD cores, caches, DRAM), optionally with LUT GEMV kernels (T-MAC) or SRAM-PIM
LUT arrays in a cache level (SAIL), and how a run's time scales with its threads. Keys carry datasheet units;
properties give SI values."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass

from hw_models.spec_common import (
    SPEC_CONFIG,
    AreaSpec,
    NonNegative,
    OffChipMemory,
    Positive,
    PositiveInt,
    PowerSpec,
    PriceSpec,
    ReadWith,
    Source,
    fallback_dtype,
)
from kernels.formats import DTYPE_BITS

SIMD_DTYPES = Literal["fp64", "fp32", "fp16", "bf16", "int8"]
# What a kernel dtype runs as when the SIMD unit has no arithmetic for it (e.g. bf16 on Neoverse-N1):
# SIMD units widen to fp32, unlike matrix units (spec_common.DTYPE_FALLBACK).
SIMD_FALLBACK = {
    "int4": ("int8", "fp16", "fp32"),
    "int8": ("int8", "fp16", "fp32"),
    "fp8": ("fp16", "fp32"),
    "bf16": ("bf16", "fp32"),
    "fp16": ("fp16", "fp32"),
    "tf32": ("fp32",),
    "fp32": ("fp32",),
    "fp64": ("fp64", "fp32"),
}
Fraction = Annotated[float, Field(ge=0, lt=1)]


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class DequantSpec:
    """SIMD byte-lane slots per weight that llama.cpp's dequantizing dot product spends besides its int8 multiply-adds
    (unpacking the weights, scaling and accumulating their blocks' sums), per format it stores sub-8-bit weights in:
    1-2 bit weights run as Q2_K, 3-bit as Q3_K, 4-bit as Q4_0, 5-bit as Q5_0, 6-7 bit as Q6_K (cpu.dequant_lane_ops)."""

    q2_k: NonNegative
    q3_k: NonNegative
    q4_0: NonNegative
    q5_0: NonNegative
    q6_k: NonNegative
    source: Source


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class CoreSpec:
    cores: PositiveInt
    threads: PositiveInt | None = None  # threads a run uses (None: all cores); at most `cores`
    frequency_GHz: Positive
    simd_width_bits: PositiveInt  # one SIMD register (NEON: 128)
    simd_pipes: PositiveInt  # SIMD pipelines per core, each one instruction per cycle
    simd_dtypes: tuple[SIMD_DTYPES, ...]  # dtypes with native SIMD multiply-add (others fall back)
    # Baseline (dequantization-based) low-bit GEMV: SIMD byte-lane slots per sub-8-bit weight, by format, paid on top
    # of the multiply-adds.
    dequant_lane_ops_per_weight: DequantSpec
    # 8-bit weights (llama.cpp Q8_0): SIMD byte-lane operations per weight to convert, scale and accumulate each
    # block's integer sum, paid on top of the multiply-adds (sub-8-bit weights pay dequant_lane_ops_per_weight,
    # which includes that work).
    scale_lane_ops_per_weight: NonNegative
    source: Source

    @model_validator(mode="after")
    def _fp32_present(self):
        if "fp32" not in self.simd_dtypes:
            raise ValueError("simd_dtypes must include fp32 (the vector rate)")
        return self


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class CacheLevelSpec:
    capacity_MB: Positive  # whole chip (all private copies summed)
    bandwidth_GBps: Positive  # aggregate over all cores
    read_pJ_per_byte: Positive
    source: Source


CACHE_LEVELS = ("l1", "l2", "l3", "slc")  # from the core outward


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class CachesSpec:
    """The cache levels a chip has, from the core outward; levels it lacks are left out."""

    l1: CacheLevelSpec
    l2: CacheLevelSpec | None = None
    l3: CacheLevelSpec | None = None
    slc: CacheLevelSpec | None = None

    def levels(self) -> dict[str, CacheLevelSpec]:
        return {name: getattr(self, name) for name in CACHE_LEVELS if getattr(self, name) is not None}


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class MemorySpec:
    type: str
    capacity_GB: Positive
    bandwidth_GBps: Positive
    source: Source


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class EnergySpec:
    mac_pJ: dict[SIMD_DTYPES, Positive]  # one multiply-accumulate by precision
    lane_op_pJ: Positive  # one 8-bit SIMD lane operation (add, table lookup, shift, mask)
    dram_pJ_per_bit: Positive
    source: Source

    @model_validator(mode="after")
    def _fp32_present(self):
        if "fp32" not in self.mac_pJ:
            raise ValueError("mac_pJ must include fp32")
        return self


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class LUTSpec:
    """Table-lookup GEMV for low-bit weights (T-MAC): per activation group of `group_size` values a table of
    2^group_size partial sums is built; each b-bit weight group then costs b lookups (one per bit plane)."""

    engine: Literal["simd", "pim"]  # who does the lookups: the cores' SIMD (T-MAC) or cache PIM arrays (SAIL)
    group_size: PositiveInt  # activations per table (g); the table has 2^g entries
    table_entry_bits: PositiveInt  # precision of a table entry
    build_lane_ops_per_entry: Positive  # SIMD lane ops to compute one table entry
    build_lane_bits: PositiveInt  # lane width the table entries are computed in (before quantizing them)
    # SIMD lane ops per lookup incl. its accumulate (simd engine only: PIM arrays look up by row reads)
    lookup_lane_ops: Annotated[Positive | None, ReadWith("lut.engine", "simd")] = None
    max_weight_bits: PositiveInt  # widest weights the LUT kernels take; wider ones use the baseline path
    source: Source

    @model_validator(mode="after")
    def _small_group(self):
        if self.group_size > 8:
            raise ValueError(f"group_size: found {self.group_size}, allowed: 1 to 8 (the table has 2^g entries)")
        if self.engine == "simd" and self.lookup_lane_ops is None:
            raise ValueError("lookup_lane_ops: found none with engine 'simd', allowed: the lane ops a lookup takes "
                             "(required for the simd engine)")
        return self


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class PIMSpec:
    """SRAM compute arrays in one cache level (SAIL): each array reads one table row per cycle; a row holds the
    same entry of row_bits / table_entry_bits tables, so that many batched tokens share one read."""

    cache_level: Literal["l1", "l2", "l3", "slc"]  # the cache level whose arrays compute
    array_kB: Positive  # size of one SRAM array
    row_bits: PositiveInt  # bits read per array access
    frequency_GHz: Positive
    cycle_saving: Fraction  # cycles removed by reusing repeated activation patterns
    read_pJ_per_byte: Positive  # energy of a row read inside one array (local, no cache-level wires)
    # Adds per second, over all arrays, of the adders that accumulate the looked-up entries into each token's running
    # sums and reduce the partial sums of the arrays sharing an output (overlapping the row reads).
    add_GOPS: Positive
    area_overhead_fraction: Fraction  # added logic as a fraction of the die
    source: Source

    @property
    def rows_per_array(self) -> int:
        """Rows of row_bits in one array (array_kB in decimal kB, as CPUSpec.pim_arrays counts the arrays)."""
        return max(int(self.array_kB * 8e3 // self.row_bits), 1)


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class ThreadScalingSpec:
    """How a kernel's time shrinks with the run's threads: Amdahl's law with an absolute serial part per kernel
    (fork/join, single-threaded steps and whatever else does not shrink, lumped and fitted), and the DRAM
    bandwidth one thread can draw (the run draws threads x that, at most the memory's peak)."""

    serial_us: NonNegative  # per kernel: one thread's time that does not shrink with threads (at most the kernel)
    core_dram_GBps: Positive | None = None  # DRAM bandwidth one thread can draw (None: no per-thread limit)
    source: Source


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class CPUSpec(OffChipMemory):
    name: str
    kind: Literal["cpu"]
    description: str
    compute: CoreSpec
    caches: CachesSpec
    memory: MemorySpec
    energy: EnergySpec
    power: PowerSpec
    area: AreaSpec
    price: PriceSpec
    lut: LUTSpec | None = None
    pim: PIMSpec | None = None
    thread_scaling: ThreadScalingSpec | None = None  # None: time shrinks as 1 / threads, no per-thread DRAM limit

    @model_validator(mode="after")
    def _threads_within_cores(self):
        c = self.compute
        if c.threads is not None and c.threads > c.cores:
            raise ValueError(f"compute.threads: found {c.threads}, allowed: 1 to {c.cores} (compute.cores)")
        return self

    @model_validator(mode="after")
    def _simd_table_fits_a_register(self):
        """The simd engine looks its tables up with one register-wide table instruction per lookup (NEON TBL on a
        16-entry int8 table in T-MAC); a larger table would need instructions the lookup count does not price."""
        lut, width = self.lut, self.compute.simd_width_bits
        if lut is None or lut.engine != "simd" or 2**lut.group_size * lut.table_entry_bits <= width:
            return self
        largest = (width // lut.table_entry_bits).bit_length() - 1
        raise ValueError(f"lut.group_size: found {lut.group_size}, allowed: 1 to {largest} on the simd engine (a table "
                         f"of 2^group_size {lut.table_entry_bits}-bit entries must fit one {width}-bit SIMD register "
                         f"for its table lookups; T-MAC uses 4)")

    @model_validator(mode="after")
    def _pim_consistent(self):
        if self.lut is not None and self.lut.engine == "pim" and self.pim is None:
            raise ValueError("lut.engine: found 'pim' without a pim section, allowed: 'simd', or 'pim' beside a pim "
                             "section (the cache arrays its lookups run in)")
        if self.pim is not None and (self.lut is None or self.lut.engine != "pim"):
            found = "no lut section" if self.lut is None else f"lut.engine {self.lut.engine!r}"
            raise ValueError(f"pim: found beside {found}, allowed: beside a lut section with engine 'pim' (only its "
                             f"lookups run in the arrays; without them the section would price its area and nothing "
                             f"else)")
        levels = self.caches.levels()
        if self.pim is not None and self.pim.cache_level not in levels:
            raise ValueError(f"pim.cache_level: found {self.pim.cache_level!r}, allowed: {', '.join(levels)}")
        return self

    @property
    def threads(self) -> int:
        """Threads the run uses: compute.threads, or all cores."""
        return self.compute.threads or self.compute.cores

    @property
    def bandwidth_Bps(self) -> float:
        """DRAM bandwidth the run's threads can draw: the memory's peak, or threads x one thread's draw if less."""
        peak = self.memory.bandwidth_GBps * 1e9
        scaling = self.thread_scaling
        if scaling is None or scaling.core_dram_GBps is None:
            return peak
        return min(peak, self.threads * scaling.core_dram_GBps * 1e9)

    @property
    def serial_s(self) -> float:
        """Per kernel, one thread's time that does not shrink with threads (0 without thread_scaling)."""
        return self.thread_scaling.serial_us * 1e-6 if self.thread_scaling else 0.0

    @property
    def dram_J_per_byte(self) -> float:
        return self.energy.dram_pJ_per_bit * 8e-12

    def matrix_dtype(self, dtype: str) -> str:
        """The type a kernel dtype's math runs as: the SIMD type its lanes compute in."""
        return fallback_dtype(self.compute.simd_dtypes, dtype, SIMD_FALLBACK, default=("fp32",))

    def lane_ops_per_s(self, lane_bits: int) -> float:
        """SIMD lane operations per second over the run's threads (one core each) at a lane width, before
        thread-scaling losses (cpu.CPUModel adds those per kernel)."""
        c = self.compute
        return self.threads * c.frequency_GHz * 1e9 * c.simd_pipes * (c.simd_width_bits / lane_bits)

    def peak_flops(self, dtype: str) -> float:
        """Peak multiply-add rate (2 FLOP per lane per pipe per cycle) of the SIMD type a dtype runs as."""
        return 2.0 * self.lane_ops_per_s(DTYPE_BITS[self.matrix_dtype(dtype)])

    def mac_J(self, dtype: str) -> float:
        energies = self.energy.mac_pJ
        simd = self.matrix_dtype(dtype)
        return (energies.get(simd) or energies["fp32"]) * 1e-12

    @property
    def pim_arrays(self) -> float:
        """Compute arrays in the PIM cache level (0 without PIM)."""
        if self.pim is None:
            return 0.0
        return self.caches.levels()[self.pim.cache_level].capacity_MB * 1e6 / (self.pim.array_kB * 1e3)
