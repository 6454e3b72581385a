"""Costs of every kernel of the prefill and of every decode step, priced once, shared by both sim paths."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from hw_models.cost import KernelCosts
from sim.interleave import interleaved_schedule
from sim.workload import BatchWorkload, PassTables

DYNAMIC_ENERGY_FIELDS = ("compute_J", "memory_J")


@dataclass(frozen=True)
class DecodeCosts:
    """One decode step's costs for `batch` sequences, and the decode-attention costs of every step.

    Nothing in a decode step but attention depends on the context length, so a step's costs are the
    base step's with its attention kernels (where `attention_mask` is true) replaced by that step's row
    of `attention` (flattened step-major).
    """

    batch: int
    base: KernelCosts
    attention: KernelCosts
    attention_mask: np.ndarray
    steps: int
    class_masks: dict[str, np.ndarray]  # kernel class (gemm, attention, ...) -> its kernels

    def _step_grid(self, name: str) -> np.ndarray:
        return getattr(self.attention, name).reshape(self.steps, int(self.attention_mask.sum()))

    def step(self, name: str, step: int) -> np.ndarray:
        """Per-kernel values of field `name` (e.g. 'time_s') in decode step `step`, in execution order."""
        values = getattr(self.base, name).copy()
        if self.attention_mask.any():
            values[self.attention_mask] = self._step_grid(name)[step]
        return values

    def all_steps(self, name: str) -> np.ndarray:
        """Field `name` of every kernel of every step: shape (steps, kernels)."""
        values = np.tile(getattr(self.base, name), (self.steps, 1))
        if self.attention_mask.any():
            values[:, self.attention_mask] = self._step_grid(name)
        return values

    def total(self, name: str, kernel_mask: np.ndarray | None = None) -> float:
        """Sum of field `name` over all steps, optionally over the kernels where kernel_mask is true."""
        base = getattr(self.base, name)
        attention = getattr(self.attention, name)
        if kernel_mask is None:
            return float((base.sum() - base[self.attention_mask].sum()) * self.steps + attention.sum())
        total = base[kernel_mask & ~self.attention_mask].sum() * self.steps
        if self.steps and (kernel_mask & self.attention_mask).any():
            total += self._step_grid(name)[:, kernel_mask[self.attention_mask]].sum()
        return float(total)

    @cached_property
    def segments(self) -> tuple[np.ndarray, np.ndarray]:
        """(first kernel, unit) of each run of consecutive kernels on one unit in a step."""
        unit = self.base.unit_index
        if len(unit) == 0:
            return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
        starts = np.flatnonzero(np.r_[True, unit[1:] != unit[:-1]])
        return starts, unit[starts]

    def segment_times(self) -> np.ndarray:
        """Duration of each segment of each step: shape (steps, segments)."""
        starts, _ = self.segments
        if not len(starts) or not self.steps:
            return np.zeros((self.steps, len(starts)))
        return np.add.reduceat(self.all_steps("time_s"), starts, axis=1)


@dataclass(frozen=True)
class StepCosts:
    """The prefill's costs and the decode costs of each sub-batch (one when the batch decodes whole)."""

    prefill: KernelCosts
    decode: tuple[DecodeCosts, ...]
    # When each decode sub-batch finishes, counted from the start of decode (the schedule does not depend on
    # when it starts); set by price_passes.
    decode_offsets_s: tuple[float, ...] = ()

    @property
    def interleaved(self) -> bool:
        return len(self.decode) > 1

    def decode_total(self, name: str) -> float:
        """Sum of field `name` over every decode step of every sub-batch."""
        return sum(part.total(name) for part in self.decode)

    def time_by_class_s(self, prefill_masks: dict[str, np.ndarray]) -> dict[str, float]:
        """Busy time of each kernel class over the prefill and every decode step of every sub-batch.

        With sub-batches overlapping on different units, these busy times add up to more than the makespan.
        """
        by_class = {label: float(self.prefill.time_s[mask].sum()) for label, mask in prefill_masks.items()}
        for part in self.decode:
            for label, mask in part.class_masks.items():
                by_class[label] = by_class.get(label, 0.0) + part.total("time_s", mask)
        return by_class

    def decode_finish_times(self, start_s: float) -> list[float]:
        """When each decode sub-batch finishes its last step, decoding from start_s (one entry if whole)."""
        return [start_s + offset for offset in self.decode_offsets_s]

    def energy_parts(self, makespan_s: float, idle_power_W: float) -> dict[str, float]:
        """Compute and memory energy of every kernel, and static power over the whole run.

        Static power is drawn for the makespan, whether one kernel runs, none (a gap), or several at once
        on different units; per-kernel static_J (idle power x kernel time) would count overlaps twice.
        """
        parts = {name: float(getattr(self.prefill, name).sum()) + self.decode_total(name)
                 for name in DYNAMIC_ENERGY_FIELDS}
        parts["static_J"] = idle_power_W * makespan_s
        return parts


def sub_batch_sizes(batch: int, parts: int) -> tuple[int, ...]:
    """`batch` split into at most `parts` near-equal sub-batches, largest first."""
    parts = max(1, min(parts, batch))
    return tuple(batch // parts + (1 if i < batch % parts else 0) for i in range(parts))


def price_passes(device, tables: PassTables, workload: BatchWorkload, execution: str = "eager") -> StepCosts:
    """Price the prefill once, one decode step once per sub-batch, and the decode attention of every step.

    With sub-batch tables, the decode runs interleaved only when that finishes sooner than decoding the
    batch whole, as a serving scheduler would choose (NeuPIMs turns sub-batch mode on per batch): split
    sub-batches read every weight once each, which costs more than the overlap saves at small batches.
    """
    kv_lens = workload.decode_kv_lengths()

    def price(size: int, table) -> DecodeCosts:
        steps = table.at_kv_lengths(kv_lens, tables.attention_window)
        return DecodeCosts(batch=size, base=device.cost_table(table, execution),
                           attention=device.cost_table(steps, execution), attention_mask=table.decode_attention_mask,
                           steps=len(kv_lens), class_masks=table.class_masks)

    prefill = device.cost_table(tables.prefill, execution)
    whole_part = price(workload.batch, tables.decode)
    whole_s = whole_part.total("time_s")
    whole = StepCosts(prefill=prefill, decode=(whole_part,), decode_offsets_s=(whole_s,))
    if not tables.sub_batch_decode:
        return whole
    parts = tuple(price(size, table) for size, table in tables.sub_batch_decode)
    unit_count = len(device.units)
    # No schedule beats its busiest unit: when that alone is no faster than the whole batch, skip scheduling.
    busiest_s = max(sum(part.total("time_s", part.base.unit_index == unit) for part in parts)
                    for unit in range(unit_count))
    if busiest_s >= whole_s:
        return whole
    offsets = _interleaved_finishes(parts, unit_count)
    return StepCosts(prefill=prefill, decode=parts, decode_offsets_s=offsets) if max(offsets) < whole_s else whole


def _interleaved_finishes(parts: tuple[DecodeCosts, ...], unit_count: int) -> tuple[float, ...]:
    """When each sub-batch finishes, from the start of decode, with the sub-batches sharing the units."""
    durations, units = [], []
    for part in parts:
        _, segment_units = part.segments
        durations.append(part.segment_times().ravel())
        units.append(np.tile(segment_units, part.steps))
    starts = interleaved_schedule(durations, units, unit_count)
    return tuple(float(s[-1] + d[-1]) if len(d) else 0.0 for s, d in zip(starts, durations, strict=True))
