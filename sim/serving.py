"""Discrete-event simulation (SimPy) of a serving replica: requests arrive, a scheduler forms iterations.

Arrivals are one process; the replica is another that, while requests are waiting or running, asks the
scheduler for the next iteration's batch, prices it (IterationCostModel, memoized by shape), holds for its
time and then applies it: chunks advance prefills, a finished prefill samples the first token, decodes add
one token each, finished requests free their KV blocks. An idle replica sleeps until the next arrival.
Iterations, not kernels, are the events, so a trace of many thousands of requests runs in seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import simpy

from sim.costs import KERNEL_CLASS_NAMES, IterationCost, IterationCostModel
from sim.kv_cache import PagedKVCache
from sim.schedulers import EngineState, Scheduler, Sequence
from sim.serving_metrics import SLO, SUMMARY_METRICS, IterationLog, RequestRecords, summarize
from workloads.requests import RequestSet

# What a serving run reports beyond the static-batch metrics (sim/result.py RESULT_METRICS), in this order.
SERVING_METRICS = (*SUMMARY_METRICS, "tbt_p50_s", "tbt_p99_s", "mean_batch_size", "kv_utilization_mean",
                   "kv_utilization_max", "swap_s", "clipped_requests", "capacity_rps")


@dataclass(frozen=True, kw_only=True)
class ServingMemory:
    """How a replica's memory is split: weights, the activation reserve of the largest iteration, KV blocks."""

    weights_B: float
    activations_B: float
    kv_block_B: float
    kv_blocks: int
    block_tokens: int
    capacity_B: float

    @property
    def kv_cache_B(self) -> float:
        return self.kv_blocks * self.kv_block_B

    @property
    def total_B(self) -> float:
        return self.weights_B + self.activations_B + self.kv_cache_B


def serving_infeasible_reason(memory: ServingMemory, requests: RequestSet, scheduler: Scheduler,
                              prefix_tokens: int = 0, window: int | None = None) -> str:
    """Empty when the replica can serve every request, else why not."""
    if memory.kv_blocks < 1:
        return (f"needs {(memory.weights_B + memory.activations_B) / 1e9:.1f} GB for weights "
                f"({memory.weights_B / 1e9:.1f}) and the activations of a {scheduler.token_budget()}-token "
                f"iteration ({memory.activations_B / 1e9:.1f}) plus KV blocks, but the device has "
                f"{memory.capacity_B / 1e9:.1f} GB")
    longest = int((requests.prompt_tokens + requests.output_tokens - 1).max())
    cached = min(longest, window) if window else longest  # a sliding window keeps its last tokens only
    own_tokens = cached - (prefix_tokens // memory.block_tokens) * memory.block_tokens
    needed = math.ceil(max(own_tokens, 1) / memory.block_tokens) + prefix_tokens // memory.block_tokens
    usable = memory.kv_blocks - math.ceil(scheduler.limits.watermark * memory.kv_blocks)
    if needed > usable:
        return (f"the longest request needs {needed} KV blocks of {memory.block_tokens} tokens "
                f"({longest} tokens) but {usable} fit in the {memory.kv_cache_B / 1e9:.1f} GB left after weights "
                f"and activations (less the admission watermark)")
    if not scheduler.chunked:
        # A scheduler that prefills whole must take the longest prompt in one iteration; preempted by recompute,
        # a sequence prefills its prompt and generated tokens again (vLLM refuses max_num_batched_tokens below
        # the context length without chunked prefill).
        recompute = not scheduler.reserves_whole_request and scheduler.limits.preemption == "recompute"
        whole = longest if recompute else int(requests.prompt_tokens.max())
        if whole > scheduler.limits.max_batched_tokens:
            what = "request (prompt and outputs, recomputed after a preemption)" if recompute else "prompt"
            return (f"a {whole}-token {what} exceeds max_batched_tokens ({scheduler.limits.max_batched_tokens}) "
                    f"of the {scheduler.name} scheduler, which prefills whole")
    return ""


def serving_memory(*, capacity_B: float, weights_B: float, activations_B: float, kv_bytes_per_token: float,
                   block_tokens: int) -> ServingMemory:
    """Every byte left after the weights and the activation reserve holds KV blocks (vLLM's profiling rule)."""
    block_B = kv_bytes_per_token * block_tokens
    blocks = max(0, math.floor((capacity_B - weights_B - activations_B) / block_B))
    return ServingMemory(weights_B=weights_B, activations_B=activations_B, kv_block_B=block_B, kv_blocks=blocks,
                         block_tokens=block_tokens, capacity_B=capacity_B)


@dataclass(frozen=True, kw_only=True)
class ServingResult:
    """Per-request records, the iteration log, energy and busy time of a serving run on one replica."""

    records: RequestRecords
    iterations: IterationLog
    makespan_s: float
    energy_parts_J: dict[str, float]  # compute_J, memory_J, static_J
    time_by_class_s: dict[str, float]
    memory: ServingMemory
    shapes_priced: int
    peak_kv_blocks: int
    token_gaps_s: np.ndarray  # every time between two consecutive output tokens of a request
    swap_s: float = 0.0  # time spent moving preempted KV to host memory and back
    slo: SLO | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def energy_J(self) -> float:
        return sum(self.energy_parts_J.values())

    def metrics(self) -> dict[str, float]:
        """Summary metrics (sim/serving_metrics.py) plus the static-batch metric names, SI units in the names.

        ttft_s, tpot_s and e2e_s are means over requests, tokens_per_s is output tokens over the makespan,
        as for a static batch; peak_memory_B counts the KV blocks actually held at the peak.
        """
        summary = summarize(self.records, makespan_s=self.makespan_s, slo=self.slo)
        tokens = float(self.records.output_tokens.sum())
        peak_B = self.memory.weights_B + self.memory.activations_B + self.peak_kv_blocks * self.memory.kv_block_B
        return {
            "ttft_s": summary["ttft_mean_s"], "tpot_s": summary["tpot_mean_s"], "e2e_s": summary["e2e_mean_s"],
            "tokens_per_s": tokens / self.makespan_s, "energy_per_token_J": self.energy_J / tokens,
            "avg_power_W": self.energy_J / self.makespan_s, "peak_memory_B": peak_B,
            **summary,
            # Time between tokens over every token of every request (Sarathi-Serve's TBT): a decode stalled by
            # another request's prefill shows here, where a request's mean TPOT hides it.
            "tbt_p50_s": _percentile(self.token_gaps_s, 50), "tbt_p99_s": _percentile(self.token_gaps_s, 99),
            "mean_batch_size": self.iterations.mean_batch_size(),
            "kv_utilization_mean": float(np.mean(self.iterations.kv_utilization())) if len(self.iterations)
            else math.nan,
            "kv_utilization_max": self.peak_kv_blocks / self.memory.kv_blocks,
            "swap_s": self.swap_s,
            "clipped_requests": self.extra.get("clipped_requests", 0.0),
            "capacity_rps": math.nan,
        }


class _Replica:
    """The replica process and what it records."""

    def __init__(self, env: simpy.Environment, costs: IterationCostModel, scheduler: Scheduler,
                 state: EngineState, total: int, window: int | None, swap_s_per_token: float):
        self.env, self.costs, self.scheduler, self.state = env, costs, scheduler, state
        self.total, self.window, self.swap_s_per_token = total, window, swap_s_per_token
        self.swap_s = 0.0
        self.finished: list[Sequence] = []
        self.wake: simpy.Event = env.event()
        self.log: list[tuple[float, float, int, int, int]] = []
        self.cost_counts: dict[int, list] = {}
        self.token_gaps: list[float] = []  # time between consecutive output tokens of a request
        self.peak_blocks = state.kv.used_blocks

    def arrived(self) -> None:
        if not self.wake.triggered:
            self.wake.succeed()

    def run(self):
        state = self.state
        while len(self.finished) < self.total:
            state.now_s = self.env.now
            batch = self.scheduler.next_batch(state)
            if not batch:
                if not state.waiting and not state.running and not state.swapped:
                    self.wake = self.env.event()
                    yield self.wake
                    continue
                seq = (state.waiting or state.swapped)[0]
                raise RuntimeError(f"request {seq.index} ({seq.prompt} prompt + {seq.output} output tokens) can "
                                   f"never be scheduled: {state.kv.capacity_blocks} KV blocks of "
                                   f"{state.kv.block_tokens} tokens, limits {self.scheduler.limits}")
            self.peak_blocks = max(self.peak_blocks, state.kv.used_blocks)
            cost = self.costs.price(batch.shape(self.window))
            entry = self.cost_counts.setdefault(id(cost), [cost, 0])
            entry[1] += 1
            start = self.env.now
            # Swapped KV crosses the host link before the iteration computes (vLLM blocks on its cache ops).
            time_s = cost.time_s + batch.swapped_tokens * self.swap_s_per_token
            self.swap_s += time_s - cost.time_s
            yield self.env.timeout(time_s)
            self.log.append((start, time_s, batch.size, batch.tokens, state.kv.used_blocks))
            self._apply(batch, self.env.now)

    def _apply(self, batch, now_s: float) -> None:
        for seq, chunk in batch.prefills:
            seq.computed += chunk
            if seq.computed >= seq.target:
                self._sample(seq, now_s)
        for seq in batch.decodes:
            seq.computed += 1
            seq.target += 1
            self._sample(seq, now_s)

    def _sample(self, seq: Sequence, now_s: float) -> None:
        seq.generated += 1
        if math.isnan(seq.first_token_s):
            seq.first_token_s = now_s
        else:
            self.token_gaps.append(now_s - seq.last_token_s)
        seq.last_token_s = now_s
        if seq.generated >= seq.output:
            seq.finish_s = now_s
            self.state.kv.release(seq.index)
            self.state.running.remove(seq)
            self.finished.append(seq)


def serve(costs: IterationCostModel, requests: RequestSet, scheduler: Scheduler, kv: PagedKVCache,
          memory: ServingMemory, idle_power_W: float, *, window: int | None = None, slo: SLO | None = None,
          swap_bandwidth_Bps: float | None = None) -> ServingResult:
    """Simulate one replica serving `requests` under `scheduler` until the last request finishes.

    With swap preemption, KV moves over a host link of `swap_bandwidth_Bps` (its energy is not counted).
    """
    if scheduler.limits.preemption == "swap" and not swap_bandwidth_Bps:
        raise ValueError("swap preemption needs the host link's bandwidth (swap_bandwidth_Bps)")
    env = simpy.Environment()
    state = EngineState(kv=kv)
    total = len(requests)
    per_token_B = memory.kv_block_B / memory.block_tokens
    replica = _Replica(env, costs, scheduler, state, total, window,
                       per_token_B / swap_bandwidth_Bps if swap_bandwidth_Bps else 0.0)
    arrivals = requests.arrival_s.tolist()
    prompts, outputs = requests.prompt_tokens.tolist(), requests.output_tokens.tolist()

    def arrive():
        for index, arrival_s in enumerate(arrivals):
            if arrival_s > env.now:
                yield env.timeout(arrival_s - env.now)
            seq = Sequence(index=index, arrival_s=arrival_s, prompt=prompts[index], output=outputs[index])
            seq.computed = kv.cached_prefix(seq.target)
            state.waiting.append(seq)
            replica.arrived()

    env.process(arrive())
    env.run(env.process(replica.run()))
    return _result(replica, requests, costs, memory, idle_power_W, slo)


def _result(replica: _Replica, requests: RequestSet, costs: IterationCostModel, memory: ServingMemory,
            idle_power_W: float, slo: SLO | None) -> ServingResult:
    seqs = sorted(replica.finished, key=lambda s: s.index)

    def column(name: str, dtype=float) -> np.ndarray:
        return np.array([getattr(s, name) for s in seqs], dtype=dtype)

    records = RequestRecords(arrival_s=column("arrival_s"), scheduled_s=column("scheduled_s"),
                             first_token_s=column("first_token_s"), finish_s=column("finish_s"),
                             prompt_tokens=column("prompt", int), output_tokens=column("output", int),
                             preemptions=column("preemptions", int))
    log = np.array(replica.log, dtype=float).reshape(-1, 5).T
    iterations = IterationLog(start_s=log[0], duration_s=log[1], batch_size=log[2], tokens=log[3],
                              kv_blocks_used=log[4], kv_blocks_total=max(memory.kv_blocks, 1))
    # Static power is drawn from the first arrival to the last finish, idle gaps included.
    makespan_s = float(records.finish_s.max() - requests.arrival_s[0])
    priced: list[tuple[IterationCost, int]] = list(replica.cost_counts.values())
    class_time = sum((cost.class_time_s * n for cost, n in priced), np.zeros(len(KERNEL_CLASS_NAMES)))
    energy = {"compute_J": sum(cost.compute_J * n for cost, n in priced),
              "memory_J": sum(cost.memory_J * n for cost, n in priced),
              "static_J": idle_power_W * makespan_s}
    return ServingResult(records=records, iterations=iterations, makespan_s=makespan_s, energy_parts_J=energy,
                         time_by_class_s=dict(zip(KERNEL_CLASS_NAMES, class_time.tolist(), strict=True)),
                         memory=memory, shapes_priced=costs.shapes_priced, peak_kv_blocks=replica.peak_blocks,
                         token_gaps_s=np.array(replica.token_gaps), slo=slo, swap_s=replica.swap_s)


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan
