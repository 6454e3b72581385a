"""The serving sections of the design report: metrics against the arrival rate, capacity, per-request detail.

A results row is a serving row when its `scheduler` column is set. Its metrics are summaries (p99 TTFT, goodput,
...); the per-request figures (latency CDFs, KV cache and batch size over time) come from a few chosen designs'
runs, which the sweep's report re-runs from its design points (results.csv does not hold the whole workload) and
stores beside the results (explore/report_detail.py) for `explore report DIR`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from explore.design_point import generic_knobs
from explore.metrics import better_first
from explore.plots import figure_png
from explore.plots_serving import (
    ARRIVAL_WINDOWS,
    AT_TOP_MARK,
    NOT_JUDGED_MARK,
    TIMELINE_WINDOWS,
    Limit,
    Panel,
    RateSeries,
    RunDetail,
    SeriesStyle,
    capacity_figure,
    latency_cdf_figure,
    rate_figure,
    timeline_figure,
)
from explore.report import (
    MAX_BROKEN,
    MAX_DETAIL,
    MAX_INFEASIBLE,
    MAX_SERIES,
    PEAK_MEMORY,
    TOP_N,
    ReportFigure,
    ReportTable,
    best_note,
    broken_cell,
    constraint_judge,
    infeasible_note,
)
from explore.report_detail import POOL_COLUMNS, not_stored, point_key, pool_cells
from explore.rows import (
    as_number,
    constraint_label,
    count_label,
    device_label,
    format_label,
    format_number,
    is_feasible,
    is_serving,
    metric_axis_label,
    metric_column,
    metric_value_label,
    overrides_label,
    value_label,
)
from explore.sweep import Constraint
from sim.slowdown import METRICS as SLOWDOWN_OF
from sim.stability import GROWTH_LIMIT
from workloads.requests import phases_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from explore.design_point import DesignPoint
    from explore.evaluate import Evaluator
    from explore.report_detail import DetailSource

# One fixed color per scheduler, so every serving figure agrees; line style and marker tell the rest apart.
SCHEDULER_COLORS = {"static": "#7f7f7f", "continuous": "#1f77b4", "orca": "#2ca02c", "chunked": "#d62728"}
STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ("-", "v"), ("--", "P"), (":", "X"), ("-.", "*"))
# Knobs besides the rate that tell serving designs apart, named as `knob_value` reads them; labels show the
# device and scheduler always, the others where they vary.
DESIGN_KNOBS = ("model", "device", "scheduler", "format", "overrides", "arrival", "cv", "requests", "max_seqs",
                "max_batched_tokens", "chunk_tokens", "prompt_batch_tokens", "long_prefill_tokens", "block_tokens",
                "prefix_tokens",
                "preemption", "replicas", "prefill_replicas", "prefill_device", "mixed_device", "mixed_replicas",
                "max_replicas", "autoscale_target", "autoscale_metric", "cold_start_s", "prefill_max_replicas",
                "mixed_max_replicas",
                "autoscaler", "autoscale_interval_s", "autoscale_predictor", "busy_kv_usage", "busy_prefill_tokens",
                "busy_waiting_requests", "busy_action", "client_retries", "client_retry_s",
                "router", "decode_pick", "prefix_attention",
                "prefix_groups", "queue_policy", "priority_fraction", "conversation_turns", "think_s", "think_cv",
                "max_decode_preemptions", "memory_utilization", "host_cache_GB", "kv_store_GB", "kv_store_GBps",
                "prefill_node_link", "mixed_node_link", "attention_device",
                "attention_devices", "attention_link", "attention_micro_batches", "attention_placement",
                "lora_adapters", "lora_rank", "max_loras", "lora_alpha")
ALWAYS_SHOWN = ("device", "scheduler")

FIGURE_TITLES = {
    "serving_latency": "p99 TTFT and TPOT against arrival rate",
    "serving_goodput": "Goodput and SLO attainment against arrival rate",
    "serving_energy": "Energy per output token against arrival rate",
    "serving_slowdown": "Slowdown over each request's run alone against arrival rate",
    "serving_capacity": "Capacity: the highest arrival rate that meets the SLO",
    "serving_cdf": "Latency distributions over requests",
    "serving_timeline": "Arrivals, KV-cache utilization, running batch size, power and replicas held over time",
}
HOW_TO_READ = {
    "serving_latency": "Each line is one design as requests arrive faster. A filled marker meets the SLO, a hollow "
                       "one misses it. "
                       "A latency that shoots up marks the rate where the replica saturates and requests queue. "
                       "The SLO limit applies to each request (a fraction of them must meet it), so a p99 above "
                       "it can still meet the SLO.",
    "serving_goodput": "Goodput counts only requests that meet the SLO (every completed request when there is "
                       "none), over the whole run. The dash-dot line is the offered rate: a design that serves "
                       "every request in time sits just under it (the run also drains the last requests after "
                       "arrivals stop); where a line bends away from it, the replica is overloaded.",
    "serving_energy": "Energy per output token, idle power included: at low rates the device idles between "
                      "requests and each token costs more; batching more requests per iteration makes it cheaper.",
    "serving_slowdown": "Each request's TTFT, mean time between tokens and end-to-end latency over the same request "
                        "served alone on the design's device (1: no slowdown), at the percentile of requests the "
                        "panel names; a design meets the slowdown SLO where every percentile limit holds (the "
                        "dashed lines; the other percentiles are results columns). Queueing and batching with other "
                        "requests, and prefills interrupting decodes, raise it as requests arrive faster.",
    "serving_capacity": "Higher is better: the highest Poisson arrival rate at which each design still meets the "
                        "SLO, found by bisection; 'none' means even the lowest rate searched misses it.",
    "serving_cdf": "Each curve rises through the requests of one design, fastest first: the x value where it "
                   "crosses a fraction is that percentile (0.99: p99). Dashed vertical lines are the SLO limits; "
                   "a curve meets the SLO where it is above the dotted attainment target at the limit.",
    "serving_timeline": f"Requests arriving per second over {ARRIVAL_WINDOWS} windows of each run (the load: a rate "
                        "profile's phases, a trace's bursts). "
                        "KV blocks in use and sequences in the running batch, time-weighted means over "
                        f"{TIMELINE_WINDOWS} windows of each run (idle time counts as zero), per engine (a replica, "
                        "or one of a pipelined replica's engines or of a data-parallel replica's ranks, with its share "
                        "of the KV blocks and, a rank, its own max_seqs) and averaged over the engines. A KV cache "
                        "near 100% "
                        "forces preemptions or queueing; a batch pinned at max_seqs means the scheduler, not "
                        "memory, caps concurrency. Power is the whole system's (every replica's devices, static "
                        "power included) in the same windows, its rated power (tdp_W) dashed: the gap is the "
                        "headroom a power budget could oversubscribe (power_peak_W is its busiest second).",
}


def _number(row: dict[str, Any], name: str) -> float:
    """A row's numeric value (NaN when missing or not a number)."""
    value = row.get(name)
    return float(value) if isinstance(value, int | float) else math.nan


def _rate(row: dict[str, Any]) -> float:
    return _number(row, "rate_per_s")


def _has(row: dict[str, Any], name: str) -> bool:
    return math.isfinite(_number(row, name))


def _load(row: dict[str, Any]) -> float:
    """The rate a row ran at: its arrival rate, or its capacity when the sweep searched capacity."""
    rate = _rate(row)
    return rate if math.isfinite(rate) else _number(row, "capacity_rps")


def searched_capacity(row: dict[str, Any]) -> bool:
    """Whether a row holds a capacity its sweep searched (capacity_rps set, feasible)."""
    return is_feasible(row) and _has(row, "capacity_rps")


def capacity_unjudged(row: dict[str, Any]) -> bool:
    """Whether a row's capacity is not judged (capacity_judged 0, sim/capacity.py); False where the folder has no
    capacity_judged column (written before it existed)."""
    return searched_capacity(row) and "capacity_judged" in row and not row["capacity_judged"]


def capacity_at_top(row: dict[str, Any]) -> bool:
    """Whether a row's capacity is the top of its search range, sustained: a lower bound (capacity_at_top 1,
    sim/capacity.py); False where the folder has no such column (written before it existed)."""
    return searched_capacity(row) and bool(row.get("capacity_at_top") == 1)


def at_top_footnote(rows: Sequence[dict[str, Any]]) -> str:
    """A footnote line for the capacities among rows at the top of their search range; '' when there are none."""
    count = sum(1 for row in rows if capacity_at_top(row))
    if not count:
        return ""
    return (f"{AT_TOP_MARK} marks {count_label(count, 'capacity')} at the top of the searched range: the design "
            f"sustained the range's high, so its capacity is at least that; raise the high (serving.capacity, explore "
            f"run --capacity) to find it.")


MAX_NOTES = 3  # unjudged capacities whose capacity_note a caption or table note quotes


def unjudged_footnote(rows: Sequence[dict[str, Any]], knobs: Sequence[str], marks: str) -> str:
    """A footnote line for the unjudged capacities among rows, opening with `marks` (what marks them: 'X marks'),
    quoting each one's capacity_note (the first MAX_NOTES) and saying what to do; '' when every capacity is judged."""
    unjudged = [row for row in rows if capacity_unjudged(row)]
    if not unjudged:
        return ""
    quoted = "; ".join(f"{serving_label(row, knobs, rate=False)} at {_number(row, 'capacity_rps'):.3g} req/s: "
                       f"\"{row.get('capacity_note') or 'no note recorded'}\"" for row in unjudged[:MAX_NOTES])
    more = (f"; {count_label(len(unjudged) - MAX_NOTES, 'more')} in results.csv" if len(unjudged) > MAX_NOTES else "")
    one = len(unjudged) == 1
    return (f"{marks} a capacity not judged (capacity_judged 0): the requests, not the design, stopped its search. "
            f"{'Its' if one else 'Their'} capacity_note: {quoted}{more}. Raise the number of requests "
            f"(serving.requests, explore run --requests) to judge {'it' if one else 'them'}.")


def knob_value(row: dict[str, Any], knob: str) -> Any:
    """A serving row's value of one of DESIGN_KNOBS (format and overrides as their labels)."""
    if knob == "format":
        return format_label(row)
    if knob == "overrides":
        return overrides_label(row)
    if knob == "device":
        return device_label(row)
    value = row.get(knob)
    return None if value == "" or (isinstance(value, float) and math.isnan(value)) else value


def varying_knobs(rows: list[dict[str, Any]]) -> list[str]:
    """DESIGN_KNOBS and the generic knobs (explore/design_point.py) that take more than one value in the rows, plus
    ALWAYS_SHOWN, in that order."""
    return [knob for knob in (*DESIGN_KNOBS, *(k.name for k in generic_knobs()))
            if knob in ALWAYS_SHOWN or len({knob_value(row, knob) for row in rows}) > 1]


def serving_label(row: dict[str, Any], knobs: Sequence[str], *, rate: bool = True) -> str:
    """'h100-sxm / chunked / max_seqs 64 / 6 req/s': the knobs that vary, the rate when asked and known."""
    parts = []
    for knob in knobs:
        value = knob_value(row, knob)
        if value not in (None, ""):
            named = knob in ("model", "device", "scheduler", "format", "overrides")
            parts.append(str(value) if named else f"{knob} {value_label(value)}")
    if rate and math.isfinite(_rate(row)):
        parts.append(f"{_rate(row):g} req/s")
    elif rate and _has(row, "capacity_rps"):
        capacity = _number(row, "capacity_rps")
        parts.append(f"capacity {capacity:.3g} req/s" if capacity > 0 else "no rate meets the SLO (run at the lowest)")
    return " / ".join(parts)


# ---- metrics against the arrival rate -----------------------------------------------------------------------

def _styles(keys: list[tuple], knobs: list[str]) -> tuple[list[SeriesStyle], str]:
    """Color by scheduler and line style and marker by the other knobs when there are several schedulers and
    at most len(STYLES) other combinations; else a color per series (line styles after the 10 colors run out). With
    the styles, the caption's sentence saying which."""
    where = knobs.index("scheduler")
    schedulers = list(dict.fromkeys(key[where] for key in keys))
    others = list(dict.fromkeys(key[:where] + key[where + 1:] for key in keys))
    if len(schedulers) > 1 and len(others) <= len(STYLES):
        return [SeriesStyle(color=SCHEDULER_COLORS.get(key[where], "#000000"),
                            linestyle=STYLES[others.index(key[:where] + key[where + 1:])][0],
                            marker=STYLES[others.index(key[:where] + key[where + 1:])][1]) for key in keys], \
            "Color is the scheduler, line style and marker the rest (device, ...)."
    # Past the ten colors, the line style and the marker tell a series from the one of its color (a point alone, at
    # one rate, shows no line style).
    return [SeriesStyle(color=f"C{i % 10}", linestyle=STYLES[i // 10 % len(STYLES)][0],
                        marker=STYLES[i // 10 % len(STYLES)][1]) for i in range(len(keys))], \
        "Each design has a color of its own, and past ten colors a marker (the legend names it)."


def rate_series(rows: list[dict[str, Any]], metrics: Sequence[str],
                chosen: Sequence[tuple[dict[str, Any], list[str]]] = ()) -> tuple[list[RateSeries], str]:
    """One line per design among feasible rows with a rate, and what is shown: every design when there are at
    most MAX_SERIES, else the designs holding a chosen point and the first others in row order."""
    knobs = varying_knobs(rows)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        if is_feasible(row) and math.isfinite(_rate(row)):
            groups.setdefault(tuple(knob_value(row, k) for k in knobs), []).append(row)
    keys = list(groups)
    chosen_keys = {point_key(row) for row, _ in chosen}
    if len(keys) > MAX_SERIES:
        holding = [k for k in keys if any(point_key(r) in chosen_keys for r in groups[k])]
        others = [k for k in keys if k not in holding][:max(MAX_SERIES - len(holding), 0)]
        keys = [k for k in keys if k in set(holding) | set(others)]
        which = (f"the {len(holding)} holding a chosen design and the first {len(others)} others" if holding else
                 f"the first {len(others)}")
        shown = f"{len(keys)} of {len(groups)} shown: {which} in the sweep's order; the rest are in results.csv"
    else:
        shown = f"all {len(groups)} shown"
    series = []
    styles, colors = _styles(keys, knobs)
    for key, style in zip(keys, styles, strict=True):
        members = sorted(groups[key], key=_rate)
        series.append(RateSeries(
            label=serving_label(members[0], knobs, rate=False), style=style,
            rate_per_s=np.array([_rate(r) for r in members]),
            values={m: np.array([float(r.get(m, math.nan)) for r in members]) for m in metrics},
            meets_slo=np.array([float(r.get("meets_slo", math.nan)) for r in members])))
    infeasible = sum(not is_feasible(row) for row in rows)
    left_out = f" {count_label(infeasible, 'infeasible point')} (listed below) left out." if infeasible else ""
    return series, f"One line per design ({shown}).{left_out} {colors}"


def _constraint_limits(constraints: Sequence[str] | None, metric: str) -> list[Limit]:
    return [Limit(value=c.bound, label=f"constraint {constraint_label(c.metric, c.op, c.bound)}", linestyle=":")
            for c in Constraint.parse_all(constraints) if c.metric == metric]


def _slo_limit(slo: Mapping[str, Any] | None, field: str) -> list[Limit]:
    """The SLO's per-request limit on `field` ('ttft_s', 'tpot_s', 'urgent_ttft_s') as a dashed line, none without
    one."""
    if not slo or slo.get(field) is None:
        return []
    share = slo.get("attainment")
    who = f"{share:.0%} of requests" if share is not None else "each request"
    # Where the urgent requests have a limit of their own, the panels of every request draw the others'.
    whose = ("the urgent requests' " if field.startswith("urgent_") else
             "the other requests' " if slo.get(f"urgent_{field}") is not None else "")
    label = f"{whose}SLO limit ({who} must meet it)"
    return [Limit(value=float(slo[field]), label=label[0].upper() + label[1:], linestyle="--")]


def _rates_missing(rows: list[dict[str, Any]]) -> str:
    """Why no figure against the rate can be drawn; empty when one can."""
    if any(is_feasible(r) and math.isfinite(_rate(r)) for r in rows):
        return ""
    if not any(is_feasible(r) for r in rows):
        return "Not drawn: no feasible design point."
    if any(_has(r, "capacity_rps") for r in rows):
        return ("Not drawn: the sweep searched each design's capacity instead of sweeping arrival rates "
                "(see the capacity figure).")
    return "Not drawn: no point has an arrival rate (trace arrivals replayed at their own times)."


def _figure(name: str, caption: str, fig: Figure | None = None, title: str | None = None) -> ReportFigure:
    """A report figure with its title; a figure without a plot keeps only its caption (why it is missing)."""
    if fig is not None:
        caption += " " + HOW_TO_READ[name]
    return ReportFigure(name=name, title=title or FIGURE_TITLES[name], caption=caption,
                        png=None if fig is None else figure_png(fig))


def _slowdown_limits(slo: Mapping[str, Any] | None) -> dict[str, dict[int, float]]:
    """The SLO's slowdown limits as {metric: {percentile: limit}} (sim/slowdown.py METRICS); empty without."""
    limits = (slo or {}).get("slowdown") or {}
    return {name: {int(key.removeprefix("p")): float(value) for key, value in (limits.get(name) or {}).items()
                   if value is not None} for name in SLOWDOWN_OF if (limits.get(name) or {})}


def _slowdown_panels(slo: Mapping[str, Any] | None, constraints: Sequence[str] | None) -> list[Panel]:
    """One panel per limited metric, at the percentile the SLO limits lowest (the lowest percentile on ties)."""
    panels = []
    for name, limits in _slowdown_limits(slo).items():
        if not limits:
            continue
        percentile = min(limits, key=lambda p: (limits[p], p))
        metric = f"slowdown_{name}_p{percentile}"
        panels.append(Panel(metric=metric, title=f"p{percentile} {name.upper()} slowdown",
                            ylabel=f"p{percentile} {name.upper()} slowdown (x alone)",
                            limits=[Limit(value=limits[percentile], label="slowdown SLO limit", linestyle="--")]
                            + _constraint_limits(constraints, metric)))
    return panels


RATE_METRICS = ("ttft_p99_s", "tpot_p99_s", "goodput_rps", "slo_attainment", "energy_per_token_J")  # of every point


def rate_figures(rows: list[dict[str, Any]], slo: Mapping[str, Any] | None, constraints: Sequence[str] | None,
                 chosen: Sequence[tuple[dict[str, Any], list[str]]] = ()) -> list[ReportFigure]:
    """p99 latency (with the urgent requests' p99 TTFT where requests differ in priority), goodput with SLO
    attainment, and energy per token against the arrival rate; with a slowdown SLO, the limited slowdowns too."""
    slowdown = _slowdown_panels(slo, constraints)
    names = ("serving_latency", "serving_goodput", "serving_energy") + (("serving_slowdown",) if slowdown else ())
    if why := _rates_missing(rows):
        return [_figure(name, why) for name in names]
    urgent = any(_has(row, "urgent_ttft_p99_s") for row in rows)  # requests differ in priority
    # The urgent requests' p99 TTFT, and their TPOT where the SLO gives them a TPOT limit of their own.
    urgent_panels = [name for name in ("ttft", "tpot") if urgent and (name == "ttft" or (slo or {}).get(
        "urgent_tpot_s") is not None)]
    metrics = (*RATE_METRICS, *(panel.metric for panel in slowdown),
               *(f"urgent_{name}_p99_s" for name in urgent_panels))
    series, caption = rate_series(rows, metrics, chosen)
    latency = [Panel(metric="ttft_p99_s", title="p99 time to first token", ylabel="p99 TTFT (ms)", scale=1e3,
                     limits=_slo_limit(slo, "ttft_s") + _constraint_limits(constraints, "ttft_p99_s")),
               Panel(metric="tpot_p99_s", title="p99 time per output token", ylabel="p99 TPOT (ms)", scale=1e3,
                     limits=_slo_limit(slo, "tpot_s") + _constraint_limits(constraints, "tpot_p99_s"))]
    for name in urgent_panels:
        own = (slo or {}).get(f"urgent_{name}_s") is not None
        latency.append(Panel(metric=f"urgent_{name}_p99_s", title=f"p99 {name.upper()} of the urgent requests",
                             ylabel=f"urgent p99 {name.upper()} (ms)", scale=1e3,
                             limits=_slo_limit(slo, f"urgent_{name}_s" if own else f"{name}_s")
                             + _constraint_limits(constraints, f"urgent_{name}_p99_s")))
    judged = any(np.isfinite(s.values["slo_attainment"]).any() for s in series)  # False: no per-request limits
    unjudged = "no per-request SLO limits" if slowdown else "no SLO"
    goodput = [Panel(metric="goodput_rps", title="goodput" if judged else f"goodput ({unjudged}: every completed "
                     f"request)", ylabel="goodput (requests/s meeting the SLO)" if judged else "completed requests/s",
                     limits=_constraint_limits(constraints, "goodput_rps"), identity=True)]
    if judged:
        target = [Limit(value=float(slo["attainment"]), label=f"SLO attainment target ({slo['attainment']:g})",
                        linestyle="--")] \
            if slo and slo.get("attainment") is not None else []
        goodput.append(Panel(metric="slo_attainment", title="SLO attainment", ylim=(0, 1.04), limits=target,
                             ylabel="fraction of requests meeting the SLO"))
    energy = [Panel(metric="energy_per_token_J", title="energy per output token", ylabel="energy (J/token)",
                    limits=_constraint_limits(constraints, "energy_per_token_J"))]
    titles = {"serving_goodput": None if judged else f"Goodput against arrival rate ({unjudged})"}
    # The urgent requests' panel marks each point by every request's verdict, as the others do.
    urgent_note = {"serving_latency": " The urgent requests' panel marks each point as the other panels do, by every "
                                      "request's SLO verdict; the urgent requests' own share meeting the SLO is the "
                                      "tables' urgent SLO attainment."} if urgent else {}
    return [_figure(name, caption + urgent_note.get(name, ""), rate_figure(series, panels), titles.get(name))
            for name, panels in zip(names, [latency, goodput, energy] + ([slowdown] if slowdown else []), strict=True)]


def capacity_section(rows: list[dict[str, Any]]) -> ReportFigure:
    """Capacity bars per design, one color per scheduler, an unjudged capacity hollow with its note quoted in the
    caption; or why they are missing."""
    searched = [r for r in rows if searched_capacity(r)]
    if not searched:
        return _figure("serving_capacity", "Not drawn: the sweep did not search capacity (serving: capacity: "
                                           "[low, high] finds the highest rate meeting the SLO).")
    knobs = [k for k in varying_knobs(searched) if k != "scheduler"]
    groups = list(dict.fromkeys(serving_label(r, knobs, rate=False) for r in searched))
    schedulers = list(dict.fromkeys(r["scheduler"] for r in searched))
    # The bar of a scheduler and group: its highest capacity (the first row on ties), judged as that row is.
    drawn = {s: [max((r for r in searched if r["scheduler"] == s and serving_label(r, knobs, rate=False) == g),
                     key=lambda r: float(r["capacity_rps"]), default=None) for g in groups] for s in schedulers}
    values = {s: [math.nan if r is None else float(r["capacity_rps"]) for r in drawn[s]] for s in schedulers}
    judged = {s: [r is None or not capacity_unjudged(r) for r in drawn[s]] for s in schedulers}
    at_top = {s: [r is not None and capacity_at_top(r) for r in drawn[s]] for s in schedulers}
    colors = {s: SCHEDULER_COLORS.get(s, f"C{i}") for i, s in enumerate(schedulers)}
    caption = f"{count_label(len(searched), 'feasible design point')}; one group per design, one bar per scheduler."
    if _has_capacity_columns(searched):  # searched since sim/stability.py: a rate passes only where the queue keeps up
        caption += (" A rate counts only where its run also keeps up: the time requests wait for a batch grows by at "
                    f"most {GROWTH_LIMIT:g} s per s of arrivals (queue growth in the tables).")
    if footnote := unjudged_footnote([r for bars in drawn.values() for r in bars if r is not None],
                                     varying_knobs(searched), f"A hollow bar and {NOT_JUDGED_MARK} mark"):
        caption += f" {footnote}"
    if footnote := at_top_footnote([r for bars in drawn.values() for r in bars if r is not None]):
        caption += f" {footnote}"
    return _figure("serving_capacity", caption, capacity_figure(groups, values, colors, judged, at_top))


# ---- per-request detail of re-run designs -------------------------------------------------------------------

def detail_rows(rows: list[dict[str, Any]],
                chosen: Sequence[tuple[dict[str, Any], list[str]]]) -> tuple[list[tuple[dict[str, Any], str]], bool]:
    """The designs to re-run with their roles, and whether they are the chosen ones: the chosen, else per
    scheduler the feasible point at the highest rate or capacity (the first in row order on ties); at most
    MAX_DETAIL."""
    picked = [(row, ", ".join(roles)) for row, roles in chosen if is_serving(row) and is_feasible(row)]
    if picked:
        return picked[:MAX_DETAIL], True
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        if is_feasible(row) and (row["scheduler"] not in best or _load(row) > _load(best[row["scheduler"]])):
            best[row["scheduler"]] = row
    picked = [(row, "") for row in best.values()]
    return picked[:MAX_DETAIL], False


def run_detail(data: Mapping[str, Any], label: str, color: str, max_seqs: float,
               rated_W: float = math.nan) -> RunDetail:
    """A serving run's latencies and iteration log (DetailSource.serving_run) as a figure's series."""
    engine = data.get("engine")  # stored before engines were told apart: one engine
    dynamic = data.get("dynamic_J")  # stored before iterations carried their energy: no power line
    held = data.get("replicas_held")  # an autoscaled pool's; none: a fixed one
    return RunDetail(label=label, color=color, max_seqs=max_seqs, end_s=float(data["end_s"]),
                     engine=None if engine is None else np.asarray(engine, dtype=np.int64),
                     engines=int(data.get("engines", 1)),
                     dynamic_J=None if dynamic is None else np.asarray(dynamic, dtype=float),
                     static_W=float(data.get("static_W", math.nan)), rated_W=rated_W,
                     replicas_held=None if held is None else np.asarray(held, dtype=float),
                     mean_replicas=float(data.get("mean_replicas", math.nan)),
                     replica_engines=int(data.get("replica_engines", 1)),
                     arrival_s=None if data.get("arrival_s") is None else np.asarray(data["arrival_s"], dtype=float),
                     **{name: np.asarray(data[name], dtype=float) for name in
                        ("ttft_s", "tpot_s", "start_s", "duration_s", "kv_utilization", "batch_size")})


def _detail_runs(rows: list[dict[str, Any]], detail: DetailSource,
                 chosen: Sequence[tuple[dict[str, Any], list[str]]], points: Mapping[str, DesignPoint] | None,
                 ) -> tuple[list[tuple[dict[str, Any], str]], list[tuple[dict[str, Any], str, Any]], bool]:
    """The designs picked for per-request detail (detail_rows), those of them with a run (row, role, stored or re-run
    detail) and whether they are the chosen ones."""
    picked, from_chosen = detail_rows(rows, chosen)
    runs = [(row, role, detail.serving_run(row, (points or {}).get(row.get("point_id")))) for row, role in picked]
    return picked, [(row, role, data) for row, role, data in runs if data is not None], from_chosen


def _run_letter(place: int) -> str:
    """The letter naming a run of the per-request detail, in the figures and the pool table: A, B, ..."""
    return chr(ord("A") + place)


def pool_tables(rows: list[dict[str, Any]], detail: DetailSource,
                chosen: Sequence[tuple[dict[str, Any], list[str]]] = (),
                points: Mapping[str, DesignPoint] | None = None) -> list[ReportTable]:
    """Of the fleets among the per-request detail's runs (by their figures' letters): each pool's device, replicas
    and the requests it served with their latencies and goodput; none where no run is of a fleet."""
    _, found, _ = _detail_runs(rows, detail, chosen, points)
    cells = [[_run_letter(i), *pool_cells(pool)] for i, (_, _, data) in enumerate(found)
             for pool in data.get("pools", ())]
    if not cells:
        return []
    return [ReportTable(
        title="Requests by pool", note="Of each fleet among the designs re-run for per-request detail (the latency "
        "figures' letters): each pool's replicas (held on average where it autoscales) and the requests whose last "
        "token its replicas sampled (a request a prefill pool hands over counts in its decode pool), their latencies "
        "and those meeting the SLO per second of the run (the pools' add up to the design's goodput).",
        headers=["design", *(label for label, _, _ in POOL_COLUMNS)],
        cells=cells)]


def detail_figures(rows: list[dict[str, Any]], detail: DetailSource,
                   chosen: Sequence[tuple[dict[str, Any], list[str]]],
                   points: Mapping[str, DesignPoint] | None, slo: Mapping[str, Any] | None) -> list[ReportFigure]:
    """Latency CDFs and the KV/batch timeline of the chosen designs, stored by the sweep or re-run; or why they
    are missing."""
    names = ("serving_cdf", "serving_timeline")
    picked, found, from_chosen = _detail_runs(rows, detail, chosen, points)
    if not picked:
        return [_figure(name, "Not drawn: no feasible design point.") for name in names]
    if len(found) < len(picked) and not detail.can_price:
        why = not_stored("per-request latencies and iteration logs")
        return [_figure(name, why) for name in names]
    if not found:
        why = ("Not drawn: per-request detail re-runs designs from the sweep's design points, and results.csv does "
               "not hold the whole serving workload; the report written by `explore SWEEP.yaml` has it."
               if points is None else "Not drawn: no feasible design point among the sweep's points.")
        return [_figure(name, why) for name in names]
    knobs = varying_knobs(rows)
    series = []
    for i, (row, role, data) in enumerate(found):
        label = f"{_run_letter(i)}: " + (f"{role}: " if role else "") + serving_label(row, knobs)
        series.append(run_detail(data, label, f"C{i % 10}", _number(row, "max_seqs"), _number(row, "tdp_W")))
    searched = any(_has(row, "capacity_rps") for row, _, _ in found)
    which = ("The chosen designs (the best on each objective and the balanced one, as in the Pareto table)"
             if from_chosen else "Per scheduler, the feasible point at the highest "
             + ("capacity (run at that rate)" if searched else "arrival rate"))
    missing = (f" {count_label(len(picked) - len(found), 'point')} not among the sweep's design points left out."
               if len(found) < len(picked) else "")
    capped = f" (the first {MAX_DETAIL})" if from_chosen and len(chosen) > MAX_DETAIL else ""
    caption = f"{which}{capped}, re-run for per-request detail.{missing}"
    limits = {"ttft_s": _slo_limit(slo, "ttft_s"), "tpot_s": _slo_limit(slo, "tpot_s")}
    attainment = float(slo["attainment"]) if slo and slo.get("attainment") is not None and any(limits.values()) \
        else None
    urgent = [f"{name} {metric_value_label(key, slo[f'urgent_{key}'])}" for key, name in
              (("ttft_s", "TTFT"), ("tpot_s", "TPOT")) if slo and slo.get(f"urgent_{key}") is not None]
    classes = (f" The curves hold every request, both classes; the lines are the other requests' limits, not the "
               f"urgent requests' own ({' and '.join(urgent)}): a curve that clears them may leave the urgent "
               f"requests short of theirs (the tables' urgent SLO attainment)." if urgent else "")
    return [_figure("serving_cdf", caption + classes, latency_cdf_figure(series, limits, attainment)),
            _figure("serving_timeline", caption, timeline_figure(series))]


def serving_figures(rows: list[dict[str, Any]], detail: DetailSource,
                    chosen: Sequence[tuple[dict[str, Any], list[str]]] = (),
                    points: Mapping[str, DesignPoint] | None = None, slo: Mapping[str, Any] | None = None,
                    constraints: Sequence[str] | None = None, search: str | None = None) -> list[ReportFigure]:
    """Every serving figure of the report, in order; those that cannot be drawn say why."""
    from explore.report_whatif import whatif_section

    return (rate_figures(rows, slo, constraints, chosen) + [capacity_section(rows)]
            + detail_figures(rows, detail, chosen, points, slo) + whatif_section(rows, detail, search, points))


def drawn_metrics(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """The metric columns the report reads of every row of its kind: tokens_per_s (whether the point is feasible),
    then what the static figures plot against batch and the serving figures against arrival rate."""
    from explore.report_static import BATCH_METRICS

    kinds = {is_serving(row) for row in rows}
    return ("tokens_per_s", *(BATCH_METRICS if False in kinds else ()), *(RATE_METRICS if True in kinds else ()))


def report_sections(typed: list[dict[str, Any]], evaluator: Evaluator | None,
                    chosen: Sequence[tuple[dict[str, Any], list[str]]], points: Mapping[str, DesignPoint] | None,
                    slo: Mapping[str, Any] | None, constraints: Sequence[str] | None,
                    detail: DetailSource | None = None, search: str | None = None,
                    rate_profile: Sequence[Sequence[float]] | None = None,
                    ) -> tuple[list[ReportFigure], list[ReportTable], list[ReportTable], list[str]]:
    """Figures, the tables before and after them, and summary lines of the static-batch rows and of the serving
    rows (a sweep has one kind; a results folder holding both gets both sections, static first); `search`: how the
    points were chosen (a steered search's are not every combination); `rate_profile`: the phases of the serving
    sweep's arrival rate."""
    from explore.report import report_tables
    from explore.report_detail import DetailSource
    from explore.report_static import static_figures

    serving = [row for row in typed if is_serving(row)]
    static = [row for row in typed if not is_serving(row)]
    figures, lead, tail, summary = [], [], [], []
    broken = constraint_judge(constraints)
    detail = detail or DetailSource(evaluator, typed, None)
    if static or not serving:
        figures += static_figures(static, detail, [c for c in chosen if not is_serving(c[0])], broken, search)
        before, after = report_tables(static, constraints)
        lead += before
        tail += after
    if serving:
        figures += serving_figures(serving, detail, [c for c in chosen if is_serving(c[0])], points, slo,
                                   constraints, search)
        before, after = serving_tables(serving, constraints)
        lead += before
        tail += pool_tables(serving, detail, [c for c in chosen if is_serving(c[0])], points) + after
        summary += serving_summary(serving, slo, rate_profile)
    # Each kind's top tables precede the figures; the points that break a constraint and the infeasible ones follow.
    return figures, lead, tail, summary


# ---- tables and summary -------------------------------------------------------------------------------------

def _point_headers(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Headers naming a serving point, and the extra knobs (beyond model, device, scheduler, format) shown."""
    extra = [k for k in varying_knobs(rows) if k not in ("model", "device", "scheduler", "format")]
    rate = [RATE] if any(math.isfinite(_rate(r)) for r in rows) else []
    return ["model", "device", "scheduler", *rate, "format", *extra], extra


def _point_cells(row: dict[str, Any], rate: bool, extra: list[str]) -> list[str]:
    cells = [str(row.get("model", "")), device_label(row), str(row.get("scheduler", ""))]
    cells += [format_number(_rate(row))] if rate else []
    values = (knob_value(row, k) for k in extra)
    return cells + [format_label(row)] + ["" if v is None else value_label(v) for v in values]


# Each column headed by its metric's registry label (explore/metrics.py), in the unit figures show it in; the rate by
# its knob's (explore/knobs.py), as the figures' x axis.
RATE = metric_axis_label("rate_per_s")
METRICS = tuple(metric_column(name) for name in ("goodput_rps", "slo_attainment", "ttft_p99_s", "tpot_p99_s",
                                                 "tokens_per_s", "energy_per_token_J", "avg_power_W", "peak_memory_B"))
CAPACITY = metric_column("capacity_rps")
# Beside the capacity where the sweep's folder has the capacity columns (sim/capacity.py CAPACITY_METRICS).
QUEUE_GROWTH = metric_column("queue_growth")
# Where requests differ in priority: the most urgent ones' p99 TTFT and SLO attainment (sim/serving_metrics.py).
URGENT = (metric_column("urgent_ttft_p99_s"), metric_column("urgent_slo_attainment"))
# Of an autoscaled pool: the replicas it held on average, what its price per hour rents (sim/autoscalers/).
SCALED = (metric_column("mean_replicas"), metric_column("usd_per_hour"))
# Where the gateway sheds load: the share of requests it rejected (sim/admission.py).
REJECTED = (metric_column("rejected_share"),)
# Where clients retry rejected requests: the share turned away at least once (the rejected share where none retry).
RETRIED = metric_column("retried_share")
# Under a slowdown SLO: the p90 slowdown of each metric (the other percentiles are results columns).
SLOWDOWNS = tuple(metric_column(f"slowdown_{name}_p90") for name in SLOWDOWN_OF)


def _has_capacity_columns(rows: list[dict[str, Any]]) -> bool:
    """Whether the rows carry a capacity search's columns (folders written before them do not)."""
    return any("capacity_judged" in r or _has(r, "queue_growth") for r in rows)


def metric_cell(row: dict[str, Any], name: str, scale: float) -> str:
    """A metric's table cell; a capacity that is not judged ends in NOT_JUDGED_MARK."""
    mark = f" {NOT_JUDGED_MARK}" if name == "capacity_rps" and capacity_unjudged(row) else ""
    top = AT_TOP_MARK if name == "capacity_rps" and capacity_at_top(row) else ""
    return top + format_number(row.get(name), scale) + mark


def _design_table(title: str, note: str, shown: list[dict[str, Any]], rows: list[dict[str, Any]]) -> ReportTable:
    """A table of shown serving points; the columns as the rows have them, unjudged capacities footnoted."""
    headers, extra = _point_headers(rows)
    capacity = ((CAPACITY,) + ((QUEUE_GROWTH,) if _has_capacity_columns(rows) else ())
                if any(_has(r, "capacity_rps") for r in rows) else ())
    scaled = SCALED if any(_has(r, "mean_replicas") for r in rows) else ()
    retried = (RETRIED,) if any(as_number(r.get("client_retries")) > 0 for r in rows) else ()
    metrics = METRICS + capacity + scaled + tuple(m for m in URGENT + REJECTED + retried + SLOWDOWNS
                                                  if any(_has(r, m[1]) for r in rows))
    footnote = " ".join(note for note in (unjudged_footnote(shown, varying_knobs(rows), f"{NOT_JUDGED_MARK} marks"),
                                          at_top_footnote(shown)) if note)
    return ReportTable(title=title, note=f"{note} {footnote}" if footnote else note,
                       headers=headers + [m[0] for m in metrics],
                       cells=[_point_cells(r, RATE in headers, extra)
                              + [metric_cell(r, name, scale) for _, name, scale in metrics] for r in shown])


def serving_tables(rows: list[dict[str, Any]], constraints: Sequence[str] | None = None,
                   ) -> tuple[list[ReportTable], list[ReportTable]]:
    """Top designs by goodput (or capacity) and by energy among the points meeting the constraints; after the
    figures, the points that break a constraint (with the ones they break) and the infeasible points."""
    broken = constraint_judge(constraints)
    feasible = [row for row in rows if is_feasible(row)]
    meeting = [row for row in feasible if not broken(row)]
    violating = [row for row in feasible if broken(row)]
    meets = " meeting the constraints" if constraints else ""
    left_out = (f" {count_label(len(violating), 'feasible point')} that break a constraint are left out (listed in "
                "'Points that break a constraint').") if violating else ""
    searched = any(_has(r, "capacity_rps") for r in feasible)
    best = ("capacity_rps", "Highest capacity", "with the highest arrival rate that meets the SLO") if searched else (
        "goodput_rps", "Highest goodput", "serving the most requests per second within the SLO (all completed "
        "requests when there is none)")
    good = better_first((r for r in meeting if _has(r, best[0])), best[0], "tokens_per_s")[:TOP_N]
    frugal = better_first((r for r in meeting if _has(r, "energy_per_token_J")), "energy_per_token_J")[:TOP_N]
    infeasible = [row for row in rows if not is_feasible(row)]
    shown = infeasible[:MAX_INFEASIBLE]
    more = f" Showing the first {len(shown)} of {len(infeasible)}." if len(infeasible) > len(shown) else ""
    headers, extra = _point_headers(rows)
    lead = [
        _design_table(best[1], f"{best_note(good, f'{meets} {best[2]}; times in ms', feasible, meeting)}{left_out}",
                      good, rows),
        _design_table("Lowest energy per token", best_note(frugal, f"{meets} with the least energy per output token, "
                      "idle time included", feasible, meeting) + left_out, frugal, rows),
    ]
    tail = []
    if violating:
        table = _design_table("Points that break a constraint", f"{count_label(len(violating), 'feasible point')} "
                              "run but break a constraint: no best-design table, Pareto front or chosen design "
                              "includes them.", violating[:MAX_BROKEN], rows)
        tail.append(ReportTable(title=table.title, note=table.note, headers=table.headers + ["breaks"],
                                cells=[cells + [broken_cell(r, broken)]
                                       for cells, r in zip(table.cells, violating, strict=False)]))
    tail.append(ReportTable(
        title="Infeasible design points", note=infeasible_note(len(infeasible), more),
        headers=headers + [PEAK_MEMORY[0], "reason"],
        cells=[_point_cells(r, RATE in headers, extra)
               + [metric_cell(r, *PEAK_MEMORY[1:]), r.get("infeasible_reason") or "no metrics (NaN)"]
               for r in shown]))
    return lead, tail


def _slo_line(slo: Mapping[str, Any]) -> str:
    """'SLO: TTFT <= 2000 ms and TPOT <= 100 ms for 90% of requests.'; where the urgent requests have limits of their
    own, each class's (an urgent limit left unset is the others'), each class to reach the attainment; '' without
    a limit."""
    def limit(prefix: str, key: str) -> float | None:
        return slo.get(prefix + key) if slo.get(prefix + key) is not None else slo.get(key)

    def limits(prefix: str) -> str:
        return " and ".join(f"{name} <= {metric_value_label(key, limit(prefix, key))}" for key, name in
                            (("ttft_s", "TTFT"), ("tpot_s", "TPOT")) if limit(prefix, key) is not None)
    share = slo.get("attainment")
    if slo.get("urgent_ttft_s") is None and slo.get("urgent_tpot_s") is None:
        return "" if not limits("") else (f"SLO: {limits('')} for {share:.0%} of requests." if share is not None
                                          else f"SLO: {limits('')}.")
    classes = f"the urgent requests {limits('urgent_')}, the others {limits('') or 'none'}"
    return f"SLO: {classes}, for {share:.0%} of each class." if share is not None else f"SLO: {classes}."


def serving_summary(rows: list[dict[str, Any]], slo: Mapping[str, Any] | None,
                    rate_profile: Sequence[Sequence[float]] | None = None) -> list[str]:
    """Header lines: the requests, arrivals, rates (and the phases they run in, where the rate rises and falls) and
    schedulers of the sweep, and its SLO when known."""
    # Joined by ' or ': a count's thousands separator would make a comma-joined list ambiguous ('200, 60,000').
    requests = " or ".join(dict.fromkeys(f"{r['requests']:,}" if isinstance(r.get("requests"), int)
                                         else value_label(r.get("requests")) for r in rows))
    arrivals = ", ".join(dict.fromkeys(str(r.get("arrival") or "?") for r in rows))
    rates = sorted({_rate(r) for r in rows if math.isfinite(_rate(r))})
    at = f" at {', '.join(f'{r:g}' for r in rates)} req/s" if rates else ""
    if rate_profile:
        at += f" ({phases_label([(duration_s, multiplier) for duration_s, multiplier in rate_profile])})"
    schedulers = ", ".join(dict.fromkeys(str(r["scheduler"]) for r in rows))
    lines = [f"Serving: {requests} requests per point, {arrivals} arrivals{at}; schedulers {schedulers}."]
    if slo and (line := _slo_line(slo)):
        lines.append(line)
    if slowdown := _slowdown_limits(slo):
        bounds = "; ".join(f"{name.upper()} " + ", ".join(f"p{p} <= {limit:g}x" for p, limit in sorted(limits.items()))
                           for name, limits in slowdown.items())
        lines.append(f"Slowdown SLO (each request's latency over its run alone on the design's device; every limit "
                     f"must hold): {bounds}.")
    return lines
