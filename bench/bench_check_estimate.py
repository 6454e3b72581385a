"""`explore check`'s estimate against the run it estimates, sweep by sweep, on one worker.

Each sweep is estimated and run from an empty trace cache (LLM_CODESIGN_CACHE in a new temporary folder): the
estimate is explore check's (explore/commands.py plan_check, by part), the run `explore SWEEP --workers 1 --quiet`
into a temporary folder, its CPU time (user + sys of the run and every process it waited for, resource.getrusage
RUSAGE_CHILDREN) measured. Prints a row a sweep, its estimate's parts, and the median and largest
|log(estimate / measured)|. Run sweeps one at a time on an idle core: CPU time still grows on a loaded machine.
--measured reads the measured times a run of this bench wrote (--json) and runs nothing: the estimate again, after
its constants change.

    python bench/bench_check_estimate.py examples/quickstart.yaml examples/serving.yaml [--json rows.json]
    python bench/bench_check_estimate.py examples/quickstart.yaml --measured rows.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile

from explore.commands import RunEstimate, plan_check
from explore.evaluate import Evaluator
from explore.sweep import load_sweep


def run_cpu_s(sweep: str, cache: str) -> float:
    """User + sys CPU seconds `explore SWEEP --workers 1` and the processes it waited for took."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "-m", "explore", sweep, "--workers", "1", "--quiet", "--out", out],
                       env=os.environ | {"LLM_CODESIGN_CACHE": cache}, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def estimate(sweep: str, cache: str) -> RunEstimate:
    """explore check's estimate of the sweep's run on one worker from the trace cache `cache`."""
    os.environ["LLM_CODESIGN_CACHE"] = cache
    return plan_check(load_sweep(sweep), Evaluator(), workers=1).estimate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="+", help="sweep files, run one after another")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--measured", help="the measured times of an earlier run's --json: run nothing")
    args = parser.parse_args()
    measured = {}
    if args.measured:
        with open(args.measured) as f:
            measured = {row["sweep"]: row["measured_s"] for row in json.load(f)}
    rows = []
    for sweep in args.sweeps:
        with tempfile.TemporaryDirectory() as cache:
            parts = estimate(sweep, cache)
            measured_s = measured[sweep] if args.measured else run_cpu_s(sweep, cache)
        row = {"sweep": sweep, "estimate_s": round(parts.total_s, 2), "measured_s": round(measured_s, 2),
               "fixed_s": parts.fixed_s, "trace_s": round(parts.trace_s, 2), "prepare_s": round(parts.prepare_s, 2),
               "points_s": round(parts.points_s, 2), "report_s": round(parts.report_s, 2), "figures": parts.figures}
        rows.append(row)
        print(f"{sweep:45s} estimated {row['estimate_s']:6.1f} s  measured {row['measured_s']:6.1f} s  "
              f"{row['estimate_s'] / row['measured_s']:5.2f}x  (fixed {row['fixed_s']:.1f}, "
              f"traces {row['trace_s']:.1f}, prepare {row['prepare_s']:.1f}, points {row['points_s']:.1f}, "
              f"report {row['report_s']:.1f} of {row['figures']} figures)", flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
    errors = [abs(math.log(row["estimate_s"] / row["measured_s"])) for row in rows]
    print(f"median |log(estimate / measured)| {statistics.median(errors):.3f}, largest {max(errors):.3f}")


if __name__ == "__main__":
    main()
