"""Design points evaluated per second, on one core: Llama-2-7B, a 2048-token prompt and one decode step,
batch 1, on H100-SXM (or another device, batch and output: --device neupims --batch 64 --output 128 times
decode sub-batches interleaved on two units).

Measured in the same run, after the traces are captured (sweeps trace once per model, batch and prompt):
  reference        Evaluator.evaluate, the analytic path (sim/analytic.py), one point per call;
  event sim        the SimPy event simulation of the same point (the baseline the analytic path replaced);
  block of one     the sweep path (explore/blocks.py, sim/block.py), one point per call;
  what-if block    the sweep path over --variants points of the same shape with other memory bandwidths and
                   fp16 peaks (Llama-2-7B's math; what a what-if sweep prices together), per point;
  distinct points  the sweep path, one point per call, rotating over points that differ in device (DISTINCT_DEVICES),
                   batch (DISTINCT_BATCHES) and prompt (DISTINCT_PROMPTS), all traced beforehand: no two calls in a
                   row price the same device, nor the same point, so a memo of a point's result would not carry it.
The paths' results are compared. Targets: the reference at >= 1,000 points/s; one point per call (block of one,
distinct points) at >= 3x LLM-Viewer's roofline, which does 2,000-6,000 of these points per second on this kind of
machine: 6,000 (TARGET_SINGLE_POINTS_PER_S).

    python bench/bench_design_points.py [--seconds 3] [--device NAME] [--batch B] [--output N] [--variants N]
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from explore.blocks import evaluate_points
from explore.design_point import DesignPoint
from explore.evaluate import Evaluator

TARGET_POINTS_PER_S = 1000.0
# One point per call, on the sweep path: 3x LLM-Viewer's roofline on the same work, which evaluates about 2,000-6,000
# of these points per second on this kind of machine (issue 15), so 3 x 2,000.
TARGET_SINGLE_POINTS_PER_S = 3 * 2000.0
# The rotation of the distinct-points measurement: GPU presets, batch sizes and prompt lengths (every combination).
DISTINCT_DEVICES = ("h100-sxm", "a100-sxm-80gb", "h200", "l40s")
DISTINCT_BATCHES = (1, 4, 16)
DISTINCT_PROMPTS = (512, 2048)


BLOCKS = 10  # timed blocks per measurement: the fastest one counts


def calls_per_second(call, seconds: float) -> float:
    """Calls per second of call(), over about `seconds` split into BLOCKS equal blocks of calls: the rate of the
    fastest block, as timeit advises, since a slower block measures what else the machine was doing (on a shared
    VM the mean over one span moves by 30-40% between identical runs; the fastest block by about 1%)."""
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds / BLOCKS or count < 3:  # calls in a block of about seconds / BLOCKS
        call()
        count += 1
    best_s = time.perf_counter() - start
    for _ in range(BLOCKS - 1):
        block_start = time.perf_counter()
        for _ in range(count):
            call()
        best_s = min(best_s, time.perf_counter() - block_start)
    return count / best_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--device", default="h100-sxm", help="device preset (default h100-sxm)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--output", type=int, default=2, help="output tokens: 2 is one decode step (default)")
    parser.add_argument("--variants", type=int, default=1000, help="points of the what-if block (default 1000)")
    args = parser.parse_args()
    point = DesignPoint(model="llama-2-7b", device=args.device, batch=args.batch, prompt=2048, output=args.output)
    evaluator = Evaluator()
    start = time.perf_counter()
    analytic = evaluator.evaluate(point)  # captures and lowers the traces once
    print(f"{args.device}, batch {args.batch}, output {args.output}: traces (captured or from the trace cache) and "
          f"the first evaluation: "
          f"{time.perf_counter() - start:.2f} s")
    simulated = evaluator.evaluate(point, event_sim=True)
    block = evaluate_points(evaluator, [point])[0]
    rng = np.random.default_rng(0)
    variants = [DesignPoint(model="llama-2-7b", device=args.device, batch=args.batch, prompt=2048,
                            output=args.output, overrides=(("memory.bandwidth_GBps", float(bandwidth)),
                                                           ("compute.peak_TFLOPS.fp16", float(peak))))
                for bandwidth, peak in zip(rng.uniform(1000, 8000, args.variants),
                                           rng.uniform(300, 2500, args.variants), strict=True)]
    evaluate_points(evaluator, variants)  # checks the knob values once, as a sweep does
    # The device varies fastest: consecutive points differ in device, every fourth in tables too.
    distinct = [DesignPoint(model="llama-2-7b", device=device, batch=batch, prompt=prompt, output=args.output)
                for prompt in DISTINCT_PROMPTS for batch in DISTINCT_BATCHES for device in DISTINCT_DEVICES]
    for p in distinct:  # traces captured (or read from the trace cache) outside the timing
        evaluator.evaluate(p)
    rotation = itertools.cycle(distinct)
    rates = {
        "reference": calls_per_second(lambda: evaluator.evaluate(point), args.seconds),
        "event sim": calls_per_second(lambda: evaluator.evaluate(point, event_sim=True), args.seconds),
        "block of one": calls_per_second(lambda: evaluate_points(evaluator, [point]), args.seconds),
        "distinct points": calls_per_second(lambda: evaluate_points(evaluator, [next(rotation)]), args.seconds),
        "what-if block": args.variants * calls_per_second(lambda: evaluate_points(evaluator, variants),
                                                          args.seconds),
    }
    pairs = [(analytic.result.makespan_s, simulated.result.makespan_s), (analytic.result.energy_J,
                                                                         simulated.result.energy_J),
             (analytic.metrics["e2e_s"], block["e2e_s"]), (analytic.metrics["energy_per_token_J"],
                                                           block["energy_per_token_J"])]
    worst = max(abs(a / b - 1) for a, b in pairs)
    for name, rate in rates.items():
        print(f"{name:>15}: {rate:12,.0f} points/s   ({rate / rates['reference']:6.2f}x the reference)")
    print(f"reference / the {TARGET_POINTS_PER_S:,.0f} points/s target: "
          f"{rates['reference'] / TARGET_POINTS_PER_S:.2f}x; largest difference between the paths' metrics {worst:.2e}")
    print(f"one point per call / the {TARGET_SINGLE_POINTS_PER_S:,.0f} points/s target (3x LLM-Viewer): block of one "
          f"{rates['block of one'] / TARGET_SINGLE_POINTS_PER_S:.2f}x, distinct points "
          f"{rates['distinct points'] / TARGET_SINGLE_POINTS_PER_S:.2f}x")


if __name__ == "__main__":
    main()
