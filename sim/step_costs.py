"""Costs of every kernel of the prefill and of every decode step, priced once, shared by both sim paths."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hw_models.cost import KernelCosts
from sim.workload import BatchWorkload, PassTables

ENERGY_FIELDS = ("compute_J", "memory_J", "static_J")


@dataclass(frozen=True)
class StepCosts:
    """Prefill costs, one decode step's costs, and the decode-attention costs of every step.

    Nothing in a decode step but attention depends on the context length, so a step's costs are the
    base step's with its attention kernels (where `attention_mask` is true) replaced by that step's row
    of `attention` (flattened step-major).
    """

    prefill: KernelCosts
    decode_base: KernelCosts
    attention: KernelCosts
    attention_mask: np.ndarray
    decode_steps: int

    def _step_grid(self, name: str) -> np.ndarray:
        return getattr(self.attention, name).reshape(self.decode_steps, int(self.attention_mask.sum()))

    def decode_step(self, name: str, step: int) -> np.ndarray:
        """Per-kernel values of field `name` (e.g. 'time_s') in decode step `step`, in execution order."""
        values = getattr(self.decode_base, name).copy()
        if self.attention_mask.any():
            values[self.attention_mask] = self._step_grid(name)[step]
        return values

    def decode_total(self, name: str, kernel_mask: np.ndarray | None = None) -> float:
        """Sum of field `name` over all decode steps, optionally over the kernels where kernel_mask is true."""
        base = getattr(self.decode_base, name)
        attention = getattr(self.attention, name)
        if kernel_mask is None:
            return float((base.sum() - base[self.attention_mask].sum()) * self.decode_steps + attention.sum())
        total = base[kernel_mask & ~self.attention_mask].sum() * self.decode_steps
        if self.decode_steps and (kernel_mask & self.attention_mask).any():
            total += self._step_grid(name)[:, kernel_mask[self.attention_mask]].sum()
        return float(total)

    def energy_parts(self) -> dict[str, float]:
        """Compute, memory and static energy of all kernels of the prefill and the decode steps."""
        return {name: float(getattr(self.prefill, name).sum()) + self.decode_total(name) for name in ENERGY_FIELDS}


def price_passes(device, tables: PassTables, workload: BatchWorkload, execution: str = "eager") -> StepCosts:
    """Price the prefill once, one decode step once, and the decode attention of every step."""
    kv_lens = workload.decode_kv_lengths()
    steps = tables.decode.at_kv_lengths(kv_lens, tables.attention_window)
    return StepCosts(
        prefill=device.cost_table(tables.prefill, execution), decode_base=device.cost_table(tables.decode, execution),
        attention=device.cost_table(steps, execution),
        attention_mask=tables.decode.decode_attention_mask, decode_steps=len(kv_lens),
    )
