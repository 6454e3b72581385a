"""Evaluate design points: trace (once per model, batch and prompt), lower, price, simulate, report metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from explore.design_point import DesignPoint
from explore.metrics import KERNEL_CLASSES, add_derived
from hw_models.gpu_efficiency import calibration_label
from hw_models.link import default_link, load_link_model
from hw_models.registry import load_device
from hw_models.system import SystemModel, SystemPrice
from kernels.formats import NumericFormat
from kernels.fusion import ENGINE, fuse
from kernels.lowering import lower_trace
from kernels.parallel import kv_replication, pipeline_sends, shard_tensor_parallel
from kernels.shapes import TEMPLATE_LAYERS, StepTemplate
from kernels.table import KernelTable
from sim.analytic import evaluate as evaluate_analytic
from sim.capacity import highest_rate
from sim.costs import IterationCostModel
from sim.engine import simulate
from sim.memory import MemoryFootprint, batch_footprint, infeasible_reason
from sim.result import RESULT_METRICS, SimResult
from sim.schedulers import make_scheduler
from sim.serving import SERVING_METRICS, Pool, ServingResult, serve_pools, serving_infeasible_reason, serving_memory
from sim.step_costs import sub_batch_sizes
from sim.workload import BatchWorkload, PassTables
from workloads.errors import InputError
from workloads.model_config import ModelConfig, load_model_config
from workloads.trace import Trace

# Mean KV lengths of serving iterations are priced in buckets of this many tokens (one KV block): a long
# run then prices each distinct shape once, and attention time moves by under a block's share of its keys.
KV_BUCKET_TOKENS = 16


def fusion_of(execution: str) -> str:
    """The kernels an execution mode launches: a serving engine's fused kernels for 'engine', the eager ones
    (one per aten op) otherwise (kernels/fusion.py)."""
    return ENGINE if execution == "engine" else ""


@dataclass(frozen=True)
class Evaluation:
    point: DesignPoint
    metrics: dict[str, Any]
    result: SimResult | ServingResult | None  # None: the point does not fit in memory and was not simulated
    tables: PassTables | None  # None for a serving point (its iterations come from a step template)


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
        self._lowered: dict[tuple, KernelTable] = {}
        self._tables: dict[tuple, PassTables] = {}
        self._devices: dict[tuple, Any] = {}
        self._templates: dict[tuple, StepTemplate] = {}
        self._cost_models: dict[tuple, IterationCostModel] = {}
        self.checked_knobs: set = set()  # what-if values validated for blocks (hw_models/device_block.py)

    def config(self, model: str) -> ModelConfig:
        if model not in self._configs:
            self._configs[model] = load_model_config(model)
        return self._configs[model]

    def trace(self, model: str, phase: str, batch: int, prompt: int) -> Trace:
        """The prefill of `prompt` tokens, or the first decode step after it, for `batch` sequences."""
        return self._trace_config(self.config(model), phase, batch, prompt)

    def _trace_config(self, cfg: ModelConfig, phase: str, batch: int, prompt: int) -> Trace:
        """A trace of a config, memoized here and on disk (step templates trace their models' first layers only)."""
        key = (cfg, phase, batch, prompt)
        if key not in self._traces:
            from workloads.trace_cache import cached_trace  # torch loads only when the disk cache lacks the trace

            self._traces[key] = (cached_trace(cfg, phase="prefill", batch=batch, seq_len=prompt) if phase == "prefill"
                                 else cached_trace(cfg, phase="decode", batch=batch, seq_len=1, context_len=prompt))
        return self._traces[key]

    def lowered(self, model: str, phase: str, batch: int, prompt: int, tp: int = 1, pp: int = 1,
                ep: int = 1, fusion: str = "") -> KernelTable:
        """The kernels of a traced pass at the traced precision (formats are applied per design point), as one
        of `tp` tensor-parallel devices runs them (experts spread over them with ep = tp), fused as `fusion`
        launches them (kernels/fusion.py), with sends between `pp` pipeline stages."""
        key = (model, phase, batch, prompt, tp, pp, ep, fusion)
        if key not in self._lowered:
            if tp == 1 and pp == 1:
                eager = KernelTable.from_kernels(lower_trace(self.trace(model, phase, batch, prompt)))
                self._lowered[key] = fuse(eager, fusion)
            else:
                cfg = self.config(model)
                whole = self.lowered(model, phase, batch, prompt)
                sharded = fuse(shard_tensor_parallel(whole, tp, cfg, ep), fusion)
                self._lowered[key] = pipeline_sends(sharded, pp, cfg)
        return self._lowered[key]

    def tables(self, model: str, batch: int, prompt: int, fmt: NumericFormat, sub_batches: int = 1,
               tp: int = 1, pp: int = 1, ep: int = 1, fusion: str = "") -> PassTables:
        """Prefill and decode tables; with sub_batches > 1, also the decode of each sub-batch (traced at its size)."""
        key = (model, batch, prompt, fmt, sub_batches, tp, pp, ep, fusion)
        if key not in self._tables:
            sizes = sub_batch_sizes(batch, sub_batches)
            parts = tuple((size, self.lowered(model, "decode", size, prompt, tp, pp, ep, fusion).with_format(fmt))
                          for size in sizes if len(sizes) > 1)
            self._tables[key] = PassTables(
                prefill=self.lowered(model, "prefill", batch, prompt, tp, pp, ep, fusion).with_format(fmt),
                decode=self.lowered(model, "decode", batch, prompt, tp, pp, ep, fusion).with_format(fmt),
                attention_window=self.trace(model, "decode", batch, prompt).sliding_window, sub_batch_decode=parts,
            )
        return self._tables[key]

    def template(self, model: str, fmt: NumericFormat, tp: int = 1, ep: int = 1, fusion: str = "") -> StepTemplate:
        """The model's step template under a numeric format, per tensor-parallel device, with the kernels `fusion`
        launches (kernels/shapes.py, kernels/fusion.py)."""
        key = (model, fmt, tp, ep, fusion)
        if key not in self._templates:
            cfg = self.config(model)
            few = replace(cfg, num_layers=min(cfg.num_layers, TEMPLATE_LAYERS))  # every layer runs the same kernels
            self._templates[key] = StepTemplate.from_model(
                cfg, fmt, lambda phase, batch, prompt: self._trace_config(few, phase, batch, prompt),
                shard=lambda table: shard_tensor_parallel(table, tp, few, ep), fusion=fusion)
        return self._templates[key]

    def device(self, name: str, overrides: tuple = (), calibrated: bool = True, tp: int = 1, link: str = "",
               link_overrides: tuple = (), pp: int = 1):
        """A device model; with tp or pp > 1, the system of tp x pp such devices joined by the link (with its
        overrides)."""
        key = (name, overrides, calibrated, tp, link, link_overrides, pp)
        if key not in self._devices:
            if tp == 1 and pp == 1:
                self._devices[key] = load_device(name, dict(overrides), calibrated=calibrated)
            else:
                device = self.device(name, overrides, calibrated)
                # Uncalibrated devices are compared on datasheet links too (fitted and datasheet links differ by
                # up to 2x on the same hardware).
                self._devices[key] = SystemModel(device, tp, load_link_model(
                    link or default_link(device.name), dict(link_overrides), calibrated=calibrated), pp)
        return self._devices[key]

    def point_device(self, point: DesignPoint):
        """The device model (or system of devices) a design point runs on."""
        return self.device(point.device, point.overrides, point.use_calibration, point.tp, point.link,
                           point.link_overrides, point.pp)

    def cost_model(self, point: DesignPoint, fmt: NumericFormat) -> IterationCostModel:
        """The iteration cost model of a point's model, format, device and execution (shared by every
        serving point that differs only in its requests or scheduler, so each shape is priced once)."""
        key = (point.model, fmt, point.device, point.overrides, point.use_calibration, point.execution, point.tp,
               point.link, point.link_overrides, point.ep)
        if key not in self._cost_models:
            template = self.template(point.model, fmt, point.tp, point.ep, fusion_of(point.execution))
            self._cost_models[key] = IterationCostModel(self.point_device(point), template, execution=point.execution,
                                                        kv_bucket_tokens=KV_BUCKET_TOKENS)
        return self._cost_models[key]

    def evaluate(self, point: DesignPoint, *, event_sim: bool = False, timeline: bool = False,
                 price_infeasible: bool = False) -> Evaluation:
        """Metrics of one design point; event_sim runs the SimPy simulation instead of the analytic sum.

        A point that does not fit in the device's memory is not simulated (its timings are not reported, and
        an absurd output length costs nothing); price_infeasible simulates it anyway, for its result.
        """
        if point.serving is not None:
            evaluation = self._evaluate_serving(point, point.numeric_format)
        else:
            evaluation = self._evaluate_static(point, event_sim, timeline, price_infeasible)
        add_derived(evaluation.metrics)  # metrics explore computes from the others (explore/metrics.py)
        return evaluation

    def _evaluate_static(self, point: DesignPoint, event_sim: bool, timeline: bool,
                         price_infeasible: bool) -> Evaluation:
        """A static batch of the point's batch, prompt and output on its device (or system)."""
        device = self.point_device(point)
        tables = self.point_tables(point, device)
        workload = BatchWorkload(batch=point.batch, prompt_len=point.prompt, output_len=point.output)
        memory = self.batch_memory(point, device, workload)
        reason = infeasible_reason(memory, device.memory_bytes)
        if reason and not price_infeasible:
            result = None
        elif event_sim:
            result = simulate(device, tables, workload, memory, record_timeline=timeline, execution=point.execution)
        else:
            result = evaluate_analytic(device, tables, workload, memory, execution=point.execution)
        return Evaluation(point=point, metrics=_metrics(result, memory, reason, device), result=result,
                          tables=tables)

    def point_tables(self, point: DesignPoint, device) -> PassTables:
        """The kernel tables of a static-batch point's passes on its device (or system); decode attention capped at
        the point's KV window (kv_window)."""
        tables = self.tables(point.model, point.batch, point.prompt, point.numeric_format, device.sub_batches,
                             point.tp, point.pp, point.ep, fusion_of(point.execution))
        window = self.kv_window(point)
        return tables if window == tables.attention_window else replace(tables, attention_window=window)

    def kv_window(self, point: DesignPoint) -> int | None:
        """The most KV-cache tokens a sequence of the point keeps and decode attends to: the model's sliding window,
        the point's kv_budget (explore/knobs.py), the smaller of the two, or None (all of them)."""
        limits = [n for n in (self.config(point.model).sliding_window, point.knob("kv_budget")) if n]
        return min(limits) if limits else None

    def batch_memory(self, point: DesignPoint, device, workload: BatchWorkload) -> MemoryFootprint:
        """What a static-batch point (running `workload`) holds in each device's memory: weights, KV cache and
        activations."""
        fmt, cfg = point.numeric_format, self.config(point.model)
        prefill_trace = self.trace(point.model, "prefill", point.batch, point.prompt)
        return batch_footprint(
            weight_bytes=_weight_bytes(prefill_trace.param_bytes, fmt, device),
            # The prompt and every output token but the last, which is never fed back into the model.
            kv_bytes_per_token=cfg.kv_bytes_per_token() * fmt.kv_scale * kv_replication(cfg, point.tp),
            batch=point.batch,
            tokens_per_sequence=workload.prompt_len + workload.decode_steps,
            activation_bytes=prefill_trace.peak_activation_bytes,
            window=self.kv_window(point),
        )

    def _pool(self, point: DesignPoint, fmt: NumericFormat, role: str, replicas: int, device_name: str = "") -> Pool:
        """A pool of a serving point: `replicas` of the point's device (or of `device_name`, without the point's
        overrides), each holding the model's weights, the activations of its largest iteration and KV blocks."""
        spec, cfg = point.serving, self.config(point.model)
        if device_name and device_name != point.device:
            point = replace(point, device=device_name, overrides=())
        device, costs = self.point_device(point), self.cost_model(point, fmt)
        limits = spec.limits()
        memory = serving_memory(
            capacity_B=device.memory_bytes, weights_B=_weight_bytes(costs.template.param_bytes, fmt, device),
            activations_B=costs.template.activation_bytes(make_scheduler(spec.scheduler, limits).token_budget()),
            kv_bytes_per_token=cfg.kv_bytes_per_token() * fmt.kv_scale * kv_replication(cfg, point.tp),
            block_tokens=spec.block_tokens)
        return Pool(name=f"{role} ({point.device})", role=role, replicas=replicas, costs=costs,
                    scheduler=spec.scheduler, limits=limits, memory=memory, idle_power_W=device.idle_power_W,
                    prefix_tokens=spec.prefix_tokens, window=self.kv_window(point),
                    swap_bandwidth_Bps=spec.swap_GBps * 1e9 if spec.swap_GBps else None)

    def _evaluate_serving(self, point: DesignPoint, fmt: NumericFormat) -> Evaluation:
        """A serving run of the point's requests on its pools of replicas (sim/serving.py), or at the highest
        rate that meets the SLO when the spec asks for a capacity search."""
        spec = point.serving
        if point.pp > 1:
            raise InputError("pp: found a serving point on pipeline stages, allowed: pp = 1 with serving (a pipelined "
                             "replica, with several batches in flight, is not modeled yet)")
        device = self.point_device(point)
        cfg = self.config(point.model)
        if spec.disaggregated:
            pools = [self._pool(point, fmt, "prefill", spec.prefill_replicas, spec.prefill_device),
                     self._pool(point, fmt, "decode", spec.replicas)]
            link = load_link_model(spec.kv_link)

            def transfer_s(message_B: float) -> float:
                return float(link.collective_time_s("send_recv", message_B, 2))
        else:
            pools, transfer_s = [self._pool(point, fmt, "serve", spec.replicas)], None
        memory = pools[-1].memory

        def run(rate: float | None) -> ServingResult:
            requests, clipped = spec.request_set(rate).clipped_to_context(cfg.max_positions)
            for pool in pools:
                reason = serving_infeasible_reason(pool.memory, requests, make_scheduler(pool.scheduler, pool.limits),
                                                   spec.prefix_tokens, self.kv_window(point))
                if reason:
                    raise _InfeasibleError(f"{pool.name}: {reason}" if len(pools) > 1 else reason)
            result = serve_pools(pools, requests, slo=spec.slo(), kv_transfer_s=transfer_s)
            result.extra["clipped_requests"] = float(clipped)
            return result

        results: dict[float | None, ServingResult] = {}

        def meets(rate: float) -> bool:
            results[rate] = run(rate)
            return results[rate].metrics()["meets_slo"] == 1.0

        try:
            if spec.capacity:
                capacity = highest_rate(meets, low=spec.capacity[0], high=spec.capacity[1])
                result = results[capacity or spec.capacity[0]]
            else:
                result = results.setdefault(None, run(None))
        except _InfeasibleError as err:
            metrics = _metrics(None, memory, str(err), device, pools)
            metrics.update(dict.fromkeys(SERVING_METRICS, math.nan))
            return Evaluation(point=point, metrics=metrics, result=None, tables=None)
        metrics = _metrics(result, memory, "", device, pools)
        if spec.capacity:
            metrics["capacity_rps"] = capacity
        return Evaluation(point=point, metrics=metrics, result=result, tables=None)


def _pools_hardware(pools: list[Pool]) -> tuple[float, SystemPrice]:
    """Area and price of every replica of every pool."""
    def total(value) -> float | None:
        values = [value(pool.costs.device.price) for pool in pools]
        if any(v is None for v in values):
            return None  # a device without a published price: the system has none
        return sum(pool.replicas * v for pool, v in zip(pools, values, strict=True))

    area = sum(pool.replicas * pool.costs.device.area_mm2 for pool in pools)
    return area, SystemPrice(usd=total(lambda price: price.usd), usd_per_hour=total(lambda price: price.usd_per_hour))


class _InfeasibleError(Exception):
    """A serving point that cannot run (its reason is the message)."""


def _weight_bytes(param_bytes: float, fmt: NumericFormat, device) -> float:
    """Bytes of weights on the device: stored in the sparse layout only on a device that computes on it."""
    return param_bytes * fmt.weight_scale * (
        fmt.sparse_weight_scale if fmt.sparsity in device.sparsity_patterns else 1.0)


def _metrics(result: SimResult | ServingResult | None, memory, reason: str, device,
             pools: list[Pool] | None = None) -> dict[str, Any]:
    """The results row's metrics; area and price are the device's (or system's), or every pool replica's."""
    classes = (*KERNEL_CLASSES, "communication")
    if reason:
        # A design that does not fit cannot run: its timings are not reported.
        metrics: dict[str, Any] = dict.fromkeys(RESULT_METRICS, math.nan) | {"peak_memory_B": memory.total_B}
        metrics.update({f"time_{c}_s": math.nan for c in classes})
    else:
        metrics = result.metrics()
        metrics.update({f"time_{c}_s": result.time_by_class_s.get(c, 0.0) for c in classes})
    metrics.update(fits_in_memory=not reason, infeasible_reason=reason)
    metrics.update(hardware_metrics(device, metrics["tokens_per_s"], pools))
    return metrics


def hardware_metrics(device, tokens_per_s, pools: list[Pool] | None = None) -> dict[str, Any]:
    """The metrics of the hardware itself (the device's or system's, or every pool replica's), and output tokens
    per dollar of its hourly price at `tokens_per_s` (a number, or an array over a block of points)."""
    area_mm2, price = _pools_hardware(pools) if pools else (device.area_mm2, device.price)
    usd_per_s = price.usd_per_hour / 3600 if price.usd_per_hour else math.nan
    return dict(
        # Whether fitted efficiency models priced this point: the preset's own ("fitted"), its architecture
        # sibling's ("sibling"), or none (the datasheet roofline, or a family's analytical model).
        calibrated=calibration_label(device), area_mm2=area_mm2,
        cost_usd=price.usd if price.usd is not None else math.nan,
        tokens_per_usd=tokens_per_s / usd_per_s,
        # What the whole system rents for (every device of it), where its preset publishes an hourly price.
        usd_per_hour=price.usd_per_hour if price.usd_per_hour else math.nan,
    )
