"""Run ON the lent GPU machine, from the repository root: time the harness's pointwise ops (add, SiLU, and the
general-layout cast, per-row product and strided negation) two ways, one size after the other, into OUT (.csv):
after a cache flush (cold inputs, as the harness times GEMMs and attention) and with inputs just written by the
kernel that made them (warm: still in the L2, as inside a model's step, where each op reads what the one before
wrote; as the harness times pointwise kernels), a device sleep queued ahead of the start event hiding the host's
dispatch instead of the flush (time_op's flush=False).

On an H200 (data/measured/h200-2026-12-04/h200-warm-check.csv) warm inputs took 0.2-0.3 us off a small add and
0.7-1.7 us off the small general-layout ops, and the two are within 8% from 16,384 x 4,096 on: a fit of the cold rows
gave the general-layout ops inside a decode step 2.8 us each against the 1.8 us profiled.

    PYTHONPATH=. python3 bench/gpu/check_warm.py $OUT/h200-warm-check.csv    # on the GPU
    PYTHONPATH=. python3 bench/gpu/check_warm.py /tmp/warm.csv --cpu         # the same on the CPU, small sizes
"""

from __future__ import annotations

import sys

from kernels import harness

GPU_SIZES = [(rows, 4096) for rows in (1, 4, 16, 64, 256, 1024, 4096, 16384)]
CPU_SIZES = [(rows, 256) for rows in (1, 16)]
def _ops(torch, hidden: int, tdtype, device: str):
    """(op, make(rows), fn) of the add and SiLU the harness times and of its general-layout ops."""
    import torch.nn.functional as F

    def inputs(count):
        return lambda r, h=hidden: tuple(torch.randn(r, h, device=device, dtype=tdtype) for _ in range(count))

    ops = [("add", inputs(2), torch.add), ("silu", inputs(1), F.silu)]
    return ops + [(op, lambda r, h=hidden, make=make: make(r, h), fn)
                  for op, make, fn, _ in harness._general_ops(torch, tdtype, device)]


def _rows(device: str, cpu: bool):
    torch = harness._torch()
    for n_rows, hidden in CPU_SIZES if cpu else GPU_SIZES:
        for op, make, fn in _ops(torch, hidden, torch.bfloat16, device):
            times = {}
            for name, flush in (("cold_s", True), ("warm_s", False)):
                times[name] = harness.time_op(fn, lambda r=n_rows, make=make: make(r), device=device, repeats=50,
                                              flush=flush)
            print(f"{op:>9} [{n_rows:>5} x {hidden}]: cold {times['cold_s'] * 1e6:8.2f} us, warm "
                  f"{times['warm_s'] * 1e6:8.2f} us", flush=True)
            yield {"op": op, "rows": n_rows, "hidden": hidden, **times}


def main(argv: list[str]) -> int:
    return harness.run_check(argv, _rows)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
