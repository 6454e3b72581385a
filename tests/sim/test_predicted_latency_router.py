"""The predicted-latency router (sim/routers.py PredictedLatency, llm-d's slo-aware-routing scorer) against hand
cases, each replica's prediction set by hand: replicas within the SLO take all but the explored 1%, the weights pack
('least') or spread ('most') as llm-d's formula gives them, an idle replica goes first when none is within the SLO, a
cached prompt holds the request, and the draws follow the seed."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

import sim.routers
from sim.kv_cache import PagedKVCache
from sim.latency_prediction import LEARNING_RATE, LatencyPrediction
from sim.routers import PredictedLatency, PredictedLatencyMost, Routed, make_router
from sim.serving_metrics import SLO

BLOCK = 16
DRAWS = 4000
SLO_1S = SLO(ttft_s=1.0, tpot_s=0.1)
PROMPT = Routed(prompt_tokens=64)


@pytest.fixture(autouse=True)
def _predicted_by_hand(monkeypatch):
    """Each stand-in replica's prediction is its own `predicted` (ttft_s, tpot_s)."""
    monkeypatch.setattr(sim.routers, "predict_latency",
                        lambda replica, prompt_tokens, *_: LatencyPrediction(*replica.predicted))


def _replica(ttft_s: float, tpot_s: float, outstanding: int = 1, cached_blocks: int = 0, running=()):
    """A stand-in replica predicted (ttft_s, tpot_s), running requests whose urgency `running` gives."""
    kv = PagedKVCache(capacity_blocks=40, block_tokens=BLOCK)
    if cached_blocks:
        kv._cache(0, cached_blocks)  # group 0's prefix, idle, as a finished request leaves it
    return SimpleNamespace(predicted=(ttft_s, tpot_s), outstanding=outstanding, costs=None, state=SimpleNamespace(
        kv=kv, running=[SimpleNamespace(urgent=urgent) for urgent in running]))


def _share(router, replicas, pick, request=PROMPT) -> float:
    return sum(router.choose(replicas, request) is pick for _ in range(DRAWS)) / DRAWS


def _within(share: float, expected: float) -> bool:
    """Within 4 standard deviations of a binomial share over DRAWS draws."""
    return abs(share - expected) <= 4 * math.sqrt(expected * (1 - expected) / DRAWS)


def test_replicas_within_the_slo_take_all_but_the_explored_share():
    within, late = _replica(0.5, 0.05), _replica(3.0, 0.05)
    assert _within(_share(PredictedLatency(SLO_1S, (1,)), [within, late], late), PredictedLatency.EXPLORE)


@pytest.mark.parametrize(("router", "favoured"), [(PredictedLatency, 1), (PredictedLatencyMost, 0)])
def test_the_least_strategy_packs_and_the_most_spreads(router, favoured):
    """Headroom of 0.8 s and 80 ms against 0.2 s and 20 ms: scaled to 1 and 0, weights 2 and 101 ('least': towards
    the least headroom) or 101 and 2 ('most')."""
    replicas = [_replica(0.2, 0.02), _replica(0.8, 0.08)]
    assert _within(_share(router(SLO_1S, (2,)), replicas, replicas[favoured]), 101 / 103)


def test_short_of_headroom_an_idle_replica_goes_first_else_the_least_deficit():
    """Without an SLO every limit reads 0 (llm-d's request without SLO headers): an idle replica takes every request
    however slow; among busy ones, deficits of 0.1 s and 0.3 s (10 and 30 ms) weigh 82 against 2."""
    router = make_router("predicted_latency", None, (3,))
    busy, idle = _replica(0.01, 0.001, outstanding=3), _replica(0.5, 0.05, outstanding=0)
    assert _share(router, [busy, idle], idle) == 1.0
    near, far = _replica(0.1, 0.01), _replica(0.3, 0.03)
    assert _within(_share(router, [far, near], near), 82 / 84)


def test_a_single_limit_leaves_the_other_unconstrained():
    """A TTFT limit alone: a replica decoding at a second a token is within it, and takes the request over a late one
    but for the explored share."""
    slow_decode, late = _replica(0.5, 1.0), _replica(3.0, 0.01)
    router = PredictedLatency(SLO(ttft_s=1.0), (4,))
    assert _within(_share(router, [late, slow_decode], late), PredictedLatency.EXPLORE)


def test_a_replica_caching_the_whole_prompt_holds_the_request():
    """Caching all four of the prompt's blocks (at least 99%), a late replica takes the request 99% of the time, and
    a little of the explored rest."""
    cached, within = _replica(3.0, 0.05, cached_blocks=4), _replica(0.5, 0.05)
    request = Routed(group=0, shareable_tokens=64, prompt_tokens=64)
    share = _share(PredictedLatency(SLO_1S, (5,)), [within, cached], cached, request)
    assert _within(share, 1 - PredictedLatency.EXPLORE + PredictedLatency.EXPLORE ** 2)


def test_the_same_seed_draws_the_same_picks():
    replicas = [_replica(0.2, 0.02), _replica(0.8, 0.08), _replica(0.5, 0.05)]

    def picks(seed):
        router = PredictedLatency(SLO_1S, seed)
        return [replicas.index(router.choose(replicas, PROMPT)) for _ in range(200)]

    assert picks((7, 0)) == picks((7, 0))
    assert picks((7, 0)) != picks((8, 0))


def test_an_urgent_request_is_held_to_its_own_limits_and_binds_the_replica_it_runs_on():
    """Urgent requests limited to 0.3 s TTFT and 30 ms TPOT, the others to 1 s and 100 ms: an urgent request finds
    only the replica predicted 0.2 s within its limit, where another finds both; and where an urgent request runs, a
    newcomer's TPOT limit there is the urgent one's (llm-d's podMinTPOTSLO), so a 50 ms TPOT is short of it."""
    slo = SLO(ttft_s=1.0, tpot_s=0.1, urgent_ttft_s=0.3, urgent_tpot_s=0.03)
    quick, slower = _replica(0.2, 0.02), _replica(0.5, 0.02)
    router = PredictedLatency(slo, (6,))
    assert _within(_share(router, [slower, quick], slower, Routed(prompt_tokens=64, urgent=True)),
                   PredictedLatency.EXPLORE)
    assert _share(router, [slower, quick], slower) > 0.5  # both within: packed towards the least headroom
    bound, free = _replica(0.2, 0.05, running=(False, True)), _replica(0.5, 0.05, running=(False,))
    assert _within(_share(router, [bound, free], bound), PredictedLatency.EXPLORE)


def test_a_class_without_limits_reads_both_as_0_and_binds_no_replica():
    """Urgent limits alone (1 s, 100 ms): the other requests carry none, as a request without SLO headers reaches
    llm-d's gateway, so both of their limits read 0 and the pick leans to the lowest predicted latency (deficits of
    0.2 s and 0.5 s weigh 82 against 2), where unbounded limits had drawn the replicas alike; and a request without a
    TPOT limit running on a replica binds no urgent newcomer there (llm-d's podMinTPOTSLO of 0 reads as none), so
    'least' packs it towards the replica of less TTFT headroom, weighing 91 against 11."""
    router = PredictedLatency(SLO(urgent_ttft_s=1.0, urgent_tpot_s=0.1), (9,))
    quick, slow = _replica(0.2, 0.02), _replica(0.5, 0.05)
    assert _within(_share(router, [slow, quick], quick), 82 / 84)
    busy, other = _replica(0.2, 0.05, running=(False,)), _replica(0.5, 0.05)
    urgent = Routed(prompt_tokens=64, urgent=True)
    assert _within(_share(router, [busy, other], busy, urgent), 11 / 102)


def test_a_replica_s_predictions_are_corrected_by_what_its_requests_took():
    """A request routed to a replica predicted 0.5 s to its first token and 50 ms a token takes 1.0 s and 100 ms (its
    first token at 1.0 s, then 10 more tokens by 2.0 s): the replica's bias moves a tenth of the way from 1 to 2 in
    each, and its next prediction is scaled by 1.1. One handed over after its prefill teaches the TTFT alone."""
    replica = _replica(0.5, 0.05)
    replica.watchers = []
    router = PredictedLatency(SLO_1S, (9,))
    assert router.choose([replica], Routed(prompt_tokens=64, index=3)) is replica
    finished = SimpleNamespace(index=3, arrival_s=0.0, first_token_s=1.0, finish_s=2.0, generated=11)
    for watch in replica.watchers:
        watch(replica, finished)
    learned = router.learned[id(replica)]
    assert (learned.ttft, learned.tpot) == pytest.approx((1.0 + LEARNING_RATE, 1.0 + LEARNING_RATE))
    corrected = learned.corrected(LatencyPrediction(0.5, 0.05))
    assert (corrected.ttft_s, corrected.tpot_s) == pytest.approx((0.5 * 1.1, 0.05 * 1.1))
    router.choose([replica], Routed(prompt_tokens=64, index=4))
    handed_over = SimpleNamespace(index=4, arrival_s=0.0, first_token_s=0.5, finish_s=math.nan, generated=1)
    replica.watchers[0](replica, handed_over)
    assert (learned.ttft, learned.tpot) == pytest.approx((1.1 + LEARNING_RATE * (0.5 / 0.5 - 1.1), 1.1))
