"""GPUSpec: a GPU preset as written in YAML (datasheet units in the key names), with SI properties."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator
from pydantic.dataclasses import dataclass

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Source = Annotated[str, StringConstraints(min_length=3, strip_whitespace=True)]
DTYPES = Literal["fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "int8", "int4"]

SPEC_CONFIG = ConfigDict(extra="forbid")


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class ComputeSpec:
    sm_count: Annotated[int, Field(gt=0)]
    boost_clock_MHz: Positive
    # Dense peak rates per dtype (TOPS for integer types); "fp32" is the vector (non-tensor-core) rate.
    peak_TFLOPS: dict[DTYPES, Positive]
    source: Source

    @model_validator(mode="after")
    def _needs_fp32_and_16bit(self):
        if "fp32" not in self.peak_TFLOPS or not {"fp16", "bf16"} & set(self.peak_TFLOPS):
            raise ValueError("peak_TFLOPS needs fp32 (vector rate) and fp16 or bf16")
        return self


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class MemorySpec:
    type: str
    capacity_GB: Positive
    bandwidth_GBps: Positive
    l2_cache_MB: NonNegative
    source: Source


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class PowerSpec:
    tdp_W: Positive
    idle_W: NonNegative
    source: Source

    @model_validator(mode="after")
    def _idle_below_tdp(self):
        if self.idle_W >= self.tdp_W:
            raise ValueError(f"idle_W ({self.idle_W}) must be below tdp_W ({self.tdp_W})")
        return self


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class EnergySpec:
    dram_pJ_per_bit: Positive
    source: Source


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class OverheadSpec:
    kernel_launch_us: NonNegative  # per kernel launched from the host (eager execution)
    graph_launch_us: NonNegative  # per kernel replayed from a CUDA graph
    source: Source


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class AreaSpec:
    die_mm2: Positive
    process: str
    source: Source
    transistors_billion: Positive | None = None


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class PriceSpec:
    source: Source
    usd: Positive | None = None
    usd_per_hour: Positive | None = None


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class GPUSpec:
    name: str
    kind: Literal["gpu"]
    description: str
    compute: ComputeSpec
    memory: MemorySpec
    power: PowerSpec
    energy: EnergySpec
    overhead: OverheadSpec
    area: AreaSpec
    price: PriceSpec

    @property
    def memory_bytes(self) -> float:
        return self.memory.capacity_GB * 1e9

    @property
    def bandwidth_Bps(self) -> float:
        return self.memory.bandwidth_GBps * 1e9

    @property
    def dram_J_per_byte(self) -> float:
        return self.energy.dram_pJ_per_bit * 8e-12

    def peak_flops(self, dtype: str) -> float:
        """Dense peak FLOP/s for a dtype; a dtype the GPU lacks runs at the next wider one it has."""
        rates = self.compute.peak_TFLOPS
        for candidate in DTYPE_FALLBACK[dtype]:
            if candidate in rates:
                return rates[candidate] * 1e12
        raise KeyError(dtype)


# What a kernel in each dtype runs as when the GPU has no units for it (e.g. fp8 on an A100, int4 on an H100).
DTYPE_FALLBACK = {
    "int4": ("int4", "int8", "fp16", "bf16"),
    "int8": ("int8", "fp16", "bf16"),
    "fp8": ("fp8", "fp16", "bf16"),
    "bf16": ("bf16", "fp16"),
    "fp16": ("fp16", "bf16"),
    "tf32": ("tf32", "fp32"),
    "fp32": ("fp32",),
    "fp64": ("fp64", "fp32"),
}
