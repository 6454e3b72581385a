"""Requests simulated per second: the whole Splitwise conversation trace (19,366 requests at their recorded
arrival times) replayed on Llama-2-7B on one H100-SXM with continuous batching (or --scheduler).

Traces are captured before timing. The serving run is timed against the static path measured in the same
run: static-batch design points of the trace's mean prompt and output at the serving run's mean batch size,
counted as requests per second of wall time. Target: the whole trace in under 60 s on one core.

    python bench/bench_serving.py [--scheduler continuous] [--requests N] [--seconds 3] [--pp S] [--trace T]
        [--memory-utilization U] [--host-cache-GB G] [--replicas R --router NAME]

With --replicas R and --router NAME the trace is routed over R replicas: a router that predicts each request's latency
on every replica (predicted_latency) costs its predictions against least_requests' count, run for run.
With --pp S each replica runs S engines over S pipeline stages (sim/replica.py): about S times the iterations at the
trace's rate, each as cheap, so the target scales with S. --trace replays another trace at its own times, e.g. a prefix
tree (a Mooncake trace) under eviction, its cache's cost included:

    python examples/traces/agents.py --calls 20000 --out /tmp/agents-20k.jsonl
    python bench/bench_serving.py --trace /tmp/agents-20k.jsonl --memory-utilization 0.3 --host-cache-GB 64
"""

from __future__ import annotations

import argparse
import time

from explore.design_point import DesignPoint
from explore.evaluate import Evaluator
from sim.serving_spec import ServingSpec, trace_requests

TARGET_S = 60.0
MODEL, DEVICE = "llama-2-7b", "h100-sxm"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scheduler", default="continuous", help="scheduler (default continuous)")
    parser.add_argument("--requests", type=int, default=19366, help="requests of the trace (default all)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time spent on the static path")
    parser.add_argument("--pp", type=int, default=1, help="pipeline stages of the serving replica (default 1)")
    parser.add_argument("--trace", default="splitwise-conv", help="the trace replayed (default splitwise-conv)")
    parser.add_argument("--memory-utilization", type=float, help="the engine's share of device memory (default all)")
    parser.add_argument("--host-cache-GB", type=float, help="host memory keeping evicted prefix blocks (default none)")
    parser.add_argument("--replicas", type=int, default=1, help="replicas the trace is routed over (default 1)")
    parser.add_argument("--router", help="how requests are routed over --replicas (default least_requests)")
    args = parser.parse_args()
    evaluator = Evaluator()
    requests = min(args.requests, len(trace_requests(args.trace)))
    spec = ServingSpec(scheduler=args.scheduler, requests=requests, trace=args.trace, arrival="trace", rate_per_s=None,
                       memory_utilization=args.memory_utilization, host_cache_GB=args.host_cache_GB,
                       replicas=args.replicas, router=args.router)
    serving_point = DesignPoint(model=MODEL, device=DEVICE, batch=spec.max_seqs, prompt=0, output=0, serving=spec,
                                pp=args.pp)
    start = time.perf_counter()
    evaluator.template(MODEL, serving_point.numeric_format)
    print(f"step template (four traces): {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    serving = evaluator.evaluate(serving_point)
    serving_s = time.perf_counter() - start
    result = serving.result
    requests = len(result.records)
    batch = max(1, round(result.iterations.mean_batch_size()))
    prompt = round(float(result.records.prompt_tokens.mean()))
    output = round(float(result.records.output_tokens.mean()))
    static_point = DesignPoint(model=MODEL, device=DEVICE, batch=batch, prompt=prompt, output=output)
    evaluator.evaluate(static_point)  # captures its traces before timing
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds or count < 3:
        evaluator.evaluate(static_point)
        count += 1
    static_rps = count * batch / (time.perf_counter() - start)
    serving_rps = requests / serving_s
    stages = f", {args.pp} stages" if args.pp > 1 else ""
    print(f"serving ({args.scheduler}{stages}): {requests} requests, {len(result.iterations)} iterations, "
          f"{result.shapes_priced} shapes priced, {serving_s:.1f} s ({serving_s / (TARGET_S * args.pp):.2f} of the "
          f"{TARGET_S * args.pp:.0f} s target): {serving_rps:,.0f} requests/s")
    print(f"static path (batch {batch}, prompt {prompt}, output {output}): {static_rps:,.0f} requests/s "
          f"(baseline, same run)")
    print(f"serving / static: {serving_rps / static_rps:.3f}x requests per second of wall time")


if __name__ == "__main__":
    main()
