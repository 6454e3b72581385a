"""Spec sections every device kind shares (power, area, price) and the field types presets are checked with.

Preset keys carry the datasheet unit (`tdp_W`, `die_mm2`); every section has a `source` naming where its
numbers come from.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints, model_validator
from pydantic.dataclasses import dataclass

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
PositiveInt = Annotated[int, Field(gt=0)]
Source = Annotated[str, StringConstraints(min_length=3, strip_whitespace=True)]

SPEC_CONFIG = ConfigDict(extra="forbid")


class Unread:
    """Annotated metadata of a preset field that no cost model reads: kept as a record of the chip, and a
    what-if override of it is refused (it would change nothing). `why` says what the field is for instead."""

    def __init__(self, why: str):
        self.why = why


# Shared by every kind: the cost models price energy from idle power and energy per action.
TDP_UNREAD = Unread("no cost model reads a what-if TDP: energy is idle power x time plus energy per action "
                    "(a GPU's energy per FLOP is derived once from the shipped preset's TDP), and power "
                    "capping is not modeled; override power.idle_W or an energy field instead")


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
            raise ValueError(f"idle_W ({self.idle_W}) must be below tdp_W ({self.tdp_W})")
        return self


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class AreaSpec:
    die_mm2: Positive
    process: Annotated[str, Unread("a record of the chip; no cost model scales with the process node")]
    source: Source
    transistors_billion: Annotated[Positive | None, Unread("a record of the chip; area comes from die_mm2")] = None


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class PriceSpec:
    source: Source
    usd: Positive | None = None
    usd_per_hour: Positive | None = None
