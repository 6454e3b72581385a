"""Slowdown SLOs (sim/slowdown.py): a request's unloaded latencies are what a replica serving it alone gives, and
the SLO names every percentile limit it breaks (Splitwise's Table 6 by default)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernels.shapes import step_shape
from sim.kv_cache import PagedKVCache
from sim.schedulers import SchedulerLimits, make_scheduler
from sim.serving import Pool, serve, serve_pools, serving_memory
from sim.serving_metrics import SLO, RequestRecords, summarize
from sim.slowdown import SLOWDOWN_METRICS, SlowdownSLO, Unloaded, slowdowns, unloaded_latencies
from workloads.requests import RequestSet


def test_unloaded_latencies_are_the_iterations_a_lone_request_runs(costs):
    """Hand sum: a 5-token prompt with 3 outputs is one prefill of 5 tokens, then decodes attending to 6 and 7 keys."""
    unloaded = unloaded_latencies(costs, [5], [3])

    def price(chunks, kv):
        return costs.price(step_shape(chunks, kv, sampled=1)).time_s

    tbt = (price([], [6]) + price([], [7])) / 2
    assert unloaded.ttft_s[0] == pytest.approx(price([(5, 0)], []))
    assert unloaded.tbt_s[0] == pytest.approx(tbt)
    assert unloaded.e2e_s[0] == pytest.approx(price([(5, 0)], []) + 2 * tbt)
    one_token = unloaded_latencies(costs, [5], [1])
    assert np.isnan(one_token.tbt_s[0]) and one_token.e2e_s[0] == pytest.approx(one_token.ttft_s[0])


def test_requests_served_far_apart_have_no_slowdown(costs):
    """Requests arriving long after each other finish are each served alone by a continuous-batching replica: their
    measured latencies are the unloaded ones, every slowdown is 1 and Splitwise's SLO holds."""
    requests = RequestSet(arrival_s=np.array([0.0, 100.0, 200.0]), prompt_tokens=np.array([7, 30, 12]),
                          output_tokens=np.array([4, 1, 9]))
    kv_per_token = 2 * 2 * 16 * 2 * 2  # K and V x 2 KV heads x 16 dims x 2 B x 2 layers (the tiny Llama)
    memory = serving_memory(capacity_B=1000 * 16 * kv_per_token, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=kv_per_token, block_tokens=16)
    scheduler = make_scheduler("continuous", SchedulerLimits())
    result = serve(costs, requests, scheduler, PagedKVCache(capacity_blocks=memory.kv_blocks, block_tokens=16),
                   memory, idle_power_W=0.0)
    unloaded = unloaded_latencies(costs, requests.prompt_tokens, requests.output_tokens)
    per_request = slowdowns(result.records, unloaded)
    for name in ("ttft", "e2e"):
        np.testing.assert_allclose(per_request[name], 1.0, rtol=1e-9)
    np.testing.assert_allclose(per_request["tbt"][[0, 2]], 1.0, rtol=1e-9)
    assert np.isnan(per_request["tbt"][1])  # one output token: no time between tokens
    assert SlowdownSLO().met(per_request)


def _records(ttft_s, tpot_s) -> RequestRecords:
    """Requests arriving at 0 with 3 outputs each, first token at ttft_s, then two tokens tpot_s apart."""
    ttft_s, tpot_s = np.asarray(ttft_s, float), np.asarray(tpot_s, float)
    zeros = np.zeros(len(ttft_s))
    return RequestRecords(arrival_s=zeros, scheduled_s=zeros, first_token_s=ttft_s, finish_s=ttft_s + 2 * tpot_s,
                          prompt_tokens=np.full(len(ttft_s), 10), output_tokens=np.full(len(ttft_s), 3),
                          preemptions=np.zeros(len(ttft_s), dtype=int))


def test_slo_names_each_broken_percentile():
    """TTFT slowdowns 1, 1, 1, 10 (numpy's linear percentiles): p50 1, p90 1 + 0.7 x 9 = 7.3 > 3, p99 1 + 0.97 x 9
    = 9.73 > 6. TBT and E2E stay at 1 (E2E's unloaded 1 + 2 x 1 = 3 s against 3, 3, 3, 12)."""
    unloaded = Unloaded(ttft_s=np.ones(4), tbt_s=np.ones(4), output_tokens=np.full(4, 3))
    per_request = slowdowns(_records([1, 1, 1, 10], [1, 1, 1, 1]), unloaded)
    np.testing.assert_allclose(per_request["e2e"], [1, 1, 1, 4])
    assert SlowdownSLO(e2e=()).misses(per_request) == ["ttft p90 7.30 > 3.0", "ttft p99 9.73 > 6.0"]
    assert not SlowdownSLO(ttft=((50, 2.0),), e2e=()).misses(per_request)
    # The median request 1.3x slower between tokens breaks Splitwise's 1.25x P50 TBT limit and nothing else.
    slower = slowdowns(_records([1, 1, 1, 1], [1.3, 1.3, 1.3, 1.3]), unloaded)
    assert SlowdownSLO(e2e=()).misses(slower) == ["tbt p50 1.30 > 1.25"]


def test_slo_and_records_are_checked():
    with pytest.raises(ValueError, match="tbt: found limit 0.9 at p50"):
        SlowdownSLO(tbt=((50, 0.9),))
    unloaded = Unloaded(ttft_s=np.ones(2), tbt_s=np.ones(2), output_tokens=np.full(2, 3))
    with pytest.raises(ValueError, match="records: found 1 requests"):
        slowdowns(_records([1], [1]), unloaded)


# ---- a slowdown SLO in a serving run's summary (sim/serving_metrics.py summarize, sim/serving.py serve_pools) ----

def test_summary_reports_slowdown_percentiles_and_judges_every_limit():
    """TTFT slowdowns 1, 1, 1, 10 and E2E 1, 1, 1, 4 (unloaded E2E 3 s against 3, 3, 3, 12), TBT 1: numpy's linear
    rule gives TTFT p90 1 + 0.7 x 9 = 7.3, p99 9.73; E2E p90 1 + 0.7 x 3 = 3.1, p99 1 + 0.97 x 3 = 3.91. Splitwise's
    TTFT p90 limit of 3 breaks; a P50-only TTFT limit of 2 holds. No per-request limits: every request is good and
    there is no attainment."""
    unloaded = Unloaded(ttft_s=np.ones(4), tbt_s=np.ones(4), output_tokens=np.full(4, 3))
    records = _records([1, 1, 1, 10], [1, 1, 1, 1])
    summary = summarize(records, makespan_s=20.0, slo=SLO(slowdown=SlowdownSLO()), unloaded=unloaded)
    expected = {"slowdown_ttft_p50": 1.0, "slowdown_ttft_p90": 7.3, "slowdown_ttft_p99": 9.73,
                "slowdown_tbt_p50": 1.0, "slowdown_tbt_p90": 1.0, "slowdown_tbt_p99": 1.0,
                "slowdown_e2e_p50": 1.0, "slowdown_e2e_p90": 3.1, "slowdown_e2e_p99": 3.91}
    assert tuple(summary)[-len(SLOWDOWN_METRICS):] == SLOWDOWN_METRICS
    for name, value in expected.items():
        assert summary[name] == pytest.approx(value), name
    assert summary["meets_slo"] == 0.0
    assert math.isnan(summary["slo_attainment"]) and summary["goodput_rps"] == pytest.approx(4 / 20.0)
    median_only = SLO(slowdown=SlowdownSLO(ttft=((50, 2.0),), tbt=(), e2e=()))
    assert summarize(records, makespan_s=20.0, slo=median_only, unloaded=unloaded)["meets_slo"] == 1.0
    # Without a slowdown SLO the summary has no slowdown columns (results written before them keep their columns).
    assert not set(SLOWDOWN_METRICS) & set(summarize(records, makespan_s=20.0, slo=SLO(ttft_s=5.0)))


@pytest.mark.parametrize("ttft_s, slowdown, meets", [
    (20.0, SlowdownSLO(ttft=((50, 2.0),), tbt=(), e2e=()), 1.0),  # both hold
    (5.0, SlowdownSLO(ttft=((50, 2.0),), tbt=(), e2e=()), 0.0),  # 3 of 4 within 5 s: 0.75 < 0.9
    (20.0, SlowdownSLO(ttft=((90, 3.0),), tbt=(), e2e=()), 0.0),  # p90 TTFT slowdown 7.3 > 3
])
def test_a_point_meets_a_mixed_slo_only_when_attainment_and_every_slowdown_limit_hold(ttft_s, slowdown, meets):
    unloaded = Unloaded(ttft_s=np.ones(4), tbt_s=np.ones(4), output_tokens=np.full(4, 3))
    slo = SLO(ttft_s=ttft_s, slowdown=slowdown)
    assert summarize(_records([1, 1, 1, 10], [1, 1, 1, 1]), makespan_s=20.0, slo=slo,
                     unloaded=unloaded)["meets_slo"] == meets


def test_a_slowdown_slo_needs_the_unloaded_run():
    with pytest.raises(ValueError, match="unloaded: found none"):
        summarize(_records([1], [1]), makespan_s=1.0, slo=SLO(slowdown=SlowdownSLO()))


def test_a_cached_shared_prefix_is_not_prefilled_alone(costs):
    """A replica with a 16-token prefix (one block of 16) cached prefills 24 of a 40-token prompt over 16 cached
    keys; a prompt no longer than the prefix still computes its last token, so finds no whole block before it and
    prefills all of it (sim/kv_cache.py cached_prefix)."""
    unloaded = unloaded_latencies(costs, [40, 16, 10], [1, 1, 1], prefix_tokens=16, block_tokens=16)
    assert unloaded.ttft_s[0] == pytest.approx(costs.price(step_shape([(24, 16)], [], sampled=1)).time_s)
    assert unloaded.ttft_s[1] == pytest.approx(costs.price(step_shape([(16, 0)], [], sampled=1)).time_s)
    assert unloaded.ttft_s[2] == pytest.approx(costs.price(step_shape([(10, 0)], [], sampled=1)).time_s)


def test_a_pool_prices_its_requests_alone_once_for_every_rate(costs):
    """A capacity search replays the same lengths at several rates: the unloaded run is computed on the first and
    reused (the same object), and a slowdown-free SLO computes none."""
    kv_per_token = 2 * 2 * 16 * 2 * 2  # K and V x 2 KV heads x 16 dims x 2 B x 2 layers (the tiny Llama)
    memory = serving_memory(capacity_B=1000 * 16 * kv_per_token, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=kv_per_token, block_tokens=16)
    pool = Pool(name="serve", role="serve", replicas=1, costs=costs, scheduler="continuous",
                limits=SchedulerLimits(), memory=memory, idle_power_W=0.0)
    prompts, outputs = np.array([7, 30, 12]), np.array([4, 2, 9])
    runs = [serve_pools([pool], RequestSet(arrival_s=np.arange(3) / rate, prompt_tokens=prompts,
                                           output_tokens=outputs), slo=SLO(slowdown=SlowdownSLO()))
            for rate in (1.0, 1000.0)]
    assert runs[0].unloaded is runs[1].unloaded and len(pool.alone) == 1
    assert runs[0].metrics()["slowdown_e2e_p50"] == pytest.approx(1.0)  # a second apart: each request alone
    assert runs[1].metrics()["slowdown_e2e_p99"] > 1.0  # a millisecond apart: batched together
    plain = serve_pools([pool], RequestSet(arrival_s=np.zeros(3), prompt_tokens=prompts, output_tokens=outputs),
                        slo=SLO(ttft_s=1.0))
    assert plain.unloaded is None and "slowdown_e2e_p50" not in plain.metrics()
