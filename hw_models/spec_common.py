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
    tdp_W: Positive
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
    process: str
    source: Source
    transistors_billion: Positive | None = None


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class PriceSpec:
    source: Source
    usd: Positive | None = None
    usd_per_hour: Positive | None = None
