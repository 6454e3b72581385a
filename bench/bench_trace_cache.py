"""Storing and loading a full-size fake trace in the trace cache: as captured from its distinct layers against whole.

Each pass is traced once from its distinct layers (workloads/capture.py trace_layers) and expanded. In the same run,
CPU time (time.process_time), the trace cache (workloads/trace_cache.py, in a temporary folder) stores and loads it
two ways under two keys: whole, the expanded trace's every op as JSON (what the cache stored before it kept layers),
and as captured, the distinct layers' ops with the layer each layer repeats, expanded on load. Both loaded traces are
compared with the capture field by field (Trace.to_dict); the file sizes and the ratios are printed.

    python bench/bench_trace_cache.py [--passes deepseek-v3-prefill deepseek-v3-decode llama-2-70b-decode]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile

from bench_trace_replication import timed  # this folder's, beside this script

from workloads import trace_cache
from workloads.capture import trace_layers
from workloads.model_config import load_model_config

# Each measured pass: a model preset and trace_layers' arguments.
PASSES = {
    "deepseek-v3-prefill": ("deepseek-v3", dict(phase="prefill", batch=1, seq_len=512)),
    "deepseek-v3-decode": ("deepseek-v3", dict(phase="decode", batch=64, seq_len=4, context_len=1024, sampled=4)),
    "llama-2-70b-decode": ("llama-2-70b", dict(phase="decode", batch=1, seq_len=1, context_len=512)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", nargs="+", choices=sorted(PASSES), default=list(PASSES))
    args = parser.parse_args()
    os.environ[trace_cache.CACHE_ENV] = tempfile.mkdtemp(prefix="bench-trace-cache-")
    print(f"{'pass':<20} {'ops':>8} {'way':<8} {'store s':>8} {'load s':>7} {'file MB':>8}  same trace")
    for name in args.passes:
        preset, shape = PASSES[name]
        config = load_model_config(preset)
        layers = trace_layers(config, **shape)
        trace = layers.expanded()
        captured = trace.to_dict()
        times = {}
        for way, stored in (("whole", trace), ("layers", layers)):
            key = trace_cache.trace_key(config, **shape) | {"bench": way}
            gc.collect()  # each part timed from a collected heap, not paying for what the part before left young
            store_s, _ = timed(lambda: trace_cache.store(key, stored))  # noqa: B023 (called at once)
            gc.collect()
            load_s, loaded = timed(lambda: trace_cache.load(key))  # noqa: B023
            size_mb = trace_cache.trace_path(key).stat().st_size / 1e6
            same = loaded is not None and loaded.to_dict() == captured
            times[way] = store_s + load_s
            print(f"{name:<20} {len(trace.ops):>8,} {way:<8} {store_s:>8.2f} {load_s:>7.2f} {size_mb:>8.2f}  "
                  f"{'yes' if same else 'NO'}", flush=True)
            del loaded
        print(f"{name:<20} store + load, whole / layers: {times['whole'] / times['layers']:.1f}x", flush=True)


if __name__ == "__main__":
    main()
