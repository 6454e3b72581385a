"""Run ON the lent GPU machine, from the repository root: time the batch-1 GEMMs of the Llama 7B/8B/70B weights after
the harness's flush (which reads its buffer) and after a flush that writes it (as triton.testing.do_bench does), one
shape after the other, into OUT (.csv). On an H200 (data/measured/h200-2026-12-04/h200-flush-check.csv) the
writing flush left each GEMM slower by 1.1 us at 8.4 MB of weights and 6.4-8.4 us from 90 MB on, and after the
reading flush the isolated GEMMs take their in-step durations plus a launch.

    PYTHONPATH=. python3 bench/gpu/check_flush.py $OUT/h200-flush-check.csv    # on the GPU
    PYTHONPATH=. python3 bench/gpu/check_flush.py /tmp/flush.csv --cpu         # the same on the CPU, small shapes
"""

from __future__ import annotations

import sys

from kernels import harness

# (m, n, k): batch 1 and 32 over the (k, n) pairs of the harness's GPU grid, and a few CPU-sized ones for a try-out.
GPU_SHAPES = [(m, n, k) for m in (1, 32) for k, n in ((4096, 1024), (4096, 4096), (4096, 11008), (4096, 14336),
                                                       (8192, 8192), (8192, 28672))]
CPU_SHAPES = [(1, n, 1024) for n in (256, 1024, 4096)]


class _WritingFlusher(harness._CacheFlusher):
    """The flush the harness used before: a write over its buffer, leaving dirty lines in the cache."""

    def __call__(self) -> None:
        self._buffer.zero_()


def _time(shape: tuple[int, int, int], device: str) -> float:
    torch = harness._torch()
    m, n, k = shape

    def make():
        return (torch.randn(m, k, device=device, dtype=torch.bfloat16),
                torch.randn(k, n, device=device, dtype=torch.bfloat16))

    return harness.time_op(torch.mm, make, device=device, repeats=50)


def _rows(device: str, cpu: bool):
    reading = harness._CacheFlusher
    for shape in CPU_SHAPES if cpu else GPU_SHAPES:
        times = {}
        for name, flusher in (("read_flush_s", reading), ("write_flush_s", _WritingFlusher)):
            harness._CacheFlusher = flusher
            try:
                times[name] = _time(shape, device)
            finally:
                harness._CacheFlusher = reading
        weight_MB = shape[1] * shape[2] * 2 / 1e6
        print(f"m {shape[0]:>3} n {shape[1]:>6} k {shape[2]:>5} ({weight_MB:7.1f} MB): read flush "
              f"{times['read_flush_s'] * 1e6:8.2f} us, write flush {times['write_flush_s'] * 1e6:8.2f} us, "
              f"gap {(times['write_flush_s'] - times['read_flush_s']) * 1e6:6.2f} us", flush=True)
        yield {"m": shape[0], "n": shape[1], "k": shape[2], "weight_MB": weight_MB, **times}


def main(argv: list[str]) -> int:
    return harness.run_check(argv, _rows)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
