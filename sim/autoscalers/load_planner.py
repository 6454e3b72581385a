"""NVIDIA Dynamo's load-based scaling: one replica more or fewer at a time, from each serving replica's estimated TTFT
and ITL against the SLO (Dynamo's planner design documentation and its load_scaling.py, SLA mode), alone
(`load_planner`) or above the SLA planner's throughput-based replicas as a floor (`sla_load_planner`: both modes
enabled, as Dynamo recommends for bursty traffic).

Every LOAD_INTERVAL_S, unless a replica is still starting or draining (Dynamo observes only while a scale it asked
for is under way: until the workers it sees are the workers it asked for), it estimates for each serving replica the
TTFT and ITL of a request of the recent mean prompt length joining it now (sim/latency_prediction.py, the replica's
own cost model, where Dynamo fits a regression of each engine's iteration times on its forward-pass metrics), and:
- adds a replica where every replica's TTFT is over the SLO's (a prefill pool), every one's ITL (a decode pool), or
  either (a pool serving whole requests);
- else gives one back where the survivors would hold the SLO with a margin: the queue's share of each replica's TTFT,
  grown by n / (n - 1) for n replicas, under SCALE_DOWN_SENSITIVITY of what the SLO leaves beside the prompt's own
  time (alone; in a pool serving whole requests that prefills in chunks, beside its decodes grown the same, Dynamo's
  aggregated check), and each replica's requests, grown the same, fitting its KV blocks and decoding within
  SCALE_DOWN_SENSITIVITY of the SLO's ITL (a pool serving whole requests: both);
- with the throughput-based floor, never holds fewer than the SLA planner's replicas, recomputed every adjustment
  interval (180 s; an interval the SLA planner skips keeps the last), and rises to that floor at its next decision
  even where the load-based one changes nothing (Dynamo's agg and disagg modes; its mode for one component of a
  disaggregated pair, the other fixed, applies the floor only where the load-based decision changes the count).
It reads nothing until MIN_OBSERVATIONS requests have finished (Dynamo's cold start). Waiting out a scale under way is
Dynamo's agg and single-component modes'; its disagg mode decides on, from the ready workers (a replica more than
those ready re-asks for the one starting).
"""

from __future__ import annotations

import math
from dataclasses import replace

from sim.autoscalers.base import Autoscaler, Autoscaling, Policy, Traffic
from sim.autoscalers.sla_planner import SLAPlanner
from sim.latency_prediction import decoded_batch, iteration_s, predict_latency, prompt_alone_s
from sim.replica import Replica

LOAD_INTERVAL_S = 5.0  # Dynamo's load_adjustment_interval
SCALE_DOWN_SENSITIVITY = 0.8  # Dynamo's load_scaling_down_sensitivity, 80 (%)
MIN_OBSERVATIONS = 5  # Dynamo's load_min_observations
# The latest finished requests whose mean prompt a joining request is taken to have: Dynamo's max_num_fpm_samples, the
# forward passes its regression keeps (here requests, not iterations).
RECENT_REQUESTS = 64


class LoadPlanner(Policy):
    """Dynamo's load-based scaling for one pool: a prefill, decode or whole-request ('serve') pool."""

    name = "load_planner"
    default_interval_s = LOAD_INTERVAL_S
    slo_limits = ("ttft_s", "tpot_s")

    def __init__(self, scaling: Autoscaling, role: str, traffic: Traffic | None):
        super().__init__(scaling, role, traffic)
        for name, limit in (("ttft_s", scaling.ttft_s), ("tpot_s", scaling.tpot_s)):
            if limit is None or not limit > 0:
                raise ValueError(f"{name}: found {limit}, allowed: the SLO's limit > 0")
        if traffic is None:
            raise ValueError("traffic: found none, allowed: the run's arrivals and finished requests")
        self.memo: dict = {}  # the iteration times priced on the pool's replicas (one cost model)

    def wanted(self, scaler: Autoscaler) -> int:
        held = scaler.count("ready", "starting")
        finished = self.traffic.finished
        if scaler.count("starting", "draining") or len(finished) < MIN_OBSERVATIONS:
            return held
        recent = finished[-RECENT_REQUESTS:]
        isl = sum(seq.prompt for seq in recent) / len(recent)
        ready = [r for r, state in enumerate(scaler.state) if state == "ready"]
        engines = [engine for r in ready for engine in scaler.replicas[r]]
        predicted = [predict_latency(engine, max(round(isl), 1), prefilled=self.role == "decode", memo=self.memo)
                     for engine in engines]
        slow_first = all(p.ttft_s > self.scaling.ttft_s for p in predicted)
        slow_tokens = all(p.tpot_s > self.scaling.tpot_s for p in predicted)
        if {"prefill": slow_first, "decode": slow_tokens}.get(self.role, slow_first or slow_tokens):
            return min(held + 1, self.scaling.max_replicas)
        if len(ready) < 2:
            return held  # none to give back
        growth = len(ready) / (len(ready) - 1)
        first_holds = self.role == "decode" or all(
            self._first_token_holds(engine, isl, prediction, growth) for engine, prediction in zip(engines, predicted,
                                                                                                  strict=True))
        tokens_hold = self.role == "prefill" or all(self._tokens_hold(engine, growth) for engine in engines)
        return max(held - 1, scaler.minimum) if first_holds and tokens_hold else held

    def _first_token_holds(self, engine: Replica, isl: float, prediction, growth: float) -> bool:
        """Whether the replica's queue, grown by `growth`, leaves its TTFT within the margin of the SLO: the queue's
        share under SCALE_DOWN_SENSITIVITY of the SLO less the prompt's own time. Its own time is a prompt's beside the
        decodes riding along (a chunked scheduler's, Orca's), grown too in a pool serving whole requests
        (Dynamo's aggregated check: the new request's TTFT at the decode load after consolidation); a prompt alone
        elsewhere."""
        riding = [seq.computed + 1 for seq in engine.state.running if not seq.in_prefill] \
            if engine.scheduler.prompts_beside_decodes and self.role == "serve" else []
        # Those of them that go first whatever the prompt (Scheduler.going_first: under Orca's max_decode_preemptions,
        # those that have sat out that many iterations), as the predictor counts them; as many more in the grown batch.
        overdue = min(len(engine.scheduler.going_first(engine.state.running)), len(riding))
        own_s = prompt_alone_s(engine, isl, self.memo, riding, overdue)
        grown = math.ceil(len(riding) * growth)
        after_s = prompt_alone_s(engine, isl, self.memo, [round(sum(riding) / len(riding))] * grown if riding else [],
                                 min(math.ceil(overdue * growth), grown))
        budget_s = (self.scaling.ttft_s - after_s) * SCALE_DOWN_SENSITIVITY
        return budget_s > 0 and (prediction.ttft_s - own_s) * growth < budget_s

    def _tokens_hold(self, engine: Replica, growth: float) -> bool:
        """Whether the replica's requests (decoding and queued), grown by `growth`, fit its KV blocks and decode
        within SCALE_DOWN_SENSITIVITY of the SLO's ITL: an iteration of them all, or where its scheduler decodes fewer
        at once (a chunked scheduler's token budget), as many iterations of those as a held request waits between its
        tokens (sim/latency_prediction.py decoded_batch; n-gram drafts' decodes counting their expected matches:
        drafted_share)."""
        state = engine.state
        contexts = [seq.computed + 1 if not seq.in_prefill else seq.target
                    for queue in (state.running, state.waiting, state.swapped) for seq in queue]
        if not contexts:
            return True
        kv = state.kv
        if sum(contexts) * growth >= kv.capacity_blocks * kv.block_tokens:
            return False
        # As many more requests, past max_seqs too: Dynamo's regression extrapolates an iteration's time in its KV
        # tokens, whatever the engine's seats.
        count = math.ceil(len(contexts) * growth)
        mean = round(sum(contexts) / len(contexts))
        decoded, rounds = decoded_batch(engine, [mean] * count)
        return rounds * iteration_s(engine, [], decoded, 0, self.memo) < self.scaling.tpot_s * SCALE_DOWN_SENSITIVITY


class SLALoadPlanner(LoadPlanner):
    """Dynamo's planner with both modes: load-based scaling above the throughput-based replicas as a floor."""

    name = "sla_load_planner"
    forecasts = True

    def __init__(self, scaling: Autoscaling, role: str, traffic: Traffic | None):
        super().__init__(scaling, role, traffic)
        self.throughput = SLAPlanner(replace(scaling, interval_s=None), role, traffic)
        self.floor = 0
        self.next_floor_s = self.throughput.interval_s

    def wanted(self, scaler: Autoscaler) -> int:
        # The floor is recomputed on its own schedule, a scale under way or not (Dynamo's throughput loop runs apart
        # from the load loop, which alone waits for a scale to finish), over the interval to now.
        if scaler.env.now >= self.next_floor_s:
            while self.next_floor_s <= scaler.env.now:
                self.next_floor_s += self.throughput.interval_s
            needed = self.throughput.needed(scaler)
            self.floor = self.floor if needed is None else needed
        if scaler.count("starting", "draining"):
            return scaler.count("ready", "starting")
        return max(super().wanted(scaler), self.floor)
