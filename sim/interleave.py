"""Sub-batch interleaving: decode sub-batches share a device's units, each unit serving one at a time.

NeuPIMs-style: a decode batch split in two, so that while one sub-batch's attention runs in the PIM
banks the other's QKV and FFN GEMMs run on the NPU. Each sub-batch is a chain of segments (runs of
consecutive kernels on one unit) that it executes in order; a unit serves the segments requested of it
first come, first served, ties going to the lower sub-batch. This is the schedule the event simulation
produces with one SimPy resource per unit; the analytic path computes it here without an event loop.
"""

from __future__ import annotations

import numpy as np


def interleaved_schedule(durations: list[np.ndarray], units: list[np.ndarray], start_s: float,
                         unit_count: int) -> list[np.ndarray]:
    """Start time of every segment of every chain; chain i runs segments durations[i] on units[i] in order."""
    unit_free = [start_s] * unit_count
    ready = [start_s] * len(durations)
    position = [0] * len(durations)
    starts = [np.empty(len(d)) for d in durations]
    lengths = [len(d) for d in durations]
    duration_lists = [d.tolist() for d in durations]
    unit_lists = [u.tolist() for u in units]
    pending = [i for i in range(len(durations)) if lengths[i]]
    while pending:
        # The earliest request is served next: requests reach each unit in time order (FIFO).
        chain = min(pending, key=lambda i: (ready[i], i))
        j = position[chain]
        unit = unit_lists[chain][j]
        start = max(ready[chain], unit_free[unit])
        starts[chain][j] = start
        ready[chain] = unit_free[unit] = start + duration_lists[chain][j]
        position[chain] += 1
        if position[chain] == lengths[chain]:
            pending.remove(chain)
    return starts
