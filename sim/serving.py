"""Discrete-event simulation (SimPy) of serving: requests arrive at pools of replicas (sim/replica.py).

Arrivals are one process; each replica another, running the iterations its scheduler forms. One pool serves
requests whole (data-parallel replicas, each request routed to one by the pool's router, sim/routers.py), or a
prefill pool hands each prefilled request's KV to a decode pool (disaggregated serving, as Splitwise studies).
Iterations, not kernels, are the events, so a trace of many thousands of requests runs in seconds.

The decode replica of a prefilled request is picked once its prefill is done, before its KV crosses, and counts it
among its requests while the KV crosses, as the engines modeled hand requests over:
- vLLM's proxies send the request to a prefill instance with max_tokens 1, and only once it has answered pick the
  decode instance (round robin) and send it the request with the prefill's kv_transfer_params
  (tests/v1/kv_connector/nixl_integration/toy_proxy_server.py _handle_completions, vllm-project/vllm at 030ea52e;
  examples/online_serving/disaggregated_serving/disagg_proxy_demo.py create_completion, at 03a7284d);
- with the NIXL connector the decode engine then pulls the KV: its scheduler allocates the request's blocks, starts
  the read and keeps it in its waiting queue as WAITING_FOR_REMOTE_KVS until the read is done
  (vllm/v1/core/sched/scheduler.py schedule(), at 00024d31), so its engine holds the request while its KV crosses;
- Dynamo's PrefillRouter picks a prefill worker, waits for its disaggregated_params, then picks the decode worker,
  which pulls the KV over NIXL (docs/design_docs/disagg_serving.md, ai-dynamo/dynamo at 66e265b8).
llm-d picks both pods at arrival instead (serve_pools' decode_pick 'arrival'): its scheduler routes the request to a
decode pod, whose routing sidecar runs the prefill on the prefill pod the scheduler named (x-prefiller-host-port) and
then hands the request to its own vLLM (internal/proxy/connector_nixlv2.go, llm-d/llm-d-routing-sidecar at 5a1b9088).
The decode pick reads what the decode replicas report at the arrival, and a replica counts a request picked for it
only once its prefill is done: llm-d's P/D guide scores decode pods by the queue-scorer alone
(guides/pd-disaggregation/gaie-pd/values.yaml, llm-d/llm-d at 126f65d6), the scheduler's sample configuration by it
and the prefix-cache-scorer (deploy/config/pd-epp-config.yaml, llm-d/llm-d-inference-scheduler at 0bb9fa83); the
queue-scorer reads each pod's own waiting queue from its metrics (pkg/epp/scheduling/framework/plugins/scorer/
queue.go, kubernetes-sigs/gateway-api-inference-extension at 02308be3), which the decode vLLM joins once the sidecar
sends it the request. The active-request-scorer, which counts a pod's requests from the pick (pkg/plugins/scorer/
active_request.go, llm-d-inference-scheduler at 139bcce2), is in neither configuration and is not modeled.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable
from collections.abc import Sequence as Sequence_
from dataclasses import dataclass, field, replace

import numpy as np
import simpy

from kernels.kv_policy import Window, kept_tokens
from sim.admission import Admission
from sim.autoscalers import Autoscaler, Autoscaling, Traffic, held_timeline, make_autoscaler
from sim.costs import TIME_CLASS_NAMES, IterationCost, IterationCostModel
from sim.hybrid_kv import KVGroups
from sim.kv_cache import PagedKVCache, shared_prefix_tokens
from sim.kv_store import KVStore
from sim.replica import ROLES, CopyQueue, Replica, run_lockstep
from sim.routers import DECODE_PICKS, DEFAULT_ROUTER, Routed, make_router
from sim.schedulers import EngineState, Scheduler, SchedulerLimits, Sequence, make_scheduler
from sim.serving_metrics import (
    SLO,
    SUMMARY_METRICS,
    IterationLog,
    RequestRecords,
    decode_span_s,
    peak_window_power_W,
    per_decode_second,
    pool_figures,
    summarize,
    urgent_metrics,
)
from sim.slowdown import Unloaded, unloaded_latencies
from sim.speculative import ServingSpeculation
from workloads.requests import RequestSet

# What a serving run reports beyond the static-batch metrics (sim/result.py RESULT_METRICS), in this order.
SERVING_METRICS = (*SUMMARY_METRICS, "tbt_p50_s", "tbt_p99_s", "mean_batch_size", "kv_utilization_mean",
                   "kv_utilization_max", "swap_s", "prefix_hit_rate", "clipped_requests", "capacity_rps")
PREFIX_GROUP_STREAM = 7  # the seed stream of requests' prefix groups, apart from arrivals' and lengths'
# What an autoscaled run adds (ServingResult.scaling_metrics).
AUTOSCALE_METRICS = ("mean_replicas", "max_replicas_held")
# What a run whose gateway may reject requests on arrival adds (ServingResult.metrics).
REJECTION_METRICS = ("rejected_share", "retried_share")
Transfer = Callable[[float], float]  # the time a message of so many bytes takes to cross a link
RETRY_STREAM = 11  # the seed stream of clients' retry jitter, apart from the prefix groups' and the routers'
ROUTER_STREAM = 1 << 30  # the last part of a pool router's seed, past any replica's number that ends its replicas'


@dataclass(frozen=True)
class Rejected:
    """The requests a run rejected on arrival (sim/admission.py): how many, how many of them urgent, and which of the
    requests served are urgent (in the records' order), as the run's requests made them: the served ones alone may
    all share one priority where a whole class was rejected."""

    requests: int
    urgent: int = 0
    urgent_served: tuple[bool, ...] | None = None  # None: the records' own lowest priority (urgent_requests)
    retried: int = 0  # requests rejected at least once, served after a retry or rejected for good


@dataclass(frozen=True, kw_only=True)
class ServingMemory:
    """How a replica's memory is split: weights, the activation reserve of the largest iteration, KV blocks, all
    within `utilization` of its devices' `capacity_B` (vLLM's gpu_memory_utilization)."""

    weights_B: float
    activations_B: float
    kv_block_B: float
    kv_blocks: int
    block_tokens: int
    capacity_B: float  # its devices' memory, every byte
    utilization: float = 1.0  # the share of capacity_B the engine may use
    devices: int = 1  # the devices capacity_B sums (a replica's tp x pp)
    # Attention devices holding the KV blocks apart from the model's devices (sim/attention_pool.py), each its heads'
    # share of every block, and their memory, every byte (0: the KV blocks share capacity_B with the weights).
    kv_devices: int = 0
    kv_capacity_B: float = 0.0
    # A hybrid pool's (sim/attention_pool.py): of kv_blocks, those left in the model's devices' memory after the
    # weights and activations, the rest in the attention devices' (None: the KV blocks lie on one kind of device).
    device_kv_blocks: int | None = None

    @property
    def usable_B(self) -> float:
        return self.capacity_B * self.utilization

    def usable_text(self) -> str:
        """The memory the engine may use, in words: 'the device has 80.0 GB', or '0.9 of the device's 80.0 GB is
        72.0 GB' below a utilization of 1 ('the 2 devices have 160.0 GB (80.0 each)' on several)."""
        held = f"{self.capacity_B / 1e9:.1f} GB" + (
            f" ({self.capacity_B / self.devices / 1e9:.1f} each)" if self.devices > 1 else "")
        if self.utilization == 1.0:
            return f"the {self.devices} devices have {held}" if self.devices > 1 else f"the device has {held}"
        whose = f"the {self.devices} devices'" if self.devices > 1 else "the device's"
        return f"{self.utilization:g} of {whose} {held} is {self.usable_B / 1e9:.1f} GB"

    @property
    def kv_cache_B(self) -> float:
        return self.kv_blocks * self.kv_block_B

    @property
    def total_B(self) -> float:
        return self.weights_B + self.activations_B + self.kv_cache_B


def serving_infeasible_reason(memory: ServingMemory, requests: RequestSet, scheduler: Scheduler,
                              prefix_tokens: int = 0, window: Window = None) -> str:
    """Empty when the replica can serve every request, else why not: its memory (serving_memory_reason), or its
    scheduler's token budget (serving_budget_reason)."""
    return (serving_memory_reason(memory, requests, scheduler, prefix_tokens, window)
            or serving_budget_reason(requests, scheduler, shared_prefix_tokens(prefix_tokens, memory.block_tokens)))


def serving_budget_reason(requests: RequestSet, scheduler: Scheduler, cached_tokens: int = 0) -> str:
    """Empty where the scheduler can take every request's prefill, else why not: one that prefills whole with a token
    budget below the longest prompt, less the `cached_tokens` every prompt finds in the cache (a shared prefix's
    whole blocks), which it does not compute."""
    if scheduler.chunked:
        return ""
    # A scheduler that prefills whole must take the longest prompt in one iteration; preempted by recompute, a
    # sequence prefills its prompt and generated tokens again (vLLM refuses max_num_batched_tokens below the context
    # length without chunked prefill; with prefix caching it counts the tokens a prefill computes).
    recompute = not scheduler.reserves_whole_request and scheduler.limits.preemption == "recompute"
    whole = int((requests.prompt_tokens + requests.output_tokens - 1).max() if recompute else
                requests.prompt_tokens.max()) - cached_tokens
    if whole > scheduler.limits.max_batched_tokens:
        what = "request (prompt and outputs, recomputed after a preemption)" if recompute else "prompt"
        what += " past its cached prefix" if cached_tokens else ""
        return (f"a {whole}-token {what} exceeds max_batched_tokens ({scheduler.limits.max_batched_tokens}) "
                f"of the {scheduler.name} scheduler, which prefills whole; allowed: max_batched_tokens of at least "
                f"{whole}, or the chunked scheduler")
    return ""


def serving_memory_reason(memory: ServingMemory, requests: RequestSet, scheduler: Scheduler,
                          prefix_tokens: int = 0, window: Window = None, engines: int = 1,
                          groups: KVGroups | None = None) -> str:
    """Empty when the replica's memory holds its weights, an iteration's activations and the longest request's KV
    blocks (in the share of one of its `engines`: Pool.engines; its blocks in every group of a hybrid KV cache,
    sim/hybrid_kv.py), else why not."""
    if memory.kv_devices and memory.weights_B + memory.activations_B > memory.usable_B:
        return (f"needs {(memory.weights_B + memory.activations_B) / 1e9:.1f} GB for weights "
                f"({memory.weights_B / 1e9:.1f}) and the activations of a {scheduler.token_budget()}-token "
                f"iteration ({memory.activations_B / 1e9:.1f}), but {memory.usable_text()}")
    if memory.kv_blocks < 1 and memory.kv_devices:
        each_B = memory.kv_capacity_B / memory.kv_devices * memory.utilization
        return (f"a KV block of {memory.block_tokens} tokens takes {memory.kv_block_B / 1e9:.3g} GB, "
                f"{memory.kv_block_B / memory.kv_devices / 1e9:.3g} on each of the {memory.kv_devices} attention "
                f"devices, but each may use {each_B / 1e9:.3g} GB")
    if memory.kv_blocks < 1:
        return (f"needs {(memory.weights_B + memory.activations_B) / 1e9:.1f} GB for weights "
                f"({memory.weights_B / 1e9:.1f}) and the activations of a {scheduler.token_budget()}-token "
                f"iteration ({memory.activations_B / 1e9:.1f}) plus KV blocks, but {memory.usable_text()}")
    longest = int((requests.prompt_tokens + requests.output_tokens - 1).max())
    shared = shared_prefix_tokens(prefix_tokens, memory.block_tokens)
    # The cached prefix, and the request's own tokens past it, of which a sliding window keeps the last only.
    own = math.ceil(kept_tokens(max(longest - shared, 1), window))
    needed = math.ceil(own / memory.block_tokens) + shared // memory.block_tokens
    if groups is not None:
        needed = groups.most_blocks(longest, memory.block_tokens, scheduler.token_budget())
    # Attention devices split every block by its heads: a sequence's cache spans them all, as it spans tp devices.
    blocks = memory.kv_blocks // engines
    usable = blocks - math.ceil(scheduler.limits.watermark * blocks)
    if needed > usable and memory.device_kv_blocks is not None:
        return (f"the longest request needs {needed} KV blocks of {memory.block_tokens} tokens ({longest} tokens) but "
                f"{usable} fit (less the admission watermark) in the {memory.kv_cache_B / 1e9:.1f} GB of KV blocks "
                f"of the model's devices ({memory.device_kv_blocks} blocks) and the attention devices together")
    if needed > usable and memory.kv_devices:
        return (f"the longest request needs {needed} KV blocks of {memory.block_tokens} tokens ({longest} tokens) but "
                f"{usable} fit (less the admission watermark) in the {memory.kv_devices} attention devices' "
                f"{memory.kv_cache_B / 1e9:.1f} GB of KV blocks ({memory.kv_cache_B / memory.kv_devices / 1e9:.1f} "
                f"each, every block split by its heads)")
    if needed > usable:
        share = f"each of {engines} engines' share of " if engines > 1 else ""
        of = "" if memory.utilization == 1.0 else (f" of the {memory.usable_B / 1e9:.1f} GB it may use, "
                                                   f"{memory.usable_text().partition(' is ')[0]}")
        return (f"the longest request needs {needed} KV blocks of {memory.block_tokens} tokens "
                f"({longest} tokens) but {usable} fit (less the admission watermark) in {share}the "
                f"{memory.kv_cache_B / 1e9:.1f} GB left after weights and activations{of}")
    return ""


def serving_memory(*, capacity_B: float, weights_B: float, activations_B: float, kv_bytes_per_token: float,
                   block_tokens: int, utilization: float = 1.0, devices: int = 1, kv_devices: int = 0,
                   kv_capacity_B: float = 0.0, hybrid: bool = False) -> ServingMemory:
    """Every byte of `utilization` x `capacity_B` left after the weights and the activation reserve holds KV blocks
    (vLLM's profiling rule: gpu_memory_utilization, 0.9 by default there, of each device's memory); `capacity_B`
    sums the memory of `devices`. With `kv_devices` attention devices the blocks fill `utilization` of their
    `kv_capacity_B` instead, each device holding its heads' share (1 / kv_devices) of every block; `hybrid`: both, the
    model's devices' blocks first (sim/attention_pool.py)."""
    block_B = kv_bytes_per_token * block_tokens
    own = max(0, math.floor((capacity_B * utilization - weights_B - activations_B) / block_B))
    blocks = math.floor(kv_capacity_B * utilization / block_B) if kv_devices else own  # each device its share
    return ServingMemory(weights_B=weights_B, activations_B=activations_B, kv_block_B=block_B,
                         kv_blocks=blocks + own if hybrid else blocks, block_tokens=block_tokens,
                         capacity_B=capacity_B, utilization=utilization, devices=devices, kv_devices=kv_devices,
                         kv_capacity_B=kv_capacity_B, device_kv_blocks=own if hybrid else None)


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
    peak_kv_blocks: int  # a replica's blocks in use at the most (every engine's of its stages), for its memory
    peak_kv_share: float  # the largest fraction of an engine's own KV blocks in use (its replica's, on one stage)
    token_gaps_s: np.ndarray  # every time between two consecutive output tokens of a request
    swap_s: float = 0.0  # time spent moving preempted KV to host memory and back
    # Of first admissions' shareable prefixes (a recompute's not counted), the tokens sought and those found cached.
    prefix_sought_tokens: int = 0
    prefix_found_tokens: int = 0
    # Per pool: its replicas' summed iteration time (an engine's on pipeline stages includes its waits for them).
    busy_s: dict[str, float] = field(default_factory=dict)
    slo: SLO | None = None
    extra: dict[str, float] = field(default_factory=dict)
    unloaded: Unloaded | None = None  # the requests each served alone, where the SLO limits slowdowns
    prioritized: bool = False  # whether the requests carry priorities: the metrics then add URGENT_METRICS
    # Where a pool autoscales, the replicas held (every pool's), (time, replicas) at each change from the first
    # arrival (None: fixed pools): the metrics then add AUTOSCALE_METRICS.
    scaled: tuple[tuple[float, int], ...] | None = None
    # Per pool: its replica-seconds held (every replica over the makespan, or an autoscaled pool's as it held them).
    held_replica_s: dict[str, float] = field(default_factory=dict)
    # Where the gateway rejects requests on arrival (None: it admits every one): the metrics then add
    # REJECTION_METRICS, and each rejected request misses the SLO.
    rejected: Rejected | None = None

    @property
    def energy_J(self) -> float:
        return sum(self.energy_parts_J.values())

    def metrics(self) -> dict[str, float]:
        """Summary metrics (sim/serving_metrics.py) plus the static-batch metric names, SI units in the names.

        ttft_s, tpot_s and e2e_s are means over requests, tokens_per_s is output tokens over the makespan,
        as for a static batch; peak_memory_B counts the KV blocks actually held at the peak.
        decode_tokens_per_s is output tokens after each request's first over the decode time: the time in which
        at least one request had its first token and not yet its last (sim/serving_metrics.py decode_span_s;
        for a static batch, from the first token to the last finish). With continuous batching or chunked
        prefill, iterations in that time also prefill arriving requests, so it is decode throughput with that
        interference, over every replica; NaN when no request has a second output token.
        """
        rejected = self.rejected or Rejected(requests=0)
        urgent = None if rejected.urgent_served is None else np.array(rejected.urgent_served, dtype=bool)
        summary = summarize(self.records, makespan_s=self.makespan_s, slo=self.slo, unloaded=self.unloaded,
                            rejected=rejected.requests, rejected_urgent=rejected.urgent, urgent=urgent)
        records = self.records
        tokens = float(records.output_tokens.sum())
        decode_s = decode_span_s(records.first_token_s, records.finish_s)
        peak_B = self.memory.weights_B + self.memory.activations_B + self.peak_kv_blocks * self.memory.kv_block_B
        return {
            "ttft_s": summary["ttft_mean_s"], "tpot_s": summary["tpot_mean_s"], "e2e_s": summary["e2e_mean_s"],
            "tokens_per_s": tokens / self.makespan_s,
            "decode_tokens_per_s": per_decode_second(tokens - len(records), decode_s),
            "energy_per_token_J": self.energy_J / tokens,
            "avg_power_W": self.energy_J / self.makespan_s,
            # The system's static power throughout, and its iterations' dynamic power at their busiest window.
            # (the makespan runs from the first arrival, the iterations' clock from the run's start).
            "power_peak_W": self.energy_parts_J["static_J"] / self.makespan_s + peak_window_power_W(
                self.iterations.start_s - records.arrival_s.min(), self.iterations.duration_s,
                self.iterations.dynamic_J, self.makespan_s),
            "peak_memory_B": peak_B,
            **summary,
            # Time between tokens over every token of every request (Sarathi-Serve's TBT): a decode stalled by
            # another request's prefill shows here, where a request's mean TPOT hides it.
            "tbt_p50_s": _percentile(self.token_gaps_s, 50), "tbt_p99_s": _percentile(self.token_gaps_s, 99),
            "mean_batch_size": self.iterations.mean_batch_size(),
            "kv_utilization_mean": float(np.mean(self.iterations.kv_utilization())) if len(self.iterations)
            else math.nan,
            "kv_utilization_max": self.peak_kv_share,
            "swap_s": self.swap_s,
            "prefix_hit_rate": (self.prefix_found_tokens / self.prefix_sought_tokens if self.prefix_sought_tokens
                                else math.nan),
            "clipped_requests": self.extra.get("clipped_requests", 0.0),
            "capacity_rps": math.nan,
            **(urgent_metrics(records, self.slo, rejected=rejected.urgent, urgent=urgent) if self.prioritized else {}),
            **({} if self.scaled is None else self.scaling_metrics()),
            **({} if self.rejected is None else {
                "rejected_share": rejected.requests / (len(records) + rejected.requests),
                "retried_share": rejected.retried / (len(records) + rejected.requests)}),
        }

    def pool_figures(self) -> dict[str, dict[str, float]]:
        """Per pool, by name in the run's order (held_replica_s's): the replicas it held on average over the makespan
        and POOL_FIGURES of the requests whose last token its replicas sampled (RequestRecords.pool)."""
        served = self.rejected.urgent_served if self.rejected is not None else None
        figures = pool_figures(self.records, len(self.held_replica_s), makespan_s=self.makespan_s, slo=self.slo,
                               urgent=None if served is None else np.array(served, dtype=bool))
        return {name: {"replicas": held_s / self.makespan_s} | mine
                for (name, held_s), mine in zip(self.held_replica_s.items(), figures, strict=True)}

    def scaling_metrics(self) -> dict[str, float]:
        """AUTOSCALE_METRICS of an autoscaled run: the replicas it held on average over the makespan, and at most."""
        return {"mean_replicas": sum(self.held_replica_s.values()) / self.makespan_s,
                "max_replicas_held": float(max(held for _, held in self.scaled))}


def made_replicas(replicas: int, autoscaling: Autoscaling | None) -> int:
    """Replicas a pool of `replicas` makes: every one it may scale to (max_replicas where it autoscales)."""
    return replicas if autoscaling is None else autoscaling.max_replicas


@dataclass(frozen=True, kw_only=True)
class Pool:
    """Identical replicas of one device (or system of devices) with one role: 'serve' requests whole, 'prefill'
    them only (each request's KV then moves to the decode pool over the KV link), or 'decode' them."""

    name: str
    role: str
    replicas: int
    costs: IterationCostModel
    scheduler: str
    limits: SchedulerLimits
    memory: ServingMemory
    idle_power_W: float
    prefix_tokens: int = 0
    # Prefixes of prefix_tokens requests start with, each request's drawn evenly with the pool's seed (sim/kv_cache.py
    # caches them); 1: the one every request shares.
    prefix_groups: int = 1
    # The prefix is the root every group's chain starts with (a system prompt every conversation shares), held once
    # for all groups (sim/kv_cache.py), not each group's own.
    root: bool = False
    window: Window = None  # a sliding window or KV policy (kernels/kv_policy.py)
    # vLLM's hybrid KV cache groups of a model whose windows differ by layer (sim/hybrid_kv.py; None: one group), a
    # KV block then one group's.
    kv_groups: KVGroups | None = None
    # What a replica moves between device and host memory per second (swaps, and prefix blocks loaded from its host
    # cache): over every device's host link at once (each stage moves its layers' share of the blocks before it
    # computes, in that time).
    host_link_Bps: float | None = None
    # Blocks of host memory each engine keeps the prefix blocks its device evicts in, loading them back when a request
    # finds them (sim/kv_cache.py host_blocks; 0: none).
    host_cache_blocks: int = 0
    # Blocks of the KV store the pool's replicas share (sim/kv_store.py; 0: none), and what a replica fetches from it
    # per second.
    kv_store_blocks: int = 0
    kv_store_Bps: float | None = None
    adapter_load_s: float = 0.0  # the time a LoRA adapter takes from host memory into a GPU slot (sim/lora.py)
    speculation: ServingSpeculation | None = None  # decode speculatively (sim/speculative.py)
    seed: int = 0  # of the accepted tokens' draws, with the pool's and the replica's index
    router: str = DEFAULT_ROUTER  # how it picks the replica each request joins (sim/routers.py ROUTERS)
    # Pipeline stages of each replica: that many engines share its stages (sim/replica.py), each with its own
    # scheduler and an even share of its KV blocks (vLLM's virtual engines); its router picks among every engine.
    stages: int = 1
    # Data-parallel ranks of each replica (sim/data_parallel.py): that many engines run in lockstep (sim/replica.py
    # run_lockstep), each with its own scheduler and an even share of its KV blocks; its router picks among every one.
    ranks: int = 1
    # Decode attention reads the shared prefix once for all sequences (cascade attention: FlashInfer, Hydragen)
    # instead of once per sequence (paged attention over the shared blocks).
    cascade: bool = False
    # Replicas that come and go with the load between `replicas` and autoscaling.max_replicas (sim/autoscalers/;
    # None: `replicas` throughout): a pool serving requests whole, alone, or a prefill or decode pool.
    autoscaling: Autoscaling | None = None
    # Requests served alone on one of its replicas, by their lengths: a slowdown SLO's reference, computed once
    # however many rates a capacity search runs on the pool (not an argument, so a pool `replace` makes, with
    # other costs perhaps, starts a cache of its own).
    alone: dict[tuple[bytes, bytes], Unloaded] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role: found {self.role!r}, allowed: {', '.join(ROLES)}")
        if self.replicas < (0 if self.autoscaling is not None else 1):
            raise ValueError(f"replicas: found {self.replicas}, allowed: an integer >= 1 (0: an autoscaled pool that "
                             f"scales to and from zero)")
        if self.stages < 1 or self.costs.stages != self.stages:
            raise ValueError(f"stages: found {self.stages} with costs of {self.costs.stages} stages, allowed: the "
                             f"stages its costs are priced on")
        experts = self.costs.experts
        if self.ranks != (1 if experts is None else experts.ranks) or (self.ranks > 1 and self.stages > 1):
            raise ValueError(f"ranks: found {self.ranks} with costs of {experts.ranks if experts else 1} ranks and "
                             f"{self.stages} stages, allowed: the ranks its costs are priced on, on one stage")
        if (self.limits.preemption == "swap" or self.host_cache_blocks) and not self.host_link_Bps:
            raise ValueError("swap preemption and a host cache need the host link's bandwidth (host_link_Bps)")
        if self.kv_store_blocks and not self.kv_store_Bps:
            raise ValueError("a KV store needs its bandwidth (kv_store_Bps)")
        if self.autoscaling is not None and self.autoscaling.max_replicas < self.replicas:
            raise ValueError(f"autoscaling: found {self.replicas} replicas up to {self.autoscaling.max_replicas}, "
                             f"allowed: max_replicas >= replicas")

    @property
    def made_replicas(self) -> int:
        """Replicas the run makes: every one it may scale to."""
        return made_replicas(self.replicas, self.autoscaling)

    @property
    def engines(self) -> int:
        """Engines of each replica, each with its own scheduler: one per pipeline stage, or per data-parallel rank."""
        return self.stages * self.ranks

    @property
    def engine_kv_blocks(self) -> int:
        """KV blocks of each engine: a replica's, shared evenly by its engines."""
        return self.memory.kv_blocks // self.engines

    def unloaded(self, requests: RequestSet) -> Unloaded:
        """Each request served alone by one of the pool's replicas (sim/slowdown.py), its shared prefix cached."""
        key = (requests.prompt_tokens.tobytes(), requests.output_tokens.tobytes())
        if key not in self.alone:
            shared = shared_prefix_tokens(self.prefix_tokens, self.memory.block_tokens)
            self.alone[key] = unloaded_latencies(self.costs, requests.prompt_tokens, requests.output_tokens,
                                                 window=self.window, prefix_tokens=shared,
                                                 block_tokens=self.memory.block_tokens)
        return self.alone[key]


def prefix_group_draws(count: int, groups: int, seed: int) -> np.ndarray:
    """The prefix group of each of `count` requests: evenly drawn among `groups` from a stream of `seed` apart
    from the requests' own draws (all 0 with one group)."""
    if groups == 1:
        return np.zeros(count, dtype=np.int64)
    return np.random.default_rng([seed, PREFIX_GROUP_STREAM]).integers(groups, size=count)


def numbered_by_appearance(groups: np.ndarray) -> np.ndarray:
    """Group labels renumbered 0, 1, ... in the order each first appears (a warm cache holds the first ones)."""
    labels, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    rank = np.empty(len(labels), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(labels))
    return rank[inverse]


def serve(costs: IterationCostModel, requests: RequestSet, scheduler: Scheduler, kv: PagedKVCache,
          memory: ServingMemory, idle_power_W: float, *, window: Window = None, slo: SLO | None = None,
          host_link_Bps: float | None = None, prefix_groups: np.ndarray | None = None) -> ServingResult:
    """Simulate one replica serving `requests` under `scheduler` until the last request finishes.

    With swap preemption, KV moves over a host link of `host_link_Bps` (its energy is not counted);
    `prefix_groups`: each request's prefix group in `kv` (default: the requests' own, else every request the first's).
    """
    pool = Pool(name="replica", role="serve", replicas=1, costs=costs, scheduler=scheduler.name,
                limits=scheduler.limits, memory=memory, idle_power_W=idle_power_W, prefix_tokens=kv.prefix_blocks
                * kv.block_tokens, window=window, host_link_Bps=host_link_Bps)
    return serve_pools([pool], requests, slo=slo, caches=[[kv]], schedulers=[[scheduler]], prefix_groups=prefix_groups)


def serve_pools(pools: list[Pool], requests: RequestSet, *, slo: SLO | None = None,
                kv_transfer_s: Transfer | Sequence_[Transfer] | None = None, caches=None, schedulers=None,
                prefix_groups: np.ndarray | None = None, admission: Admission | None = None,
                decode_pick: str = DECODE_PICKS[0]) -> ServingResult:
    """Simulate pools of replicas serving `requests`: 'serve' pools (one device's replicas, or a fleet of several
    devices' pools), or a 'prefill' pool and 'decode' pools (one device's, or a fleet of several devices' pools).

    Each arrival goes to the replica the first pool's router picks among the entry replicas (Pool.router,
    sim/routers.py): the prefill pool's, or every serving pool's; a prefilled request's KV (its tokens past the shared
    prefix, which the decode pools hold too, x its decode pool's bytes per token) moves in kv_transfer_s(bytes) (one
    function for every decode pool, or one each, in their order) to the decode replica the first decode pool's router
    picks among every decode pool's once the prefill is done (`decode_pick` 'prefill_done'), or as the request joins its
    prefill replica ('arrival', llm-d's: the module's docstring), the target counting it among its requests while its
    KV crosses at the target pool's link and bytes a token. Each prefill replica's sends go one
    after another over its ports (the decode side's ports and the link's energy are not modeled). `caches` and
    `schedulers` give each replica's own (default: new ones from the pool); `prefix_groups` each request's prefix
    group (default: the requests' own, numbered by first appearance, else drawn evenly among the entry pool's
    prefix_groups, prefix_group_draws); `admission`: an arrival finding every entry replica busy is rejected
    (sim/admission.py), else the router picks among those not busy.
    """
    roles = [pool.role for pool in pools]
    if not (set(roles) == {"serve"} or (roles[0] == "prefill" and len(roles) > 1 and set(roles[1:]) == {"decode"})):
        raise ValueError(f"pools: found roles {roles}, allowed: 'serve' pools (a fleet of one device or of several) or "
                         f"['prefill', 'decode', ...] (one prefill pool, then one decode pool or a fleet of several)")
    if decode_pick not in DECODE_PICKS:
        raise ValueError(f"decode_pick: found {decode_pick!r}, allowed: {', '.join(DECODE_PICKS)}")
    if decode_pick != DECODE_PICKS[0] and roles[0] != "prefill":
        raise ValueError(f"decode_pick: found {decode_pick!r} with pools {roles}, allowed: {DECODE_PICKS[0]!r} (no "
                         f"prefill pool hands requests to a decode pool)")
    if decode_pick != DECODE_PICKS[0] and (scaled := [pool.name for pool in pools[1:] if pool.autoscaling]):
        raise ValueError(f"decode_pick: found {decode_pick!r} with autoscaled decode pools {scaled}, allowed: "
                         f"{DECODE_PICKS[0]!r} (a decode replica picked at arrival may be drained before the prefill "
                         f"is done)")
    names = [pool.name for pool in pools]
    for name in names:  # a run's busy time, replica-hours held and timeline rows are each pool's, by its name
        if names.count(name) > 1:
            raise ValueError(f"pools: found the name {name!r} twice, allowed: a name of each pool's own")
    env = simpy.Environment()
    total = len(requests)
    finished: list[Sequence] = []
    rejected: list[int] = []  # the requests rejected on arrival (sim/admission.py), by index
    retries: dict[int, int] = {}  # the retries taken by each request the gateway turned away at least once
    retry_draws = np.random.default_rng([pools[0].seed, RETRY_STREAM])
    # Requests held at the gateway, while no replica serves (a pool scaled to zero) or every one is busy (flow control):
    # a heap of (priority, arrival, index): the most urgent first (the lowest priority number, every level apart, as
    # llm-d's flow control keeps a band per priority), in arrival order within a priority.
    gateway: list[tuple[int, float, int]] = []
    done = env.event()

    def settle() -> None:
        """End the run once every request is finished or rejected."""
        if len(finished) + len(rejected) == total:
            done.succeed()

    def on_finish(seq: Sequence) -> None:
        finished.append(seq)
        settle()
        if seq.index in next_turn:  # a conversation's next turn comes once this answer is finished
            env.process(follow(next_turn[seq.index], seq.index))

    replicas: list[list[Replica]] = []  # per pool, its engines: a replica's engines (Pool.engines) in a row
    lockstep: list[list[Replica]] = []  # the rank engines of each data-parallel replica
    fleet_store = None  # a fleet's: every serving pool's replicas share one store, as a cluster's Mooncake store is
    for p, pool in enumerate(pools):
        made = []
        per_token_B = pool.memory.kv_block_B / pool.memory.block_tokens
        store = KVStore(pool.kv_store_blocks) if pool.kv_store_blocks else None
        if store is not None and pool.role == "serve":
            store = fleet_store = fleet_store or store
        for r in range(pool.made_replicas):
            stages = [simpy.Resource(env) for _ in range(pool.stages)] if pool.stages > 1 else []
            copies = CopyQueue()  # the replica's links, which its engines on pipeline stages copy KV over in turn
            sends = CopyQueue()  # its devices' network ports, which send a prefill pool's KV to the decode pool
            engines = []
            for e in range(pool.engines):
                i = r * pool.engines + e
                # A data-parallel rank sends over its own device's port; engines on stages share the replica's.
                ports = sends if pool.ranks == 1 else CopyQueue()
                kv = caches[p][i] if caches else PagedKVCache(capacity_blocks=pool.engine_kv_blocks,
                                                             block_tokens=pool.memory.block_tokens,
                                                             prefix_tokens=pool.prefix_tokens,
                                                             prefix_groups=pool.prefix_groups, window=pool.window,
                                                             device_blocks=pool.memory.device_kv_blocks,
                                                             root=pool.root, host_blocks=pool.host_cache_blocks,
                                                             store=store, groups=pool.kv_groups,
                                                             drops_last_hit=pool.speculation is not None
                                                             and pool.speculation.drops_last_hit)
                scheduler = schedulers[p][i] if schedulers else make_scheduler(pool.scheduler, pool.limits)
                engines.append(Replica(
                    env, pool.costs, scheduler, EngineState(kv=kv), window=pool.window,
                    swap_s_per_token=per_token_B / pool.host_link_Bps if pool.host_link_Bps else 0.0,
                    fetch_s_per_token=per_token_B / pool.kv_store_Bps if pool.kv_store_Bps else 0.0,
                    on_finish=on_finish,
                    on_prefilled=(lambda seq, ports=ports, own=engines, e=e: _hand_over(seq, own[e], ports))
                    if pool.role == "prefill" else None,
                    speculation=pool.speculation, seed=(pool.seed, p, r) + ((e,) if pool.engines > 1 else ()),
                    stages=stages, shared_prefix=kv.shared_tokens if pool.cascade else 0,
                    copies=copies if pool.stages > 1 else None, pool=p, adapter_load_s=pool.adapter_load_s))
            for engine in engines:
                engine.peers = engines
                if pool.role == "decode":
                    engine.state.pull = lambda seq, engine=engine: env.process(_pull(seq, engine))
            if pool.ranks > 1:
                lockstep.append(engines)
            made.extend(engines)
        replicas.append(made)

    # A router's draws come from a stream apart from its pool's replicas' (their seeds end in a replica's number).
    routers = [make_router(pool.router, slo, (pool.seed, p, ROUTER_STREAM)) for p, pool in enumerate(pools)]
    # The engines each pool's router picks among: every one it made, or an autoscaled pool's serving ones.
    routable: list[list[Replica]] = [list(made) for made in replicas]
    scalers: list[Autoscaler | None] = [None] * len(pools)
    # A later turn's arrival is known once it arrives (follow): the gateway's count takes it then.
    timed = (requests.arrival_s if requests.after_previous_s is None
             else requests.arrival_s[np.isnan(requests.after_previous_s)])
    traffic = Traffic(arrival_s=sorted(timed.tolist()), finished=finished)
    for p, pool in enumerate(pools):
        if pool.autoscaling is None:
            continue
        engines = pool.engines
        scalers[p] = make_autoscaler(env, [replicas[p][r * engines:(r + 1) * engines]
                                           for r in range(pool.made_replicas)],
                                     pool.replicas, pool.autoscaling, routable[p], float(requests.arrival_s[0]),
                                     role=pool.role, traffic=traffic)
        env.process(scalers[p].run())

    def serving(first: int, last: int) -> list[Replica]:
        """The engines of pools `first` to `last` (excluded) a router picks among: every one each made, or an
        autoscaled pool's serving ones, as they are now."""
        return [engine for made in routable[first:last] for engine in made]

    def entry() -> list[Replica]:
        """The replicas an arrival may join, which the first pool's router picks among: a prefill pool's, or every
        serving pool's."""
        return serving(0, 1 if roles[0] == "prefill" else len(pools))

    # A handed-over request -> the prefill engine holding its KV, and the ports its replica sends it over.
    sent_from: dict[int, tuple[Replica, CopyQueue]] = {}
    picked: dict[int, Replica] = {}  # a request's decode replica picked at its arrival (decode_pick 'arrival')
    transfers = (list(kv_transfer_s) if isinstance(kv_transfer_s, Sequence_) else
                 [kv_transfer_s] * (len(pools) - 1))  # each decode pool's (a fleet's, in order)

    def _hand_over(seq: Sequence, engine: Replica, ports: CopyQueue) -> None:
        """Hand a prefilled request to the decode replica picked for it at its arrival (decode_pick 'arrival'), or to
        the one the first decode pool's router picks now, before its KV crosses (module docstring): one that allocates
        its blocks before it pulls the KV into them queues it (Scheduler.allocates_before_pull, _pull), another expects
        it (Replica.expect), counting it among its requests while its KV crosses at its pool's link and bytes a token.
        Its SLO class goes with it, and its context, its first token out."""
        sent_from[seq.index] = engine, ports
        target = (picked.pop(seq.index) if decode_pick == "arrival"
                  else pick_decode(max(seq.computed, 1), seq.urgent, seq.index))
        if target.scheduler.allocates_before_pull:
            seq.kv_pull = "due"
            target.accept(seq)
        else:
            target.expect(seq)
            env.process(_pull(seq, target))

    def pick_decode(context_tokens: int, urgent_: bool, index: int) -> Replica:
        """The decode replica the first decode pool's router picks now among every decode pool's, for a request
        arriving there prefilled with `context_tokens` of context."""
        return routers[1].choose(serving(1, len(pools)), Routed(prompt_tokens=context_tokens, urgent=urgent_,
                                                                index=index, prefilled=True))

    def _pull(seq: Sequence, engine: Replica):
        """A handed-over request's KV crossing to decode engine `engine`'s pool, into the blocks it allocated for it (a
        pull begun: Sequence.kv_pull 'crossing'), or to it expecting it (Replica.expect): the decode pools' replicas
        hold the shared prefix already, so only its own KV crosses, one send after another over its prefill replica's
        ports; once it has, the prefill engine frees the blocks it held for it as it notices the read (Replica.sent;
        where its scheduler holds them: holds_until_sent)."""
        p = engine.pool
        per_token_B = pools[p].memory.kv_block_B / pools[p].memory.block_tokens
        own_tokens = replicas[p][0].state.kv.own_tokens(seq.index, seq.computed)
        send_s = transfers[p - 1](own_tokens * per_token_B) if transfers[p - 1] else 0.0
        sender, ports = sent_from.pop(seq.index)
        yield env.timeout(ports.reserve(env.now, send_s) - env.now)
        if sender.scheduler.holds_until_sent:
            sender.sent(seq)
        if seq.kv_pull == "crossing":
            engine.land(seq)
        else:
            engine.arrive(seq)

    arrivals = requests.arrival_s.tolist()
    prompts, outputs = requests.prompt_tokens.tolist(), requests.output_tokens.tolist()
    if prefix_groups is None and requests.prefix_group is not None:
        prefix_groups = numbered_by_appearance(requests.prefix_group)
    groups = (prefix_group_draws(len(requests), pools[0].prefix_groups, pools[0].seed) if prefix_groups is None
              else np.asarray(prefix_groups)).tolist()

    # Conversations: a request whose group's next request shares its whole prompt leaves its context cached for it
    # (one whose next request shares part of its prompt, as questions on one document do, leaves that part);
    # a later turn with an after_previous_s arrives that long after the previous request of its group finishes.
    shared = [None] * len(requests) if requests.shared_tokens is None else requests.shared_tokens.tolist()
    gaps = [math.nan] * len(requests) if requests.after_previous_s is None else requests.after_previous_s.tolist()
    following: dict[int, int] = {}
    last: dict[int, int] = {}
    for index, group in enumerate(groups):
        if group in last:
            following[last[group]] = index
        last[group] = index
    continued = {i for i, j in following.items() if shared[j] is not None and shared[j] >= prompts[i]}
    leaves = {i: shared[j] for i, j in following.items() if shared[j] is not None and i not in continued}
    next_turn = {i: j for i, j in following.items() if not math.isnan(gaps[j])}
    follows = set(next_turn.values())
    served_by: dict[int, Replica] = {}

    tree = requests.prefix_nodes is not None
    priorities = [0] * len(requests) if requests.priority is None else requests.priority.tolist()
    # The urgent requests: those of the lowest priority where requests differ in it (their SLO class).
    lowest, differ = min(priorities, default=0), min(priorities, default=0) != max(priorities, default=0)
    urgent = [differ and priority == lowest for priority in priorities]
    roots = [0] * len(requests) if requests.prefix_root is None else requests.prefix_root.tolist()
    adapters = [-1] * len(requests) if requests.adapter is None else requests.adapter.tolist()

    def admit(index: int, arrival_s: float, replica: Replica) -> None:
        seq = Sequence(index=index, arrival_s=arrival_s, prompt=prompts[index], output=outputs[index],
                       priority=priorities[index], urgent=urgent[index], adapter=adapters[index])
        if tree:
            replica.state.kv.assign_path(index, requests.prefix_path(index))
        else:
            replica.state.kv.assign(index, groups[index], shared[index], continues=index in continued,
                                    leaves_tokens=leaves.get(index, 0), root=roots[index])
        seq.computed = seq.cached = replica.state.kv.cached_prefix(index, seq.target)
        if index in next_turn:
            served_by[index] = replica
        if decode_pick == "arrival":  # llm-d's scheduler picks the decode pod beside the prefill pod
            picked[index] = pick_decode(prompts[index], urgent[index], index)
        replica.accept(seq)

    def arrive():
        for index, arrival_s in enumerate(arrivals):
            if index in follows:
                continue
            if arrival_s > env.now:
                yield env.timeout(arrival_s - env.now)
            offer(index, arrival_s)

    def offer(index: int, arrival_s: float) -> None:
        """A request reaching the gateway, first or retried (`arrival_s`: its first arrival)."""
        if gateway:  # requests held before it go first, the most urgent first: it queues behind them
            heapq.heappush(gateway, (priorities[index], arrival_s, index))
            dispatch_held()
        else:
            dispatch(index, arrival_s)

    def retry(index: int, arrival_s: float, delay_s: float):
        yield env.timeout(delay_s)
        offer(index, arrival_s)

    def dispatch(index: int, arrival_s: float, held: bool = False) -> bool:
        """Route a request to an entry replica, reject it where every one is busy, or hold it at the gateway where
        none serves (scaled to zero) or every one is busy and the gateway holds requests (flow control); whether it
        left the gateway (a `held` request stays in it otherwise)."""
        replicas_now = entry()
        free = replicas_now if admission is None or not replicas_now else admission.free(replicas_now)
        if not free and (not replicas_now or admission.hold):
            if not held:
                heapq.heappush(gateway, (priorities[index], arrival_s, index))
            return False
        if not free:
            taken = retries.setdefault(index, 0)
            if taken < admission.retries:  # its client retries it later
                retries[index] = taken + 1
                env.process(retry(index, arrival_s, admission.retry_delay_s(taken, retry_draws.random())))
                return True
            rejected.append(index)
            while index in next_turn:  # a rejected conversation's later turns never come
                index = next_turn[index]
                rejected.append(index)
            settle()
            return True
        routed = Routed(groups[index], shared[index], prompts[index], requests.prefix_path(index) if tree else None,
                        roots[index], urgent[index], index)
        admit(index, arrival_s, routers[0].choose(free, routed))
        return True

    def dispatch_held() -> None:
        """Dispatch the requests held at the gateway, the most urgent first, while a replica takes them."""
        while gateway:
            _, arrival_s, index = gateway[0]
            if not dispatch(index, arrival_s, held=True):
                return
            heapq.heappop(gateway)

    def forget(engines: Sequence_[Replica]) -> None:
        """Drop the conversations' affinity to a replica that leaves the router's replicas (drained): their later turns
        are routed afresh, its cached context gone with it."""
        for index in [index for index, replica in served_by.items() if replica in engines]:
            del served_by[index]

    for scaler in scalers:
        if scaler is not None:
            scaler.at_gateway, scaler.on_ready, scaler.on_drain = (lambda: len(gateway)), dispatch_held, forget
    if admission is not None and admission.hold:  # a held request goes once an entry replica is free again
        for made, role in zip(replicas, roles, strict=True):
            if role != "decode":
                for replica in made:
                    replica.after_iteration = lambda: dispatch_held() if gateway else None

    def follow(index: int, previous: int):
        yield env.timeout(gaps[index])
        bisect.insort(traffic.arrival_s, env.now)
        # The replica that served the conversation so far (session affinity, as conversation-aware routers keep), or,
        # where an autoscaler drained it meanwhile, the one the router picks now, as for a first turn: llm-d's
        # session-affinity-scorer scores a scaled-down pod as any unavailable one and routes on its other scorers
        # (docs/session_affinity.md, llm-d/llm-d-inference-scheduler at 228de0bd), and a prefix-aware gateway finds
        # the context cached on no serving replica, so the turn computes its whole prompt there.
        replica = served_by.pop(previous, None)
        if replica is None:
            offer(index, env.now)
        else:
            admit(index, env.now, replica)

    env.process(arrive())
    in_step = {id(rank) for ranks in lockstep for rank in ranks}
    for ranks in lockstep:
        env.process(run_lockstep(ranks))
    for pool_replicas in replicas:
        for replica in pool_replicas:
            if id(replica) not in in_step:
                env.process(replica.run())
    env.run(until=done)
    result = _result(pools, replicas, finished, requests, slo, scalers, rejected if admission is not None else None,
                     urgent, retried=len(retries))
    if slo is None or slo.slowdown is None:
        return result
    # A slowdown's reference is the request alone on the point's own device (module slowdown): the first decode pool's,
    # or the first serving pool's.
    return replace(result, unloaded=pools[1 if roles[0] == "prefill" else 0].unloaded(requests))


def _result(pools: list[Pool], replicas: list[list[Replica]], finished: list[Sequence], requests: RequestSet,
            slo: SLO | None, scalers: list[Autoscaler | None] | None = None, rejected: list[int] | None = None,
            urgent: list[bool] | None = None, retried: int = 0) -> ServingResult:
    seqs = sorted(finished, key=lambda s: s.index)

    def column(name: str, dtype=float) -> np.ndarray:
        return np.array([getattr(s, name) for s in seqs], dtype=dtype)

    records = RequestRecords(arrival_s=column("arrival_s"), scheduled_s=column("scheduled_s"),
                             first_token_s=column("first_token_s"), finish_s=column("finish_s"),
                             prompt_tokens=column("prompt", int), output_tokens=column("output", int),
                             preemptions=column("preemptions", int),
                             decode_admitted_s=column("decode_admitted_s"), priority=column("priority", int),
                             pool=column("pool", int))
    everyone = [(pool, replica) for pool, made in zip(pools, replicas, strict=True) for replica in made]
    rows = [(*row[:5], pool.engine_kv_blocks, index, row.dynamic_J, row.prefill_tokens)
            for index, (pool, replica) in enumerate(everyone) for row in replica.log]
    log = np.array(sorted(rows), dtype=float).reshape(-1, 9).T
    names = tuple(f"{pool.name} replica {i // pool.engines}" + (f" engine {i % pool.engines}" if pool.stages > 1 else
                                                                 f" rank {i % pool.engines}" if pool.ranks > 1 else "")
                  for pool, made in zip(pools, replicas, strict=True)
                  for i in range(len(made))) if len(everyone) > 1 else ("",)
    iterations = IterationLog(start_s=log[0], duration_s=log[1], batch_size=log[2], tokens=log[3],
                              kv_blocks_used=log[4], kv_blocks_total=log[5] if len(log[5]) else 1, replica=log[6],
                              replica_names=names, dynamic_J=log[7], prefill_tokens=log[8])
    # Static power is drawn from the first arrival to the last finish, idle gaps included, on every replica.
    makespan_s = float(records.finish_s.max() - requests.arrival_s[0])
    end_s = float(records.finish_s.max())
    # Replica-seconds held: every replica throughout, or an autoscaled pool's as it held them.
    scalers = scalers or [None] * len(pools)
    held_s = [scaler.held_s(end_s) if scaler is not None else pool.replicas * makespan_s
              for pool, scaler in zip(pools, scalers, strict=True)]
    start_s = float(requests.arrival_s[0])
    spans = [span for pool, scaler in zip(pools, scalers, strict=True)
             for span in (scaler.spans() if scaler is not None else [(start_s, math.inf)] * pool.replicas)]
    priced: list[tuple[IterationCost, int]] = [entry for _, replica in everyone
                                               for entry in replica.cost_counts.values()]
    class_time = sum((cost.class_time_s * n for cost, n in priced), np.zeros(len(TIME_CLASS_NAMES)))
    energy = {"compute_J": sum(cost.compute_J * n for cost, n in priced),
              "memory_J": sum(cost.memory_J * n for cost, n in priced),
              "static_J": sum(pool.idle_power_W * held for pool, held in zip(pools, held_s, strict=True))}
    busiest = max(everyone, key=lambda pair: pair[1].peak_blocks / pair[0].memory.kv_blocks)
    return ServingResult(records=records, iterations=iterations, makespan_s=makespan_s, energy_parts_J=energy,
                         time_by_class_s=dict(zip(TIME_CLASS_NAMES, class_time.tolist(), strict=True)),
                         memory=busiest[0].memory, shapes_priced=sum(p.costs.shapes_priced for p in pools),
                         peak_kv_blocks=busiest[1].peak_blocks,
                         peak_kv_share=max(engine.peak_own_blocks / pool.engine_kv_blocks for pool, engine in everyone),
                         token_gaps_s=np.array([gap for _, replica in everyone for gap in replica.token_gaps]),
                         slo=slo, swap_s=sum(replica.swap_s for _, replica in everyone),
                         prefix_sought_tokens=sum(replica.state.kv.prefix_sought_blocks * replica.state.kv.block_tokens
                                                  for _, replica in everyone),
                         prefix_found_tokens=sum(replica.state.kv.prefix_found_blocks * replica.state.kv.block_tokens
                                                 for _, replica in everyone),
                         busy_s={pool.name: sum(sum(row[1] for row in replica.log) for replica in made)
                                 for pool, made in zip(pools, replicas, strict=True)},
                         prioritized=requests.priority is not None,
                         scaled=held_timeline(spans, end_s) if any(scalers) else None,
                         held_replica_s={pool.name: held for pool, held in zip(pools, held_s, strict=True)},
                         rejected=None if rejected is None else Rejected(
                             requests=len(rejected), urgent=sum(bool(urgent and urgent[i]) for i in rejected),
                             urgent_served=tuple(seq.urgent for seq in seqs), retried=retried))


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan
