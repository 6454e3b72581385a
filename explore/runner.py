"""Run a sweep: evaluate the points not yet in the results store, in parallel, writing each batch as it finishes.

Points travel as blocks (explore/point_blocks.py: a sweep's points are its blocks already) and come back as
columns (explore/columns.py), one batch per point block, stored in bulk (explore/results.py).

Points are evaluated in this process (one worker), on a local process pool (--workers N), or on a Dask
cluster (--executor dask: a LocalCluster of N worker processes, or the scheduler at --scheduler ADDR).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explore.blocks import block_group, evaluate_blocks
from explore.columns import Columns
from explore.design_point import DesignPoint
from explore.evaluate import Evaluator
from explore.knobs import input_columns
from explore.metrics import result_columns
from explore.point_blocks import PointBlock, blocks_of
from explore.rerun import stored_ids, stored_of
from explore.results import ResultsStore, folder_lock
from explore.rows import count_label, is_feasible, normalize_row
from explore.sweep import Sweep
from workloads.errors import InputError

log = logging.getLogger(__name__)

# Points sharing a trace (model, batch, prompt) go to one task so each process traces it once, ordered so
# that points a block prices together (explore/blocks.py) sit side by side; a task ends at a block's end once
# it holds TASK_POINTS (a block of static what-ifs prices thousands of points in a few milliseconds). A serving
# point is a task of its own: each simulates its requests (a second, or minutes for a capacity search) and is
# stored as it finishes, so a killed run loses none that finished (a worker keeps its traces between tasks).
TASK_POINTS = 256
SERVING_TASK_POINTS = 1


def columns_for(sweep: Sweep) -> list[str]:
    """The results columns of a sweep: its knobs (explore/knobs.py), device and link fields, then its metrics
    (explore/metrics.py)."""
    serving, system = sweep.spec.serving is not None, sweep.spec.parallel is not None
    return (input_columns(system=system, serving=serving, set_knobs=sweep.column_knobs()) + sweep.override_columns()
            + result_columns(system=system, serving=serving, constraints=bool(sweep.spec.constraints),
                             slowdown=sweep.limits_slowdown(), urgent=sweep.prioritized(),
                             capacity=serving and sweep.spec.serving.capacity is not None,
                             autoscale=sweep.autoscales(), rejection=sweep.sheds()))


def _tasks(blocks: list[PointBlock]) -> list[list[PointBlock]]:
    """Point blocks grouped into tasks: those sharing a trace together, a block's points never split (but serving
    points, SERVING_TASK_POINTS to a task)."""
    groups: dict[tuple, list[PointBlock]] = defaultdict(list)
    for block in blocks:
        p = block.base
        groups[(p.model, p.batch, p.prompt, p.serving is not None)].append(block)
    tasks: list[list[PointBlock]] = []
    for (*_, serving), group in groups.items():
        if serving:
            tasks.extend(_chunks(group, SERVING_TASK_POINTS))
            continue
        # Blocks in the order their first points were asked for: a grid's blocks are contiguous already (device
        # what-ifs vary fastest), so its rows are stored in the asked order and need no reordering on export.
        together: dict[tuple, list[PointBlock]] = defaultdict(list)
        for block in group:
            together[block_group(block.first)].append(block)
        task: list[PointBlock] = []
        size = 0
        for same in together.values():
            if size >= TASK_POINTS:
                tasks.append(task)
                task, size = [], 0
            task.extend(same)
            size += sum(block.size for block in same)
        tasks.append(task)
    return tasks


def _chunks(blocks: list[PointBlock], points: int) -> Iterator[list[PointBlock]]:
    """The blocks' points in tasks of `points` points (the last one fewer), in order."""
    task, size = [], 0
    for block in blocks:
        start = 0
        while start < block.size:
            part = block if start == 0 and block.size <= points - size else block.take(
                range(start, min(block.size, start + points - size)))
            task.append(part)
            size += part.size
            start += part.size
            if size == points:
                yield task
                task, size = [], 0
    if task:
        yield task


# One Evaluator per worker thread (a pool process or a Dask worker thread), made on its first task: its
# caches live as long as the worker.
_worker = threading.local()


def _worker_evaluator() -> Evaluator:
    if getattr(_worker, "evaluator", None) is None:
        _worker.evaluator = Evaluator()
    return _worker.evaluator


def _evaluate_task(blocks: list[PointBlock], evaluator: Evaluator | None = None) -> list[Columns]:
    """The results rows of a task's points, a batch of columns per point block: inputs, then metrics."""
    evaluator = evaluator or _worker_evaluator()
    return [block.input_columns().merged(metrics)
            for block, metrics in zip(blocks, evaluate_blocks(evaluator, blocks), strict=True)]


@dataclass(frozen=True)
class Progress:
    done: int  # points the strategy has asked for with a row: stored before this run, or evaluated in it
    total: int
    feasible: int
    best_tokens_per_s: float
    elapsed_s: float
    evaluated: int  # of `done`, the points evaluated in this run (stored ones cost no time)
    finished: bool = False  # the strategy has stopped (short of `total` where it ran out of new points)

    @property
    def eta_s(self) -> float:
        """Seconds left at this run's rate of evaluated points (NaN before one is); rows stored before the run
        take none of the elapsed time, so counting them would promise a resumed run's end far too soon."""
        return (self.total - self.done) * self.elapsed_s / self.evaluated if self.evaluated else math.nan


DASK_LOGGERS = ("distributed", "bokeh", "tornado", "asyncio")


class DaskExecutor:
    """Tasks on a Dask cluster: the scheduler at `scheduler`, or a LocalCluster of `workers` processes."""

    def __init__(self, workers: int, scheduler: str | None = None):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise InputError("--executor dask: Dask is not installed (pip install 'llm-codesign[dask]')") from None
        self.cluster = None
        # Dask logs each worker, connection and plugin at INFO (some 35 lines a run): its warnings are enough here.
        # The levels this process had come back at shutdown.
        self.log_levels = {name: logging.getLogger(name).level for name in DASK_LOGGERS}
        for name in DASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            if scheduler:
                self.client = Client(scheduler)  # waits distributed.comm.timeouts.connect (30 s)
            else:
                # Its workers log at CRITICAL only: a task's own error reaches this process as the task's exception,
                # and a cluster closed early (Ctrl-C) logs each cancelled task's traceback at ERROR.
                self.cluster = LocalCluster(n_workers=workers, processes=True, threads_per_worker=1,
                                            dashboard_address=None, silence_logs=logging.CRITICAL)
                self.client = Client(self.cluster)
        except (OSError, TimeoutError) as err:
            self.shutdown()
            raise InputError(f"--scheduler: cannot reach {scheduler!r} ({err}); allowed: the address of a "
                             f"running Dask scheduler, e.g. tcp://host:8786") from None

    def completed(self, tasks: list[list[PointBlock]]) -> Iterator[list[Columns]]:
        from distributed import as_completed as dask_completed

        # pure=False: every task is run, even two with equal arguments (Dask would otherwise share one key).
        futures = [self.client.submit(_evaluate_task, task, pure=False) for task in tasks]
        for future in dask_completed(futures):
            yield future.result()

    def shutdown(self, stop: bool = False) -> None:
        """Close the client and any cluster started for the run (`stop` or not: the scheduler forgets tasks whose
        futures no client holds)."""
        # Closing a cluster whose tasks still run (a Ctrl-C) logs every cancelled connection: nothing to act on.
        for name in DASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)
        if getattr(self, "client", None) is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        for name, level in self.log_levels.items():
            logging.getLogger(name).setLevel(level)


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

    def completed(self, tasks: list[list[PointBlock]]) -> Iterator[list[Columns]]:
        futures = [self.pool.submit(_evaluate_task, task) for task in tasks]
        for future in as_completed(futures):
            yield future.result()

    def shutdown(self, stop: bool = False) -> None:
        """Wait for the workers to end; `stop`: the run is ending early (Ctrl-C, an error), so queued tasks are
        dropped and running ones ended now. A plain shutdown would first run every queued task, whose rows nobody
        stores any more (a Ctrl-C 3 rows into a 200-task sweep ran the other 197 for three minutes), while the
        workers kept the folder's lock, refusing the rerun that would resume."""
        if not stop:
            self.pool.shutdown()
            return
        workers = list((getattr(self.pool, "_processes", None) or {}).values())  # pid -> Process, while it runs
        self.pool.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.terminate()  # SIGTERM: workers ignore only SIGINT (_init_worker)
        for worker in workers:
            worker.join()


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


def _results(tasks, pool, evaluator: Evaluator) -> Iterator[list[Columns]]:
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
        self.constraints, self.grid_size = sweep.constraints(), sweep.size()
        self.stored = table.load()
        self._judge_stored()
        self.asked: dict[str, None] = {}  # point ids the strategy asked for, in first-asked order
        self.rows: dict[str, dict[str, Any]] = {}  # their rows, once known
        self.total, self.feasible, self.best, self.evaluated = total, 0, float("nan"), 0
        self.start = time.monotonic()

    def evaluate(self, points: Sequence[DesignPoint]) -> list[dict[str, Any]]:
        """Rows of the points, in order: stored rows as they are, new points evaluated and stored."""
        blocks = blocks_of(points)  # a sweep's PointSet is blocks already
        ids = [point_id for block in blocks for point_id in block.point_ids]
        self.asked.update(dict.fromkeys(ids))  # keys already asked keep their place
        stored, counted = self.stored, self.rows
        todo, seen = [], set()
        for block in blocks:
            new = []
            for i, point_id in enumerate(block.point_ids):  # a point asked twice, in a block or across, runs once
                if point_id not in stored and point_id not in seen:
                    seen.add(point_id)
                    new.append(i)
            if new:
                todo.append(block if len(new) == block.size else block.take(new))
        for point_id in ids:
            if point_id in stored and point_id not in counted:
                self._count(stored[point_id])
        for batch in _results(_tasks(todo), self.pool, self.evaluator):
            for columns in batch:
                if self.constraints:
                    columns.set("meets_constraints", self._meets(columns))
            self.table.append(batch)
            for columns in batch:
                # A new row holds the results columns alone, as a stored one reads back: an evaluation also carries
                # every knob at its default (tp, weight_type, ...), and a resumed run's report mixing the two saw
                # each such knob vary between its default and unset.
                rows = {point_id: {name: row.get(name) for name in self.table.columns}
                        for point_id, row in zip(columns.column("point_id"), columns.rows(), strict=True)}
                stored.update(rows)
                counted.update(rows)
                self.evaluated += len(rows)
                self._count_feasible(columns)
            if self.on_progress:
                self.on_progress(Progress(len(self.rows), self.total, self.feasible, self.best,
                                          time.monotonic() - self.start, self.evaluated))
        return [stored[point_id] for point_id in ids]

    def finish(self, strategy: str) -> None:
        """The strategy has stopped: where it stopped short of the points it was to visit, a last progress report
        (the line ends) and a notice saying so."""
        if len(self.rows) >= self.total:
            return
        if self.on_progress:
            self.on_progress(Progress(len(self.rows), self.total, self.feasible, self.best,
                                      time.monotonic() - self.start, self.evaluated, finished=True))
        if strategy == "grid":  # every grid point is visited: the ones not counted are designs another point is
            log.warning("the grid's %d points are %s: the others evaluate one of them again (a setting that changes "
                        "nothing there; the sweep's notes say which)", self.total,
                        count_label(len(self.rows), "distinct design"))
            return
        if strategy == "random":  # it draws until the budget's designs are met: short of it, the grid holds no more
            log.warning("the random search stopped at %s of its budget of %d: the grid's %d points hold no other "
                        "design (the rest evaluate one of them again: a setting that changes nothing there)",
                        count_label(len(self.rows), "design point"), self.total, self.grid_size)
            return
        log.warning("the %s search stopped at %s of its budget of %d: its proposals kept repeating points it had "
                    "already visited (explore/search.py MAX_PROPOSALS_PER_POINT)", strategy,
                    count_label(len(self.rows), "design point"), self.total)

    def _judge_stored(self) -> None:
        """Judge the stored rows by this run's constraints: they may have changed since the rows were stored."""
        if not self.constraints:
            return
        changed = {}
        for point_id, row in self.stored.items():
            typed = normalize_row(row) if isinstance(row.get("fits_in_memory"), str) else row
            meets = bool(typed.get("fits_in_memory")) and not typed.get("infeasible_reason") and all(
                c.accepts(typed.get(c.metric, math.nan)) for c in self.constraints)
            if typed.get("meets_constraints") != meets:
                row["meets_constraints"] = changed[point_id] = meets
        self.table.update("meets_constraints", changed)

    def _meets(self, columns: Columns) -> list[bool]:
        """Whether each row fits and meets every constraint."""
        held = [columns.values("fits_in_memory"),
                [not reason for reason in (columns.column("infeasible_reason") if "infeasible_reason" in columns
                                           else [""] * columns.size)]]
        for c in self.constraints:
            values = columns.column(c.metric) if c.metric in columns else [math.nan] * columns.size
            held.append([c.accepts(v) for v in values])
        return [all(row) for row in zip(*held, strict=True)]

    def _count_feasible(self, columns: Columns) -> None:
        """Count the feasible rows of a batch just evaluated (is_feasible, over columns) and their best tokens/s."""
        def column(name: str, default: Any) -> Iterable[Any]:
            return columns.column(name) if name in columns else itertools.repeat(default, columns.size)

        tokens = [t for fits, why, t in zip(column("fits_in_memory", True), column("infeasible_reason", ""),
                                            column("tokens_per_s", math.nan), strict=True)
                  if fits and not why and math.isfinite(t)]
        self.feasible += len(tokens)
        if tokens:
            value = max(tokens)
            self.best = value if not self.best >= value else self.best

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
    with folder_lock(out_dir):
        # A grid whose every point is stored evaluates nothing: no worker or cluster is started for it (nor are its
        # workers capped, with a notice). Otherwise the executor comes before the store, so that one that fails to
        # start leaves no files.
        stored = stored_ids(out_dir) if search.strategy == "grid" else frozenset()
        ids, have = stored_of(sweep, stored) if stored else (frozenset(), frozenset())  # a new folder: no ids made
        done = bool(ids) and have == ids
        if scheduler is None and not done:  # a Dask scheduler's cluster has the workers it has
            workers = capped_workers(workers, total)
        pool = None if done else make_executor(executor, workers, scheduler)
        try:
            with ResultsStore(out_dir, columns_for(sweep), sweep.name) as table:
                run = _Run(sweep, table, pool, evaluator or Evaluator(), on_progress, total)
                log.info("%d design points to visit, %d rows already stored", total, len(run.stored))
                STRATEGIES[search.strategy](sweep, run.evaluate)
                run.finish(search.strategy)
                table.export(run.asked, run.stored)
        except BaseException:
            if pool is not None:
                pool.shutdown(stop=True)
            raise
        if pool is not None:
            pool.shutdown()
    return [run.stored[point_id] for point_id in run.asked]
