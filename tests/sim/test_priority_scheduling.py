"""Priority scheduling (sim/schedulers/base.py, queue policy 'priority', vLLM's `--scheduling-policy priority`) and the
urgent requests' metrics (sim/serving_metrics.py urgent_metrics), against hand cases and closed forms.

The tiny Llama on an H100 (tests/sim/conftest.py) keeps each run to a fraction of a second.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernels.shapes import step_shape
from sim.kv_cache import PagedKVCache
from sim.schedulers import EngineState, SchedulerLimits, Sequence, make_scheduler
from sim.serving import serve, serving_memory
from sim.serving_metrics import SLO, RequestRecords, summarize, urgent_metrics
from workloads.requests import Poisson, RequestSet, Uniform, sample_requests

BLOCK = 16
KV_PER_TOKEN = 2 * 2 * 16 * 2 * 2  # K and V x 2 KV heads x 16 dims x 2 B x 2 layers (the tiny Llama)


def _serve(costs, requests: RequestSet, policy: str, *, blocks: int = 100_000, **limits):
    memory = serving_memory(capacity_B=blocks * BLOCK * KV_PER_TOKEN, weights_B=0.0, activations_B=0.0,
                            kv_bytes_per_token=KV_PER_TOKEN, block_tokens=BLOCK)
    kv = PagedKVCache(capacity_blocks=blocks, block_tokens=BLOCK)
    scheduler = make_scheduler("continuous", SchedulerLimits(queue_policy=policy, **limits))
    return serve(costs, requests, scheduler, kv, memory, costs.device.idle_power_W)


def _together(priority: list[int], prompt: int, output: int) -> RequestSet:
    count = len(priority)
    return RequestSet(arrival_s=np.zeros(count), prompt_tokens=np.full(count, prompt),
                      output_tokens=np.full(count, output), priority=np.array(priority))


def test_waiting_requests_are_admitted_most_urgent_first_then_by_arrival():
    """Five requests wait, priorities 2, 1, 0, 1, 0 (lower first): the priority policy admits 2 and 4 (priority 0, in
    arrival order), then 1 and 3, then 0; fcfs keeps arrival order."""
    def admitted(policy: str) -> list[int]:
        state = EngineState(kv=PagedKVCache(capacity_blocks=1000, block_tokens=BLOCK))
        for index, priority in enumerate((2, 1, 0, 1, 0)):
            state.waiting.append(Sequence(index=index, arrival_s=0.1 * index, prompt=20, output=4, priority=priority))
        limits = SchedulerLimits(max_seqs=16, max_batched_tokens=10_000, queue_policy=policy)
        return [seq.index for seq, _ in make_scheduler("continuous", limits).next_batch(state).prefills]

    assert admitted("priority") == [2, 4, 1, 3, 0]
    assert admitted("fcfs") == [0, 1, 2, 3, 4]


def test_when_blocks_run_out_the_least_urgent_is_preempted_not_the_newest():
    """Three sequences decode, each holding 2 blocks of a 6-block cache and needing a third for its next token. Under
    fcfs the newest (index 2) is preempted; under the priority policy the least urgent (index 0, priority 1), though
    it is the oldest."""
    def preempted(policy: str) -> list[int]:
        kv = PagedKVCache(capacity_blocks=6, block_tokens=BLOCK)
        state = EngineState(kv=kv)
        for index, priority in enumerate((1, 0, 0)):
            seq = Sequence(index=index, arrival_s=float(index), prompt=2 * BLOCK, output=8, priority=priority)
            seq.computed = 2 * BLOCK  # its prompt prefilled: its next token needs a third block
            kv.hold(index, 2 * BLOCK)
            state.running.append(seq)
        limits = SchedulerLimits(max_seqs=16, watermark=0.0, queue_policy=policy)
        make_scheduler("continuous", limits).next_batch(state)
        return sorted(seq.index for seq in state.waiting)

    assert preempted("fcfs") == [2]
    assert preempted("priority") == [0]


def test_an_urgent_request_behind_others_is_served_first(costs):
    """D/D/1 with one server (max_seqs=1): three like requests arrive together, the last urgent. Under the priority
    policy it is served first, its TTFT one prefill alone; under fcfs it waits for the two before it, its TTFT two
    whole services plus a prefill (each priced by hand from the iterations one request runs alone)."""
    prompt, output = 24, 6
    prefill_s = costs.price(step_shape([(prompt, 0)], sampled=1)).time_s
    service_s = prefill_s + sum(costs.price(step_shape(decode_kv=[prompt + 1 + step], sampled=1)).time_s
                                for step in range(output - 1))
    requests = _together([1, 1, 0], prompt, output)
    first = _serve(costs, requests, "priority", max_seqs=1)
    plain = _serve(costs, requests, "fcfs", max_seqs=1)
    assert first.records.ttft_s[2] == pytest.approx(prefill_s, rel=1e-9)
    assert first.records.ttft_s[0] == pytest.approx(service_s + prefill_s, rel=1e-9)
    assert plain.records.ttft_s[2] == pytest.approx(2 * service_s + prefill_s, rel=1e-9)
    urgent = first.metrics()
    assert urgent["urgent_ttft_p99_s"] == pytest.approx(prefill_s, rel=1e-9)
    assert plain.metrics()["urgent_ttft_p99_s"] == pytest.approx(2 * service_s + prefill_s, rel=1e-9)


def _loaded(seed: int = 3) -> RequestSet:
    """200 requests arriving faster than the replica serves them under KV pressure, a fifth urgent."""
    return sample_requests(arrivals=Poisson(rate_per_s=3000.0), prompt=Uniform(low=16, high=96),
                           output=Uniform(low=8, high=64), count=200, seed=seed).with_urgent(0.2, seed=seed)


def test_under_load_urgent_requests_wait_less_and_every_request_still_finishes(costs):
    """The same loaded requests under both policies: the urgent ones' TTFT percentiles fall under the priority policy,
    every request finishes with its tokens under both; with ample KV blocks and with too few (preemptions)."""
    requests = _loaded()
    for blocks in (100_000, 60):  # no KV pressure, then preemption
        plain = _serve(costs, requests, "fcfs", blocks=blocks, max_seqs=16)
        first = _serve(costs, requests, "priority", blocks=blocks, max_seqs=16)
        for result in (plain, first):
            assert len(result.records) == len(requests)
            np.testing.assert_array_equal(result.records.output_tokens, requests.output_tokens)
            np.testing.assert_array_equal(result.records.priority, requests.priority)
        for name in ("urgent_ttft_p90_s", "urgent_ttft_p99_s"):
            assert first.metrics()[name] < 0.5 * plain.metrics()[name], (blocks, name)
        if blocks == 60:
            assert plain.metrics()["preemptions"] > 0 and first.metrics()["preemptions"] > 0


def test_without_priorities_the_priority_policy_is_fcfs(costs):
    """Requests of one priority, no KV pressure: the priority policy's order is arrival order, so every record equals
    fcfs's; and no urgent metric is reported."""
    requests = sample_requests(arrivals=Poisson(rate_per_s=3000.0), prompt=Uniform(low=16, high=96),
                               output=Uniform(low=8, high=64), count=120, seed=5)
    plain = _serve(costs, requests, "fcfs", max_seqs=16)
    first = _serve(costs, requests, "priority", max_seqs=16)
    np.testing.assert_array_equal(plain.records.first_token_s, first.records.first_token_s)
    np.testing.assert_array_equal(plain.records.finish_s, first.records.finish_s)
    assert not any(name.startswith("urgent_") for name in first.metrics())


def test_urgent_metrics_by_hand():
    """Four requests, priorities 0, 1, 0, 1, TTFTs 1, 5, 3, 7 s, each with one output token after its first 0.1 s
    later; under a 2 s TTFT limit half the urgent ones meet it. Percentiles over the urgent two (1 and 3 s): p90 2.8,
    p99 2.98 by the linear rule."""
    arrival = np.zeros(4)
    first = np.array([1.0, 5.0, 3.0, 7.0])
    records = RequestRecords(arrival_s=arrival, scheduled_s=arrival, first_token_s=first, finish_s=first + 0.1,
                             prompt_tokens=np.full(4, 8), output_tokens=np.full(4, 2), preemptions=np.zeros(4),
                             priority=np.array([0, 1, 0, 1]))
    got = urgent_metrics(records, SLO(ttft_s=2.0))
    assert got["urgent_ttft_p90_s"] == pytest.approx(2.8)
    assert got["urgent_ttft_p99_s"] == pytest.approx(2.98)
    assert got["urgent_tpot_p99_s"] == pytest.approx(0.1)
    assert got["urgent_slo_attainment"] == pytest.approx(0.5)
    alike = RequestRecords(arrival_s=arrival, scheduled_s=arrival, first_token_s=first, finish_s=first + 0.1,
                           prompt_tokens=np.full(4, 8), output_tokens=np.full(4, 2), preemptions=np.zeros(4))
    assert all(np.isnan(value) for value in urgent_metrics(alike, SLO(ttft_s=2.0)).values())


def test_each_class_is_held_to_its_own_limits_by_hand():
    """The four requests above (priorities 0, 1, 0, 1; TTFTs 1, 5, 3, 7 s; TPOT 0.1 s): the urgent ones held to 1.5 s
    and the others to 6 s, the first two meet their limits, the last two miss them; an urgent TPOT limit of 0.05 s
    fails both urgent ones. Alike in priority, no request is urgent, and every one is held to the others' limits."""
    arrival, first = np.zeros(4), np.array([1.0, 5.0, 3.0, 7.0])
    columns = dict(arrival_s=arrival, scheduled_s=arrival, first_token_s=first, finish_s=first + 0.1,
                   prompt_tokens=np.full(4, 8), output_tokens=np.full(4, 2), preemptions=np.zeros(4))
    records = RequestRecords(**columns, priority=np.array([0, 1, 0, 1]))
    slo = SLO(ttft_s=6.0, urgent_ttft_s=1.5)
    assert slo.met(records).tolist() == [True, True, False, False]
    assert urgent_metrics(records, slo)["urgent_slo_attainment"] == pytest.approx(0.5)
    assert SLO(ttft_s=6.0, urgent_tpot_s=0.05).met(records).tolist() == [False, True, False, False]
    assert SLO(urgent_ttft_s=1.5).met(records).tolist() == [True, True, False, True]  # the others unlimited
    assert slo.met(RequestRecords(**columns)).tolist() == [True, True, True, False]


def test_where_the_classes_have_limits_of_their_own_each_must_reach_the_attainment():
    """Ten requests, the first two urgent: every one but the first urgent one meets its limits, 90% of all. Under an
    attainment of 0.9 the run meets the SLO where both classes share their limits, not where the urgent ones have
    their own, of which only half are met."""
    arrival, first = np.zeros(10), np.array([3.0] + [1.0] * 9)
    records = RequestRecords(arrival_s=arrival, scheduled_s=arrival, first_token_s=first, finish_s=first + 0.1,
                             prompt_tokens=np.full(10, 8), output_tokens=np.full(10, 2), preemptions=np.zeros(10),
                             priority=np.array([0, 0] + [1] * 8))
    shared = summarize(records, makespan_s=10.0, slo=SLO(ttft_s=2.0, attainment=0.9))
    own = summarize(records, makespan_s=10.0, slo=SLO(ttft_s=5.0, urgent_ttft_s=2.0, attainment=0.9))
    assert shared["slo_attainment"] == own["slo_attainment"] == pytest.approx(0.9)
    assert shared["meets_slo"] == 1.0 and own["meets_slo"] == 0.0
