"""Design points evaluated in blocks: points that share their kernel tables priced together, numpy over
(points x kernels).

A block is the static-batch points of one model, batch, prompt, output, format, execution, device preset,
calibration choice and generic knobs (with any what-if values they share) that differ only in knobs their
device family applies per kernel (hw_models/device_block.py): one device model holds every point's values,
one call per pass prices every point (sim/block.py), and the metrics come out as columns. A point with such
a knob takes this path even alone (a resumed sweep may evaluate one point of a block), so its numbers never
depend on its neighbours.
Points without one, serving points, systems of several devices and devices that interleave decode
sub-batches are evaluated by Evaluator.evaluate; sim/analytic.py is the reference the block path is held
equal to (tests/explore/test_blocks.py).

Sweeps hand points over as point blocks (explore/point_blocks.py: points differing only in what-if values).
block_key is the one place that decides which points go alone (return None) and which share a block; it is
asked once per point block, of its first point, so it may read anything of a point but its varying what-if
values. Metrics of a point's inputs alone (Metric.of_point: its model and format) are computed once per point
block too.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from explore.columns import Columns
from explore.design_point import DesignPoint
from explore.evaluate import Evaluator, hardware_metrics
from explore.metrics import TIME_CLASSES, derived_metrics, point_metrics
from explore.point_blocks import PointBlock, blocks_of
from hw_models.device_block import block_device, check_knob_values, varies_in_block
from sim.block import evaluate_block, supports_block
from sim.memory import infeasible_reason
from sim.result import RESULT_METRICS
from sim.workload import BatchWorkload


def block_group(point: DesignPoint) -> tuple:
    """What the points of one block have in common besides their what-if values (no device model needed: task
    order keeps such points side by side)."""
    return (point.model, point.device, point.use_calibration, point.batch, point.prompt, point.output,
            point.numeric_format, point.execution, point.knobs, point.tp, point.pp,
            tuple(path for path, _ in point.overrides))


def block_key(point: DesignPoint, evaluator: Evaluator) -> tuple | None:
    """What the points of one block share (None: the point is evaluated alone): its block_group and the what-if
    values its device family cannot vary within a block."""
    if (point.serving is not None or point.tp > 1 or point.pp > 1 or point.knob("spec_draft")
            or point.knob("offload") != "none"):
        return None  # speculative decoding and offloading are priced by the reference path alone (sim/speculative.py,
        # sim/offload.py)
    model_class = type(evaluator.device(point.device, calibrated=point.use_calibration))
    varying = tuple(path for path, _ in point.overrides if varies_in_block(model_class, path))
    if not varying:
        return None  # no knob a block could vary: the point is alone whatever the sweep, so the reference prices it
    fixed = tuple((path, value) for path, value in point.overrides if path not in varying)
    return block_group(point), fixed, varying


def evaluate_points(evaluator: Evaluator, points: Sequence[DesignPoint]) -> list[dict[str, Any]]:
    """The metrics of each point, in order: blocks where points share a block key, each other point alone."""
    given = points if isinstance(points, list | tuple) else None  # the points themselves, where held
    if given is not None and len(given) == 1 and evaluator.blocks and block_key(given[0], evaluator) is None:
        return [evaluator.evaluate(given[0]).metrics]  # one point the reference prices: no block to form
    return [row for part in _evaluated(evaluator, blocks_of(points), given)
            for row in (part.rows() if isinstance(part, Columns) else part)]


def evaluate_blocks(evaluator: Evaluator, blocks: Sequence[PointBlock]) -> list[Columns]:
    """The metrics of each point block's points (explore/point_blocks.py), as columns: the points of one block key
    priced together (across point blocks, or a part of one), each other point alone."""
    return [part if isinstance(part, Columns) else Columns.from_rows(part) for part in _evaluated(evaluator, blocks)]


def _evaluated(evaluator: Evaluator, blocks: Sequence[PointBlock],
               points: Sequence[DesignPoint] | None = None) -> list[Columns | list[dict[str, Any]]]:
    """evaluate_blocks' result, where a block of points evaluated alone may be their rows as they are (each
    Evaluator.evaluate's metrics: point metrics included). `points`: the blocks' points in order, where the caller
    holds them (they are evaluated as given instead of rebuilt from their block)."""
    starts = [0]
    for block in blocks:
        starts.append(starts[-1] + block.size)

    def point(b: int, i: int) -> DesignPoint:
        if points is not None:
            return points[starts[b] + i]
        return blocks[b].first if i == 0 else blocks[b].point(i)

    if not evaluator.blocks:
        return [[evaluator.evaluate(point(b, i)).metrics for i in range(block.size)] for b, block in enumerate(blocks)]
    groups: dict[tuple, list[tuple[int, Sequence[int]]]] = defaultdict(list)  # key -> (block, its points' indices)
    alone: list[tuple[int, int]] = []
    for b, block in enumerate(blocks):
        for key, indices in _keyed(evaluator, block, point(b, 0)):
            if key is None:
                alone.extend((b, i) for i in indices)
            else:
                groups[key].append((b, indices))
    whole: dict[int, Columns] = {}  # blocks priced whole, in order, by one block key
    rows: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)  # the others: each point's metrics
    for key, members in groups.items():
        b, indices = members[0]
        first = blocks[b].first if indices[0] == 0 else blocks[b].point(indices[0])
        knobs = {path: _gathered(blocks, members, path) for path in key[-1]}
        priced = _evaluate_block(evaluator, first, knobs, fixed=key[-2])
        if priced is None:
            alone.extend((b, i) for b, indices in members for i in indices)
        elif len(members) == 1 and list(indices) == list(range(blocks[b].size)):
            whole[b] = priced
        else:
            offset = 0
            for b, indices in members:
                for i in indices:
                    rows[b][i] = priced.row(offset)
                    offset += 1
    for b, i in alone:  # Evaluator.evaluate adds the point metrics itself
        rows[b][i] = evaluator.evaluate(point(b, i)).metrics
    alone_count = dict.fromkeys(range(len(blocks)), 0)
    for b, _ in alone:
        alone_count[b] += 1
    out = []
    for b, block in enumerate(blocks):
        if b in whole:
            columns = whole[b]
            columns.constants.update(point_metrics(block.first))
            columns.names = (*columns.names, *(n for n in columns.constants if n not in columns.names))
        else:
            # Point metrics (Metric.of_point) read no what-if value: those of the block's first point are every point's.
            # Rows of points evaluated alone have them already: a block of such rows only is taken as it is.
            if alone_count[b] == block.size:
                columns = [rows[b][i] for i in range(block.size)]
            else:
                shared = point_metrics(block.first)
                columns = Columns.from_rows([rows[b][i] | {k: v for k, v in shared.items() if k not in rows[b][i]}
                                             for i in range(block.size)])
        out.append(columns)
    return out


def _keyed(evaluator: Evaluator, block: PointBlock, first: DesignPoint) -> Iterator[tuple[tuple | None, Sequence[int]]]:
    """The block key of each part of a point block (block_key: None where its points are evaluated alone) with the
    indices of that part's points: one part unless an override a block cannot vary takes several values. `first`:
    the block's first point."""
    key = block_key(first, evaluator)  # the same for every point but for its fixed what-if values
    if key is None:
        yield None, range(block.size)
        return
    fixed = [column for path, column in zip(block.paths, block.values, strict=True) if path not in key[-1]]
    if all(column.count(column[0]) == len(column) for column in fixed):
        yield key, range(block.size)
        return
    parts: dict[tuple, list[int]] = defaultdict(list)
    for i, values in enumerate(zip(*fixed, strict=True)):
        parts[values].append(i)
    for indices in parts.values():
        yield block_key(block.point(indices[0]), evaluator), indices


def _gathered(blocks: Sequence[PointBlock], members: list[tuple[int, Sequence[int]]], path: str) -> list[Any]:
    """The values of override `path` at the members' points, in order."""
    values: list[Any] = []
    for b, indices in members:
        column = blocks[b].values[blocks[b].paths.index(path)]
        values.extend(column if len(indices) == len(column) and indices == range(len(column))
                      else (column[i] for i in indices))
    return values


def _evaluate_block(evaluator: Evaluator, first: DesignPoint, knobs: dict[str, list[Any]],
                    fixed: tuple) -> Columns | None:
    """The metrics of the points of one block as columns (None where the block path does not apply): `first` is
    one of them, knobs[path][i] the value of what-if `path` at point i."""
    check_knob_values(first.device, knobs, fixed=dict(fixed), calibrated=first.use_calibration,
                      checked=evaluator.checked_knobs)
    base = evaluator.device(first.device, fixed, first.use_calibration)
    device = block_device(base, knobs)
    tables = evaluator.point_tables(first, device)
    if not supports_block(device, tables):
        return None
    count = len(next(iter(knobs.values())))
    workload = BatchWorkload(batch=first.batch, prompt_len=first.prompt, output_len=first.output)
    memory = evaluator.batch_memory(first, device, workload, tables.attention_window)
    capacity_B = np.broadcast_to(device.memory_bytes, (count, 1))[:, 0]
    reasons = {c: infeasible_reason(memory, c, device.devices) for c in np.unique(capacity_B).tolist()}
    reason = [reasons[c] for c in capacity_B.tolist()]
    fits = np.array([not r for r in reason])
    result = evaluate_block(device, count, tables, workload, memory, first.execution)
    metrics = result.metrics()
    arrays: dict[str, Any] = {name: np.where(fits, values, math.nan) for name, values in metrics.items()}
    arrays["peak_memory_B"] = metrics["peak_memory_B"]  # reported for points that do not fit too
    for label in TIME_CLASSES:
        values = result.time_by_class_s.get(label, np.zeros(count))
        arrays[f"time_{label}_s"] = np.where(fits, values, math.nan)
    arrays.update(fits_in_memory=fits, infeasible_reason=reason, offloaded_B=np.zeros(count))  # offload: block_key
    shared: dict[str, Any] = {}
    for name, value in hardware_metrics(device, arrays["tokens_per_s"]).items():
        if np.ndim(value):
            arrays[name] = value
        else:
            shared[name] = value
    columns = Columns(size=count, names=(*RESULT_METRICS, *(n for n in arrays if n not in RESULT_METRICS), *shared),
                      arrays=arrays, constants=shared)
    _add_derived(columns)
    return columns


def _add_derived(columns: Columns) -> None:
    """Every derived metric (explore/metrics.py Metric.derive) added at every row, as add_derived adds it to one
    evaluation's metrics: in registry order, each reading the row with those above it, NaN where it fails."""
    derived = derived_metrics()
    if not derived:
        return
    row = _Row(columns)
    for m in derived:
        values = []
        for i in range(columns.size):
            row.i = i
            try:
                values.append(float(m.derive(row)))
            except (KeyError, TypeError, ValueError, ZeroDivisionError):
                values.append(math.nan)
        columns.set(m.name, values)
        row.lists[m.name] = values


class _Row(Mapping):
    """Row `i` of a batch of columns read as a mapping (each column made a list when first read)."""

    def __init__(self, columns: Columns):
        self.columns, self.lists, self.i = columns, {}, 0

    def __getitem__(self, name: str) -> Any:
        values = self.lists.get(name)
        if values is None:
            if name not in self.columns:
                raise KeyError(name)
            values = self.lists[name] = self.columns.values(name)
        return values[self.i]

    def __iter__(self) -> Iterator[str]:
        return iter(self.columns.names)

    def __len__(self) -> int:
        return len(self.columns.names)
