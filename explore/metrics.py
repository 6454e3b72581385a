"""The metrics registry: every results column a design point's evaluation fills, with its unit, better direction,
label and definition. The one list that results columns, `explore run --json`, objectives and constraints,
report labels and sort orders, and the README's metric table read.

sim/ computes most of these and keeps its own tuples of what it computes (sim/result.py RESULT_METRICS,
sim/serving.py SERVING_METRICS, sim/slowdown.py SLOWDOWN_METRICS); this registry adds what explore needs on top
(unit, direction, label, definition), and tests/explore/test_registries.py holds the two consistent. A metric
explore can compute from a row's other metrics is one entry with `derive` (Metric.derive: applied by
`add_derived` after every evaluation); one of the design point's inputs alone (published quality of its format)
is one entry with `of_point`; one that sim/ computes is its entry here plus its computation there.

Columns come in sections, laid out by `result_columns` in this order (a section is present only in the sweeps
it applies to): point (every sweep), price (systems and serving), constraints (with constraints), serving,
urgent (serving whose requests differ in priority), slowdown (serving under a slowdown SLO), capacity (serving
capacity searches), autoscale (serving on an autoscaled pool), breakdown (busy time by kernel class),
communication (systems). A new entry goes last in its section. Adding a column changes the results columns, and a
results folder written before refuses to resume into them (the store compares column lists): rerun such sweeps
into a new folder.
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from explore.registry import Registry

Better = Literal["min", "max"] | None
Kind = Literal["number", "bool", "text"]
Section = Literal["point", "price", "constraints", "serving", "urgent", "slowdown", "capacity", "autoscale",
                  "rejection", "breakdown", "communication"]
SECTIONS: tuple[Section, ...] = ("point", "price", "constraints", "serving", "urgent", "slowdown", "capacity",
                                 "autoscale", "rejection", "breakdown", "communication")


@dataclass(frozen=True, kw_only=True)
class Metric:
    name: str  # the results column; SI unit as the name's suffix
    label: str  # words in figures and tables ('TTFT'); the unit is added to it where shown
    unit: str  # SI unit of the value ('s', 'J/token', 'B'); '' for counts, fractions and labels that name it
    better: Better  # 'min' or 'max' where one direction is better, None where it depends (power, memory fit)
    definition: str  # one line: how it is computed
    kind: Kind = "number"
    section: Section = "point"
    # Computed in explore from the row's other metrics (None: sim/ or explore/evaluate.py computes it).
    derive: Callable[[Mapping[str, Any]], float] | None = None
    # Computed in explore from the design point's inputs alone (its model and format), not from its pricing.
    of_point: Callable[[Any], Any] | None = None
    reason: str = ""  # the text metric that says why this one is NaN (report tables show it next to the value)


METRICS: Registry[Metric] = Registry("metric")


def register(metric: Metric) -> Metric:
    return METRICS.register(metric)


def metric(name: str) -> Metric | None:
    return METRICS.get(name)


def metric_names(*sections: Section, kinds: tuple[Kind, ...] = ("number", "bool", "text")) -> tuple[str, ...]:
    """The registered metrics of the given sections (all, in SECTIONS order, by default): section by section,
    each in registry order."""
    sections = sections or SECTIONS
    return METRICS.view(("names", sections, kinds), lambda: tuple(
        m.name for section in sections for m in METRICS.entries() if m.section == section and m.kind in kinds))


def numeric_metrics() -> tuple[str, ...]:
    """Metrics with a numeric value: what objectives and constraints may name."""
    return metric_names(*(s for s in SECTIONS if s != "constraints"), kinds=("number",))


def result_columns(*, system: bool, serving: bool, constraints: bool, slowdown: bool = False,
                   capacity: bool = False, urgent: bool = False, autoscale: bool = False,
                   rejection: bool = False) -> list[str]:
    """The metric columns of a sweep's results table, after its input columns; `urgent`: its requests differ in
    priority, `slowdown`: its serving SLO limits slowdowns, `capacity`: it searches capacity, `autoscale`: its pool
    scales, `rejection`: its gateway rejects requests (sections of their own, so serving folders written before them
    keep their columns and resume)."""
    present = {"point": True, "price": system or serving, "constraints": constraints, "serving": serving,
               "urgent": serving and urgent, "slowdown": serving and slowdown, "capacity": serving and capacity,
               "autoscale": serving and autoscale, "rejection": serving and rejection, "breakdown": True,
               "communication": system}
    return list(metric_names(*(s for s in SECTIONS if present[s])))


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def better_key(*names: str) -> Callable[[Mapping[str, Any]], tuple[float, ...]]:
    """A sort key that puts rows with the better value of the first metric first, as its registry entry says
    (ties broken by the next metric); ValueError for a metric with no better direction."""
    signs = []
    for name in names:
        if METRICS[name].better is None:
            raise ValueError(f"metric {name!r} has no better direction to rank by")
        signs.append(-1.0 if METRICS[name].better == "max" else 1.0)

    def key(row: Mapping[str, Any]) -> tuple[float, ...]:
        return tuple(sign * _number(row.get(name)) for sign, name in zip(signs, names, strict=True))

    return key


def better_first(rows: Iterable[dict[str, Any]], *names: str) -> list[dict[str, Any]]:
    """Rows sorted best first by the metrics (better_key; stable among ties). Rows without a finite value sort
    unpredictably: leave them out first."""
    return sorted(rows, key=better_key(*names))


def add_derived(values: dict[str, Any], point: Any = None) -> dict[str, Any]:
    """The metrics of one evaluation with every derived metric added (NaN where it cannot be computed), and, given
    the design point (explore.design_point.DesignPoint), every metric of the point's inputs (Metric.of_point)."""
    for m in derived_metrics():
        try:
            values[m.name] = float(m.derive(values))
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            values[m.name] = math.nan
    if point is not None:
        values.update(point_metrics(point))
    return values


def derived_metrics() -> tuple[Metric, ...]:
    """The metrics computed from a row's other metrics (Metric.derive), in registry order."""
    return METRICS.view("derived", lambda: tuple(m for m in METRICS.entries() if m.derive is not None))


def point_metrics(point: Any) -> dict[str, Any]:
    """The metrics of a design point's inputs alone (Metric.of_point)."""
    return {m.name: m.of_point(point) for m in METRICS.view(
        "of point", lambda: tuple(m for m in METRICS.entries() if m.of_point is not None))}


def _m(name: str, label: str, unit: str, better: Better, definition: str, **kw: Any) -> None:
    register(Metric(name=name, label=label, unit=unit, better=better, definition=definition, **kw))


@functools.cache
def _imported(module: str, name: str) -> Callable:
    """A function of a module imported on first use: this module stays light to import (the report reads it), and a
    design point's metrics do not run an import statement each."""
    return getattr(importlib.import_module(module), name)


def _quality(point: Any) -> Any:
    return _imported("explore.quality", "point_quality")(point)  # reads the shipped table on first use


def _sparsity_use(point: Any) -> str:
    return _imported("explore.format_checks", "point_sparsity_use")(point)  # loads the point's device model


def _unmeasured(point: Any) -> str:
    return _imported("explore.format_checks", "point_unmeasured_gemms")(point)  # loads the point's device model


def _emulated(point: Any) -> str:
    return _imported("explore.format_checks", "point_emulated_gemms")(point)  # loads the point's device model


# ---- point: every sweep (sim/result.py RESULT_METRICS first, in its order) -----------------------------------
_m("ttft_s", "TTFT", "s", "min", "mean over requests of the time from arrival to the first output token")
_m("tpot_s", "TPOT", "s", "min", "mean over requests of (finish - first token) / (output tokens - 1)")
_m("e2e_s", "end-to-end latency", "s", "min", "mean over requests of finish - arrival")
_m("tokens_per_s", "tokens/s", "", "max", "end to end: every output token (each request's first included) over "
   "the makespan, prefill included (batch x output / e2e_s for a static batch)")
_m("decode_tokens_per_s", "decode tokens/s", "", "max",
   "output tokens after each request's first over the decode time (sim/serving_metrics.py decode_span_s)")
_m("energy_per_token_J", "energy per output token", "J/token", "min",
   "energy of the run (compute, memory, static power over the makespan) over its output tokens")
_m("avg_power_W", "average power", "W", None, "energy of the run over the makespan")
_m("power_peak_W", "peak power", "W", None,
   "highest power of the whole system (every device of every pool when serving) averaged over any 1 s of the run "
   "(the window of a GPU's power reading, sim/serving_metrics.py POWER_WINDOW_S): static power throughout plus the "
   "dynamic energy of the busiest second, a serving run's iterations or a static batch's prefill then decode, each "
   "drawn evenly; what a power budget must provision where avg_power_W is what it bills")
_m("peak_memory_B", "peak memory", "B", "min",
   "bytes held at the peak: weights, KV cache and activations, over all of a system's devices (each of tp "
   "devices holds an even share)")
_m("fits_in_memory", "fits in memory", "", None, "whether the peak memory fits the capacity of the device, or of "
   "all the system's devices",
   kind="bool")
_m("infeasible_reason", "infeasible reason", "", None, "why the point cannot run (empty when it can)",
   kind="text")
_m("area_mm2", "area", "mm2", "min", "silicon area of every device of the system (when serving, every replica of "
   "every pool, its attention devices included)")
_m("cost_usd", "cost", "usd", "min", "purchase price of the device or system, where its preset publishes one")
_m("tokens_per_usd", "tokens/USD", "", "max", "tokens_per_s over the hourly price (usd_per_hour / 3600)")
_m("calibrated", "calibrated", "", None,
   "what priced the kernels: fitted (the preset's own fits), sibling (borrowed) or none (datasheet or paper)",
   kind="text")
_m("tdp_W", "rated power", "W", None, "power the hardware is rated to draw (power.tdp_W, or a GPU's power limit "
   "power.cap_W where one is set: what a power budget provisions) over every device of the "
   "system, when serving of every replica of every pool, attention devices included; avg_power_W above it means "
   "the preset's energy per action adds up to more than the chip can draw (figures too high: without a power limit "
   "nothing throttles)")
_m("tokens_per_J", "tokens/J", "", "max", "output tokens per joule: 1 / energy_per_token_J",
   derive=lambda m: 1.0 / m["energy_per_token_J"])
# Published model quality of the point's model and format (explore/quality.py, explore/data/quality.csv): never
# estimated; NaN with the reason in quality_source where no paper row matches.
_m("quality_delta", "perplexity increase", "", "min",
   "published WikiText-2 perplexity of the point's model and format (quant_method's best method) minus its "
   "16-bit baseline, from the same paper table (token perplexity where published, else lm-eval's word "
   "perplexity: quality_source names it); positive is worse, 0 for 16-bit dense, NaN where no row matches; the "
   "method's own model, whose LM head and embeddings most methods keep at 16 bits (head_bits 16 prices it so)",
   of_point=lambda point: _quality(point).delta, reason="quality_source")
_m("quality_source", "quality source", "", None,
   "the paper, table and values quality_delta comes from, or why it has none", kind="text",
   of_point=lambda point: _quality(point).source)
# Formats a GPU has no tensor cores for run emulated at a wider dtype (hw_models/gpu_quant.py), a CPU's quantized GEMMs
# as int8 dot products (hw_models/cpu.py): said per point, so a sweep over devices and formats shows which of its
# prices carry the conversion work.
_m("emulated_gemms", "emulated GEMMs", "", None,
   "the format's GEMM dtypes the device runs in another dtype, each with the dtype whose rate prices it ('fp8 as "
   "bf16': no native math for it; on a CPU 'fp4 as int8': llama.cpp-style int8 dot products); empty where every GEMM "
   "runs natively", kind="text", of_point=lambda point: _emulated(point))
_m("unmeasured_gemms", "unmeasured GEMMs", "", None,
   "the format's GEMMs that no measured GEMM of their kind prices on the device, each with the fit that prices "
   "them instead ('w8a8 (int8): 16-bit fit'; '+ dequantization' where the CUDA cores' unpacking is counted from "
   "the kernels); empty where fits of their own price them or the device has no GEMM fit", kind="text",
   of_point=lambda point: _unmeasured(point))
# Memory tiers (explore/knobs.py offload, sim/offload.py): what a point that does not fit keeps in host memory.
_m("offloaded_B", "offloaded", "B", "min", "bytes of weights and KV cache held in host memory and streamed over the "
   "host link (offload); 0 where everything fits in device memory")
# Sparsity a device does not exploit runs dense (kernels/sparsity.py, hw_models/sparsity_support.py): said per point,
# so a sweep over sparsity patterns and devices shows which prices carry the pattern's savings.
_m("sparsity_use", "sparsity use", "", None,
   "how the device runs the format's weight and activation sparsity: each pattern exploited or run dense (not "
   "supported, or a weight layout no smaller than dense that skips no math, with its size), exploited activation "
   "sparsity with the share of the MLP's weights a decode step of the batch reads; empty for a dense format",
   kind="text", of_point=lambda point: _sparsity_use(point))
# ---- price: systems of several devices and serving -----------------------------------------------------------
_m("usd_per_hour", "system price", "USD/hour", "min",
   "hourly price of every device of the system, where its preset publishes one", section="price")
# ---- constraints: sweeps with constraints ------------------------------------------------------------------
_m("meets_constraints", "meets constraints", "", None, "whether the point fits and meets every constraint",
   kind="bool", section="constraints")
# ---- serving: sim/serving.py SERVING_METRICS, in its order --------------------------------------------------
_LATENCIES = (("ttft", "TTFT", "time from arrival to the first output token"),
              ("tpot", "TPOT", "time per output token after the first (one-token requests left out)"),
              ("e2e", "end-to-end latency", "time from arrival to the last output token"),
              ("queue", "queueing delay", "time from arrival to first entering a running batch"))
for _key, _label, _what in _LATENCIES:
    for _stat in ("mean", "p50", "p90", "p99"):
        _m(f"{_key}_{_stat}_s", f"{_stat} {_label}", "s", "min", f"{_stat} over requests of the {_what}",
           section="serving")
_m("requests_per_s", "requests/s", "", "max", "completed requests over the makespan", section="serving")
_m("output_tokens_per_s", "output tokens/s", "", "max", "output tokens over the makespan", section="serving")
_m("goodput_rps", "goodput", "requests/s", "max",
   "requests meeting every SLO limit over the makespan (every request without an SLO)", section="serving")
_m("slo_attainment", "SLO attainment", "", "max", "fraction of requests meeting every SLO limit",
   section="serving")
_m("meets_slo", "meets slo", "", "max", "1 where slo_attainment reaches the SLO's attainment, else 0",
   section="serving")
_m("preemptions", "preemptions", "", "min", "times a request was preempted, summed over requests",
   section="serving")
for _stat in ("p50", "p99"):
    _m(f"tbt_{_stat}_s", f"{_stat} time between tokens", "s", "min",
       f"{_stat} over every token of every request of the time since the request's previous token (0 for tokens a "
       f"speculative step accepts together)",
       section="serving")
_m("mean_batch_size", "mean batch size", "", None,
   "sequences per iteration, averaged over busy time (on pipeline stages or data-parallel ranks: an engine's)",
   section="serving")
_m("kv_utilization_mean", "mean KV-cache utilization", "", None,
   "fraction of the KV blocks in use, averaged over iterations (on pipeline stages or data-parallel ranks: of each "
   "engine's share)",
   section="serving")
_m("kv_utilization_max", "peak KV-cache utilization", "", None,
   "largest fraction of the KV blocks in use (on pipeline stages or data-parallel ranks: of an engine's share)",
   section="serving")
_m("swap_s", "swap", "s", "min", "time spent moving KV onto and off the devices (preempted sequences' KV to host "
   "memory and back, prefix blocks loaded from a host cache or fetched from a KV store) and LoRA adapters into their "
   "GPU slots, summed over the engines "
   "(replicas, pipeline engines, data-parallel ranks)", section="serving")
_m("prefix_hit_rate", "prefix hit rate", "", "max",
   "share of the requests' prefix tokens found cached, on the device or in a host cache, at their first admission "
   "(a recompute's not counted): vLLM's prefix-cache hit rate (NaN without a prefix to share)",
   section="serving")
_m("clipped_requests", "clipped requests", "", None, "requests clipped to the model's context",
   section="serving")
_m("capacity_rps", "capacity", "requests/s", "max", "highest arrival rate meeting the SLO (capacity search; under a "
   "rate_profile, its base rate, each phase arriving at its multiple of it)", section="serving")
# ---- urgent: sim/serving_metrics.py URGENT_METRICS, in its order (serving sweeps whose requests differ in priority) -
for _key, _label, _what in _LATENCIES[:2]:
    for _stat in ("p90", "p99"):
        _m(f"urgent_{_key}_{_stat}_s", f"urgent {_stat} {_label}", "s", "min",
           f"{_stat} over the most urgent requests (the lowest priority) of the {_what}", section="urgent")
_m("urgent_slo_attainment", "urgent SLO attainment", "", "max",
   "fraction of the most urgent requests (the lowest priority) meeting every SLO limit", section="urgent")
# ---- autoscale: sim/serving.py AUTOSCALE_METRICS, in its order (serving sweeps with max_replicas) ---------------
_m("mean_replicas", "mean replicas", "", "min",
   "replicas an autoscaled pool held (starting, serving or draining), averaged over the run: its price per hour and "
   "idle energy are these replica-hours", section="autoscale")
_m("max_replicas_held", "most replicas held", "", "min", "the most replicas an autoscaled pool held at once",
   section="autoscale")
# ---- rejection: sim/serving.py REJECTION_METRICS, in its order (serving sweeps with busy thresholds) -----------
_m("rejected_share", "rejected", "", "min",
   "share of the requests the gateway rejected on arrival, every replica they could join busy (sim/admission.py): "
   "each misses the SLO", section="rejection")
_m("retried_share", "retried", "", "min",
   "share of the requests the gateway turned away at least once: served after a client's retry (client_retries), or "
   "rejected for good; with no retries, the share rejected", section="rejection")
# ---- slowdown: sim/slowdown.py SLOWDOWN_METRICS, in its order (serving sweeps whose SLO limits slowdowns) -----
_SLOWDOWNS = (("ttft", "TTFT", "time to first token"),
              ("tbt", "TBT", "mean time between tokens after the first (one-token requests left out)"),
              ("e2e", "E2E", "end-to-end latency"))
for _key, _label, _what in _SLOWDOWNS:
    for _stat in ("p50", "p90", "p99"):
        _m(f"slowdown_{_key}_{_stat}", f"{_stat} {_label} slowdown", "", "min",
           f"{_stat} over requests of the {_what} over that of the same request served alone on the point's "
           f"device (sim/slowdown.py)", section="slowdown")
# ---- capacity: sim/capacity.py CAPACITY_METRICS, in its order (serving sweeps that search capacity) ----------
_m("capacity_judged", "capacity judged", "", None,
   "1 where the search judged the rate that stopped it (its run failed the SLO, or was long and steady enough to "
   "show whether the queue keeps up: sim/stability.py), 0 where capacity_rps is only what the requests can show",
   kind="bool", section="capacity")
_m("queue_growth", "queue growth", "s/s", "min",
   "at the capacity rate, seconds the time requests wait for a running batch grows per second of arrivals (about "
   "0 in steady state, arrival over service rate less 1 for an overloaded queue; NaN where the run at the capacity "
   "is too short or noisy to judge; capacity_judged says the same of the rate above it)",
   section="capacity")
_m("capacity_note", "capacity note", "", None, "why capacity_judged is 0 (empty where it is 1)", kind="text",
   section="capacity")
_m("capacity_at_top", "capacity at range top", "", None,
   "1 where the top of the searched range was sustainable: capacity_rps is the range's high, a lower bound of the "
   "capacity (raise the high to find it)", kind="bool", section="capacity")
# ---- breakdown: busy time by kernel class (every sweep) ----------------------------------------------------
KERNEL_CLASSES = ("gemm", "attention", "norm", "softmax", "elementwise", "embedding")
for _class in KERNEL_CLASSES:
    _m(f"time_{_class}_s", f"time {_class}", "s", None, f"busy time of {_class} kernels over the run",
       section="breakdown")
_m("time_communication_s", "time communication", "s", "min",
   "busy time of collectives and pipeline sends over the link", section="communication")
_m("time_host_wait_s", "time host wait", "s", "min",
   "time the device waits on the host over the run: PyTorch eager's dispatch where it takes longer than the kernels "
   "it launches, or transfers on the host link when offloading; faster kernels do not shorten it",
   section="breakdown")
# The time-by-class entries a results row carries (time_<class>_s): the kernel classes, collectives and the waits on
# the host (sim/step_costs.py HOST_WAIT).
TIME_CLASSES = (*KERNEL_CLASSES, "communication", "host_wait")
