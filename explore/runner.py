"""Run a sweep: evaluate the points not yet in the results store, in parallel, writing each batch as it finishes.

Points are evaluated in this process (one worker), on a local process pool (--workers N), or on a Dask
cluster (--executor dask: a LocalCluster of N worker processes, or the scheduler at --scheduler ADDR).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explore.blocks import block_group, evaluate_points
from explore.design_point import DesignPoint
from explore.evaluate import Evaluator
from explore.knobs import input_columns
from explore.metrics import result_columns
from explore.results import ResultsStore, folder_lock
from explore.rows import count_label, is_feasible, normalize_row
from explore.sweep import Sweep
from workloads.errors import InputError

log = logging.getLogger(__name__)

# Points sharing a trace (model, batch, prompt) go to one task so each process traces it once, ordered so
# that points a block prices together (explore/blocks.py) sit side by side; a task ends at a block's end once
# it holds TASK_POINTS (a block of static what-ifs prices thousands of points in a few milliseconds), or at
# SERVING_TASK_POINTS serving points (each simulates its requests, about a second), so results keep arriving
# during long sweeps.
TASK_POINTS = 256
SERVING_TASK_POINTS = 16


def columns_for(sweep: Sweep) -> list[str]:
    """The results columns of a sweep: its knobs (explore/knobs.py), device and link fields, then its metrics
    (explore/metrics.py)."""
    serving, system = sweep.spec.serving is not None, sweep.spec.parallel is not None
    return (input_columns(system=system, serving=serving, set_knobs=sweep.set_knobs()) + sweep.override_columns()
            + result_columns(system=system, serving=serving, constraints=bool(sweep.spec.constraints)))


def _tasks(points: list[DesignPoint]) -> list[list[DesignPoint]]:
    groups: dict[tuple, list[DesignPoint]] = defaultdict(list)
    for p in points:
        groups[(p.model, p.batch, p.prompt, p.serving is not None)].append(p)
    tasks: list[list[DesignPoint]] = []
    for (*_, serving), group in groups.items():
        if serving:
            tasks.extend(group[i:i + SERVING_TASK_POINTS] for i in range(0, len(group), SERVING_TASK_POINTS))
            continue
        # Blocks in the order their first points were asked for: a grid's blocks are contiguous already (device
        # what-ifs vary fastest), so its rows are stored in the asked order and need no reordering on export.
        blocks: dict[tuple, list[DesignPoint]] = defaultdict(list)
        for p in group:
            blocks[block_group(p)].append(p)
        task: list[DesignPoint] = []
        for block in blocks.values():
            if len(task) >= TASK_POINTS:
                tasks.append(task)
                task = []
            task.extend(block)
        tasks.append(task)
    return tasks


# One Evaluator per worker thread (a pool process or a Dask worker thread), made on its first task: its
# caches live as long as the worker.
_worker = threading.local()


def _worker_evaluator() -> Evaluator:
    if getattr(_worker, "evaluator", None) is None:
        _worker.evaluator = Evaluator()
    return _worker.evaluator


def _evaluate_task(points: list[DesignPoint], evaluator: Evaluator | None = None) -> list[dict[str, Any]]:
    evaluator = evaluator or _worker_evaluator()
    return [p.row() | metrics for p, metrics in zip(points, evaluate_points(evaluator, points), strict=True)]


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    feasible: int
    best_tokens_per_s: float
    elapsed_s: float


class DaskExecutor:
    """Tasks on a Dask cluster: the scheduler at `scheduler`, or a LocalCluster of `workers` processes."""

    def __init__(self, workers: int, scheduler: str | None = None):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise InputError("--executor dask: Dask is not installed (pip install 'llm-codesign[dask]')") from None
        self.cluster = None
        try:
            if scheduler:
                self.client = Client(scheduler)  # waits distributed.comm.timeouts.connect (30 s)
            else:
                self.cluster = LocalCluster(n_workers=workers, processes=True, threads_per_worker=1,
                                            dashboard_address=None)
                self.client = Client(self.cluster)
        except (OSError, TimeoutError) as err:
            self.shutdown()
            raise InputError(f"--scheduler: cannot reach {scheduler!r} ({err}); allowed: the address of a "
                             f"running Dask scheduler, e.g. tcp://host:8786") from None

    def completed(self, tasks: list[list[DesignPoint]]) -> Iterator[list[dict[str, Any]]]:
        from distributed import as_completed as dask_completed

        # pure=False: every task is run, even two with equal arguments (Dask would otherwise share one key).
        futures = [self.client.submit(_evaluate_task, task, pure=False) for task in tasks]
        for future in dask_completed(futures):
            yield future.result()

    def shutdown(self) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


# How often a worker without prctl (not Linux) checks that its parent still lives.
PARENT_POLL_S = 0.5
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent_pid: int) -> None:
    """End this worker when the process that started it ends, however it ends (kill -9 included).

    A killed parent cannot shut its pool down, and a worker blocked on the task queue never learns of it
    (every worker holds that pipe open): it would live on, reparented to init, holding hundreds of MB. On Linux
    the kernel sends SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG): nothing in the worker has to run,
    so it works even while a task holds the GIL in C code. The signal follows the *thread* that forked the
    worker: ProcessPoolExecutor forks every worker in submit() (the sweep's thread, alive until the pool is
    shut down) or, to replace a crashed one, in its manager thread (alive as long as the pool). The parent may
    have died before the prctl: the pid check after it catches that. Elsewhere a daemon thread polls getppid().
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError, TypeError):  # no libc with prctl: not Linux
        armed = False
    if os.getppid() != parent_pid:
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="watch-parent").start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def _init_worker(parent_pid: int) -> None:
    """Workers die with the main process, and leave Ctrl-C to it: it stops the sweep with one line (each
    worker would print a traceback of its own)."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class PoolExecutor:
    """Tasks on a local ProcessPoolExecutor of `workers` processes."""

    def __init__(self, workers: int):
        self.pool = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(os.getpid(),))

    def completed(self, tasks: list[list[DesignPoint]]) -> Iterator[list[dict[str, Any]]]:
        futures = [self.pool.submit(_evaluate_task, task) for task in tasks]
        for future in as_completed(futures):
            yield future.result()

    def shutdown(self) -> None:
        self.pool.shutdown()


EXECUTORS = ("local", "dask")


def make_executor(executor: str, workers: int, scheduler: str | None = None) -> PoolExecutor | DaskExecutor | None:
    """The executor for `explore --executor`; None: evaluate in this process (local, one worker)."""
    if executor not in EXECUTORS:
        raise InputError(f"--executor: found {executor!r}, allowed: {', '.join(EXECUTORS)}")
    if scheduler and executor != "dask":
        raise InputError(f"--scheduler: found {scheduler!r} with --executor {executor}; allowed only with "
                         f"--executor dask")
    if executor == "dask":
        return DaskExecutor(workers, scheduler)
    return PoolExecutor(workers) if workers > 1 else None


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which a container or taskset narrows), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def capped_workers(workers: int, points: int) -> int:
    """--workers, at most one per design point and per core, with a one-line notice when capped: a worker
    more than the points has nothing to do, one more than the cores only adds memory (each holds its traces)."""
    cap = max(1, min(points, usable_cores()))
    if workers > cap:
        log.warning("--workers %d: capped to %d (%s, %d usable CPU cores)", workers, cap,
                    count_label(points, "design point"), usable_cores())
        return cap
    return workers


def _results(tasks, pool, evaluator: Evaluator) -> Iterator[list[dict[str, Any]]]:
    """Rows of each task as it finishes: in this process, or on the executor's workers."""
    if pool is None:
        for task in tasks:
            yield _evaluate_task(task, evaluator)
        return
    yield from pool.completed(tasks)


class _Run:
    """State of one sweep run: stored rows, the pool, progress; `evaluate` is what strategies call."""

    def __init__(self, sweep: Sweep, table: ResultsStore, pool, evaluator: Evaluator, on_progress, total: int):
        self.table, self.pool, self.evaluator, self.on_progress = table, pool, evaluator, on_progress
        self.constraints = sweep.constraints()
        self.stored = table.load()
        self.asked: dict[str, None] = {}  # point ids the strategy asked for, in first-asked order
        self.rows: dict[str, dict[str, Any]] = {}  # their rows, once known
        self.total, self.feasible, self.best = total, 0, float("nan")
        self.start = time.monotonic()

    def evaluate(self, points: list[DesignPoint]) -> list[dict[str, Any]]:
        """Rows of the points, in order: stored rows as they are, new points evaluated and stored."""
        for p in points:
            self.asked.setdefault(p.point_id)
        todo = list({p.point_id: p for p in points if p.point_id not in self.stored}.values())
        for p in points:
            if p.point_id in self.stored and p.point_id not in self.rows:
                self._count(self.stored[p.point_id])
        for batch in _results(_tasks(todo), self.pool, self.evaluator):
            for row in batch:
                if self.constraints:
                    row["meets_constraints"] = bool(row["fits_in_memory"]) and all(
                        c.holds(row) for c in self.constraints)
                self.stored[row["point_id"]] = row
                self._count(row)
            self.table.append(batch)
            if self.on_progress:
                self.on_progress(Progress(len(self.rows), self.total, self.feasible, self.best,
                                          time.monotonic() - self.start))
        return [self.stored[p.point_id] for p in points]

    def _count(self, row: dict[str, Any]) -> None:
        self.rows[row["point_id"]] = row
        # Rows imported from an old results.csv hold strings; evaluated rows are typed already.
        if is_feasible(normalize_row(row) if isinstance(row.get("tokens_per_s"), str) else row):
            self.feasible += 1
            value = float(row["tokens_per_s"])
            self.best = value if not self.best >= value else self.best


def run_sweep(sweep: Sweep, out_dir: Path, *, workers: int = 1, evaluator: Evaluator | None = None,
              on_progress: Callable[[Progress], None] | None = None, executor: str = "local",
              scheduler: str | None = None) -> list[dict[str, Any]]:
    """Run the sweep's search strategy, evaluating only points not already in out_dir/results.sqlite.

    At the end results.csv (and results.parquet with pyarrow) is rewritten from the database, the points
    the strategy asked for first, in that order. Returns the rows the strategy asked for (for a grid,
    every point in sweep order).
    """
    from explore.search import STRATEGIES

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    search = sweep.spec.search
    total = sweep.visits()
    with folder_lock(out_dir), ResultsStore(out_dir, columns_for(sweep), sweep.name) as table:
        run = _Run(sweep, table, None, evaluator or Evaluator(), on_progress, total)
        log.info("%d design points to visit, %d rows already stored", total, len(run.stored))
        if scheduler is None:  # a Dask scheduler's cluster has the workers it has
            workers = capped_workers(workers, total)
        run.pool = make_executor(executor, workers, scheduler)
        try:
            STRATEGIES[search.strategy](sweep, run.evaluate)
        finally:
            if run.pool is not None:
                run.pool.shutdown()
        table.export(run.asked, run.stored)
    return [run.stored[point_id] for point_id in run.asked]
