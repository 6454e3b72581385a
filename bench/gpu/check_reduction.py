"""Run ON the lent GPU machine, from the repository root: time the row reduction an eager RMSNorm runs (the mean over
the hidden dim of the fp32 squares, keepdim, as workloads/decoder.py RMSNorm computes it) from one row to 16,384,
into OUT (.csv), with warm inputs as the harness times pointwise kernels (time_op flush=False).

Why: inside the profiled H200 decode steps at batch 32 (data/measured/h200-2026-12-04/h200-profile-*-b32) the
mean took 8.9 us against 1.7 us predicted as a stream of its bytes: a reduction over few rows runs few thread
blocks, so its time follows the length of one row, not the bytes. These rows give that cost its own data.

    PYTHONPATH=. python3 bench/gpu/check_reduction.py $OUT/h200-reduction-check.csv    # on the GPU
    PYTHONPATH=. python3 bench/gpu/check_reduction.py /tmp/reduction.csv --cpu         # the same on the CPU
"""

from __future__ import annotations

import sys

from kernels import harness

GPU_SIZES = [(rows, hidden) for hidden in (4096, 8192)
             for rows in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)]
CPU_SIZES = [(rows, 256) for rows in (1, 16)]


def _rows(device: str, cpu: bool):
    torch = harness._torch()
    for n_rows, hidden in CPU_SIZES if cpu else GPU_SIZES:
        def make(r=n_rows, h=hidden):
            return (torch.randn(r, h, device=device, dtype=torch.float32),)

        time_s = harness.time_op(lambda x: x.mean(-1, keepdim=True), make, device=device, repeats=50, flush=False)
        print(f"mean [{n_rows:>5} x {hidden}] fp32: {time_s * 1e6:8.2f} us", flush=True)
        yield {"op": "mean", "rows": n_rows, "hidden": hidden, "bytes": 4 * n_rows * (hidden + 1), "time_s": time_s}


def main(argv: list[str]) -> int:
    return harness.run_check(argv, _rows)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
