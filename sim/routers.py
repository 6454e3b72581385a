"""Routers: how a pool picks the replica each request joins (an arrival, or a request a prefill pool hands over),
found by name through ROUTERS. A pool makes one router per run, so a router may keep state (round robin's turn)."""

from __future__ import annotations

import math
from collections.abc import Sequence as Sequence_
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from sim.latency_prediction import LatencyPrediction, LearnedBias, predict_latency
from sim.replica import Replica
from sim.schedulers import Sequence
from sim.serving_metrics import SLO


@dataclass(frozen=True)
class Routed:
    """What a router may know of the request it routes: its prefix group, the tokens it may share with the group
    (None: the pool's prefix), its prompt's tokens, in a prefix tree its path's nodes (RequestSet.prefix_path;
    None: it has none), the root its group's chain starts with (RequestSet.prefix_root), and whether it is urgent
    (its SLO class: sim/serving_metrics.py SLO)."""

    group: int = 0
    shareable_tokens: int | None = None
    prompt_tokens: int = 1
    tree_nodes: tuple[tuple[int, int], ...] | None = None
    root: int = 0
    urgent: bool = False
    index: int = -1  # the request's (-1: unknown)
    prefilled: bool = False  # handed over by a prefill pool, prompt_tokens its context


class Router:
    """Picks one of a pool's replicas for the next request. Subclasses set `name` and implement `choose`; each is made
    with the run's SLO and a seed of its own, which a router may read."""

    name: ClassVar[str] = ""
    draws: ClassVar[bool] = False  # whether its picks draw from its seed

    def __init__(self, slo: SLO | None = None, seed: Sequence_[int] = (0,)) -> None:
        pass

    def choose(self, replicas: Sequence_[Replica], request: Routed = Routed()) -> Replica:
        raise NotImplementedError


class LeastRequests(Router):
    """The replica holding the fewest requests, waiting, running or swapped out (ties: the first)."""

    name = "least_requests"

    def choose(self, replicas: Sequence_[Replica], request: Routed = Routed()) -> Replica:
        return min(replicas, key=lambda replica: replica.outstanding)


class LeastTokens(Router):
    """The replica with the fewest pending tokens (ties: the first): join the shortest queue counted in tokens, as
    Splitwise's cluster-level scheduler routes (Patel et al., ISCA 2024, §4.1). A request's pending tokens are its
    prompt tokens still to prefill plus one for the token it has yet to produce, as the paper's simulator counts them
    (splitwise-sim scheduler.py, TokenJSQScheduler: prompt_size + 1 when routed, less prompt_size when its prompt
    completes); output lengths are unknown to a router, so a decoding request counts one."""

    name = "least_tokens"

    def choose(self, replicas: Sequence_[Replica], request: Routed = Routed()) -> Replica:
        return min(replicas, key=lambda replica: replica.pending_tokens)


class LeastKVUsage(Router):
    """The replica whose KV cache has the smallest share of its blocks in use (ties: the fewest requests held), as the
    Gateway API Inference Extension's kv-cache-utilization-scorer scores a pod 1 - its KV usage and its
    max-score-picker takes the best (llm-d's endpoint picker). Blocks in use are those a sequence reads (vLLM's
    kv_cache_usage: an idle cached prefix counts as free); a replica of a smaller or slower device fills sooner, so it
    takes fewer requests in a fleet of mixed devices."""

    name = "least_kv_usage"

    def choose(self, replicas: Sequence_[Replica], request: Routed = Routed()) -> Replica:
        return min(replicas, key=lambda replica: (replica.state.kv.in_use_blocks / replica.state.kv.capacity_blocks,
                                                  replica.outstanding))


class RoundRobin(Router):
    """Each replica in turn, whatever it holds."""

    name = "round_robin"

    def __init__(self, slo: SLO | None = None, seed: Sequence_[int] = (0,)) -> None:
        super().__init__(slo, seed)
        self.turn = 0

    def choose(self, replicas: Sequence_[Replica], request: Routed = Routed()) -> Replica:
        replica = replicas[self.turn % len(replicas)]
        self.turn += 1
        return replica


class CacheAware(Router):
    """The replica whose prefix cache holds most of the request's prompt, unless the load is out of balance, as the
    cache-aware policy of SGLang's model gateway routes (lightseekorg/smg docs/getting-started/load-balancing.md,
    --policy cache_aware, at its defaults): where the most and the fewest requests a replica holds differ by more
    than BALANCE_ABS and the most exceed BALANCE_REL times the fewest, the replica holding the fewest; else, where
    the best replica's cached share of the prompt reaches CACHE_THRESHOLD, that replica (ties: the fewest requests);
    else the replica with the most free cache space. The gateway tracks each worker's cache with a radix tree of the
    prompts it routed there; here the router reads each replica's cache as it is."""

    name = "cache_aware"
    CACHE_THRESHOLD = 0.3  # --cache-threshold, default: the least matched share of the prompt that routes by cache
    BALANCE_ABS = 64  # --balance-abs-threshold, default: requests
    BALANCE_REL = 1.5  # --balance-rel-threshold, default

    def choose(self, replicas: Sequence_[Replica], request: Routed = Routed()) -> Replica:
        loads = [replica.outstanding for replica in replicas]
        most, fewest = max(loads), min(loads)
        if most - fewest > self.BALANCE_ABS and most > fewest * self.BALANCE_REL:
            return replicas[loads.index(fewest)]
        found = [replica.state.kv.chain_tokens(request.group, request.shareable_tokens, request.tree_nodes,
                                               request.root) for replica in replicas]
        best = max(range(len(replicas)), key=lambda i: (found[i], -loads[i]))
        if found[best] >= self.CACHE_THRESHOLD * request.prompt_tokens:
            return replicas[best]
        return max(replicas, key=lambda replica: replica.state.kv.free_blocks + replica.state.kv.evictable_blocks)


class PredictedLatency(Router):
    """llm-d's predicted-latency scheduling at its defaults (the Gateway API Inference Extension's slo-aware-routing
    scorer, pkg/epp/scheduling/framework/plugins/multi/slo_aware_router/plugin.go), its latency predictor the replicas'
    own cost models (sim/latency_prediction.py), so that it holds for a fleet of mixed devices, which llm-d's learned
    predictor does not yet model.

    Each replica's headroom is the run's SLO limit less the request's predicted TTFT, and the TPOT limit less its
    predicted TPOT. Replicas with headroom on both are picked 99% of the time (1 - EXPLORE) where both kinds exist:
    at random, weighted towards the least headroom (llm-d's default 'least' strategy, which packs requests onto the
    replicas nearest their limits; PredictedLatencyMost weighs towards the most): weight 2 to 101 by 0.8 x the TTFT
    headroom and 0.2 x the TPOT headroom, each scaled to 0-1 over the candidates. Among replicas short
    of headroom, one holding no request goes first; else weights 2 to 82 by the blended deficit (least first), in
    turn over those short on both limits, on TTFT alone and on TPOT alone. Before each weighing, where replicas hold
    at least AFFINITY of the prompt's blocks cached (AFFINITY_ALL over all replicas first), the pick is among them,
    except 1% of the time.

    Each request is held to its class's limits (the urgent requests' own, where the SLO sets them: SLO.limits), and
    its TPOT limit on a replica to the tightest of the requests running there, as llm-d tightens it (podMinTPOTSLO).
    A class without limits (every request, where the run sets none; the others, where only the urgent requests have
    limits) reads both as 0, as llm-d reads a request without SLO headers: every replica falls short, and the pick
    leans to the lowest predicted latency; such a request running on a replica binds no newcomer there (llm-d's
    podMinTPOTSLO of 0 is none). A class with a single limit is unconstrained on the other (llm-d's missing header
    reads as 0, which no pod meets). Draws come from the run's seed. Not
    modeled: shedding a request no replica can serve in time (llm-d's sheddable priorities)."""

    name = "predicted_latency"
    draws = True
    PACKS: ClassVar[bool] = True  # HEADROOM_SELECTION_STRATEGY: 'least' (True, the default) or 'most'
    EXPLORE = 0.01  # STICKY_EPSILON: how often a pick ignores the headroom tier and the cache affinity
    AFFINITY = 0.80  # AFFINITY_GATE_TAU: the cached share of the prompt that gates a tier's pick
    AFFINITY_ALL = 0.99  # AFFINITY_GATE_TAU_GLOBAL: the cached share that gates the pick over every replica
    TTFT_WEIGHT = 0.8  # HEADROOM_TTFT_WEIGHT and NEG_HEADROOM_TTFT_WEIGHT, defaults
    TPOT_WEIGHT = 0.2  # HEADROOM_TPOT_WEIGHT and NEG_HEADROOM_TPOT_WEIGHT, defaults

    def __init__(self, slo: SLO | None = None, seed: Sequence_[int] = (0,)) -> None:
        super().__init__(slo, seed)
        # A class's limits (urgent, or not); one it leaves unset: none where it sets the other (math.inf), else 0
        # (llm-d's request without SLO headers).
        self.limits_s = {urgent: _class_limits_s(slo.limits(urgent) if slo is not None else (None, None))
                         for urgent in (False, True)}
        self.rng = np.random.default_rng(list(seed))
        self.learned: dict[int, LearnedBias] = {}  # of each replica it routed to, by id
        self.expected: dict[int, tuple[LatencyPrediction, LearnedBias]] = {}  # of each request routed, by index
        self.memo: dict[int, dict] = {}  # predicted iterations' times, by the replicas' costs (by id)

    def choose(self, replicas: Sequence_[Replica], request: Routed = Routed()) -> Replica:
        ttft_limit_s, tpot_limit_s = self.limits_s[request.urgent]
        candidates, raw = [], {}
        for replica in replicas:
            cached = replica.state.kv.chain_tokens(request.group, request.shareable_tokens, request.tree_nodes,
                                                   request.root)
            raw[id(replica)] = predict_latency(replica, request.prompt_tokens, min(cached, request.prompt_tokens - 1),
                                               request.prefilled, self.memo.setdefault(id(replica.costs), {}))
            predicted = self.learned[id(replica)].corrected(raw[id(replica)]) if id(replica) in self.learned \
                else raw[id(replica)]
            # The tightest TPOT limit of the requests it runs binds a newcomer too (llm-d's podMinTPOTSLO, where a
            # limit of 0 is none).
            tightest_s = tpot_limit_s if self.limits_s[True][1] == self.limits_s[False][1] else min(
                (limit for seq in replica.state.running if (limit := self.limits_s[seq.urgent][1]) > 0),
                default=tpot_limit_s)
            candidates.append(_Candidate(replica, ttft_limit_s - predicted.ttft_s,
                                         min(tpot_limit_s, tightest_s) - predicted.tpot_s,
                                         cached / request.prompt_tokens))
        candidates = self._affine(candidates, self.AFFINITY_ALL)
        ample = [c for c in candidates if c.ttft_headroom_s > 0 and c.tpot_headroom_s > 0]
        short = [c for c in candidates if not (c.ttft_headroom_s > 0 and c.tpot_headroom_s > 0)]
        if ample and (not short or self.rng.random() >= self.EXPLORE):
            chosen = self._pick_ample(ample)
        else:
            chosen = self._pick_short(short)
        if request.index >= 0:
            self._expect(chosen, request.index, raw[id(chosen)])
        return chosen

    def _expect(self, replica: Replica, index: int, predicted: LatencyPrediction) -> None:
        """Keep request `index`'s prediction on `replica` to learn from when it leaves (LearnedBias)."""
        if id(replica) not in self.learned:
            self.learned[id(replica)] = LearnedBias()
            replica.watchers.append(self._learn)
        self.expected[index] = (predicted, self.learned[id(replica)])

    def _learn(self, replica: Replica, seq: Sequence) -> None:
        """Learn from request `seq` leaving `replica`, where this router predicted its latency there."""
        if (entry := self.expected.pop(seq.index, None)) is not None:
            entry[1].learn(entry[0], seq)

    def _affine(self, candidates: list[_Candidate], share: float) -> list[_Candidate]:
        """Those caching at least `share` of the prompt, if any, except EXPLORE of the time; else all."""
        affine = [c for c in candidates if c.cached_share >= share]
        if not affine or self.rng.random() < self.EXPLORE:
            return candidates
        return affine

    def _weighted(self, weighted: list[tuple[_Candidate, int]]) -> Replica:
        """One of `weighted`, drawn in proportion to its weight."""
        draw = int(self.rng.integers(sum(weight for _, weight in weighted)))
        for candidate, weight in weighted:
            if draw < weight:
                return candidate.replica
            draw -= weight
        raise AssertionError("a draw below the total weight falls on a candidate")

    def _blend(self, ttft: list[float], tpot: list[float]) -> list[float]:
        """Each candidate's TTFT_WEIGHT and TPOT_WEIGHT of its values scaled to 0-1 over the candidates."""
        return [self.TTFT_WEIGHT * a + self.TPOT_WEIGHT * b for a, b in zip(_scaled(ttft), _scaled(tpot), strict=True)]

    def _pick_ample(self, ample: list[_Candidate]) -> Replica:
        if len(ample) == 1:
            return ample[0].replica
        ample = self._affine(ample, self.AFFINITY)
        if len(ample) == 1:
            return ample[0].replica
        blended = self._blend([c.ttft_headroom_s for c in ample], [c.tpot_headroom_s for c in ample])
        leaning = [1.0 - b for b in blended] if self.PACKS else blended
        return self._weighted([(c, int(lean * 99) + 2) for c, lean in zip(ample, leaning, strict=True)])

    def _pick_short(self, short: list[_Candidate]) -> Replica:
        if len(short) == 1:
            return short[0].replica
        idle = [c for c in short if c.replica.outstanding == 0]
        short = self._affine(idle or short, self.AFFINITY)
        if len(short) == 1:
            return short[0].replica
        weighted = []
        for kind in ((True, True), (True, False), (False, True)):
            tier = [c for c in short if (c.ttft_headroom_s < 0, c.tpot_headroom_s < 0) == kind]
            if tier:
                blended = self._blend([max(-c.ttft_headroom_s, 0.0) for c in tier],
                                      [max(-c.tpot_headroom_s, 0.0) for c in tier])
                weighted += [(c, int((1.0 - b) * 80) + 2) for c, b in zip(tier, blended, strict=True)]
        # Neither short, though not ample: a headroom of exactly 0.
        weighted += [(c, 1) for c in short if c.ttft_headroom_s >= 0 and c.tpot_headroom_s >= 0]
        return self._weighted(weighted)


class PredictedLatencyMost(PredictedLatency):
    """PredictedLatency weighing the replicas with headroom towards the most of it (llm-d's 'most' strategy, which
    spreads requests: in a fleet of mixed devices, towards the faster)."""

    name = "predicted_latency_most"
    PACKS = False


@dataclass(frozen=True)
class _Candidate:
    """A replica as PredictedLatency weighs it."""

    replica: Replica
    ttft_headroom_s: float
    tpot_headroom_s: float
    cached_share: float


def _class_limits_s(limits: tuple[float | None, float | None]) -> tuple[float, float]:
    """A class's TTFT and TPOT limits as PredictedLatency weighs them: both 0 where it has neither (a request without
    SLO headers to llm-d), one it lacks unbounded where it has the other."""
    if all(limit is None for limit in limits):
        return 0.0, 0.0
    ttft_s, tpot_s = (math.inf if limit is None else limit for limit in limits)
    return ttft_s, tpot_s


def _scaled(values: list[float]) -> list[float]:
    """`values` scaled to 0-1 from their least to their most; 0.5 each where they span nothing (or are unbounded)."""
    low, high = min(values), max(values)
    if not high - low > 1e-9 or math.isinf(high - low):
        return [0.5] * len(values)
    return [(value - low) / (high - low) for value in values]


ROUTERS: dict[str, type[Router]] = {cls.name: cls for cls in (LeastRequests, LeastTokens, LeastKVUsage, RoundRobin,
                                                              CacheAware, PredictedLatency, PredictedLatencyMost)}
DEFAULT_ROUTER = LeastRequests.name
# When the first decode pool's router picks a prefill pool's request's decode replica: once its prefill is done
# (vLLM's proxies, Dynamo), or at its arrival, beside the prefill pick (llm-d): sim/serving.py's docstring.
DECODE_PICKS = ("prefill_done", "arrival")


def make_router(name: str, slo: SLO | None = None, seed: Sequence_[int] = (0,)) -> Router:
    """A new router of the kind registered under `name`, for a run of SLO `slo`, drawing (where it draws) from
    `seed`."""
    if name not in ROUTERS:
        raise ValueError(f"router: found {name!r}, allowed: {', '.join(ROUTERS)}")
    return ROUTERS[name](slo, seed)
