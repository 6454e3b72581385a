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
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from explore.design_point import DesignPoint
from explore.evaluate import Evaluator, hardware_metrics
from explore.metrics import KERNEL_CLASSES, add_derived
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
    if point.serving is not None or point.tp > 1 or point.pp > 1:
        return None
    model_class = type(evaluator.device(point.device, calibrated=point.use_calibration))
    varying = tuple(path for path, _ in point.overrides if varies_in_block(model_class, path))
    if not varying:
        return None  # no knob a block could vary: the point is alone whatever the sweep, so the reference prices it
    fixed = tuple((path, value) for path, value in point.overrides if path not in varying)
    return block_group(point), fixed, varying


def evaluate_points(evaluator: Evaluator, points: list[DesignPoint]) -> list[dict[str, Any]]:
    """The metrics of each point, in order: blocks where points share a block key, each other point alone."""
    if not evaluator.blocks:
        return [evaluator.evaluate(point).metrics for point in points]
    blocks: dict[tuple, list[int]] = defaultdict(list)
    alone: list[int] = []
    for i, point in enumerate(points):
        key = block_key(point, evaluator)
        (alone if key is None else blocks[key]).append(i)
    metrics: list[dict[str, Any] | None] = [None] * len(points)
    for key, members in blocks.items():
        block = _evaluate_block(evaluator, [points[i] for i in members], varying=key[-1], fixed=key[-2])
        if block is None:
            alone.extend(members)
            continue
        for i, row in zip(members, block, strict=True):
            metrics[i] = row
    for i in alone:
        metrics[i] = evaluator.evaluate(points[i]).metrics
    return metrics


def _evaluate_block(evaluator: Evaluator, points: list[DesignPoint], *, varying: tuple[str, ...],
                    fixed: tuple) -> list[dict[str, Any]] | None:
    """The metrics of the points of one block (None where the block path does not apply)."""
    first = points[0]
    knobs = {path: [dict(p.overrides)[path] for p in points] for path in varying}
    check_knob_values(first.device, knobs, fixed=dict(fixed), calibrated=first.use_calibration,
                      checked=evaluator.checked_knobs)
    base = evaluator.device(first.device, fixed, first.use_calibration)
    device = block_device(base, knobs)
    tables = evaluator.point_tables(first, device)
    if not supports_block(device, tables):
        return None
    count = len(points)
    workload = BatchWorkload(batch=first.batch, prompt_len=first.prompt, output_len=first.output)
    memory = evaluator.batch_memory(first, device, workload)
    capacity_B = np.broadcast_to(device.memory_bytes, (count, 1))[:, 0]
    reasons = {c: infeasible_reason(memory, c) for c in np.unique(capacity_B).tolist()}
    reason = [reasons[c] for c in capacity_B.tolist()]
    fits = np.array([not r for r in reason])
    result = evaluate_block(device, count, tables, workload, memory, first.execution)
    metrics = result.metrics()
    columns = {name: np.where(fits, values, math.nan) for name, values in metrics.items()}
    columns["peak_memory_B"] = metrics["peak_memory_B"]  # reported for points that do not fit too
    for label in (*KERNEL_CLASSES, "communication"):
        values = result.time_by_class_s.get(label, np.zeros(count))
        columns[f"time_{label}_s"] = np.where(fits, values, math.nan)
    shared: dict[str, Any] = {}
    for name, value in hardware_metrics(device, columns["tokens_per_s"]).items():
        if np.ndim(value):
            columns[name] = value
        else:
            shared[name] = value
    names = [*RESULT_METRICS, *(n for n in columns if n not in RESULT_METRICS)]
    values = zip(*(columns[name].tolist() for name in names), strict=True)
    return [add_derived(dict(zip(names, row, strict=True)) | shared | {"fits_in_memory": ok, "infeasible_reason": why})
            for row, ok, why in zip(values, fits.tolist(), reason, strict=True)]
