"""NVIDIA Dynamo's SLA planner (throughput-based scaling): replicas computed from the load the gateway saw and each
replica's requests a second at the SLO, instead of a server metric's ratio to a target (the HPA). It follows Dynamo
1.x's core/throughput_scaling.py and its perf models (core/perf_model/prefill.py, decode.py, agg.py).

Every adjustment interval (Dynamo's default 180 s) it reads the requests that arrived over the interval and the mean
prompt length (ISL) and output length (OSL) of those that finished, forecasts the next interval's three
(Autoscaling.predictor: Dynamo's constant or Kalman predictor, load_predictors.py), and wants ceil(requests a second /
a replica's requests a second):
- prefill: a replica's 1 / (a prompt of ISL tokens alone, in chunks of its token budget), at least the replicas
  ceil(that prompt's time / the SLO's TTFT) where one prompt alone misses it (Dynamo's latency floor);
- decode: a replica's largest batch whose iteration at ISL + OSL / 2 tokens a request is within the SLO's TPOT (up to
  max_seqs and its KV blocks), over OSL such iterations (Little's law); where its scheduler decodes fewer at once than
  the batch (a chunked scheduler's token budget), the time between a request's tokens is batch / decoded iterations of
  those it decodes, and the rate stops growing with the batch past them;
- a pool serving requests whole (aggregated): the same over the largest batch whose iteration, beside the prompt
  tokens its requests bring (batch x ISL / OSL a step, up to what its scheduler lets an iteration's prompts take:
  prompt_room, the token budget or prompt_batch_tokens), is within the TPOT limit and whose next request's TTFT (those
  tokens and its own, in iterations of that many beside the batch) within the TTFT limit; the batch at most where the
  prompt budget the batch leaves admits prompts as fast as the batch finishes them (ISL / prompt_room <= OSL);
each within [replicas, max_replicas] (Dynamo's min_endpoint: the replicas the pool starts with), held at once: no
stabilization window, no step limit (Dynamo sets the deployment's replica counts). As in Dynamo, whose means over an
interval in which nothing finished are undefined: an interval in which requests arrived but none finished is skipped
(nothing observed, nothing changed); one in which nothing arrived either reads its lengths as 0, so the constant
predictor forecasts no lengths and the pool holds (a Kalman forecast, pulled down, may still price some); before any
request has finished it knows no lengths and changes nothing. Prefix hits discount the prompt tokens a prefill
replica, or an aggregated one beside its batch, computes: the share of the finished requests' prompt tokens found
cached at their admission, the latest observed reused until another (Dynamo's KV hit rate with its last-value
semantics; none before the first). Not modeled: Dynamo 0.x's correction factors (planner_core.py: the observed TTFT
and ITL over the profiled ones).

The profile is the replica's own cost model (sim/latency_prediction.py's iteration pricing), where Dynamo fits
regressions of each engine's forward passes (or interpolates a pre-deployment profiling sweep). So it differs from
Dynamo's perf models where a regression cannot see, or the engine holds, what the cost model does:
- a prompt's later chunks are priced after their earlier context (Dynamo's regression on a pass's prefill tokens
  prices every chunk alike); ISL + OSL / 2 and a step's prompt tokens are rounded to whole tokens;
- the KV cap is the requests of ISL + OSL / 2 tokens its KV blocks hold, each request in whole blocks (Dynamo's
  max_kv_tokens / (ISL + OSL / 2));
- the TTFT of a request joining a batch prices its own ISL tokens (Dynamo's is its regression's moving average of a
  pass's prefill tokens a prefilling request: a chunk, where prompts are chunked);
- a replica of several engines (data-parallel ranks, pipeline stages' virtual engines) serves its engines' rates
  together (Dynamo divides by one engine's rate and counts workers); the latency floor counts replicas;
- the SLO's TTFT limit may be left out (Dynamo's always set): then no latency floor and no TTFT bound on the batch.
"""

from __future__ import annotations

import bisect
import math

from sim.autoscalers.base import Autoscaler, Autoscaling, Policy, Traffic
from sim.autoscalers.load_predictors import LOAD_PREDICTORS
from sim.latency_prediction import decoded_batch, iteration_s, prompt_alone_s, prompts_s
from sim.replica import Replica
from sim.schedulers import Scheduler

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
        self.ttft_s = scaling.ttft_s if scaling.ttft_s is not None else math.inf  # no TTFT limit: none bounds it
        self.hit_rate = 0.0  # the share of prompt tokens found cached (none known yet: no discount, as Dynamo starts)

    def wanted(self, scaler: Autoscaler) -> int:
        needed = self.needed(scaler)
        return scaler.count("ready", "starting") if needed is None else needed

    def needed(self, scaler: Autoscaler) -> int | None:
        """The replicas the load forecast for the next interval needs, within the pool's least and most; None before
        any request has finished (no lengths to price)."""
        requests, lengths = self.observe(scaler.env.now)
        if lengths is None and requests:
            return None  # the interval's mean lengths undefined: Dynamo skips it (observes nothing, changes nothing)
        # An idle interval's undefined means read as 0, as Dynamo reads them (each series skips an idle start's).
        for predictor, value in zip(self.predictors, (requests, *(lengths[:2] if lengths else (0.0, 0.0))),
                                    strict=True):
            predictor.observe(value)
        if lengths is not None:
            self.hit_rate = lengths[2]  # the latest observed, reused until another (Dynamo's last-value semantics)
        # The next interval's load (a negative forecast reads as none); no lengths (none yet, or a forecast of none
        # after an idle interval): Dynamo's perf models price nothing, and it holds.
        next_requests, isl, osl = (max(predictor.predict(), 0.0) for predictor in self.predictors)
        if not isl or not osl:
            return None
        # Every replica alike, its engines (data-parallel ranks, pipeline stages' virtual engines) each as its first.
        engine, engines = scaler.replicas[0][0], len(scaler.replicas[0])
        demand_per_s = next_requests / self.interval_s
        if self.role == "prefill":
            # Prefix hits shrink the prompt's compute, not its KV: the prefill rate reads the tokens computed only.
            alone_s = prompt_alone_s(engine, isl * (1.0 - self.hit_rate), self.memo)
            floor = math.ceil(alone_s / self.ttft_s) if alone_s > self.ttft_s else 1
            wanted = max(math.ceil(demand_per_s * alone_s / engines), floor)
        else:
            per_s = (self.decode_requests_per_s if self.role == "decode" else self.whole_requests_per_s)(engine, isl,
                                                                                                       osl)
            wanted = math.ceil(demand_per_s / (per_s * engines))
        return min(max(wanted, scaler.minimum), self.scaling.max_replicas)

    def observe(self, now_s: float) -> tuple[int, tuple[float, float, float] | None]:
        """Over the interval to `now_s`: the requests that arrived, and of those that finished the mean ISL and OSL and
        the share of their prompt tokens found cached (their KV hit rate); None where none finished."""
        arrivals = self.traffic.arrival_s
        requests = bisect.bisect_right(arrivals, now_s) - bisect.bisect_right(arrivals, now_s - self.interval_s)
        done = self.traffic.finished[self.seen:]
        self.seen += len(done)
        if not done:
            return requests, None
        prompt_tokens = sum(seq.prompt for seq in done)
        return requests, (prompt_tokens / len(done), sum(seq.generated for seq in done) / len(done),
                          sum(seq.cached for seq in done) / prompt_tokens if prompt_tokens else 0.0)

    def decode_requests_per_s(self, engine: Replica, isl: float, osl: float) -> float:
        """A decode replica's requests a second: its largest batch within the TPOT limit at ISL + OSL / 2 tokens a
        request, over OSL of its iterations (a batch of one where none is that quick)."""
        context = round(isl + osl / 2)
        low, high = 1, self.largest_batch(engine, context)  # the largest within the limit, by bisection (an
        # iteration is no quicker with more)
        while low < high:
            middle = (low + high + 1) // 2
            if self.decode_s(engine, middle, context) <= self.scaling.tpot_s:
                low = middle
            else:
                high = middle - 1
        return low / (osl * self.decode_s(engine, low, context))

    def whole_requests_per_s(self, engine: Replica, isl: float, osl: float) -> float:
        """A replica serving whole requests: its requests a second at the largest batch whose iterations, beside the
        prompt tokens its requests bring, keep both limits (Dynamo's AggRegressionModel.find_best_engine_agg_rps)."""
        budget = engine.scheduler.token_budget()
        context = round(isl + osl / 2)
        # Past where the prompt budget left admits prompts as fast as the batch finishes them, TTFT grows without bound.
        most = min(self.largest_batch(engine, context), budget - 1)
        while most > 1 and isl / prompt_room(engine.scheduler, isl, most) > osl:
            most -= 1
        best = 0.0
        computed = isl * (1.0 - self.hit_rate)  # a prompt's tokens computed, past its prefix hit
        # The prompt tokens a step takes (the ones the batch's requests bring, and a joining request's ahead of its
        # own): within what the scheduler lets an iteration's prompts take, none of its budget taken by the batch's
        # decodes (the step prices them beside the prompt tokens, as Dynamo's agg model does).
        room = prompt_room(engine.scheduler, computed, 0)
        for batch in range(1, max(most, 1) + 1):
            prefill = max(round(min(batch * computed / osl, room)), 1)
            step_s = iteration_s(engine, [(prefill, 0)], [context] * batch, 0, self.memo)
            ttft_s = prompts_s(engine, round(prefill + isl), 1, 0, room, [context] * batch, self.memo)
            if batch > 1 and (step_s > self.scaling.tpot_s or ttft_s > self.ttft_s):
                break
            best = batch / (osl * step_s)
            if step_s > self.scaling.tpot_s or ttft_s > self.ttft_s:
                break  # a batch of one already misses: its rate, the best there is
        return best

    def decode_s(self, engine: Replica, batch: int, context: int) -> float:
        """The time between a request's tokens where the replica holds `batch` requests decoding at `context` tokens
        each: an iteration of them all, or the iterations a held request waits of those its scheduler decodes at once
        (sim/latency_prediction.py decoded_batch; n-gram drafts' decodes counting their expected matches:
        drafted_share)."""
        decoded, rounds = decoded_batch(engine, [context] * batch)
        return rounds * iteration_s(engine, [], decoded, 0, self.memo)

    def largest_batch(self, engine: Replica, context: int) -> int:
        """The most requests of `context` tokens the replica holds decoding at once: max_seqs, or as many as its KV
        blocks hold."""
        kv = engine.state.kv
        fit = kv.capacity_blocks // max(-(-context // kv.block_tokens), 1)
        return max(min(engine.scheduler.limits.max_seqs, fit), 1)


def prompt_room(scheduler: Scheduler, prompt: float, decodes: int) -> int:
    """The prompt tokens of `prompt`-token prompts an iteration of `scheduler` takes beside `decodes` decodes of a token
    each: its prompt budget (Scheduler.prompt_budget: what the decodes leave, at most prompt_batch_tokens where prompts
    run whole), or one longer prompt, alone, within Scheduler.prompt_alone (at least a token)."""
    return max(scheduler.prompt_budget(decodes), min(math.ceil(prompt), scheduler.prompt_alone(decodes)), 1)
