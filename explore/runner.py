"""Run a sweep: evaluate the points not yet in the results table, in parallel, writing each as it finishes."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explore.design_point import BREAKDOWN_COLUMNS, INPUT_COLUMNS, METRIC_COLUMNS, DesignPoint
from explore.evaluate import Evaluator
from explore.results import ResultsTable
from explore.sweep import Sweep

log = logging.getLogger(__name__)

# Points sharing a trace (model, batch, prompt) go to one task so each process traces it once;
# tasks are capped so results keep arriving during long sweeps.
TASK_POINTS = 256


def columns_for(sweep: Sweep) -> list[str]:
    extra = ["meets_constraints"] if sweep.spec.constraints else []
    overrides = [f"device.{path}" for path in sweep.override_values()]
    return list(INPUT_COLUMNS) + overrides + list(METRIC_COLUMNS) + extra + list(BREAKDOWN_COLUMNS)


def _tasks(points: list[DesignPoint]) -> list[list[DesignPoint]]:
    groups: dict[tuple, list[DesignPoint]] = defaultdict(list)
    for p in points:
        groups[(p.model, p.batch, p.prompt)].append(p)
    return [group[i:i + TASK_POINTS] for group in groups.values() for i in range(0, len(group), TASK_POINTS)]


# One Evaluator per worker process, made by the pool initializer: its caches live as long as the process.
_worker_evaluator: Evaluator | None = None


def _init_worker() -> None:
    global _worker_evaluator
    _worker_evaluator = Evaluator()


def _evaluate_task(points: list[DesignPoint], evaluator: Evaluator | None = None) -> list[dict[str, Any]]:
    evaluator = evaluator or _worker_evaluator
    return [p.row() | evaluator.evaluate(p).metrics for p in points]


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    feasible: int
    best_tokens_per_s: float
    elapsed_s: float


def _results(tasks, workers: int, evaluator: Evaluator) -> Iterator[list[dict[str, Any]]]:
    if workers <= 1:
        for task in tasks:
            yield _evaluate_task(task, evaluator)
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
        futures = [pool.submit(_evaluate_task, task) for task in tasks]
        for future in as_completed(futures):
            yield future.result()


def run_sweep(sweep: Sweep, out_dir: Path, *, workers: int = 1, evaluator: Evaluator | None = None,
              on_progress: Callable[[Progress], None] | None = None) -> list[dict[str, Any]]:
    """Evaluate every point of the sweep not already in out_dir/results.csv; return all rows in sweep order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = ResultsTable(out_dir / "results.csv", columns_for(sweep))
    finished = table.load()
    points = sweep.points()
    todo = [p for p in points if p.point_id not in finished]
    log.info("%d design points, %d already finished, %d to evaluate", len(points), len(points) - len(todo), len(todo))
    constraints = sweep.constraints()
    rows: dict[str, dict[str, Any]] = dict(finished)
    start, done, feasible, best = time.monotonic(), len(points) - len(todo), 0, float("nan")
    for batch in _results(_tasks(todo), workers, evaluator or Evaluator()):
        for row in batch:
            if constraints:
                row["meets_constraints"] = bool(row["fits_in_memory"]) and all(c.holds(row) for c in constraints)
            if row["fits_in_memory"]:
                feasible += 1
                best = row["tokens_per_s"] if not best >= row["tokens_per_s"] else best
            rows[row["point_id"]] = row
        table.append(batch)
        done += len(batch)
        if on_progress:
            on_progress(Progress(done, len(points), feasible, best, time.monotonic() - start))
    return [rows[p.point_id] for p in points]
