"""Capacity: the highest arrival rate at which a replica still meets its SLO, found by bisection."""

from __future__ import annotations

import math
from collections.abc import Callable


def highest_rate(meets: Callable[[float], bool], *, low: float, high: float, rel_tol: float = 0.05,
                 guess: float | None = None) -> float:
    """The highest rate in [low, high] where meets(rate) holds, to within rel_tol (bisection on a log scale:
    attainment falls with load). 0 when even `low` fails; `high` when it holds there (the bound is too low).

    With a `guess`, the answer is first bracketed by doubling or halving from the guess (within [low, high]), so no
    rate far from the answer is run: a run at a rate far below capacity is long (its requests arrive over a long
    time) and one far above it is uninformative."""
    if not 0 < low < high:
        raise ValueError(f"rates: found low {low}, high {high}, allowed: 0 < low < high")
    if guess is not None:
        low, high = _bracket(meets, low=low, high=high, rate=min(max(guess, low), high))
        if low == high or low == 0.0:
            return low
    elif meets(high):
        return high
    elif not meets(low):
        return 0.0
    while high / low > 1 + rel_tol:
        mid = math.sqrt(low * high)
        low, high = (mid, high) if meets(mid) else (low, mid)
    return low


def _bracket(meets: Callable[[float], bool], *, low: float, high: float, rate: float) -> tuple[float, float]:
    """(a rate that meets, a rate that does not) a factor of 2 apart at most, starting from `rate`; (high, high) when
    `high` meets, (0, 0) when `low` does not."""
    if meets(rate):
        while rate < high:
            above = min(2 * rate, high)
            if not meets(above):
                return rate, above
            rate = above
        return high, high
    while rate > low:
        below = max(rate / 2, low)
        if meets(below):
            return below, rate
        rate = below
    return 0.0, 0.0
