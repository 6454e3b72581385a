"""Load shedding (sim/admission.py): a replica is busy over either threshold, by hand; an arrival finding every replica
busy is rejected and counts against the SLO; one finding some free joins a free one; a rejected conversation's later
turns never come, and the run still ends."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from kernels.shapes import step_shape
from sim.admission import Admission
from sim.schedulers import Sequence
from sim.serving import serve_pools
from sim.serving_metrics import SLO, RequestRecords, summarize
from tests.sim.autoscaled_pool import Slower, pool
from workloads.requests import RequestSet


def _replica(blocks_in_use: int, waiting_prompts: tuple[int, ...] = ()):
    """A stand-in replica of 100 KV blocks, `blocks_in_use` of them in use, with prompts waiting to prefill."""
    waiting = [Sequence(index=i, arrival_s=0.0, prompt=prompt, output=4) for i, prompt in enumerate(waiting_prompts)]
    return SimpleNamespace(state=SimpleNamespace(kv=SimpleNamespace(in_use_blocks=blocks_in_use, capacity_blocks=100),
                                                 running=[], waiting=waiting, swapped=[]))


def test_a_replica_is_busy_over_either_threshold():
    assert not Admission(kv_usage=0.5, prefill_tokens=0).busy(_replica(0))  # idle
    assert Admission(kv_usage=0.5).busy(_replica(51)) and not Admission(kv_usage=0.5).busy(_replica(50))
    assert Admission(prefill_tokens=99).busy(_replica(0, (60, 40)))
    assert not Admission(prefill_tokens=100).busy(_replica(0, (60, 40)))
    assert Admission(kv_usage=0.9, prefill_tokens=99).busy(_replica(10, (100,)))  # either


def test_rejected_requests_miss_the_slo():
    """Two requests served within the SLO and one rejected: attainment 2 / 3, goodput the two over the makespan."""
    records = RequestRecords(arrival_s=[0.0, 1.0], scheduled_s=[0.0, 1.0], first_token_s=[0.1, 1.1],
                             finish_s=[0.5, 1.5], prompt_tokens=[8, 8], output_tokens=[5, 5], preemptions=[0, 0])
    values = summarize(records, makespan_s=2.0, slo=SLO(ttft_s=1.0, tpot_s=1.0, attainment=0.9), rejected=1)
    assert values["slo_attainment"] == pytest.approx(2 / 3) and values["meets_slo"] == 0.0
    assert values["goodput_rps"] == pytest.approx(1.0)


def _requests(arrival_s: list[float], prompt: int = 64, output: int = 8) -> RequestSet:
    count = len(arrival_s)
    return RequestSet(arrival_s=np.array(arrival_s), prompt_tokens=np.full(count, prompt),
                      output_tokens=np.full(count, output))


def test_an_arrival_while_the_replica_still_prefills_is_rejected(costs):
    """With no prompt tokens allowed waiting (busy_prefill_tokens 0), a request arriving before the first one's
    prefill iteration ends finds the one replica busy and is rejected; one arriving long after is served."""
    prefill_s = costs.price(step_shape([(64, 0)], [], sampled=1)).time_s
    requests = _requests([0.0, prefill_s / 2, 100.0])
    result = serve_pools([pool(costs, None, max_seqs=8)], requests, admission=Admission(prefill_tokens=0),
                         slo=SLO(ttft_s=10.0, tpot_s=10.0))
    assert len(result.records) == 2 and result.rejected.requests == 1
    assert result.metrics()["rejected_share"] == pytest.approx(1 / 3)
    assert result.metrics()["slo_attainment"] == pytest.approx(2 / 3)
    assert "rejected_share" not in serve_pools([pool(costs, None, max_seqs=8)], requests).metrics()


def test_an_arrival_joins_a_free_replica_where_one_is_busy(costs):
    """Two replicas, round robin: a 4,096-token prompt to the first, a 64-token one to the second, and a third request
    while the long prompt still prefills, which round robin gives the first. Busy past 1,000 prompt tokens, the first
    is busy and the third joins the second (which computes 64 more tokens), its first token sooner than behind the
    long prompt, where it waits without thresholds."""
    long_s = costs.price(step_shape([(4096, 0)], [], sampled=1)).time_s
    requests = RequestSet(arrival_s=np.array([0.0, long_s / 10, long_s / 5]), prompt_tokens=np.array([4096, 64, 64]),
                          output_tokens=np.full(3, 4))
    pair = replace(pool(costs, None, replicas=2, max_seqs=8), router="round_robin")
    shed = serve_pools([pair], requests, admission=Admission(prefill_tokens=1000))
    unshed = serve_pools([pair], requests)
    assert shed.rejected.requests == 0
    assert shed.records.ttft_s[2] < unshed.records.ttft_s[2]

    def second_replica_tokens(result) -> float:
        return float(result.iterations.tokens[result.iterations.replica == 1].sum())

    assert second_replica_tokens(shed) >= second_replica_tokens(unshed) + 64


def test_a_rejected_conversation_s_later_turns_never_come_and_the_run_ends(costs):
    """Two conversations of three turns; the second starts while the first's prompt is still prefilling and is
    rejected whole: three requests served, three rejected."""
    prefill_s = costs.price(step_shape([(64, 0)], [], sampled=1)).time_s
    requests = RequestSet(arrival_s=np.array([0.0, 0.0, 0.0, prefill_s / 2, prefill_s / 2, prefill_s / 2]),
                          prompt_tokens=np.array([64, 200, 400] * 2), output_tokens=np.full(6, 4),
                          prefix_group=np.array([0, 0, 0, 1, 1, 1]), shared_tokens=np.array([0, 68, 204] * 2),
                          after_previous_s=np.array([np.nan, 1.0, 1.0, np.nan, 1.0, 1.0]))
    result = serve_pools([pool(costs, None, max_seqs=8)], requests, admission=Admission(prefill_tokens=0))
    assert len(result.records) == 3 and result.rejected.requests == 3
    assert sorted(result.records.arrival_s.tolist())[0] == 0.0


@pytest.mark.parametrize(("priority", "urgent_ttft_s", "attainment", "urgent_attainment"), [
    ((1, 0, 1), 5.0, 2 / 3, 0.0),  # the one urgent request rejected: its class's attainment 0 of 1
    ((0, 1, 0), 1e-9, 0.0, 0.0),  # the one other request rejected: the two served are urgent, held to 1 ns
])
def test_a_class_rejected_whole_still_counts(costs, priority, urgent_ttft_s, attainment, urgent_attainment):
    """The second of three requests is rejected while the first prefills (as above). Where it is the only urgent one,
    the urgent attainment is 0 of 1 and the urgent class misses an attainment of 0.5 though 2 of 3 met theirs; where
    it is the only one not urgent, the two served are still urgent and judged by the urgent limit, which none meets."""
    prefill_s = costs.price(step_shape([(64, 0)], [], sampled=1)).time_s
    requests = replace(_requests([0.0, prefill_s / 2, 100.0]), priority=np.array(priority))
    result = serve_pools([pool(costs, None, max_seqs=8)], requests, admission=Admission(prefill_tokens=0),
                         slo=SLO(ttft_s=10.0, tpot_s=10.0, urgent_ttft_s=urgent_ttft_s, attainment=0.5))
    metrics = result.metrics()
    assert result.rejected.requests == 1
    assert metrics["slo_attainment"] == pytest.approx(attainment)
    assert metrics["urgent_slo_attainment"] == pytest.approx(urgent_attainment)
    assert metrics["meets_slo"] == 0.0


def test_a_gateway_that_queues_holds_requests_until_a_replica_is_free_the_urgent_first(costs):
    """One replica, busy while any request waits on it (busy_waiting_requests 0): A arrives to an idle replica, B while
    A's first iteration runs (none waiting yet), then C and, later, the urgent D while B waits. Rejecting, C and D
    are turned away; queueing at the gateway, both are served, D (urgent) dispatched before C though it came later,
    and nothing is rejected."""
    prefill_s = costs.price(step_shape([(4096, 0)], [], sampled=1)).time_s
    requests = RequestSet(arrival_s=np.array([0.0, 0.1, 0.2, 0.3]) * prefill_s,
                          prompt_tokens=np.array([4096, 64, 64, 64]), output_tokens=np.full(4, 4),
                          priority=np.array([1, 1, 1, 0]))
    one = pool(costs, None, max_seqs=8)
    rejecting = serve_pools([one], requests, admission=Admission(waiting_requests=0))
    assert rejecting.rejected.requests == 2 and len(rejecting.records) == 2
    queueing = serve_pools([one], requests, admission=Admission(waiting_requests=0, hold=True))
    assert queueing.rejected.requests == 0 and len(queueing.records) == 4
    first = queueing.records.first_token_s  # by request
    assert first[3] < first[2]  # D, urgent, before C
    assert queueing.records.scheduled_s[3] < queueing.records.scheduled_s[2]


def test_a_gateway_that_queues_orders_every_priority_level_not_just_the_most_urgent(costs):
    """Priorities of three levels (a trace's, vLLM's whole numbers, lower first): A and B (priority 2) reach the one
    replica, busy while any request waits on it; C (2), D (1) and E (0) arrive in that order while B waits and are
    held. The gateway sends the most urgent first (llm-d's flow control: strict priority between bands), so E, then
    D, then C, though D came after C and neither is of the most urgent class."""
    prefill_s = costs.price(step_shape([(4096, 0)], [], sampled=1)).time_s
    requests = RequestSet(arrival_s=np.array([0.0, 0.1, 0.2, 0.3, 0.35]) * prefill_s,
                          prompt_tokens=np.array([4096, 64, 64, 64, 64]), output_tokens=np.full(5, 4),
                          priority=np.array([2, 2, 2, 1, 0]))
    result = serve_pools([pool(costs, None, max_seqs=8)], requests,
                         admission=Admission(waiting_requests=0, hold=True))
    assert len(result.records) == 5 and result.rejected.requests == 0
    scheduled = result.records.scheduled_s  # by request
    assert scheduled[4] < scheduled[3] < scheduled[2]


def test_retry_delays_back_off_as_openais_client_does():
    """openai-python's _calculate_retry_timeout: min(0.5 s x 2^n, 8 s) x (1 - 0.25 u) for the n-th retry (from 0)."""
    gateway = Admission(prefill_tokens=0, retries=6)
    assert [gateway.retry_delay_s(n, 0.0) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert gateway.retry_delay_s(0, 1.0) == pytest.approx(0.375)  # the most jitter takes a quarter off
    assert Admission(prefill_tokens=0, retries=1, retry_s=3.0).retry_delay_s(2, 0.5) == pytest.approx(8.0 * 0.875)


@pytest.mark.parametrize("fields", [dict(retries=-1), dict(retries=1, hold=True), dict(retry_s=0.0)])
def test_impossible_retries_are_refused(fields):
    with pytest.raises(ValueError):
        Admission(prefill_tokens=0, **fields)


def _ten_second_prefills(costs) -> tuple[Slower, float]:
    """The tiny Llama's iterations stretched so that a 64-token prompt prefills in 10 s."""
    factor = 10.0 / costs.price(step_shape([(64, 0)], [], sampled=1)).time_s
    return Slower(costs, factor), 10.0


def test_a_retried_request_is_served_once_the_replica_is_free_its_wait_in_its_ttft(costs):
    """The one replica is busy while A's 10 s prefill runs (busy_prefill_tokens 0); B arrives at 9.8 s and is
    rejected. Its client retries it 0.375-0.5 s later, after A's prefill: it is served, no request is lost, half of
    them were turned away once, and B's TTFT holds its backoff (from its first arrival) and its own 10 s prefill."""
    slow, prefill_s = _ten_second_prefills(costs)
    requests = _requests([0.0, 9.8])
    lost = serve_pools([pool(slow, None, max_seqs=8)], requests, admission=Admission(prefill_tokens=0))
    assert lost.rejected.requests == 1
    result = serve_pools([pool(slow, None, max_seqs=8)], requests, admission=Admission(prefill_tokens=0, retries=1))
    metrics = result.metrics()
    assert len(result.records) == 2 and metrics["rejected_share"] == 0.0 and metrics["retried_share"] == 0.5
    assert result.records.arrival_s[1] == 9.8
    assert result.records.ttft_s[1] >= 0.375 + prefill_s


def test_a_request_rejected_at_every_retry_is_rejected_for_good(costs):
    """B arrives at 1 s into A's 10 s prefill. Two retries come by 1 + 0.5 + 1.0 = 2.5 s, both while A prefills: B is
    rejected for good. Five come at the earliest 1 + 0.375 x (1 + 2 + 4 + 8 + 16) = 12.6 s for the fifth and at
    the latest 1 + 0.5 + 1 + 2 + 4 = 8.5 s for the fourth: the fifth finds the replica free and B is served, its
    TTFT at least 11.6 s plus its own prefill. The same run twice draws the same backoffs."""
    slow, prefill_s = _ten_second_prefills(costs)
    requests = _requests([0.0, 1.0])
    two = serve_pools([pool(slow, None, max_seqs=8)], requests, admission=Admission(prefill_tokens=0, retries=2))
    assert two.rejected.requests == 1 and two.rejected.retried == 1 and len(two.records) == 1
    five = [serve_pools([pool(slow, None, max_seqs=8)], requests, admission=Admission(prefill_tokens=0, retries=5))
            for _ in range(2)]
    assert five[0].rejected.requests == 0 and five[0].rejected.retried == 1
    assert five[0].records.ttft_s[1] >= 0.375 * 31 + prefill_s
    assert five[0].records.first_token_s.tolist() == five[1].records.first_token_s.tolist()
