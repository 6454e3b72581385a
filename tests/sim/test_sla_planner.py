"""Dynamo's SLA planner (sim/autoscalers/sla_planner.py, Dynamo 1.x's throughput scaling): its replicas by hand from
the iteration costs (a prompt alone, a full decode batch, a full batch beside its requests' prompt tokens), the TTFT
floor, the directions its inputs must move it in, the least and most, an interval without finished requests, and
served: a pool scaled by it under a load that rises and falls, a prefill and a decode pool each sized by its own
share of the work, and a Kalman forecast on a ramp."""

from __future__ import annotations

import math

import numpy as np
import pytest
import simpy

from kernels.shapes import step_shape
from sim.autoscalers import Autoscaling, Traffic, make_autoscaler
from sim.schedulers import SchedulerLimits, make_scheduler
from sim.serving import serve_pools
from tests.sim.autoscaled_pool import Slower, engine, pool
from tests.sim.autoscaled_pool import finished as finished_requests
from workloads.requests import Phased, Poisson, RequestSet

MAX_SEQS = 32
INTERVAL_S = 60.0
PROMPT, OUTPUT = 64, 32  # a context of 64 + 32 / 2 = 80 tokens: whole TOKEN_STEPs, priced as they are


def _planner(costs, arrivals: list[float], *, role: str = "serve", tpot_s: float = 1000.0, ttft_s: float | None = None,
             held: int = 1, max_replicas: int = 64, finished: int = 50, predictor: str = "constant"):
    """An SLA planner over a pool holding `held` of `max_replicas` replicas, `arrivals` its traffic and `finished`
    requests of PROMPT and OUTPUT tokens done in its first interval."""
    env = simpy.Environment()
    replicas = [[engine(env, costs, MAX_SEQS)] for _ in range(max_replicas)]
    traffic = Traffic(arrival_s=arrivals, finished=finished_requests(finished, PROMPT, OUTPUT, 0.01, 0.01))
    scaling = Autoscaling(max_replicas=max_replicas, policy="sla_planner", interval_s=INTERVAL_S, tpot_s=tpot_s,
                          ttft_s=ttft_s, predictor=predictor)
    return env, make_autoscaler(env, replicas, held, scaling, [], 0.0, role=role, traffic=traffic)


def _wanted(costs, arrivals: int, **kwargs) -> int:
    """The replicas the planner wants after one interval in which `arrivals` requests came."""
    env, scaler = _planner(costs, list(np.linspace(1.0, INTERVAL_S, arrivals)), **kwargs)
    env.run(until=INTERVAL_S)
    return scaler.policy.wanted(scaler)


def _prompt_alone_s(costs) -> float:
    return costs.price(step_shape([(PROMPT, 0)], [], sampled=1)).time_s


def _full_batch_s(costs) -> float:
    return costs.price(step_shape([], [PROMPT + OUTPUT // 2] * MAX_SEQS, sampled=MAX_SEQS)).time_s


def _whole_batch_s(costs) -> float:
    """A full batch of decodes beside the prompt tokens its requests bring a step: MAX_SEQS x PROMPT / OUTPUT."""
    prefill = MAX_SEQS * PROMPT // OUTPUT
    return costs.price(step_shape([(prefill, 0)], [PROMPT + OUTPUT // 2] * MAX_SEQS, sampled=MAX_SEQS)).time_s


@pytest.mark.parametrize("arrivals", [300, 2000, 9000])
def test_the_replicas_are_the_load_over_a_replica_s_requests_a_second(costs, arrivals):
    """Dynamo 1.x's engine rates by hand, with limits every batch meets: a prefill replica serves 1 / (a prompt alone)
    requests a second, a decode replica MAX_SEQS / (OUTPUT full-batch iterations), a replica serving whole requests
    MAX_SEQS / (OUTPUT iterations of a full batch beside MAX_SEQS x PROMPT / OUTPUT prompt tokens)."""
    per_s = arrivals / INTERVAL_S
    expected = {"prefill": per_s * _prompt_alone_s(costs), "decode": per_s * OUTPUT * _full_batch_s(costs) / MAX_SEQS,
                "serve": per_s * OUTPUT * _whole_batch_s(costs) / MAX_SEQS}
    got = {role: _wanted(costs, arrivals, role=role) for role in expected}
    assert got == {role: max(math.ceil(share), 1) for role, share in expected.items()}, expected


def test_a_prompt_alone_past_the_ttft_limit_sets_a_floor(costs):
    """A TTFT limit 2.5 times shorter than a prompt alone: however light the load, three prefill replicas (Dynamo's
    latency floor, ceil(2.5)); a limit the prompt meets leaves one."""
    alone_s = _prompt_alone_s(costs)
    assert _wanted(costs, 10, role="prefill", ttft_s=alone_s / 2.5) == 3
    assert _wanted(costs, 10, role="prefill", ttft_s=alone_s * 2) == 1


def test_more_load_or_a_tighter_limit_never_want_fewer_replicas(costs):
    """Monotone in what it reads: the requests arriving, and the TPOT and TTFT limits (tighter: smaller batches, less
    throughput a replica)."""
    each_s = OUTPUT * _whole_batch_s(costs) / MAX_SEQS  # a replica's time a request, at a full batch

    def worth(replicas: float) -> int:
        return round(replicas * INTERVAL_S / each_s)

    loads = [_wanted(costs, worth(replicas)) for replicas in (0.5, 2.5, 6.5, 12.5)]
    assert loads == sorted(loads) and loads[-1] > loads[0]
    batch_s = _full_batch_s(costs)
    for role in ("decode", "serve"):
        limits = [_wanted(costs, worth(4.5), role=role, tpot_s=batch_s * factor) for factor in (4.0, 1.0, 0.5, 0.2)]
        assert limits == sorted(limits) and limits[-1] > limits[0], (role, limits)
    ttfts = [_wanted(costs, worth(4.5), ttft_s=_prompt_alone_s(costs) * factor) for factor in (64.0, 8.0, 2.0, 1.2)]
    assert ttfts == sorted(ttfts), ttfts


def test_within_its_least_and_most_nothing_before_a_request_finishes_and_the_least_when_idle(costs):
    """Its most and its least bound it; before any request has finished it knows no lengths and holds; an interval
    in which nothing arrived but requests finished, after one that priced the lengths, wants its least."""
    assert _wanted(costs, 10**6, max_replicas=5) == 5
    assert _wanted(costs, 1, held=3, max_replicas=5) == 3  # its least: the three it started with
    assert _wanted(costs, 10**6, held=2, finished=0) == 2
    arrivals = round(4.5 * INTERVAL_S / (OUTPUT * _whole_batch_s(costs) / MAX_SEQS))  # 4.5 replicas' worth
    env, scaler = _planner(costs, list(np.linspace(1.0, INTERVAL_S, arrivals)), max_replicas=8)
    env.run(until=INTERVAL_S)
    busy = scaler.policy.needed(scaler)
    scaler.policy.traffic.finished.extend(finished_requests(50, PROMPT, OUTPUT, 0.01, 0.01, at_s=INTERVAL_S))
    env.run(until=2 * INTERVAL_S)
    assert busy > 1 and scaler.policy.needed(scaler) == 1


def test_an_interval_with_no_request_finished_changes_nothing(costs):
    """Dynamo skips an interval whose mean lengths (and request duration) are undefined, none having finished, and
    reads those of an interval in which nothing arrived either as 0, which its perf models refuse (it holds, with the
    constant predictor): after an interval at 4.5 replicas' worth (five replicas by hand), an interval with as many
    arrivals but nothing finished wants nothing, and so does one with no arrivals and nothing finished, where a
    planner pricing the last lengths would want five and then its one."""
    each_s = OUTPUT * _whole_batch_s(costs) / MAX_SEQS  # a replica's time a request, at a full batch
    count = round(4.5 * INTERVAL_S / each_s)
    arrivals = list(np.linspace(1.0, INTERVAL_S, count)) + list(np.linspace(INTERVAL_S + 1.0, 2 * INTERVAL_S, count))
    env, scaler = _planner(costs, arrivals, max_replicas=8)
    env.run(until=INTERVAL_S)
    assert scaler.policy.needed(scaler) == math.ceil(count / INTERVAL_S * each_s) == 5
    env.run(until=2 * INTERVAL_S)
    assert scaler.policy.needed(scaler) is None  # arrivals, nothing finished
    env.run(until=3 * INTERVAL_S)
    assert scaler.policy.needed(scaler) is None  # idle
    assert scaler.policy.wanted(scaler) == 1  # holds the replica it has


def test_a_pool_scales_with_a_load_that_rises_and_falls_at_its_intervals_without_a_window(costs):
    """A load 12 times as high for 300 s after 600 s of a quarter of what one replica serves (a prompt alone and a
    full decode batch both take half a second here): the planner holds one replica through the quiet phase, more from
    the first interval that saw the busy phase (each new one serving after its cold start), and gives them back at
    the first interval after the load falls, where an HPA would wait out its 300 s window."""
    batch_s = 0.5  # a full decode batch
    slow = Slower(costs, batch_s / _full_batch_s(costs))
    phases = ((600.0, 1.0), (300.0, 12.0))
    arrivals = Phased(base=Poisson(rate_per_s=0.25), phases=phases).times(np.random.default_rng(3), 1500)
    arrivals = arrivals[arrivals < 1200.0]
    count = len(arrivals)
    requests = RequestSet(arrival_s=arrivals, prompt_tokens=np.full(count, PROMPT),
                          output_tokens=np.full(count, OUTPUT))
    scaling = Autoscaling(max_replicas=8, policy="sla_planner", interval_s=INTERVAL_S, tpot_s=2 * batch_s,
                          cold_start_s=20.0)
    result = serve_pools([pool(slow, scaling, max_seqs=MAX_SEQS)], requests)
    steps = dict(result.scaled)
    times = np.array(sorted(steps))

    def held_at(time_s: float) -> int:
        return steps[times[times <= time_s].max()]

    assert all(held_at(t) == 1 for t in np.arange(arrivals[0], 600.0, 10.0))
    assert held_at(660.0) >= 2  # the interval to 660 s saw the busy phase
    # The interval to 960 s saw the quiet phase: every replica but one drains then, and is gone once empty.
    assert held_at(900.0 + INTERVAL_S - 1.0) >= 2 and held_at(900.0 + 2 * INTERVAL_S) == 1
    log = result.iterations
    for replica in range(1, 8):
        starts = log.start_s[log.replica == replica]
        assert not len(starts) or starts.min() >= 660.0 + 20.0


def test_long_prompts_and_short_answers_scale_the_prefill_pool_not_the_decode_pool(costs):
    """Prompts of 1,024 tokens and answers of 4, a prompt alone taking 50 ms, at 4 replicas' worth of prompts: the
    planner scales the prefill pool to four or more and leaves the decode pool at one."""
    prompt = 1024
    slow = Slower(costs, 0.05 / costs.price(step_shape([(prompt, 0)], [], sampled=1)).time_s)
    count = 2400
    requests = RequestSet(arrival_s=np.arange(count) * (0.05 / 4), prompt_tokens=np.full(count, prompt),
                          output_tokens=np.full(count, 4))
    scaling = Autoscaling(max_replicas=6, policy="sla_planner", interval_s=10.0, tpot_s=1.0, cold_start_s=1.0)
    pools = [pool(slow, scaling, role=role, max_seqs=MAX_SEQS) for role in ("prefill", "decode")]
    result = serve_pools(pools, requests, kv_transfer_s=lambda message_B: 0.0)
    held = result.held_replica_s
    assert held["prefill"] >= 3.0 * result.makespan_s
    assert held["decode"] == pytest.approx(result.makespan_s)


def test_a_kalman_forecast_asks_for_the_next_interval_s_load_on_a_ramp(costs):
    """A decode pool's arrivals rising by half a replica's worth an interval: after eight intervals (four replicas'
    worth) the constant predictor asks for the last interval's four replicas; the Kalman filter, following the ramp,
    for at least the next interval's 4.5, so five."""
    each_s = OUTPUT * _full_batch_s(costs) / MAX_SEQS  # a decode replica's time a request, at a full batch
    arrivals = []
    for k in range(1, 9):
        count = round(0.5 * k * INTERVAL_S / each_s) - 1  # just under k / 2 replicas' worth
        arrivals += list(np.linspace((k - 1) * INTERVAL_S + 0.5, k * INTERVAL_S - 0.5, count))
    wanted = {}
    for predictor in ("constant", "kalman"):
        env, scaler = _planner(costs, arrivals, role="decode", max_replicas=16, predictor=predictor)
        for k in range(1, 9):
            env.run(until=k * INTERVAL_S)
            if k > 1:  # requests finish in every interval (Dynamo skips one in which none did)
                scaler.policy.traffic.finished.extend(finished_requests(50, PROMPT, OUTPUT, 0.01, 0.01,
                                                                        at_s=(k - 1) * INTERVAL_S))
            wanted[predictor] = scaler.policy.needed(scaler)
    assert wanted == {"constant": 4, "kalman": 5}, wanted


def test_prefix_hits_discount_the_prompt_tokens_a_prefill_replica_computes(costs):
    """Requests of 4,096-token prompts, three quarters of each found cached (a KV hit rate of 0.75): a prefill replica's
    rate is that of a prompt of 1,024 tokens alone, by hand; with no hit, the whole prompt's, which asks for more."""
    hit_s, whole_s = (costs.price(step_shape([(tokens, 0)], [], sampled=1)).time_s for tokens in (1024, 4096))
    arrivals = round(8.5 * INTERVAL_S / hit_s)
    wanted = {}
    for cached in (3072, 0):
        env = simpy.Environment()
        done = finished_requests(50, 4096, OUTPUT, 0.01, 0.01)
        for seq in done:
            seq.cached = cached
        traffic = Traffic(arrival_s=list(np.linspace(1.0, INTERVAL_S, arrivals)), finished=done)
        scaling = Autoscaling(max_replicas=64, policy="sla_planner", interval_s=INTERVAL_S, tpot_s=1000.0)
        replicas = [[engine(env, costs, MAX_SEQS)] for _ in range(64)]
        scaler = make_autoscaler(env, replicas, 1, scaling, [], 0.0, role="prefill", traffic=traffic)
        env.run(until=INTERVAL_S)
        wanted[cached] = scaler.policy.wanted(scaler)
    assert wanted == {3072: math.ceil(arrivals / INTERVAL_S * hit_s), 0: math.ceil(arrivals / INTERVAL_S * whole_s)}
    assert wanted[3072] < wanted[0]


def test_a_chunked_decode_replica_s_rate_stops_growing_past_the_decodes_its_budget_allows(costs):
    """A decode replica of MAX_SEQS 32 under the chunked scheduler of a budget of 8 tokens decodes 8 of its requests an
    iteration (sim/schedulers/chunked.py), so at any batch its requests a second are at most 8 / (OUTPUT iterations of 8
    decodes at PROMPT + OUTPUT / 2 tokens), priced by hand; with no TPOT limit to keep its batch small, exactly that
    (a full batch of 32, each held request waiting 4 iterations between its tokens), not 32 / (OUTPUT iterations of
    32 decodes)."""
    env, scaler = _planner(costs, [1.0], role="decode")
    replica = engine(env, costs, MAX_SEQS, "chunked", chunk_tokens=8)
    step_s = costs.price(step_shape([], [PROMPT + OUTPUT // 2] * 8, sampled=8)).time_s
    assert scaler.policy.decode_requests_per_s(replica, PROMPT, OUTPUT) == pytest.approx(8 / (OUTPUT * step_s),
                                                                                         rel=1e-9)


def test_a_whole_request_replica_s_step_takes_the_prompt_tokens_its_prompt_batch_cap_allows(costs):
    """A continuous replica serving whole requests, its prompts capped at 96 tokens an iteration (prompt_batch_tokens),
    a batch of 64 requests of PROMPT and OUTPUT tokens: they bring 64 x PROMPT / OUTPUT = 128 prompt tokens a step, of
    which its scheduler runs 96 an iteration (two 64-token prompts would make 128). With no limit to keep its batch
    small, its requests a second are 64 / (OUTPUT iterations of the 64 decodes at PROMPT + OUTPUT / 2 tokens beside 96
    prompt tokens), priced by hand (before, the step took 128 prompt tokens, up to the 8,192-token budget)."""
    env, scaler = _planner(costs, [1.0])
    replica = engine(env, costs, 64)
    replica.scheduler = make_scheduler("continuous", SchedulerLimits(max_seqs=64, prompt_batch_tokens=96))
    step_s = costs.price(step_shape([(96, 0)], [PROMPT + OUTPUT // 2] * 64, sampled=64)).time_s
    assert scaler.policy.whole_requests_per_s(replica, PROMPT, OUTPUT) == pytest.approx(64 / (OUTPUT * step_s),
                                                                                        rel=1e-9)


def test_a_whole_request_replica_s_ttft_takes_the_prompt_iterations_its_prompt_batch_cap_forms(costs):
    """The replica above under a TTFT limit of 1.5 iterations of 96 prompt tokens beside 16 decodes: a request joining a
    batch of b finds 2b prompt tokens a step ahead of its own 64, which its scheduler runs within 96 an iteration, so
    up to b = 16 in one iteration and past it in two (at least twice the time: the limit binds there). Its requests a
    second are those of a batch of 16: 16 / (OUTPUT iterations of 16 decodes beside 32 prompt tokens), priced by hand
    (before, the 8,192-token budget ran every joining request's prompts in one iteration, and its batch grew to 64)."""
    one_s = costs.price(step_shape([(96, 0)], [PROMPT + OUTPUT // 2] * 16, sampled=16)).time_s
    env, scaler = _planner(costs, [1.0], ttft_s=1.5 * one_s)
    replica = engine(env, costs, 64)
    replica.scheduler = make_scheduler("continuous", SchedulerLimits(max_seqs=64, prompt_batch_tokens=96))
    step_s = costs.price(step_shape([(32, 0)], [PROMPT + OUTPUT // 2] * 16, sampled=16)).time_s
    assert scaler.policy.whole_requests_per_s(replica, PROMPT, OUTPUT) == pytest.approx(16 / (OUTPUT * step_s),
                                                                                        rel=1e-9)
