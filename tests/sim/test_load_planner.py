"""Dynamo's load-based scaling (sim/autoscalers/load_planner.py): a replica more only where every replica is over the
SLO, one fewer only where the survivors' grown queues and batches keep a margin (by hand from the iteration costs),
nothing while a scale is under way or before five requests have finished, the SLA planner's replicas as a floor, and
served: a load step met at the next load interval, where the SLA planner waits for its own."""

from __future__ import annotations

import math

import numpy as np
import pytest
import simpy

from kernels.shapes import step_shape
from sim.autoscalers import Autoscaling, Traffic, make_autoscaler
from sim.autoscalers.load_planner import LOAD_INTERVAL_S, SCALE_DOWN_SENSITIVITY
from sim.latency_prediction import predict_latency, prompts_s
from sim.schedulers import SchedulerLimits, Sequence, make_scheduler
from sim.serving import serve_pools
from tests.sim.autoscaled_pool import Slower, engine, finished, pool
from workloads.requests import RequestSet

MAX_SEQS = 64
PROMPT, OUTPUT = 64, 16
CONTEXT = 64  # a decoding request's context here: whole TOKEN_STEPs, priced as they are


def _scaler(costs, *, ready: int = 2, role: str = "serve", ttft_s: float = 1000.0, tpot_s: float = 1000.0,
            done: int = 10, policy: str = "load_planner", arrivals: tuple[float, ...] = (),
            scheduler: str = "continuous", chunk_tokens: int = 512):
    env = simpy.Environment()
    replicas = [[engine(env, costs, MAX_SEQS, scheduler, chunk_tokens)] for _ in range(4)]
    traffic = Traffic(arrival_s=list(arrivals), finished=finished(done, PROMPT, OUTPUT, 0.01, 0.01))
    scaling = Autoscaling(max_replicas=4, policy=policy, ttft_s=ttft_s, tpot_s=tpot_s)
    scaler = make_autoscaler(env, replicas, ready, scaling, [], 0.0, role=role, traffic=traffic)
    scaler.minimum = 1
    return env, scaler


def _queue(replica, prompts: int) -> None:
    """`prompts` requests of PROMPT tokens waiting on `replica`."""
    replica.state.waiting.extend(Sequence(index=i, arrival_s=0.0, prompt=PROMPT, output=OUTPUT)
                                 for i in range(prompts))


def _decoding(replica, count: int) -> None:
    """`count` requests decoding on `replica`, each at CONTEXT tokens."""
    for i in range(count):
        seq = Sequence(index=i, arrival_s=0.0, prompt=PROMPT, output=OUTPUT)
        seq.computed = seq.target = CONTEXT - 1
        replica.state.running.append(seq)


def _ttft_s(replica, memo=None) -> float:
    return predict_latency(replica, PROMPT, memo=memo).ttft_s


def test_a_replica_more_only_where_every_replica_is_over_the_slo(costs):
    """Ten prompts waiting on one replica, two on the other: with a TTFT limit between their estimates one replica
    still meets it and nothing changes; below both, one more (a prefill pool reads TTFT alone)."""
    env, scaler = _scaler(costs, role="prefill")
    _queue(scaler.replicas[0][0], 10)
    _queue(scaler.replicas[1][0], 2)
    busy, light = _ttft_s(scaler.replicas[0][0]), _ttft_s(scaler.replicas[1][0])
    assert busy > light
    scaler.policy.scaling = Autoscaling(max_replicas=4, policy="load_planner", ttft_s=(busy + light) / 2,
                                        tpot_s=1000.0)
    assert scaler.policy.wanted(scaler) == 2
    scaler.policy.scaling = Autoscaling(max_replicas=4, policy="load_planner", ttft_s=light * 0.9, tpot_s=1000.0)
    assert scaler.policy.wanted(scaler) == 3


@pytest.mark.parametrize("margin", [1.01, 0.99])
def test_one_fewer_only_where_the_survivor_decodes_their_batch_within_the_margin(costs, margin):
    """Two decode replicas of 8 requests each: one would decode 16, an iteration of 16 decodes at CONTEXT tokens. With
    the ITL limit just above that over SCALE_DOWN_SENSITIVITY, one is given back; just below, none."""
    merged_s = costs.price(step_shape([], [CONTEXT] * 16, sampled=16)).time_s
    env, scaler = _scaler(costs, role="decode", tpot_s=merged_s / SCALE_DOWN_SENSITIVITY * margin)
    for r in (0, 1):
        _decoding(scaler.replicas[r][0], 8)
    assert scaler.policy.wanted(scaler) == (1 if margin > 1 else 2)


@pytest.mark.parametrize("margin", [1.01, 0.99])
def test_a_chunked_survivor_decodes_its_budget_an_iteration_not_the_whole_merged_batch(costs, margin):
    """Two chunked decode replicas of a budget of 8 tokens with 8 requests each: one would hold 16 and decode 8 of them
    an iteration (sim/schedulers/chunked.py), so a request gets a token every 2 iterations of 8 decodes at CONTEXT
    tokens, priced by hand. With the ITL limit just above that over SCALE_DOWN_SENSITIVITY, one is given back; just
    below, none (an iteration of all 16 at once, what the budget forbids, is about half as long)."""
    step_s = costs.price(step_shape([], [CONTEXT] * 8, sampled=8)).time_s
    env, scaler = _scaler(costs, role="decode", tpot_s=2 * step_s / SCALE_DOWN_SENSITIVITY * margin,
                          scheduler="chunked", chunk_tokens=8)
    for r in (0, 1):
        _decoding(scaler.replicas[r][0], 8)
    assert scaler.policy.wanted(scaler) == (1 if margin > 1 else 2)


def test_one_fewer_only_where_the_survivor_s_queue_keeps_the_ttft_margin(costs):
    """Two prefill replicas with prompts waiting: the queue's share of each one's TTFT, doubled, against
    SCALE_DOWN_SENSITIVITY of the limit less the prompt's time alone."""
    env, scaler = _scaler(costs, role="prefill")
    for r in (0, 1):
        _queue(scaler.replicas[r][0], 3)
    own_s = costs.price(step_shape([(PROMPT, 0)], [], sampled=1)).time_s
    queue_s = _ttft_s(scaler.replicas[0][0]) - own_s
    assert queue_s > 0
    for factor, wanted in ((1.01, 1), (0.99, 2)):
        limit_s = own_s + 2 * queue_s / SCALE_DOWN_SENSITIVITY * factor
        scaler.policy.scaling = Autoscaling(max_replicas=4, policy="load_planner", ttft_s=limit_s, tpot_s=1000.0)
        assert scaler.policy.wanted(scaler) == wanted, factor


@pytest.mark.parametrize("scheduler", ["chunked", "orca"])
def test_a_chunked_pool_prices_a_new_prompt_beside_the_survivor_s_batch_not_as_queue(costs, scheduler):
    """Two replicas prefilling in chunks beside their decodes (or, under Orca, whole prompts in the iteration that
    decodes every running sequence), serving whole requests, each with 32 decodes and nothing queued: a prompt's
    TTFT beside 32 decodes is `now`, beside 64 (the survivor's, one replica given back) `after`. Dynamo's aggregated
    check takes the new request's own TTFT at the decode load after consolidation and grows only the queue: a TTFT
    limit between `now` and `after` keeps both replicas (the survivor would miss it); a limit past `after` gives one
    back, though it is under alone + 2.5 (now - alone), where counting the decodes' share of `now` as queue, grown by
    2 against 80% of the limit less a prompt alone, would have kept both."""
    env, scaler = _scaler(costs, scheduler=scheduler)
    for r in (0, 1):
        _decoding(scaler.replicas[r][0], 32)
    first = scaler.replicas[0][0]
    budget = first.scheduler.token_budget()
    alone = costs.price(step_shape([(PROMPT, 0)], [], sampled=1)).time_s
    now = prompts_s(first, PROMPT, 1, 0, budget - 32, [CONTEXT] * 32)
    after = prompts_s(first, PROMPT, 1, 0, budget - 64, [CONTEXT] * 64)
    as_queue = alone + 2 * (now - alone) / SCALE_DOWN_SENSITIVITY
    assert alone < now < after < as_queue
    for limit_s, wanted in (((now + after) / 2, 2), ((after + as_queue) / 2, 1)):
        scaler.policy.scaling = Autoscaling(max_replicas=4, policy="load_planner", ttft_s=limit_s, tpot_s=1000.0)
        assert scaler.policy.wanted(scaler) == wanted, limit_s


def test_nothing_while_a_scale_is_under_way_or_before_five_requests_have_finished(costs):
    env, scaler = _scaler(costs, done=4)
    assert scaler.policy.wanted(scaler) == 2  # two idle replicas, one would do: too few requests seen
    env, scaler = _scaler(costs)
    assert scaler.policy.wanted(scaler) == 1
    scaler.state[2] = "starting"
    assert scaler.policy.wanted(scaler) == 3
    scaler.state[2] = "draining"
    assert scaler.policy.wanted(scaler) == 2


def _floor_arrivals(slow, replicas: float) -> tuple[float, ...]:
    """Arrivals over 1-179 s at `replicas` replicas' worth of the SLA planner's rate for a replica serving whole
    requests of PROMPT and OUTPUT tokens (its own profile: what the floor is measured in)."""
    env, scaler = _scaler(slow, policy="sla_load_planner", tpot_s=1.0)
    per_s = scaler.policy.throughput.whole_requests_per_s(scaler.replicas[0][0], PROMPT, OUTPUT)
    return tuple(np.linspace(1.0, 179.0, round(replicas * per_s * 180.0)))


def test_the_sla_planner_s_replicas_are_a_floor(costs):
    """Three idle replicas, which the load-based scaling alone would give back one at a time; with 3.5 replicas'
    worth of requests over the last 180 s, the SLA planner's interval wants four, and the pool rises to them at once
    at 180 s and not before."""
    slow = Slower(costs, 0.1 / costs.price(step_shape([(PROMPT, 0)], [], sampled=1)).time_s)
    arrivals = _floor_arrivals(slow, 3.5)
    for until_s, wanted in ((175.0, 2), (180.0, 4)):
        env, scaler = _scaler(slow, ready=3, policy="sla_load_planner", tpot_s=1.0, arrivals=arrivals)
        env.run(until=until_s)
        assert scaler.policy.wanted(scaler) == wanted, until_s


def test_the_floor_is_recomputed_at_its_interval_while_a_replica_drains(costs):
    """As above, but a replica drains (a request still on it) from 170 s to 250 s, past the floor's 180 s: the floor
    is the interval to 180 s's (3.5 replicas' worth: four), applied once the drain is over, not one read at 250 s
    over the 180 s before it (70 s to 250 s: about 2.1 replicas' worth, three). Dynamo's throughput loop sets its
    lower bound every adjustment interval whatever the load loop waits for."""
    slow = Slower(costs, 0.1 / costs.price(step_shape([(PROMPT, 0)], [], sampled=1)).time_s)
    env, scaler = _scaler(slow, ready=3, policy="sla_load_planner", tpot_s=1.0, arrivals=_floor_arrivals(slow, 3.5))
    env.run(until=170.0)
    scaler.state[2] = "draining"
    env.run(until=180.0)
    assert scaler.policy.wanted(scaler) == 2  # nothing while it drains
    env.run(until=250.0)
    scaler.state[2] = "off"
    assert scaler.policy.wanted(scaler) == 4


def test_a_load_step_is_met_at_the_next_load_interval_where_the_sla_planner_waits(costs):
    """Requests arriving at 4 a second for 100 s, then 16 (past one replica's capacity) for 150 s: the load-based
    scaling adds a replica within a few of its 5 s intervals after the step; the SLA planner not before its 180 s
    interval (if at all: its model of a replica serving whole requests prefills in chunks beside the decodes, more
    than this replica, which prefills apart, serves)."""
    decode_s = costs.price(step_shape([], [CONTEXT] * 8, sampled=8)).time_s
    slow = Slower(costs, 0.05 / decode_s)  # 50 ms a decode step of 8
    gaps = np.concatenate([np.full(400, 0.25), np.full(2400, 1 / 16)])
    arrivals = np.cumsum(gaps)
    requests = RequestSet(arrival_s=arrivals, prompt_tokens=np.full(len(gaps), PROMPT),
                          output_tokens=np.full(len(gaps), OUTPUT))
    first = {}
    for policy in ("load_planner", "sla_planner"):
        scaling = Autoscaling(max_replicas=3, policy=policy, ttft_s=0.5, tpot_s=0.2, cold_start_s=1.0)
        result = serve_pools([pool(slow, scaling, max_seqs=8)], requests)
        first[policy] = min((time_s for time_s, held in result.scaled if held > 1), default=math.inf)
    assert 100.0 < first["load_planner"] < 100.0 + 10 * LOAD_INTERVAL_S <= 180.0 <= first["sla_planner"], first


@pytest.mark.parametrize("scheduler", ["chunked", "orca"])
def test_one_replica_serving_whole_requests_beside_its_decodes_is_kept(costs, scheduler):
    """One ready replica of a pool serving whole requests, 32 requests decoding, every estimate within the SLO: none to
    give back, so it holds one (before, the scale-down check grew its 32 decodes by 1 / 0 and raised OverflowError)."""
    env, scaler = _scaler(costs, ready=1, scheduler=scheduler)
    _decoding(scaler.replicas[0][0], 32)
    assert scaler.policy.wanted(scaler) == 1


def test_an_orca_prompt_runs_beside_the_decodes_going_first_now_and_after_consolidation(costs):
    """Two Orca replicas whose prompts take a 96-token budget first (max_decode_preemptions 4), each with 48 requests
    decoding that have sat out 4 iterations (they go first whatever the prompt: Scheduler.going_first), nothing
    queued: a 64-token prompt runs beside the 48 (P48), and on the survivor beside the 96 (P96), priced by hand. The
    predicted TTFT is P48 with no queue, so a limit past P96 gives one back and one under it keeps both. Before, the
    prompt's own time was priced beside the 32 decodes the budget leaves room for (P32, now and after), so P48 - P32
    read as queue: a limit between P32 + 2 (P48 - P32) / 0.8 and P96 gave one back, the survivor's prompt then
    missing it."""
    env, scaler = _scaler(costs, scheduler="orca")
    for r in (0, 1):
        replica = scaler.replicas[r][0]
        replica.scheduler = make_scheduler("orca", SchedulerLimits(max_seqs=MAX_SEQS * 2, prompt_batch_tokens=96,
                                                                   max_decode_preemptions=4))
        _decoding(replica, 48)
        for seq in replica.state.running:
            seq.preemptions = 4

    def beside(decodes: int) -> float:
        return costs.price(step_shape([(PROMPT, 0)], [CONTEXT] * decodes, sampled=decodes + 1,
                                      finished=[PROMPT])).time_s

    assert _ttft_s(scaler.replicas[0][0]) == pytest.approx(beside(48), rel=1e-12)
    as_queue = beside(32) + 2 * (beside(48) - beside(32)) / SCALE_DOWN_SENSITIVITY
    assert as_queue < beside(96)
    for limit_s, wanted in (((as_queue + beside(96)) / 2, 2), (beside(96) * 1.001, 1)):
        scaler.policy.scaling = Autoscaling(max_replicas=4, policy="load_planner", ttft_s=limit_s, tpot_s=1000.0)
        assert scaler.policy.wanted(scaler) == wanted, limit_s
