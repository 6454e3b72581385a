"""Costs of every kernel of the prefill and of every decode step, priced once, shared by both sim paths.

Host and device work overlap. A device model's kernel time includes the launch gap the device pays between
kernels (host_s); the framework's dispatch on the host (dispatch_s: PyTorch eager's Python and ATen dispatcher)
runs ahead of the device, since launches are asynchronous, so a pass takes the longer of its host time and its
device time rather than their sum. When the host is the longer (a small-batch eager decode), the device waits:
that wait is spread over the pass's kernels by their share of the dispatch and shows in their times (a breakdown by
kernel class shows it apart, as HOST_WAIT). This is max(host, device) per pass, a lower bound of the exact schedule
(each kernel starting once it is both issued and its predecessor done), which it equals when one side is the longer
throughout the pass, as in a decode step whose every kernel dispatches slower than it runs.

A batch that offloads weights or KV cache to host memory (sim/offload.py) also waits on the host link: with
prefetch the device's work stretches to the link time where that is longer, without it the link time is added (an
MoE model's routed experts, fetched once its router has run, add theirs: sim/offload.py pass_wait_s); the wait is
spread over the pass's kernels as the host's is, and the host's dispatch overlaps the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from hw_models.cost import SUM_COLUMN, IndexedCosts, KernelCosts
from hw_models.device import CUDA_GRAPH_KINDS, cost_passes, dispatch_s, stacked_costs
from kernels.table import KernelTable
from sim.cuda_graphs import DEFAULT_LIMITS, CaptureLimits, PassLaunch, engine_launch
from sim.interleave import interleaved_schedule
from sim.offload import LinkTraffic
from sim.workload import BatchWorkload, PassTables

DYNAMIC_ENERGY_FIELDS = ("compute_J", "memory_J")
# The time-by-class label of the device's waits on the host (PyTorch's dispatch, transfers on the host link): the
# waits stretch the kernels they fall between (module docstring), but a breakdown by kernel class shows them apart,
# since faster kernels do not shorten them.
HOST_WAIT = "host_wait"
TIME = SUM_COLUMN["time_s"]
NO_MASKS: dict[str, np.ndarray] = {}  # field_sums over every kernel alone (one mapping: its counts are kept per table)


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
    dispatch_s: float = 0.0  # host dispatch per kernel, overlapping the device's work (module docstring)
    link: LinkTraffic | None = None  # each step's transfers on the host link (None: nothing offloaded)

    def _step_grid(self, name: str) -> np.ndarray:
        per_step = len(self.attention) // self.steps if self.steps else int(self.attention_mask.sum())
        return getattr(self.attention, name).reshape(self.steps, per_step)

    @property
    def _attends(self) -> bool:
        """Whether the step has attention kernels priced per step."""
        return bool(len(self.attention))

    @cached_property
    def _base_sums(self) -> np.ndarray:
        """Every summed field (columns: SUM_COLUMN) over the step's kernels but its attention (row 0) and over those
        of each kernel class (rows 1..., in class_masks order): one product for every total of the step."""
        return self.base.field_sums(self.class_masks, self.attention_mask)

    @cached_property
    def _attention_sums(self) -> np.ndarray:
        """Every summed field over the attention kernels of every step."""
        return self.attention.field_sums(NO_MASKS)[0]

    @cached_property
    def _device_step_s(self) -> np.ndarray:
        """Each step's device time (its kernels back to back)."""
        base_s = self._base_sums[0, TIME]
        if self._attends:
            return base_s + self._step_grid("time_s").sum(axis=1)
        return np.full(self.steps, base_s)

    @property
    def host_step_s(self) -> float:
        """Each step's host dispatch time."""
        return self.dispatch_s * len(self.base)

    @property
    def stall_s(self) -> np.ndarray:
        """Per step, how long the device waits on the host beyond its own work (zero where the host keeps up)."""
        return self._stall[0]

    @cached_property
    def _stall(self) -> tuple[np.ndarray, bool, float]:
        """(stall_s, whether any step waits, the total wait), computed once."""
        if self.link is not None:  # the host link's wait, then the host's dispatch over the longer step
            wait = self.link.decode_wait_s(self._device_step_s)
            stall = wait + host_stall_s(self.host_step_s, self._device_step_s + wait)
        elif not self.dispatch_s or not len(self.base) or not self.steps:
            stall = np.zeros(self.steps)
        else:
            stall = host_stall_s(self.host_step_s, self._device_step_s)
        total = float(stall.sum())  # of waits >= 0: positive where any step waits
        return stall, total > 0.0, total

    def _waits(self, name: str) -> bool:
        """Whether field `name` carries the wait on the host (the time and its overhead part do)."""
        return name in _STALL_FIELDS and self._stall[1]

    @property
    def wait_s(self) -> float:
        """How long the device waits on the host over every step."""
        return self._stall[2]

    def step(self, name: str, step: int) -> np.ndarray:
        """Per-kernel values of field `name` (e.g. 'time_s') in decode step `step`, in execution order."""
        values = getattr(self.base, name).copy()
        if self.attention_mask.any():
            values[self.attention_mask] = self._step_grid(name)[step]
        if self._waits(name):
            values += self.stall_s[step] / len(values)
        return values

    def all_steps(self, name: str) -> np.ndarray:
        """Field `name` of every kernel of every step: shape (steps, kernels)."""
        values = np.tile(getattr(self.base, name), (self.steps, 1))
        if self.attention_mask.any():
            values[:, self.attention_mask] = self._step_grid(name)
        if self._waits(name):
            values += self.stall_s[:, None] / values.shape[1]
        return values

    def total(self, name: str, kernel_mask: np.ndarray | None = None) -> float:
        """Sum of field `name` (one of SUM_FIELDS) over all steps, optionally over the kernels where kernel_mask is
        true."""
        base = self.base
        waits = self.wait_s if self._waits(name) else 0.0
        if kernel_mask is None and name == "time_s" and waits and self.link is not None:
            return float((self._device_step_s + self.stall_s).sum())
        if kernel_mask is None and name == "time_s" and waits:
            return float(np.maximum(self.host_step_s, self._device_step_s).sum())  # max(host, device) per step
        if kernel_mask is None:
            column = SUM_COLUMN[name]
            return float(self._base_sums[0, column] * self.steps + self._attention_sums[column]) + waits
        total = self.base.sum(name, kernel_mask, without=self.attention_mask) * self.steps
        if self.steps and self._attends:
            attended = kernel_mask[self.attention_mask]
            if attended.any():
                total += self._step_grid(name)[:, attended].sum()
        if not waits:
            return float(total)
        return float(total) + waits * float(np.count_nonzero(kernel_mask)) / len(base)

    def class_totals(self, name: str) -> dict[str, float]:
        """Field `name` of every kernel class (class_masks) at once: the decode step's kernels but its attention times
        the steps, plus each step's attention; the wait on the host is not in them (wait_s)."""
        masks = self.class_masks
        table = getattr(self.base, "table", None)  # IndexedCosts keep their table's counts per mask
        totals = self._base_sums[1:, SUM_COLUMN[name]] * self.steps
        if self.steps and self._attends:
            within = (table.masks_within(masks, self.attention_mask) if table is not None
                      else np.array([mask[self.attention_mask] for mask in masks.values()], dtype=float))
            grid = self._step_grid(name)
            totals = totals + within @ (grid[0] if self.steps == 1 else grid.sum(axis=0))  # one step: no reduction
        return dict(zip(self.class_masks, totals.tolist(), strict=True))

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
    prefill_masks: dict[str, np.ndarray] = field(default_factory=dict)  # the prefill's kernel classes
    prefill_wait_s: float = 0.0  # of the prefill's time, the wait on the host (spread over its kernels' times)

    @cached_property
    def _prefill_sums(self) -> np.ndarray:
        """Every summed field (columns: SUM_COLUMN) over the prefill's kernels (row 0) and each class's (rows 1...,
        in prefill_masks order)."""
        return self.prefill.field_sums(self.prefill_masks)

    @property
    def prefill_s(self) -> float:
        """The prefill's time: its kernels back to back."""
        return float(self._prefill_sums[0, TIME])

    @property
    def interleaved(self) -> bool:
        return len(self.decode) > 1

    def decode_total(self, name: str) -> float:
        """Sum of field `name` over every decode step of every sub-batch."""
        return sum(part.total(name) for part in self.decode)

    def time_by_class_s(self) -> dict[str, float]:
        """Busy time of each kernel class over the prefill and every decode step of every sub-batch, and the waits on
        the host (HOST_WAIT).

        With sub-batches overlapping on different units, these busy times add up to more than the makespan.
        """
        # The prefill's kernel times carry its wait spread by kernel count: each class gives its share back.
        counts = np.array([np.count_nonzero(mask) for mask in self.prefill_masks.values()], dtype=float)
        share = self.prefill_wait_s / len(self.prefill) if len(self.prefill) else 0.0
        by_class = dict(zip(self.prefill_masks, (self._prefill_sums[1:, TIME] - share * counts).tolist(), strict=True))
        for part in self.decode:
            for label, total in part.class_totals("time_s").items():
                by_class[label] = by_class.get(label, 0.0) + total
        by_class[HOST_WAIT] = self.prefill_wait_s + sum(part.wait_s for part in self.decode)
        return by_class

    def decode_finish_times(self, start_s: float) -> list[float]:
        """When each decode sub-batch finishes its last step, decoding from start_s (one entry if whole)."""
        return [start_s + offset for offset in self.decode_offsets_s]

    def energy_parts(self, makespan_s: float, idle_power_W: float) -> dict[str, float]:
        """Compute and memory energy of every kernel, and static power over the whole run.

        Static power is drawn for the makespan, whether one kernel runs, none (a gap), or several at once
        on different units; per-kernel static_J (idle power x kernel time) would count overlaps twice.
        """
        parts = {name: float(self._prefill_sums[0, SUM_COLUMN[name]]) + self.decode_total(name)
                 for name in DYNAMIC_ENERGY_FIELDS}
        parts["static_J"] = idle_power_W * makespan_s
        return parts

    @property
    def prefill_dynamic_J(self) -> float:
        """The prefill's compute and memory energy."""
        return float(sum(self._prefill_sums[0, SUM_COLUMN[name]] for name in DYNAMIC_ENERGY_FIELDS))


_STALL_FIELDS = ("time_s", "overhead_s")


def pass_execution(device, execution: str, *, decode_only: bool, tokens: int, query: int = 1) -> str:
    """The launch mode a pass of `tokens` tokens is priced in on `device` (pass_launch's)."""
    return pass_launch(device, execution, decode_only=decode_only, tokens=tokens, query=query).mode


def pass_launch(device, execution: str, *, decode_only: bool, tokens: int, query: int = 1,
                limits: CaptureLimits = DEFAULT_LIMITS) -> PassLaunch:
    """The launch mode a pass of `tokens` tokens is priced in on `device` and the tokens it runs: a serving engine's
    (`engine`) on a GPU as vLLM runs it (sim/cuda_graphs.py engine_launch: a uniform decode of `query` tokens a sequence
    from a full graph, any other pass from piecewise graphs, padded to a captured size, a pass past the largest, which
    the scheduler's `limits` set, launched from the host); every other execution, and every device whose runtime
    launches no CUDA graphs, prices every pass alike at its own tokens. `engine` is vLLM's: other engines' graphs
    (TensorRT-LLM's, SGLang's, of their own sizes and modes) are not modeled apart."""
    if execution == "engine" and device.kind in CUDA_GRAPH_KINDS:
        return engine_launch(tokens, uniform_decode=decode_only, query=query, limits=limits)
    return PassLaunch(execution, tokens)


def batch_modes(device, execution: str, workload: BatchWorkload | None, query: int = 1) -> tuple[str, str]:
    """The launch modes of a static batch's prefill and decode steps (batch_launches). `workload` may be None where the
    execution prices every pass alike (any but an engine's)."""
    if workload is None:
        if execution == "engine":
            raise ValueError("workload: found None, allowed: the static batch its passes run (an engine launches each "
                             "pass by its tokens)")
        return execution, execution
    prefill, decode = batch_launches(device, execution, workload, query)
    return prefill.mode, decode.mode


def batch_launches(device, execution: str, workload: BatchWorkload, query: int = 1,
                   limits: CaptureLimits = DEFAULT_LIMITS) -> tuple[PassLaunch, PassLaunch]:
    """How a static batch's prefill (its prompts' tokens) and each of its decode steps (`query` tokens a sequence)
    launch (pass_launch): the mode each is priced in and the tokens it runs, its padding to a captured size
    included. Each table is traced at the padded size where it pads (explore/evaluate.py point_tables,
    kernels/padded_pass.py: the prefill's layers from one prompt of its padded tokens)."""
    prefill = pass_launch(device, execution, decode_only=False, tokens=workload.batch * workload.prompt_len,
                          limits=limits)
    return prefill, pass_launch(device, execution, decode_only=True, tokens=workload.batch * query, query=query,
                                limits=limits)


def host_stall_s(host_s, device_s):
    """How long the device waits on the host: host work the device's own work does not cover."""
    return np.maximum(np.asarray(host_s, dtype=float) - device_s, 0.0)


def with_host(costs: KernelCosts, dispatch: float) -> KernelCosts:
    """A pass's costs once it waits on a host dispatching `dispatch` seconds per kernel: the wait (if the host is
    the longer) spread over the kernels, so the pass takes max(host, device)."""
    return _waiting(costs, pass_host_wait_s(dispatch, len(costs), costs.sum("time_s")))


def pass_host_wait_s(dispatch: float, kernels: int, device_s: float) -> float:
    """host_stall_s of one pass, in floats: how long it waits on a host dispatching `dispatch` seconds per kernel."""
    return max(dispatch * kernels - device_s, 0.0) if kernels and dispatch else 0.0


def with_link(costs: KernelCosts, traffic: LinkTraffic) -> KernelCosts:
    """A prefill's costs once it waits on its transfers on the host link (sim/offload.py LinkTraffic.prefill_wait_s),
    spread over its kernels."""
    wait = traffic.prefill_wait_s(costs.sum("time_s")) if len(costs) else 0.0
    return _waiting(costs, wait)


def _waiting(costs: KernelCosts, stall: float) -> KernelCosts:
    """Costs with `stall` seconds of waiting spread over the kernels by count (their static energy scaled along)."""
    kernels = len(costs)
    if stall <= 0:
        return costs
    extra = stall / kernels
    rows = costs.rows if isinstance(costs, IndexedCosts) else costs  # elementwise: on the distinct rows where held
    static_J = np.divide(rows.static_J * (rows.time_s + extra), rows.time_s, out=rows.static_J.copy(),
                         where=rows.time_s > 0)
    changed = dict(time_s=rows.time_s + extra, overhead_s=rows.overhead_s + extra, static_J=static_J)
    return costs.map_rows(**changed) if isinstance(costs, IndexedCosts) else replace(costs, **changed)


@dataclass(frozen=True)
class WholeBatchTotals:
    """What the analytic path reads of a batch decoded whole with nothing offloaded: price_passes' StepCosts reduced
    to its totals (the prefill's time, the decode's, each kernel class's busy time and the dynamic energy)."""

    prefill_s: float
    decode_s: float
    time_by_class_s: dict[str, float]
    dynamic_J: dict[str, float]  # DYNAMIC_ENERGY_FIELDS over every kernel of every pass
    prefill_dynamic_J: float = 0.0  # the prefill's share of their sum


def whole_batch_totals(device, tables: PassTables, workload: BatchWorkload, execution: str = "eager",
                       ) -> WholeBatchTotals:
    """price_passes' totals for a batch that decodes whole (no sub-batch tables) without offloading, summed straight
    from the passes' costs: StepCosts' and DecodeCosts' arithmetic (each pass the longer of its host's dispatch and
    its kernels, each step's attention at its KV length) without their per-kernel arrays, for the analytic path's
    one point per call. The event simulation prices the same passes through price_passes; tests hold the two equal."""
    kv_lens = workload.decode_kv_lengths()
    prefill_mode, decode_mode = batch_modes(device, execution, workload)
    decode = tables.decode
    sums = _pass_sums(device, tables.prefill, decode, decode.at_kv_lengths(kv_lens, tables.attention_window),
                      prefill_mode, decode_mode, len(kv_lens))

    # The prefill (with_host): the host's wait, where it is the longer.
    prefill_masks = tables.prefill.class_masks
    prefill_s = sums.prefill[0][TIME]
    prefill_wait_s = pass_host_wait_s(dispatch_s(device, prefill_mode), len(tables.prefill), prefill_s)
    prefill_s += prefill_wait_s
    by_class = dict(zip(prefill_masks, (row[TIME] for row in sums.prefill[1:]), strict=True))
    dynamic = {name: sums.prefill[0][SUM_COLUMN[name]] for name in DYNAMIC_ENERGY_FIELDS}
    prefill_J = sum(dynamic.values())

    # Each decode step: the base step's kernels but its attention, plus that step's attention (DecodeCosts), the
    # step taking the longer of its device time and the host's dispatch.
    steps, step_kernels = len(kv_lens), len(decode)
    base, attention = sums.base[0], sums.attention
    host_step_s = dispatch_s(device, decode_mode) * step_kernels
    wait_s = 0.0
    if host_step_s and steps:
        device_step_s = base[TIME] + sums.step_attention_s
        stall = host_stall_s(host_step_s, device_step_s)  # as DecodeCosts._stall
        wait_s = float(stall.sum())
    # As DecodeCosts.total: max(host, device) per step, the device's time plus the host's wait past it.
    decode_s = base[TIME] * steps + attention[TIME] + wait_s
    for name in DYNAMIC_ENERGY_FIELDS:
        column = SUM_COLUMN[name]
        dynamic[name] += base[column] * steps + attention[column]
    for label, row, attended in zip(decode.class_masks, sums.base[1:], sums.attention_by_class, strict=True):
        by_class[label] = by_class.get(label, 0.0) + row[TIME] * steps + attended
    by_class[HOST_WAIT] = prefill_wait_s + wait_s
    return WholeBatchTotals(prefill_s=prefill_s, decode_s=decode_s, time_by_class_s=by_class, dynamic_J=dynamic,
                            prefill_dynamic_J=prefill_J)


@dataclass(frozen=True)
class _PassSums:
    """The sums whole_batch_totals reads (rows of SUM_FIELDS, in their columns, as floats)."""

    prefill: list[list[float]]  # the prefill's kernels (row 0) and each of its classes' (rows 1...)
    base: list[list[float]]  # a decode step's kernels but its attention (row 0) and each class's (rows 1...)
    attention: list[float]  # every step's attention kernels
    attention_by_class: list[float]  # time of every step's attention kernels of each decode class
    step_attention_s: np.ndarray  # each step's attention time


def _pass_sums(device, prefill: KernelTable, decode: KernelTable, steps_table: KernelTable, prefill_mode: str,
               decode_mode: str, steps: int) -> _PassSums:
    """The passes' sums: one product of the stacked call's costs (hw_models/device.py stacked_costs) with weights
    kept on the stacked table, or each pass's costs summed apart where the passes are priced apart."""
    stacked = stacked_costs(device, [prefill, decode, steps_table], decode_mode) if prefill_mode == decode_mode \
        else None
    masks, attention_mask = decode.class_masks, decode.decode_attention_mask
    if stacked is not None:
        costs, table, spans = stacked
        weights = _sum_weights(table, prefill, decode, steps_table, spans, steps)
        sums = (weights.matrix @ costs.matrix.T).tolist()
        start, end, _ = spans[2]
        step_s = np.bincount(weights.kernel_step, weights=costs.time_s[start:end].take(weights.step_index),
                             minlength=steps)
        p, d = len(prefill.class_masks) + 1, len(masks) + 1
        return _PassSums(prefill=sums[:p], base=sums[p:p + d], attention=sums[p + d],
                         attention_by_class=[row[TIME] for row in sums[p + d + 1:]], step_attention_s=step_s)
    if prefill_mode == decode_mode:
        prefill_costs, base, attention = cost_passes(device, [prefill, decode, steps_table], decode_mode)
    else:
        prefill_costs = device.cost_table(prefill, prefill_mode)
        base, attention = cost_passes(device, [decode, steps_table], decode_mode)
    if steps and len(attention):
        grid = attention.time_s.reshape(steps, len(attention) // steps)
        step_s = grid.sum(axis=1)
        by_class = (decode.masks_within(masks, attention_mask) @ grid.sum(axis=0)).tolist()
    else:
        step_s, by_class = np.zeros(steps), [0.0] * len(masks)
    return _PassSums(prefill=prefill_costs.field_sums(prefill.class_masks).tolist(),
                     base=base.field_sums(masks, attention_mask).tolist(),
                     attention=attention.field_sums(NO_MASKS)[0].tolist(), attention_by_class=by_class,
                     step_attention_s=step_s)


@dataclass(frozen=True)
class _SumWeights:
    """Device-free weights of _pass_sums' one product, kept on the stacked table: how many kernels of each sum each
    stacked distinct row stands for, and each step's attention kernels (their step, their distinct row)."""

    matrix: np.ndarray  # rows: the prefill's sums, the decode step's, every step's attention, each class's of it
    kernel_step: np.ndarray
    step_index: np.ndarray


def _sum_weights(stacked: KernelTable, prefill: KernelTable, decode: KernelTable, steps_table: KernelTable,
                 spans: list, steps: int) -> _SumWeights:
    """_pass_sums' weights for the passes stacked as `spans` (stacked_costs), made once per stacked table."""
    hit = stacked.__dict__.get("_sum_weights")
    if hit is not None and hit[0] is prefill and hit[1] is decode and hit[2] is steps_table:
        return hit[3]
    masks, attention_mask = decode.class_masks, decode.decode_attention_mask
    (p0, p1, _), (d0, d1, _), (a0, a1, step_index) = spans
    if step_index is None:
        step_index = np.arange(len(steps_table))
    within = np.tile(decode.masks_within(masks, attention_mask), (1, steps))  # each step's attention kernels
    prefill_rows = prefill.labelled_counts(prefill.class_masks)
    decode_rows = decode.labelled_counts(masks, attention_mask)
    matrix = np.zeros((len(prefill_rows) + len(decode_rows) + 1 + len(masks), len(stacked)))
    matrix[:len(prefill_rows), p0:p1] = prefill_rows
    matrix[len(prefill_rows):len(prefill_rows) + len(decode_rows), d0:d1] = decode_rows
    attention_rows = [np.bincount(step_index, minlength=a1 - a0),
                      *(np.bincount(step_index, weights=row, minlength=a1 - a0) for row in within)]
    matrix[len(prefill_rows) + len(decode_rows):, a0:a1] = attention_rows
    weights = _SumWeights(matrix=matrix, kernel_step=np.repeat(np.arange(steps), len(steps_table) // steps),
                          step_index=step_index)
    stacked.__dict__["_sum_weights"] = (prefill, decode, steps_table, weights)  # the tables kept alive with it
    return weights


def sub_batch_sizes(batch: int, parts: int) -> tuple[int, ...]:
    """`batch` split into at most `parts` near-equal sub-batches, largest first."""
    parts = max(1, min(parts, batch))
    return tuple(batch // parts + (1 if i < batch % parts else 0) for i in range(parts))


def price_passes(device, tables: PassTables, workload: BatchWorkload, execution: str = "eager",
                 traffic: LinkTraffic | None = None) -> StepCosts:
    """Price the prefill once, one decode step once per sub-batch, and the decode attention of every step; with
    `traffic` (an offloaded batch: sim/offload.py), each pass waits on its transfers over the host link.

    With sub-batch tables, the decode runs interleaved only when that finishes sooner than decoding the
    batch whole, as a serving scheduler would choose (NeuPIMs turns sub-batch mode on per batch): split
    sub-batches read every weight once each, which costs more than the overlap saves at small batches. An
    offloaded batch decodes whole (each sub-batch would stream the offloaded weights again).
    """
    kv_lens = workload.decode_kv_lengths()
    prefill_mode, decode_mode = batch_modes(device, execution, workload)

    def price(size: int, table, base: KernelCosts | None = None, attention: KernelCosts | None = None) -> DecodeCosts:
        if base is None:
            base, attention = cost_passes(device, [table, table.at_kv_lengths(kv_lens, tables.attention_window)],
                                                 decode_mode)
        return DecodeCosts(batch=size, base=base, attention=attention, attention_mask=table.decode_attention_mask,
                           steps=len(kv_lens), class_masks=table.class_masks,
                           dispatch_s=dispatch_s(device, decode_mode),
                           link=traffic)

    steps = tables.decode.at_kv_lengths(kv_lens, tables.attention_window)
    if prefill_mode == decode_mode:  # the prefill, the decode step and its attention at every step: one call
        prefill, base, attention = cost_passes(device, [tables.prefill, tables.decode, steps], decode_mode)
    else:
        prefill = device.cost_table(tables.prefill, prefill_mode)
        base, attention = cost_passes(device, [tables.decode, steps], decode_mode)
    device_s = prefill.sum("time_s")
    if traffic is not None:
        prefill = with_link(prefill, traffic)
    prefill = with_host(prefill, dispatch_s(device, prefill_mode))
    prefill_wait_s = max(prefill.sum("time_s") - device_s, 0.0)
    whole_part = price(workload.batch, tables.decode, base, attention)
    whole_s = whole_part.total("time_s")
    whole = StepCosts(prefill=prefill, decode=(whole_part,), decode_offsets_s=(whole_s,),
                      prefill_masks=tables.prefill.class_masks, prefill_wait_s=prefill_wait_s)
    if not tables.sub_batch_decode or traffic is not None:
        return whole
    parts = tuple(price(size, table) for size, table in tables.sub_batch_decode)
    unit_count = len(device.units)
    # No schedule beats its busiest unit: when that alone is no faster than the whole batch, skip scheduling.
    busiest_s = max(sum(part.total("time_s", part.base.unit_index == unit) for part in parts)
                    for unit in range(unit_count))
    if busiest_s >= whole_s:
        return whole
    offsets = _interleaved_finishes(parts, unit_count)
    if max(offsets) >= whole_s:
        return whole
    return StepCosts(prefill=prefill, decode=parts, decode_offsets_s=offsets, prefill_masks=tables.prefill.class_masks,
                     prefill_wait_s=prefill_wait_s)


def _interleaved_finishes(parts: tuple[DecodeCosts, ...], unit_count: int) -> tuple[float, ...]:
    """When each sub-batch finishes, from the start of decode, with the sub-batches sharing the units."""
    durations, units = [], []
    for part in parts:
        _, segment_units = part.segments
        durations.append(part.segment_times().ravel())
        units.append(np.tile(segment_units, part.steps))
    starts = interleaved_schedule(durations, units, unit_count)
    return tuple(float(s[-1] + d[-1]) if len(d) else 0.0 for s, d in zip(starts, durations, strict=True))
