"""Analytic evaluation of a static batch on one device: the event simulation's result without an event loop.

With one device executing kernels back to back, every finish time is a sum of kernel times; with decode
sub-batches interleaved on several units (sim/interleave.py), the finish times come from the same
first-come-first-served schedule the event simulation follows. Sweeps take this path (thousands of design
points per second); tests check that it agrees with simulate().
"""

from __future__ import annotations

from sim.memory import MemoryFootprint
from sim.offload import LinkTraffic
from sim.result import RequestTiming, SimResult
from sim.step_costs import StepCosts, price_passes, whole_batch_totals
from sim.workload import BatchWorkload, PassTables


def evaluate(device, tables: PassTables, workload: BatchWorkload, memory: MemoryFootprint,
             execution: str = "eager", traffic: LinkTraffic | None = None) -> SimResult:
    """Timings and energy of the batch without an event loop (no timeline); `traffic`: what an offloaded batch
    moves over its host link (sim/offload.py)."""
    if traffic is None and not tables.sub_batch_decode:  # one finish time: the totals alone, no per-pass objects
        totals = whole_batch_totals(device, tables, workload, execution)
        finish_s = totals.prefill_s + totals.decode_s
        timing = RequestTiming(count=workload.batch, arrival_s=0.0, first_token_s=totals.prefill_s, finish_s=finish_s,
                               output_tokens=workload.output_len)
        # Static power is drawn until the last request finishes (StepCosts.energy_parts).
        energy = totals.dynamic_J | {"static_J": device.idle_power_W * finish_s}
        return SimResult(request_groups=(timing,), makespan_s=finish_s, memory=memory, energy_parts_J=energy,
                         time_by_class_s=totals.time_by_class_s, prefill_dynamic_J=totals.prefill_dynamic_J)
    costs = price_passes(device, tables, workload, execution, traffic)
    first_token_s = costs.prefill_s
    finishes = costs.decode_finish_times(first_token_s)
    return batch_result(device, costs, workload, memory, first_token_s, finishes,
                        time_by_class_s=costs.time_by_class_s())


def batch_result(device, costs: StepCosts, workload: BatchWorkload, memory: MemoryFootprint, first_token_s: float,
                 finishes: list[float], **fields) -> SimResult:
    """The result of a static batch: every request gets its first token from the prefill and finishes with its
    decode sub-batch; static power is drawn until the last one finishes. Both sim paths build it here."""
    makespan_s = max(finishes)
    groups = tuple(RequestTiming(count=part.batch, arrival_s=0.0, first_token_s=first_token_s, finish_s=finish,
                                 output_tokens=workload.output_len)
                   for part, finish in zip(costs.decode, finishes, strict=True))
    return SimResult(request_groups=groups, makespan_s=makespan_s, memory=memory,
                     energy_parts_J=costs.energy_parts(makespan_s, device.idle_power_W),
                     prefill_dynamic_J=costs.prefill_dynamic_J, **fields)
