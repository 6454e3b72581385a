"""Slowdown SLOs (sim/slowdown.py): a request's unloaded latencies are what a replica serving it alone gives, and
the SLO names every percentile limit it breaks (Splitwise's Table 6 by default)."""

from __future__ import annotations

import numpy as np
import pytest

from hw_models.registry import load_device
from kernels.formats import NumericFormat
from kernels.shapes import StepTemplate, step_shape
from sim.costs import IterationCostModel
from sim.kv_cache import PagedKVCache
from sim.schedulers import SchedulerLimits, make_scheduler
from sim.serving import serve, serving_memory
from sim.serving_metrics import RequestRecords
from sim.slowdown import SlowdownSLO, Unloaded, slowdowns, unloaded_latencies
from workloads.requests import RequestSet


@pytest.fixture(scope="module")
def costs(tiny_llama, trace_of) -> IterationCostModel:
    def trace(phase: str, batch: int, prompt: int):
        if phase == "decode":
            return trace_of(tiny_llama, "decode", batch, 1, prompt)
        return trace_of(tiny_llama, "prefill", batch, prompt)

    template = StepTemplate.from_model(tiny_llama, NumericFormat(), trace)
    return IterationCostModel(load_device("h100-sxm"), template, execution="graphs")


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
