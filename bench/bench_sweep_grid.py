"""Sweep throughput: examples/gpu-whatif-grid.yaml (10,368 points) end to end, with 1 and 2 workers.

Each run goes into a fresh folder, so every point is evaluated and written; traces are captured by each
worker process. Prints points per second for both and the speedup of 2 workers over 1, measured in the
same run.

    python bench/bench_sweep_grid.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from explore.runner import run_sweep
from explore.sweep import load_sweep

GRID = Path(__file__).resolve().parents[1] / "examples" / "gpu-whatif-grid.yaml"


def timed_run(sweep_path: Path, out: Path, workers: int) -> tuple[int, float]:
    """(points, seconds) of one complete grid run."""
    sweep = load_sweep(str(sweep_path))
    start = time.perf_counter()
    rows = run_sweep(sweep, out, workers=workers)
    return len(rows), time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for workers in (1, 2):
            points, seconds = timed_run(GRID, Path(tmp) / f"out-{workers}", workers)
            results[workers] = points / seconds
            print(f"{workers} worker(s): {points} points in {seconds:.1f} s = {results[workers]:,.0f} points/s")
        print(f"2 workers / 1 worker: {results[2] / results[1]:.2f}x")


if __name__ == "__main__":
    main()
