"""Export a simulated timeline as Chrome trace JSON (opens in Perfetto or chrome://tracing)."""

from __future__ import annotations

import json
from pathlib import Path

from sim.result import PHASES, SimResult


def chrome_trace_events(result: SimResult, device_name: str) -> list[dict]:
    """Complete ('X') events in microseconds, one per kernel, on one track per phase and execution unit."""
    timeline = result.timeline
    if timeline is None:
        raise ValueError("this result has no timeline: simulate with record_timeline=True")
    units = result.unit_names
    events: list[dict] = [{"ph": "M", "pid": 0, "name": "process_name", "args": {"name": device_name}}]
    for phase_index, phase in enumerate(PHASES):
        for unit_index, unit in enumerate(units):
            name = phase if len(units) == 1 else f"{phase} on {unit}"
            events.append({"ph": "M", "pid": 0, "tid": phase_index * len(units) + unit_index, "name": "thread_name",
                           "args": {"name": name}})
    for start, duration, index, phase, step, unit, sub_batch in zip(
        timeline.start_s.tolist(), timeline.duration_s.tolist(), timeline.kernel_index.tolist(),
        timeline.phase.tolist(), timeline.step.tolist(), timeline.unit.tolist(), timeline.sub_batch.tolist(),
        strict=True,
    ):
        name = result.kernel_names[phase, sub_batch][index]
        events.append({"ph": "X", "pid": 0, "tid": phase * len(units) + unit, "name": name, "ts": start * 1e6,
                       "dur": duration * 1e6, "args": {"step": step, "sub_batch": sub_batch}})
    return events


def write_chrome_trace(result: SimResult, device_name: str, path: str | Path) -> None:
    Path(path).write_text(json.dumps({"traceEvents": chrome_trace_events(result, device_name),
                                      "displayTimeUnit": "ns"}))
