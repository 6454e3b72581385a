"""FPGASpec: an FPGA LLM accelerator preset (FlightLLM-style) as written in YAML, with SI properties.

The accelerator is a design on a device: DSP slices doing packed integer MACs (and sparse N:M chains),
an SFU for vector work, HBM streamed at an achieved efficiency, and on-chip BRAM/URAM that keeps decode
activations resident ("always-on-chip decode"). Keys carry datasheet units (GB/s = 1e9 B/s, MHz, MB = 1e6 B).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictBool, model_validator
from pydantic.dataclasses import dataclass

from hw_models.mixed_precision import MixedPrecisionSpec
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
    SparsityPattern,
    Unread,
    fallback_dtype,
)

MATRIX_DTYPES = Literal["int4", "int8", "fp8", "fp16", "bf16"]
Fraction = Annotated[float, Field(gt=0, le=1)]
DDR_UNREAD = Unread("board DDR (instructions, spills) is a record of the board: this model streams weights and "
                    "KV from HBM only")
# Only decode activations kept on chip use the activation buffer and its ports (hw_models/fpga.py activations_on_chip).
ON_CHIP_DECODE = ReadWith("onchip.always_on_chip_decode", True)
ONCHIP_UNREAD = Unread("a record of the device; the model reads the design's activation_buffer_MB and "
                       "bandwidth_GBps")


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class ComputeSpec:
    dsp_count: PositiveInt  # DSP slices the accelerator's matrix engine uses (a design figure)
    # DSP slices on the device (datasheet), null if unknown: checks dsp_count, prices nothing.
    device_dsp_count: Annotated[PositiveInt | None, Unread("it only bounds dsp_count; the design's dsp_count "
                                                           "sets the rate")] = None
    clock_MHz: Positive  # the design's clock
    # MACs one DSP slice does per cycle, by operand type (DSP packing: two int8 MACs per DSP48E2, ...).
    macs_per_dsp_per_cycle: dict[MATRIX_DTYPES, Positive]
    # Fraction of the matrix engine busy in matrix-vector (GEMV, m = 1) mode.
    gemv_dsp_fraction: Fraction
    vector_lanes: PositiveInt  # SFU elements per cycle, all cores together (softmax, norm, element-wise)
    # N:M weight-sparsity patterns the sparse DSP chains skip the zeros of.
    sparsity_patterns: tuple[SparsityPattern, ...]
    source: Source

    @model_validator(mode="after")
    def _checks(self):
        if self.device_dsp_count is not None and self.dsp_count > self.device_dsp_count:
            raise ValueError(f"dsp_count ({self.dsp_count}) exceeds device_dsp_count ({self.device_dsp_count})")
        if "int8" not in self.macs_per_dsp_per_cycle or not {"fp16", "bf16"} & set(self.macs_per_dsp_per_cycle):
            raise ValueError("macs_per_dsp_per_cycle needs int8 and fp16 or bf16")
        return self


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class MemorySpec:
    type: str
    capacity_GB: Positive  # HBM: holds weights and KV cache
    bandwidth_GBps: Positive  # HBM peak
    channels: Annotated[PositiveInt, Unread("a record of the board; HBM is priced by bandwidth_GBps x efficiency")]
    efficiency: Fraction  # achieved fraction of peak bandwidth when streaming weights / KV
    ddr_capacity_GB: Annotated[NonNegative, DDR_UNREAD]  # board DDR (instructions, spill)
    ddr_bandwidth_GBps: Annotated[NonNegative, DDR_UNREAD]
    source: Source


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class OnChipSpec:
    bram_MB: Annotated[NonNegative, ONCHIP_UNREAD]
    uram_MB: Annotated[NonNegative, ONCHIP_UNREAD]
    activation_buffer_MB: Annotated[Positive, ON_CHIP_DECODE]  # on-chip space for activations between kernels
    bandwidth_GBps: Annotated[Positive, ON_CHIP_DECODE]  # aggregate BRAM/URAM port bandwidth at the design clock
    always_on_chip_decode: StrictBool  # decode activations stay on chip (when they fit in activation_buffer_MB)
    source: Source

    @model_validator(mode="after")
    def _buffer_fits(self):
        if self.activation_buffer_MB > self.bram_MB + self.uram_MB:
            raise ValueError(f"activation_buffer_MB ({self.activation_buffer_MB}) exceeds bram_MB + uram_MB "
                             f"({self.bram_MB + self.uram_MB})")
        return self


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class EnergySpec:
    hbm_pJ_per_bit: Positive
    onchip_pJ_per_bit: Positive  # BRAM/URAM access
    mac_pJ: dict[MATRIX_DTYPES, Positive]  # one MAC on the DSPs, by operand type
    vector_op_pJ: Positive  # one SFU operation
    source: Source

    @model_validator(mode="after")
    def _needs_int8(self):
        if "int8" not in self.mac_pJ or not {"fp16", "bf16"} & set(self.mac_pJ):
            raise ValueError("mac_pJ needs int8 and fp16 or bf16")
        return self


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class OverheadSpec:
    kernel_cycles: NonNegative  # fixed cycles per kernel (instruction issue / synchronization)
    source: Source


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class FPGASpec(OffChipMemory):
    name: str
    kind: Literal["fpga"]
    description: str
    compute: ComputeSpec
    memory: MemorySpec
    onchip: OnChipSpec
    energy: EnergySpec
    overhead: OverheadSpec
    power: PowerSpec
    area: AreaSpec
    price: PriceSpec
    # A mixed-precision MAC unit in the matrix engine, rates per DSP slice (hw_models/mixed_precision.py); None: low-bit
    # weights are widened to the activation type (kind dequantize).
    mixed_precision: MixedPrecisionSpec | None = None

    @property
    def clock_Hz(self) -> float:
        return self.compute.clock_MHz * 1e6

    @property
    def achieved_bandwidth_Bps(self) -> float:
        return self.bandwidth_Bps * self.memory.efficiency

    @property
    def onchip_bandwidth_Bps(self) -> float:
        return self.onchip.bandwidth_GBps * 1e9

    @property
    def activation_buffer_bytes(self) -> float:
        return self.onchip.activation_buffer_MB * 1e6

    def matrix_dtype(self, dtype: str) -> str:
        """The operand type the DSPs run a matrix kernel of `dtype` as (the narrowest they support at or above it)."""
        return fallback_dtype(self.compute.macs_per_dsp_per_cycle, dtype)

    def peak_flops(self, dtype: str) -> float:
        """Dense matrix FLOP/s of `dtype` on the DSPs (2 FLOP per MAC); "fp32" is the SFU's vector rate."""
        if dtype == "fp32":
            return self.compute.vector_lanes * self.clock_Hz
        macs = self.compute.macs_per_dsp_per_cycle[self.matrix_dtype(dtype)]
        return 2.0 * self.compute.dsp_count * macs * self.clock_Hz

    def mac_J(self, dtype: str) -> float:
        """Energy of one MAC of `dtype` on the DSPs."""
        energies = self.energy.mac_pJ
        return energies[fallback_dtype(energies, dtype)] * 1e-12

