"""Capacity: the highest arrival rate at which a replica still meets its SLO, found by bisection."""

from __future__ import annotations

import math
from collections.abc import Callable


def highest_rate(meets: Callable[[float], bool], *, low: float, high: float, rel_tol: float = 0.05) -> float:
    """The highest rate in [low, high] where meets(rate) holds, to within rel_tol (bisection on a log scale:
    attainment falls with load). 0 when even `low` fails; `high` when it holds there (the bound is too low)."""
    if not 0 < low < high:
        raise ValueError(f"rates: found low {low}, high {high}, allowed: 0 < low < high")
    if meets(high):
        return high
    if not meets(low):
        return 0.0
    while high / low > 1 + rel_tol:
        mid = math.sqrt(low * high)
        low, high = (mid, high) if meets(mid) else (low, mid)
    return low
