"""Discrete-event simulation (SimPy) of a static batch on a system of one device.

The device is a SimPy resource that executes one kernel at a time (one stream); a request batch is a
process that holds it through the prefill and every decode step, kernel by kernel, and a Monitor
records what happens through on_<event> hooks. Later systems add devices and links as further
resources and overlap them; the kernel costs come from the same priced passes as the analytic path.
"""

from __future__ import annotations

import numpy as np
import simpy

from sim.memory import MemoryFootprint
from sim.result import PHASES, RequestTiming, SimResult, Timeline
from sim.step_costs import StepCosts, price_passes
from sim.workload import BatchWorkload, PassTables


class Monitor:
    """Collects the timeline, energy and per-class time through on_<event> hooks."""

    def __init__(self, kernel_classes: dict[int, np.ndarray], record_timeline: bool):
        self.kernel_classes = kernel_classes  # phase -> class label per kernel index
        self.record_timeline = record_timeline
        self.rows: list[tuple[float, float, int, int, int]] = []
        self.time_by_class_s: dict[str, float] = {}
        self.first_token_s = 0.0
        self.finish_s = 0.0

    def on_kernel(self, start_s: float, duration_s: float, index: int, phase: int, step: int) -> None:
        label = self.kernel_classes[phase][index]
        self.time_by_class_s[label] = self.time_by_class_s.get(label, 0.0) + duration_s
        if self.record_timeline:
            self.rows.append((start_s, duration_s, index, phase, step))

    def on_first_token(self, now_s: float) -> None:
        self.first_token_s = now_s

    def on_finish(self, now_s: float) -> None:
        self.finish_s = now_s

    def timeline(self) -> Timeline | None:
        if not self.record_timeline:
            return None
        cols = np.array(self.rows, dtype=float).reshape(-1, 5).T
        return Timeline(start_s=cols[0], duration_s=cols[1], kernel_index=cols[2].astype(int),
                        phase=cols[3].astype(int), step=cols[4].astype(int))


def _run_pass(env: simpy.Environment, durations: np.ndarray, phase: int, step: int, monitor: Monitor):
    for index, duration in enumerate(durations.tolist()):
        start = env.now
        yield env.timeout(duration)
        monitor.on_kernel(start, duration, index, phase, step)


def _serve_batch(env: simpy.Environment, device: simpy.Resource, costs: StepCosts, monitor: Monitor):
    with device.request() as turn:
        yield turn
        yield from _run_pass(env, costs.prefill.time_s, 0, -1, monitor)
        monitor.on_first_token(env.now)
        for step in range(costs.decode_steps):
            yield from _run_pass(env, costs.decode_step("time_s", step), 1, step, monitor)
    monitor.on_finish(env.now)


def simulate(device, tables: PassTables, workload: BatchWorkload, memory: MemoryFootprint,
             record_timeline: bool = True, execution: str = "eager") -> SimResult:
    """Run the batch through the event simulation and return its timings, energy and timeline."""
    costs = price_passes(device, tables, workload, execution)
    env = simpy.Environment()
    resource = simpy.Resource(env, capacity=1)
    monitor = Monitor({0: tables.prefill.kernel_class, 1: tables.decode.kernel_class}, record_timeline)
    env.process(_serve_batch(env, resource, costs, monitor))
    env.run()
    busy_s = float(costs.prefill.time_s.sum()) + costs.decode_total("time_s")
    # Kernel energies include idle power while they run; any gap adds idle power alone.
    parts = costs.energy_parts()
    parts["static_J"] += device.idle_power_W * max(env.now - busy_s, 0.0)
    requests = tuple(RequestTiming(request_id=i, arrival_s=0.0, first_token_s=monitor.first_token_s,
                                   finish_s=monitor.finish_s, output_tokens=workload.output_len)
                     for i in range(workload.batch))
    return SimResult(requests=requests, makespan_s=env.now, energy_J=sum(parts.values()), energy_parts_J=parts,
                     time_by_class_s=monitor.time_by_class_s, memory=memory, timeline=monitor.timeline(),
                     kernel_names=_kernel_names(tables))


def _kernel_names(tables: PassTables) -> dict[str, tuple[str, ...]]:
    def label(k) -> str:
        return f"{k.op} {k.module}".strip()
    return {PHASES[0]: tuple(label(k) for k in tables.prefill.kernels),
            PHASES[1]: tuple(label(k) for k in tables.decode.kernels)}
