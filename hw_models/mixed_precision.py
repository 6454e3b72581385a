"""A mixed-precision MAC unit of an NPU's arrays or an FPGA's matrix engine, and the rates it gives each GEMM.

A GEMM whose weights are narrower than its activations (W4A16, W4A8, ternary weights with int8 activations) is
mixed-precision (mpGEMM). Without a unit (no `mixed_precision:` section, or `kind: dequantize`) the weights are
widened to the activation type in the datapath and the GEMM runs at the activation dtype's MAC rate and energy:
low-bit weights only shrink the bytes moved. With one:

- mixpe: MixPE's processing elements (Zhang et al., "MixPE: Quantization and Hardware Co-design for Efficient LLM
  Inference", arXiv 2411.16158): a low-bit integer weight times a wider activation by shift-and-add instead of a
  multiplier, the group's scale and zero point applied once per group after the per-group partial sum. A PE is
  built for `weight_bits`-bit weights: narrower weights run at the same rate and energy.
- lut: a LUT Tensor Core-style unit (Mo et al., "LUT Tensor Core", ISCA 2025, arXiv 2408.06003): the products of
  activations with every 1-bit weight pattern are looked up from a table, bit-serial over the weight bits, so a
  b-bit weight takes b passes: the rate is the 1-bit pass rate / b and the energy b x the pass energy. The table
  is precomputed in the preceding kernel (the paper fuses it there), so it is not priced apart.

A matrix kernel runs on the unit when its weights are narrower than its activations and at most `weight_bits` wide,
the unit has a rate for its activation dtype, and the unit is at least as fast as the activation dtype's own path
(a compiler picks the faster one); everything else runs as without the unit. MixPE's per-group dequantization
(one multiply-add per group of group_size products, under 1% of the MACs at groups of 128) is not priced.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass

from hw_models.spec_common import SPEC_CONFIG, Positive, Source
from kernels.formats import DTYPE_BITS
from kernels.table import KernelTable

# Activation dtypes a unit may give rates for (the GEMM dtypes kernels/formats.py assigns mixed-precision GEMMs).
ACT_DTYPES = Literal["fp16", "bf16", "fp8", "int8"]


@dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)
class MixedPrecisionSpec:
    """The unit: its kind, the widest weights it takes, and its MAC rate and energy by activation dtype."""

    kind: Literal["dequantize", "mixpe", "lut"]
    # Widest weights the unit takes (narrower than the activations too); 0: none, every GEMM dequantizes.
    weight_bits: Annotated[int, Field(ge=0, le=8)]
    # MACs per processing element (NPU) or DSP slice (FPGA) per cycle, by activation dtype: for mixpe at
    # weight_bits-bit weights, for lut of one 1-bit pass.
    macs_per_cycle: dict[ACT_DTYPES, Positive]
    mac_pJ: dict[ACT_DTYPES, Positive]  # energy of one such MAC (mixpe) or one 1-bit-pass MAC (lut)
    source: Source

    @model_validator(mode="after")
    def _same_dtypes(self):
        if set(self.macs_per_cycle) != set(self.mac_pJ):
            raise ValueError(f"mac_pJ: found dtypes {', '.join(sorted(self.mac_pJ))}, allowed: those of "
                             f"macs_per_cycle ({', '.join(sorted(self.macs_per_cycle))}), each rate with its energy")
        return self


def takes(unit: MixedPrecisionSpec, weight_bits: int, act_dtype: str) -> bool:
    """Whether the unit takes a GEMM of `weight_bits`-bit weights and `act_dtype` activations (unit_rates' rule for one
    GEMM): weights narrower than the activations and at most unit.weight_bits wide, an activation dtype it has a rate
    for, and a kind other than dequantize."""
    return (unit.kind != "dequantize" and weight_bits < DTYPE_BITS.get(act_dtype, 16)
            and weight_bits <= unit.weight_bits and unit.macs_per_cycle.get(act_dtype, 0.0) > 0)


def unit_rates(unit: MixedPrecisionSpec, table: KernelTable) -> tuple[np.ndarray, np.ndarray]:
    """(MACs per PE or DSP slice per cycle, joules per MAC) of each kernel on the unit; zero for the kernels it does
    not take (vector kernels, weights no narrower than the activations or wider than unit.weight_bits, activation
    dtypes it has no rate for, and every kernel when the kind is dequantize)."""
    if unit.kind == "dequantize":
        zero = np.zeros(len(table))
        return zero, zero
    pass_rate = table.per_dtype(lambda dtype, matrix: unit.macs_per_cycle.get(dtype, 0.0) if matrix else 0.0)
    pass_J = table.per_dtype(lambda dtype, matrix: unit.mac_pJ.get(dtype, 0.0) * 1e-12 if matrix else 0.0)
    act_bits = table.per_dtype(lambda dtype, _: float(DTYPE_BITS.get(dtype, 16)))
    bits = table.weight_bits
    takes = (bits < act_bits) & (bits <= unit.weight_bits) & (pass_rate > 0)
    # Bit-serial: a b-bit weight is b passes of the 1-bit lookup.
    passes = np.maximum(bits, 1.0) if unit.kind == "lut" else 1.0
    return np.where(takes, pass_rate / passes, 0.0), np.where(takes, pass_J * passes, 0.0)


def faster_on_unit(unit: MixedPrecisionSpec, table: KernelTable, rate: np.ndarray, op_J: np.ndarray,
                   slots_per_s, ops_per_mac: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(rate, joules per op) of each kernel, with the GEMMs the unit takes moved onto it where it is at least as fast
    as the device's own path (`rate`, `op_J`). `slots_per_s`: PEs or DSP slices x clock; `ops_per_mac`: 1 when the
    rates count MACs (NPU), 2 when they count FLOPs (FPGA)."""
    per_cycle, unit_J = unit_rates(unit, table)
    unit_rate = ops_per_mac * slots_per_s * per_cycle
    on_unit = (per_cycle > 0) & (unit_rate >= rate)
    return np.where(on_unit, unit_rate, rate), np.where(on_unit, unit_J / ops_per_mac, op_J)
