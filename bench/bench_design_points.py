"""Design points evaluated per second: Llama-2-7B, 2048 prompt + 128 output tokens, batch 1, on H100-SXM
(or another device and batch: --device neupims --batch 64 times decode sub-batches interleaved on two units).

The trace is captured before timing (sweeps trace once per model, batch and prompt). The analytic
path (what sweeps use) is timed against the SimPy event simulation of the same point, measured in
the same run, and the two results are compared. Target: at least 1,000 points/s on one core.

    python bench/bench_design_points.py [--seconds 3] [--device NAME] [--batch B]
"""

from __future__ import annotations

import argparse
import time

from explore.design_point import DesignPoint
from explore.evaluate import Evaluator

TARGET_POINTS_PER_S = 1000.0


def points_per_second(evaluator: Evaluator, point: DesignPoint, seconds: float, **kwargs) -> float:
    """Evaluate the point repeatedly for about `seconds`; return evaluations per second."""
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or count < 3:
        evaluator.evaluate(point, **kwargs)
        count += 1
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--device", default="h100-sxm", help="device preset (default h100-sxm)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    args = parser.parse_args()
    point = DesignPoint(model="llama-2-7b", device=args.device, batch=args.batch, prompt=2048, output=128)
    evaluator = Evaluator()
    start = time.perf_counter()
    analytic = evaluator.evaluate(point)  # captures and lowers the traces once
    print(f"{args.device}, batch {args.batch}: trace capture + first evaluation: {time.perf_counter() - start:.2f} s")
    simulated = evaluator.evaluate(point, event_sim=True)
    fast = points_per_second(evaluator, point, args.seconds)
    slow = points_per_second(evaluator, point, args.seconds, event_sim=True)
    pairs = [(analytic.result.makespan_s, simulated.result.makespan_s),
             (analytic.result.energy_J, simulated.result.energy_J)]
    worst = max(abs(a / b - 1) for a, b in pairs)
    print(f"analytic path:   {fast:10.1f} points/s   ({fast / TARGET_POINTS_PER_S:.2f}x the 1,000 points/s target)")
    print(f"event sim path:  {slow:10.1f} points/s   (baseline, same run)")
    print(f"speedup over the event simulation: {fast / slow:.1f}x; largest metric difference {worst:.2e}")


if __name__ == "__main__":
    main()
