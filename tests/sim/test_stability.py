"""The queue-growth test (sim/stability.py) on queues solved by hand: D/D/1 (evenly spaced arrivals, one fixed
service time, FIFO), whose waits are exactly linear in the arrival index, and M/D/1 by Lindley's recursion
(w[i+1] = max(0, w[i] + S - gap[i])), a queue model independent of the simulator."""

from __future__ import annotations

import numpy as np
import pytest

from sim.stability import BATCHES, GROWTH_LIMIT, MIN_BATCH_REQUESTS, SPAN_LATENCIES, queue_stability

SERVICE_S = 0.2  # one request's fixed service time


def _dd1(load: float, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(arrival_s, wait_s, e2e_s) of a D/D/1 queue at `load` = arrival rate x SERVICE_S, starting empty: the
    i-th arrival (from 0) waits max(0, i (S - gap)), so above load 1 each waits (load - 1) x its arrival time."""
    gap_s = SERVICE_S / load
    arrival_s = gap_s * np.arange(count)
    wait_s = np.maximum(0.0, np.arange(count) * (SERVICE_S - gap_s))
    return arrival_s, wait_s, wait_s + SERVICE_S


def _md1(load: float, count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """M/D/1 by Lindley's recursion: exponential gaps of mean SERVICE_S / load."""
    gaps_s = np.random.default_rng(seed).exponential(SERVICE_S / load, count)
    arrival_s = np.cumsum(gaps_s)
    wait_s = np.zeros(count)
    for i in range(1, count):
        wait_s[i] = max(0.0, wait_s[i - 1] + SERVICE_S - gaps_s[i])
    return arrival_s, wait_s, wait_s + SERVICE_S


@pytest.mark.parametrize("load", [1.5, 1.2, 1.04, 1.06])
def test_dd1_growth_is_load_less_one(load):
    """Above load 1 the waits are (load - 1) x arrival time exactly, so the growth is load - 1: within the 5% limit
    at 1.04, past it at 1.06."""
    verdict = queue_stability(*_dd1(load, 400))
    assert verdict.judged
    assert verdict.growth == pytest.approx(load - 1, rel=1e-9)
    assert verdict.stable == (load - 1 <= GROWTH_LIMIT)
    assert verdict.stable or "queue grows" in verdict.reason


@pytest.mark.parametrize("load", [0.5, 0.99])
def test_dd1_below_load_one_never_waits(load):
    verdict = queue_stability(*_dd1(load, 400))
    assert verdict.judged and verdict.growth == 0.0 and verdict.stable and verdict.reason == ""


@pytest.mark.parametrize("seed", range(5))
def test_md1_stable_below_load_one_and_growing_above(seed):
    """M/D/1 at load 0.7 (mean wait rho S / (2 (1 - rho)) = 0.23 s, Pollaczek-Khinchine) keeps up; at load 1.3 its
    waits grow at about 0.3 s per s (the fluid slope, bounded loosely on both sides for the arrivals' noise)."""
    stable = queue_stability(*_md1(0.7, 2000, seed))
    assert stable.judged and stable.stable, stable
    growing = queue_stability(*_md1(1.3, 2000, seed))
    assert growing.judged and not growing.stable
    assert 0.15 < growing.growth < 0.45


def test_a_run_shorter_than_three_latencies_is_not_judged():
    """20 arrivals 0.1 s apart span 1.9 s; at load 2 (S = 0.2 s) the mean E2E is S + mean wait = 0.2 + 0.95 s, and
    three of them (3.45 s) exceed the span: not judged, and not stable either."""
    arrival_s, wait_s, e2e_s = _dd1(2.0, 20)
    assert arrival_s[-1] - arrival_s[0] < SPAN_LATENCIES * e2e_s.mean()
    verdict = queue_stability(arrival_s, wait_s, e2e_s)
    assert not verdict.judged and not verdict.stable and np.isnan(verdict.growth)
    assert "too short to judge" in verdict.reason


def test_too_few_requests_past_the_warm_up_are_not_judged():
    """Arrivals 1 s apart with no wait, each 0.2 s long: the warm-up margin (one mean latency, 0.2 s) leaves out
    the first, so 51 requests leave 50 = BATCHES x MIN_BATCH_REQUESTS to judge and 50 leave 49."""
    def run(count: int):
        arrival_s = np.arange(count, dtype=float)
        return queue_stability(arrival_s, np.zeros(count), np.full(count, SERVICE_S))
    assert BATCHES * MIN_BATCH_REQUESTS == 50
    assert run(51).judged
    verdict = run(50)
    assert not verdict.judged and "49 requests arrive past the warm-up" in verdict.reason


@pytest.mark.parametrize("load", [1.15, 1.3])
def test_noisy_short_runs_over_the_service_rate_are_never_called_stable(load):
    """M/D/1 over 100 requests: the waits' random walk moves about S sqrt(lambda t) around its drift, so the slope
    is known to about load / sqrt(n), some 0.1 s per s, as much as the overload. Over ten draws none is called
    stable; those too noisy to tell are not judged (some are, at these loads)."""
    verdicts = [queue_stability(*_md1(load, 100, seed)) for seed in range(10)]
    assert not any(v.stable for v in verdicts)
    assert any(not v.judged and "vary too much" in v.reason for v in verdicts)


def test_batches_arriving_at_one_instant_are_not_judged():
    """Arrival times rounded to whole seconds put whole batches at one instant: the batch-to-batch slopes divide by
    zero, so no error bounds the growth, and the run is not judged (it was once judged with an empty reason)."""
    arrival_s = np.repeat(np.arange(8.0), 100)  # 8 bursts of 100 requests, one a second
    wait_s = 0.5 * arrival_s  # waits growing 0.5 s per s, ten times the limit
    verdict = queue_stability(arrival_s, wait_s, np.full(arrival_s.size, 0.5))
    assert not verdict.judged and not verdict.stable and "same time" in verdict.reason
