"""Sweep throughput on one core: examples/gpu-whatif-grid.yaml (10,368 points: memory bandwidth x fp16 peak x
batch x weight and KV bits x launch mode) end to end, from reading the sweep file to the stored results
(results.sqlite, results.csv), priced in blocks (explore/blocks.py) and point by point through the reference path
(sim/analytic.py), measured in the same run.

The process is pinned to one CPU. Traces are captured once, before timing, by a warm-up run of each evaluator;
each timed run then writes into a fresh folder, so every point is evaluated and stored. The block path is timed
--repeats times (its runs take about half a second, so one run is at the mercy of whatever else the machine
does), the reference path --reference-repeats times. Target: the block path at >= 20,000 points/s.

    python bench/bench_sweep_grid.py [--repeats 3] [--reference-repeats 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from explore.evaluate import Evaluator
from explore.runner import run_sweep
from explore.sweep import load_sweep

GRID = Path(__file__).resolve().parents[1] / "examples" / "gpu-whatif-grid.yaml"
TARGET_POINTS_PER_S = 20_000.0


def timed_run(out: Path, evaluator: Evaluator) -> tuple[int, float]:
    """(points, seconds) of one complete grid run, from loading the sweep file to the exported results."""
    start = time.perf_counter()
    rows = run_sweep(load_sweep(str(GRID)), out, evaluator=evaluator)
    return len(rows), time.perf_counter() - start


def one_core() -> str:
    """Pin this process to one of the CPUs it may run on (Linux); say which."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity here)"
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the block path (default 3)")
    parser.add_argument("--reference-repeats", type=int, default=1,
                        help="timed runs of the reference path (default 1; about 10 s each)")
    args = parser.parse_args()
    print(f"{GRID.name}, {one_core()}")
    rates: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, evaluator, repeats in (("blocks", Evaluator(), args.repeats),
                                         ("reference", Evaluator(blocks=False), args.reference_repeats)):
            timed_run(Path(tmp) / f"warm-{name}", evaluator)  # traces, lowered tables, device models
            for i in range(max(1, repeats)):
                points, seconds = timed_run(Path(tmp) / f"{name}-{i}", evaluator)
                rates.setdefault(name, []).append(points / seconds)
                print(f"{name:>9}: {points} points in {seconds:6.2f} s = {points / seconds:>9,.0f} points/s")
    blocks, reference = max(rates["blocks"]), max(rates["reference"])
    print(f"blocks {min(rates['blocks']):,.0f}-{blocks:,.0f} points/s, reference {min(rates['reference']):,.0f}-"
          f"{reference:,.0f}; blocks / reference (same run, best of each): {blocks / reference:.1f}x; "
          f"blocks / target {TARGET_POINTS_PER_S:,.0f} points/s: {blocks / TARGET_POINTS_PER_S:.2f}x")


if __name__ == "__main__":
    main()
