"""Spec sections every device kind shares (power, area, price) and the field types presets are checked with.

Preset keys carry the datasheet unit (`tdp_W`, `die_mm2`); every section has a `source` naming where its
numbers come from.
"""

from __future__ import annotations

from typing import Annotated, NamedTuple

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, model_validator
from pydantic.dataclasses import dataclass

from kernels.sparsity import ALLOWED_STRUCTURED, parse_structured

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
PositiveInt = Annotated[int, Field(gt=0)]
Source = Annotated[str, StringConstraints(min_length=3, strip_whitespace=True)]

SPEC_CONFIG = ConfigDict(extra="forbid")


def _sparsity_pattern(pattern: str) -> str:
    try:
        parse_structured(pattern)
    except ValueError:
        raise ValueError(ALLOWED_STRUCTURED) from None  # the key and the value are the message's: said once
    return pattern


SparsityPattern = Annotated[str, AfterValidator(_sparsity_pattern)]  # an N:M pattern a device's units skip zeros of


class Unread:
    """Annotated metadata of a preset field that no cost model reads: kept as a record of the chip, and a
    what-if override of it is refused (it would change nothing). `why` says what the field is for instead."""

    def __init__(self, why: str):
        self.why = why


class ReadWith:
    """Annotated metadata of a preset field that a cost model reads only where another field of the device (`path`,
    dotted from the device's root) is present, or, given `value`, holds that value: an override of it on a device
    without that is refused (it would change nothing)."""

    def __init__(self, path: str, value: object = None):
        self.path, self.value = path, value


class AddsKeys:
    """Annotated metadata of a mapping field keyed by a Literal's names (a GPU's peak_TFLOPS by dtype): a what-if may
    add a key the preset leaves out, any name the Literal allows (fp8 tensor cores on an A100), besides changing one it
    has (hw_models/registry.py addable_keys)."""


# Shared by every kind: the cost models price energy from idle power and energy per action.
TDP_UNREAD = Unread("no cost model reads a what-if TDP: energy is idle power x time plus energy per action "
                    "(a GPU's energy per FLOP is derived once from the shipped preset's TDP); override "
                    "power.idle_W or an energy field instead, or cap a GPU's power with power.cap_W")


# What a matrix kernel in each dtype runs as on hardware without units for it: the next wider format it has
# (e.g. fp8 on an A100, int4 on an H100, fp32 on an NPU whose arrays take 16-bit operands).
DTYPE_FALLBACK = {
    "fp4": ("fp4", "fp8", "fp16", "bf16"),
    "int4": ("int4", "int8", "fp16", "bf16"),
    "int8": ("int8", "fp16", "bf16"),
    "fp8": ("fp8", "fp16", "bf16"),
    "bf16": ("bf16", "fp16"),
    "fp16": ("fp16", "bf16"),
    "tf32": ("tf32", "fp32", "fp16", "bf16"),
    "fp32": ("fp32", "fp16", "bf16"),
    "fp64": ("fp64", "fp32", "fp16", "bf16"),
}


def fallback_dtype(available, dtype: str, chains: dict[str, tuple[str, ...]] = DTYPE_FALLBACK,
                   default: tuple[str, ...] = ("fp16", "bf16")) -> str:
    """The first dtype of `dtype`'s fallback chain that `available` has (a dtype without a chain tries itself,
    then `default`); KeyError if none."""
    for candidate in chains.get(dtype, (dtype, *default)):
        if candidate in available:
            return candidate
    raise KeyError(f"no entry for {dtype!r} or a wider dtype")


class OffChipMemory:
    """SI properties of a spec whose `memory` section gives capacity_GB and bandwidth_GBps."""

    @property
    def memory_bytes(self) -> float:
        return self.memory.capacity_GB * 1e9

    @property
    def bandwidth_Bps(self) -> float:
        return self.memory.bandwidth_GBps * 1e9


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class PowerSpec:
    tdp_W: Annotated[Positive, TDP_UNREAD]
    idle_W: NonNegative
    source: Source

    @model_validator(mode="after")
    def _idle_below_tdp(self):
        if self.idle_W >= self.tdp_W:
            raise ValueError(f"idle_W: found {self.idle_W:g}, allowed: below tdp_W ({self.tdp_W:g} W)")
        return self


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class AreaSpec:
    die_mm2: Positive
    process: Annotated[str, Unread("a record of the chip; no cost model scales with the process node")]
    source: Source
    transistors_billion: Annotated[Positive | None, Unread("a record of the chip; area comes from die_mm2")] = None


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class HostLinkSpec:
    """The link between the device and its host's memory: a link preset name (hw_models/presets/links), over which
    offloaded weights and KV cache stream (sim/offload.py); `source` says where the device's link is documented."""

    link: str
    source: Source


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class PriceSpec:
    source: Source
    usd: Positive | None = None
    usd_per_hour: Positive | None = None


class Plausible(NamedTuple):
    """The range a kind of preset number may take, in the key's unit: wide enough for any honest what-if (a
    chip ten times beyond what ships), narrow enough that a typo (1e-300 GB/s, 10^12 SMs) is caught before it
    prices a TTFT of 10^296 s. Zero and negative numbers pass here: whether a field may be 0 is its type's rule."""

    low: float
    high: float
    unit: str
    why: str


# A field's range by its dotted path (a regular expression; the first that matches applies). Largest shipping
# parts as of 2026 are the yardstick: B200 (8 TB/s HBM3e, 9 PFLOP/s dense fp4, 1 kW), B300 (288 GB), Cerebras
# WSE-3 (a 46,225 mm2 wafer, 900,000 cores, 44 GB of SRAM at 21 PB/s, a 23 kW system).
PLAUSIBLE: tuple[tuple[str, Plausible], ...] = (
    # A link preset's own fields (hw_models/link.py: top-level keys, where a device's are nested).
    (r"^bandwidth_GBps$", Plausible(low=0.1, high=1e4, unit="GB/s", why="a link per direction per device: 10 TB/s "
                                    "is 11x NVLink 5's 900 GB/s; 0.1 GB/s is 1 Gb Ethernet")),
    (r"^latency_us$", Plausible(low=0, high=1e5, unit="us", why="per hop: 0.1 s is 10^4 times InfiniBand's")),
    (r"^domain_devices$", Plausible(low=1, high=1e5, unit="GPUs", why="one link domain: 100,000 is 174x the 576 GPUs "
                                    "NVLink 5's switch system reaches")),
    (r"^peer_devices$", Plausible(low=1, high=1e4, unit="GPUs", why="an NVLink domain: 10,000 is 17x the 576 GPUs "
                                  "NVLink 5's switch system reaches")),
    (r"^(caches\.\w+|onchip)\.bandwidth_GBps$", Plausible(
        low=1, high=1e8, unit="GB/s", why="on-chip SRAM: 100 PB/s is 5x Cerebras WSE-3's 21 PB/s")),
    (r"_GBps$", Plausible(low=1, high=1e5, unit="GB/s", why="off-chip memory: 100 TB/s is 12x B200's 8 TB/s "
                          "HBM3e; below 1 GB/s no board holds an LLM")),
    (r"_TFLOPS(\.\w+)?$", Plausible(low=1e-3, high=1e5, unit="TFLOP/s", why="100 PFLOP/s is 11x B200's 9 PFLOP/s "
                                    "dense fp4; 1 GFLOP/s is a microcontroller")),
    (r"_GOPS$", Plausible(low=1, high=1e8, unit="G op/s", why="other operations (adds) per second: 100 P op/s is 11x "
                          "B200's 9 PFLOP/s dense fp4; 1 G op/s is a microcontroller")),
    # Capacities from one byte (a what-if of a tiny buffer only makes a point infeasible or spill; no number
    # blows up) to a size that still says something (a larger one makes everything fit).
    (r"_GB$", Plausible(low=1e-9, high=1e5, unit="GB", why="one byte to 100 TB, 7x a whole GB200 NVL72 rack's "
                        "13.5 TB of HBM")),
    (r"_GiB$", Plausible(low=1e-9, high=1e5, unit="GiB", why="one byte to 100 TiB, 7x a whole GB200 NVL72 rack's "
                         "13.5 TB of HBM")),
    (r"_MB$", Plausible(low=1e-6, high=1e6, unit="MB", why="one byte to 1 TB, 20x Cerebras WSE-3's 44 GB of SRAM")),
    (r"_[kK]B$", Plausible(low=1e-3, high=1e9, unit="KB", why="one byte to 1 TB, 20x Cerebras WSE-3's 44 GB of "
                           "SRAM")),
    (r"_W$", Plausible(low=1e-3, high=1e5, unit="W", why="100 kW is 4x a Cerebras CS-3 system (23 kW) and 100x "
                       "a B200 (1 kW)")),
    # Clocks from 10 MHz, a tenth of the slowest LLM accelerator design clock here (FlightLLM's 225 MHz FPGA
    # design): a clock in GHz written under an _MHz key (1.5) is refused, as one in MHz under a _GHz key is.
    (r"_MHz$", Plausible(low=10, high=1e5, unit="MHz", why="100 GHz is 16x the fastest shipping clock (6.2 GHz); "
                         "below 10 MHz is a clock in GHz written as MHz")),
    (r"_GHz$", Plausible(low=0.01, high=100, unit="GHz", why="100 GHz is 16x the fastest shipping clock "
                         "(6.2 GHz); below 0.01 GHz is a clock in MHz written as GHz")),
    (r"_mm2$", Plausible(low=1e-3, high=1e6, unit="mm2", why="20x Cerebras WSE-3's 46,225 mm2 wafer")),
    (r"_pJ(_per_\w+)?(\.\w+)?$", Plausible(low=1e-4, high=1e4, unit="pJ", why="per action: an off-package DDR "
                                           "bit costs about 20 pJ and an fp32 MAC about 5; 10 nJ is 500x those")),
    (r"_us$", Plausible(low=0, high=1e6, unit="us", why="one second per kernel is 10^5 kernel launches")),
    (r"_ns$", Plausible(low=1e-3, high=1e6, unit="ns", why="per dependent memory step: a DRAM access takes about "
                        "100 ns to 1 us; 1 ms is a thousand times the slowest")),
    (r"^price\.usd$", Plausible(low=1, high=1e8, unit="USD", why="a Cerebras CS-3 system sells for a few million")),
    (r"usd_per_hour$", Plausible(low=1e-3, high=1e5, unit="USD/h", why="a whole 8-GPU B200 server rents for about "
                                 "50 USD/h")),
    (r"transistors_billion$", Plausible(low=1e-3, high=1e5, unit="billion", why="25x Cerebras WSE-3's 4 trillion")),
    (r"_bits$", Plausible(low=1, high=65536, unit="bits", why="a SIMD register is at most 2,048 bits (SVE)")),
    (r"_bytes$", Plausible(low=0.01, high=1e6, unit="bytes", why="an element, a partial sum or a DRAM row "
                           "(8 KB)")),
    (r"_cycles$", Plausible(low=0, high=1e9, unit="cycles", why="a billion cycles is about a second")),
    (r"_per_cycle(\.\w+)?$", Plausible(low=1e-3, high=1e4, unit="per cycle", why="one processing element or DSP "
                                       "slice does a few MACs a cycle")),
    (r"(^|\.)(sm_count|cores|threads|dsp_count|device_dsp_count|array_rows|array_cols|array_count|vector_units|"
     r"vector_lanes|channels|banks_per_channel|multipliers_per_bank|simd_pipes|group_size)$", Plausible(
        low=1, high=1e6, unit="", why="Cerebras WSE-3's 900,000 cores are the most compute units on one device")),
    (r"(lane_ops\w*|_per_weight|dequant_lane_ops_per_weight\.\w+)$", Plausible(
        low=0, high=1e4, unit="operations", why="a handful of SIMD lane operations per weight or table entry")),
    (r"(fraction|efficiency|saving)$", Plausible(low=0, high=1, unit="", why="a share")),
    (r"(^|\.)compute_capability$", Plausible(low=1, high=100, unit="", why="a CUDA compute capability (major.minor): "
                                              "1.0 was the first (G80), 12.x the newest shipping (Blackwell)")),
)
