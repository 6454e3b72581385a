"""Capacity: the highest arrival rate at which a design still meets its SLO and keeps up, found by bisection.

`highest_rate` bisects on any verdict. `search_capacity` is the serving capacity search: a rate is sustainable
when its run meets the SLO and its queue does not grow (sim/stability.py), so that a run of too few requests to
show an unstable queue cannot pass a rate the design does not sustain. A rate whose run is too short to judge is
not sustainable either; where that, and not the SLO or a growing queue, stopped the search, the capacity is the
highest rate these requests can show and is marked not judged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sim.serving import ServingResult
from sim.stability import GROWTH_LIMIT, Stability, queue_stability

# Results columns of a capacity search beyond capacity_rps (explore/metrics.py, section "capacity"), in order.
CAPACITY_METRICS = ("capacity_judged", "queue_growth", "capacity_note", "capacity_at_top")


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


@dataclass(frozen=True, kw_only=True)
class RateVerdict:
    """One run of a capacity search: whether it met the SLO, and its queue-growth verdict."""

    meets_slo: bool
    stability: Stability

    @property
    def sustainable(self) -> bool:
        return self.meets_slo and self.stability.stable


@dataclass(frozen=True, kw_only=True)
class Capacity:
    """What a capacity search found: the highest sustainable rate (0 when even the lowest is not), whether the
    search could judge the rate that stopped it, and what it tried."""

    rate_per_s: float
    judged: bool  # False: the rate above the capacity failed only because its run was too short or noisy to judge
    note: str  # why the capacity is not judged; '' when it is
    verdicts: dict[float, RateVerdict]
    at_top: bool = False  # the top of the searched range was sustainable: the capacity is at least rate_per_s

    def metrics(self) -> dict[str, float | str]:
        """The CAPACITY_METRICS of the search, the queue growth that of the run at the capacity."""
        at = self.verdicts.get(self.rate_per_s)
        return {"capacity_judged": float(self.judged),
                "queue_growth": at.stability.growth if at is not None else math.nan,
                "capacity_note": self.note, "capacity_at_top": float(self.at_top)}


def search_capacity(judge: Callable[[float], RateVerdict], *, low: float, high: float, rel_tol: float = 0.05,
                    guess: float | None = None) -> Capacity:
    """The highest rate in [low, high] whose run `judge` finds sustainable (highest_rate, same arguments).

    Not judged: where the lowest rate that failed above the answer met its SLO but its run could not be judged
    (sim/stability.py), the answer is what these requests can show, not what the design cannot sustain."""
    verdicts: dict[float, RateVerdict] = {}

    def sustainable(rate: float) -> bool:
        verdicts[rate] = judge(rate)
        return verdicts[rate].sustainable

    rate = highest_rate(sustainable, low=low, high=high, rel_tol=rel_tol, guess=guess)
    failed = [r for r, verdict in verdicts.items() if r > rate and not verdict.sustainable]
    stopper = verdicts[min(failed)] if failed else None
    if stopper is None or not stopper.meets_slo or stopper.stability.judged:
        return Capacity(rate_per_s=rate, judged=True, note="", verdicts=verdicts, at_top=rate >= high)
    shown = f"{rate:.3g} req/s is the highest rate" if rate > 0 else "no rate is one"
    note = (f"not judged: the run at {min(failed):.3g} req/s met the SLO but {stopper.stability.reason}; "
            f"{shown} these requests show sustainable (more requests can judge higher rates)")
    return Capacity(rate_per_s=rate, judged=False, note=note, verdicts=verdicts)


def rate_verdict(result: ServingResult, *, growth_limit: float = GROWTH_LIMIT) -> RateVerdict:
    """A serving run's verdict: whether it met its SLO, and whether its queue grew (sim/stability.py), its requests
    read in the order they arrived (a conversation's later turn arrives when the previous answer is done, after
    requests drawn later).

    Where the gateway rejected requests (sim/admission.py), its queue stays bounded however far the rate is past what
    the design serves: the overflow is rejected instead of queued. A gateway fed at lambda above the service rate mu
    serves mu and rejects lambda - mu (the fluid view of sim/stability.py), so rejected over served is lambda / mu - 1,
    the figure a growing queue's growth estimates; over `growth_limit` the run did not keep up, whatever its queue."""
    records = result.records
    order = np.argsort(records.arrival_s, kind="stable")
    stability = queue_stability(records.arrival_s[order], records.wait_s[order], records.e2e_s[order],
                                growth_limit=growth_limit)
    rejected = result.rejected.requests if result.rejected is not None else 0
    overflow = rejected / len(records) if len(records) else math.inf
    if rejected and overflow > growth_limit:
        stability = Stability(judged=True, growth=overflow, limit=growth_limit,
                              reason=f"its gateway rejected {rejected} of its {rejected + len(records)} requests, "
                                     f"{overflow:.3g} for each one served: the overflow of a rate past what it serves")
    meets = result.metrics()["meets_slo"]
    return RateVerdict(meets_slo=bool(meets == 1.0), stability=stability)
