"""A static batch on a block of design points at once: sim/analytic.py's result as arrays over the points.

The points of a block share their kernel tables (model, batch, prompt, format, execution) and differ only in
device fields that a cost model applies per kernel (hw_models/device_block.py); the device's cost tables are
then (points, kernels) arrays, and every timing below is a sum along the kernel axis. This covers a device
with one execution unit that decodes the batch whole (no interleaved sub-batches), which is what a GPU is;
sim/analytic.py is the reference, and tests hold the two equal point by point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hw_models.device import dispatch_s
from kernels.table import KernelTable
from sim.memory import MemoryFootprint
from sim.result import RESULT_METRICS
from sim.serving_metrics import two_phase_peak_power_W
from sim.step_costs import DYNAMIC_ENERGY_FIELDS, HOST_WAIT, batch_modes, host_stall_s
from sim.workload import BatchWorkload, PassTables


def supports_block(device, tables: PassTables) -> bool:
    """Whether this path prices the point: one execution unit, the batch decoded whole."""
    return len(device.units) == 1 and not tables.sub_batch_decode


@dataclass(frozen=True)
class BlockResult:
    """Timings and energy of a static batch at each point of a block (arrays of shape (points,))."""

    workload: BatchWorkload
    first_token_s: np.ndarray
    decode_s: np.ndarray
    energy_parts_J: dict[str, np.ndarray]  # compute_J, memory_J, static_J
    time_by_class_s: dict[str, np.ndarray]
    memory: MemoryFootprint
    prefill_dynamic_J: np.ndarray | float = 0.0  # of the compute and memory energy, the prefill's

    @property
    def makespan_s(self) -> np.ndarray:
        return self.first_token_s + self.decode_s

    @property
    def energy_J(self) -> np.ndarray:
        return sum(self.energy_parts_J.values())

    def metrics(self) -> dict[str, np.ndarray]:
        """SimResult.metrics at every point: every request of the batch has the same timings."""
        tokens = self.workload.batch * self.workload.output_len
        steps = self.workload.output_len - 1
        makespan_s, energy_J = self.makespan_s, self.energy_J
        nan = np.full_like(makespan_s, math.nan)
        decoding = self.decode_s > 0
        # Decode tokens over the decode time (sim.serving_metrics.per_decode_second): NaN where nothing decodes.
        decode_tokens_per_s = np.divide(self.workload.batch * steps, self.decode_s, out=nan.copy(),
                                        where=decoding) if steps else nan
        static_J = self.energy_parts_J["static_J"]
        peak_W = static_J / makespan_s + two_phase_peak_power_W(
            self.first_token_s, self.prefill_dynamic_J, self.decode_s, energy_J - static_J - self.prefill_dynamic_J)
        return dict(zip(RESULT_METRICS, (
            self.first_token_s, self.decode_s / steps if steps else nan, makespan_s, tokens / makespan_s,
            decode_tokens_per_s, energy_J / tokens, energy_J / makespan_s, peak_W,
            np.full_like(makespan_s, float(self.memory.total_B)),
        ), strict=True))


class _PricedPass:
    """A pass priced at every point of a block: costs of its distinct rows (hw_models DeviceModel.cost_rows), and
    sums over kernels as products with counts of how often each distinct row occurs."""

    def __init__(self, device, table: KernelTable, execution: str, points: int):
        self.costs, index = device.cost_rows(table, execution)
        self.index = np.arange(len(table)) if index is None else index
        self.rows, self.points = self.costs.time_s.shape[-1], points

    def field(self, name: str) -> np.ndarray:
        """Field `name` of the distinct rows as a (points, rows) array."""
        values = getattr(self.costs, name)
        return np.broadcast_to(values, (self.points, values.shape[-1]))

    def counts(self, mask: np.ndarray | None = None) -> np.ndarray:
        """How many kernels (where mask is true) each distinct row stands for."""
        return np.bincount(self.index if mask is None else self.index[mask], minlength=self.rows).astype(float)

    def sum(self, name: str, mask: np.ndarray | None = None) -> np.ndarray:
        """Field `name` summed over the kernels (where mask is true) at each point: shape (points,). Each point's
        sum is taken along its own row, so it does not depend on which other points share the block; a field the
        same at every point (one row, or a row broadcast) is summed once, the same sum bit for bit."""
        values = getattr(self.costs, name)
        if values.ndim == 1 or values.shape[0] == 1 or values.strides[0] == 0:
            return np.full(self.points, (values[(0,) * (values.ndim - 1)] * self.counts(mask)).sum())
        return (values * self.counts(mask)).sum(axis=1)

    def step_sums(self, name: str, steps: int) -> np.ndarray:
        """Field `name` summed per decode step over a table of `steps` steps' attention kernels (step-major, as
        KernelTable.at_kv_lengths builds it, its distinct rows step-major too): shape (points, steps)."""
        if not steps:
            return np.zeros((self.points, 0))
        per_step = self.field(name).reshape(self.points, steps, self.rows // steps)
        counts = np.bincount(self.index[:len(self.index) // steps], minlength=self.rows // steps)
        return (per_step * counts).sum(axis=2)


def evaluate_block(device, points: int, tables: PassTables, workload: BatchWorkload, memory: MemoryFootprint,
                   execution: str = "eager") -> BlockResult:
    """sim.analytic.evaluate at every point of the block (`device` prices (points, kernels) tables)."""
    if not supports_block(device, tables):
        raise ValueError(f"{device.name}: a block needs one execution unit and a batch decoded whole")
    prefill_mode, decode_mode = batch_modes(device, execution, workload)

    # The prefill: its kernels back to back, or its host dispatch where that is the longer (sim/step_costs.py).
    prefill = _PricedPass(device, tables.prefill, prefill_mode, points)
    first_token_s = prefill.sum("time_s")
    prefill_wait_s = host_stall_s(dispatch_s(device, prefill_mode) * len(tables.prefill), first_token_s)
    by_class = {label: prefill.sum("time_s", mask) for label, mask in tables.prefill.class_masks.items()}
    first_token_s = first_token_s + prefill_wait_s
    energy = {name: prefill.sum(name) for name in DYNAMIC_ENERGY_FIELDS}
    prefill_J = sum(energy.values())

    # Each decode step: the base step's kernels with its attention priced at that step's KV length.
    decode = tables.decode
    kv_lens = workload.decode_kv_lengths()
    steps, attention = len(kv_lens), decode.decode_attention_mask
    base = _PricedPass(device, decode, decode_mode, points)
    per_step = _PricedPass(device, decode.at_kv_lengths(kv_lens, tables.attention_window), decode_mode, points)
    kernels = len(decode)
    step_s = base.sum("time_s", ~attention)[:, None] + per_step.step_sums("time_s", steps)  # (points, steps)
    step_stall_s = host_stall_s(dispatch_s(device, decode_mode) * kernels, step_s)
    decode_s = (step_s + step_stall_s).sum(axis=1)
    for label, mask in decode.class_masks.items():
        in_steps = np.tile(mask[attention], steps)
        total = base.sum("time_s", mask & ~attention) * steps + per_step.sum("time_s", in_steps)
        by_class[label] = by_class.get(label, 0.0) + total
    by_class[HOST_WAIT] = prefill_wait_s + step_stall_s.sum(axis=1)
    for name in DYNAMIC_ENERGY_FIELDS:
        energy[name] = energy[name] + base.sum(name, ~attention) * steps + per_step.sum(name)
    # Static power is drawn until the last request finishes.
    idle_W = np.broadcast_to(device.idle_power_W, (points, 1))[:, 0]
    energy["static_J"] = idle_W * (first_token_s + decode_s)
    return BlockResult(workload=workload, first_token_s=first_token_s, decode_s=decode_s, energy_parts_J=energy,
                       time_by_class_s=by_class, memory=memory, prefill_dynamic_J=prefill_J)
