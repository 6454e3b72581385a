"""The sweep file's serving: and parallel: sections: their schema, knobs and the checks they need."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StrictFloat, StrictInt, field_validator, model_serializer, model_validator
from pydantic_core import PydanticCustomError

from explore.knobs import KNOBS, knobs
from explore.rows import is_feasible, normalize_row
from explore.run_support import link_what_ifs, system_nodes
from explore.schema import PositiveInt, PositiveNumber, Strict, TokenLength, as_list, finite, knob_type, one_or_more
from explore.serving_settings import (
    CLIENT_RETRIES,
    GATEWAY_KNOBS,
    ROUTED,
    SCHEDULER_SETTINGS,
    KeyNames,
    data_parallel_ranks,
    idle_setting,
    key_of,
    unread,
)
from hw_models.link import has_default_link, load_link_model
from hw_models.registry import load_device
from kernels.parallel import check_pipeline_parallel, check_tensor_parallel, spread_refusal
from sim.autoscalers import forecasts, on_metric
from sim.serving_spec import ATTENTION_FIELDS, LORA_FIELDS, ServingSpec, attention_spans_nodes
from sim.slowdown import METRICS as SLOWDOWN_OF
from sim.slowdown import PERCENTILES as SLOWDOWN_PERCENTILES
from sim.slowdown import SLOWDOWN_PRESETS, SlowdownSLO
from workloads.errors import InputError
from workloads.model_config import load_model_config
from workloads.requests import SHIPPED_TRACES, Fixed, LogNormal, Uniform, read_request_trace, resolve_trace
from workloads.yaml_lines import LocatedYAML


class Lengths(Strict):
    """A distribution of prompt or output lengths in tokens (workloads/requests.py)."""

    dist: Literal["fixed", "uniform", "lognormal"]
    tokens: TokenLength | None = None  # fixed
    low: TokenLength | None = None  # uniform (inclusive), lognormal (clip)
    high: TokenLength | None = None
    median: PositiveNumber | None = None  # lognormal
    sigma: Annotated[StrictInt | StrictFloat, Field(ge=0)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _a_count(cls, data):
        """A bare count of tokens is a fixed length (`prompt: 512` as `prompt: {dist: fixed, tokens: 512}`)."""
        if isinstance(data, int) and not isinstance(data, bool):
            return {"dist": "fixed", "tokens": data}
        if not isinstance(data, dict | Lengths):
            raise ValueError("a count of tokens (512) or a length distribution ({dist: fixed, tokens: 512}, "
                             "{dist: uniform, low: 64, high: 512} or {dist: lognormal, median: 1024, sigma: 0.6})")
        return data

    @model_validator(mode="after")
    def _parameters(self):
        needed = {"fixed": ("tokens",), "uniform": ("low", "high"), "lognormal": ("median", "sigma")}[self.dist]
        missing = [name for name in needed if getattr(self, name) is None]
        if missing:
            raise ValueError(f"found dist: {self.dist} without {' or '.join(missing)}, allowed: {self.dist} with "
                             f"{' and '.join(needed)}")
        return self

    def distribution(self):
        if self.dist == "fixed":
            return Fixed(tokens=self.tokens)
        if self.dist == "uniform":
            return Uniform(low=self.low, high=self.high)
        return LogNormal(median=self.median, sigma=self.sigma, low=self.low or 1, high=self.high)


# A slowdown limit: a request's latency over its latency alone, so 1 (no slowdown) is the least a limit can be.
SlowdownLimit = Annotated[StrictInt | StrictFloat, AfterValidator(finite), Field(ge=1)]


class PercentileLimits(Strict):
    """The highest slowdown allowed at each percentile of requests (the percentiles a run reports)."""

    p50: SlowdownLimit | None = None
    p90: SlowdownLimit | None = None
    p99: SlowdownLimit | None = None

    def limits(self) -> tuple[tuple[int, float], ...]:
        return tuple((p, float(getattr(self, f"p{p}"))) for p in SLOWDOWN_PERCENTILES
                     if getattr(self, f"p{p}") is not None)


class SlowdownLimits(Strict):
    """Limits on percentiles of each request's TTFT, TBT and E2E slowdown over its run alone (sim/slowdown.py);
    a metric left out is not limited."""

    ttft: PercentileLimits | None = None
    tbt: PercentileLimits | None = None
    e2e: PercentileLimits | None = None

    @model_validator(mode="after")
    def _some_limit(self):
        if not any(getattr(self, name) is not None and getattr(self, name).limits() for name in SLOWDOWN_OF):
            raise ValueError("at least one limit, e.g. {tbt: {p50: 1.25}} (found none)")
        return self

    def slo(self) -> SlowdownSLO:
        """The limits as a SlowdownSLO (floats, so 2 and 2.0 give one design point key)."""
        return SlowdownSLO(**{name: getattr(self, name).limits() if getattr(self, name) else ()
                              for name in SLOWDOWN_OF})


def _limits_of(slo: SlowdownSLO) -> dict[str, dict[str, float]]:
    """A SlowdownSLO as the sweep file writes its limits."""
    return {name: {f"p{p}": limit for p, limit in getattr(slo, name)} for name in SLOWDOWN_OF}


class ServiceLevel(Strict):
    """Per-request latency limits and the fraction of requests that must meet them (the urgent requests' own
    limits, where they differ: urgent_ttft_s, urgent_tpot_s); and limits on percentiles of each request's slowdown
    over its run alone (a preset name or the limits), every one of which must hold."""

    ttft_s: PositiveNumber | None = None
    tpot_s: PositiveNumber | None = None
    attainment: Annotated[StrictInt | StrictFloat, Field(gt=0, le=1)] = 0.9
    slowdown: SlowdownLimits | None = None
    urgent_ttft_s: PositiveNumber | None = None
    urgent_tpot_s: PositiveNumber | None = None

    @field_validator("slowdown", mode="before")
    @classmethod
    def _preset(cls, value: Any) -> Any:
        if isinstance(value, str) and value in SLOWDOWN_PRESETS:
            return _limits_of(SLOWDOWN_PRESETS[value])
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"a slowdown preset ({', '.join(SLOWDOWN_PRESETS)}) or limits such as "
                             f"{{tbt: {{p50: 1.25}}}}")
        return value

    @model_serializer(mode="wrap")
    def _without_unset_slowdown(self, handler) -> dict[str, Any]:
        """Dumped as before slowdown and urgent limits existed where there are none (a results folder's goals
        file)."""
        dumped = handler(self)
        for name in ("slowdown", "urgent_ttft_s", "urgent_tpot_s"):
            if dumped.get(name) is None:
                dumped.pop(name, None)
        return dumped

    def slowdown_slo(self) -> SlowdownSLO | None:
        return self.slowdown.slo() if self.slowdown is not None else None


DEFAULT = ServingSpec()  # the section's defaults are the spec's


class Serving(Strict):
    """Requests arriving at one replica and how it schedules them (sim/serving_spec.py); lists sweep."""

    requests: PositiveInt | None = None  # unset: 1000, or all of a shorter trace
    arrival: Literal["poisson", "gamma", "trace"] = DEFAULT.arrival
    rate: one_or_more(PositiveNumber) | None = None  # requests per second
    cv: one_or_more(PositiveNumber) = DEFAULT.cv  # gamma arrivals: coefficient of variation of the gaps
    # A shipped trace name, a CSV path or a Mooncake .jsonl path: lengths (and arrivals with arrival: trace)
    trace: str | None = None
    prompt: Lengths | None = None
    output: Lengths | None = None
    # The knobs a serving sweep may list take their types from the knobs registry (explore/knobs.py).
    scheduler: one_or_more(knob_type(KNOBS["scheduler"])) = DEFAULT.scheduler
    max_seqs: one_or_more(knob_type(KNOBS["max_seqs"])) = DEFAULT.max_seqs
    max_batched_tokens: one_or_more(knob_type(KNOBS["max_batched_tokens"])) = DEFAULT.max_batched_tokens
    chunk_tokens: one_or_more(knob_type(KNOBS["chunk_tokens"])) = DEFAULT.chunk_tokens
    prompt_batch_tokens: one_or_more(knob_type(KNOBS["prompt_batch_tokens"])) | None = None
    # The chunked scheduler's cap on one request's tokens an iteration (0: none); a list compares them.
    long_prefill_tokens: one_or_more(knob_type(KNOBS["long_prefill_tokens"])) | None = None
    max_decode_preemptions: one_or_more(knob_type(KNOBS["max_decode_preemptions"])) | None = None
    block_tokens: PositiveInt = DEFAULT.block_tokens
    prefix_tokens: Annotated[StrictInt, Field(ge=0)] = DEFAULT.prefix_tokens
    # Distinct prefixes the requests start with (1); a list compares them.
    prefix_groups: one_or_more(knob_type(KNOBS["prefix_groups"])) | None = None
    queue_policy: one_or_more(knob_type(KNOBS["queue_policy"])) | None = None  # admission order (fcfs)
    # The share of requests drawn urgent (none: every request alike); a list compares them.
    priority_fraction: one_or_more(knob_type(KNOBS["priority_fraction"])) | None = None
    # Conversations of this many turns, think_s apart (independent requests); lists compare them.
    conversation_turns: one_or_more(knob_type(KNOBS["conversation_turns"])) | None = None
    think_s: one_or_more(Annotated[float, Field(ge=0)]) | None = None
    think_cv: one_or_more(Annotated[float, Field(ge=0)]) | None = None  # think times' spread (none: exact)
    preemption: Literal["recompute", "swap"] = DEFAULT.preemption
    swap_GBps: PositiveNumber | None = None  # swap preemption's GB/s (default: the device preset's host link)
    seed: Annotated[StrictInt, Field(ge=0, le=2**32 - 1)] = DEFAULT.seed
    # The rate in phases, repeating: [duration_s, multiplier] pairs (one profile per sweep, not a list to sweep).
    rate_profile: list[tuple[PositiveNumber, Annotated[StrictInt | StrictFloat, Field(ge=0)]]] | None = None
    slo: ServiceLevel | None = None
    capacity: tuple[PositiveNumber, PositiveNumber] | None = None  # search the highest rate in [low, high]
    # Replicas serving whole requests (the decode pool's, disaggregated); > 0 prefill replicas: a prefill pool.
    replicas: one_or_more(knob_type(KNOBS["replicas"])) = DEFAULT.replicas
    prefill_replicas: one_or_more(knob_type(KNOBS["prefill_replicas"])) = DEFAULT.prefill_replicas
    prefill_device: str | None = None  # the prefill pool's device (default: the point's)
    # A fleet: replicas of another device beside the point's, one router over them all; lists compare them.
    mixed_device: one_or_more(str) | None = None
    mixed_replicas: one_or_more(knob_type(KNOBS["mixed_replicas"])) | None = None
    # Autoscaling from replicas up to max_replicas, as the autoscaler decides; lists compare them.
    max_replicas: one_or_more(knob_type(KNOBS["max_replicas"])) | None = None
    prefill_max_replicas: one_or_more(knob_type(KNOBS["prefill_max_replicas"])) | None = None  # a prefill pool's
    mixed_max_replicas: one_or_more(knob_type(KNOBS["mixed_max_replicas"])) | None = None  # a fleet's other pool's
    autoscale_target: one_or_more(knob_type(KNOBS["autoscale_target"])) | None = None
    autoscale_metric: one_or_more(knob_type(KNOBS["autoscale_metric"])) | None = None
    cold_start_s: one_or_more(knob_type(KNOBS["cold_start_s"])) | None = None
    autoscaler: one_or_more(knob_type(KNOBS["autoscaler"])) | None = None  # hpa or a Dynamo planner
    autoscale_interval_s: one_or_more(knob_type(KNOBS["autoscale_interval_s"])) | None = None
    autoscale_predictor: one_or_more(knob_type(KNOBS["autoscale_predictor"])) | None = None  # the SLA planner's
    # Load shedding: a request arriving while every replica is busy is rejected; lists compare thresholds.
    busy_kv_usage: one_or_more(knob_type(KNOBS["busy_kv_usage"])) | None = None
    busy_prefill_tokens: one_or_more(knob_type(KNOBS["busy_prefill_tokens"])) | None = None
    busy_waiting_requests: one_or_more(knob_type(KNOBS["busy_waiting_requests"])) | None = None
    busy_action: one_or_more(knob_type(KNOBS["busy_action"])) | None = None  # reject or queue
    # A rejected request's client retrying it (OpenAI's client backs off from 0.5 s, doubling).
    client_retries: one_or_more(knob_type(KNOBS["client_retries"])) | None = None
    client_retry_s: one_or_more(knob_type(KNOBS["client_retry_s"])) | None = None
    kv_link: str | None = None  # the link each request's KV crosses from the prefill to the decode pool (handoff_link)
    # A pool's own node link (parallel.node_link where unset: ServingSpec.pool_node_link); a list compares them. Each
    # is checked by its knob in check_serving, which says why a link is refused (a storage tier).
    prefill_node_link: one_or_more(str) | None = None
    mixed_node_link: one_or_more(str) | None = None
    router: one_or_more(knob_type(KNOBS["router"])) | None = None  # how a pool picks a replica (least_requests)
    # When the decode pool's router picks (prefill_done, vLLM's and Dynamo's; arrival, llm-d's); a list compares them.
    decode_pick: one_or_more(knob_type(KNOBS["decode_pick"])) | None = None
    # How decode attention reads the shared prefix (paged); a list compares the two.
    prefix_attention: one_or_more(knob_type(KNOBS["prefix_attention"])) | None = None
    # The share of each device's memory the engine may use (vLLM's gpu_memory_utilization; unset: every byte).
    memory_utilization: one_or_more(knob_type(KNOBS["memory_utilization"])) | None = None
    # Host memory (GB) a replica keeps evicted prefix blocks in (unset: none).
    host_cache_GB: one_or_more(knob_type(KNOBS["host_cache_GB"])) | None = None
    # A KV store (GB) a pool's replicas share, and what a device fetches from it per second (unset: none; its NIC).
    kv_store_GB: one_or_more(knob_type(KNOBS["kv_store_GB"])) | None = None
    kv_store_GBps: one_or_more(knob_type(KNOBS["kv_store_GBps"])) | None = None
    # Model-attention disaggregation (sim/attention_pool.py): the pool's attention on attention_devices of
    # attention_device, over attention_link, in up to attention_micro_batches.
    attention_device: one_or_more(str) | None = None  # none, or a device (a list compares them)
    attention_devices: one_or_more(knob_type(KNOBS["attention_devices"])) | None = None
    attention_link: str | None = None
    attention_micro_batches: one_or_more(knob_type(KNOBS["attention_micro_batches"])) | None = None
    attention_placement: one_or_more(knob_type(KNOBS["attention_placement"])) | None = None  # apart or hybrid
    # Multi-LoRA serving (sim/lora.py): adapters (0: off), their rank, the most the running requests hold, popularity.
    lora_adapters: one_or_more(knob_type(KNOBS["lora_adapters"])) | None = None
    lora_rank: one_or_more(knob_type(KNOBS["lora_rank"])) | None = None
    max_loras: one_or_more(knob_type(KNOBS["max_loras"])) | None = None
    lora_alpha: one_or_more(knob_type(KNOBS["lora_alpha"])) | None = None

    @field_validator("rate_profile", mode="before")
    @classmethod
    def _phases(cls, profile: Any) -> Any:
        """A list of [duration_s, multiplier] pairs, said so where the shape is wrong: one profile, not a list of
        profiles to sweep (the pairs' values are the fields' own types to judge)."""
        def pair(phase: Any) -> bool:
            return isinstance(phase, list) and len(phase) == 2 and not any(isinstance(x, list | dict) for x in phase)
        if profile is None or isinstance(profile, list) and all(pair(phase) for phase in profile):
            return profile
        several = isinstance(profile, list) and any(
            isinstance(phase, list) and phase and all(isinstance(x, list) for x in phase) for phase in profile)
        # A type error, so that the message quotes what was found (a mapping included: explore/validation.py).
        raise PydanticCustomError("phases_type", "one profile, a list of phases [duration_s, multiplier], e.g. "
                                  "[[600, 1], [300, 3]]" + (" (a sweep has one profile: its list is the phases, not "
                                                            "profiles to compare)" if several else ""))

    @field_validator("capacity")
    @classmethod
    def _rising(cls, capacity: tuple[float, float] | None) -> tuple[float, float] | None:
        if capacity is not None and not capacity[0] < capacity[1]:
            raise ValueError("[low, high] rates with 0 < low < high (req/s)")  # input_error names the value found
        return capacity

    @model_validator(mode="after")
    def _consistent(self):
        lengths = "both prompt and output (length distributions, e.g. {dist: fixed, tokens: 512})"
        trace = f"trace (one of {', '.join(SHIPPED_TRACES)}, a CSV path or a Mooncake .jsonl path)"
        if self.trace and (self.prompt or self.output):
            given = " and ".join(key for key in ("prompt", "output") if getattr(self, key))
            raise ValueError(f"found trace {self.trace!r} with {given}, allowed: either {trace} or {lengths}, "
                             f"not both (a trace gives the lengths)")
        if not self.trace and not (self.prompt and self.output):
            given = ("prompt without output" if self.prompt else "output without prompt" if self.output else
                     "no trace, prompt or output")
            raise ValueError(f"found {given}, allowed: {trace}, or {lengths}")
        if self.capacity is not None:
            if self.rate is not None:
                raise ValueError(f"found rate {self.rate} with capacity {list(self.capacity)}, allowed: one of them "
                                 f"(capacity searches the rate)")
            if self.slo is None:
                raise ValueError(f"found capacity {list(self.capacity)} without an slo, allowed: an slo for the "
                                 f"capacity search to meet (slo: {{ttft_s: ..., tpot_s: ...}})")
        elif self.rate is None and self.arrival != "trace":
            raise ValueError(f"found {self.arrival} arrivals without a rate, allowed: a rate (requests per second) "
                             f"or a capacity search (capacity: [low, high])")
        if self.arrival == "trace" and not self.trace:
            raise ValueError("found arrival: trace without a trace, allowed: a trace to take arrival times from "
                             "(trace: NAME), or poisson or gamma arrivals")
        return self


class Parallel(Strict):
    """A system of identical devices: tensor-parallel degree and the link between them (lists sweep)."""

    tp: one_or_more(PositiveInt) = 1
    pp: one_or_more(PositiveInt) = 1  # pipeline stages
    ep: one_or_more(Literal["split", "spread"]) = "split"  # an MoE model's experts: each split over tp, or spread whole
    link: one_or_more(str) = "default"  # a link preset or path; 'default': the device's own interconnect
    allreduce: one_or_more(knob_type(KNOBS["allreduce"])) = "nccl"  # NCCL's, or an engine's custom kernels
    overlap: one_or_more(knob_type(KNOBS["overlap"])) = "none"  # all-reduces beside compute (serving iterations)
    # an MoE model's attention and dense layers: tensor-parallel, or data-parallel beside spread experts
    attention_parallel: one_or_more(knob_type(KNOBS["attention_parallel"])) = "tensor"
    # the link between nodes where the devices span more than one domain of the link; '': the device's own
    node_link: one_or_more(str) = ""
    dcp: one_or_more(PositiveInt) = 1  # devices among the tp each sequence's KV tokens are split over (decode only)


def serving_dimensions(serving: Serving) -> dict[str, list]:
    """The serving knobs a sweep varies (named as in the results table)."""
    dims = {"scheduler": as_list(serving.scheduler), "rate_per_s": as_list(serving.rate),
            "cv": as_list(serving.cv), "max_seqs": as_list(serving.max_seqs),
            "max_batched_tokens": as_list(serving.max_batched_tokens),
            "chunk_tokens": as_list(serving.chunk_tokens)}
    if serving.prompt_batch_tokens is not None:
        dims["prompt_batch_tokens"] = as_list(serving.prompt_batch_tokens)
    if serving.long_prefill_tokens is not None:
        dims["long_prefill_tokens"] = as_list(serving.long_prefill_tokens)
    if serving.max_decode_preemptions is not None:
        dims["max_decode_preemptions"] = as_list(serving.max_decode_preemptions)
    dims.update(replicas=as_list(serving.replicas), prefill_replicas=as_list(serving.prefill_replicas))
    if serving.router is not None:
        dims["router"] = as_list(serving.router)
    if serving.decode_pick is not None:
        dims["decode_pick"] = as_list(serving.decode_pick)
    for name in ("mixed_device", "mixed_replicas", "max_replicas", "autoscale_target", "autoscale_metric",
                 "cold_start_s", "prefill_max_replicas", "mixed_max_replicas", "autoscaler", "autoscale_interval_s",
                 "autoscale_predictor", "busy_kv_usage", "busy_prefill_tokens", "busy_waiting_requests",
                 "busy_action", "client_retries", "client_retry_s"):
        if getattr(serving, name) is not None:
            dims[name] = as_list(getattr(serving, name))
    for name in ("prefix_attention", "prefix_groups", "queue_policy", "priority_fraction", "conversation_turns",
                 "think_s", "think_cv"):
        if getattr(serving, name) is not None:
            dims[name] = as_list(getattr(serving, name))
    if serving.memory_utilization is not None:
        dims["memory_utilization"] = as_list(serving.memory_utilization)
    for name in ("host_cache_GB", "kv_store_GB", "kv_store_GBps", "prefill_node_link", "mixed_node_link"):
        if getattr(serving, name) is not None:
            dims[name] = as_list(getattr(serving, name))
    for name in ("attention_device", "attention_devices", "attention_micro_batches", "attention_placement",
                 *LORA_FIELDS):
        if getattr(serving, name) is not None:
            dims[name] = as_list(getattr(serving, name))
    if serving.arrival != "gamma":
        del dims["cv"]
    return dims


# The serving values that decide what reads a node link (node_link_readers_of), beside the point's system.
NODE_LINK_SERVING = ("prefill_replicas", "prefill_device", "prefill_node_link", "mixed_replicas", "mixed_device",
                     "mixed_node_link", "kv_link", "kv_store_GB", "kv_store_GBps", *ATTENTION_FIELDS)


def node_link_readers_of(kind: str, device: str, link: str, tp: int, pp: int, link_overrides: tuple,
                         serving: Mapping[str, Any]) -> list[str]:
    """What reads the node link of a point's pool of `kind` (prefill, mixed; '' the point's own, which a pool naming
    none of its own shares: ServingSpec.pool_node_link) at the serving values `serving` (NODE_LINK_SERVING), in words
    (empty: nothing, or no such pool, and the point is the point without it): the pool's tp x pp devices spanning
    nodes (pool_nodes); the prefill pool's KV handover where kv_link is left out (ServingSpec.handoff_links: from the
    prefill pool's node link to the point's, or to a fleet's mixed replicas'); the KV store's fetches at the NIC's
    rate (kv_store_GB without kv_store_GBps: explore/evaluate.py Evaluator._kv_store_Bps); on the point's own, the
    devices of a prefill pool or of a fleet's mixed replicas on another device spanning nodes where the pool names no
    node link of its own (explore/evaluate.py pool_point); on the point's own, the sends to its attention devices
    where they and its devices are more than one domain of attention_link holds (sim/serving_spec.py
    attention_spans_nodes)."""
    if kind and not serving[f"{kind}_replicas"]:
        return []
    pool_device = serving[f"{kind}_device"] or "" if kind else ""
    readers = [f"its {tp * pp} devices, which span nodes"] if pool_nodes(pool_device, device, link, tp, pp,
                                                                          link_overrides) > 1 else []
    if not kind and attention_spans_nodes(serving, tp * pp):
        readers.append("the sends to its attention devices, on other nodes than its own")
    if serving["prefill_replicas"] and not serving["kv_link"]:  # a fleet's mixed replicas decode behind it too
        readers.append("its KV handover" if kind else "the prefill pool's KV handover")
    if serving["kv_store_GB"] and serving["kv_store_GBps"] is None:
        readers.append(f"{'its' if kind else 'the'} KV store's fetches")
    for pool in ("prefill", "mixed") if not kind else ():
        other = serving[f"{pool}_device"] if serving[f"{pool}_replicas"] and not serving[f"{pool}_node_link"] else ""
        if other and other != device and pool_nodes(other, device, link, tp, pp, link_overrides) > 1:
            readers.append(f"the {other} {'prefill ' if pool == 'prefill' else ''}replicas, which span nodes")
    return readers


def pool_nodes(pool_device: str, device: str, link: str, tp: int, pp: int, link_overrides: tuple = ()) -> int:
    """The nodes a pool's replica of `pool_device` ('' the point's `device`) spans: its tp x pp devices over their own
    link where its preset names one, else over the point's link with its what-ifs (explore/evaluate.py pool_point)."""
    if pool_device and pool_device != device and has_default_link(load_device(pool_device).name):
        return system_nodes(pool_device, "", tp, pp)
    return system_nodes(pool_device or device, link, tp, pp, link_overrides)


def node_link_readers(device: str, link: str, tp: int, pp: int, link_overrides: tuple = (),
                      serving: ServingSpec | None = None) -> list[str]:
    """node_link_readers_of a point's own node link, with its serving spec's pools."""
    return pool_node_link_readers("", device, link, tp, pp, link_overrides, serving)


def pool_node_link_readers(kind: str, device: str, link: str, tp: int, pp: int, link_overrides: tuple,
                           serving: ServingSpec | None) -> list[str]:
    """node_link_readers_of a serving point's pool of `kind` (prefill, mixed, '' its own)."""
    return node_link_readers_of(kind, device, link, tp, pp, link_overrides,
                                {name: getattr(serving, name, None) for name in NODE_LINK_SERVING})


def routes(values: dict[str, Any]) -> bool:
    """Whether a point has anything for a router to pick among: replicas in a pool (or that an autoscaled pool may
    hold) or in a fleet of mixed devices, or a replica's engines on pipeline stages or data-parallel ranks
    (explore/serving_settings.py refuses a router where no point of a sweep routes)."""
    counts = {**values, "ranks": data_parallel_ranks(values.get("tp", 1), values.get("attention_parallel", "tensor"))}
    return any(counts.get(name, 1) > 1 for name in ROUTED) or (values.get("mixed_replicas") or 0) >= 1 or any(
        (values.get(name) or 0) > 1 for name in ("max_replicas", "prefill_max_replicas"))


# The knobs an autoscaled pool reads (a point whose pools never scale is the point without them).
AUTOSCALE_KNOBS = ("max_replicas", "prefill_max_replicas", "mixed_max_replicas", "autoscale_target",
                   "autoscale_metric", "cold_start_s", "autoscaler", "autoscale_interval_s", "autoscale_predictor")


def scales(values: dict[str, Any]) -> bool:
    """Whether a point has a pool that may scale: max_replicas above replicas, prefill_max_replicas above
    prefill_replicas, or mixed_max_replicas above mixed_replicas (a pool whose most replicas are its least never
    scales)."""
    return (values.get("max_replicas") or 0) > values.get("replicas", 1) or \
        (values.get("prefill_max_replicas") or 0) > values.get("prefill_replicas", 0) or \
        (values.get("mixed_max_replicas") or 0) > (values.get("mixed_replicas") or 0)


def reads_metric(values: dict[str, Any]) -> bool:
    """Whether a point's autoscaler reads a server metric's target: an HPA's (not a Dynamo planner's) scaling past one
    replica (from zero up to one, KEDA alone scales)."""
    return on_metric(values.get("autoscaler")) and not (values.get("replicas") == 0 and values.get("max_replicas") == 1)


def serving_spec(serving: Serving, values: dict[str, Any]) -> ServingSpec:
    """The ServingSpec of a design point: the section's fixed values and the point's serving knobs (a router only
    where the point routes, autoscaling only where a pool may scale: elsewhere it is the point without them)."""
    slo = serving.slo or ServiceLevel()
    spec = ServingSpec(
        scheduler=values["scheduler"], requests=serving.requests, arrival=serving.arrival,
        rate_per_s=values["rate_per_s"], cv=values.get("cv", 1.0), trace=serving.trace,
        prompt=serving.prompt.distribution() if serving.prompt else Fixed(tokens=1),
        output=serving.output.distribution() if serving.output else Fixed(tokens=1),
        max_seqs=values["max_seqs"], max_batched_tokens=values["max_batched_tokens"],
        chunk_tokens=values["chunk_tokens"], prompt_batch_tokens=values.get("prompt_batch_tokens"),
        max_decode_preemptions=values.get("max_decode_preemptions"),
        long_prefill_tokens=values.get("long_prefill_tokens", DEFAULT.long_prefill_tokens),
        block_tokens=serving.block_tokens,
        prefix_tokens=serving.prefix_tokens, prefix_groups=values.get("prefix_groups"),
        queue_policy=values.get("queue_policy"), priority_fraction=values.get("priority_fraction"),
        conversation_turns=values.get("conversation_turns"),
        think_s=values.get("think_s"), think_cv=values.get("think_cv"), preemption=serving.preemption,
        swap_GBps=serving.swap_GBps,
        seed=serving.seed, rate_profile=None if serving.rate_profile is None else tuple(
            (float(duration_s), float(multiplier)) for duration_s, multiplier in serving.rate_profile),
        slo_ttft_s=slo.ttft_s, slo_tpot_s=slo.tpot_s, slo_urgent_ttft_s=slo.urgent_ttft_s,
        slo_urgent_tpot_s=slo.urgent_tpot_s,
        slo_attainment=slo.attainment, slo_slowdown=slo.slowdown_slo(), capacity=serving.capacity,
        replicas=values["replicas"], prefill_replicas=values["prefill_replicas"],
        prefill_device=serving.prefill_device or "", kv_link=serving.kv_link,
        mixed_device=values.get("mixed_device") or "", mixed_replicas=values.get("mixed_replicas") or 0,
        max_replicas=values.get("max_replicas"), prefill_max_replicas=values.get("prefill_max_replicas"),
        mixed_max_replicas=values.get("mixed_max_replicas"),
        # The SLA planner reads no server metric: its points are the same design whatever target a grid crosses.
        autoscale_target=values.get("autoscale_target") if reads_metric(values) else None,
        autoscale_metric=values.get("autoscale_metric") if reads_metric(values) else None,
        cold_start_s=values.get("cold_start_s"),
        autoscaler=values.get("autoscaler"), autoscale_interval_s=values.get("autoscale_interval_s"),
        # Only the SLA planner forecasts: its predictor changes nothing in another autoscaler's points.
        autoscale_predictor=values.get("autoscale_predictor") if forecasts(values.get("autoscaler")) else None,
        busy_kv_usage=values.get("busy_kv_usage"), busy_prefill_tokens=values.get("busy_prefill_tokens"),
        busy_waiting_requests=values.get("busy_waiting_requests"), busy_action=values.get("busy_action"),
        client_retries=values.get("client_retries"), client_retry_s=values.get("client_retry_s"),
        router=values.get("router") if routes(values) else None,
        decode_pick=values.get("decode_pick") if values["prefill_replicas"] else None,
        prefix_attention=values.get("prefix_attention"), memory_utilization=values.get("memory_utilization"),
        host_cache_GB=values.get("host_cache_GB"), kv_store_GB=values.get("kv_store_GB"),
        kv_store_GBps=values.get("kv_store_GBps"),
        prefill_node_link=values.get("prefill_node_link") or "", mixed_node_link=values.get("mixed_node_link") or "",
        attention_device=values.get("attention_device", ""),
        attention_devices=values.get("attention_devices", DEFAULT.attention_devices),
        attention_link=serving.attention_link,
        attention_micro_batches=values.get("attention_micro_batches", DEFAULT.attention_micro_batches),
        attention_placement=values.get("attention_placement", DEFAULT.attention_placement),
        # LoRA off: its rank, slots and draw change nothing, so the point is the one without them (one design, one key).
        **{name: values[name] for name in LORA_FIELDS if name in values and values.get("lora_adapters")})
    if (spec.max_replicas is not None or spec.prefill_max_replicas is not None) and not scales(values) \
            and not spec.unjudged():
        # Checked as given first (a conflict such as a fleet beside a planner's max_replicas is still not run, with
        # its reason), then the fixed pools' point: the target, metric and cold start change nothing where no
        # replica is ever added.
        spec = dataclasses.replace(spec, **dict.fromkeys(AUTOSCALE_KNOBS))
    if spec.lora_adapters == 1:
        # Checked as given first, then the point at the uniform draw: every request draws the one adapter whatever
        # lora_alpha is (workloads/requests.py with_adapters), one design whatever a grid crosses it with.
        spec = dataclasses.replace(spec, lora_alpha=DEFAULT.lora_alpha)
    if budgets := unread(SCHEDULER_SETTINGS, {"scheduler": (spec.scheduler,)}):
        # A token budget (or orca's decode preemptions) the point's scheduler does not read: the point at its default,
        # one design whatever a grid crosses it with.
        spec = dataclasses.replace(spec, **{name: getattr(DEFAULT, name) for name in budgets})
    if idle := unread(CLIENT_RETRIES, {name: (getattr(spec, name),) for name in (*GATEWAY_KNOBS, *CLIENT_RETRIES)}):
        # Retries at a point that rejects nothing (its gateway queues), or a delay at one that never retries.
        spec = dataclasses.replace(spec, **dict.fromkeys(idle))
    # A pool's own node link that nothing of the pool reads (its devices fit one node, no handover or store crosses
    # it): the point without it.
    what_ifs = link_what_ifs(values)
    if unheard := [f"{kind}_node_link" for kind in ("prefill", "mixed") if getattr(spec, f"{kind}_node_link") and not
                   pool_node_link_readers(kind, values["device"], values.get("link", ""), values.get("tp", 1),
                                          values.get("pp", 1), what_ifs, spec)]:
        spec = dataclasses.replace(spec, **dict.fromkeys(unheard, ""))
    return spec


def serving_knobs_set(serving: Serving, derived: Iterable[str] = ()) -> list[str]:
    """The serving knobs with a column only where set (explore/knobs.py) that a serving section sets or its sweep's
    `derived` section computes: the attention settings all five where it names an attention device."""
    derived = set(derived)
    return [k.name for k in knobs(scope="serving") if k.column == "when set" and (
        getattr(serving, k.name) is not None or k.name in derived
        or k.name in ATTENTION_FIELDS and serving.attention_device)]


def _unkeyed(err: InputError) -> str:
    """A preset loader's message without its own key ('device: found ...'): the sweep's key replaces it."""
    return str(err).removeprefix("device: ").removeprefix("link: ")


def check_serving(serving: Serving, models: list[str], located: LocatedYAML, stages: tuple[int, ...] = (1,),
                  ranks: tuple[int, ...] = (1,)) -> None:
    """The trace must read, the prefill device and KV link load, no key
    be idle beside the others (and the sweep's pipeline `stages` and data-parallel `ranks`: data_parallel_ranks), and
    a KV block fit every model's context."""
    if serving is not None and serving.trace:
        try:
            read_request_trace(resolve_trace(serving.trace))  # a malformed trace is a mistake in this file
        except InputError as err:
            message = str(err)
            raise InputError(f"{located.where(('serving', 'trace'))}: serving."
                             f"{message if message.startswith('trace: ') else 'trace: ' + message}") from None
    if serving is not None:
        for key in ("prefill_device", "mixed_device", "kv_link", "attention_device", "attention_link",
                    "prefill_node_link", "mixed_node_link"):
            for name in as_list(getattr(serving, key)):
                if name and name != "none":
                    try:
                        KNOBS[key].validate(name) if key.endswith("node_link") else load_device(name) if \
                            key.endswith("device") else load_link_model(name)
                    except InputError as err:
                        raise InputError(f"{located.where(('serving', key))}: serving.{key}: {_unkeyed(err)}") from None
                    except ValueError as err:  # a knob's refusal, saying why (a storage tier joins no devices)
                        raise InputError(f"{located.where(('serving', key))}: serving.{key}: {err}") from None
        _check_idle(serving, located, stages, ranks)
        for model in models:
            context = load_model_config(model).max_positions
            if serving.block_tokens > context:
                raise InputError(f"{located.where(('serving', 'block_tokens'))}: serving.block_tokens: found "
                                 f"{serving.block_tokens}, allowed: at most {model}'s context of {context} tokens")


def _given(serving: Serving, field: str) -> tuple[bool, Any]:
    """Whether the section writes a ServingSpec field's key (with a value other than null), and its value."""
    owner, written = serving, True
    *outer, key = key_of(field)
    for name in outer:
        written = written and name in owner.model_fields_set
        owner = getattr(owner, name)
        if owner is None:
            return False, None
    if key not in type(owner).model_fields:
        return False, None
    value = getattr(owner, key)
    return written and key in owner.model_fields_set and value is not None, value


def _check_idle(serving: Serving, located: LocatedYAML, stages: tuple[int, ...], ranks: tuple[int, ...]) -> None:
    """A key set in the section that no point of the sweep would read is refused, as explore run refuses the flag
    (the rules are explore/serving_settings.py's): it would only show in the results as if it had been run."""
    keyed = {f.name: _given(serving, f.name) for f in dataclasses.fields(ServingSpec)}
    values = {field: tuple(as_list(value)) for field, (_, value) in keyed.items()} | {"pp": stages, "ranks": ranks}
    idle = idle_setting({field for field, (written, _) in keyed.items() if written}, values, KeyNames(), sweep=True)
    if idle is not None:
        names = KeyNames()
        raise InputError(f"{located.where(('serving', *key_of(idle.field)))}: serving.{names.name(idle.field)}: "
                         f"{idle.message(repr(keyed[idle.field][1]))}")


def check_parallel(parallel: Parallel, models: list[str], located: LocatedYAML) -> None:
    """Every tp must shard every model's heads where some point shards them (data-parallel ranks attend whole), and
    every link and node link must load."""
    sharded = "tensor" in as_list(parallel.attention_parallel)
    for model in models:
        config = load_model_config(model)
        if "spread" in as_list(parallel.ep):
            for tp in as_list(parallel.tp):
                # Named as the sweep writes it ('spread', not the ep = tp it stands for); on one device it is split.
                if tp > 1 and (why := spread_refusal(config, tp)):
                    raise InputError(f"{located.where(('parallel', 'ep'))}: parallel.ep: found 'spread' with tp {tp}, "
                                     f"allowed: split ({why})")
        checks = ((("tp", check_tensor_parallel),) if sharded else ()) + (("pp", check_pipeline_parallel),)
        for key, check in checks:
            for value in as_list(getattr(parallel, key)):
                try:
                    check(config, value)
                except ValueError as err:
                    raise InputError(f"{located.where(('parallel', key))}: parallel.{key}: {err}") from None
    for link in as_list(parallel.link):
        if link != "default":
            try:
                load_link_model(link)
            except InputError as err:
                raise InputError(f"{located.where(('parallel', 'link'))}: parallel.link: {_unkeyed(err)}") from None
    # Checked here, not only per point: a point within one node drops its node link (Sweep.point) unchecked.
    for link in as_list(parallel.node_link):
        try:
            KNOBS["node_link"].validate(link)
        except ValueError as err:
            raise InputError(f"{located.where(('parallel', 'node_link'))}: node_link: {err}") from None


def capacity_ceiling_notice(rows: list[dict[str, Any]], high: float, where: str) -> str:
    """One line where a capacity search found the top of its range, `high` req/s (named by `where`: the sweep key or
    flag), sustainable: such a capacity is the range's end, a lower bound of the design's (sim/capacity.py
    highest_rate), so designs that reach it tie there whatever their real capacities; '' where none did."""
    typed = [normalize_row(row) for row in rows]
    top = [row for row in typed
           if is_feasible(row) and math.isfinite(capacity := row.get("capacity_rps", math.nan)) and capacity >= high]
    if not top:
        return ""
    which = "the capacity is" if len(rows) == 1 else f"{len(top)} of {len(rows)} capacities are"
    return (f"notice: {which} the top of the searched range, {high:g} req/s ({where}): "
            f"{'that design sustains' if len(top) == 1 else 'those designs sustain'} at least that rate and "
            f"capacity_rps is not {'its' if len(top) == 1 else 'their'} capacity; raise the range's high to find it")


def capacity_notice(rows: list[dict[str, Any]]) -> str:
    """One line where a capacity search could not judge the rate that stopped it (capacity_judged 0: its run met
    the SLO but was too short or too noisy to show whether the queue keeps up, sim/stability.py); '' otherwise."""
    typed = [normalize_row(row) for row in rows]
    unjudged = [row for row in typed if is_feasible(row) and "capacity_judged" in row and not row["capacity_judged"]]
    if not unjudged:
        return ""
    requests = max(int(row["requests"]) for row in unjudged)
    return (f"notice: {len(unjudged)} of {len(rows)} capacities are not judged: {requests} requests were too few to "
            f"show whether the queue keeps up at the rate above each (capacity_judged 0, capacity_note says why); "
            f"each is the highest rate these requests show sustainable; raise serving.requests to judge them")
