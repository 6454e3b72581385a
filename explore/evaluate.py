"""Evaluate design points: trace (once per model, batch and prompt), lower, price, simulate, report metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from explore.design_point import KERNEL_CLASSES, DesignPoint
from hw_models.registry import load_device
from kernels.formats import NumericFormat
from kernels.lowering import lower_trace
from kernels.shapes import StepTemplate, TemplateTraces, template_batch
from kernels.table import KernelTable
from sim.analytic import evaluate as evaluate_analytic
from sim.engine import simulate
from sim.memory import batch_footprint, infeasible_reason
from sim.result import RESULT_METRICS, SimResult
from sim.step_costs import sub_batch_sizes
from sim.workload import BatchWorkload, PassTables
from workloads.model_config import ModelConfig, load_model_config
from workloads.trace import Trace


@dataclass(frozen=True)
class Evaluation:
    point: DesignPoint
    metrics: dict[str, Any]
    result: SimResult | None  # None: the point does not fit in memory and was not simulated
    tables: PassTables


# Prompt length of the template's prefill traces: short (cheap to trace), long enough to tell tokens from sequences.
TEMPLATE_PROMPT = 16


class Evaluator:
    """Evaluates design points, memoizing configs, traces, kernel tables and device models.

    Everything memoized is a pure function of its key, so one Evaluator can serve a whole sweep.
    """

    def __init__(self) -> None:
        self._configs: dict[str, ModelConfig] = {}
        self._traces: dict[tuple, Trace] = {}
        self._lowered: dict[tuple, KernelTable] = {}
        self._tables: dict[tuple, PassTables] = {}
        self._devices: dict[tuple, Any] = {}
        self._templates: dict[tuple, StepTemplate] = {}

    def config(self, model: str) -> ModelConfig:
        if model not in self._configs:
            self._configs[model] = load_model_config(model)
        return self._configs[model]

    def trace(self, model: str, phase: str, batch: int, prompt: int) -> Trace:
        """The prefill of `prompt` tokens, or the first decode step after it, for `batch` sequences."""
        key = (model, phase, batch, prompt)
        if key not in self._traces:
            from workloads.capture import trace_model  # torch loads only when a trace is needed

            cfg = self.config(model)
            if phase == "prefill":
                self._traces[key] = trace_model(cfg, phase="prefill", batch=batch, seq_len=prompt)
            else:
                self._traces[key] = trace_model(cfg, phase="decode", batch=batch, seq_len=1, context_len=prompt)
        return self._traces[key]

    def lowered(self, model: str, phase: str, batch: int, prompt: int) -> KernelTable:
        """The kernels of a traced pass at the traced precision (formats are applied per design point)."""
        key = (model, phase, batch, prompt)
        if key not in self._lowered:
            self._lowered[key] = KernelTable.from_kernels(lower_trace(self.trace(model, phase, batch, prompt)))
        return self._lowered[key]

    def tables(self, model: str, batch: int, prompt: int, fmt: NumericFormat, sub_batches: int = 1) -> PassTables:
        """Prefill and decode tables; with sub_batches > 1, also the decode of each sub-batch (traced at its size)."""
        key = (model, batch, prompt, fmt, sub_batches)
        if key not in self._tables:
            sizes = sub_batch_sizes(batch, sub_batches)
            parts = tuple((size, self.lowered(model, "decode", size, prompt).with_format(fmt))
                          for size in sizes if len(sizes) > 1)
            self._tables[key] = PassTables(
                prefill=self.lowered(model, "prefill", batch, prompt).with_format(fmt),
                decode=self.lowered(model, "decode", batch, prompt).with_format(fmt),
                attention_window=self.trace(model, "decode", batch, prompt).sliding_window, sub_batch_decode=parts,
            )
        return self._tables[key]

    def template(self, model: str, fmt: NumericFormat) -> StepTemplate:
        """The model's step template under a numeric format, from four small traces (kernels/shapes.py)."""
        key = (model, fmt)
        if key not in self._templates:
            cfg = self.config(model)
            batch, prompt = template_batch(cfg.num_experts, cfg.experts_per_token), TEMPLATE_PROMPT
            traces = {(phase, size): self.trace(model, phase, size, prompt)
                      for phase in ("decode", "prefill") for size in (batch, 2 * batch)}
            table = {key: KernelTable.from_kernels(lower_trace(trace)).with_format(fmt)
                     for key, trace in traces.items()}
            self._templates[key] = StepTemplate.from_traces(TemplateTraces(
                decode=table["decode", batch], decode_wide=table["decode", 2 * batch],
                prefill=table["prefill", batch], prefill_wide=table["prefill", 2 * batch], batch=batch,
                prompt=prompt, num_experts=cfg.num_experts, experts_per_token=cfg.experts_per_token,
                decode_activation_B=traces["decode", batch].peak_activation_bytes,
                prefill_activation_B=traces["prefill", batch].peak_activation_bytes))
        return self._templates[key]

    def device(self, name: str, overrides: tuple = (), calibrated: bool = True):
        key = (name, overrides, calibrated)
        if key not in self._devices:
            self._devices[key] = load_device(name, dict(overrides), calibrated=calibrated)
        return self._devices[key]

    def evaluate(self, point: DesignPoint, *, event_sim: bool = False, timeline: bool = False,
                 price_infeasible: bool = False) -> Evaluation:
        """Metrics of one design point; event_sim runs the SimPy simulation instead of the analytic sum.

        A point that does not fit in the device's memory is not simulated (its timings are not reported, and
        an absurd output length costs nothing); price_infeasible simulates it anyway, for its result.
        """
        fmt = NumericFormat(weight_bits=point.weight_bits, act_bits=point.act_bits, kv_bits=point.kv_bits,
                            sparsity=point.sparsity)
        device = self.device(point.device, point.overrides, point.use_calibration)
        cfg = self.config(point.model)
        tables = self.tables(point.model, point.batch, point.prompt, fmt, device.sub_batches)
        prefill_trace = self.trace(point.model, "prefill", point.batch, point.prompt)
        workload = BatchWorkload(batch=point.batch, prompt_len=point.prompt, output_len=point.output)
        memory = batch_footprint(
            # Weights are stored in the sparse layout only on a device that computes on it.
            weight_bytes=prefill_trace.param_bytes * fmt.weight_scale
            * (fmt.sparse_weight_scale if point.sparsity in device.sparsity_patterns else 1.0),
            # The prompt and every output token but the last, which is never fed back into the model.
            kv_bytes_per_token=cfg.kv_bytes_per_token() * fmt.kv_scale, batch=point.batch,
            tokens_per_sequence=point.prompt + workload.decode_steps,
            activation_bytes=prefill_trace.peak_activation_bytes,
            window=cfg.sliding_window,
        )
        reason = infeasible_reason(memory, device.memory_bytes)
        if reason and not price_infeasible:
            result = None
        elif event_sim:
            result = simulate(device, tables, workload, memory, record_timeline=timeline, execution=point.execution)
        else:
            result = evaluate_analytic(device, tables, workload, memory, execution=point.execution)
        return Evaluation(point=point, metrics=_metrics(result, memory, reason, device), result=result,
                          tables=tables)


def _metrics(result: SimResult | None, memory, reason: str, device) -> dict[str, Any]:
    if reason:
        # A design that does not fit cannot run: its timings are not reported.
        metrics: dict[str, Any] = dict.fromkeys(RESULT_METRICS, math.nan) | {"peak_memory_B": memory.total_B}
        metrics.update({f"time_{c}_s": math.nan for c in KERNEL_CLASSES})
    else:
        metrics = result.metrics()
        metrics.update({f"time_{c}_s": result.time_by_class_s.get(c, 0.0) for c in KERNEL_CLASSES})
    price = device.price
    usd_per_s = price.usd_per_hour / 3600 if price.usd_per_hour else math.nan
    metrics.update(
        # Whether fitted efficiency models priced this point; False means the (optimistic) datasheet roofline.
        calibrated=getattr(device, "calibration", None) is not None,
        fits_in_memory=not reason, infeasible_reason=reason, area_mm2=device.area_mm2,
        cost_usd=price.usd if price.usd is not None else math.nan,
        tokens_per_usd=metrics["tokens_per_s"] / usd_per_s,
    )
    return metrics
