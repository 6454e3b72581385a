"""A GPU under a power cap (power.cap_W, nvidia-smi's power limit): kernels that would draw more run at a lower clock.

A kernel's power is the board's idle power plus its dynamic energy over its busy time (hw_models/gpu.py). Where
that exceeds the cap, the driver lowers the SM clock to a fraction s of its own until the kernel draws the cap: its
math then takes 1/s as long while its DRAM traffic keeps its time (HBM's clock is not the SM's), and its math energy
per FLOP falls as the voltage does, so math power scales as s^DVFS_EXPONENT. A memory-bound kernel (a decode step's)
draws far below any cap a GPU accepts, so a cap leaves it be; a compute-bound one (a prefill's GEMMs) slows down.
The cap acts per kernel: the driver's limit averages over milliseconds, so a short kernel above the cap beside
others below it is slowed here where a real board might let it run (a bound on the cap's cost).
"""

from __future__ import annotations

import numpy as np

# How math power scales with the SM clock, P = P0 + a (f / f_max)^k: fitted on H100 SXM measurements of a
# compute-bound inference (ViT-L/16) at power limits of 200-700 W (Ujeniya et al., arXiv:2604.11391v2, Figs. 6b and
# 9b: draw 199 / 298 / 395 / 493 / 591 / 647 W at average SM clocks of 625 / 1132 / 1501 / 1731 / 1889 / 1969 MHz);
# least squares gives P0 = 188 W, a = 453 W, k = 2.81, every point within 15 W (tests/hw_models/test_gpu_power.py).
DVFS_EXPONENT = 2.81
# Bisection steps for the clock: 2^-40 of its range, far below any other error of the model.
_STEPS = 40


def capped_clock(*, busy_s, compute_s, memory_s, compute_J, memory_J, idle_W, cap_W) -> np.ndarray:
    """The fraction of its clock each kernel runs at under `cap_W` (1 where it draws no more at full clock): the
    largest s in (0, 1] at which idle_W + (compute_J s^(k-1) + memory_J) / busy(s) <= cap_W (capped_busy_s)."""
    busy_s, compute_s, memory_s, compute_J, memory_J = np.broadcast_arrays(
        *(np.asarray(x, dtype=float) for x in (busy_s, compute_s, memory_s, compute_J, memory_J)))

    def power_W(s):
        busy = capped_busy_s(busy_s, compute_s, memory_s, s)
        return idle_W + np.divide(compute_J * s ** (DVFS_EXPONENT - 1) + memory_J, busy, out=np.zeros(busy.shape),
                                  where=busy > 0)

    over = power_W(np.ones(busy_s.shape)) > cap_W
    if not over.any():
        return np.ones(busy_s.shape)
    low, high = np.zeros(busy_s.shape), np.ones(busy_s.shape)  # power falls with the clock: bisect where it meets
    for _ in range(_STEPS):
        mid = (low + high) / 2
        fits = power_W(np.where(over, mid, 1.0)) <= cap_W
        low, high = np.where(fits, mid, low), np.where(fits, high, mid)
    return np.where(over, np.maximum(low, np.finfo(float).tiny), 1.0)


def capped_busy_s(busy_s, compute_s, memory_s, clock):
    """A kernel's busy time at a fraction `clock` of its SM clock: its busy time at full clock, scaled as its roofline
    bound max(compute / clock, memory) scales (its math slows, its DRAM traffic does not); exactly its busy time at
    full clock."""
    bound = np.maximum(compute_s, memory_s)
    slowed = np.maximum(compute_s / clock, memory_s)
    slows = (bound > 0) & (clock < 1)
    return np.divide(busy_s * slowed, bound, out=np.asarray(busy_s, dtype=float).copy(), where=slows)
