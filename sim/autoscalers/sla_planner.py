"""NVIDIA Dynamo's SLA planner (throughput-based scaling): replicas computed from the load the gateway saw and each
replica's profiled throughput at the SLO, instead of a server metric's ratio to a target (the HPA).

Every adjustment interval (Dynamo's default 180 s) it reads, over the interval, the requests that arrived and the mean
prompt length (ISL), output length (OSL), TTFT, time between tokens (ITL) and request duration of those that finished;
an interval in which none finished tells it nothing and it changes nothing (Dynamo skips metrics that are NaN). It
forecasts the next interval's requests, ISL and OSL (Autoscaling.predictor: Dynamo's constant or Kalman predictor,
load_predictors.py) and wants, with those:
- prefill: ceil(requests x ISL / interval x min(1, TTFT correction) / a replica's prefill throughput at that ISL), the
  throughput a prompt of ISL tokens alone runs at; the TTFT correction is the observed TTFT over the observed ISL's
  prompt alone, read as the share of prompt tokens actually computed where it is below 1 (prefix hits) and ignored
  above (queueing);
- decode: ceil(requests x OSL / interval / a replica's best decode throughput with its ITL at most the target over
  the ITL correction), at a context of ISL + OSL / 2; the ITL correction is the observed ITL over the profiled ITL of
  the decode batch Little's law gives (the observed requests x duration / interval over the serving replicas);
- a pool serving requests whole (aggregated): ceil of the prefill and the decode shares of a replica's time added, as
  a replica time-shares the two (our reading; Dynamo's own planner scales disaggregated pools);
each within [replicas, max_replicas], held at once: no stabilization window, no step limit (Dynamo sets the
deployment's replica counts). Source: Dynamo's planner design documentation and its planner_core.py, the 0.x
releases' planner with correction factors. Its 1.x releases (core/throughput_scaling.py) size each pool from its
engines' requests a second at the SLO (the prefill one at the TTFT limit too), discount prompts by a forecast KV hit
rate in place of the corrections, and size an aggregated pool from one model of both phases: not modeled.

The profile is the replica's own cost model (sim/latency_prediction.py's iteration pricing), where Dynamo interpolates
a pre-deployment profiling sweep: a prompt alone for prefill, decode batches of 1 to max_seqs (as many as its KV blocks
hold at that context) for decode.
"""

from __future__ import annotations

import bisect
import math

from sim.autoscalers.base import Autoscaler, Autoscaling, Policy, Traffic
from sim.autoscalers.load_predictors import LOAD_PREDICTORS
from sim.latency_prediction import iteration_s, prompt_alone_s
from sim.replica import Replica

ADJUSTMENT_INTERVAL_S = 180.0  # Dynamo's SLAPlannerDefaults.adjustment_interval


class SLAPlanner(Policy):
    """Dynamo's SLA planner for one pool: a prefill, decode or whole-request ('serve') pool."""

    name = "sla_planner"
    default_interval_s = ADJUSTMENT_INTERVAL_S
    slo_limits = ("tpot_s",)
    forecasts = True

    def __init__(self, scaling: Autoscaling, role: str, traffic: Traffic | None):
        super().__init__(scaling, role, traffic)
        if scaling.tpot_s is None or not scaling.tpot_s > 0:
            raise ValueError(f"tpot_s: found {scaling.tpot_s}, allowed: the SLO's time between tokens > 0")
        if traffic is None:
            raise ValueError("traffic: found none, allowed: the run's arrivals and finished requests")
        self.seen = 0  # how many finished requests earlier intervals read
        self.memo: dict = {}  # the iteration times priced on the profiled replica
        # The requests arriving in an interval, their mean prompt and output lengths: each series' own predictor.
        self.predictors = [LOAD_PREDICTORS[scaling.predictor]() for _ in range(3)]

    def wanted(self, scaler: Autoscaler) -> int:
        needed = self.needed(scaler)
        return scaler.count("ready", "starting") if needed is None else needed

    def needed(self, scaler: Autoscaler) -> int | None:
        """The replicas the load predicted for the next interval needs, within the pool's least and most; None where
        the interval to now tells nothing (no request finished in it)."""
        requests, finished = self.observe(scaler.env.now)
        self.predictors[0].observe(requests)
        if finished is None:
            return None
        isl, osl, ttft_s, itl_s, duration_s = finished
        self.predictors[1].observe(isl)
        self.predictors[2].observe(osl)
        # The next interval's load (a negative forecast reads as none).
        next_requests, next_isl, next_osl = (max(predictor.predict(), 0.0) for predictor in self.predictors)
        # Every replica alike, its engines (data-parallel ranks, pipeline stages' virtual engines) each as its first.
        engine, engines = scaler.replicas[0][0], len(scaler.replicas[0])
        # The TTFT correction: the observed TTFT over a prompt of the observed ISL alone (capped at 1 below).
        prefill_correction = ttft_s / prompt_alone_s(engine, isl, self.memo)
        # The ITL correction: the observed ITL over the profiled ITL of the decode batch a serving replica held
        # (Little's law, within the batches profiled); none where no gap was observed (Dynamo reads a correction of 0
        # as none).
        context = round(isl + osl / 2)
        per_s = requests / self.interval_s
        batch = min(max(round(per_s * duration_s / max(scaler.count("ready"), 1) / engines), 1),
                    self.largest_batch(engine, context))
        decode_correction = itl_s / self.decode_s(engine, batch, context) if itl_s > 0 else 1.0
        # The prefill share: the prompt tokens predicted a second over what a replica prefills a second, a prompt of
        # the predicted ISL alone.
        next_per_s = next_requests / self.interval_s
        prefill_tokens_per_s = next_isl / prompt_alone_s(engine, next_isl, self.memo) * engines if next_isl else 1.0
        prefill_share = next_per_s * next_isl * min(1.0, prefill_correction) / prefill_tokens_per_s
        # The decode share: the output tokens predicted a second over a replica's best within the corrected ITL.
        next_context = round(next_isl + next_osl / 2)
        best = self.decode_tokens_per_s(engine, self.scaling.tpot_s / decode_correction, next_context) * engines
        decode_share = next_per_s * next_osl / best
        share = {"prefill": prefill_share, "decode": decode_share}.get(self.role, prefill_share + decode_share)
        return min(max(math.ceil(share), scaler.minimum), self.scaling.max_replicas)

    def observe(self, now_s: float) -> tuple[int, tuple[float, float, float, float, float] | None]:
        """Over the interval to `now_s`: the requests that arrived, and of those that finished the mean ISL, OSL,
        TTFT, ITL (every gap between tokens alike) and duration (None where none finished with two tokens or
        more)."""
        arrivals = self.traffic.arrival_s
        requests = bisect.bisect_right(arrivals, now_s) - bisect.bisect_right(arrivals, now_s - self.interval_s)
        done = self.traffic.finished[self.seen:]
        self.seen += len(done)
        gaps = sum(seq.generated - 1 for seq in done)
        if not gaps:
            return requests, None
        count = len(done)
        return requests, (sum(seq.prompt for seq in done) / count, sum(seq.generated for seq in done) / count,
                          sum(seq.first_token_s - seq.arrival_s for seq in done) / count,
                          sum(seq.finish_s - seq.first_token_s for seq in done) / gaps,
                          sum(seq.finish_s - seq.arrival_s for seq in done) / count)

    def decode_s(self, engine: Replica, batch: int, context: int) -> float:
        """An iteration decoding `batch` requests at `context` tokens each."""
        return iteration_s(engine, [], [context] * batch, 0, self.memo)

    def largest_batch(self, engine: Replica, context: int) -> int:
        """The most requests of `context` tokens the replica decodes at once: max_seqs, or as many as its KV blocks
        hold."""
        kv = engine.state.kv
        fit = kv.capacity_blocks // max(-(-context // kv.block_tokens), 1)
        return max(min(engine.scheduler.limits.max_seqs, fit), 1)

    def decode_tokens_per_s(self, engine: Replica, itl_s: float, context: int) -> float:
        """The most tokens a second the replica decodes at `context` tokens a request with an iteration of at most
        `itl_s`: its largest such batch up to max_seqs and its KV blocks' tokens (a batch of one where none is that
        quick)."""
        low, high = 1, self.largest_batch(engine, context)  # the largest within itl_s, by bisection (an iteration
        # is no quicker with more)
        while low < high:
            middle = (low + high + 1) // 2
            if self.decode_s(engine, middle, context) <= itl_s:
                low = middle
            else:
                high = middle - 1
        return low / self.decode_s(engine, low, context)
