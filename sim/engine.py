"""Discrete-event simulation (SimPy) of a static batch on a system of one device.

Each execution unit of the device (one for a GPU; an NPU and its PIM banks for NeuPIMs-style devices) is a
SimPy resource that executes one kernel at a time. The batch is a process that runs the prefill kernel by
kernel, then each decode sub-batch (one, or several the device interleaves) is a process that runs its
decode steps; a kernel run holds the unit it is placed on, so sub-batches overlap where they use different
units. A Monitor records what happens through on_<event> hooks. Kernel costs come from the same priced
passes as the analytic path.
"""

from __future__ import annotations

import numpy as np
import simpy

from kernels.table import KernelTable
from sim.analytic import batch_result
from sim.memory import MemoryFootprint
from sim.offload import LinkTraffic
from sim.result import SimResult, Timeline
from sim.step_costs import StepCosts, price_passes
from sim.workload import BatchWorkload, PassTables

TIMELINE_COLUMNS = 7  # start, duration, kernel index, phase, step, unit, sub-batch


class Monitor:
    """Collects the timeline, first token and finish times through on_<event> hooks."""

    def __init__(self, record_timeline: bool):
        self.record_timeline = record_timeline
        self.rows: list[tuple] = []
        self.first_token_s = 0.0
        self.finish_s: dict[int, float] = {}

    def on_kernel(self, start_s: float, duration_s: float, index: int, phase: int, step: int, unit: int,
                  sub_batch: int) -> None:
        if self.record_timeline:
            self.rows.append((start_s, duration_s, index, phase, step, unit, sub_batch))

    def on_first_token(self, now_s: float) -> None:
        self.first_token_s = now_s

    def on_finish(self, now_s: float, sub_batch: int) -> None:
        self.finish_s[sub_batch] = now_s

    def timeline(self) -> Timeline | None:
        if not self.record_timeline:
            return None
        cols = np.array(self.rows, dtype=float).reshape(-1, TIMELINE_COLUMNS).T
        return Timeline(start_s=cols[0], duration_s=cols[1], kernel_index=cols[2].astype(int),
                        phase=cols[3].astype(int), step=cols[4].astype(int), unit=cols[5].astype(int),
                        sub_batch=cols[6].astype(int))


def _run_kernels(env: simpy.Environment, units: list[simpy.Resource], durations: np.ndarray, unit: np.ndarray,
                 phase: int, step: int, sub_batch: int, monitor: Monitor):
    """Run a pass's kernels in order; each run of consecutive kernels on one unit holds that unit."""
    times, placed = durations.tolist(), unit.tolist()
    index = 0
    while index < len(times):
        with units[placed[index]].request() as turn:
            yield turn
            segment_unit = placed[index]
            while index < len(times) and placed[index] == segment_unit:
                start = env.now
                yield env.timeout(times[index])
                monitor.on_kernel(start, times[index], index, phase, step, segment_unit, sub_batch)
                index += 1


def _decode(env: simpy.Environment, units: list[simpy.Resource], costs: StepCosts, part: int, monitor: Monitor):
    decode = costs.decode[part]
    unit = decode.base.unit_index
    for step in range(decode.steps):
        yield from _run_kernels(env, units, decode.step("time_s", step), unit, 1, step, part, monitor)
    monitor.on_finish(env.now, part)


def _serve_batch(env: simpy.Environment, units: list[simpy.Resource], costs: StepCosts, monitor: Monitor):
    yield from _run_kernels(env, units, costs.prefill.time_s, costs.prefill.unit_index, 0, -1, 0, monitor)
    monitor.on_first_token(env.now)
    yield simpy.AllOf(env, [env.process(_decode(env, units, costs, part, monitor))
                            for part in range(len(costs.decode))])


def simulate(device, tables: PassTables, workload: BatchWorkload, memory: MemoryFootprint,
             record_timeline: bool = True, execution: str = "eager", traffic: LinkTraffic | None = None) -> SimResult:
    """Run the batch through the event simulation and return its timings, energy and timeline (`traffic`: what an
    offloaded batch moves over its host link, sim/offload.py)."""
    costs = price_passes(device, tables, workload, execution, traffic)
    env = simpy.Environment()
    units = [simpy.Resource(env, capacity=1) for _ in device.units]
    passes = _pass_tables(tables, costs)
    monitor = Monitor(record_timeline)
    env.process(_serve_batch(env, units, costs, monitor))
    env.run()
    finishes = [monitor.finish_s[part] for part in range(len(costs.decode))]
    return batch_result(device, costs, workload, memory, monitor.first_token_s, finishes,
                        time_by_class_s=costs.time_by_class_s(), timeline=monitor.timeline(),
                        kernel_names={key: tuple(f"{k.op} {k.module}".strip() for k in table.kernels)
                                   for key, table in passes.items()},
                     unit_names=tuple(device.units))


def _pass_tables(tables: PassTables, costs: StepCosts) -> dict[tuple[int, int], KernelTable]:
    """The table each (phase, sub-batch) ran: sub-batches run their own tables when the decode was split
    (an MoE sub-batch may launch fewer expert kernels than the whole batch)."""
    decode = [table for _, table in tables.sub_batch_decode] if costs.interleaved else [tables.decode]
    return {(0, 0): tables.prefill} | {(1, part): table for part, table in enumerate(decode)}
