"""Sub-batch interleaving: decode sub-batches share a device's units, each unit serving one at a time.

NeuPIMs-style: a decode batch split in two, so that while one sub-batch's attention runs in the PIM
banks the other's QKV and FFN GEMMs run on the NPU. Each sub-batch is a chain of segments (runs of
consecutive kernels on one unit) that it executes in order; a unit serves the segments requested of it
first come, first served, ties going to the lower sub-batch. This is the schedule the event simulation
produces with one SimPy resource per unit; the analytic path computes it here without an event loop.
One difference: when two sub-batches ask for a unit at exactly the same instant, SimPy serves them in the
order their waiting events were created, not by sub-batch, so the two paths can order such a tie
differently (both first come, first served). Float kernel times almost never tie exactly; devices whose
costs are whole cycles could.
"""

from __future__ import annotations

import numpy as np


def interleaved_schedule(durations: list[np.ndarray], units: list[np.ndarray], unit_count: int) -> list[np.ndarray]:
    """Start time (from zero) of every segment of every chain; chain i runs segments durations[i] on units[i]
    in order."""
    start_s = 0.0
    unit_free = [start_s] * unit_count
    chains = range(len(durations))
    ready = [start_s for _ in chains]
    position = [0 for _ in chains]
    lengths = [len(d) for d in durations]
    duration_lists = [d.tolist() for d in durations]
    unit_lists = [u.tolist() for u in units]
    starts = [[0.0] * n for n in lengths]
    pending = [i for i in chains if lengths[i]]
    while pending:
        # The earliest request is served next (ties: the lower chain): requests reach each unit in time
        # order, first come first served.
        chain = pending[0]
        for other in pending[1:]:
            if ready[other] < ready[chain]:
                chain = other
        j = position[chain]
        unit = unit_lists[chain][j]
        start = ready[chain] if ready[chain] > unit_free[unit] else unit_free[unit]
        starts[chain][j] = start
        ready[chain] = unit_free[unit] = start + duration_lists[chain][j]
        position[chain] = j + 1
        if j + 1 == lengths[chain]:
            pending.remove(chain)
    return [np.array(s) for s in starts]
