"""highest_rate (sim/capacity.py) on a known threshold: bisection alone, and bracketing from a guess first; and
search_capacity, the serving capacity search: the SLO and the queue-growth test together, on an M/D/1 replica of
the tiny Llama (one request at a time, one fixed service time S computed by hand) and on known verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernels.shapes import step_shape
from sim.admission import Admission
from sim.capacity import RateVerdict, highest_rate, rate_verdict, search_capacity
from sim.kv_cache import PagedKVCache
from sim.schedulers import SchedulerLimits, make_scheduler
from sim.serving import serve, serve_pools, serving_memory
from sim.serving_metrics import SLO
from sim.stability import GROWTH_LIMIT, Stability
from tests.sim.autoscaled_pool import pool
from workloads.requests import Fixed, Poisson, Uniform, sample_conversations, sample_requests

THRESHOLD = 7.3  # req/s: meets(rate) holds up to here


def _counting():
    asked: list[float] = []

    def meets(rate: float) -> bool:
        asked.append(rate)
        return rate <= THRESHOLD

    return meets, asked


@pytest.mark.parametrize("guess", [None, 0.5, 7.0, 8.0, 60.0])
def test_answer_is_within_tolerance_below_the_threshold(guess):
    meets, _ = _counting()
    rate = highest_rate(meets, low=0.1, high=100.0, rel_tol=0.05, guess=guess)
    assert THRESHOLD / 1.05 <= rate <= THRESHOLD


def test_a_guess_keeps_every_run_within_a_factor_two_of_the_bracket():
    """From a guess of 5, the bracket is (5, 10): nothing below 5 or above 10 is run, where bisection over
    [0.1, 100] runs both ends."""
    meets, asked = _counting()
    highest_rate(meets, low=0.1, high=100.0, rel_tol=0.05, guess=5.0)
    assert min(asked) == 5.0 and max(asked) == 10.0
    meets, asked = _counting()
    highest_rate(meets, low=0.1, high=100.0, rel_tol=0.05)
    assert min(asked) == 0.1 and max(asked) == 100.0


@pytest.mark.parametrize("guess", [None, 3.0])
def test_bounds_answer_when_the_threshold_lies_outside(guess):
    assert highest_rate(lambda rate: True, low=1.0, high=50.0, guess=guess) == 50.0
    assert highest_rate(lambda rate: False, low=1.0, high=50.0, guess=guess) == 0.0


# ---- search_capacity: the SLO and the queue-growth test (sim/stability.py) together ----------------------------

PROMPT, OUTPUT = 32, 8  # every request's lengths: a fixed service time one at a time
BLOCK = 16


def _service_s(costs) -> float:
    """One request alone, by hand: its prefill, then a decode step attending prompt + 1, prompt + 2, ... keys.
    One at a time (max_seqs 1), the replica is a D server of rate 1 / this."""
    prefill = costs.price(step_shape([(PROMPT, 0)], sampled=1)).time_s
    return prefill + sum(costs.price(step_shape(decode_kv=[PROMPT + 1 + k], sampled=1)).time_s
                         for k in range(OUTPUT - 1))


def _run(costs, rate: float, count: int, slo: SLO, seed: int = 0):
    """Poisson arrivals at `rate` on one replica of the tiny Llama serving one request at a time (M/D/1)."""
    requests = sample_requests(arrivals=Poisson(rate_per_s=rate), prompt=Fixed(tokens=PROMPT),
                               output=Fixed(tokens=OUTPUT), count=count, seed=seed)
    kv_per_token = 2 * 2 * 16 * 2 * 2  # K and V x 2 KV heads x 16 dims x 2 B x 2 layers (the tiny Llama)
    blocks = 10_000
    memory = serving_memory(capacity_B=blocks * BLOCK * kv_per_token, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=kv_per_token, block_tokens=BLOCK)
    kv = PagedKVCache(capacity_blocks=blocks, block_tokens=BLOCK)
    scheduler = make_scheduler("continuous", SchedulerLimits(max_seqs=1))
    return serve(costs, requests, scheduler, kv, memory, costs.device.idle_power_W, slo=slo)


@pytest.mark.parametrize("count", [200, 800])
def test_md1_above_its_service_rate_is_judged_unstable_and_below_it_stable(costs, count):
    """At 1.5 / S the queue of a one-at-a-time replica grows about 0.5 s per s of arrivals (load - 1; bounded
    loosely both sides for the Poisson draw) however many requests; at 0.5 / S it keeps up."""
    service_s = _service_s(costs)
    slo = SLO(ttft_s=20 * service_s, attainment=0.9)
    over = rate_verdict(_run(costs, 1.5 / service_s, count, slo)).stability
    assert over.judged and not over.stable and 0.3 < over.growth < 0.7
    under = rate_verdict(_run(costs, 0.5 / service_s, count, slo)).stability
    assert under.judged and under.stable


def test_few_requests_pass_a_rate_above_the_service_rate_on_the_slo_alone_but_not_with_the_stability_test(costs):
    """40 requests at a one-at-a-time replica: the search on the SLO alone (TTFT within 20 S for 90%) puts its
    capacity above its service rate 1 / S (at 1.5 / S the i-th waits about i S / 3, the 36th 12 S: within the
    limit); with the stability test no rate above 1 / S passes, and the result says the requests were too few."""
    service_s = _service_s(costs)
    slo = SLO(ttft_s=20 * service_s, attainment=0.9)
    low, high = 0.1 / service_s, 10 / service_s
    old = highest_rate(lambda rate: rate_verdict(_run(costs, rate, 40, slo)).meets_slo, low=low, high=high)
    assert old > 1.1 / service_s
    found = search_capacity(lambda rate: rate_verdict(_run(costs, rate, 40, slo)), low=low, high=high)
    assert found.rate_per_s <= 1 / service_s
    assert not found.judged and "not judged" in found.note


def test_enough_requests_find_a_capacity_under_the_service_rate(costs):
    """400 requests: the capacity lies between half the service rate (which meets the SLO and keeps up) and the
    service rate (to the growth limit)."""
    service_s = _service_s(costs)
    slo = SLO(ttft_s=20 * service_s, attainment=0.9)
    found = search_capacity(lambda rate: rate_verdict(_run(costs, rate, 400, slo)), low=0.1 / service_s,
                            high=10 / service_s)
    assert 0.5 / service_s < found.rate_per_s <= (1 + GROWTH_LIMIT) / service_s


def test_the_same_seed_gives_the_same_search(costs):
    service_s = _service_s(costs)
    slo = SLO(ttft_s=20 * service_s, attainment=0.9)

    def search(seed: int):
        found = search_capacity(lambda rate: rate_verdict(_run(costs, rate, 60, slo, seed)), low=0.1 / service_s,
                                high=10 / service_s)
        return found.rate_per_s, found.judged, {r: repr(v.stability.growth) for r, v in found.verdicts.items()}

    first = search(3)
    assert search(3) == first
    assert first[0] > 0 and len(first[2]) > 2  # the search ran and found a rate


def _verdict(meets: bool, judged: bool, growth: float = 0.0) -> RateVerdict:
    reason = "" if judged and growth <= GROWTH_LIMIT else ("too short to judge" if not judged else "queue grows")
    return RateVerdict(meets_slo=meets, stability=Stability(judged=judged, growth=growth if judged else math.nan,
                                                            reason=reason))


@pytest.mark.parametrize(("above", "judged"), [
    (_verdict(meets=False, judged=True), True),  # the SLO stopped it
    (_verdict(meets=False, judged=False), True),  # the SLO failed too: a short run only flatters an SLO
    (_verdict(meets=True, judged=True, growth=0.3), True),  # a growing queue stopped it
    (_verdict(meets=True, judged=False), False),  # only the run's length stopped it
])
def test_a_capacity_is_judged_unless_only_a_short_run_stopped_it(above, judged):
    """Sustainable up to THRESHOLD; above it every run gives `above`. Not judged only where the rate above met the
    SLO and its run was too short to judge."""
    found = search_capacity(lambda rate: _verdict(True, True) if rate <= THRESHOLD else above, low=0.1,
                            high=100.0)
    assert THRESHOLD / 1.05 <= found.rate_per_s <= THRESHOLD
    assert found.judged == judged
    assert (found.note == "") == judged
    assert found.metrics()["capacity_judged"] == float(judged)


def test_no_sustainable_rate_is_capacity_zero():
    found = search_capacity(lambda rate: _verdict(True, False), low=1.0, high=50.0)
    assert found.rate_per_s == 0.0 and not found.judged and "too short to judge" in found.note



def test_conversations_below_the_service_rate_are_judged_stable(costs):
    """Conversations of 8 turns, each 20 S after the previous answer, at 0.9 / S requests per second on a
    one-at-a-time replica keep up, and are judged to: the queue test reads the requests in the order they arrive (a
    later turn's when it comes), not in the order they were drawn, a conversation's turns together, whose batches'
    arrival times do not rise."""
    service_s = _service_s(costs)
    requests = sample_conversations(arrivals=Poisson(rate_per_s=0.9 / service_s / 8), prompt=Fixed(tokens=PROMPT),
                                    output=Uniform(low=2, high=16), count=200, turns=8, think_s=20 * service_s,
                                    seed=0)
    kv_per_token = 2 * 2 * 16 * 2 * 2
    blocks = 10_000
    memory = serving_memory(capacity_B=blocks * BLOCK * kv_per_token, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=kv_per_token, block_tokens=BLOCK)
    kv = PagedKVCache(capacity_blocks=blocks, block_tokens=BLOCK)
    result = serve(costs, requests, make_scheduler("continuous", SchedulerLimits(max_seqs=1)), kv, memory,
                   costs.device.idle_power_W, slo=SLO(ttft_s=20 * service_s, attainment=0.9))
    assert np.any(np.diff(result.records.arrival_s) < 0)  # drawn order is not arrival order
    stability = rate_verdict(result).stability
    assert stability.judged and stability.stable, stability.reason


def test_a_search_that_sustains_the_top_of_its_range_says_the_capacity_is_at_least_that():
    """A design sustaining every rate up to 3 req/s: searched in [0.5, 2] it returns 2, the range's high, marked at
    the top (a lower bound); searched in [0.5, 8] it stops below 3, not at the top."""
    from sim.stability import Stability

    def judge(rate: float) -> RateVerdict:
        return RateVerdict(meets_slo=rate <= 3.0, stability=Stability(judged=True, growth=0.0))

    capped = search_capacity(judge, low=0.5, high=2.0)
    assert capped.rate_per_s == 2.0 and capped.at_top and capped.metrics()["capacity_at_top"] == 1.0
    found = search_capacity(judge, low=0.5, high=8.0)
    assert 2.85 <= found.rate_per_s <= 3.0 and not found.at_top and found.metrics()["capacity_at_top"] == 0.0


def test_a_rate_whose_overflow_the_gateway_rejects_is_not_sustainable(costs):
    """The one-at-a-time replica behind a gateway that rejects arrivals while more than four prompts wait: at 2 / S
    its queue stays short and the requests it serves meet the SLO (an attainment of 0.3 asked), but it serves about
    1 / S and rejects the rest, about one request for each served (lambda / mu - 1 = 1, bounded loosely for the
    Poisson draw): not sustainable. At 0.5 / S it rejects (almost) none and keeps up."""
    service_s = _service_s(costs)
    slo = SLO(ttft_s=20 * service_s, attainment=0.3)
    admission = Admission(prefill_tokens=4 * PROMPT)

    def run(rate: float):
        requests = sample_requests(arrivals=Poisson(rate_per_s=rate), prompt=Fixed(tokens=PROMPT),
                                   output=Fixed(tokens=OUTPUT), count=400, seed=0)
        return serve_pools([pool(costs, None, max_seqs=1)], requests, slo=slo, admission=admission)

    over = rate_verdict(run(2 / service_s))
    assert over.meets_slo and not over.sustainable
    assert over.stability.judged and 0.6 < over.stability.growth < 1.4
    assert rate_verdict(run(0.5 / service_s)).sustainable
