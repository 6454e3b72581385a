"""FPGA cost model (FlightLLM-style: Zeng et al., FPGA 2024): DSP matrix engine, SFU, HBM, on-chip decode.

Time of a kernel = max(compute, memory) + a fixed per-kernel instruction overhead (double buffering
overlaps math and traffic, as the paper's MV analysis assumes).
- Compute: matrix kernels run on `dsp_count` DSP slices at `macs_per_dsp_per_cycle` of the kernel's
  operand type (DSP packing: narrower integers pack more MACs per slice); matrix-vector kernels (GEMMs
  with m = 1 and decode attention) use only `gemv_dsp_fraction` of the engine (the MPE's MV mode).
  Vector kernels run on the SFU at `vector_lanes` elements per cycle. With a `mixed_precision:` unit, GEMMs whose
  weights are narrower than their activations that it takes run at its MACs per DSP slice per cycle and energy
  per MAC instead of the activation dtype's (hw_models/mixed_precision.py). N:M sparsity the sparse DSP chains
  support (`sparsity_patterns`) is applied by DeviceModel.cost_table: sparse GEMMs arrive with N/M of
  the FLOPs and compressed weight bytes.
- Memory: weights and KV cache stream from HBM at the achieved fraction `efficiency` of its peak.
  Activations go to HBM too, except in decode with always-on-chip decode: a decode pass's activations
  that fit in the on-chip activation buffer stay in BRAM/URAM and cost on-chip bandwidth and energy.
  A pass is a decode pass when it holds decode-attention kernels (a decode step and its attention do).
- Energy: MACs x energy per MAC of the operand type, SFU operations x energy per operation, HBM bytes x
  HBM energy per bit, every byte the engine consumes or produces x BRAM/URAM energy per bit (streamed
  weights pass through on-chip buffers too), and board static power x time.
Kernels are dispatched from the accelerator's own instruction stream, so every execution mode prices alike.
"""

from __future__ import annotations

import numpy as np

from hw_models.cost import KernelCosts
from hw_models.device import VECTOR_DTYPE, DeviceModel
from hw_models.mixed_precision import faster_on_unit
from hw_models.sparsity_support import fpga_support
from kernels.table import KernelTable


class FPGAModel(DeviceModel):
    """Prices kernels on one FPGA accelerator spec. Pure: the spec and per-dtype caches only."""

    kind = "fpga"
    units = ("fpga",)
    # Every number the cost model reads per kernel (hw_models/device_block.py: a block of what-ifs prices them as
    # (points, 1) arrays).
    block_fields = ("compute.clock_MHz", "compute.dsp_count", "compute.gemv_dsp_fraction", "compute.vector_lanes",
                    "memory.bandwidth_GBps", "memory.efficiency", "memory.capacity_GB", "onchip.bandwidth_GBps",
                    "onchip.activation_buffer_MB", "power.idle_W", "overhead.kernel_cycles", "energy.*")

    @property
    def sparsity_patterns(self) -> frozenset[str]:
        return fpga_support(self.spec.compute.sparsity_patterns)

    def _flop_J(self, dtype: str, matrix: bool) -> float:
        """Energy per FLOP of one kernel group: a MAC (two FLOPs) on the DSPs, or an SFU vector op."""
        return self.spec.mac_J(dtype) / 2.0 if matrix else self.spec.energy.vector_op_pJ * 1e-12

    def _gemv_rows(self, table: KernelTable) -> np.ndarray:
        """Matrix-vector kernels (the MPE's MV mode): single-token GEMMs and decode attention."""
        gemm = table.class_masks.get("gemm", np.zeros(len(table), dtype=bool))
        return (gemm & (table.m <= 1)) | table.decode_attention_mask

    def activations_on_chip(self, table: KernelTable) -> np.ndarray:
        """Rows whose activation traffic stays in on-chip memory (always-on-chip decode)."""
        spec = self.spec
        if not spec.onchip.always_on_chip_decode or not table.decode_attention_mask.any():
            return np.zeros(len(table), dtype=bool)
        return table.act_bytes <= spec.activation_buffer_bytes

    def _cost_table(self, table: KernelTable, execution: str) -> KernelCosts:
        spec = self.spec
        peak = table.per_dtype(lambda dtype, matrix: self.peak_flops(dtype if matrix else VECTOR_DTYPE))
        flop_J = table.per_dtype(self._flop_J)
        if spec.mixed_precision is not None:
            peak, flop_J = faster_on_unit(spec.mixed_precision, table, peak, flop_J,
                                          spec.compute.dsp_count * spec.clock_Hz, ops_per_mac=2.0)
        peak = np.where(self._gemv_rows(table), peak * spec.compute.gemv_dsp_fraction, peak)
        compute_s = table.flops / peak
        on_chip = self.activations_on_chip(table)
        onchip_bytes = np.where(on_chip, table.act_bytes, 0.0)
        offchip_bytes = table.bytes - onchip_bytes
        memory_s = offchip_bytes / spec.achieved_bandwidth_Bps + onchip_bytes / spec.onchip_bandwidth_Bps
        overhead_s = spec.overhead.kernel_cycles / spec.clock_Hz * np.ones(len(table))
        time_s = np.maximum(compute_s, memory_s) + overhead_s
        compute_J = table.flops * flop_J
        energy = spec.energy
        memory_J = (offchip_bytes * energy.hbm_pJ_per_bit + table.bytes * energy.onchip_pJ_per_bit) * 8e-12
        static_J = spec.power.idle_W * time_s
        return KernelCosts.broadcast(time_s=time_s, compute_s=compute_s, memory_s=memory_s, overhead_s=overhead_s,
                                     compute_J=compute_J, memory_J=memory_J, static_J=static_J)
