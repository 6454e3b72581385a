"""NPUSpec: a systolic NPU preset, optionally with HBM-PIM banks beside it, as written in YAML.

Keys carry datasheet units (MHz, KB, GB/s, pJ); properties give SI values to the cost model (hw_models/npu.py).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import StrictBool, model_validator
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
    fallback_dtype,
)

DTYPES = Literal["fp32", "fp16", "bf16", "fp8", "int8", "int4"]
PIM_ENERGY = ReadWith("pim")  # the banks' energies: an NPU without PIM banks reads neither


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class ArraySpec:
    """The systolic arrays, the vector units beside them, and the clock they share."""

    array_rows: PositiveInt
    array_cols: PositiveInt
    array_count: PositiveInt
    frequency_MHz: Positive
    # weight_stationary: a weight tile (k on rows, n on columns) stays put while the m activation rows stream.
    # output_stationary: an output tile (m on rows, n on columns) stays put while the k dimension streams.
    dataflow: Literal["weight_stationary", "output_stationary"]
    # A second tile register per PE: the next tile loads while the current one computes.
    double_buffered: StrictBool
    macs_per_pe_per_cycle: dict[DTYPES, Positive]
    vector_units: PositiveInt
    vector_lanes: PositiveInt  # elementwise ops per unit per cycle
    source: Source

    @model_validator(mode="after")
    def _needs_16bit(self):
        if not {"fp16", "bf16"} & set(self.macs_per_pe_per_cycle):
            raise ValueError("macs_per_pe_per_cycle needs fp16 or bf16")
        return self


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class SRAMSpec:
    """On-chip buffers: the input scratchpad and the accumulator buffer, shared by the arrays."""

    scratchpad_KB: Positive
    accumulator_KB: Positive
    accumulator_bytes: Positive  # bytes per partial sum (fp32 accumulation: 4)
    source: Source


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class MemorySpec:
    """Off-chip memory as the NPU sees it (external bandwidth through the channels' I/O)."""

    type: str
    capacity_GB: Positive
    channels: PositiveInt
    bandwidth_GBps: Positive
    source: Source


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class PIMSpec:
    """Multipliers in every bank of every channel of the memory, computing on the open row (Newton/NeuPIMs)."""

    banks_per_channel: PositiveInt
    multipliers_per_bank: PositiveInt  # elements one PIM compute command consumes per bank
    element_bytes: Positive  # bytes per element the multipliers take (16-bit: 2)
    frequency_MHz: Positive  # DRAM command clock
    command_cycles: PositiveInt  # clock cycles from one compute command to the next
    row_bytes: PositiveInt  # DRAM row (page) per bank
    # Cycles between the last compute command on a row and the first on the next: precharge, then activating
    # every bank (tFAW-limited when all banks open together), then tRCD.
    row_switch_cycles: NonNegative
    # single: a bank's one row buffer serves either memory reads or PIM commands (blocked mode);
    # dual: a second row buffer lets the NPU read memory while PIM computes.
    row_buffers: Literal["single", "dual"]
    # Split a decode batch in two so one half's attention on PIM overlaps the other half's GEMMs on the NPU.
    sub_batch_interleaving: StrictBool
    logic_area_mm2: NonNegative | None = None  # None: not published
    source: Source

    @model_validator(mode="after")
    def _interleaving_needs_dual(self):
        if self.sub_batch_interleaving and self.row_buffers != "dual":
            raise ValueError("sub_batch_interleaving needs row_buffers: dual (with one row buffer the NPU "
                             "cannot read memory while PIM computes)")
        return self


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class EnergySpec:
    """Energy per action: MACs by precision, vector ops, SRAM bytes, off-chip and in-bank DRAM bits."""

    mac_pJ: dict[DTYPES, Positive]
    vector_op_pJ: Positive
    sram_pJ_per_byte: Positive
    hbm_pJ_per_bit: Positive  # external access: row, on-die movement and I/O
    source: Source
    pim_access_pJ_per_bit: Annotated[Positive | None, PIM_ENERGY] = None  # in-bank access, no off-chip I/O
    pim_mac_pJ: Annotated[Positive | None, PIM_ENERGY] = None

    @model_validator(mode="after")
    def _needs_16bit(self):
        # The arrays run 16-bit math (ArraySpec needs an fp16 or bf16 rate); a dtype without an energy of its own
        # takes the next wider one's (fallback_dtype), and every such chain ends at fp16 or bf16.
        if not {"fp16", "bf16"} & set(self.mac_pJ):
            raise ValueError(f"mac_pJ: found dtypes {', '.join(sorted(self.mac_pJ))}, allowed: fp16 or bf16 among "
                             f"them (the arrays' 16-bit MACs; narrower dtypes without an energy take a wider one's)")
        return self


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class NPUSpec(OffChipMemory):
    name: str
    kind: Literal["npu"]
    description: str
    npu: ArraySpec
    sram: SRAMSpec
    memory: MemorySpec
    energy: EnergySpec
    power: PowerSpec
    area: AreaSpec
    price: PriceSpec
    pim: PIMSpec | None = None
    # A mixed-precision MAC unit in the arrays (hw_models/mixed_precision.py); None: low-bit weights are widened to
    # the activation type (kind dequantize).
    mixed_precision: MixedPrecisionSpec | None = None

    @model_validator(mode="after")
    def _pim_energy(self):
        if self.pim is not None and (self.energy.pim_access_pJ_per_bit is None or self.energy.pim_mac_pJ is None):
            raise ValueError("a preset with a pim section needs energy.pim_access_pJ_per_bit and energy.pim_mac_pJ")
        return self

    @property
    def frequency_Hz(self) -> float:
        return self.npu.frequency_MHz * 1e6

    @property
    def pes(self) -> int:
        """Processing elements over all arrays."""
        return self.npu.array_rows * self.npu.array_cols * self.npu.array_count

    def matrix_dtype(self, dtype: str) -> str:
        """The operand type the arrays run a matrix kernel of `dtype` as (the next wider one they have)."""
        return fallback_dtype(self.npu.macs_per_pe_per_cycle, dtype)

    def macs_per_s(self, dtype: str) -> float:
        """Peak MAC rate of the arrays in a dtype."""
        return self.pes * self.frequency_Hz * self.npu.macs_per_pe_per_cycle[self.matrix_dtype(dtype)]

    def mac_J(self, dtype: str) -> float:
        """Energy of one MAC of `dtype` on the arrays: of the operand type they run it as (as its rate is)."""
        energies = self.energy.mac_pJ
        return energies[fallback_dtype(energies, self.matrix_dtype(dtype))] * 1e-12

    def peak_flops(self, dtype: str) -> float:
        """Dense FLOP/s of `dtype` on the arrays (2 FLOP per MAC); "fp32" is the vector units' rate."""
        return self.vector_ops_per_s if dtype == "fp32" else 2 * self.macs_per_s(dtype)

    @property
    def vector_ops_per_s(self) -> float:
        return self.npu.vector_units * self.npu.vector_lanes * self.frequency_Hz

    @property
    def pim_macs_per_s(self) -> float:
        """Peak in-bank MAC rate: every bank of every channel takes one compute command per command_cycles."""
        p = self.pim
        banks = self.memory.channels * p.banks_per_channel
        return banks * p.multipliers_per_bank * p.frequency_MHz * 1e6 / p.command_cycles

    @property
    def pim_internal_Bps(self) -> float:
        """In-bank bandwidth the multipliers consume at their peak rate."""
        return self.pim_macs_per_s * self.pim.element_bytes

    @property
    def pim_row_efficiency(self) -> float:
        """Fraction of bank time spent computing: a row's commands, then the switch to the next row."""
        p = self.pim
        commands_per_row = p.row_bytes / (p.multipliers_per_bank * p.element_bytes)
        busy = commands_per_row * p.command_cycles
        return busy / (busy + p.row_switch_cycles)
