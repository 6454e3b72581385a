"""Lowering a full-size fake trace to its kernel table from its distinct layers' kernels against op by op, on one core.

Each pass is captured once from its distinct layers (workloads/capture.py trace_layers) and lowered twice in the same
run, CPU time (time.process_time): from the traced layers, their rows copied for the layers like them
(kernels/layer_kernels.py stored_table), and op by op from the expanded trace (KernelTable.from_kernels(lower_trace),
what every fake trace did before; the expansion not timed). The two tables are compared column by column and kernel by
kernel, and the ratio printed. The trace cache is not used.

    python bench/bench_layer_lowering.py [--passes deepseek-v3-prefill deepseek-v3-decode llama-2-70b-decode] [--ep 8]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import fields, replace

import numpy as np

from kernels.fusion import ENGINE, fuse, fused_rows
from kernels.layer_kernels import layer_table, stored_table
from kernels.lowering import lower_trace
from kernels.parallel import shard_tensor_parallel, sharded_rows
from kernels.table import KernelTable
from workloads.capture import trace_layers
from workloads.model_config import load_model_config

# Each measured pass: a model preset and trace_layers' arguments. Sharded over TP devices (examples/mtp.yaml's).
TP = 8
PASSES = {
    "deepseek-v3-prefill": ("deepseek-v3", dict(phase="prefill", batch=1, seq_len=1024)),
    "deepseek-v3-decode": ("deepseek-v3", dict(phase="decode", batch=64, seq_len=1, context_len=1024)),
    "llama-2-70b-decode": ("llama-2-70b", dict(phase="decode", batch=1, seq_len=1, context_len=512)),
}


def timed(call) -> tuple[float, object]:
    """CPU seconds call() takes, and what it returns."""
    start = time.process_time()
    result = call()
    return time.process_time() - start, result


def same_table(a: KernelTable, b: KernelTable) -> bool:
    """Whether every field of two tables is equal (columns with their dtypes, the kernels in order)."""
    for field in fields(KernelTable):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(y, np.ndarray):
            if x.dtype != y.dtype or not np.array_equal(x, y):
                return False
        elif x != y:
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", nargs="+", choices=sorted(PASSES), default=list(PASSES))
    parser.add_argument("--ep", type=int, choices=(1, TP), default=1, help="devices an MoE model's experts spread over")
    args = parser.parse_args()
    rows = []
    print(f"{'pass':<22} {'ops':>9} {'kernels':>9} {'op by op s':>11} {'from layers s':>14} {'ratio':>7}  same table")
    for name in args.passes:
        preset, shape = PASSES[name]
        config = load_model_config(preset)
        layers = trace_layers(config, **shape)
        trace = layers.expanded()
        layers_s, got = timed(lambda: stored_table(layers))  # noqa: B023 (called at once)
        ops_s, want = timed(lambda: KernelTable.from_kernels(lower_trace(trace)))  # noqa: B023
        print(f"{name:<22} {len(trace.ops):>9,} {len(want):>9,} {ops_s:>11.2f} {layers_s:>14.2f} "
              f"{ops_s / layers_s:>6.1f}x  {'yes' if same_table(got, want) else 'NO'}", flush=True)
        rows.append((name, config, layers))
    print(f"\nsharded over {TP} devices (experts over {args.ep}) and fused (engine), from the layers' kernels:")
    print(f"{'pass':<22} {'kernels':>9} {'full table s':>13} {'short model s':>14} {'ratio':>7}  same table")
    for name, config, layers in rows:
        ep = args.ep if config.is_moe else 1
        short_s, got = timed(lambda: layer_table(layers).transformed(  # noqa: B023
            lambda t: sharded_rows(t, TP, config, ep)).transformed(lambda t: fused_rows(t, ENGINE)).expanded())  # noqa: B023
        full_s, want = timed(lambda: fuse(shard_tensor_parallel(stored_table(layers), TP, config, ep), ENGINE))  # noqa: B023
        print(f"{name:<22} {len(want):>9,} {full_s:>13.2f} {short_s:>14.2f} {full_s / short_s:>6.1f}x  "
              f"{'yes' if same_table(got, want) else 'NO'}", flush=True)
    print(f"\n{'pass':<22} {'expanded s':>11} {'outline s':>10} {'ratio':>9}  same figures")
    for name, _, layers in rows:
        outline_s, got = timed(layers.outline)
        expanded_s, want = timed(layers.expanded)
        same = replace(want, ops=()) == got
        print(f"{name:<22} {expanded_s:>11.3f} {outline_s:>10.5f} {expanded_s / max(outline_s, 1e-6):>8.0f}x  "
              f"{'yes' if same else 'NO'}", flush=True)


if __name__ == "__main__":
    main()
