"""Typed results rows: values from an evaluation or read back from results.csv, and labels for them."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from explore.design_point import DesignPoint, generic_knobs, with_knobs
from explore.knobs import KNOBS, Knob, knob, knobs
from explore.metrics import METRICS, metric
from explore.pool_what_ifs import POOL_WHAT_IFS
from explore.quality import format_words
from explore.run_support import LINK_PREFIX
from kernels.formats import NumericFormat

OVERRIDE_PREFIX = "device."


def _column_types() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    def kind(name: str) -> frozenset[str]:
        return frozenset(m.name for m in METRICS.entries() if m.kind == name)

    text = {"point_id", *(k.name for k in knobs() if k.type is str)} | kind("text")
    return frozenset(text), kind("bool"), kind("number")


def column_types() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """The text, bool and number columns of results rows (any other column: an integer where integral), from the
    registries (memoized in the metrics registry, under the knobs registry's version)."""
    return METRICS.view(("column types", KNOBS.version), _column_types)


def as_number(value: Any) -> float:
    """A float from a number or a numeric string; NaN for anything else (None, '', text)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _boolean(value: Any) -> bool:
    """A bool from a bool, a number or a string such as 'True' / 'false' / '1' / '1.0' (a float flag as results.csv
    writes it: capacity_judged)."""
    if isinstance(value, str) and value.strip().lower() in ("true", "yes"):
        return True
    number = as_number(value)
    return math.isfinite(number) and number != 0


def _text(value: Any) -> str:
    """A string; '' for None and NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _integral(value: Any) -> Any:
    """An int for an integral number or numeric string, a float for other numbers, else the text (None if empty)."""
    number = as_number(value)
    if math.isfinite(number) and number == int(number) and not isinstance(value, bool):
        return int(number)
    if not math.isnan(number):
        return number
    return _text(value).strip() or None


def normalize_row(row: dict[str, Any]) -> dict[str, Any]:
    """A results row with typed values, whether it came from an evaluation or from a CSV file."""
    typed: dict[str, Any] = {}
    text, boolean, numbers = column_types()
    for key, value in row.items():
        if key in text:
            typed[key] = _text(value)
        elif key in boolean:
            typed[key] = _boolean(value)
        elif key in numbers:
            typed[key] = as_number(value)
        else:
            typed[key] = _integral(value)
    return typed


def is_feasible(row: dict[str, Any]) -> bool:
    """Whether a (typed) row fits in memory and has metrics."""
    fits = row.get("fits_in_memory", True) and not row.get("infeasible_reason")
    return bool(fits) and math.isfinite(row.get("tokens_per_s", math.nan))


def is_serving(row: dict[str, Any]) -> bool:
    """Whether a results row comes from a serving run (its scheduler is set)."""
    return bool(row.get("scheduler"))


def overrides_of(row: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Device overrides set in a row, as DesignPoint.overrides pairs ('memory.bandwidth_GBps', 4000)."""
    pairs = [(key.removeprefix(OVERRIDE_PREFIX), value) for key, value in row.items()
             if key.startswith(OVERRIDE_PREFIX) and value not in (None, "")]
    return tuple(sorted(pairs))


def point_from_row(row: dict[str, Any]) -> DesignPoint:
    """The design point a (typed) row of a static sweep on one device was evaluated at."""
    fields = {k.name: int(row[k.name]) for k in knobs(section="workload") + knobs(section="format")
              if k.type is int and k.column == "always"}
    generic = {k.name: k.type(row[k.name]) for k in generic_knobs() if row.get(k.name) not in (None, "")}
    return DesignPoint(model=row["model"], device=row["device"], overrides=overrides_of(row),
                       execution=row.get("execution") or "eager", sparsity=row.get("sparsity") or "dense",
                       use_calibration=row.get("calibrated") != "none", **with_knobs(fields | generic))


def _format_knobs() -> tuple[Knob, ...]:
    return KNOBS.view("format knobs", lambda: tuple(k for k in generic_knobs() if k.applies == "format"))


def _format_key(row: dict[str, Any]) -> tuple:
    """The values of a row that its format is made of, each with its type (a text knob reads 1 and 1.0 apart); a NaN
    as 'nan' (no NaN equals another: each would be a new key)."""
    names = ("weight_bits", "act_bits", "kv_bits", "sparsity", *(k.name for k in _format_knobs()))
    return tuple((value if value == value else "nan", type(value)) for value in (row.get(name) for name in names))


# A report labels every row in several figures and a sweep holds few formats: the format and its label are made once
# a distinct key, memoized in the knobs registry (whose knobs they read).
def row_format(row: dict[str, Any]) -> NumericFormat:
    """The numeric format of a (typed) row: its bit widths, sparsity and every format knob it sets."""
    return KNOBS.view(("row format", _format_key(row)), lambda: _row_format(row))


def _row_format(row: dict[str, Any]) -> NumericFormat:
    parts = {k.name: k.type(row[k.name]) for k in _format_knobs() if _set(row, k)}
    return NumericFormat(weight_bits=int(row["weight_bits"]), act_bits=int(row["act_bits"]),
                         kv_bits=int(row["kv_bits"]), sparsity=row.get("sparsity") or "dense", **parts)


def format_label(row: dict[str, Any]) -> str:
    """The numeric format of a row, every format knob it sets included (explore/quality.py format_words:
    'w8a8kv16-w:fp8_e4m3-a:fp8_e4m3', 'w4a16kv16 group_size=32'), so that formats of one bit width are told apart,
    with its execution where not eager ('w16a16kv16 graphs' when replayed from CUDA graphs, 'w16a16kv16 engine' with a
    serving engine's fused kernels)."""
    label = KNOBS.view(("format words", _format_key(row)), lambda: format_words(row_format(row)))
    execution = row.get("execution") or "eager"
    return label if execution == "eager" else f"{label} {execution}"


def value_label(value: Any) -> str:
    """A knob value for a label or an axis tick: numbers with %g, None as 'default'."""
    if value is None:
        return "default"
    return f"{value:g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def lengths_vary(rows: list[dict[str, Any]]) -> bool:
    """Whether rows differ in prompt or output length (labels then name them)."""
    return len({(r.get("prompt"), r.get("output")) for r in rows}) > 1


def format_number(value: Any, scale: float = 1.0) -> str:
    """A number for a table cell: at least 4 significant digits, thousands separators from 1,000, 'n/a' for NaN."""
    number = as_number(value) * scale
    if not math.isfinite(number):
        return "n/a"
    # From 1,000 up the integer part holds the 4 significant digits: separated, as counts are ('6,387', '19,923').
    return f"{number:,.0f}" if abs(number) >= 1e3 else f"{number:.4g}"


def count_label(n: int, noun: str) -> str:
    """'1 point', '10,368 points'."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def overrides_label(row: dict[str, Any]) -> str:
    """What-ifs as 'memory.bandwidth_GBps=4000, link.bandwidth_GBps=900, ...': the device's, then the link's where
    the point runs on several devices and each other pool's where the point has that pool (explore/pool_what_ifs.py),
    so points that differ only in them are told apart; empty when none."""
    pairs = [f"{path}={value_label(value)}" for path, value in overrides_of(row)]
    tp, pp = (as_number(row.get(key)) for key in ("tp", "pp"))
    prefixes = [LINK_PREFIX] if any(math.isfinite(n) and n > 1 for n in (tp, pp)) else []
    prefixes += [pool.prefix for pool in POOL_WHAT_IFS if not pool.switched_off(_switch_value(row, pool.switch))]
    pairs += [f"{key}={value_label(value)}" for key, value in sorted(row.items())
              if key.startswith(tuple(prefixes)) and value not in (None, "")] if prefixes else []
    return ", ".join(pairs)


def _switch_value(row: dict[str, Any], name: str) -> Any:
    """A pool's switch as a row holds it (a count read back from results.csv as a number; a column a sweep lacks,
    or empty, is the switch off)."""
    value = row.get(name)
    if value in (None, ""):
        return None if name == "attention_device" else 0
    number = as_number(value) if name != "attention_device" else math.nan
    return int(number) if math.isfinite(number) else value


# Serving knobs a sweep may list whose results column exists only in sweeps that set them (sim/serving_spec.py
# ServingSpec.columns), so a label names them wherever the column has a value.
LABELLED_WHERE_SET = ("router", "prompt_batch_tokens", "max_decode_preemptions", "prefix_attention", "prefix_groups",
                      "decode_pick", "queue_policy", "priority_fraction", "mixed_replicas", "max_replicas",
                      "autoscale_target",
                      "autoscale_metric", "cold_start_s", "prefill_max_replicas", "mixed_max_replicas", "autoscaler",
                      "autoscale_interval_s", "autoscale_predictor", "busy_kv_usage", "busy_prefill_tokens",
                      "busy_waiting_requests", "busy_action", "client_retries", "client_retry_s",
                      "conversation_turns", "think_s", "think_cv", "memory_utilization", "host_cache_GB", "kv_store_GB",
                      "kv_store_GBps", "prefill_node_link", "mixed_node_link", "attention_link",
                      "attention_micro_batches", "attention_placement", "long_prefill_tokens", "lora_adapters",
                      "lora_rank", "max_loras", "lora_alpha")


def point_label(row: dict[str, Any], *, lengths: bool = False, batch: bool = True) -> str:
    """'model / device / b4 / w16a16kv16' plus overrides, and prompt/output lengths when asked."""
    if row.get("scheduler"):  # a serving point: its scheduler and arrival rate, not a static batch
        rate = as_number(row.get("rate_per_s"))
        load = f"{row['scheduler']} / {rate:g} req/s" if math.isfinite(rate) else str(row["scheduler"])
        replicas, prefill = as_number(row.get("replicas")), as_number(row.get("prefill_replicas"))
        if math.isfinite(prefill) and prefill > 0:  # pools tell serving designs on one device apart
            load += f" / {prefill:g} prefill + {replicas:g} decode replicas"
        elif math.isfinite(replicas) and replicas > 1:
            load += f" / {replicas:g} replicas"
        for name in LABELLED_WHERE_SET:  # columns only in sweeps that set them: there they tell designs apart
            if row.get(name) not in (None, ""):
                load += f" / {name} {value_label(row[name])}"
    else:
        load = f"b{row.get('batch')}"
    parts = [row.get("model", ""), row.get("device", ""), load, format_label(row)]
    if not batch and not row.get("scheduler"):
        parts.pop(2)
    if lengths:
        parts.append(f"p{row.get('prompt')} o{row.get('output')}")
    parts += knobs_label(row)
    if overrides := overrides_label(row):
        parts.append(overrides)
    parts[1] = device_label(row)
    return " / ".join(str(p) for p in parts)


def knobs_label(row: dict[str, Any], on: Iterable[str] = ()) -> list[str]:
    """'name=value' of each generic knob (explore/design_point.py) a row sets to other than its default, less those
    whose only_with knobs are all off there (hot_expert_bits at hot_experts 0: no expert takes the bits; allreduce at
    tp 1) and those of the format, which format_label names. `on`: switches taken as on wherever they are (a figure's
    x axis: a line against tp keeps its all-reduce at tp 1, where its line starts)."""
    on = set(on)
    return [f"{k.name}={value_label(row[k.name])}" for k in generic_knobs()
            if k.applies != "format" and _set(row, k)
            and not (k.switches and not any(s.name in on or _set(row, s) for s in k.switches))]


def _set(row: dict[str, Any], k: Knob) -> bool:
    """Whether a row sets knob k to other than its default (a column a sweep lacks, or empty, is the default)."""
    return row.get(k.name) not in (None, "") and row[k.name] != k.default


def device_label(row: dict[str, Any]) -> str:
    """The device name (a system's with its device count, its tensor x pipeline split where it has stages, its
    experts' spread where they are spread whole over the devices and its link where not the default:
    'a100-sxm-80gb x4 (tp2 pp2)', 'h200 x8 (ep8)'; one device joins nothing, so its label names no link;
    attention devices apart after a plus: 'h100-sxm x2 + h20 x4'; a fleet's mixed device after one too, as many
    replicas of it as the mixed_replicas column says: 'h100-sxm + l4'), marked, for all its devices together (the
    calibrated column's least calibrated), '(uncalibrated)' where no model fitted on measured kernels priced it (a
    GPU's datasheet roofline, optimistic, or a family's analytical model from its paper) and '(sibling fit)' where its
    fits are borrowed from a preset of the same architecture, so say so."""
    name = str(row.get("device", ""))
    tp, pp, ep = (as_number(row.get(key)) for key in ("tp", "pp", "ep"))
    tp, pp, ep = (int(n) if math.isfinite(n) else 1 for n in (tp, pp, ep))
    if tp > 1 or pp > 1:  # a system: how many, in what stages, experts split or spread, over what link
        system = [f"tp{tp} pp{pp}"] if pp > 1 else []
        system += [f"ep{ep}"] if ep > 1 else []
        system += [link] if (link := link_label(row)) else []
        name += f" x{tp * pp}" + (f" ({', '.join(system)})" if system else "")
    if row.get("attention_device") not in (None, "", "none"):  # attention on devices of its own: 'h100-sxm x2 + h20 x4'
        count = as_number(row.get("attention_devices"))
        name += f" + {row['attention_device']} x{int(count) if math.isfinite(count) else 1}"
    mixed = as_number(row.get("mixed_replicas"))
    if row.get("mixed_device") not in (None, "") and math.isfinite(mixed) and mixed >= 1:  # a fleet: 'h100-sxm + l4'
        name += f" + {row['mixed_device']}"
    marks = {"none": " (uncalibrated)", "sibling": " (sibling fit)"}
    return name + marks.get(row.get("calibrated"), "")


def link_label(row: dict[str, Any]) -> str:
    """The link a row's devices are joined by, where not their default ('' otherwise)."""
    link = row.get("link")
    return "" if link in (None, "", "default") else str(link)


UNIT_SUFFIXES = {"s": "s", "J": "J", "W": "W", "B": "bytes", "mm2": "mm²", "usd": "USD", "GBps": "GB/s", "GB": "GB"}
# What figures and tables show a SI unit as (the results table keeps SI): times in milliseconds, bytes in GB.
DISPLAY_UNITS = {"s": ("ms", 1e3), "B": ("GB", 1e-9), "mm2": ("mm²", 1.0), "usd": ("USD", 1.0)}


def _unit(name: str) -> tuple[str, str | None]:
    """A metric's or knob's name in words and its SI unit suffix (None when it has none): from its registry entry
    (explore/metrics.py, explore/knobs.py), else read off the name."""
    if entry := metric(name):
        return entry.label, entry.unit or None
    if entry := knob(name):
        return entry.words, entry.unit or None
    if "." in name:  # an override's dotted path ('device.memory.bandwidth_GBps'): as the sweep file spells it
        return name, None
    stem, _, suffix = name.rpartition("_")
    if stem and suffix in UNIT_SUFFIXES:
        return stem.replace("_", " "), suffix
    return name.replace("_", " "), None


def metric_scale(name: str) -> float:
    """The factor from a metric's SI value to the unit figures and tables show it in (1e3 for seconds: ms)."""
    unit = _unit(name)[1]
    return DISPLAY_UNITS.get(unit, ("", 1.0))[1] if unit else 1.0


def metric_axis_label(name: str) -> str:
    """An axis label in the unit figures and tables show: 'tpot_s' -> 'TPOT (ms)', 'time_gemm_s' -> 'time gemm
    (ms)', 'peak_memory_B' -> 'peak memory (GB)'; an override's path as written ('device.memory.bandwidth_GBps').
    """
    words, unit = _unit(name)
    if unit is None:
        return words
    shown = DISPLAY_UNITS[unit][0] if unit in DISPLAY_UNITS else UNIT_SUFFIXES.get(unit, unit)
    return f"{words} ({shown})"


def metric_column(name: str) -> tuple[str, str, float]:
    """A table column of a metric: its header (metric_axis_label), name and scale to the unit the header shows."""
    return metric_axis_label(name), name, metric_scale(name)


def metric_value_label(name: str, value: Any) -> str:
    """A metric's value in the unit figures and tables show, with the unit: 'ttft_s', 2.0 -> '2,000 ms'."""
    words, unit = _unit(name)
    number = format_number(value, metric_scale(name))
    if unit is None:
        return number
    return f"{number} {DISPLAY_UNITS[unit][0] if unit in DISPLAY_UNITS else UNIT_SUFFIXES.get(unit, unit)}"


def constraint_label(metric: str, op: str, bound: float) -> str:
    """A constraint as the sweep writes it and in the report's units: 'ttft_s <= 2 (TTFT <= 2,000 ms)'."""
    written = f"{metric} {op} {bound:g}"
    human = f"{_unit(metric)[0]} {op} {metric_value_label(metric, bound)}"
    return written if metric_scale(metric) == 1.0 and _unit(metric)[0] == metric else f"{written} ({human})"
