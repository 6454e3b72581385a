"""The HPA autoscaler (sim/autoscalers/hpa.py) against the Horizontal Pod Autoscaler's rules by hand (the ratio to
the target, its tolerance, starting replicas read as 0 on a scale-up and as at the target on a scale-down, the
scale-up limit, the scale-down window, draining; the replicas held: sim/autoscalers/base.py), and served: a pool that
falls behind scales up after a sync period, its new replicas serve after their cold start, and the static energy is
its idle power over the replica-seconds held."""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import simpy

from kernels.shapes import step_shape
from sim.autoscalers import Autoscaling, make_autoscaler
from sim.autoscalers.hpa import KEDA_COOLDOWN_S, KEDA_POLLING_S, SCALE_DOWN_WINDOW_S, SYNC_PERIOD_S
from sim.kv_sends import KVSends
from sim.schedulers import Sequence
from sim.serving import serve_pools
from tests.sim.autoscaled_pool import Slower, pool
from workloads.requests import Phased, Poisson, RequestSet


def _engine(waiting: int = 0, running: int = 0, pulling: int = 0):
    """A stand-in engine holding `waiting` and `running` requests and `pulling` handed over whose KV is crossing, and
    no KV the decode side has yet to read."""
    return SimpleNamespace(state=SimpleNamespace(waiting=[None] * waiting, running=[None] * running,
                                                 pulling=[None] * pulling),
                           outstanding=waiting + running + pulling, left_s=deque(), sends=KVSends())


def _scaler(waiting: list[int], ready: int, max_replicas: int = 8, target: float = 10.0):
    """An autoscaler over stand-in replicas, the first `ready` serving, each with `waiting` requests waiting."""
    env = simpy.Environment()
    engines = [[_engine(w)] for w in waiting] + [[_engine()] for _ in range(max_replicas - len(waiting))]
    scaler = make_autoscaler(env, engines, ready,
                             Autoscaling(max_replicas=max_replicas, target=target, cold_start_s=30.0), [], 0.0)
    return env, scaler


def _scale(scaler, desired: int) -> None:
    """The autoscaler's step with `desired` replicas recommended now."""
    scaler.hold(scaler.policy.limited(scaler, desired))


def test_the_replicas_wanted_are_the_metric_over_the_target_outside_the_tolerance():
    """21 requests waiting on two replicas against 10 each: within 10% of the target, two; 25: three (ceil 2.5);
    none waiting: the pool's least, one."""
    for waiting, wanted in (([11, 10], 2), ([15, 10], 3), ([0, 0], 2)):  # the least here: the two it started with
        scaler = _scaler(waiting, ready=2)[1]
        assert scaler.policy.desired(scaler) == wanted
    env, scaler = _scaler([0, 0, 0], ready=3)
    scaler.minimum = 1
    assert scaler.policy.desired(scaler) == 1


def test_requests_whose_kv_is_crossing_count_as_waiting():
    """vLLM keeps a handed-over request in its waiting queue while its KV arrives (WAITING_FOR_REMOTE_KVS), and
    num_requests_waiting is that queue's length: two replicas each with 5 requests waiting and 10 crossing are 30
    waiting against 10 each, three replicas (counting the waiting alone, 10 against 20: the two it holds)."""
    env = simpy.Environment()
    engines = [[_engine(waiting=5, pulling=10)] for _ in range(2)] + [[_engine()] for _ in range(6)]
    scaler = make_autoscaler(env, engines, 2, Autoscaling(max_replicas=8, target=10.0), [], 0.0)
    assert scaler.policy.desired(scaler) == 3


def test_a_starting_replica_reads_as_zero_and_scale_up_is_limited_per_period():
    """Asked for 100 replicas from one, the pool adds max(4, 1) a period; a starting replica counts in the current
    replicas, its metric 0: 25 waiting over one serving and two starting is 25 / 30 of the target, and three want
    ceil(2.5) = 3: no change."""
    env, scaler = _scaler([100], ready=1, target=1.0)
    _scale(scaler, scaler.policy.desired(scaler))
    assert scaler.state.count("starting") == 4
    env, scaler = _scaler([25], ready=1)
    scaler.state[1] = scaler.state[2] = "starting"
    assert scaler.policy.desired(scaler) == 3


def test_a_starting_replica_reads_as_at_the_target_where_the_pool_would_scale_down():
    """The HPA reads a pod without metrics as at the target on a scale-down: 5 waiting on one serving replica (half of
    its target of 10) and two starting read (5 + 2 x 10) / 30 = 0.83, and three want ceil(2.5) = 3, not ceil(0.5) = 1
    (which would give back the starting ones once the window has passed and start them again at the next burst); none
    waiting beside three starting, 30 / 40 = 0.75: ceil(3.0) = 3; 2 waiting beside one starting, 12 / 20 = 0.6: 2."""
    env, scaler = _scaler([5], ready=1)
    scaler.state[1] = scaler.state[2] = "starting"
    assert scaler.policy.desired(scaler) == 3
    env, scaler = _scaler([0], ready=1)
    scaler.state[1] = scaler.state[2] = scaler.state[3] = "starting"
    assert scaler.policy.desired(scaler) == 3
    env, scaler = _scaler([2], ready=1)
    scaler.state[1] = "starting"
    assert scaler.policy.desired(scaler) == 2


def test_scale_down_waits_for_the_window_and_drains_the_newest_replica():
    """Wanting 3 then 1: the pool keeps 3 until the 3 is older than the 300 s window, then drains the replicas started
    last, as a ReplicaSet deletes its newest pods, whatever they hold: the first, started at 10 s, holding 5 requests,
    then the last made of the two started at 0 (holding none, it is released at once). A draining replica leaves the
    router's replicas at once and is released when empty."""
    env, scaler = _scaler([5, 2, 0], ready=3, target=100.0)
    scaler.held[0][-1][0] = 10.0
    scaler.minimum = 1
    _scale(scaler, 3)
    env.run(until=SYNC_PERIOD_S)
    _scale(scaler, 1)
    assert scaler.state == ["ready"] * 3 + ["off"] * 5
    env.run(until=SCALE_DOWN_WINDOW_S + SYNC_PERIOD_S)
    _scale(scaler, 1)
    assert scaler.state[:3] == ["draining", "ready", "off"]
    assert [engine for engine in scaler.routable] == scaler.replicas[1]
    assert scaler.held[2] == [[0.0, SCALE_DOWN_WINDOW_S + SYNC_PERIOD_S]]


def test_a_draining_prefill_replica_is_held_until_the_decode_side_has_read_the_kv_it_handed_over():
    """Two replicas holding no request, the second made having handed one over whose KV the decode side has yet to
    read from its memory (sim/kv_sends.py). Wanting 1 past the window, the pool drains the second (the last made of
    the two started at 0): it stays held while the read is due, and once the KV is read, 10 s later, it is released
    from then, not from when it began to drain."""
    env, scaler = _scaler([0, 0], ready=2, target=100.0)
    handed = Sequence(index=0, arrival_s=0.0, prompt=24, output=6)
    scaler.replicas[1][0].sends.hand_over(handed, 0.0)
    scaler.minimum = 1
    _scale(scaler, 2)
    env.run(until=SCALE_DOWN_WINDOW_S + SYNC_PERIOD_S)
    _scale(scaler, 1)
    assert scaler.state[:2] == ["ready", "draining"]
    env.run(until=SCALE_DOWN_WINDOW_S + SYNC_PERIOD_S + 10.0)
    scaler.replicas[1][0].sends.read(handed, env.now)
    read_s = env.now
    env.run(until=SCALE_DOWN_WINDOW_S + 2 * SYNC_PERIOD_S)
    _scale(scaler, 1)
    assert scaler.state[:2] == ["ready", "off"]
    assert scaler.held[1] == [[0.0, read_s]]


def test_a_replica_given_back_while_it_started_and_asked_for_again_serves_a_whole_cold_start_later():
    """Asked for at 0 (a 30 s cold start), given back at 15 s and asked for again at 20 s: it serves from 50 s, not
    at 30 s when its first start would have ended."""
    env, scaler = _scaler([100], ready=1, target=1.0, max_replicas=2)
    _scale(scaler, 2)
    env.run(until=15.0)
    scaler.policy.recommended.clear()
    _scale(scaler, 1)
    assert scaler.state[1] == "off"
    env.run(until=20.0)
    _scale(scaler, 2)
    env.run(until=49.0)
    assert scaler.state[1] == "starting"
    env.run(until=51.0)
    assert scaler.state[1] == "ready"


def test_a_pool_falling_behind_scales_up_and_its_new_replicas_serve_after_their_cold_start(costs):
    """One request a second, each served alone (max_seqs 1) for longer than a second: one replica falls behind. At
    the first sync (15 s) requests wait, and the pool scales to its three; they serve from 15 + 10 s. Its static
    energy is 100 W over the replica-seconds it held: one from the first arrival, two more from 15 s."""
    decode_s = costs.price(step_shape(decode_kv=[64], sampled=1)).time_s
    slow = Slower(costs, 0.5 / decode_s)  # half a second a decode step: four of them, about 2 s a request
    count = 60
    requests = RequestSet(arrival_s=np.arange(float(count)), prompt_tokens=np.full(count, 16),
                          output_tokens=np.full(count, 4))
    result = serve_pools([pool(slow, Autoscaling(max_replicas=3, target=1.0, cold_start_s=10.0))], requests)
    assert result.scaled[:2] == ((0.0, 1), (SYNC_PERIOD_S, 3))
    log = result.iterations
    for replica in (1, 2):
        starts = log.start_s[log.replica == replica]
        assert len(starts) and starts.min() >= SYNC_PERIOD_S + 10.0
    end_s = float(result.records.finish_s.max())
    held_s = result.makespan_s + 2 * (end_s - SYNC_PERIOD_S)
    assert result.energy_parts_J["static_J"] == pytest.approx(100.0 * held_s)
    assert result.metrics()["mean_replicas"] == pytest.approx(held_s / result.makespan_s)
    fixed = serve_pools([pool(slow, None)], requests)
    assert result.records.e2e_s.mean() < 0.5 * fixed.records.e2e_s.mean()
    assert "mean_replicas" not in fixed.metrics()


def test_a_pool_under_a_rising_and_falling_load_scales_up_then_down_after_the_window(costs):
    """Requests of about 2 s each, one at a time a replica, arriving at 0.15 req/s for 400 s then 1.2 req/s for 200 s,
    and again: one replica keeps up with the first, not the second. The pool holds one replica through the first quiet
    phase, more in the busy one, and is back to one within the next quiet phase, once the 300 s window has passed."""
    decode_s = costs.price(step_shape(decode_kv=[64], sampled=1)).time_s
    slow = Slower(costs, 0.5 / decode_s)  # half a second a decode step
    phases = ((400.0, 1.0), (200.0, 8.0))
    arrivals = Phased(base=Poisson(rate_per_s=0.15), phases=phases).times(np.random.default_rng(1), 500)
    requests = RequestSet(arrival_s=arrivals, prompt_tokens=np.full(500, 16), output_tokens=np.full(500, 4))
    result = serve_pools([pool(slow, Autoscaling(max_replicas=4, target=2.0, cold_start_s=5.0))], requests)
    held = dict(result.scaled)
    times = np.array(list(held))

    def held_at(time_s: float) -> int:
        return held[times[times <= time_s].max()]

    assert all(held_at(t) == 1 for t in np.arange(arrivals[0], 400.0, 15.0))
    assert max(held_at(t) for t in np.arange(400.0, 615.0, 15.0)) > 1
    assert held_at(600.0 + SCALE_DOWN_WINDOW_S + 2 * SYNC_PERIOD_S) == 1 < max(held.values())


def test_a_prefill_and_a_decode_pool_each_scale_and_hand_over_only_to_serving_replicas(costs):
    """Four requests a second into a prefill pool and a decode pool, each from one replica up to two on requests
    waiting (a 10 s cold start): each pool falls behind and scales, no new replica of either runs an iteration
    before 15 + 10 s, and the static energy is each pool's idle power over the replica-seconds it held."""
    decode_s = costs.price(step_shape(decode_kv=[64], sampled=1)).time_s
    slow = Slower(costs, 0.5 / decode_s)  # half a second a decode step, as long a prefill
    requests = RequestSet(arrival_s=np.arange(120) * 0.25, prompt_tokens=np.full(120, 16),
                          output_tokens=np.full(120, 6))
    scaling = Autoscaling(max_replicas=2, target=1.0, cold_start_s=10.0)
    pools = [pool(slow, scaling, role="prefill", idle_power_W=50.0),
             pool(slow, scaling, role="decode")]
    result = serve_pools(pools, requests, kv_transfer_s=lambda message_B: 0.0)
    assert max(held for _, held in result.scaled) == 4
    log = result.iterations
    for replica in (1, 3):  # each pool's second replica, in the log's order (prefill's, then decode's)
        starts = log.start_s[log.replica == replica]
        assert len(starts) and starts.min() >= SYNC_PERIOD_S + 10.0
    assert result.energy_parts_J["static_J"] == pytest.approx(
        50.0 * result.held_replica_s["prefill"] + 100.0 * result.held_replica_s["decode"])
    assert result.held_replica_s["prefill"] > result.makespan_s < result.held_replica_s["decode"]


def test_a_decode_pool_scales_on_the_requests_whose_kv_is_crossing_to_it(costs):
    """A prefill replica hands four requests arriving together over to a decode pool scaling from one replica up to
    three on requests waiting against 1 a replica, each request's KV taking 10 s to cross, one after another over the
    prefill replica's ports: they land at about 10, 20, 30 and 40 s, each then decoding its one further token in about
    half a millisecond. At the 15 s sync the first has left and the other three are crossing to the decode replica,
    which counts them waiting: 3 against 1 a replica wants three (within the step limit, 1 + max(4, 1))."""
    scaling = Autoscaling(max_replicas=3, target=1.0)
    pools = [pool(costs, None, role="prefill"), pool(costs, scaling, role="decode")]
    requests = RequestSet(arrival_s=np.zeros(4), prompt_tokens=np.full(4, 16), output_tokens=np.full(4, 2))
    result = serve_pools(pools, requests, kv_transfer_s=lambda message_B: 10.0)
    np.testing.assert_allclose(result.records.decode_admitted_s, [10.0, 20.0, 30.0, 40.0], atol=0.01)
    assert result.scaled[:2] == ((0.0, 2), (SYNC_PERIOD_S, 4))  # every pool's replicas held: the prefill pool's one


def test_a_fleet_s_pools_scale_each_by_its_own_hpa_behind_one_router(costs):
    """A fleet of a pool of one replica, fixed, and another autoscaled from one up to three (requests waiting against
    1 a replica, a 10 s cold start), one router over every serving replica, both falling behind: the second scales at
    the first sync, the router sends requests to its new replicas once they serve, and each pool rents the
    replica-seconds it held (the fixed one: the makespan)."""
    decode_s = costs.price(step_shape(decode_kv=[64], sampled=1)).time_s
    slow = Slower(costs, 0.5 / decode_s)  # half a second a decode step
    count = 200
    requests = RequestSet(arrival_s=np.arange(count) * 0.25, prompt_tokens=np.full(count, 16),
                          output_tokens=np.full(count, 6))
    fixed = replace(pool(slow, None), name="fixed")
    scaled = replace(pool(slow, Autoscaling(max_replicas=3, target=1.0, cold_start_s=10.0)), name="scaled")
    result = serve_pools([fixed, scaled], requests)
    assert result.scaled[:2] == ((0.0, 2), (SYNC_PERIOD_S, 4))  # every pool's replicas held
    log = result.iterations
    for replica in (2, 3):  # the scaled pool's second and third replicas, after the fixed pool's one and its first
        starts = log.start_s[log.replica == replica]
        assert len(starts) and starts.min() >= SYNC_PERIOD_S + 10.0
    assert result.held_replica_s["fixed"] == pytest.approx(result.makespan_s)
    assert result.held_replica_s["scaled"] > result.makespan_s


def test_a_pool_of_none_scales_from_and_to_zero_as_keda_does(costs):
    """Least 0, most 2, a 10 s cold start: five requests at 1-5 s wait at the gateway until KEDA's first poll (30 s)
    starts a replica, which serves them from 40 s; no request in the pool since the poll at 30 s, the poll at 330 s
    (the 300 s cooldown after it) gives it back. A second burst at 1,000-1,004 s starts one at the poll at 1,020 s,
    serving from 1,030 s, held to the run's end (its last finish): 300 replica-seconds and that span, by hand."""
    count = 10
    arrivals = np.r_[np.arange(1.0, 6.0), np.arange(1000.0, 1005.0)]
    requests = RequestSet(arrival_s=arrivals, prompt_tokens=np.full(count, 16), output_tokens=np.full(count, 4))
    scaled = pool(costs, Autoscaling(max_replicas=2, target=1.0, cold_start_s=10.0), replicas=0)
    result = serve_pools([scaled], requests)
    ttft = result.records.ttft_s
    assert ttft[0] == pytest.approx(40.0 - 1.0, abs=0.1) and ttft[5] == pytest.approx(1030.0 - 1000.0, abs=0.1)
    assert result.records.first_token_s.min() >= 40.0
    assert result.scaled == ((KEDA_POLLING_S, 1), (11 * KEDA_POLLING_S, 0), (34 * KEDA_POLLING_S, 1))
    end_s = float(result.records.finish_s.max())
    assert result.held_replica_s["serve"] == pytest.approx(KEDA_COOLDOWN_S + end_s - 34 * KEDA_POLLING_S)


def test_keda_polls_every_30_s_whatever_the_hpa_s_sync_period(costs):
    """KEDA polls a ScaledObject's trigger on a clock of its own (pollingInterval, 30 s), apart from the HPA's sync
    period: a pool of none whose HPA syncs every 45 s starts a replica at KEDA's first poll (30 s) for a request
    waiting since 1 s, serving from 40 s with a 10 s cold start (not at the sync at 45 s); with nothing more in the
    pool it gives it back at the poll 300 s after the one at 30 s (330 s, not a multiple of 45 s)."""
    requests = RequestSet(arrival_s=np.array([1.0]), prompt_tokens=np.array([16]), output_tokens=np.array([4]))
    scaled = pool(costs, Autoscaling(max_replicas=2, target=1.0, cold_start_s=10.0, interval_s=45.0), replicas=0)
    result = serve_pools([scaled], requests)
    assert result.records.first_token_s[0] == pytest.approx(KEDA_POLLING_S + 10.0, abs=0.1)
    assert result.scaled == ((KEDA_POLLING_S, 1),)
    env = simpy.Environment()
    engines = [[_engine()], [_engine()]]
    scaler = make_autoscaler(env, engines, 0, Autoscaling(max_replicas=2, target=1.0, interval_s=45.0), [], 0.0)
    waiting = [1]
    scaler.at_gateway = lambda: waiting[0]
    env.process(scaler.run())
    env.run(until=KEDA_POLLING_S + 1.0)
    assert scaler.count("ready") == 1
    waiting[0] = 0
    env.run(until=KEDA_POLLING_S + KEDA_COOLDOWN_S + 1.0)
    assert scaler.count("ready", "starting", "draining") == 0 and scaler.held[0] == [[KEDA_POLLING_S,
                                                                                      11 * KEDA_POLLING_S]]


def test_keda_counts_the_cooldown_from_the_last_poll_that_found_a_request():
    """KEDA checks its trigger at its polls (pollingInterval) and scales to zero a cooldownPeriod after the last one
    that found it active: a request waiting at the gateway at the poll at 30 s, then one in the pool from 44 s to 46 s
    only (seen by the HPA's sync at 45 s, between KEDA's polls at 30 and 60 s), the replica goes back at the poll at
    330 s, 300 s after the poll at 30 s."""
    env = simpy.Environment()
    engines = [[_engine()], [_engine()]]
    scaler = make_autoscaler(env, engines, 0, Autoscaling(max_replicas=2, target=1.0), [], 0.0)
    waiting = [1]
    scaler.at_gateway = lambda: waiting[0]

    def traffic():
        yield env.timeout(KEDA_POLLING_S + 1.0)
        waiting[0] = 0
        yield env.timeout(44.0 - env.now)
        engines[0][0].outstanding = 1
        yield env.timeout(2.0)
        engines[0][0].outstanding = 0

    env.process(traffic())
    env.process(scaler.run())
    env.run(until=KEDA_POLLING_S + KEDA_COOLDOWN_S + 60.0)
    assert scaler.held[0] == [[KEDA_POLLING_S, KEDA_POLLING_S + KEDA_COOLDOWN_S]]
