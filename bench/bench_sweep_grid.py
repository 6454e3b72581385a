"""Sweep throughput on one core: examples/gpu-whatif-grid.yaml (10,368 points: memory bandwidth x bf16 peak x
batch x weight and KV bits x launch mode) end to end, store included, priced in blocks (explore/blocks.py) and
point by point through the reference path (sim/analytic.py), measured in the same run.

Traces are captured once, before timing, by a warm-up run of each evaluator; each timed run then writes into
a fresh folder, so every point is evaluated and stored (results.sqlite, results.csv). Target: the block path
at >= 20,000 points/s.

    python bench/bench_sweep_grid.py [--reference-points N]
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, evaluator in (("blocks", Evaluator()), ("reference", Evaluator(blocks=False))):
            timed_run(Path(tmp) / f"warm-{name}", evaluator)  # traces, lowered tables, device models
            points, seconds = timed_run(Path(tmp) / name, evaluator)
            rates[name] = points / seconds
            print(f"{name:>9}: {points} points in {seconds:6.2f} s = {rates[name]:>9,.0f} points/s")
    print(f"blocks / reference (same run): {rates['blocks'] / rates['reference']:.1f}x; "
          f"blocks / target {TARGET_POINTS_PER_S:,.0f} points/s: {rates['blocks'] / TARGET_POINTS_PER_S:.2f}x")


if __name__ == "__main__":
    main()
