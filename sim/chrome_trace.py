"""Export a simulated timeline as Chrome trace JSON (opens in Perfetto or chrome://tracing)."""

from __future__ import annotations

import json
from pathlib import Path

from sim.result import PHASES, SimResult
from sim.serving import ServingResult


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


def serving_trace_events(result: ServingResult, device_name: str) -> list[dict]:
    """A serving run as iterations ('X' events, microseconds) on the replica's track, with counters of the
    running batch and the KV blocks in use, and each request's life (arrival to last token) as an async span."""
    log = result.iterations
    events: list[dict] = [{"ph": "M", "pid": 0, "name": "process_name", "args": {"name": device_name}},
                          {"ph": "M", "pid": 0, "tid": 0, "name": "thread_name", "args": {"name": "iterations"}}]
    for start, duration, batch, tokens, blocks in zip(log.start_s.tolist(), log.duration_s.tolist(),
                                                      log.batch_size.tolist(), log.tokens.tolist(),
                                                      log.kv_blocks_used.tolist(), strict=True):
        kind = "decode" if tokens == batch else "prefill"
        events.append({"ph": "X", "pid": 0, "tid": 0, "name": kind, "ts": start * 1e6, "dur": duration * 1e6,
                       "args": {"sequences": int(batch), "tokens": int(tokens), "kv_blocks": int(blocks)}})
        events.append({"ph": "C", "pid": 0, "name": "running batch", "ts": start * 1e6,
                       "args": {"sequences": int(batch)}})
        events.append({"ph": "C", "pid": 0, "name": "KV blocks", "ts": start * 1e6, "args": {"used": int(blocks)}})
    records = result.records
    for index, (arrival, first, finish) in enumerate(zip(records.arrival_s.tolist(), records.first_token_s.tolist(),
                                                         records.finish_s.tolist(), strict=True)):
        span = {"pid": 0, "cat": "request", "name": f"request {index}", "id": index}
        events.append(span | {"ph": "b", "ts": arrival * 1e6})
        events.append(span | {"ph": "n", "ts": first * 1e6, "args": {"first token": True}})
        events.append(span | {"ph": "e", "ts": finish * 1e6})
    return events


def write_chrome_trace(result: SimResult | ServingResult, device_name: str, path: str | Path) -> None:
    """Kernels of a static batch, or iterations and requests of a serving run."""
    events = (serving_trace_events(result, device_name) if isinstance(result, ServingResult)
              else chrome_trace_events(result, device_name))
    Path(path).write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ns"}))
