"""Analytic evaluation of a static batch on one device: the event simulation's result by summation.

With one device executing kernels back to back, every finish time is a sum of kernel times, so sweeps
take this path (thousands of design points per second); tests check that it agrees with simulate().
"""

from __future__ import annotations

from sim.memory import MemoryFootprint
from sim.result import RequestTiming, SimResult
from sim.step_costs import price_passes
from sim.workload import BatchWorkload, PassTables


def evaluate(device, tables: PassTables, workload: BatchWorkload, memory: MemoryFootprint,
             execution: str = "eager") -> SimResult:
    """Timings and energy of the batch without an event loop (no timeline)."""
    costs = price_passes(device, tables, workload, execution)
    first_token_s = float(costs.prefill.time_s.sum())
    finish_s = first_token_s + costs.decode_total("time_s")
    by_class: dict[str, float] = {}
    for label in set(tables.prefill.class_labels) | set(tables.decode.class_labels):
        prefill_mask = tables.prefill.class_masks.get(label)
        prefill_s = costs.prefill.time_s[prefill_mask].sum() if prefill_mask is not None else 0.0
        decode_mask = tables.decode.class_masks.get(label)
        by_class[label] = float(prefill_s) + (costs.decode_total("time_s", decode_mask) if decode_mask is not None
                                              else 0.0)
    parts = costs.energy_parts()
    requests = tuple(RequestTiming(request_id=i, arrival_s=0.0, first_token_s=first_token_s, finish_s=finish_s,
                                   output_tokens=workload.output_len) for i in range(workload.batch))
    return SimResult(requests=requests, makespan_s=finish_s, energy_J=sum(parts.values()), energy_parts_J=parts,
                     time_by_class_s=by_class, memory=memory)
