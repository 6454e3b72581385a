"""Loading a trace cache's stored traces and preparing their kernel tables, as a warm run of a sweep does.

For each file of a trace cache folder (a sweep's, filled by a run), in one process, CPU time (time.process_time) of
workloads/trace_cache.py load_stored (reading the gzip JSON and making the trace) and of kernels/layer_kernels.py
layer_table(...).expanded() (lowering the traced layers and copying them), each from a collected heap, and a digest of
every table (its kernels' fields in order), so that two trees' runs can be compared:

    LLM_CODESIGN_CACHE=DIR python bench/bench_trace_load.py [--repeat 2]
"""

from __future__ import annotations

import argparse
import gc
import gzip
import hashlib
import json
import time
from pathlib import Path

from kernels.layer_kernels import layer_table
from workloads import trace_cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="passes over the folder; the fastest is printed")
    args = parser.parse_args()
    files = sorted(Path(trace_cache.cache_dir()).rglob("*.json.gz"))
    keys = []
    for path in files:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            keys.append(json.load(f)["key"])
    best_load, best_lower, digest = float("inf"), float("inf"), hashlib.sha256()
    for attempt in range(args.repeat):
        load_s = lower_s = 0.0
        for key in keys:
            gc.collect()
            start = time.process_time()
            stored = trace_cache.load_stored(key)
            load_s += time.process_time() - start
            gc.collect()
            start = time.process_time()
            table = layer_table(stored).expanded()
            lower_s += time.process_time() - start
            if attempt == 0:
                digest.update(repr([k.__dict__ for k in table.kernels]).encode())
            del stored, table
        best_load, best_lower = min(best_load, load_s), min(best_lower, lower_s)
    print(f"{len(keys)} traces: load {best_load:.2f} s, tables {best_lower:.2f} s, "
          f"total {best_load + best_lower:.2f} s; tables digest {digest.hexdigest()[:16]}")


if __name__ == "__main__":
    main()
