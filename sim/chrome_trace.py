"""Export a simulated timeline as Chrome trace JSON (opens in Perfetto or chrome://tracing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hw_models.cost import bound_name
from sim.result import PHASES, SimResult
from sim.serving import ServingResult
from sim.step_costs import batch_modes

if TYPE_CHECKING:
    from kernels.table import KernelTable
    from sim.workload import BatchWorkload, PassTables


# Op names of the attention kernels a CPU trace records (PyTorch's fused SDPA on CPU, the math fallback):
# an event is named after its kernel, not after the host op that stood in for it while tracing.
ATTENTION_OPS = ("scaled_dot_product", "flash_attention", "efficient_attention")


def _kernel_tables(result: SimResult, tables: PassTables) -> dict[tuple[int, int], KernelTable]:
    """The table each (phase, sub-batch) of the result ran, checked against the result's kernels."""
    decode_parts = sorted(key[1] for key in result.kernel_names if key[0] == 1)
    split = len(decode_parts) > 1
    ran = {(0, 0): tables.prefill} | {
        (1, part): tables.sub_batch_decode[part][1] if split else tables.decode for part in decode_parts}
    for key, table in ran.items():
        if len(table) != len(result.kernel_names.get(key, ())):
            raise ValueError(f"tables do not match the result: pass {key} ran {len(result.kernel_names.get(key, ()))} "
                             f"kernels, its table has {len(table)}")
    return ran


def _kernel_args(table: KernelTable, device: Any, execution: str) -> list[dict[str, Any]]:
    """Per kernel of a table: its kind and class, FLOPs, bytes and intensity (as the device runs it, where one is
    given: DeviceModel.as_run), dtype, what bounds it on the device (compute, memory or overhead) and the traced op
    and module it came from."""
    bounds = None
    if device is not None:
        costs = device.cost_table(table, execution)
        bounds = [bound_name(k.kind.value, int(b)) for k, b in zip(table.kernels, costs.bound.tolist(), strict=True)]
        table = device.as_run(table)
    args = []
    for i, kernel in enumerate(table.kernels):
        flops, moved = float(table.flops[i]), float(table.bytes[i])
        entry = {"kind": kernel.kind.value, "class": kernel.kernel_class, "flops": flops, "bytes": moved,
                 "intensity_flop_per_byte": flops / moved if moved > 0 else None, "dtype": str(table.dtype[i]),
                 "op": kernel.op, "module": kernel.module, "layer": kernel.layer}
        if bounds is not None:
            entry["bound"] = bounds[i]
        args.append(entry)
    return args


def kernel_event_name(op_and_module: str, kind: str | None = None) -> str:
    """An event's name: the kernel's kind and module ('attention_decode layers.0.self_attn') when known; else the
    traced name with an attention host op ('_scaled_dot_product_flash_attention_for_cpu') named 'attention'."""
    op, _, module = op_and_module.partition(" ")
    if kind is None:
        kind = "attention" if any(name in op for name in ATTENTION_OPS) else op
    return f"{kind} {module}".strip()


def chrome_trace_events(result: SimResult, device_name: str, *, tables: PassTables | None = None,
                        device: Any = None, execution: str = "eager", workload: BatchWorkload | None = None,
                        ) -> list[dict]:
    """Complete ('X') events in microseconds, one per kernel, on one track per phase and execution unit.

    With the PassTables the result was simulated from (Evaluation.tables), each event is named after its kernel
    and carries its class, FLOPs, bytes, arithmetic intensity and dtype in its args (decode kernels as in the
    first decode step: attention reads a longer KV cache each step); with the device too, what bounds it
    (compute, memory or overhead) under `execution`, each pass in its launch mode for the batch `workload` the tables
    were traced for (sim/step_costs.py batch_modes; needed with the device under an engine). Without tables, names come
    from the traced ops.
    """
    timeline = result.timeline
    if timeline is None:
        raise ValueError("this result has no timeline: simulate with record_timeline=True")
    units = result.unit_names
    args_of: dict[tuple[int, int], list[dict[str, Any]]] = {}
    if tables is not None:
        modes = batch_modes(device, execution, workload) if device is not None else (execution, execution)
        args_of = {key: _kernel_args(table, device, modes[key[0] == 1])
                   for key, table in _kernel_tables(result, tables).items()}
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
        info = args_of[phase, sub_batch][index] if args_of else {}
        name = kernel_event_name(result.kernel_names[phase, sub_batch][index], info.get("kind"))
        event = {"ph": "X", "pid": 0, "tid": phase * len(units) + unit, "name": name, "ts": start * 1e6,
                 "dur": duration * 1e6, "args": {"step": step, "sub_batch": sub_batch, **info}}
        if info:
            event["cat"] = info["class"]
        events.append(event)
    return events


def serving_trace_events(result: ServingResult, device_name: str) -> list[dict]:
    """A serving run as iterations ('X' events, microseconds), each replica on its own track (named by its pool,
    role and index where there are several), with counters of each replica's running batch and KV blocks in use, and
    each request's life (arrival to last token) as an async span."""
    log = result.iterations
    names = log.replica_names
    events: list[dict] = [{"ph": "M", "pid": 0, "name": "process_name", "args": {"name": device_name}}]
    events += [{"ph": "M", "pid": 0, "tid": tid, "name": "thread_name",
                "args": {"name": f"{name} iterations".strip()}} for tid, name in enumerate(names)]
    for start, duration, batch, tokens, blocks, tid, prefill in zip(
            log.start_s.tolist(), log.duration_s.tolist(), log.batch_size.tolist(), log.tokens.tolist(),
            log.kv_blocks_used.tolist(), log.replica.tolist(), log.prefill_tokens.tolist(), strict=True):
        kind = "prefill" if prefill else "decode"
        of = f" ({names[tid]})" if names[tid] else ""
        events.append({"ph": "X", "pid": 0, "tid": tid, "name": kind, "ts": start * 1e6, "dur": duration * 1e6,
                       "args": {"sequences": int(batch), "tokens": int(tokens), "kv_blocks": int(blocks)}})
        events.append({"ph": "C", "pid": 0, "name": f"running batch{of}", "ts": start * 1e6,
                       "args": {"sequences": int(batch)}})
        events.append({"ph": "C", "pid": 0, "name": f"KV blocks{of}", "ts": start * 1e6,
                       "args": {"used": int(blocks)}})
    records = result.records
    for index, (arrival, first, finish) in enumerate(zip(records.arrival_s.tolist(), records.first_token_s.tolist(),
                                                         records.finish_s.tolist(), strict=True)):
        span = {"pid": 0, "cat": "request", "name": f"request {index}", "id": index}
        events.append(span | {"ph": "b", "ts": arrival * 1e6})
        events.append(span | {"ph": "n", "ts": first * 1e6, "args": {"first token": True}})
        events.append(span | {"ph": "e", "ts": finish * 1e6})
    return events


def write_chrome_trace(result: SimResult | ServingResult, device_name: str, path: str | Path, *,
                       tables: PassTables | None = None, device: Any = None, execution: str = "eager",
                       workload: BatchWorkload | None = None) -> None:
    """Kernels of a static batch (with their class, FLOPs, bytes and bound given the tables and device: see
    chrome_trace_events), or iterations and requests of a serving run."""
    events = (serving_trace_events(result, device_name) if isinstance(result, ServingResult)
              else chrome_trace_events(result, device_name, tables=tables, device=device, execution=execution,
                                                   workload=workload))
    Path(path).write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ns"}))
