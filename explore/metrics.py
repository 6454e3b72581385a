"""The metrics registry: every results column a design point's evaluation fills, with its unit, better direction,
label and definition. The one list that results columns, `explore run --json`, objectives and constraints,
report labels and sort orders, and the README's metric table read.

sim/ computes most of these and keeps its own tuples of what it computes (sim/result.py RESULT_METRICS,
sim/serving.py SERVING_METRICS); this registry adds what explore needs on top (unit, direction, label,
definition), and tests/explore/test_registries.py holds the two consistent. A metric explore can compute from
a row's other metrics is one entry with `derive` (Metric.derive: applied by `add_derived` after every
evaluation); one that sim/ computes is its entry here plus its computation there.

Columns come in sections, laid out by `result_columns` in this order (a section is present only in the sweeps
it applies to): point (every sweep), price (systems and serving), constraints (with constraints), serving,
breakdown (busy time by kernel class), communication (systems). A new entry goes last in its section. Adding
a column changes the results columns, and a results folder written before refuses to resume into them (the
store compares column lists): rerun such sweeps into a new folder.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from explore.registry import Registry

Better = Literal["min", "max"] | None
Kind = Literal["number", "bool", "text"]
Section = Literal["point", "price", "constraints", "serving", "breakdown", "communication"]
SECTIONS: tuple[Section, ...] = ("point", "price", "constraints", "serving", "breakdown", "communication")


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


def result_columns(*, system: bool, serving: bool, constraints: bool) -> list[str]:
    """The metric columns of a sweep's results table, after its input columns."""
    present = {"point": True, "price": system or serving, "constraints": constraints, "serving": serving,
               "breakdown": True, "communication": system}
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


def add_derived(values: dict[str, Any]) -> dict[str, Any]:
    """The metrics of one evaluation with every derived metric added (NaN where it cannot be computed)."""
    for m in METRICS.view("derived", lambda: tuple(m for m in METRICS.entries() if m.derive is not None)):
        try:
            values[m.name] = float(m.derive(values))
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            values[m.name] = math.nan
    return values


def _m(name: str, label: str, unit: str, better: Better, definition: str, **kw: Any) -> None:
    register(Metric(name=name, label=label, unit=unit, better=better, definition=definition, **kw))


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
_m("peak_memory_B", "peak memory", "B", "min",
   "bytes one device holds at the peak: weights, KV cache and activations")
_m("fits_in_memory", "fits in memory", "", None, "whether the peak memory fits the device's capacity",
   kind="bool")
_m("infeasible_reason", "infeasible reason", "", None, "why the point cannot run (empty when it can)",
   kind="text")
_m("area_mm2", "area", "mm2", "min", "silicon area of every device of the system (every replica when serving)")
_m("cost_usd", "cost", "usd", "min", "purchase price of the device or system, where its preset publishes one")
_m("tokens_per_usd", "tokens/USD", "", "max", "tokens_per_s over the hourly price (usd_per_hour / 3600)")
_m("calibrated", "calibrated", "", None,
   "what priced the kernels: fitted (the preset's own fits), sibling (borrowed) or none (datasheet or paper)",
   kind="text")
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
       f"{_stat} over every token of every request of the time since the request's previous token",
       section="serving")
_m("mean_batch_size", "mean batch size", "", None, "sequences per iteration, averaged over busy time",
   section="serving")
_m("kv_utilization_mean", "mean KV-cache utilization", "", None,
   "fraction of the KV blocks in use, averaged over iterations", section="serving")
_m("kv_utilization_max", "peak KV-cache utilization", "", None, "largest fraction of the KV blocks in use",
   section="serving")
_m("swap_s", "swap", "s", "min", "time spent moving preempted KV to host memory and back", section="serving")
_m("clipped_requests", "clipped requests", "", None, "requests clipped to the model's context",
   section="serving")
_m("capacity_rps", "capacity", "requests/s", "max", "highest arrival rate meeting the SLO (capacity search)",
   section="serving")
# ---- breakdown: busy time by kernel class (every sweep) ----------------------------------------------------
KERNEL_CLASSES = ("gemm", "attention", "norm", "softmax", "elementwise", "embedding")
for _class in KERNEL_CLASSES:
    _m(f"time_{_class}_s", f"time {_class}", "s", None, f"busy time of {_class} kernels over the run",
       section="breakdown")
_m("time_communication_s", "time communication", "s", "min", "busy time of collectives over the link",
   section="communication")
