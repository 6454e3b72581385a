"""Whether a finite serving run kept up with its arrivals: a queue-growth test on each request's waiting time.

A run of n requests at a rate above what the design serves has an unstable queue, yet its latency percentiles can still
meet an SLO: the queue grows for only n / rate seconds. The test here judges the run itself, by the time each request
waits outside any running batch (RequestRecords.wait_s: before its first admission, and before a decode pool admits it).
A replica whose batches have room admits arrivals at once, and load that the batches absorb slows every request without
queueing any (the SLO judges that); a design that cannot keep up fills its batches or its KV cache and its waiting line
grows without bound. A FIFO server of service rate mu fed at lambda > mu holds the request arriving t seconds in waiting
(lambda / mu - 1) t (the deterministic fluid view of a queue, as in Kleinrock, Queueing Systems Vol. 2, Chapter 2; exact
for evenly spaced arrivals and fixed service times). `growth` estimates that slope, seconds of waiting per second of
arrivals, over the judged window, and a run keeps up when it is at most `growth_limit`: at the default 0.05, what a rate
5% above the service rate shows, the resolution a capacity search's bisection has anyway (sim/capacity.py rel_tol). The
slope is fitted to the medians of batches of requests (the method of batch means of simulation output analysis); a run
is judged stable or unstable only where the slope is at least one standard error clear of the limit on that side, and
not judged otherwise: a few dozen Poisson arrivals cannot tell a queue 30% over its service rate from one that keeps up.
The waiting time counts no request's own service, so a trace whose later requests are longer does not read as a growing
queue unless they must wait.

The judged window leaves out the warm-up, as steady-state simulation output analysis does (Law, Simulation Modeling and
Analysis, the problem of the initial transient): the first requests arrive at an empty system. The margin is one mean
end-to-end latency, the time the system's population takes to turn over (Little's law, L = lambda W), and the window
must last two more, so a run whose arrivals span less than three mean latencies is not judged. No drain margin is
needed: requests are admitted first come first served, so none waits on a later arrival. A search that cannot judge a
rate does not call it sustainable and says so (sim/capacity.py). This is the question the capacity searches of LLM
serving bound the scheduling delay for (Vidur's, microsoft/vidur vidur/config_optimizer/config_explorer/
capacity_search.py: P99 scheduling delay at most 5 s; Sarathi-Serve's, Agrawal et al., OSDI 2024: median scheduling
delay at most 2 s, as tests/explore/test_paper_sarathi.py reads it), asked of the delay's growth rather than its size,
so that it holds for designs and SLOs of any time scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

GROWTH_LIMIT = 0.05  # s of waiting per s of arrivals: a rate 5% above the service rate (module docstring)
# Turnover times (mean end-to-end latencies) a judged run's arrivals must span: a warm-up and the judged window.
SPAN_LATENCIES = 3
# Batches of the judged window's requests, each a point of the fit (10 to 30 batches: Schmeiser, Batch size
# effects in the analysis of simulation output, Operations Research 30(3), 1982), and the fewest requests a
# batch's median stands on.
BATCHES = 10
MIN_BATCH_REQUESTS = 5


@dataclass(frozen=True, kw_only=True)
class Stability:
    """The verdict on one run: whether it could be judged, how fast its waiting grows, and why when it is not
    stable."""

    judged: bool
    growth: float  # seconds of waiting per second of arrivals over the judged window; NaN when not judged
    limit: float = GROWTH_LIMIT
    reason: str = ""  # why the run is not judged or not stable; '' when stable

    @property
    def stable(self) -> bool:
        """Judged, and its waiting grows no faster than the limit."""
        return self.judged and self.growth <= self.limit


def queue_stability(arrival_s, wait_s, e2e_s, *, growth_limit: float = GROWTH_LIMIT) -> Stability:
    """The queue-growth verdict on a run's requests (aligned arrays in arrival order): their arrival times, the
    time each waited outside any running batch and their end-to-end latencies (module docstring). Deterministic: a
    pure function of the arrays."""
    arrival_s = np.asarray(arrival_s, dtype=float)
    wait_s = np.asarray(wait_s, dtype=float)

    def unjudged(reason: str) -> Stability:
        return Stability(judged=False, growth=math.nan, limit=growth_limit, reason=reason)

    if arrival_s.size == 0:
        return unjudged("no requests")
    latency_s = float(np.mean(e2e_s))
    span_s = float(arrival_s[-1] - arrival_s[0])
    if span_s < SPAN_LATENCIES * latency_s:
        return unjudged(f"its {arrival_s.size} arrivals span {span_s:.3g} s, under {SPAN_LATENCIES} mean end-to-end "
                        f"latencies ({latency_s:.3g} s each), too short to judge past the warm-up")
    judged = np.flatnonzero(arrival_s >= arrival_s[0] + latency_s)
    if judged.size < BATCHES * MIN_BATCH_REQUESTS:
        return unjudged(f"{judged.size} requests arrive past the warm-up, under {BATCHES} batches of "
                        f"{MIN_BATCH_REQUESTS}")
    batches = np.array_split(judged, BATCHES)
    time_s = np.array([np.median(arrival_s[b]) for b in batches])
    waited_s = np.array([np.median(wait_s[b]) for b in batches])
    growth = float(np.polyfit(time_s, waited_s, 1)[0])
    # The slope's standard error from the batch-to-batch slopes: a growing queue's waits are a random walk with
    # drift, whose steps (unlike its levels) are independent.
    spans_s = np.diff(time_s)
    if not (spans_s > 0).all():  # batches arriving at one instant (rounded timestamps): no batch-to-batch slope
        return unjudged("batches of its requests arrive at the same time, so the growth of their waits has no "
                        "standard error")
    steps = np.diff(waited_s) / spans_s
    error = float(np.std(steps, ddof=1) / math.sqrt(steps.size))
    if growth - error > growth_limit:
        return Stability(judged=True, growth=growth, limit=growth_limit,
                         reason=f"its queue grows: the time requests wait for a batch rises {growth:.3g} s per s of "
                                f"arrivals (limit {growth_limit:g}, standard error {error:.2g})")
    if growth + error > growth_limit:
        return unjudged(f"its waits vary too much to tell their growth ({growth:.3g} s per s, standard error "
                        f"{error:.2g}) from the limit of {growth_limit:g}")
    return Stability(judged=True, growth=growth, limit=growth_limit)
