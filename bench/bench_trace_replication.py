"""Capturing a full-size fake trace from the model's distinct layers against capturing every layer, on one core.

Each pass is traced twice in the same run, CPU time (time.process_time), after a small trace has warmed torch's
fake-tensor dispatch up: replicated (workloads/capture.py trace_model: the distinct layers traced, their ops repeated,
workloads/layer_replication.py) and layer by layer (replicate_layers=False, what every fake trace did before). The
two traces are compared field by field (Trace.to_dict) and the ratio printed. The trace cache is not used.

    python bench/bench_trace_replication.py [--passes llama-2-7b-prefill llama-2-70b-decode deepseek-v3-prefill]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from workloads.capture import trace_model
from workloads.model_config import load_model_config

# Each measured pass: a model preset and trace_model's arguments.
PASSES = {
    "llama-2-7b-prefill": ("llama-2-7b", dict(phase="prefill", batch=1, seq_len=512)),
    "llama-2-70b-decode": ("llama-2-70b", dict(phase="decode", batch=1, seq_len=1, context_len=512)),
    "deepseek-v3-prefill": ("deepseek-v3", dict(phase="prefill", batch=1, seq_len=512)),
}


def timed(call) -> tuple[float, object]:
    """CPU seconds call() takes, and what it returns."""
    start = time.process_time()
    result = call()
    return time.process_time() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", nargs="+", choices=sorted(PASSES), default=list(PASSES))
    args = parser.parse_args()
    warm = replace(load_model_config("llama-2-7b"), num_layers=2)
    trace_model(warm, phase="prefill", batch=1, seq_len=8, replicate_layers=False)
    print(f"{'pass':<22} {'ops':>8} {'layer by layer s':>17} {'replicated s':>13} {'ratio':>7}  same trace")
    for name in args.passes:
        preset, shape = PASSES[name]
        config = load_model_config(preset)
        replicated_s, replicated = timed(lambda: trace_model(config, **shape))  # noqa: B023 (called at once)
        full_s, full = timed(lambda: trace_model(config, replicate_layers=False, **shape))  # noqa: B023
        same = replicated.to_dict() == full.to_dict()
        print(f"{name:<22} {len(full.ops):>8,} {full_s:>17.2f} {replicated_s:>13.2f} {full_s / replicated_s:>6.1f}x  "
              f"{'yes' if same else 'NO'}", flush=True)


if __name__ == "__main__":
    main()
