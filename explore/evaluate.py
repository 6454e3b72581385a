"""Evaluate design points: trace (once per model, batch and prompt), lower, price, simulate, report metrics."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from explore.design_point import DesignPoint
from explore.knobs import knob
from explore.metrics import TIME_CLASSES, add_derived
from explore.point_values import check_point_values
from hw_models.device import UNFUSED_ENGINE_KINDS
from hw_models.gpu_efficiency import calibration_label
from hw_models.link import (
    LinkSpec,
    default_link,
    default_node_link,
    has_default_link,
    link_names,
    load_link,
    load_link_model,
)
from hw_models.link_pcie import model_through_pcie, through_pcie
from hw_models.registry import load_device
from hw_models.system import SystemModel, SystemPrice
from kernels.block_estimate import with_estimate
from kernels.block_sparse import PrefillSelection
from kernels.data_parallel import dispatch_bytes_per_token, replicated_weight_share
from kernels.early_exit import decode_kv_share, kept_layers, skip_layers
from kernels.formats import NumericFormat
from kernels.fusion import ENGINE, fused_rows
from kernels.kv_eviction import D2O, Eviction, eviction, merged_prefill, scored_prefill
from kernels.kv_policy import DUO_WINDOW_TOKENS, KVPolicy, Window, estimate_pairs, fetched_tokens, kept_tokens
from kernels.layer_kernels import LayerTable, layer_table
from kernels.lora import adapter_bytes
from kernels.medusa import medusa_head_params, medusa_head_table
from kernels.mixed_layers import edge_mixed_template, model_template
from kernels.module_params import expert_byte_share, stored_weight_scale
from kernels.moe import device_routing
from kernels.padded_pass import padded_pass, template_rows, template_tail
from kernels.parallel import (
    check_tensor_parallel,
    kv_replication,
    pipeline_sends,
    shard_tensor_parallel,
    sharded_rows,
    stage_send_bytes_per_token,
)
from kernels.shapes import PLACE_HEAD, PLACE_TAIL, StepTemplate, step_shape, template_layers
from kernels.sparsity import exploits
from kernels.table import KernelTable
from kernels.token_prune import first_pruned_layer, kept_prompt_tokens, pruned_prefill
from kernels.token_select import TokenSelection, token_selection
from sim.analytic import evaluate as evaluate_analytic
from sim.attention_pool import AttentionPool, sent_bytes_per_token
from sim.autoscalers import Autoscaling
from sim.capacity import CAPACITY_METRICS, RateVerdict, rate_verdict, search_capacity
from sim.costs import IterationCostModel
from sim.cuda_graphs import DEFAULT_LIMITS, CaptureLimits
from sim.data_parallel import ExpertRanks
from sim.engine import simulate
from sim.hybrid_kv import KVGroups, kv_groups
from sim.kv_cache import shared_prefix_tokens
from sim.memory import MemoryFootprint, batch_footprint, infeasible_reason, layer_kept
from sim.offload import (
    HostLink,
    LinkTraffic,
    RoutedExperts,
    device_footprint,
    offload_traffic,
    plan_offload,
    plan_window,
)
from sim.result import RESULT_METRICS, SimResult
from sim.routers import DECODE_PICKS, DEFAULT_ROUTER
from sim.schedulers import make_scheduler
from sim.serving import (
    AUTOSCALE_METRICS,
    REJECTION_METRICS,
    SERVING_METRICS,
    Pool,
    ServingResult,
    made_replicas,
    serve_pools,
    serving_budget_reason,
    serving_memory,
    serving_memory_reason,
)
from sim.serving_metrics import URGENT_METRICS
from sim.serving_spec import COLD_START_LINK
from sim.slowdown import SLOWDOWN_METRICS
from sim.speculative import (
    MEDUSA,
    MTP,
    NGRAM,
    DecodePasses,
    ServingSpeculation,
    Speculation,
    SpeculativeTables,
    StepLaunches,
    draft_error,
    draft_slots,
    drops_last_hit,
    evaluate_speculative,
    first_draft_tokens,
    mtp_error,
    names_draft_model,
    step_launches,
)
from sim.step_costs import batch_launches, sub_batch_sizes
from sim.workload import BatchWorkload, PassTables
from workloads.errors import InputError
from workloads.expert_skew import power_law_popularity, reach_chances
from workloads.layer_replication import LayerTrace
from workloads.model_config import BALANCED, POWER_LAW, ModelConfig, load_model_config
from workloads.trace import Trace

# Mean KV lengths of serving iterations are priced in buckets of this many tokens (one KV block): a long
# run then prices each distinct shape once, and attention time moves by under a block's share of its keys.
KV_BUCKET_TOKENS = 16


def trace_args(phase: str, batch: int, prompt: int, query: int = 1, sampled: int = 1) -> dict:
    """The trace a pass needs (workloads/trace_cache.cached_trace's arguments): the prefill of `prompt` tokens, or a
    decode of `query` new tokens per sequence after `prompt` cached ones, with logits at the last `sampled` of them (a
    prefill samples one)."""
    if phase == "prefill":
        return dict(phase="prefill", batch=batch, seq_len=prompt)
    return dict(phase="decode", batch=batch, seq_len=query, context_len=prompt, sampled=sampled)


def fusion_of(execution: str, device_kind: str) -> str:
    """The kernels an execution mode launches on a kind of device: a serving engine's fused kernels for 'engine', the
    eager ones (one per aten op) otherwise, and on kinds whose runtime runs the model op by op even as an engine
    (hw_models/device.py UNFUSED_ENGINE_KINDS: llama.cpp on CPUs) (kernels/fusion.py)."""
    return ENGINE if execution == "engine" and device_kind not in UNFUSED_ENGINE_KINDS else ""


@dataclass(frozen=True)
class Evaluation:
    point: DesignPoint
    metrics: dict[str, Any]
    result: SimResult | ServingResult | None  # None: the point does not fit in memory and was not simulated
    tables: PassTables | None  # None for a serving point (its iterations come from a step template)
    speculative: SpeculativeTables | None = None  # a speculative static point's passes (Evaluator.speculative_tables)


# A model's prefill and its first decode step, one token a sequence each (Evaluator.tables).
PLAIN_PASSES = (("prefill", 1, 1), ("decode", 1, 1))


@dataclass(frozen=True)
class TracedPasses:
    """A model's passes traced at one batch and prompt, each (phase, query tokens a sequence, positions sampled) as
    trace_args takes them."""
    model: str | ModelConfig
    batch: int
    prompt: int
    passes: tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class SpeculativePasses:
    """What a speculative static point traces beside its model's plain passes: the target's verification of the
    drafted tokens (a decode of k + 1 tokens a sequence, or a tree's candidates and one, logits at each); but for
    Medusa heads, the draft model's or MTP module's prefill and decode over the prompt and its slots (draft_slots) and
    its first step of each speculative step (first_draft_tokens, logits at the last)."""
    verify: TracedPasses
    draft: TracedPasses | None
    draft_first: TracedPasses | None
    # The same step's decode passes run by one sequence (a batch's; None for a batch of one), which price the steps the
    # batch's slowest sequences take after the others finish (sim/speculative.py evaluate_speculative).
    one_sequence: SpeculativePasses | None = None

    def traced(self) -> list[TracedPasses]:
        """Every TracedPasses of the point, in order."""
        own = [self.verify] + ([self.draft, self.draft_first] if self.draft is not None else [])
        return own + (self.one_sequence.traced() if self.one_sequence is not None else [])


def launches(passes: SpeculativePasses, speculation: Speculation, device, execution: str,
             limits: CaptureLimits = DEFAULT_LIMITS) -> StepLaunches:
    """How an engine launches the passes of the speculative step `passes` (sim/speculative.py step_launches)."""
    first_query = 1 if passes.draft_first is None else passes.draft_first.passes[0][1]
    return step_launches(device, execution, passes.verify.batch, speculation, first_query, limits)


def padded_traced(traced: TracedPasses, tokens: int) -> TracedPasses | None:
    """The pass whose decoder layers a one-pass decode `traced` takes padded to `tokens` tokens (kernels/padded_pass.py;
    None where `tokens` are its own): the same pass of `tokens / query` sequences, so that the rows before the layers
    follow its query length as the step template's do, or `tokens` one-token decodes where `tokens` is no multiple of
    it; logits at one position a sequence (the rows after the layers are the template's)."""
    (phase, query, _), = traced.passes
    if tokens <= traced.batch * query:
        return None
    batch, query = (tokens // query, query) if tokens % query == 0 else (tokens, 1)
    return TracedPasses(traced.model, batch, traced.prompt, ((phase, query, 1),))


class Evaluator:
    """Evaluates design points, memoizing configs, traces, kernel tables and device models.

    Everything memoized is a pure function of its key, so one Evaluator can serve a whole sweep.
    """

    def __init__(self, *, blocks: bool = True) -> None:
        # Whether sweeps price static points in blocks (explore/blocks.py) or one by one through the reference
        # path (sim/analytic.py); benchmarks compare the two.
        self.blocks = blocks
        self._configs: dict[str, ModelConfig] = {}
        self._traces: dict[tuple, Trace] = {}
        self._stored_traces: dict[tuple, Trace | LayerTrace] = {}
        self._lowered: dict[tuple, KernelTable] = {}
        self._layer_tables: dict[tuple, LayerTable] = {}
        self._tables: dict[tuple, PassTables] = {}
        self._devices: dict[tuple, Any] = {}
        self._templates: dict[tuple, StepTemplate] = {}
        self._cost_models: dict[tuple, IterationCostModel] = {}
        self._links: dict[str, LinkSpec] = {}  # link presets or files read, by name (_link)
        self._skipped: dict[tuple, tuple[PassTables, PassTables]] = {}  # (tables, depth) -> (them, skipped)
        self._pruned: dict[tuple, tuple] = {}  # (prefill, kept prefill, first layer) -> (them, the pruned prefill)
        self.checked_knobs: set = set()  # what-if values validated for blocks (hw_models/device_block.py)
        self._scales: dict[tuple, tuple] = {}  # ids of (format, config) -> (them, the stored weight scale)
        self._values_checked: set[tuple] = set()  # what _check_values has passed
        self._routed: dict[tuple, ModelConfig] = {}  # (model, routing) -> its config so routed (routed)

    def config(self, model: str | ModelConfig) -> ModelConfig:
        """A model's config by preset name or path; a config given is itself (a draft's MTP module: draft_model)."""
        if isinstance(model, ModelConfig):
            return model
        if model not in self._configs:
            self._configs[model] = load_model_config(model)
        return self._configs[model]

    def trace(self, model: str | ModelConfig, phase: str, batch: int, prompt: int, query: int = 1,
              sampled: int = 1) -> Trace:
        """The prefill of `prompt` tokens, or the first decode step after it (of `query` tokens per sequence, with
        logits at the last `sampled`: a speculative verification's, at every one), for `batch` sequences."""
        return self._trace_config(self.config(model), phase, batch, prompt, query, sampled)

    def _trace_config(self, cfg: ModelConfig, phase: str, batch: int, prompt: int, query: int = 1,
                      sampled: int = 1) -> Trace:
        """A trace of a config, memoized here and on disk (step templates trace their models' first layers only)."""
        key = (cfg, phase, batch, prompt, query, sampled)
        if key not in self._traces:
            from workloads.trace_cache import expanded

            self._traces[key] = expanded(self._stored(cfg, phase, batch, prompt, query, sampled))
        return self._traces[key]

    def _stored(self, cfg: ModelConfig, phase: str, batch: int, prompt: int, query: int = 1,
                sampled: int = 1) -> Trace | LayerTrace:
        """_trace_config's trace as the disk cache stores it (a full model's as its distinct layers), memoized."""
        key = (cfg, phase, batch, prompt, query, sampled)
        if key not in self._stored_traces:
            from workloads.trace_cache import cached_stored  # torch loads only when the disk cache lacks the trace

            self._stored_traces[key] = cached_stored(cfg, **trace_args(phase, batch, prompt, query, sampled))
        return self._stored_traces[key]

    def outline(self, model: str | ModelConfig, phase: str, batch: int, prompt: int) -> Trace:
        """trace's parameters, peak and windows without its ops (a full model's fake trace not expanded for them)."""
        stored = self._stored(self.config(model), phase, batch, prompt)
        return stored.outline() if isinstance(stored, LayerTrace) else stored

    def is_traced(self, model: str | ModelConfig, phase: str, batch: int, prompt: int, query: int = 1,
                  sampled: int = 1) -> bool:
        """Whether the disk cache holds the trace `trace` would load (so no capture, and no torch, is needed)."""
        from workloads.trace_cache import is_cached

        return is_cached(self.config(model), **trace_args(phase, batch, prompt, query, sampled))

    def lowered(self, model: str | ModelConfig, phase: str, batch: int, prompt: int, tp: int = 1, pp: int = 1,
                ep: int = 1, fusion: str = "", query: int = 1, sampled: int = 1, dcp: int = 1) -> KernelTable:
        """The kernels of a traced pass at the traced precision (formats are applied per design point), as one
        of `tp` tensor-parallel devices runs them (experts spread over them with ep = tp; each sequence's keys split
        over groups of `dcp` of them: kernels/parallel.py context_parallel), fused as `fusion` launches them
        (kernels/fusion.py), with sends between `pp` pipeline stages; a decode of `query` tokens per sequence where
        query > 1, with logits at the last `sampled` of them."""
        key = (model, phase, batch, prompt, tp, pp, ep, fusion, query, sampled) + ((dcp,) if dcp > 1 else ())
        if key not in self._lowered:
            table = self._layer_table(model, phase, batch, prompt, tp, ep, fusion, query, sampled, dcp).expanded()
            cfg = self.config(model)
            table = pipeline_sends(table, pp, cfg, residual_apart=fusion == ENGINE)
            if cfg.moe_routing != BALANCED:  # a layer's calls past vLLM's chunk route as it does (KernelTable.routed)
                table = table.routed(cfg.moe_routing, cfg.num_experts, cfg.experts_per_token)
            self._lowered[key] = table
        return self._lowered[key]

    def _layer_table(self, model: str | ModelConfig, phase: str, batch: int, prompt: int, tp: int, ep: int,
                     fusion: str, query: int, sampled: int, dcp: int = 1) -> LayerTable:
        """lowered's kernels before pipeline sends, sharded and fused on the model cut short (kernels/layer_kernels.py
        LayerTable), memoized."""
        key = (model, phase, batch, prompt, tp, ep, fusion, query, sampled) + ((dcp,) if dcp > 1 else ())
        if key not in self._layer_tables:
            if tp == 1 and not fusion:
                table = layer_table(self._stored(self.config(model), phase, batch, prompt, query, sampled))
            else:
                eager = self._layer_table(model, phase, batch, prompt, 1, 1, "", query, sampled)
                cfg = self.config(model)
                table = eager.transformed(lambda t: sharded_rows(t, tp, cfg, ep, dcp)).transformed(
                    lambda t: fused_rows(t, fusion))
            self._layer_tables[key] = table
        return self._layer_tables[key]

    def tables(self, model: str | ModelConfig, batch: int, prompt: int, fmt: NumericFormat, sub_batches: int = 1,
               tp: int = 1, pp: int = 1, ep: int = 1, fusion: str = "", decode_tokens: int = 0,
               dcp: int = 1, prefill_tokens: int = 0) -> PassTables:
        """Prefill and decode tables; with sub_batches > 1, also the decode of each sub-batch (traced at its size);
        with decode_tokens above `batch` (prefill_tokens above its prompts' tokens), the decode (prefill) as an engine
        runs it padded to that many tokens (kernels/padded_pass.py; the padded prefill's layers from one prompt of
        prefill_tokens); with dcp > 1, under decode context parallelism (lowered)."""
        padded = decode_tokens > batch
        padded_prefill = prefill_tokens > batch * prompt
        key = ((model, batch, prompt, fmt, sub_batches, tp, pp, ep, fusion) + ((decode_tokens,) if padded else ())
               + ((("dcp", dcp),) if dcp > 1 else ()) + ((("prefill", prefill_tokens),) if padded_prefill else ()))
        if key not in self._tables:
            sizes = sub_batch_sizes(batch, sub_batches)
            kv_head_dim = self.config(model).head_dim  # what the cache writes store (MLA: the latent's width)

            def decode(size: int) -> KernelTable:
                return self.lowered(model, "decode", size, prompt, tp, pp, ep, fusion, dcp=dcp).with_format(
                    fmt, kv_head_dim=kv_head_dim)

            def prefill(size: int, tokens: int) -> KernelTable:
                return self.lowered(model, "prefill", size, tokens, tp, pp, ep, fusion, dcp=dcp).with_format(
                    fmt, kv_head_dim=kv_head_dim)

            def padded_prefill_table() -> KernelTable:
                # The rows before and after the layers as the step template prices the prompts padded: positions
                # over the longest prompt, the embedding and final norm over the padded tokens, logits at the last.
                template = self.template(model, fmt, tp, ep, fusion)
                shape = replace(step_shape([(prompt, 0)] * batch, sampled=batch),
                                padding=prefill_tokens - batch * prompt)
                return padded_pass(prefill(batch, prompt), prefill(1, prefill_tokens), template_rows(
                    template, shape, PLACE_TAIL), template_rows(template, shape, PLACE_HEAD))

            parts = tuple((size, decode(size)) for size in sizes if len(sizes) > 1)
            self._tables[key] = PassTables(
                prefill=padded_prefill_table() if padded_prefill else prefill(batch, prompt),
                decode=padded_pass(decode(batch), decode(decode_tokens), template_tail(
                    self.template(model, fmt, tp, ep, fusion), decode_tokens, batch)) if padded else decode(batch),
                attention_window=self.outline(model, "decode", batch, prompt).sliding_window, sub_batch_decode=parts,
            )
        return self._tables[key]

    def template(self, model: str | ModelConfig, fmt: NumericFormat, tp: int = 1, ep: int = 1,
                 fusion: str = "") -> StepTemplate:
        """The model's step template under a numeric format, per tensor-parallel device, with the kernels `fusion`
        launches (kernels/shapes.py, kernels/fusion.py)."""
        key = (model, fmt, tp, ep, fusion)
        if key not in self._templates:
            cfg = self.config(model)

            def build(variant: ModelConfig, layer_fmt: NumericFormat) -> StepTemplate:
                few = template_layers(variant)
                return StepTemplate.from_model(
                    variant, layer_fmt, lambda phase, batch, prompt: self._trace_config(few, phase, batch, prompt),
                    shard=lambda table: shard_tensor_parallel(table, tp, few, ep), fusion=fusion)

            # A format with edge layers, dense layers beside MoE ones and MLA's two forms mix two templates each
            # (kernels/mixed_layers.py); any other model and format is built as it is.
            self._templates[key] = edge_mixed_template(lambda layer_fmt: model_template(
                lambda variant: build(variant, layer_fmt), cfg), fmt, cfg.num_layers)
        return self._templates[key]

    def device(self, name: str, overrides: tuple = (), calibrated: bool = True, tp: int = 1, link: str = "",
               link_overrides: tuple = (), pp: int = 1, allreduce: str = "nccl", node_link: str = ""):
        """A device model; with tp or pp > 1, the system of tp x pp such devices joined by the link (with its
        overrides), all-reducing with `allreduce` (kernels/parallel.py ALLREDUCE_IMPLEMENTATIONS), its nodes joined by
        `node_link` (empty: the device's own, hw_models/link.py default_node_link) where it spans more than one domain
        of the link (hw_models/nodes.py; a system within one ignores it)."""
        key = (name, overrides, calibrated, tp, link, link_overrides, pp, allreduce, node_link)
        if key not in self._devices:
            if tp == 1 and pp == 1:
                self._devices[key] = load_device(name, dict(overrides), calibrated=calibrated)
            else:
                device = self.device(name, overrides, calibrated)
                # Uncalibrated devices are compared on datasheet links too (fitted and datasheet links differ by
                # up to 2x on the same hardware).
                joined = load_link_model(link or default_link(device.name), dict(link_overrides), calibrated=calibrated)
                between = load_link_model(node_link or default_node_link(device.name), calibrated=calibrated)
                self._devices[key] = SystemModel(device, tp, joined, pp, allreduce, node_link=between)
        return self._devices[key]

    def fusion(self, point: DesignPoint) -> str:
        """The kernels a point's execution launches on its device (fusion_of)."""
        return fusion_of(point.execution, self.point_device(point).kind)

    def point_device(self, point: DesignPoint):
        """The device model (or system of devices) a design point runs on."""
        return self.device(point.device, point.overrides, point.use_calibration, point.tp, point.link,
                           point.link_overrides, point.pp, point.knob("allreduce"), point.knob("node_link"))

    def cost_model(self, point: DesignPoint, fmt: NumericFormat, attention: bool = False) -> IterationCostModel:
        """The iteration cost model of a point's model, format, device and execution (shared by every
        serving point that differs only in its requests or scheduler, so each shape is priced once); with
        `attention`, its attention on the serving spec's attention devices (attention_pool)."""
        spec = point.serving
        attends_apart = attention and spec is not None and spec.attends_apart
        capture = self.capture_limits(point)
        key = (capture.key(), self.point_model(point), fmt, point.device, point.overrides, point.use_calibration,
               point.execution, point.tp,
               point.link, point.link_overrides, point.ep, point.knob("allreduce"), point.pp, point.knob("overlap"),
               point.knob("node_link"),
               point.knob("attention_parallel"), _lora_rank(point)) + ((("dcp", point.knob("dcp")),)
                                                                        if point.knob("dcp") > 1 else ()) + (
            (spec.attention_device, spec.attention_devices, spec.pool_link, spec.attention_micro_batches,
             point.attention_overrides, spec.attention_placement) if attends_apart else ())
        if key not in self._cost_models and point.knob("attention_parallel") == "data":
            self._cost_models[key] = self._data_parallel_costs(point, fmt, capture)
        if key not in self._cost_models:
            template = self.template(self.point_model(point), fmt, point.tp, point.ep, self.fusion(point))
            if _lora_rank(point):
                template = replace(template, lora_rank=_lora_rank(point))
            if point.knob("dcp") > 1:  # each sequence's keys split over dcp of the tp devices (kernels/shapes.py)
                template = replace(template, context_split=point.knob("dcp"))
            self._cost_models[key] = IterationCostModel(self.point_device(point), template, execution=point.execution,
                                                        kv_bucket_tokens=KV_BUCKET_TOKENS, stages=point.pp,
                                                        send_B_per_token=stage_send_bytes_per_token(
                                                            self.config(point.model), self.fusion(point) == ENGINE),
                                                        attention=self.attention_pool(point, fmt) if attends_apart
                                                        else None, overlap=point.knob("overlap"),
                                                        capture=capture)
        return self._cost_models[key]

    @staticmethod
    def capture_limits(point: DesignPoint) -> CaptureLimits:
        """The scheduler limits a serving point's engine sizes its CUDA graphs by (sim/cuda_graphs.py): its max_seqs
        and its scheduler's token budget; vLLM's defaults for a static point."""
        spec = point.serving
        if spec is None:
            return CaptureLimits()
        return CaptureLimits(max_seqs=spec.max_seqs,
                             max_batched_tokens=make_scheduler(spec.scheduler, spec.limits()).token_budget())

    def _data_parallel_costs(self, point: DesignPoint, fmt: NumericFormat,
                             capture: CaptureLimits) -> IterationCostModel:
        """The cost model of a data-parallel replica (sim/data_parallel.py) on the system of its tp devices: each rank's
        device runs the model's rows but the experts', unsharded; every device its experts (spread, ep = tp, or split,
        ep 1); the link the exchanges between them."""
        cfg, fusion, model = self.config(point.model), self.fusion(point), self.point_model(point)
        whole = self.template(model, fmt, 1, 1, fusion)
        shared = self.template(model, fmt, point.tp, point.ep, fusion)  # the experts spread (ep = tp) or split
        spread = point.ep == point.tp
        experts = ExpertRanks(system=self.point_device(point), template=shared.select_rows(shared.expert_mask),
                              B_per_token=dispatch_bytes_per_token(cfg, point.tp, spread), moe_layers=cfg.moe_layers,
                              exchange="all_to_all" if spread else "gather")
        return IterationCostModel(experts.system, whole.select_rows(~whole.expert_mask), execution=point.execution,
                                  kv_bucket_tokens=KV_BUCKET_TOKENS, experts=experts, capture=capture,
                                  overlap=point.knob("overlap"))

    def attention_pool(self, point: DesignPoint, fmt: NumericFormat) -> AttentionPool:
        """The attention devices of a serving point's replica (sim/attention_pool.py): its spec's attention_devices of
        attention_device, splitting the heads, joined to the tp model devices by attention_link (a port per device; the
        node link where they are more than one domain of it holds: ServingSpec.attention_crossing). The
        point's device what-ifs change the attention devices where they are the point's device (as _on_device's pools),
        and its attention what-ifs (attention_overrides) change them alone."""
        spec = point.serving
        devices = spec.attention_devices
        out_B, back_B = sent_bytes_per_token(self.config(point.model))
        # The attention link, or the node links where one domain of it does not hold both groups of devices.
        crossing = spec.attention_crossing(self.device(point.device, point.overrides, point.use_calibration).name,
                                           self.attention_device(point).name, point.tp * point.pp,
                                           point.knob("node_link"))
        return AttentionPool(
            device=self.attention_device(point),
            devices=devices,
            template=self.template(self.point_model(point), fmt, devices, 1,
                                   fusion_of(point.execution, self.attention_device(point).kind)),
            # A network's bandwidth at most the slower of the two ends' own PCIe links (hw_models/link_pcie.py).
            links=tuple(model_through_pcie(load_link_model(name, calibrated=point.use_calibration),
                                           self.point_device(point).spec, self.attention_device(point).spec)
                        for name in crossing),
            ports=min(point.tp, devices), micro_batches=spec.attention_micro_batches, out_B_per_token=out_B,
            back_B_per_token=back_B, placement=spec.attention_placement)

    def attention_device(self, point: DesignPoint):
        """The device model of a serving point's attention devices: its spec's attention_device with the point's device
        what-ifs where it is the point's device, then the point's attention what-ifs."""
        attending = pool_point(point, point.serving.attention_device, point.attention_overrides)
        return self.device(attending.device, attending.overrides, calibrated=point.use_calibration)

    def pool_hardware(self, point: DesignPoint) -> list[PoolHardware]:
        """The hardware of each of a serving point's pools (serving_pools), as its spec sets them: what its run
        prices and a point not run shows."""
        spec, held = point.serving, []
        for role, replicas, name, own, node_link in serving_pools(point):
            on_pool, kind = pool_point(point, name, own, node_link), pool_kind(role, name)
            scaling = spec.autoscaling(kind)
            # A prefill pool's replicas attend on their own devices (Evaluator._pool's cost model).
            attending = ((spec.attention_devices, self.attention_device(point)),) if (
                spec.attends_apart and role != "prefill") else ()
            held.append(PoolHardware(name=_pool_name(on_pool, kind),
                                     replicas=made_replicas(replicas, scaling),
                                     replica=((1, self.point_device(on_pool)), *attending),
                                     autoscaled=scaling is not None))
        return held

    def evaluate(self, point: DesignPoint, *, event_sim: bool = False, timeline: bool = False,
                 price_infeasible: bool = False) -> Evaluation:
        """Metrics of one design point; event_sim runs the SimPy simulation instead of the analytic sum.

        A point that does not fit in the device's memory is not simulated (its timings are not reported, and
        an absurd output length costs nothing); price_infeasible simulates it anyway, for its result, past the
        model's context too (a measured step of a whole context and its sampled token, as validation prices it). A
        value `explore run` would refuse is an InputError naming the field (explore/point_values.py).
        """
        self._check_values(point, context=not price_infeasible)
        if point.serving is not None:
            evaluation = self._evaluate_serving(point, point.numeric_format)
        else:
            evaluation = self._evaluate_static(point, event_sim, timeline, price_infeasible)
        # Metrics explore computes from the others and from the point's inputs (quality: explore/metrics.py).
        add_derived(evaluation.metrics, point)
        return evaluation

    def _check_values(self, point: DesignPoint, context: bool = True) -> None:
        """check_point_values of a point (its context too, with `context`), once per distinct combination of the values
        it reads (device what-ifs, which vary most in a sweep, are checked where the device is built)."""
        key = (point.model, point.batch, point.prompt, point.output, point.weight_bits, point.act_bits, point.kv_bits,
               point.sparsity, point.execution, point.tp, point.pp, point.ep, point.knobs, point.serving is None,
               context)
        try:
            if key in self._values_checked:
                return
        except TypeError:  # a knob's value that cannot be a key (a list from YAML): checked every time
            check_point_values(point, self.config(point.model), context=context)
            return
        check_point_values(point, self.config(point.model), context=context)
        self._values_checked.add(key)

    def check_point(self, point: DesignPoint) -> None:
        """The checks evaluate() makes of a point's combination of values before it prices anything (InputError
        where one refuses it): the device or system it runs on, offloading, pruning's first layer, a draft model and a
        serving run's limits. Nothing is traced: `explore check` and a sweep's start judge every point this way."""
        self._check_values(point)
        self.point_device(point)
        if point.serving is not None:
            self._check_serving(point)
        elif point.knob("offload") != "none":
            self._check_offload(point)
        if point.serving is None:
            self._check_serving_only(point)
        if point.knob("prompt_kept") != 1.0 and point.serving is None:
            self._check_prompt_kept(point)
        if point.knob("spec_draft"):
            self._check_draft(point)

    @staticmethod
    def _check_serving_only(point: DesignPoint) -> None:
        """A static batch refuses the knobs priced in serving iterations only (SERVING_ONLY_KNOBS)."""
        if off := _off_default(point, SERVING_ONLY_KNOBS):
            name, allowed, why = off
            raise InputError(f"{name}: found {point.knob(name)!r} in a static batch, allowed: {allowed} ({why}: add "
                             f"serving:, or --serving)")

    def _evaluate_static(self, point: DesignPoint, event_sim: bool, timeline: bool,
                         price_infeasible: bool) -> Evaluation:
        """A static batch of the point's batch, prompt and output on its device (or system)."""
        self._check_serving_only(point)
        if point.knob("offload") != "none":
            self._check_offload(point)
        device = self.point_device(point)
        if unjudged := point.unjudged():  # knobs not modeled together: recorded unevaluated, saying why; nothing built
            return Evaluation(point=point, metrics=_metrics(None, None, unjudged, device), result=None, tables=None)
        workload = BatchWorkload(batch=point.batch, prompt_len=point.prompt, output_len=point.output)
        # The KV window as the point's tables carry it (point_tables).
        memory = self.batch_memory(point, device, workload, self.kv_window(point))
        reason = infeasible_reason(memory, device.memory_bytes, device.devices)
        tables = self.point_tables(point, device)
        speculative = self.speculative_tables(point, tables)
        traffic = None
        if (reason or point.knob("offload_window")) and point.knob("offload") != "none":
            memory, reason, traffic = self.offloaded(point, device, workload, memory)
        if reason and not price_infeasible:
            result = None
        elif speculative is not None:
            # Priced in closed form (sim/speculative.py); the event simulation has no speculative steps.
            result = evaluate_speculative(device, speculative, workload, memory, execution=point.execution)
        elif event_sim:
            result = simulate(device, tables, workload, memory, record_timeline=timeline, execution=point.execution,
                              traffic=traffic)
        else:
            result = evaluate_analytic(device, tables, workload, memory, execution=point.execution, traffic=traffic)
        return Evaluation(point=point, metrics=_metrics(result, memory, reason, device, offloaded_B=memory.offloaded_B),
                          result=result, tables=tables, speculative=speculative)

    def _check_offload(self, point: DesignPoint) -> None:
        """Offloading runs a static batch over a host link (InputError otherwise; what it does not model beside it is
        not run: DesignPoint.unjudged)."""
        self.host_link(point, self.point_device(point))

    def offloaded(self, point: DesignPoint, device, workload: BatchWorkload,
                  memory: MemoryFootprint) -> tuple[MemoryFootprint, str, LinkTraffic | None]:
        """A static-batch point that does not fit in device memory, run with the least of it in host memory that its
        offload knob allows, or with its weights under a sliding window (offload_window; sim/offload.py): what the
        device then holds, why it still cannot run ('' when it can)
        and the bytes each pass moves over the host link (None when it cannot run)."""
        cfg = self.config(self.point_model(point))
        window_layers = point.knob("offload_window")
        if window_layers:
            plan = plan_window(memory, cfg.num_layers, window_layers)
            held = device_footprint(memory, plan)
            if reason := infeasible_reason(held, device.memory_bytes, device.devices):
                return memory, f"offload_window {window_layers} of {cfg.num_layers} layers: {reason}", None
        else:
            plan = plan_offload(memory, device.memory_bytes, cfg.num_layers, point.knob("offload"),
                                _routed_experts(cfg, point.numeric_format, point.batch, point.prompt).weights_share)
            if isinstance(plan, str):
                return memory, plan, None
        if not plan.offloaded_B:  # a window of every layer: nothing moves
            return memory, "", None
        spec = self.host_link(point, device)
        # Each of the tp devices streams its own share over its own host link (TPI-LLM: each device reads its slice of
        # the weights from its own disk), at once: the system's link carries tp links' bandwidth.
        link = HostLink(bandwidth_Bps=spec.bandwidth_Bps * point.tp, latency_s=spec.latency_s,
                        prefetch=bool(point.knob("offload_prefetch")))
        window = self.kv_window(point)
        # One token of every sequence, on every device (KV heads copied where tp exceeds them, as batch_memory holds).
        token_B = _kv_token_B(cfg, point.numeric_format) * point.batch * kv_replication(cfg, point.tp,
                                                                                      point.knob("dcp"))
        own = cfg.layer_windows  # each layer's own window caps its share (gpt-oss)
        traffic = offload_traffic(
            plan, link, layers=cfg.num_layers, prompt_kv_B=token_B * layer_kept(kept_tokens(point.prompt, window), own),
            # Each step's attention reads the cache before its own token, whose KV it has just computed on the device.
            step_kv_B=token_B * layer_kept(fetched_tokens(workload.decode_kv_lengths() - 1, window), own),
            token_kv_B=token_B,
            experts=_routed_experts(cfg, point.numeric_format, point.batch, point.prompt),
            decode_layers=kept_layers(cfg.num_layers, point.knob("exit_depth")))
        return device_footprint(memory, plan), "", traffic

    def host_link(self, point: DesignPoint, device) -> LinkSpec:
        """The link a point's offloaded bytes stream over: its host_link knob, else its device preset's host_link."""
        name = point.knob("host_link")
        if not name:
            preset = getattr(device.spec, "host_link", None)
            if preset is None:
                raise InputError(f"host_link: device {point.device!r} names no host link in its preset, allowed: a "
                                 f"link preset ({', '.join(link_names())}) or a link YAML path as host_link "
                                 f"(--host-link)")
            name = preset.link
        return self._link(name)

    def _link(self, name: str) -> LinkSpec:
        """The link preset or file `name`, read once."""
        if name not in self._links:
            self._links[name] = load_link(name)
        return self._links[name]

    def point_tables(self, point: DesignPoint, device) -> PassTables:
        """The kernel tables of a static-batch point's passes on its device (or system), its prefill and decode padded
        as its engine pads them (sim/step_costs.py batch_launches, under its capture limits); decode attention capped at
        the point's KV window (kv_window), and with per-head budgets, the prefill's streaming heads at theirs; with
        prefill_kept below 1, the prefill's attention at its kept pairs after its estimate's kernels
        (kernels/block_sparse.py); with prompt_kept below 1, the prefill's pruned layers at the kept prompt tokens."""
        prefill, decode = batch_launches(device, point.execution, BatchWorkload(
            batch=point.batch, prompt_len=point.prompt, output_len=point.output), limits=self.capture_limits(point))
        tables = self.tables(self.point_model(point), point.batch, point.prompt, point.numeric_format,
                             device.sub_batches, point.tp, point.pp, point.ep, fusion_of(point.execution, device.kind),
                             decode.tokens, point.knob("dcp"), prefill.tokens)
        tables = self._skip_layers(point, tables)
        window = self.kv_window(point)
        if window == tables.attention_window:
            return self._prune_prompt(point, device, tables)
        if isinstance(window, KVPolicy):
            tables = replace(tables, prefill=_windowed_prefill(tables.prefill, window, point.prompt))
        if isinstance(window, KVPolicy) and window.eviction is not None:
            tables = replace(tables, prefill=scored_prefill(tables.prefill, 1.0 - window.full_heads,
                                                            window.eviction.prefill_score_B, window.limit))
        if isinstance(window, KVPolicy) and window.eviction is not None and window.eviction.method == D2O:
            # The prompt's evicted tokens merged (kernels/kv_eviction.py).
            tables = replace(tables, prefill=merged_prefill(tables.prefill, window.window, 1.0 - window.full_heads,
                                                            window.eviction.key_B))
        if isinstance(window, KVPolicy) and window.prefill is not None:
            tables = replace(tables, prefill=with_estimate(
                tables.prefill, lambda q_len, kv_len: estimate_pairs(q_len, kv_len, window, window.limit)))
        return self._prune_prompt(point, device, replace(tables, attention_window=window))

    def _prune_prompt(self, point: DesignPoint, device, tables: PassTables) -> PassTables:
        """The point's tables with its prefill's layers from prune_start on processing prompt_kept of the prompt
        tokens (kernels/token_prune.py): those layers, the final norm and the LM head as the same point's prefill at
        the kept prompt length prices them. Decode is left as it is (pruned tokens may be revived)."""
        kept = point.knob("prompt_kept")
        if kept == 1.0:
            return tables
        self._check_prompt_kept(point)
        first = first_pruned_layer(self.config(point.model).num_layers, point.knob("prune_start"))
        tokens = kept_prompt_tokens(point.prompt, kept)
        if tokens == point.prompt:
            return tables
        short = self.point_tables(replace(point, prompt=tokens, knobs=tuple(
            (name, value) for name, value in point.knobs if name != "prompt_kept")), device).prefill
        key = (id(tables.prefill), id(short), first)
        hit = self._pruned.get(key)
        if hit is None or hit[0] is not tables.prefill or hit[1] is not short:
            hit = self._pruned[key] = (tables.prefill, short, pruned_prefill(tables.prefill, short, first))
        return replace(tables, prefill=hit[2])

    def _check_prompt_kept(self, point: DesignPoint) -> None:
        """Prompt-token pruning starts from a layer the model has (InputError otherwise; on pipeline stages it is not
        run: DesignPoint.unjudged)."""
        layers = self.config(point.model).num_layers
        if first_pruned_layer(layers, point.knob("prune_start")) == layers:
            raise InputError(f"prune_start: found {point.knob('prune_start')}, which rounds to all of {point.model}'s "
                             f"{layers} layers before pruning starts, allowed: below {(layers - 0.5) / layers:g} (at "
                             f"least one layer prunes)")

    def _skip_layers(self, point: DesignPoint, tables: PassTables) -> PassTables:
        """The point's decode tables at its exit_depth (kernels/early_exit.py): the prefill runs every layer (on
        pipeline stages or beside a draft it is not run: DesignPoint.unjudged)."""
        depth = point.knob("exit_depth")
        if depth == 1.0:
            return tables
        key = (id(tables), depth)
        if key not in self._skipped:
            layers = self.config(point.model).num_layers
            self._skipped[key] = (tables, replace(
                tables, decode=skip_layers(tables.decode, layers, depth),
                sub_batch_decode=tuple((size, skip_layers(table, layers, depth))
                                       for size, table in tables.sub_batch_decode)))
        return self._skipped[key][1]

    def kv_window(self, point: DesignPoint) -> Window:
        """The most KV-cache tokens a sequence of the point keeps and decode attends to: the model's sliding window,
        the point's kv_budget (explore/knobs.py), the smaller of the two, or None (all of them); with retrieval_heads,
        a KVPolicy whose streaming heads keep that window (DuoAttention's where there is none); with a kv_budget_method
        other than streaming, the budget's heads keep it by importance scores (kernels/kv_eviction.py); with
        prefill_kept below 1, a KVPolicy whose prefill computes that share of its pairs beyond SALE's local window
        (kernels/block_sparse.py)."""
        own = self.config(point.model).sliding_window
        limits = [n for n in (own, point.knob("kv_budget")) if n]
        window = min(limits) if limits else None
        full_heads = point.knob("retrieval_heads")
        selection = self.token_selection(point)
        evicts = self.eviction(point)
        prefill = PrefillSelection(point.knob("prefill_kept")) if point.knob("prefill_kept") != 1.0 else None
        if not full_heads and selection is None and evicts is None and prefill is None:
            return window
        if full_heads:
            window = window or DUO_WINDOW_TOKENS
        return KVPolicy(window=window, full_heads=full_heads, limit=own, selection=selection, eviction=evicts,
                        prefill=prefill)

    def eviction(self, point: DesignPoint) -> Eviction | None:
        """How the point's kv_budget is kept (kernels/kv_eviction.py): None for StreamingLLM's sinks + recent
        window, or without a kv_budget (the method then has nothing to evict to)."""
        if not point.knob("kv_budget"):
            return None
        cfg = self.config(point.model)
        return eviction(point.knob("kv_budget_method"), heads=cfg.num_heads, kv_heads=cfg.num_kv_heads,
                        head_dim=cfg.head_dim, kv_element_B=2.0 * point.numeric_format.kv_scale(cfg.head_dim))

    def token_selection(self, point: DesignPoint) -> TokenSelection | None:
        """The point's dynamic top-k token selection (kernels/token_select.py), or None where decode reads every
        token it keeps (topk_fraction 1)."""
        share = point.knob("topk_fraction")
        if share == 1.0:
            return None
        cfg = self.config(point.model)
        return token_selection(point.knob("topk_method"), share, layers=cfg.num_layers, heads=cfg.num_heads,
                               kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
                               kv_element_B=2.0 * point.numeric_format.kv_scale(cfg.head_dim),
                               reuse=point.knob("topk_reuse"))

    def speculation(self, point: DesignPoint) -> Speculation | None:
        """The point's speculative decoding (sim/speculative.py), or None where it decodes plainly."""
        if not point.knob("spec_draft"):
            return None
        return Speculation(drafted=point.knob("spec_tokens"), acceptance=point.knob("acceptance"),
                           tree=point.knob("spec_tree"), match=point.knob("ngram_match"))

    def _check_draft(self, point: DesignPoint) -> None:
        """A draft must be smaller than the point's model and shard over its tp devices, an MTP draft's model ship
        one (InputError otherwise; on pipeline stages it is not run: DesignPoint.unjudged)."""
        draft = point.knob("spec_draft")
        tree, drafted = point.knob("spec_tree"), point.knob("spec_tokens")
        if 0 < tree < drafted:
            raise InputError(f"spec_tree: found {tree} with spec_tokens {drafted}, allowed: 0 (a chain) or at least "
                             f"{drafted} candidates (a tree holds the chain of drafted tokens it is priced to accept)")
        if draft == MTP and (reason := mtp_error(self.config(point.model))):
            raise InputError(f"spec_draft: {reason}")
        if tree and draft != MEDUSA:
            raise InputError(f"spec_tree: found {tree} with spec_draft {draft!r}, allowed: 0 (a chain): only Medusa "
                             f"heads are priced verifying a tree (a draft model or an MTP module drafts one chain of "
                             f"spec_tokens tokens)")
        if draft != NGRAM and point.knob("ngram_match") != 1.0:
            raise InputError(f"ngram_match: found {point.knob('ngram_match')} with spec_draft {draft!r}, allowed: 1 "
                             f"(only an n-gram lookup, spec_draft {NGRAM!r}, drafts on some steps alone)")
        if names_draft_model(draft):
            reason = draft_error(self.config(point.model), self.config(draft))
            if reason:
                raise InputError(f"spec_draft: {reason}")
            try:
                check_tensor_parallel(self.config(draft), point.tp)
            except ValueError as err:
                raise InputError(f"spec_draft: {draft!r} with tp {point.tp}: the draft shards over the target's "
                                 f"devices (vLLM's default draft tensor parallelism): {err}") from None

    def draft_model(self, point: DesignPoint) -> str | ModelConfig:
        """A drafting point's draft model as this Evaluator's methods take a model: its spec_draft, or its model's MTP
        module (spec_draft 'mtp': ModelConfig.mtp_module)."""
        return self.draft_of(self.point_model(point), point.knob("spec_draft"))

    def draft_of(self, model: str | ModelConfig, draft: str) -> str | ModelConfig:
        """The model that drafts for `model` as a spec_draft `draft` names it: a draft model by its name, or the
        model's MTP module for 'mtp' (ModelConfig.mtp_module); routed as `model` is (ModelConfig.moe_routing: the
        workload's tokens reach a draft's experts as they reach the target's)."""
        if draft == MTP:
            return self.config(model).mtp_module()
        return self.routed(draft, self.config(model).moe_routing)

    def point_model(self, point: DesignPoint) -> str | ModelConfig:
        """A point's model as this Evaluator's methods take a model: routed by its moe_routing knob (routed)."""
        return self.routed(point.model, point.knob("moe_routing"))

    def routed(self, model: str | ModelConfig, routing: str) -> str | ModelConfig:
        """`model` with its MoE layers routed by `routing` (ModelConfig.moe_routing): `model` itself under balanced
        routing, the default, so that every memo keyed by a model name keeps its key, and where it has no experts to
        route to; else its config so routed."""
        if routing == BALANCED or not self.config(model).is_moe:
            return model
        key = (model, routing)
        if key not in self._routed:
            self._routed[key] = replace(self.config(model), moe_routing=routing)
        return self._routed[key]

    def engine_kv_groups(self, point: DesignPoint) -> KVGroups | None:
        """vLLM's KV cache groups of a serving point whose model's attention windows differ by layer (gpt-oss; None
        otherwise): of the target's layers and a draft model's beside them. vLLM v1 registers the draft's attention
        layers in the engine's one KV cache config with the target's (the proposer takes as its own the layers its
        load adds: vllm/v1/spec_decode/eagle.py load_model), each a full layer unless its config's layer_types makes
        it sliding (LlamaAttention, indexed from the draft's first layer: vllm/model_executor/models/llama.py, commit
        e06c9ba2 of vllm-project/vllm), and _get_kv_cache_groups_uniform_page_size groups them all
        (vllm/v1/core/kv_cache_utils.py, commit 001cabc1: 'gpt-oss-20b + eagle, with 12 sw + 13 full' pads to two
        groups of 13), so a draft's blocks are the groups' blocks (sim/hybrid_kv.py kv_groups)."""
        cfg = self.config(point.model)
        if not cfg.layer_windows:
            return None
        windows = cfg.layer_windows
        if names_draft_model(point.knob("spec_draft")):
            draft = self.config(self.draft_model(point))
            windows += tuple(draft.layer_window(layer) for layer in range(draft.num_layers))
        return kv_groups(windows)

    @staticmethod
    def draft_ep(point: DesignPoint) -> int:
        """A draft's expert parallelism: an MTP module's layer lays its experts out as the target's layers do (vLLM
        builds it with the target's parallel config), a draft model runs with none."""
        return point.ep if point.knob("spec_draft") == MTP else 1

    def speculative_passes(self, model: str | ModelConfig, draft: str, spec: Speculation, batch: int,
                           prompt: int) -> SpeculativePasses:
        """The passes a static point of `model` drafting with `draft` takes beside its plain prefill and decode."""
        # The target computes logits at every verified token: the rejection sampler compares each drafted token with
        # its distribution there, and the last gives the bonus token (vLLM v1: vllm/v1/sample/rejection_sampler.py).
        verify = TracedPasses(model, batch, prompt, (("decode", spec.verified, spec.verified),))
        one = None
        if batch > 1:
            alone = self.speculative_passes(model, draft, spec, 1, prompt)  # the draft's decode only: no prefill
            one = replace(alone, draft=alone.draft and replace(alone.draft, passes=PLAIN_PASSES[1:]))
        if draft in (MEDUSA, NGRAM):
            return SpeculativePasses(verify=verify, draft=None, draft_first=None, one_sequence=one)
        drafter = self.draft_of(model, draft)
        return SpeculativePasses(
            verify=verify, draft=TracedPasses(drafter, batch, prompt + draft_slots(draft), PLAIN_PASSES),
            draft_first=TracedPasses(drafter, batch, prompt, (("decode", first_draft_tokens(draft, spec), 1),)),
            one_sequence=one)

    def speculative_tables(self, point: DesignPoint, target: PassTables) -> SpeculativeTables | None:
        """The passes of a speculative static point whose plain passes are `target` (point_tables): the target's
        prefill, its verification of the drafted tokens (with Medusa heads) and the draft's prefill, first step of
        each speculative step and decode step (speculative_passes); None without speculation."""
        spec = self.speculation(point)
        if spec is None:
            return None
        self._check_draft(point)
        fmt, fusion, draft = point.numeric_format, self.fusion(point), point.knob("spec_draft")
        passes = self.speculative_passes(self.point_model(point), draft, spec, point.batch, point.prompt)
        one = None if passes.one_sequence is None else self._step_tables(point, passes.one_sequence, fmt, fusion)
        if passes.draft is None:  # Medusa heads, or n-gram drafts beside the plain decode
            step = self._step_tables(point, passes, fmt, fusion)
            return SpeculativeTables(prefill=target.prefill, verify=step.verify, speculation=spec,
                                     window=target.attention_window, draft=None, one_sequence=one, plain=step.plain)
        # A draft shards over the target's tp devices, as vLLM's draft tensor parallelism does by default; its prefill
        # and decode step padded as an engine pads them (batch_launches, step_launches), as vLLM pads the drafter's
        # passes (vllm-project/vllm vllm/v1/spec_decode/eagle.py at 008603a, propose: pad_for_cudagraph).
        drafted = passes.draft
        prefill, _ = batch_launches(self.point_device(point), point.execution, BatchWorkload(
            batch=drafted.batch, prompt_len=drafted.prompt, output_len=point.output), limits=self.capture_limits(point))
        draft_tables = self.tables(drafted.model, drafted.batch, drafted.prompt, fmt, tp=point.tp,
                                   ep=self.draft_ep(point), fusion=fusion,
                                   decode_tokens=self._launches(point, passes).draft_decode.tokens,
                                   prefill_tokens=prefill.tokens)
        step = self._step_tables(point, passes, fmt, fusion, draft_decode=draft_tables.decode)
        (_, first_query, _), = passes.draft_first.passes
        return SpeculativeTables(
            prefill=target.prefill, verify=step.verify, speculation=spec, window=target.attention_window,
            draft=draft_tables, draft_first=step.draft_first, draft_query=first_query,
            draft_positions=self.config(drafted.model).max_positions, one_sequence=one)

    def _step_tables(self, point: DesignPoint, passes: SpeculativePasses, fmt: NumericFormat, fusion: str,
                     draft_decode: KernelTable | None = None) -> DecodePasses:
        """The kernels of a speculative step's passes, each padded as an engine runs it (step_launches): the
        verification (with Medusa heads over its rows, which run unpadded after it, as the serving core prices them:
        ServingSpeculation) and the draft's first and later steps (`draft_decode` where the draft's tables hold it
        already: Evaluator.tables)."""
        launched = self._launches(point, passes)
        verify = self._launched_pass(passes.verify, launched.verify.tokens, fmt, point.tp, point.ep, fusion)
        spec = self.speculation(point)
        if point.knob("spec_draft") == NGRAM:  # no drafter; the sequences without a match decode one token
            plain = replace(passes.verify, passes=(("decode", 1, 1),))
            return DecodePasses(verify=verify, plain=self._single_pass(plain, fmt, point.tp, point.ep, fusion))
        if passes.draft is None:  # Medusa heads
            heads = medusa_head_table(self.config(point.model), spec.drafted, passes.verify.batch * spec.verified,
                                      point.tp)
            return DecodePasses(verify=KernelTable.concat([verify, heads.with_format(fmt)]))
        ep = self.draft_ep(point)
        if draft_decode is None:
            draft_decode = self._launched_pass(replace(passes.draft, passes=PLAIN_PASSES[1:]),
                                               launched.draft_decode.tokens, fmt, point.tp, ep, fusion)
        return DecodePasses(verify=verify, draft_first=self._launched_pass(
            passes.draft_first, launched.draft_first.tokens, fmt, point.tp, ep, fusion), draft_decode=draft_decode)

    def _launches(self, point: DesignPoint, passes: SpeculativePasses) -> StepLaunches:
        """How an engine launches the speculative step `passes` of a static point (launches, under the point's
        capture limits)."""
        return launches(passes, self.speculation(point), self.point_device(point), point.execution,
                        self.capture_limits(point))

    def _launched_pass(self, traced: TracedPasses, tokens: int, fmt: NumericFormat, tp: int, ep: int,
                       fusion: str) -> KernelTable:
        """The kernels of a one-pass TracedPasses (_single_pass) as an engine runs it padded to `tokens` tokens
        (kernels/padded_pass.py): its decoder layers from the pass at the padded size (padded_traced), its attention
        its own, the rows after the layers the step template's."""
        own = self._single_pass(traced, fmt, tp, ep, fusion)
        padded = padded_traced(traced, tokens)
        if padded is None:
            return own
        (_, _, sampled), = traced.passes
        return padded_pass(own, self._single_pass(padded, fmt, tp, ep, fusion), template_tail(
            self.template(traced.model, fmt, tp, ep, fusion), tokens, traced.batch * sampled))

    def _single_pass(self, traced: TracedPasses, fmt: NumericFormat, tp: int, ep: int, fusion: str) -> KernelTable:
        """The kernels of a one-pass TracedPasses on one of `tp` devices, in format `fmt`."""
        (phase, query, sampled), = traced.passes
        return self.lowered(traced.model, phase, traced.batch, traced.prompt, tp=tp, ep=ep, fusion=fusion,
                            query=query, sampled=sampled).with_format(fmt,
                                                                      kv_head_dim=self.config(traced.model).head_dim)

    def _stored_scale(self, fmt: NumericFormat, cfg: ModelConfig) -> float:
        """stored_weight_scale of a format on a model, memoized (by the format object first: hashing one reads every
        field)."""
        key = (id(fmt), id(cfg))
        hit = self._scales.get(key)
        if hit is None or hit[0] is not fmt or hit[1] is not cfg:
            hit = self._scales[key] = (fmt, cfg, stored_weight_scale(fmt, cfg))  # both kept alive with their ids
        return hit[2]

    def batch_memory(self, point: DesignPoint, device, workload: BatchWorkload, window: Window) -> MemoryFootprint:
        """What a static-batch point (running `workload`) holds in each device's memory: weights, KV cache and
        activations; `window`: the point's KV window (kv_window), as its tables carry it (point_tables)."""
        fmt, cfg = point.numeric_format, self.config(point.model)
        prefill_trace = self.outline(self.point_model(point), "prefill", point.batch, point.prompt)
        memory = batch_footprint(
            weight_bytes=_weight_bytes(prefill_trace.param_bytes, fmt, device, cfg, self._stored_scale(fmt, cfg)),
            # The prompt and every output token but the last, which is never fed back into the model; a decode
            # token that skips layers holds KV in the layers it runs only (kernels/early_exit.py).
            kv_bytes_per_token=_kv_token_B(cfg, fmt) * kv_replication(cfg, point.tp, point.knob("dcp")),
            batch=point.batch,
            tokens_per_sequence=workload.prompt_len + workload.decode_steps * decode_kv_share(
                cfg.num_layers, point.knob("exit_depth")),
            activation_bytes=prefill_trace.peak_activation_bytes,
            window=window, layer_windows=cfg.layer_windows,
        )
        draft = point.knob("spec_draft")
        if draft in ("", NGRAM):  # n-gram drafts hold nothing on the device but the KV of the tokens verified
            return memory
        if draft == MEDUSA:
            heads_B = _medusa_heads_B(prefill_trace.param_bytes, cfg, point.knob("spec_tokens"), fmt, device,
                                      point.tp)
            return replace(memory, weights_B=memory.weights_B + heads_B)
        # A draft model (or MTP module) holds its weights and a KV cache of its own as long as the target's.
        draft_cfg = self.config(self.draft_model(point))
        draft_trace = self.outline(draft_cfg, "prefill", point.batch, point.prompt)
        held = batch_footprint(weight_bytes=_weight_bytes(_own_param_bytes(draft_trace.param_bytes, draft_cfg), fmt,
                                                          device, draft_cfg),
                               kv_bytes_per_token=_kv_token_B(draft_cfg, fmt) * kv_replication(
                                   draft_cfg, point.tp), batch=point.batch,
                               tokens_per_sequence=workload.prompt_len + workload.decode_steps,
                               activation_bytes=draft_trace.peak_activation_bytes, window=window,
                               layer_windows=draft_cfg.layer_windows)
        return MemoryFootprint(weights_B=memory.weights_B + held.weights_B,
                               kv_cache_B=memory.kv_cache_B + held.kv_cache_B,
                               activations_B=max(memory.activations_B, held.activations_B))

    def _pool(self, point: DesignPoint, fmt: NumericFormat, role: str, replicas: int, device_name: str = "",
              own: tuple = (), node_link: str = "") -> Pool:
        """A pool of a serving point: `replicas` of the point's device (or of `device_name`, without the point's
        overrides), with the pool's `own` what-ifs and node link (pool_point), each holding the model's weights, the
        activations of its largest iteration and KV blocks."""
        spec, cfg = point.serving, self.config(point.model)
        point = pool_point(point, device_name, own, node_link)
        if role == "prefill" and point.knob("dcp") > 1:
            # Decode context parallelism is the decode pool's: the prefill pool holds its KV whole on each device, as
            # a vLLM prefill instance at dcp 1 does, the decode devices each reading their share of it
            # (DesignPoint._context_parallel_unjudged names the connector's source).
            point = replace(point, knobs=tuple((name, value) for name, value in point.knobs if name != "dcp"))
        device, costs = self.point_device(point), self.cost_model(point, fmt, attention=role != "prefill")
        limits = spec.limits()
        ranks = 1 if costs.experts is None else costs.experts.ranks
        # Data-parallel ranks each hold the weights but the experts' (kernels/data_parallel.py).
        weights_B = _weight_bytes(costs.template.param_bytes * replicated_weight_share(cfg, ranks, fmt), fmt, device,
                                  cfg)
        # One adapter on the replica's devices, each of the tp devices its shard (kernels/lora.py); max_loras GPU slots
        # of them are held beside the weights.
        adapter_B = (point.tp * adapter_bytes(costs.template.linear, costs.template.count, spec.lora_rank)
                     if spec.lora_adapters else 0.0)
        weights_B += spec.max_loras * adapter_B
        attention = costs.attention
        # The KV heads are split over the devices attending: the model's tp, or the attention devices; a data-parallel
        # rank holds its sequences' KV whole.
        kv_per_token_B = _kv_token_B(cfg, fmt) * kv_replication(
            cfg, 1 if ranks > 1 else point.tp if attention is None else attention.devices, point.knob("dcp"))
        # Under decode context parallelism vLLM's KV manager counts blocks of block_size x dcp tokens, each device
        # holding block_size of them, the blocks as many as one device's memory holds pages of block_size tokens
        # (vllm/v1/core/kv_cache_coordinator.py UnitaryKVCacheCoordinator, commit 52b9a57d: block_size *=
        # dcp_world_size): a block takes the bytes it does without.
        block_tokens = spec.block_tokens * point.knob("dcp")
        groups = self.engine_kv_groups(point)
        if groups is not None:  # a block is one group's: its layers' share of a token's KV (sim/hybrid_kv.py)
            kv_per_token_B *= groups.layers / cfg.num_layers
        speculation = self._serving_speculation(point, fmt, role, device)
        if speculation is not None and role != "prefill":
            limits = replace(limits, lookahead_slots=speculation.lookahead_slots)
        if speculation is not None and speculation.draft is not None:  # the draft's weights and KV live here too
            draft_cfg = self.config(self.draft_model(point))
            weights_B += _weight_bytes(_own_param_bytes(speculation.draft.template.param_bytes, draft_cfg), fmt,
                                        device, draft_cfg)
            if groups is None:  # beside hybrid groups the draft's layers are among the groups' (engine_kv_groups)
                kv_per_token_B += _kv_token_B(draft_cfg, fmt) * kv_replication(draft_cfg, point.tp)
        elif speculation is not None:
            weights_B += _medusa_heads_B(costs.template.param_bytes, cfg, point.knob("spec_tokens"), fmt, device,
                                         point.tp)
        # Each pipeline stage, and each data-parallel rank, holds the activations of the iteration it runs.
        budget = make_scheduler(spec.scheduler, limits).token_budget()
        activations_B = costs.template.activation_bytes(budget) * point.pp * ranks
        # device.memory_bytes: every device of the replica (tp x pp), of which the engine may use memory_share.
        memory = serving_memory(capacity_B=device.memory_bytes, weights_B=weights_B, activations_B=activations_B,
                                kv_bytes_per_token=kv_per_token_B, block_tokens=block_tokens,
                                utilization=spec.memory_share, devices=device.devices,
                                **({} if attention is None else dict(
                                    kv_devices=attention.devices, hybrid=attention.hybrid,
                                    kv_capacity_B=attention.devices * attention.device.memory_bytes)))
        idle_W = device.idle_power_W + (0.0 if attention is None else attention.devices * attention.device.idle_power_W)
        engines = point.pp * ranks
        host_blocks = int((spec.host_cache_GB or 0) * 1e9 / memory.kv_block_B) // engines
        if spec.host_cache_GB and not host_blocks:
            raise InputError(f"host_cache_GB: found {spec.host_cache_GB:g}, allowed: 0 (none) or at least one KV block "
                             f"for each of a replica's {engines} engine(s), "
                             f"{engines * memory.kv_block_B / 1e9:.3g} GB")
        store_blocks = int((spec.kv_store_GB or 0) * 1e9 / memory.kv_block_B)
        if spec.kv_store_GB and not store_blocks:
            raise InputError(f"kv_store_GB: found {spec.kv_store_GB:g}, allowed: 0 (none) or at least one KV block, "
                             f"{memory.kv_block_B / 1e9:.3g} GB")
        kind = pool_kind(role, device_name)
        return Pool(name=_pool_name(point, kind), role=role, replicas=replicas, costs=costs,
                    scheduler=spec.scheduler, limits=limits, memory=memory, idle_power_W=idle_W,
                    router=spec.router or DEFAULT_ROUTER,
                    # A fleet's mixed replicas scale by mixed_max_replicas, the point's own pools by theirs.
                    autoscaling=_autoscaling(spec, weights_B, kind),
                    # A decode pool caches one shared prefix; with several, each request's KV crosses whole.
                    prefix_tokens=0 if role == "decode" and spec.groups > 1 else spec.prefix_tokens,
                    prefix_groups=spec.system_prompts if spec.rooted else spec.groups, root=spec.rooted,
                    cascade=spec.cascade,
                    window=self.kv_window(point), kv_groups=groups,
                    # A data-parallel rank swaps its own sequences over its own device's host link.
                    host_link_Bps=None if (swap := self._host_link_Bps(point, device)) is None else
                    swap / ranks, host_cache_blocks=host_blocks,
                    # The store holds whole blocks of the replicas' shards; a rank fetches over its own device's NIC.
                    kv_store_blocks=store_blocks,
                    kv_store_Bps=self._kv_store_Bps(point, device) / ranks if spec.kv_store_GB else None,
                    adapter_load_s=self._adapter_load_s(point, device, adapter_B) if spec.lora_adapters else 0.0,
                    speculation=speculation, seed=spec.seed, stages=point.pp, ranks=ranks)

    def _handoff_s(self, point: DesignPoint, on_prefill: DesignPoint, on_decode: DesignPoint, kind: str,
                   ports: int) -> Callable[[float], float]:
        """The time a request's KV of so many bytes takes from a prefill replica to a decode pool's of `kind` (decode,
        mixed; `on_prefill`, `on_decode`: their pools' points, pool_point), over the handover's links to that pool
        (ServingSpec.handoff_links), each of the `ports` sending its share at once. The KV leaves the prefill device's
        PCIe link for its NIC and enters the decode device's from its own (hw_models/link_pcie.py): each link at most
        the slower of the two PCIe links."""
        ends = [self.point_device(on_pool).spec for on_pool in (on_prefill, on_decode)]
        links = [model_through_pcie(load_link_model(name), *ends)
                 for name in point.serving.handoff_links(point.device, point.knob("node_link"), kind)]

        def transfer_s(message_B: float) -> float:
            return max(float(link.collective_time_s("send_recv", message_B / ports, 2)) for link in links)
        return transfer_s

    def _kv_store_Bps(self, point: DesignPoint, device) -> float:
        """What a replica fetches from the pool's KV store per second: each of its tp x pp devices (`device` their
        model) its shard of the blocks at once, at kv_store_GBps or its node link's NIC rate (the pool's: pool_point,
        where the user names one, else hw_models/link.py default_node_link: the network a store across machines is
        reached over, as Mooncake's transfer engine reaches it over RDMA), at most the device's own PCIe link's
        (hw_models/link_pcie.py)."""
        gbps = point.serving.kv_store_GBps
        if gbps is None:
            gbps = through_pcie(self._link(point.knob("node_link") or default_node_link(point.device)),
                                device.spec).bandwidth_GBps
        return gbps * 1e9 * point.tp * point.pp

    def _adapter_load_s(self, point: DesignPoint, device, adapter_B: float) -> float:
        """The time a LoRA adapter of `adapter_B` bytes over a replica's devices takes from host memory into a GPU
        slot: each device its share over its own host link (host_link) at once, as vLLM's activate_adapter copies each
        wrapped module's A and B into the slot (sim/lora.py); none on a CPU, whose memory is the host's."""
        if device.kind == "cpu":
            return 0.0
        return adapter_B / (self.host_link(point, device).bandwidth_Bps * device.devices)

    def _host_link_Bps(self, point: DesignPoint, device) -> float | None:
        """What a replica moves between device and host memory per second, for swap preemption or a host cache (None:
        neither): each of its tp x pp devices moves its shard of the blocks over its own host link, swap_GBps or its
        device preset's host_link, at once."""
        spec = point.serving
        if spec.preemption != "swap" and not spec.host_cache_GB:
            return None
        if spec.swap_GBps:
            return spec.swap_GBps * 1e9 * point.tp * point.pp
        preset = getattr(device.spec, "host_link", None)
        if preset is None:
            given, allowed = (("preemption: found 'swap'", "recompute, or swap") if spec.preemption == "swap" else
                              (f"host_cache_GB: found {spec.host_cache_GB:g}", "0, or a host cache"))
            raise InputError(f"{given} on device {point.device!r}, whose preset names no host link to move KV over, "
                             f"allowed: {allowed} with swap_GBps (--swap-GBps) set to the bandwidth of its host link")
        return self._link(preset.link).bandwidth_Bps * point.tp * point.pp

    def _serving_speculation(self, point: DesignPoint, fmt: NumericFormat, role: str,
                             device) -> ServingSpeculation | None:
        """How a pool's replicas decode speculatively (None: plainly). A prefill pool decodes nothing, but before a
        draft model can draft it needs its own KV of the prompt, which the prefill pool computes beside the target's
        and hands over with it (Medusa heads need none: None there)."""
        speculation = self.speculation(point)
        if speculation is None or (role == "prefill" and point.knob("spec_draft") in (MEDUSA, NGRAM)):
            return None
        self._check_draft(point)
        if point.knob("spec_draft") == NGRAM:  # no drafter to price (NGRAM: its host time is not priced)
            return ServingSpeculation(speculation, lookup=True)
        if point.knob("spec_draft") != MEDUSA:  # a draft on the target's tp devices, drafting within its context
            model = self.draft_model(point)
            return ServingSpeculation(speculation, draft=self.cost_model(replace(point, model=model,
                                                                                 ep=self.draft_ep(point)), fmt),
                                      draft_positions=self.config(model).max_positions,
                                      draft_query=first_draft_tokens(point.knob("spec_draft"), speculation),
                                      drops_last_hit=drops_last_hit(point.knob("spec_draft")))
        cfg = self.config(point.model)
        return ServingSpeculation(speculation, device=device, execution=point.execution,
                                  heads=lambda rows: medusa_head_table(cfg, speculation.drafted, rows,
                                                                       point.tp).with_format(fmt))

    def _check_serving(self, point: DesignPoint) -> None:
        """What a serving run does not model (InputError): offloading, layer skipping, cascade attention under a KV
        policy (which keeps tokens of its own choosing, the shared prefix perhaps not among them); and what the
        model's context allows of its requests (ServingSpec.check_context); beside a model whose attention windows
        differ by layer (gpt-oss, its KV in vLLM's hybrid groups: sim/hybrid_kv.py), what shares cached prefixes or
        reshapes its iterations (_check_layer_windows)."""
        point.serving.check_context(self.config(point.model).max_positions, point.model)
        if self.config(point.model).layer_windows:
            self._check_layer_windows(point)
        window = self.kv_window(point)
        if point.serving.cascade and isinstance(window, KVPolicy) and window.chooses_tokens:
            raise InputError("prefix_attention: found 'cascade' with a KV policy (retrieval_heads, topk_fraction or a "
                             "kv_budget_method other than streaming), allowed: paged (a policy keeps tokens of its own "
                             "choosing, so the sequences share no prefix to read once)")
        if off := _off_default(point, STATIC_ONLY_KNOBS):
            name, allowed, why = off
            raise InputError(f"{name}: found {point.knob(name)!r} with serving:, allowed: {allowed} ({why})")
        if point.serving.attends_apart:
            self._check_attention(point)
        for _, _, name, own, node_link in serving_pools(point):
            on_pool = pool_point(point, name, own, node_link)
            self._host_link_Bps(on_pool, self.point_device(on_pool))  # a pool's link to swap over

    def _check_layer_windows(self, point: DesignPoint) -> None:
        """A model whose attention windows differ by layer serves without what is not modeled beside its hybrid KV
        cache groups: a host tier or KV store under its prefix cache (its hits are modeled on the device:
        sim/kv_cache.py), cascade attention (vLLM's sliding group finds no common prefix blocks: SlidingWindowManager.
        get_num_common_prefix_blocks returns 0, vllm/v1/core/single_type_kv_cache_manager.py, commit 002f3491), a
        prefix cache beside groups other than one full and one sliding (sim/hybrid_kv.py KVGroups.sliding_window), a
        KV window or policy of the point's, an MTP module, a draft model whose layers hold a token's KV in other bytes
        than the target's (vLLM would then grow some groups' blocks to one page size: unify_kv_cache_spec_page_size,
        vllm/v1/core/kv_cache_utils.py, commit 001cabc1), attention devices of their own and token splitting
        (InputError otherwise). A draft model's layers join the target's groups (engine_kv_groups); Medusa's heads
        write no KV: its verifications attend at each layer's window (kernels/shapes.py step_shape)."""
        spec = point.serving
        window = self.kv_window(point)
        # What shares cached prefixes, where the model's groups are not the layout whose hits are modeled.
        sharing = next(((name, value) for name, value, on in (
            ("prefix_tokens", spec.prefix_tokens, spec.prefix_tokens),
            ("conversation_turns", spec.conversation_turns, spec.conversations),
            ("trace", spec.trace, spec.traced_tree)) if on), None)
        groups = self.engine_kv_groups(point)
        beside = (("host_cache_GB", spec.host_cache_GB, spec.host_cache_GB),
                  ("kv_store_GB", spec.kv_store_GB, spec.kv_store_GB),
                  ("prefix_attention", "cascade", spec.cascade),
                  (*(sharing or ("", None)), sharing and groups is not None and groups.sliding_window is None),
                  ("kv_budget", window, window is not None),
                  ("spec_draft", point.knob("spec_draft"), point.knob("spec_draft") == MTP),
                  ("attention_device", spec.attention_device, spec.attends_apart),
                  ("overlap", point.knob("overlap"), point.knob("overlap") != "none"))
        for name, value, on in beside:
            if on:
                allowed = {"spec_draft": "none, medusa, ngram or a draft model",
                           "prefix_attention": "paged"}.get(name, "none")
                raise InputError(f"{name}: found {value!r} with {point.model!r}, whose attention windows differ by "
                                 f"layer, allowed: {allowed} (beside vLLM's hybrid KV cache groups, a host tier or KV "
                                 f"store, cascade attention, a prefix cache beside groups other than one full and one "
                                 f"sliding, a KV budget, an MTP module, attention devices and token_split are not "
                                 f"modeled)")
        if names_draft_model(point.knob("spec_draft")):
            self._check_draft_page(point)

    def _check_draft_page(self, point: DesignPoint) -> None:
        """A draft model beside hybrid KV groups holds a token's KV in each layer in the bytes a target's layer does
        (on each of the point's tp devices), so that its layers' blocks are the groups' (InputError otherwise)."""
        fmt = point.numeric_format

        def layer_B(cfg: ModelConfig) -> float:
            return _kv_token_B(cfg, fmt) * kv_replication(cfg, point.tp) / cfg.num_layers

        target, draft = self.config(point.model), self.config(self.draft_model(point))
        if layer_B(draft) != layer_B(target):
            raise InputError(f"spec_draft: found {draft.name} ({layer_B(draft):g} bytes of KV a token in each layer), "
                             f"allowed with {point.model!r}, whose attention windows differ by layer: a draft whose "
                             f"layers hold a token's KV in the target's {layer_B(target):g} bytes (vLLM's hybrid KV "
                             f"cache groups share one page size; grown blocks are not modeled)")

    def _check_attention(self, point: DesignPoint) -> None:
        """Attention on devices of its own (sim/attention_pool.py): the attention devices split the heads, their
        device and link load (InputError otherwise; what it does not model beside it is not run:
        DesignPoint.unjudged)."""
        spec = point.serving
        if spec.attention_placement == "hybrid":
            self._check_hybrid(point)
        try:
            check_tensor_parallel(self.config(point.model), spec.attention_devices)
        except ValueError as err:
            raise InputError(f"attention_devices: {err}: the attention devices split the heads") from None
        self.attention_device(point)
        load_link_model(spec.pool_link)

    @staticmethod
    def _check_hybrid(point: DesignPoint) -> None:
        """A hybrid placement (sim/attention_pool.py) sends to its CPU host over a link the point names (InputError
        otherwise; what it does not model beside it is not run: DesignPoint.unjudged)."""
        if point.serving.attention_link is None:
            raise InputError("attention_placement: found 'hybrid' with no attention_link, allowed: the link between "
                             "the GPU and its host CPU, e.g. pcie3-x16 for a T4 or pcie4-x16 (without one it would be "
                             "Lamina's network, roce-400g)")

    def _evaluate_serving(self, point: DesignPoint, fmt: NumericFormat) -> Evaluation:
        """A serving run of the point's requests on its pools of replicas (sim/serving.py), or at the highest
        rate that meets the SLO when the spec asks for a capacity search."""
        spec = point.serving
        self._check_serving(point)
        device, held = self.point_device(point), self.pool_hardware(point)
        if reason := point.unjudged():  # what the run would answer is not what the point asks: nothing of it is built
            return Evaluation(point=point, metrics=_serving_unrun(spec, None, reason, device, held), result=None,
                              tables=None)
        cfg = self.config(point.model)
        pools = [self._pool(point, fmt, *pool) for pool in serving_pools(point)]
        if spec.disaggregated:
            # Each of a replica's tp x pp devices sends its shard of the KV (its heads of its stage's layers) over its
            # own port (a DGX has one NIC per GPU: the link preset's source), all at once; to attention devices, each
            # takes its heads' share over its own. A data-parallel rank holds its sequences' KV whole: its device's
            # port alone sends it (sim/serving.py gives each rank its own). A fleet's mixed replicas are laid out as
            # the point's, so their ports are as many.
            ports = 1 if pools[0].ranks > 1 else point.tp * point.pp if pools[1].costs.attention is None else min(
                point.tp * point.pp, spec.attention_devices)
            on_pools = [(pool_point(point, name, own, link), pool_kind(role, name))
                        for role, _, name, own, link in serving_pools(point)]
            transfer_s = [self._handoff_s(point, on_pools[0][0], on_decode, kind, ports)
                          for on_decode, kind in on_pools[1:]]
        else:
            transfer_s = None
        memory = pools[1 if spec.disaggregated else 0].memory  # the point's own device's pool

        def run(rate: float | None) -> ServingResult:
            requests, clipped = spec.request_set(rate).clipped_to_context(cfg.max_positions)
            for pool in pools:
                scheduler = make_scheduler(pool.scheduler, pool.limits)
                memory_reason = serving_memory_reason(pool.memory, requests, scheduler, spec.prefix_tokens,
                                                      self.kv_window(point), engines=pool.engines,
                                                      groups=pool.kv_groups)
                cached = shared_prefix_tokens(spec.prefix_tokens, pool.memory.block_tokens)
                reason = memory_reason or serving_budget_reason(requests, scheduler, cached)
                if reason:
                    raise _InfeasibleError(f"{pool.name}: {reason}" if len(pools) > 1 else reason,
                                           fits=not memory_reason)
            result = serve_pools(pools, requests, slo=spec.slo(), kv_transfer_s=transfer_s, admission=spec.admission(),
                                 decode_pick=spec.decode_pick or DECODE_PICKS[0])
            result.extra["clipped_requests"] = float(clipped)
            return result

        results: dict[float | None, ServingResult] = {}

        def judge(rate: float) -> RateVerdict:
            results[rate] = run(rate)
            return rate_verdict(results[rate])

        try:
            if spec.capacity:
                found = search_capacity(judge, low=spec.capacity[0], high=spec.capacity[1])
                capacity = found.rate_per_s
                result = results[capacity or spec.capacity[0]]
            else:
                result = results.setdefault(None, run(None))
        except _InfeasibleError as err:
            return Evaluation(point=point, metrics=_serving_unrun(spec, memory, str(err), device, held, err.fits),
                              result=None, tables=None)
        metrics = _metrics(result, memory, "", device, held)
        if spec.capacity:
            metrics["capacity_rps"] = capacity
            metrics.update(found.metrics())
        return Evaluation(point=point, metrics=metrics, result=result, tables=None)


def _serving_unrun(spec, memory, reason: str, device, pools: list[PoolHardware], fits: bool = True) -> dict[str, Any]:
    """The metrics of a serving point not run for `reason`: every column its run would fill NaN, those the spec's
    settings add too, its hardware every pool's; `memory` None where nothing of the point was built
    (DesignPoint.unjudged)."""
    metrics = _metrics(None, memory, reason, device, pools, fits=fits)
    metrics.update(dict.fromkeys(SERVING_METRICS, math.nan))
    if spec.prioritized:  # the columns priorities add (sim/serving_metrics.py)
        metrics.update(dict.fromkeys(URGENT_METRICS, math.nan))
    if spec.slo_slowdown is not None:  # the columns a slowdown SLO adds (sim/slowdown.py)
        metrics.update(dict.fromkeys(SLOWDOWN_METRICS, math.nan))
    if spec.capacity:  # the columns a capacity search adds (sim/capacity.py)
        metrics.update(dict.fromkeys(CAPACITY_METRICS, math.nan) | {"capacity_note": ""})
    if spec.scaling_asked:
        metrics.update(dict.fromkeys(AUTOSCALE_METRICS, math.nan))  # the columns an autoscaled pool adds
    if spec.admission() is not None:  # the columns a gateway rejecting requests adds (sim/serving.py)
        metrics.update(dict.fromkeys(REJECTION_METRICS, math.nan))
    return metrics


def _autoscaling(spec, weights_B: float, role: str) -> Autoscaling | None:
    """How the pool of `role` scales (ServingSpec.autoscaling), a new replica's cold start where the spec leaves it
    unset its weights read over COLD_START_LINK."""
    scaling = spec.autoscaling(role)
    if scaling is None or spec.cold_start_s is not None:
        return scaling
    return replace(scaling, cold_start_s=weights_B / (load_link(COLD_START_LINK).bandwidth_GBps * 1e9))


def _lora_rank(point: DesignPoint) -> int:
    """The rank of the LoRA adapters a serving point's iterations run (0: LoRA off)."""
    spec = point.serving
    return spec.lora_rank if spec is not None and spec.lora_adapters else 0


def serving_pools(point: DesignPoint) -> list[tuple[str, int, str, tuple, str]]:
    """A serving point's pools in the order its run serves them: each one's role, replicas, device ('' the point's),
    own what-ifs and own node link ('' the point's: ServingSpec.pool_node_link); a prefill pool then the decode pool,
    or the point's replicas; then a fleet's mixed ones, decoding beside the decode pool or serving beside the point's
    replicas."""
    spec = point.serving
    own = [("prefill", spec.prefill_replicas, spec.prefill_device, point.prefill_overrides, spec.prefill_node_link),
           ("decode", spec.replicas, "", (), "")] if spec.disaggregated else [("serve", spec.replicas, "", (), "")]
    return own + ([(own[-1][0], spec.mixed_replicas, spec.mixed_device, point.mixed_overrides, spec.mixed_node_link)]
                  if spec.mixed else [])


def pool_kind(role: str, device_name: str) -> str:
    """A pool's kind, what names it and picks its autoscaling: its role, or 'mixed' for a fleet's other replicas,
    serving or decoding (a pool of their own, apart from the point's though they be of its device)."""
    return "mixed" if role != "prefill" and device_name else role


def _pool_name(on_pool: DesignPoint, kind: str) -> str:
    """The name of a pool of `kind` on its point (pool_point)."""
    return f"{kind} ({on_pool.device})"


@dataclass(frozen=True)
class PoolHardware:
    """A serving pool's hardware: the replicas it makes (every one it may scale to) and one replica's devices (or
    systems) and how many of each, its attention devices included."""

    name: str
    replicas: int
    replica: tuple[tuple[int, Any], ...]
    autoscaled: bool


def pool_point(point: DesignPoint, device_name: str, own: tuple = (), node_link: str = "") -> DesignPoint:
    """A serving pool's point: on `device_name` without the point's device what-ifs, its devices joined by their own
    link where their preset names one (an L4 pair by PCIe, whatever joins the point's H100s), else by the point's link
    and its what-ifs (a device file's); or on the point's device (the name empty or its own) with them; then the pool's
    `own` what-ifs (explore/pool_what_ifs.py), which win; its nodes joined by its own `node_link` where it names one,
    else by the point's (ServingSpec.pool_node_link)."""
    if device_name and device_name != point.device:
        own_link = dict(link="", link_overrides=()) if has_default_link(load_device(device_name).name) else {}
        point = replace(point, device=device_name, overrides=(), **own_link)
    if own:
        point = replace(point, overrides=tuple((dict(point.overrides) | dict(own)).items()))
    if node_link:
        point = replace(point, knobs=tuple(sorted((dict(point.knobs) | {"node_link": node_link}).items())))
    return point


# calibration_label's labels, least calibrated first.
CALIBRATION_ORDER = ("none", "sibling", "fitted")


def _pool_devices(pools: list[PoolHardware]) -> list[tuple[int, Any]]:
    """Every pool's devices (or systems) and how many of each: its replicas' (every one an autoscaled pool may hold)
    and their attention devices."""
    return [(pool.replicas * count, device) for pool in pools for count, device in pool.replica]


def _pools_hardware(pools: list[PoolHardware]) -> tuple[float, SystemPrice, float]:
    """Area, price and TDP of every replica of every pool, its attention devices included."""
    held = _pool_devices(pools)

    def total(value) -> float | None:
        values = [value(device.price) for _, device in held]
        if any(v is None for v in values):
            return None  # a device without a published price: the system has none
        return sum(count * v for (count, _), v in zip(held, values, strict=True))

    area = sum(count * device.area_mm2 for count, device in held)
    tdp_W = sum(count * device.tdp_W for count, device in held)
    return (area, SystemPrice(usd=total(lambda price: price.usd), usd_per_hour=total(lambda price: price.usd_per_hour)),
            tdp_W)


class _InfeasibleError(Exception):
    """A serving point that cannot run (its reason is the message); `fits`: whether its memory holds it (a scheduler
    limit, not memory, stops it)."""

    def __init__(self, reason: str, *, fits: bool = False):
        super().__init__(reason)
        self.fits = fits


def _windowed_prefill(prefill: KernelTable, policy: KVPolicy, prompt: int) -> KernelTable:
    """A prefill whose streaming heads attend to their window only (DuoAttention): its attention FLOPs scaled to
    the (query, key) pairs computed (kernels/kv_policy.py); the keys and values are still read once."""
    share = policy.prefill_attention_share(prompt)
    return replace(prefill, flops=np.where(prefill.attention_mask, prefill.flops * share, prefill.flops))


def _kv_token_B(config: ModelConfig, fmt: NumericFormat) -> float:
    """Bytes one token's keys and values take in every layer of `config` under `fmt`, on one device holding them all."""
    return config.kv_bytes_per_token() * fmt.kv_scale(config.head_dim)


def _weight_bytes(param_bytes: float, fmt: NumericFormat, device, config: ModelConfig | None = None,
                  scale: float | None = None) -> float:
    """Bytes of weights on the device: stored in the sparse layout only on a device that computes on it. A mixed
    format stores each part of `config`'s model at its bits (kernels/module_params.py); without a config (weights
    outside the decoder layers, such as Medusa heads) every weight takes weight_bits. Outliers and entropy coding
    change what is stored (NumericFormat.stored_weight_scale)."""
    if scale is None:  # `scale`: stored_weight_scale(fmt, config), where the caller holds it
        scale = stored_weight_scale(fmt, config) if config is not None else fmt.stored_weight_scale()
    return param_bytes * scale * (fmt.sparse_weight_scale if exploits(device.sparsity_patterns, fmt) else 1.0)


def _off_default(point: DesignPoint, table: tuple[tuple[str, str], ...]) -> tuple[str, str, str] | None:
    """The first knob of `table` ((name, why it is refused) pairs) the point sets off its default: its name, the default
    as a message allows it, and why; None where it sets none."""
    for name, why in table:
        default = knob(name).default
        if point.knob(name) != default:
            return name, f"{default:g}" if isinstance(default, float) else str(default), why
    return None


# Knobs priced in serving iterations only, each with why: a static batch that sets one off its default is refused.
SERVING_ONLY_KNOBS = (
    ("overlap", "token splitting and dual-batch overlap are priced in serving iterations"),
    ("attention_parallel", "data-parallel ranks run their own batches in lockstep in serving iterations"),
)
# Knobs priced in static batches only, each with why: a serving point that sets one off its default is refused.
STATIC_ONLY_KNOBS = (
    ("offload", "offloading in a serving run is not modeled; a static batch offloads"),
    ("exit_depth", "layer skipping is priced in static batches; a serving iteration mixing prefill and skipping "
     "decode tokens is not modeled yet"),
    ("prompt_kept", "prompt-token pruning is priced in static batches; a serving iteration's prefill chunks with "
     "pruned layers are not modeled yet"),
)


def _routed_experts(cfg: ModelConfig, fmt: NumericFormat, batch: int, prompt: int) -> RoutedExperts:
    """A static batch's routed experts for its offloaded traffic: their share of the stored weights, and the share of
    a layer's experts its prefill (batch x prompt tokens) and each decode step (batch tokens) reach under the
    routing the kernel tables route by (ModelConfig.moe_routing, kernels/moe.py device_routing); under power_law
    each expert's chance of being reached, the most popular first, its identity keeping its popularity from step to
    step (sim/offload.py places the most popular on the device)."""
    if not cfg.is_moe:
        return RoutedExperts()
    experts, topk = cfg.num_experts, cfg.experts_per_token

    def reached(tokens: int) -> float:
        return device_routing(tokens, topk, experts, experts, cfg.moe_routing)[0] / experts

    def ranked(tokens: int) -> tuple[float, ...]:
        return reach_chances(power_law_popularity(topk, experts), tokens) if cfg.moe_routing == POWER_LAW else ()

    return RoutedExperts(weights_share=expert_byte_share(fmt, cfg), prefill_reached=reached(batch * prompt),
                         decode_reached=reached(batch), prefill_ranked=ranked(batch * prompt),
                         decode_ranked=ranked(batch))


def _own_param_bytes(param_bytes: float, config: ModelConfig) -> float:
    """Of `param_bytes` traced weights of `config`'s module, those it holds of its own (an MTP module shares its
    model's embedding and LM head: ModelConfig.shared_param_count)."""
    return param_bytes * (1.0 - config.shared_param_count() / config.param_count())


def _medusa_heads_B(param_bytes: float, config: ModelConfig, heads: int, fmt: NumericFormat, device,
                    tp: int = 1) -> float:
    """Bytes of `heads` Medusa heads on `config`'s model of `param_bytes` traced weights, over `tp` devices: stored as
    its weights are (the traced bytes per parameter, then the format's weight bits)."""
    return _weight_bytes(medusa_head_params(config, heads, tp) * (param_bytes / config.param_count()), fmt, device)


# Each kernel class's busy time metric (time_gemm_s, ...), communication included.
_CLASS_TIMES = tuple((c, f"time_{c}_s") for c in TIME_CLASSES)


def _metrics(result: SimResult | ServingResult | None, memory, reason: str, device,
             pools: list[PoolHardware] | None = None, offloaded_B: float = 0.0,
             fits: bool | None = None) -> dict[str, Any]:
    """The results row's metrics; area and price are the device's (or system's), or every pool replica's;
    offloaded_B what the point keeps in host memory; `fits`: whether memory holds a point that cannot run for
    another reason (default: whether it runs); `memory` None where a point not run was not built (DesignPoint.unjudged):
    its memory columns empty, peak_memory_B and offloaded_B NaN and fits_in_memory None, as nothing was counted."""
    if reason:
        # A design that does not fit cannot run: its timings are not reported (nor its memory where it was not built).
        metrics: dict[str, Any] = dict.fromkeys(RESULT_METRICS, math.nan) | {
            "peak_memory_B": math.nan if memory is None else memory.total_B}
        metrics.update({key: math.nan for _, key in _CLASS_TIMES})
    else:
        metrics = result.metrics()
        by_class = result.time_by_class_s
        metrics.update({key: by_class.get(c, 0.0) for c, key in _CLASS_TIMES})
    built = memory is not None or result is not None
    metrics.update(fits_in_memory=(not reason if fits is None else fits) if built else None, infeasible_reason=reason,
                   offloaded_B=offloaded_B if built else math.nan)
    metrics.update(hardware_metrics(device, metrics["tokens_per_s"], pools))
    if pools and any(pool.autoscaled for pool in pools):  # it rents the replica-hours its pools held
        usd_per_hour = _held_usd_per_hour(pools, result) if result is not None else math.nan
        metrics.update(usd_per_hour=usd_per_hour, tokens_per_usd=metrics["tokens_per_s"] / (usd_per_hour / 3600))
    return metrics


def _held_usd_per_hour(pools: list[PoolHardware], result: ServingResult) -> float:
    """What pools, some autoscaled, rent an hour on average: each pool's replicas' hourly price (and their attention
    devices') over the replica-hours it held (NaN where a device publishes no hourly price)."""
    total = 0.0
    for pool in pools:
        if any(device.price.usd_per_hour is None for _, device in pool.replica):
            return math.nan
        each = sum(count * device.price.usd_per_hour for count, device in pool.replica)
        total += each * result.held_replica_s[pool.name] / result.makespan_s
    return total


def hardware_metrics(device, tokens_per_s, pools: list[PoolHardware] | None = None) -> dict[str, Any]:
    """The metrics of the hardware itself (the device's or system's, or every pool replica's), and output tokens
    per dollar of its hourly price at `tokens_per_s` (a number, or an array over a block of points)."""
    area_mm2, price, tdp_W = _pools_hardware(pools) if pools else (device.area_mm2, device.price, device.tdp_W)
    usd_per_s = price.usd_per_hour / 3600 if price.usd_per_hour else math.nan
    devices = [held for _, held in _pool_devices(pools)] if pools else [device]
    return dict(
        # Whether fitted efficiency models priced this point: the preset's own ("fitted"), its architecture
        # sibling's ("sibling"), or none (the datasheet roofline, or a family's analytical model); of a system of
        # pools (a prefill device, attention devices), the least calibrated of its devices.
        calibrated=min((calibration_label(held) for held in devices), key=CALIBRATION_ORDER.index), area_mm2=area_mm2,
        cost_usd=price.usd if price.usd is not None else math.nan,
        tokens_per_usd=tokens_per_s / usd_per_s,
        # What the whole system rents for (every device of it), where its preset publishes an hourly price.
        usd_per_hour=price.usd_per_hour if price.usd_per_hour else math.nan,
        # What it is rated to draw: energy is priced per action and as idle power x time, which nothing caps here.
        tdp_W=tdp_W,
    )
