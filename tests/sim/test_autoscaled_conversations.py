"""Conversations on an autoscaled pool (sim/serving.py serve_pools): a later turn goes to the replica that served its
conversation while that replica serves; once the autoscaler drains it, the pool's router picks the turn's replica
afresh and the turn computes its whole prompt there, its earlier context cached on no serving replica."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.shapes import step_shape
from sim import serving
from sim.autoscalers import Autoscaling, Traffic
from sim.autoscalers.hpa import SCALE_DOWN_WINDOW_S, SYNC_PERIOD_S
from sim.serving import serve_pools
from tests.sim.autoscaled_pool import BLOCK, Slower, pool
from workloads.requests import RequestSet

BURST = 10  # single requests at 0 s, one at a time on the first replica: it falls behind and the pool scales up
FIRST_PROMPT, FIRST_OUTPUT, SECOND_PROMPT = 64, 4, 100
TURN_AT_S = SYNC_PERIOD_S + 2.0  # the conversation's first turn: the second replica serves by then (1 s cold start)


def _run(costs, think_s: float):
    """The burst, then a two-turn conversation whose second turn comes `think_s` after the first's answer (its
    prompt the first's 64 + 4 tokens of context and 32 new ones), on a pool of one replica scaling to two."""
    decode_s = costs.price(step_shape(decode_kv=[64], sampled=1)).time_s
    slow = Slower(costs, 0.5 / decode_s)  # half a second a decode step: about 2 s a burst request
    count = BURST + 2
    requests = RequestSet(
        arrival_s=np.array([0.0] * BURST + [TURN_AT_S, TURN_AT_S]),
        prompt_tokens=np.array([16] * BURST + [FIRST_PROMPT, SECOND_PROMPT]),
        output_tokens=np.array([4] * BURST + [FIRST_OUTPUT, 4]),
        prefix_group=np.arange(count) - np.array([0] * (BURST + 1) + [1]),  # the turns share a group
        shared_tokens=np.array([0] * (BURST + 1) + [FIRST_PROMPT + FIRST_OUTPUT]),
        after_previous_s=np.array([np.nan] * (BURST + 1) + [think_s]))
    scaled = pool(slow, Autoscaling(max_replicas=2, target=1.0, cold_start_s=1.0))
    return serve_pools([scaled], requests)


def _second_turn(result) -> tuple[set[int], int]:
    """The replicas the second turn's iterations ran on and the prompt tokens they computed."""
    log = result.iterations
    after = log.start_s >= result.records.arrival_s[-1]  # nothing else runs then
    return set(log.replica[after].astype(int).tolist()), int(log.prefill_tokens[after].sum())


def test_a_turn_stays_on_its_replica_while_it_serves_and_finds_its_context_there(costs):
    """Back 100 s after its answer, before the scale-down window has passed: the second replica still serves and
    holds the first turn's context, 68 tokens, of which the whole blocks (4 of 16 tokens) are found: 100 - 64 = 36
    computed."""
    result = _run(costs, think_s=100.0)
    assert result.scaled[:2] == ((0.0, 1), (SYNC_PERIOD_S, 2))
    first = set(result.iterations.replica[np.isclose(result.iterations.start_s, TURN_AT_S)].astype(int).tolist())
    assert first == {1}  # least requests: the new replica, idle, against the one still working through the burst
    assert _second_turn(result) == ({1}, SECOND_PROMPT - (FIRST_PROMPT + FIRST_OUTPUT) // BLOCK * BLOCK)


def test_a_turn_whose_replica_was_drained_is_routed_afresh_and_computes_its_whole_prompt(costs):
    """Back 600 s after its answer (at 619 s): the pool drained its second replica at the first sync where its
    recommendation of two (at 15 s) had left the 300 s window, 330 s, so the turn goes to the first, which never held
    its context: all 100 tokens computed."""
    result = _run(costs, think_s=600.0)
    assert result.scaled == ((0.0, 1), (SYNC_PERIOD_S, 2), (2 * SYNC_PERIOD_S + SCALE_DOWN_WINDOW_S, 1))
    assert _second_turn(result) == ({0}, SECOND_PROMPT)
    assert result.records.arrival_s[-1] == pytest.approx(result.records.finish_s[-2] + 600.0)


def test_the_autoscaler_counts_a_later_turn_at_its_arrival_not_at_its_nominal_time(costs, monkeypatch):
    """What an SLA planner reads of the arrivals (Traffic.arrival_s): the timed requests' times and the second turn's
    as it came, 600 s after its first's answer, not the 17 s the request set gives it."""
    made = []

    def traffic(**fields):
        made.append(Traffic(**fields))
        return made[-1]

    monkeypatch.setattr(serving, "Traffic", traffic)
    result = _run(costs, think_s=600.0)
    assert made[0].arrival_s == [0.0] * BURST + [TURN_AT_S, pytest.approx(result.records.finish_s[-2] + 600.0)]
