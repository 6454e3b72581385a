"""ServingSpec: the serving workload and engine of one design point (requests, scheduler, KV cache, SLO)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

import numpy as np

from hw_models.link import default_node_link, load_link
from sim.admission import CLIENT_RETRY_S, Admission
from sim.attention_pool import PLACEMENTS
from sim.autoscalers import AUTOSCALERS, LOAD_PREDICTORS, Autoscaling, on_metric
from sim.autoscalers import METRICS as AUTOSCALE_METRICS
from sim.autoscalers.hpa import KEDA_POLLING_S
from sim.lora import DEFAULT_MAX_LORAS, DEFAULT_RANK, UNIFORM_ALPHA, lora_settings_error
from sim.routers import DECODE_PICKS, ROUTERS
from sim.schedulers import QUEUE_POLICIES, SCHEDULERS, SchedulerLimits
from sim.serving_metrics import SLO
from sim.slowdown import SlowdownSLO
from workloads.errors import InputError
from workloads.requests import (
    ARRIVAL_COLUMNS,
    Fixed,
    Gamma,
    LengthDistribution,
    Phased,
    Poisson,
    RequestSet,
    read_request_trace,
    resolve_trace,
    sample_conversations,
    sample_requests,
)

ARRIVALS = ("poisson", "gamma", "trace")
LORA_FIELDS = ("lora_adapters", "lora_rank", "max_loras", "lora_alpha")  # results columns where LoRA is on
PREEMPTIONS = ("recompute", "swap")
# How decode attention reads a prefix every request shares: each sequence its copy of the shared blocks (vLLM's
# paged attention), or the prefix once for all and each sequence its own tokens (cascade attention).
PREFIX_ATTENTIONS = ("paged", "cascade")
# Fields added after serving results were first stored: left out of the repr (a point's key) at their default.
KEY_NEUTRAL_DEFAULTS = frozenset({"prompt_batch_tokens", "slo_slowdown", "router", "max_decode_preemptions",
                                  "prefix_attention", "prefix_groups", "queue_policy", "conversation_turns",
                                  "think_s", "think_cv", "memory_utilization", "host_cache_GB",
                                  "kv_store_GB", "kv_store_GBps", "priority_fraction", "mixed_device", "mixed_replicas",
                                  "attention_device", "attention_devices", "attention_link",
                                  "attention_micro_batches", "attention_placement", "slo_urgent_ttft_s",
                                  "slo_urgent_tpot_s", "max_replicas", "autoscale_target", "autoscale_metric",
                                  "cold_start_s", "rate_profile", "prefill_max_replicas", "autoscaler",
                                  "autoscale_interval_s", "busy_kv_usage", "busy_prefill_tokens",
                                  "autoscale_predictor", "mixed_max_replicas", "busy_waiting_requests", "busy_action",
                                  "client_retries", "client_retry_s", "prefill_node_link", "mixed_node_link",
                                  "long_prefill_tokens", "lora_adapters", "lora_rank", "max_loras", "lora_alpha",
                                  "decode_pick"})
# How a spec without a prefill pool, which reads no kv_link, keys it: the one default specs stored before kv_link could
# be left unset wrote out (a DGX H100's InfiniBand NDR NIC per GPU), so stored results keep their keys.
KV_LINK = "infiniband-ndr"
# What a new replica's cold start reads its weights over, where cold_start_s is not given: a local NVMe SSD (the
# link preset's datasheet read rate); the engine's own start (CUDA graph capture, warm-up) is not counted.
COLD_START_LINK = "nvme-pcie4-x4"
# The settings of attention devices: a point whose model's devices attend is the same design whatever they say.
ATTENTION_FIELDS = ("attention_device", "attention_devices", "attention_link", "attention_micro_batches",
                    "attention_placement")
# The most micro-batches an iteration is split in, by default, when attention runs on devices of its own: two take
# turns on the model's and the attention devices (Lamina's staggered pipelining with one model replica,
# MegaScale-Infer's ping-pong pipeline).
ATTENTION_MICRO_BATCHES = 2
# The link between the model's and the attention devices where none is named: Lamina's measured RoCE
# (arXiv:2405.01814v2).
LAMINA_LINK = "roce-400g"


def attention_spans_nodes(serving: Mapping[str, Any], model_devices: int) -> bool:
    """Whether a replica's attention devices sit on other nodes than its `model_devices` devices, at the serving values
    `serving` (ATTENTION_FIELDS): they attend apart, and both together are more than one domain of attention_link
    joins (LinkSpec.domain_devices: an NVSwitch board's eight; a network's joins any number), so their sends leave the
    link for the node link (ServingSpec.attention_crossing). A hybrid pool's attention device is its devices' own host
    (APEX's CPU), in their node over their PCIe links."""
    if serving.get("attention_device") in (None, "", "none") or serving.get("attention_placement") == "hybrid":
        return False
    domain = load_link(serving.get("attention_link") or LAMINA_LINK).domain_devices
    return domain is not None and model_devices + (serving.get("attention_devices") or 1) > domain


def crossing_links(one: str, other: str) -> tuple[str, ...]:
    """The links a transfer between two ends on node links `one` and `other` (link presets) is priced on: the one, where
    they agree or one is no faster in bandwidth and latency both (a path runs at its slowest link's rate, as NCCL's
    topology gives a path the least bandwidth of its links: src/graph/paths.cc); where neither is, both, a transfer
    taking the longer of its times over each."""
    links = sorted({one, other})
    if len(links) == 1:
        return tuple(links)
    first, second = (load_link(name) for name in links)
    for name, slow, fast in ((links[0], first, second), (links[1], second, first)):
        if slow.bandwidth_GBps <= fast.bandwidth_GBps and slow.latency_us >= fast.latency_us:
            return (name,)
    return tuple(links)


DEFAULT_REQUESTS = 1000
# The most requests one run simulates: 35x the largest shipped trace (arxiv-summarization, 28,257 requests). A run
# holds every request's record and shows no progress inside a point: 10 million ran for minutes, growing by 30 MB/s.
MAX_REQUESTS = 1_000_000
# What marks a replica busy at the gateway, and what the gateway does with a request finding every one busy
# (sim/admission.py).
BUSY_THRESHOLDS = ("busy_kv_usage", "busy_prefill_tokens", "busy_waiting_requests")
BUSY_ACTIONS = ("reject", "queue")
# The most replicas one run builds, every pool's together (an autoscaled pool's up to its most): each is a simulated
# engine with its own KV cache, so a mistyped 100,000 would build 100,000 of them. A choice, not a measurement: four
# times the replicas of 8 GPUs each in a 4,096-GPU cluster.
MAX_REPLICAS_BUILT = 2048
# Each pool's (most replicas, least replicas) knobs: the point's pool (a decode pool beside a prefill pool), the prefill
# pool, a fleet's mixed pool. A most left unset: the pool holds its least.
SCALED_POOLS = (("max_replicas", "replicas"), ("prefill_max_replicas", "prefill_replicas"),
                ("mixed_max_replicas", "mixed_replicas"))


@dataclass(frozen=True, kw_only=True)
class ServingSpec:
    """Requests arriving at a replica and how it schedules them.

    Requests come from a trace (its lengths; with arrival 'trace' its timestamps too, scaled to rate_per_s
    when one is given) or from length distributions; arrivals are Poisson or gamma (cv > 1 is bursty) at
    rate_per_s. The same seed draws the same lengths at every rate.
    """

    scheduler: str = "continuous"
    requests: int | None = None  # None: DEFAULT_REQUESTS, or all of a trace of fewer
    arrival: str = "poisson"
    rate_per_s: float | None = 1.0
    cv: float = 1.0
    trace: str | None = None
    prompt: LengthDistribution = Fixed(tokens=512)
    output: LengthDistribution = Fixed(tokens=128)
    max_seqs: int = 256
    max_batched_tokens: int = 8192
    chunk_tokens: int = 512
    prompt_batch_tokens: int | None = None  # SchedulerLimits.prompt_batch_tokens (Splitwise: 2,048)
    # Read by orca alone: new prompts preempt running decodes past the iteration's token budget, each at most this many
    # times (SchedulerLimits.max_decode_preemptions; splitwise-sim's baseline machines: 4). None: decodes never sit
    # out. Beside another scheduler it is an unread setting (explore/serving_settings.py RULES).
    max_decode_preemptions: int | None = None
    # Read by the chunked scheduler alone: the most prompt tokens one request computes an iteration
    # (SchedulerLimits.long_prefill_tokens, vLLM v1's long_prefill_token_threshold); 0: no cap, vLLM's default.
    long_prefill_tokens: int = 0
    block_tokens: int = 16
    prefix_tokens: int = 0
    # Distinct prefixes of prefix_tokens the requests start with, each request's drawn evenly (a system prompt per
    # tenant or task, a shared document): each group's prefix cached while memory allows, the least recently used
    # evicted (sim/kv_cache.py); None: 1, one prefix every request shares, as results stored before it.
    prefix_groups: int | None = None
    # The order waiting requests are admitted in (sim/schedulers/base.py QUEUE_POLICIES); None: fcfs, the order of
    # results stored before it could be chosen.
    queue_policy: str | None = None
    # The share of requests drawn urgent (priority 0, the others 1: RequestSet.with_urgent), a conversation's turns
    # alike; the queue policy 'priority' serves them first. None: every request alike, or a trace's priority column.
    priority_fraction: float | None = None
    # Conversations (workloads/requests.py sample_conversations): the requests as conversations of this many turns,
    # each turn adding a message (the prompt distribution) to the conversation so far and arriving think_s seconds
    # after the previous turn's answer; the rate is of requests, conversations starting at rate / turns. Each
    # conversation's cached context is its group's prefix (sim/kv_cache.py), behind the system prompt of prefix_tokens
    # every conversation starts with, where there is one (the root of every conversation's chain). None: independent
    # requests.
    conversation_turns: int | None = None
    think_s: float | None = None
    # The think times' coefficient of variation (workloads/requests.py think_times: gamma-distributed, 1 exponential);
    # None: each turn exactly think_s after the previous answer.
    think_cv: float | None = None
    preemption: str = "recompute"  # or "swap" over a host link of swap_GBps
    swap_GBps: float | None = None  # None: the device preset's host link (its host_link)
    seed: int = 0
    # The arrival rate in phases, repeating: (duration_s, multiplier) pairs, each phase's requests arriving at
    # multiplier x rate_per_s (workloads/requests.py Phased); None: rate_per_s throughout.
    rate_profile: tuple[tuple[float, float], ...] | None = None
    slo_ttft_s: float | None = None
    slo_tpot_s: float | None = None
    slo_attainment: float = 0.9
    # Limits on percentiles of each request's slowdown over its run alone (sim/slowdown.py; Splitwise's SLOs).
    slo_slowdown: SlowdownSLO | None = None
    # The urgent requests' own limits (sim/serving_metrics.py SLO; None: slo_ttft_s and slo_tpot_s, as the others').
    slo_urgent_ttft_s: float | None = None
    slo_urgent_tpot_s: float | None = None
    # Search the highest rate in (low, high) req/s that meets the SLO instead of running at rate_per_s.
    capacity: tuple[float, float] | None = None
    # Replicas serving requests whole; with prefill_replicas > 0, the decode pool's replicas, and a separate
    # prefill pool of prefill_replicas (of prefill_device, default the point's device) hands each request's KV
    # over kv_link (disaggregated serving).
    replicas: int = 1
    prefill_replicas: int = 0
    prefill_device: str = ""
    kv_link: str | None = None  # None: the pools' node links, the slower (handoff_link)
    # The node link of the prefill pool's nodes, where it spans several or crosses them (pool_node_link); "": the
    # point's node_link, else its devices' own.
    prefill_node_link: str = ""
    # A heterogeneous fleet: mixed_replicas replicas of mixed_device beside the replicas of the point's device, serving
    # requests whole (or decoding them beside a prefill pool), one router picking among them all (Melange's mix of GPU
    # types). 0: the point's replicas alone.
    mixed_device: str = ""
    mixed_replicas: int = 0
    mixed_node_link: str = ""  # the mixed replicas' node link (pool_node_link); "": the point's, else their devices'
    # Replicas that come and go with the load (sim/autoscalers/): from `replicas` up to max_replicas, as the
    # autoscaler kind says (AUTOSCALERS; None: hpa, Kubernetes' HPA keeping autoscale_metric, requests waiting or
    # running on a replica, near autoscale_target per replica; sla_planner, load_planner, sla_load_planner: Dynamo's
    # planner on the SLO's limits),
    # deciding every autoscale_interval_s (None: the kind's own); a new replica serves cold_start_s after it is asked
    # for (None: its weights read from a local NVMe SSD, COLD_START_LINK). None: `replicas` throughout.
    max_replicas: int | None = None
    # Disaggregated: the prefill pool scales too, from prefill_replicas up to this (its metric, target and cold start
    # the decode pool's); None: prefill_replicas throughout.
    prefill_max_replicas: int | None = None
    # A fleet: its mixed_device pool scales too, from mixed_replicas up to this (an HPA of its own, on the same metric
    # and target, as a second Deployment scales beside the first); None: mixed_replicas throughout.
    mixed_max_replicas: int | None = None
    autoscale_target: float | None = None
    autoscale_metric: str | None = None  # None: waiting
    cold_start_s: float | None = None
    autoscaler: str | None = None
    autoscale_interval_s: float | None = None
    autoscale_predictor: str | None = None  # an SLA planner's load forecast (LOAD_PREDICTORS); None: constant
    # Requests rejected on arrival where every entry replica is busy (sim/admission.py, Dynamo's busy thresholds): its
    # share of KV blocks in use over busy_kv_usage, or its prompt tokens to prefill over busy_prefill_tokens. None
    # (both): every request admitted.
    busy_kv_usage: float | None = None
    busy_prefill_tokens: int | None = None
    busy_waiting_requests: int | None = None  # or its requests waiting over this (llm-d's saturation detector)
    # What becomes of a request finding every entry replica busy: BUSY_ACTIONS, rejected (None) or queued at the
    # gateway until one is free (llm-d's flow control).
    busy_action: str | None = None
    # How many times a rejected request's client retries it, the first client_retry_s after (doubling, as OpenAI's
    # Python client backs off: sim/admission.py); None: rejected requests are gone, client_retry_s 0.5 s.
    client_retries: int | None = None
    client_retry_s: float | None = None
    # How each pool picks the replica a request joins, arrivals and hand-overs alike (sim/routers.py); None:
    # least_requests, the router of results stored before routers could be chosen.
    router: str | None = None
    # Disaggregated: when the decode pool's router picks a request's decode replica (DECODE_PICKS: once its prefill is
    # done, vLLM's proxies and Dynamo; at its arrival, llm-d); None: prefill_done, as results stored before it.
    decode_pick: str | None = None
    # How decode attention reads the shared prefix (PREFIX_ATTENTIONS); None: paged, the attention of results stored
    # before it could be chosen.
    prefix_attention: str | None = None
    # The share of each of a replica's devices' memory the engine may use for weights, activations and KV blocks
    # (vLLM's gpu_memory_utilization, 0.9 there by default); None: 1.0, every byte, as results stored before it.
    memory_utilization: float | None = None
    # Host memory (GB) each replica keeps the prefix blocks its KV cache evicts in, loading them back over the host link
    # when a request finds them (vLLM's KV offloading, SGLang's HiCache, LMCache's CPU tier); None: none.
    host_cache_GB: float | None = None
    # A KV store (GB) a pool's replicas share (Mooncake's store, LMCache's remote tier: sim/kv_store.py), keeping every
    # prefix block one computes for the others to fetch, over kv_store_GBps a device (None: its node link's NIC).
    kv_store_GB: float | None = None
    kv_store_GBps: float | None = None
    # Model-attention disaggregation (sim/attention_pool.py, Lamina): the serving (or decode) pool's attention runs on
    # attention_devices of attention_device per replica, which hold its KV cache, joined to the model's devices by
    # attention_link; each iteration split in up to attention_micro_batches that take turns. "" or "none": the model's
    # devices attend ("none" where a sweep lists it beside attention devices: its rows carry the attention columns).
    attention_device: str = ""
    attention_devices: int = 1
    attention_link: str | None = None  # None: LAMINA_LINK (a hybrid pool names its host's link: evaluate refuses None)
    attention_micro_batches: int = ATTENTION_MICRO_BATCHES
    # Which sequences the attention devices attend to (sim/attention_pool.py PLACEMENTS): every one (apart, Lamina), or
    # those whose KV the model's devices' memory does not hold, the model's devices attending to theirs (hybrid, APEX).
    attention_placement: str = "apart"
    # Multi-LoRA serving (sim/lora.py): each request runs one of lora_adapters adapters of rank lora_rank, drawn with
    # S-LoRA's power law of exponent lora_alpha (1: uniform), at most max_loras of them among the running sequences
    # (vLLM's --max-lora-rank and --max-loras, 16 and 1 by default). 0 adapters: LoRA off.
    lora_adapters: int = 0
    lora_rank: int = DEFAULT_RANK
    max_loras: int = DEFAULT_MAX_LORAS
    lora_alpha: float = UNIFORM_ALPHA

    def key_text(self, device: str, node_link: str = "") -> str:
        """The text a design point's key hashes (explore/design_point.py canonical): the dataclass repr, less the
        fields at a default that specs written before those fields existed lack, so stored results keep their keys; on
        `device`, the point's, and its `node_link` (the user's, '' for none), which a kv_link left out stands for."""
        shown = (f for f in fields(self) if not (f.name in KEY_NEUTRAL_DEFAULTS and getattr(self, f.name) == f.default)
                 and not (f.name in ATTENTION_FIELDS and not self.attends_apart))
        return (f"{type(self).__name__}("
                f"{', '.join(f'{f.name}={self._keyed(f.name, device, node_link)!r}' for f in shown)})")

    def _keyed(self, name: str, device: str, node_link: str) -> object:
        """A field's value as its key writes it: a kv_link left out as the link it stands for (a default given by name
        is the same design, and a point priced over another default is another), KV_LINK where none is read."""
        value = getattr(self, name)
        if name != "kv_link" or value is not None:
            return value
        return self.handoff_link(device, node_link) if self.disaggregated else KV_LINK

    def __post_init__(self) -> None:
        unset_requests = self.requests is None
        if unset_requests:  # a trace of fewer requests takes them all (below)
            object.__setattr__(self, "requests", DEFAULT_REQUESTS)
        if self.scheduler not in SCHEDULERS:
            raise InputError(f"scheduler: found {self.scheduler!r}, allowed: {', '.join(SCHEDULERS)}")
        if reason := lora_settings_error(self.lora_adapters, self.lora_rank, self.max_loras, self.lora_alpha):
            raise InputError(reason)
        if self.arrival not in ARRIVALS:
            raise InputError(f"arrival: found {self.arrival!r}, allowed: {', '.join(ARRIVALS)}")
        for name in ("prompt", "output"):
            lengths = getattr(self, name)
            if not callable(getattr(lengths, "sample", None)):
                example = f"Fixed(tokens={lengths})" if isinstance(lengths, int) else "Fixed(tokens=512)"
                raise InputError(f"{name}: found {lengths!r}, allowed: a length distribution of workloads/requests.py "
                                 f"(Fixed, Uniform, LogNormal, Empirical), e.g. {example}")
        if self.arrival == "trace" and not self.trace:
            raise InputError("arrival: found 'trace' without a trace, allowed: a trace to replay (trace: NAME)")
        if self.arrival != "trace" and self.rate_per_s is None and self.capacity is None:
            timed = " (or with arrival 'trace': the trace's own times)" if self.trace and \
                trace_requests(self.trace).has_arrivals else ""
            raise InputError(f"rate_per_s: found {self.arrival} arrivals without a rate, allowed: a rate > 0 req/s, "
                             f"or a search for the highest rate meeting an SLO with capacity (low and high req/s)"
                             f"{timed}")
        for name in ("requests", "max_seqs", "max_batched_tokens", "chunk_tokens", "block_tokens", "replicas",
                     "attention_devices", "attention_micro_batches"):
            value = getattr(self, name)
            if name == "replicas" and value == 0 and not isinstance(value, bool) and self.max_replicas is not None:
                continue  # a pool that scales to and from zero: _check_autoscaling reads it
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                zero = " (0 with max_replicas: a pool that scales to and from zero)" if name == "replicas" else ""
                raise InputError(f"{name}: found {value!r}, allowed: an integer >= 1{zero}")
        if self.attention_placement not in PLACEMENTS:
            raise InputError(f"attention_placement: found {self.attention_placement!r}, allowed: "
                             f"{', '.join(PLACEMENTS)}")
        if self.requests > MAX_REQUESTS:
            raise InputError(f"requests: found {self.requests:,}, allowed: at most {MAX_REQUESTS:,} (a run holds "
                             f"every request's record)")
        if self.prompt_batch_tokens is not None and (isinstance(self.prompt_batch_tokens, bool) or not isinstance(
                self.prompt_batch_tokens, int) or self.prompt_batch_tokens < 1):
            raise InputError(f"prompt_batch_tokens: found {self.prompt_batch_tokens!r}, allowed: an integer >= 1, or "
                             f"none (prompts batched up to max_batched_tokens)")
        if isinstance(self.long_prefill_tokens, bool) or not isinstance(self.long_prefill_tokens, int) \
                or self.long_prefill_tokens < 0:
            raise InputError(f"long_prefill_tokens: found {self.long_prefill_tokens!r}, allowed: an integer >= 0 (0: "
                             f"no cap, vLLM's default)")
        if self.max_decode_preemptions is not None:
            value = self.max_decode_preemptions
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"max_decode_preemptions: found {value!r}, allowed: an integer >= 0, or none (decodes "
                                 f"never sit out)")
        for name in ("rate_per_s", "cv", "slo_ttft_s", "slo_tpot_s", "slo_urgent_ttft_s", "slo_urgent_tpot_s",
                     "swap_GBps"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise InputError(f"{name}: found {value!r}, allowed: a finite number > 0")
        if self.capacity is not None:
            low, high = self.capacity
            if not 0 < low < high:
                raise InputError(f"capacity: found [{low:g}, {high:g}], allowed: [low, high] rates with "
                                 f"0 < low < high (req/s)")
            if self.slo() is None:
                raise InputError("capacity: found no SLO, allowed: a capacity search under an SLO (TTFT or TPOT "
                                 "limits, or slowdown limits: a sweep's slo:, explore run's --slo-ttft, --slo-tpot "
                                 "or --slo-slowdown)")
        if self.slo_slowdown is not None and not isinstance(self.slo_slowdown, SlowdownSLO):
            raise InputError(f"slo_slowdown: found {self.slo_slowdown!r}, allowed: a SlowdownSLO (sim/slowdown.py) "
                             f"or none")
        if self.router is not None and self.router not in ROUTERS:
            raise InputError(f"router: found {self.router!r}, allowed: {', '.join(ROUTERS)}")
        if self.decode_pick is not None and (self.decode_pick not in DECODE_PICKS or not self.disaggregated):
            raise InputError(f"decode_pick: found {self.decode_pick!r} with prefill_replicas {self.prefill_replicas}, "
                             f"allowed: {', '.join(DECODE_PICKS)} with a prefill pool (prefill_replicas >= 1), or "
                             f"left out")
        if self.prefix_attention is not None and self.prefix_attention not in PREFIX_ATTENTIONS:
            raise InputError(f"prefix_attention: found {self.prefix_attention!r}, allowed: "
                             f"{', '.join(PREFIX_ATTENTIONS)}")
        if self.memory_utilization is not None and not (
                isinstance(self.memory_utilization, int | float) and not isinstance(self.memory_utilization, bool)
                and 0 < self.memory_utilization <= 1):  # NaN fails the comparison
            raise InputError(f"memory_utilization: found {self.memory_utilization!r}, allowed: a fraction in (0, 1] "
                             f"(the share of each device's memory the engine may use; vLLM's default 0.9)")
        for name, allowed in (("host_cache_GB", "gigabytes >= 0 (0: no host cache)"),
                              ("kv_store_GB", "gigabytes >= 0 (0: no KV store)")):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and not isinstance(value, bool)
                                          and math.isfinite(value) and value >= 0):
                raise InputError(f"{name}: found {value!r}, allowed: {allowed}")
        if self.kv_store_GBps is not None and not (
                isinstance(self.kv_store_GBps, int | float) and not isinstance(self.kv_store_GBps, bool)
                and math.isfinite(self.kv_store_GBps) and self.kv_store_GBps > 0):
            raise InputError(f"kv_store_GBps: found {self.kv_store_GBps!r}, allowed: GB/s > 0")
        if self.preemption not in PREEMPTIONS:
            raise InputError(f"preemption: found {self.preemption!r}, allowed: {', '.join(PREEMPTIONS)}")
        if self.prefill_replicas < 0:
            raise InputError(f"prefill_replicas: found {self.prefill_replicas}, allowed: an integer >= 0 "
                             f"(0: no separate prefill pool)")
        if isinstance(self.mixed_replicas, bool) or not isinstance(self.mixed_replicas, int) or self.mixed_replicas < 0:
            raise InputError(f"mixed_replicas: found {self.mixed_replicas!r}, allowed: an integer >= 0 (0: the point's "
                             f"replicas alone)")
        if not self.mixed and self.mixed_device:
            object.__setattr__(self, "mixed_device", "")  # read beside mixed replicas only: one design whatever it says
        for name, present in (("prefill_node_link", self.disaggregated), ("mixed_node_link", self.mixed)):
            if not present and getattr(self, name):
                object.__setattr__(self, name, "")  # a pool the point lacks has no nodes to join
        if self.mixed and not self.mixed_device:
            raise InputError(f"mixed_device: found '' with mixed_replicas {self.mixed_replicas}, allowed: a device "
                             f"(preset or YAML) for the mixed replicas")
        self._check_autoscaling()
        self._check_admission()
        built = self.built_replicas()
        if sum(built.values()) > MAX_REPLICAS_BUILT:
            name = max(built, key=built.get)
            raise InputError(f"{name}: found {built[name]:,}, allowed: at most {MAX_REPLICAS_BUILT:,} replicas in all "
                             f"the pools (a run builds every replica it may hold)")
        self._check_rate_profile()
        if self.prefix_tokens < 0:
            raise InputError(f"prefix_tokens: found {self.prefix_tokens}, allowed: an integer >= 0")
        if self.prefix_groups is not None and (isinstance(self.prefix_groups, bool)
                                               or not isinstance(self.prefix_groups, int) or self.prefix_groups < 1):
            raise InputError(f"prefix_groups: found {self.prefix_groups!r}, allowed: an integer >= 1")
        if self.queue_policy is not None and self.queue_policy not in QUEUE_POLICIES:
            raise InputError(f"queue_policy: found {self.queue_policy!r}, allowed: {', '.join(QUEUE_POLICIES)}")
        if self.priority_fraction is not None:
            if not (isinstance(self.priority_fraction, int | float) and not isinstance(self.priority_fraction, bool)
                    and 0 <= self.priority_fraction <= 1):  # NaN fails the comparison
                raise InputError(f"priority_fraction: found {self.priority_fraction!r}, allowed: a fraction in [0, 1] "
                                 f"(the share of requests drawn urgent)")
            if self.traced_priority:
                raise InputError(f"priority_fraction: found {self.priority_fraction:g} with trace {self.trace!r}, "
                                 f"whose priority column gives each request's priority, allowed: left out")
        if self.prefix_tokens and (self.traced_sharing or self.traced_tree):
            given = "hash_ids give" if self.traced_tree else "shared_tokens column gives"
            raise InputError(f"prefix_tokens: found {self.prefix_tokens} with trace {self.trace!r}, whose "
                             f"{given} each request's shared prefix, allowed: 0")
        if self.prefix_groups is not None and self.trace and (trace_requests(self.trace).prefix_group is not None
                                                              or self.traced_tree):
            given = "hash_ids give each request's prefix" if self.traced_tree else \
                "prefix_group column gives each request's group"
            raise InputError(f"prefix_groups: found {self.prefix_groups} with trace {self.trace!r}, whose "
                             f"{given}, allowed: left out")
        if self.conversation_turns is not None and (isinstance(self.conversation_turns, bool) or not isinstance(
                self.conversation_turns, int) or not 1 <= self.conversation_turns <= MAX_REQUESTS):
            raise InputError(f"conversation_turns: found {self.conversation_turns!r}, allowed: an integer from 1 to "
                             f"{MAX_REQUESTS:,} (each turn is a request)")
        if self.think_s is not None and not (isinstance(self.think_s, int | float) and not isinstance(
                self.think_s, bool) and math.isfinite(self.think_s) and self.think_s >= 0):
            raise InputError(f"think_s: found {self.think_s!r}, allowed: seconds >= 0")
        if self.think_cv is not None and not (isinstance(self.think_cv, int | float) and not isinstance(
                self.think_cv, bool) and math.isfinite(self.think_cv) and self.think_cv >= 0):
            raise InputError(f"think_cv: found {self.think_cv!r}, allowed: a coefficient of variation >= 0")
        if not self.conversations and self.think_s is not None:
            object.__setattr__(self, "think_s", None)  # read by conversations only: one design whatever it says
        if not (self.conversations and self.think_s) and self.think_cv is not None:
            object.__setattr__(self, "think_cv", None)  # read where turns think: one design whatever it says
        if self.conversations or self.rooted:
            for name, conflict, why in (
                    ("trace", bool(self.trace), "none (conversations draw their messages and answers from the prompt "
                     "and output distributions)"),
                    ("prefix_groups", self.prefix_groups is not None and not self.rooted,
                     "left out (each conversation is a group), or with prefix_tokens: the system prompts each "
                     "conversation draws one of")):
                if conflict:
                    raise InputError(f"{name}: found {getattr(self, name)!r} with conversation_turns "
                                     f"{self.conversation_turns}, allowed: {why}")
        if self.prefix_groups is not None and self.prefix_groups > 1 and not self.prefix_tokens:
            raise InputError(f"prefix_tokens: found 0 with prefix_groups {self.prefix_groups}, allowed: a length > 0 "
                             f"(each group's prefix)")
        if self.arrival == "trace" and not trace_requests(self.trace).has_arrivals:
            raise InputError(f"arrival: found 'trace' with trace {self.trace!r}, which has no arrival times (a column "
                             f"{' or '.join(ARRIVAL_COLUMNS)}), allowed: poisson or gamma arrivals at a rate over its "
                             f"lengths")
        if self.trace and self.requests > len(trace := trace_requests(self.trace)):
            if not unset_requests:
                raise InputError(f"requests: found {self.requests}, allowed: at most {len(trace)}, the requests in "
                                 f"trace {self.trace!r} (left out: all of them)")
            object.__setattr__(self, "requests", len(trace))
        if self.prefix_tokens:
            # The requests' lengths are the same at every rate: any rate gives them.
            shortest = int(self.request_set(rate_per_s=1.0).prompt_tokens.min())
            where = f"trace {self.trace!r}" if self.trace else f"prompts {self.prompt}"
            if self.prefix_tokens > shortest:
                raise InputError(f"prefix_tokens: found {self.prefix_tokens}, allowed: at most {shortest} tokens, the "
                                 f"shortest prompt of the {self.requests} requests ({where}): a shared prefix is part "
                                 f"of every prompt")

    def check_context(self, max_tokens: int, model: str) -> None:
        """A KV block must fit in the model's context (a larger one could never be filled), and the shared prefix
        in every prompt once the requests are cut to that context (RequestSet.clipped_to_context)."""
        if self.block_tokens > max_tokens:
            raise InputError(f"block_tokens: found {self.block_tokens}, allowed: at most {model}'s context of "
                             f"{max_tokens} tokens")
        if self.prefix_tokens:
            requests, clipped = self.request_set(rate_per_s=1.0).clipped_to_context(max_tokens)
            shortest = int(requests.prompt_tokens.min())
            if clipped and self.prefix_tokens > shortest:
                raise InputError(f"prefix_tokens: found {self.prefix_tokens}, allowed: at most {shortest} tokens, the "
                                 f"shortest prompt of the {self.requests} requests once cut to {model}'s context of "
                                 f"{max_tokens:,} tokens (max_position_embeddings): a shared prefix is part of every "
                                 f"prompt")

    def _check_rate_profile(self) -> None:
        if self.rate_profile is None:
            return
        phases = self.rate_profile
        if not (isinstance(phases, tuple) and phases and all(
                isinstance(phase, tuple) and len(phase) == 2 and all(
                    isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in phase)
                and phase[0] > 0 and phase[1] >= 0 for phase in phases) and any(m > 0 for _, m in phases)):
            try:
                shown = "[" + ", ".join(f"[{seconds:g}, {multiplier:g}]" for seconds, multiplier in phases) + "]"
            except (TypeError, ValueError):
                shown = repr(phases)
            raise InputError(f"rate_profile: found {shown}, allowed: phases [duration_s > 0, multiplier >= 0], some "
                             f"multiplier > 0")
        if self.arrival == "trace":
            raise InputError("rate_profile: found phases with arrival 'trace', allowed: poisson or gamma arrivals (a "
                             "trace replayed at its own times keeps its own rate)")

    def _check_autoscaling(self) -> None:
        if self.prefill_max_replicas is not None and not self.disaggregated:
            raise InputError(f"prefill_max_replicas: found {self.prefill_max_replicas!r} with prefill_replicas 0, "
                             f"allowed: with a prefill pool (prefill_replicas >= 1), or left out")
        if self.mixed_max_replicas is not None and not self.mixed:
            raise InputError(f"mixed_max_replicas: found {self.mixed_max_replicas!r} with mixed_replicas 0, allowed: "
                             f"with a fleet (mixed_replicas >= 1), or left out")
        if not self.scaling_asked:
            return
        scaled = [(most, getattr(self, most), (least, getattr(self, least))) for most, least in SCALED_POOLS
                  if getattr(self, most) is not None]
        for name, value, (floor, least) in scaled:
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise InputError(f"{name}: found {value!r}, allowed: an integer >= {floor} ({least}), the least the "
                                 f"pool scales down to")
        name, value, _ = scaled[0]
        if self.autoscaler is not None and self.autoscaler not in AUTOSCALERS:
            raise InputError(f"autoscaler: found {self.autoscaler!r}, allowed: {', '.join(AUTOSCALERS)}")
        kind = AUTOSCALERS[self.autoscaler or "hpa"]
        planner = not kind.on_metric
        if planner:
            for name_ in ("autoscale_target", "autoscale_metric"):
                if getattr(self, name_) is not None:
                    raise InputError(f"{name_}: found {getattr(self, name_)!r} with autoscaler {kind.name!r}, "
                                     f"allowed: left out (the planner scales on the SLO's limits)")
            for limit in kind.slo_limits:
                if getattr(self, f"slo_{limit}") is None:
                    raise InputError(f"slo_{limit}: found none with autoscaler {kind.name!r}, allowed: the SLO's limit "
                                     f"in seconds > 0 that the planner holds each replica to")
        # From zero up to one replica KEDA alone scales (the HPA between one and one never does): no target is read.
        keda_only = self.replicas == 0 and self.max_replicas == 1
        for name_, value_, allowed in (
                ("autoscale_target", None if planner or keda_only else self.autoscale_target,
                 "a number > 0 of requests per replica to scale on"),
                ("cold_start_s", self.cold_start_s, "seconds >= 0, or none (the weights' read from a local SSD)"),
                ("autoscale_interval_s", self.autoscale_interval_s,
                 "seconds > 0, or none (the autoscaler's own: 15 s for hpa, 180 s for sla_planner, 5 s for "
                 "load_planner and sla_load_planner)")):
            if value_ is None and (name_ != "autoscale_target" or planner or keda_only):
                continue
            if not (isinstance(value_, int | float) and not isinstance(value_, bool) and math.isfinite(value_)
                    and (value_ >= 0 if name_ == "cold_start_s" else value_ > 0)):
                shown = "none" if value_ is None else repr(value_)
                raise InputError(f"{name_}: found {shown} with {name} {value}, allowed: {allowed}")
        if self.autoscale_predictor is not None and self.autoscale_predictor not in LOAD_PREDICTORS:
            raise InputError(f"autoscale_predictor: found {self.autoscale_predictor!r}, allowed: "
                             f"{', '.join(LOAD_PREDICTORS)}")
        if self.autoscale_predictor is not None and not kind.forecasts:
            raise InputError(f"autoscale_predictor: found {self.autoscale_predictor!r} with autoscaler {kind.name!r}, "
                             f"allowed: left out (only the SLA planner forecasts the load: sla_planner, "
                             f"sla_load_planner)")
        if self.autoscale_metric is not None and self.autoscale_metric not in AUTOSCALE_METRICS:
            raise InputError(f"autoscale_metric: found {self.autoscale_metric!r}, allowed: "
                             f"{', '.join(AUTOSCALE_METRICS)}")

    def _check_admission(self) -> None:
        for name, value, ok, allowed in (
                ("busy_kv_usage", self.busy_kv_usage,
                 lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0.0 < v <= 1.0,
                 "a share of a replica's KV blocks in (0, 1]"),
                ("busy_prefill_tokens", self.busy_prefill_tokens,
                 lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "prompt tokens >= 0"),
                ("busy_waiting_requests", self.busy_waiting_requests,
                 lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "requests >= 0")):
            if value is not None and not ok(value):
                raise InputError(f"{name}: found {value!r}, allowed: {allowed}, or none (every request admitted)")
        if self.busy_action is not None and self.busy_action not in BUSY_ACTIONS:
            raise InputError(f"busy_action: found {self.busy_action!r}, allowed: {', '.join(BUSY_ACTIONS)}")
        for name, value, ok, allowed in (
                ("client_retries", self.client_retries, lambda v: isinstance(v, int) and not isinstance(v, bool)
                 and v >= 0, "retries >= 0"),
                ("client_retry_s", self.client_retry_s, lambda v: isinstance(v, int | float)
                 and not isinstance(v, bool) and v > 0, "seconds > 0")):
            if value is not None and not ok(value):
                raise InputError(f"{name}: found {value!r}, allowed: {allowed}, or none")

    def unjudged(self) -> str:
        """Why a run of this spec cannot answer what it asks, as one line naming the key ('' where it can): a fleet of
        mixed devices beside attention devices, several prefix groups beside a cascade or a hybrid
        attention placement that holds one (_groups_unjudged), an autoscaled pool beside what its scaling does not model
        (_scaling_unjudged), a gateway rejecting requests beside a
        slowdown SLO (a rejected request has no slowdown to limit), or a capacity search
        of a pool scaled from zero (at every rate the first requests wait for KEDA's first poll and a cold start, so
        the search would find the run's warm-up, not the pool's capacity). `explore run` refuses such a spec; a sweep
        records its point unevaluated, this its infeasible_reason (explore/evaluate.py), so that a grid crossing it
        with points that can run still runs them."""
        if self.mixed and self.attends_apart:  # not modeled: a fleet's replicas each attend on their own devices
            return (f"attention_device: found {self.attention_device!r} with mixed_replicas {self.mixed_replicas}, "
                    f"allowed: none (a fleet of mixed devices attends itself)")
        if conflict := self._groups_unjudged() or self._scaling_unjudged():
            return conflict
        admission = self.admission()
        if admission is not None and not admission.hold and self.slo_slowdown is not None:
            name = next(name for name in BUSY_THRESHOLDS if getattr(self, name) is not None)
            return (f"{name}: found {getattr(self, name)!r} with slo_slowdown set, allowed: left out beside a slowdown "
                    f"SLO (a rejected request has no slowdown to limit), or busy_action 'queue'")
        if self.capacity is not None and self.replicas == 0:
            return (f"replicas: found 0 with capacity set, allowed: an integer >= 1 (from zero every rate's first "
                    f"requests wait for KEDA's first {KEDA_POLLING_S:g} s poll and a cold start, so the search would "
                    f"find the run's warm-up; under a sustained load the pool never returns to zero: search from 1)")
        return ""

    def _scaling_unjudged(self) -> str:
        """Why an autoscaled pool is not modeled beside this spec's other settings ('' where it is): a pool scaled from
        zero beside a planner, a prefill pool or a fleet; a fleet beside a planner; a scaled decode pool beside
        decode_pick 'arrival'. A fleet beside a prefill pool scales as a fleet does: an HPA of each pool, the prefill
        pool's and each decode pool's."""
        if not self.scaling_asked:
            return ""
        scaled = [(most, getattr(self, most)) for most, _ in SCALED_POOLS if getattr(self, most) is not None]
        decode_scaled = [name for name, _ in scaled if name != "prefill_max_replicas"]
        if self.decode_pick == "arrival" and decode_scaled:  # not modeled: a pick drained before its prefill is done
            return (f"decode_pick: found 'arrival' with {decode_scaled[0]} {getattr(self, decode_scaled[0])}, allowed: "
                    f"prefill_done (a decode replica picked at arrival may be drained before the prefill is done)")
        kind = AUTOSCALERS[self.autoscaler or "hpa"]
        for name, conflict, allowed in (
                ("autoscaler", not kind.scales_to_zero, "hpa (Dynamo's planners keep a replica at the least)"),
                ("prefill_replicas", self.disaggregated, "0 (a decode pool keeps a replica to hand requests to)"),
                ("mixed_replicas", self.mixed, "0 (a fleet's gateway always has a replica to send to)")):
            if self.replicas == 0 and conflict:
                return f"{name}: found {getattr(self, name)!r} with replicas 0, allowed: {allowed}"
        # Dynamo's planners size one pool of each role, its prefill and decode workers' replica counts (Dynamo's
        # docs/pages/design-docs/planner-design.md, ai-dynamo/dynamo as maljazaery/dynamo holds it): not a fleet's.
        if self.mixed and kind.name != "hpa":
            return (f"mixed_replicas: found {self.mixed_replicas} with {scaled[0][0]} {scaled[0][1]}, allowed: 0 "
                    f"(Dynamo's planners scale one kind of worker, or one prefill and one decode pool; a fleet's pools "
                    f"scale by an HPA each)")
        return ""

    def _groups_unjudged(self) -> str:
        """Why several prefix groups are not modeled beside this spec's attention ('' where they are): a cascade
        beside conversations without a system prompt or behind a prefill pool, a hybrid placement's shared prefix."""
        if not ((self.prefix_tokens or self.conversations or self.traced_sharing) and self.groups > 1):
            return ""
        given = (f"prefix_groups {self.groups}" if self.prefix_groups else
                 f"conversation_turns {self.conversation_turns}" if self.conversations else
                 f"{self.groups} prefix groups (trace {self.trace!r})")
        for name, conflict, why in (
                ("prefix_attention", self.cascade and self.conversations and not self.rooted, "paged (each "
                 "conversation's context is one sequence's at a time: no prefix to read once for several), or "
                 "cascade with prefix_tokens, a system prompt every conversation starts with"),
                ("prefix_attention", self.cascade and self.disaggregated, "paged (behind a prefill pool the decode "
                 "pool receives each request's whole KV where there are several prefixes, each its own copy: "
                 "none to read once)"),
                ("attention_placement", self.attends_apart and self.attention_placement == "hybrid",
                 "apart (a hybrid pool's model's devices hold one shared prefix: where several groups' prefixes "
                 "lie is not modeled)")):
            if conflict:
                return f"{name}: found {getattr(self, name)!r} with {given}, allowed: {why}"
        return ""

    def admission(self) -> Admission | None:
        """The gateway's busy thresholds and what it does with a request finding every replica busy
        (sim/admission.py); None: every request dispatched at once."""
        if all(getattr(self, name) is None for name in BUSY_THRESHOLDS):
            return None
        hold = self.busy_action == "queue"
        return Admission(kv_usage=self.busy_kv_usage, prefill_tokens=self.busy_prefill_tokens,
                         waiting_requests=self.busy_waiting_requests, hold=hold,
                         retries=0 if hold else self.client_retries or 0,
                         retry_s=self.client_retry_s or CLIENT_RETRY_S)

    @property
    def scaling_asked(self) -> bool:
        """Whether some pool's most replicas is set (SCALED_POOLS): that pool may scale, and the results have the
        autoscale columns."""
        return any(getattr(self, most) is not None for most, _ in SCALED_POOLS)

    def built_replicas(self) -> dict[str, int]:
        """The replicas a run builds of each pool, by the knob giving them (SCALED_POOLS): its most where set, else
        its least."""
        return {most if getattr(self, most) is not None else least: getattr(self, most) or getattr(self, least)
                for most, least in SCALED_POOLS}

    def autoscaling(self, role: str = "serve") -> Autoscaling | None:
        """How the pool of `role` scales ('serve' or 'decode': max_replicas; 'prefill': prefill_max_replicas; 'mixed', a
        fleet's other device's: mixed_max_replicas; None: it does not); a cold start of None is the caller's to
        price."""
        most = {"prefill": self.prefill_max_replicas, "mixed": self.mixed_max_replicas}.get(role, self.max_replicas)
        if most is None:
            return None
        return Autoscaling(max_replicas=most, policy=self.autoscaler or "hpa", target=self.autoscale_target,
                           metric=self.autoscale_metric or AUTOSCALE_METRICS[0], cold_start_s=self.cold_start_s or 0.0,
                           interval_s=self.autoscale_interval_s, ttft_s=self.slo_ttft_s, tpot_s=self.slo_tpot_s,
                           predictor=self.autoscale_predictor or "constant")

    @property
    def micro_batches_unread(self) -> bool:
        """Whether the run reads no attention_micro_batches: a hybrid placement runs each iteration as one batch
        (APEX's asynchronous overlap), as the count left out or 1 asks (a sweep's point at any other is not run)."""
        return self.attention_placement == "hybrid" and self.attention_micro_batches in (ATTENTION_MICRO_BATCHES, 1)

    def columns(self) -> dict[str, object]:
        """The knobs a results row shows (serving_ prefixed where the name alone is ambiguous)."""
        return {"scheduler": self.scheduler, "arrival": self.arrival,
                "rate_per_s": None if self.capacity else self.rate_per_s, "cv": self.cv,
                "requests": self.requests, "max_seqs": self.max_seqs, "max_batched_tokens": self.max_batched_tokens,
                "chunk_tokens": self.chunk_tokens, "block_tokens": self.block_tokens,
                "prefix_tokens": self.prefix_tokens, "preemption": self.preemption, "replicas": self.replicas,
                "prefill_replicas": self.prefill_replicas, "prefill_device": self.prefill_device or None,
                # A column only where set (explore/knobs.py): results written before it keep their columns.
                **({} if self.prompt_batch_tokens is None else {"prompt_batch_tokens": self.prompt_batch_tokens}),
                # Where it is read (0, no cap, included) or set.
                **({} if not self.long_prefill_tokens and self.scheduler != "chunked"
                   else {"long_prefill_tokens": self.long_prefill_tokens}),
                **({} if self.router is None else {"router": self.router}),
                **({} if self.decode_pick is None else {"decode_pick": self.decode_pick}),
                **({} if self.prefix_attention is None else {"prefix_attention": self.prefix_attention}),
                **({} if self.prefix_groups is None else {"prefix_groups": self.prefix_groups}),
                **({} if self.queue_policy is None else {"queue_policy": self.queue_policy}),
                **({} if self.priority_fraction is None else {"priority_fraction": self.priority_fraction}),
                **({} if not self.mixed_device else {"mixed_device": self.mixed_device,
                                                     "mixed_replicas": self.mixed_replicas}),
                **({} if self.max_replicas is None and self.prefill_max_replicas is None
                   and self.mixed_max_replicas is None else {
                    "max_replicas": self.max_replicas, "autoscale_target": self.autoscale_target,
                    "autoscale_metric": self.autoscale_metric or AUTOSCALE_METRICS[0]
                    if on_metric(self.autoscaler) else None,
                    "cold_start_s": self.cold_start_s}),
                **({} if self.prefill_max_replicas is None else {"prefill_max_replicas": self.prefill_max_replicas}),
                **({} if self.mixed_max_replicas is None else {"mixed_max_replicas": self.mixed_max_replicas}),
                **({} if self.autoscaler is None else {"autoscaler": self.autoscaler}),
                **({} if self.autoscale_interval_s is None else {"autoscale_interval_s": self.autoscale_interval_s}),
                **({} if self.autoscale_predictor is None else {"autoscale_predictor": self.autoscale_predictor}),
                **({} if self.busy_kv_usage is None else {"busy_kv_usage": self.busy_kv_usage}),
                **({} if self.busy_prefill_tokens is None else {"busy_prefill_tokens": self.busy_prefill_tokens}),
                **({} if self.busy_waiting_requests is None else {"busy_waiting_requests": self.busy_waiting_requests}),
                **({} if self.busy_action is None else {"busy_action": self.busy_action}),
                **({} if self.client_retries is None else {"client_retries": self.client_retries}),
                **({} if self.client_retry_s is None else {"client_retry_s": self.client_retry_s}),
                **({} if self.conversation_turns is None else {"conversation_turns": self.conversation_turns}),
                # think_s beside conversation_turns, empty where one turn reads none.
                **({} if self.conversation_turns is None and self.think_s is None else {"think_s": self.think_s}),
                **({} if self.think_cv is None else {"think_cv": self.think_cv}),
                **({} if self.max_decode_preemptions is None
                   else {"max_decode_preemptions": self.max_decode_preemptions}),
                **({} if self.memory_utilization is None else {"memory_utilization": self.memory_utilization}),
                **({} if self.host_cache_GB is None else {"host_cache_GB": self.host_cache_GB}),
                **({} if self.kv_store_GB is None else {"kv_store_GB": self.kv_store_GB}),
                **({} if self.kv_store_GBps is None else {"kv_store_GBps": self.kv_store_GBps}),
                **{name: getattr(self, name) for name in ("prefill_node_link", "mixed_node_link")
                   if getattr(self, name)},
                # Where a sweep names attention devices: the settings, none where the model's devices attend (and no
                # micro-batches where a hybrid iteration runs as one batch; a point not run for its count shows it).
                **({} if not self.attention_device else {
                    name: getattr(self, name) if self.attends_apart else None for name in ATTENTION_FIELDS}
                   | {"attention_device": self.attention_device}
                   | ({"attention_link": self.pool_link} if self.attends_apart else {})
                   | ({"attention_micro_batches": None} if self.micro_batches_unread else {})),
                **({} if not self.lora_adapters else {name: getattr(self, name) for name in LORA_FIELDS})}

    def pool_node_link(self, kind: str, node_link: str = "") -> str:
        """The node link the user names for a pool of `kind` (prefill, mixed; any other: the point's own pool): its own
        (prefill_node_link, mixed_node_link), else the point's `node_link`; '' where neither is set (the pool's devices'
        own: hw_models/link.py default_node_link)."""
        return {"prefill": self.prefill_node_link, "mixed": self.mixed_node_link}.get(kind, "") or node_link

    def handoff_links(self, device: str, node_link: str = "", kind: str = "decode") -> tuple[str, ...]:
        """The links each request's KV crosses from the prefill pool to the decode pool on `device` (the point's, whose
        node link is `node_link`, '' for the device's own), or of `kind` 'mixed' to a fleet's mixed replicas on
        mixed_device: kv_link, else the two pools' node links (pool_node_link, else hw_models/link.py
        default_node_link: the fabric their nodes have), as the KV leaves one device's port for the other's; where
        they differ, crossing_links (so a pool on a slower link never hands over faster)."""
        if self.kv_link:
            return (self.kv_link,)
        prefill = self.pool_node_link("prefill", node_link) or default_node_link(self.prefill_device or device)
        decode = self.pool_node_link(kind, node_link) or default_node_link(
            self.mixed_device if kind == "mixed" else device)
        return crossing_links(prefill, decode)

    def handoff_link(self, device: str, node_link: str = "") -> str:
        """handoff_links in words: 'infiniband-hdr', or 'infiniband-hdr and roce-400g'."""
        return " and ".join(self.handoff_links(device, node_link))

    @property
    def pool_link(self) -> str:
        """The link to the attention devices: attention_link, else Lamina's."""
        return self.attention_link or LAMINA_LINK

    def attention_crossing(self, device: str, attention_device: str, model_devices: int,
                           node_link: str = "") -> tuple[str, ...]:
        """The links a replica's `model_devices` devices on `device` send to its attention devices on
        `attention_device` (preset names) over: pool_link, or where one domain of it does not hold them all
        (attention_spans_nodes), the fabric between their nodes: each end's node link (pool_node_link, else
        hw_models/link.py default_node_link: HDR for A100s, NDR otherwise), where they differ crossing_links."""
        if not attention_spans_nodes({name: getattr(self, name) for name in ATTENTION_FIELDS}, model_devices):
            return (self.pool_link,)
        return crossing_links(*self.attention_node_links(device, attention_device, node_link))

    def attention_node_links(self, device: str, attention_device: str, node_link: str = "") -> tuple[str, str]:
        """The node links of a replica's devices on `device` and of its attention devices on `attention_device` (preset
        names): each pool_node_link, else its devices' own (hw_models/link.py default_node_link)."""
        return (self.pool_node_link("", node_link) or default_node_link(device),
                self.pool_node_link("attention", node_link) or default_node_link(attention_device))

    @property
    def attends_apart(self) -> bool:
        """Whether attention runs on devices of its own (attention_device names one)."""
        return self.attention_device not in ("", "none")

    @property
    def memory_share(self) -> float:
        """The share of each device's memory the engine may use (memory_utilization; unset, every byte)."""
        return 1.0 if self.memory_utilization is None else float(self.memory_utilization)

    @property
    def traced_sharing(self) -> bool:
        """Whether the requests come from a trace that gives each its shared tokens (shared_tokens)."""
        return bool(self.trace) and trace_requests(self.trace).shared_tokens is not None

    @property
    def traced_priority(self) -> bool:
        """Whether the requests come from a trace that gives each its priority (a priority column)."""
        return bool(self.trace) and trace_requests(self.trace).priority is not None

    @property
    def prioritized(self) -> bool:
        """Whether requests may differ in priority: some drawn urgent, or a trace's priority column."""
        return self.priority_fraction is not None or self.traced_priority

    @property
    def traced_tree(self) -> bool:
        """Whether the requests come from a trace whose hash ids name their prompts' blocks (a prefix tree)."""
        return bool(self.trace) and trace_requests(self.trace).prefix_nodes is not None

    @property
    def traced_turns(self) -> bool:
        """Whether the requests come from a trace whose after_previous_s gives a conversation's later turn."""
        return bool(self.trace) and (after := trace_requests(self.trace).after_previous_s) is not None \
            and not np.isnan(after).all()

    @property
    def conversations(self) -> bool:
        """Whether the requests are conversations of several turns."""
        return (self.conversation_turns or 1) > 1

    @property
    def groups(self) -> int:
        """The prefixes the requests start with: prefix_groups, else one a conversation, else a trace's prefix_group
        column's distinct groups, else the one every request shares."""
        if self.conversations or self.rooted:
            return math.ceil(self.requests / self.conversation_turns)
        if self.prefix_groups is not None:
            return self.prefix_groups
        if self.trace and (given := trace_requests(self.trace).head(self.requests).prefix_group) is not None:
            return len(np.unique(given))
        return 1

    @property
    def system_prompts(self) -> int:
        """The system prompts conversations start with, each drawing one: prefix_groups where rooted, else 1."""
        return (self.prefix_groups or 1) if self.rooted else 1

    @property
    def rooted(self) -> bool:
        """Whether every group's cached chain starts with one shared prefix: the system prompt in front of every
        conversation's first message (conversation_turns set, one turn included, beside prefix_tokens)."""
        return self.conversation_turns is not None and self.prefix_tokens > 0

    @property
    def cascade(self) -> bool:
        """Whether decode attention reads the shared prefix once for all sequences."""
        return self.prefix_attention == "cascade"

    @property
    def mixed(self) -> bool:
        """Whether replicas of another device serve beside the point's (a heterogeneous fleet)."""
        return self.mixed_replicas > 0

    @property
    def disaggregated(self) -> bool:
        return self.prefill_replicas > 0

    def limits(self) -> SchedulerLimits:
        return SchedulerLimits(max_seqs=self.max_seqs, max_batched_tokens=self.max_batched_tokens,
                               chunk_tokens=self.chunk_tokens, preemption=self.preemption,
                               prompt_batch_tokens=self.prompt_batch_tokens,
                               long_prefill_tokens=self.long_prefill_tokens,
                               max_decode_preemptions=self.max_decode_preemptions,
                               queue_policy=self.queue_policy or "fcfs",
                               max_loras=self.max_loras if self.lora_adapters else 0)

    def slo(self) -> SLO | None:
        limits = (self.slo_ttft_s, self.slo_tpot_s, self.slo_urgent_ttft_s, self.slo_urgent_tpot_s, self.slo_slowdown)
        if all(limit is None for limit in limits):
            return None
        return SLO(ttft_s=self.slo_ttft_s, tpot_s=self.slo_tpot_s, attainment=self.slo_attainment,
                   slowdown=self.slo_slowdown, urgent_ttft_s=self.slo_urgent_ttft_s,
                   urgent_tpot_s=self.slo_urgent_tpot_s)

    def request_set(self, rate_per_s: float | None = None) -> RequestSet:
        """The requests, at `rate_per_s` instead of the spec's rate when given (same lengths and priorities either
        way), priority_fraction of them drawn urgent where it is set."""
        requests = self._requests(rate_per_s)
        if self.lora_adapters:
            requests = requests.with_adapters(self.lora_adapters, self.lora_alpha, seed=self.seed)
        return requests if self.priority_fraction is None else requests.with_urgent(self.priority_fraction,
                                                                                      seed=self.seed)

    def _requests(self, rate_per_s: float | None) -> RequestSet:
        rate = rate_per_s if rate_per_s is not None else self.rate_per_s
        if self.trace:
            base = trace_requests(self.trace).head(self.requests)
            if self.arrival == "trace":
                return base if rate is None else base.scaled_to_rate(rate)
            return base.with_arrivals(self._arrivals(rate), seed=self.seed)
        if self.conversations or self.rooted:  # first turns at rate / turns: every turn of each, requests at the rate
            return sample_conversations(arrivals=self._arrivals(rate / self.conversation_turns), prompt=self.prompt,
                                        output=self.output, count=self.requests, turns=self.conversation_turns,
                                        think_s=self.think_s or 0.0, seed=self.seed, system_tokens=self.prefix_tokens,
                                        think_cv=self.think_cv or 0.0, system_groups=self.system_prompts)
        return sample_requests(arrivals=self._arrivals(rate), prompt=self.prompt, output=self.output,
                               count=self.requests, seed=self.seed)

    def _arrivals(self, rate: float):
        base = Gamma(rate_per_s=rate, cv=self.cv) if self.arrival == "gamma" else Poisson(rate_per_s=rate)
        return base if self.rate_profile is None else Phased(base=base, phases=self.rate_profile)



@cache
def trace_requests(name: str) -> RequestSet:
    """A trace read once per process (a sweep replays it at many points)."""
    return read_request_trace(resolve_trace(name))
