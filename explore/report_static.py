"""The static-batch figures of the design report: roofline, latency and energy breakdowns, energy per token, TTFT
and TPOT against batch (and against tensor-parallel devices).

Every figure says in its caption which points it shows, and none leaves out the chosen designs: a figure that
cannot show every point shows the chosen ones and a named subset, or one panel per model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from explore.metrics import TIME_CLASSES, better_first
from explore.plots import (
    BROKEN_MARK,
    CHOSEN_MARK,
    ENERGY_COLORS,
    BatchPanel,
    BatchSeries,
    EnergyPanel,
    Roof,
    RooflinePanel,
    batch_figure,
    breakdown_figure,
    energy_breakdown_figure,
    energy_figure,
    figure_png,
    roofline_figure,
)
from explore.report import MAX_SERIES, ReportFigure
from explore.report_detail import DetailSource, not_stored, point_key
from explore.rows import (
    as_number,
    count_label,
    device_label,
    format_label,
    is_feasible,
    knobs_label,
    lengths_vary,
    link_label,
    overrides_label,
    point_label,
)

MAX_BARS = 30  # design points in the latency and energy breakdowns

FIGURE_TITLES = {
    "roofline": "Roofline of the workload's kernels", "breakdown": "Latency breakdown by kernel class",
    "energy_breakdown": "Energy per output token by part: static, memory, compute",
    "energy": "Energy per output token by device and format", "batch": "TTFT and TPOT against batch size",
    "scaling": "TTFT and TPOT against tensor-parallel devices",
    "formats": "Time and energy per output token against weight bits",  # explore/report_formats.py
}
HOW_TO_READ = {
    "roofline": "Each point is a distinct kernel (repeated layers drawn once), its area its share of the time of "
                "its pass (the prefill, or one decode step). Solid, dash-dot and dotted lines are the 16-, 8- and "
                "4-bit matrix roofs the sweep's formats run at, the dashed gray line the fp32 vector roof; a circle "
                "marks each ridge point (the intensity where a kernel stops being memory-bound). A kernel's "
                "distance below its roof is time lost to launch overhead or a slower rate. Kernels without FLOPs "
                "(copies, embedding lookups) are not shown.",
    "breakdown": "Each bar is the latency of one request (prefill plus all decode steps), split by kernel class; "
                 "the longest segment is what to speed up first. 'host wait' is the device idle while the host "
                 "catches up (PyTorch eager's dispatch, or the host link when offloading): faster kernels do not "
                 "shorten it; CUDA graphs or an engine's fused kernels (`execution: graphs` or `engine`) do.",
    "energy_breakdown": "Static energy is idle (leakage and board) power over the whole run, so it shrinks as "
                        "batching shortens the time per token; memory energy is data movement (off-chip, on-chip, "
                        "in-bank); compute energy is the arithmetic.",
    "energy": "Lower is better.",
    "batch": "Left: time to first token; right: time per output token after the first. A flat TPOT line means "
             "decode is memory-bound and batching is nearly free; a rising one means compute has become the limit.",
    "scaling": "A line that flattens has run into its all-reduces or per-kernel overheads, which more devices do "
               "not divide.",
}

Chosen = Sequence[tuple[dict[str, Any], list[str]]]
Broken = Callable[[dict[str, Any]], list[str]]


def figure(name: str, caption: str, fig: Any = None, title: str | None = None) -> ReportFigure:
    """A report figure with its title; a figure without a plot keeps only its caption (why it is missing)."""
    if fig is not None:
        caption += " " + HOW_TO_READ[name]
    return ReportFigure(name=name, title=title or FIGURE_TITLES[name], caption=caption,
                        png=None if fig is None else figure_png(fig))


def _bits(row: dict[str, Any]) -> tuple[int, int, int]:
    return row["weight_bits"], row["act_bits"], row["kv_bits"]


def roles_by_point(chosen: Chosen) -> dict[str, str]:
    """point key -> its roles ('best tpot_s, balanced')."""
    roles: dict[str, list[str]] = {}
    for row, names in chosen:
        roles.setdefault(point_key(row), []).extend(names)
    return {key: ", ".join(dict.fromkeys(names)) for key, names in roles.items()}


def marked_label(row: dict[str, Any], roles: dict[str, str], broken: Broken, lengths: bool) -> str:
    """A point's label with CHOSEN_MARK and its roles where chosen, BROKEN_MARK and the constraint it breaks."""
    label = point_label(row, lengths=lengths)
    if role := roles.get(point_key(row)):
        label = f"{CHOSEN_MARK} {label} ({role})"
    if failed := broken(row):
        label += f" {BROKEN_MARK} breaks {'; '.join(failed)}"
    return label


def _chosen_names(chosen: Chosen, lengths: bool) -> str:
    return "; ".join(f"{', '.join(roles)}: {point_label(row, lengths=lengths)}" for row, roles in chosen)


# ---- roofline -----------------------------------------------------------------------------------------------

def _representatives(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One feasible row per device: the earliest model, then the smallest batch, 16-bit formats first."""
    model_rank: dict[str, int] = {}
    for row in rows:
        model_rank.setdefault(row["model"], len(model_rank))
    best: dict[str, tuple[tuple, dict[str, Any]]] = {}
    for index, row in enumerate(rows):
        if not is_feasible(row):
            continue
        key = (model_rank[row["model"]], row["batch"], _bits(row) != (16, 16, 16), index)
        if row["device"] not in best or key < best[row["device"]][0]:
            best[row["device"]] = (key, row)
    return [row for _, row in best.values()]


def roofline_panels(detail: DetailSource, rows: list[dict[str, Any]], chosen: Chosen = ()) -> list[RooflinePanel]:
    """A roofline panel per chosen design (its roles in the title), or per device with a feasible point when
    nothing is chosen: every matrix roof the sweep's formats run at, the off-chip bandwidth, the kernels. No panel
    when any point's kernels are neither stored nor priceable."""
    panels = []
    roles = roles_by_point(chosen)
    shown = list(dict.fromkeys(point_key(row) for row, _ in chosen))
    by_key = {point_key(row): row for row, _ in chosen}
    rows_shown = [by_key[key] for key in shown] if chosen else _representatives(rows)
    stored = [(row, detail.kernels(row)) for row in rows_shown]
    if any(data is None for _, data in stored):
        return []  # all panels or none: a figure missing some of its points would not say which
    for row, data in stored:
        phases = data["phases"]
        label = point_label(row, lengths=True)
        role = roles.get(point_key(row))
        panels.append(RooflinePanel(
            title=f"{label}\n({role})" if role else label,
            roofs=tuple(Roof(dtypes=tuple(dtypes), flops=flops, bits=bits) for dtypes, flops, bits in data["roofs"]),
            peak_vector_flops=data["vector_flops"], bandwidth_Bps=data["bandwidth_Bps"],
            **{name: np.concatenate([np.asarray(phases[p][name], dtype=float if name != "kernel_class" else object)
                                     for p in ("prefill", "decode")])
               for name in ("intensity", "achieved_flops", "kernel_class", "time_share")},
            phase=np.array(["prefill"] * len(phases["prefill"]["intensity"])
                           + ["decode"] * len(phases["decode"]["intensity"]), dtype=object),
        ))
    return panels


def roofline_section(rows: list[dict[str, Any]], detail: DetailSource, chosen: Chosen) -> ReportFigure:
    """The roofline figure, or why it is missing (no feasible point, kernels neither stored nor priceable)."""
    if not any(is_feasible(row) for row in rows):
        return figure("roofline", "Not drawn: no feasible design point.")
    panels = roofline_panels(detail, rows, chosen)
    if not panels:
        return figure("roofline", not_stored("kernels"))
    which = ("The chosen designs (the best on each objective and the balanced one, as in the Pareto table)"
             if chosen else "Per device, one representative feasible point (first model, smallest batch)")
    caption = (f"{which}: the kernels of the prefill and the first decode step against the device's roofs and "
               "off-chip bandwidth. Kernels that run beside the off-chip path (attention in HBM-PIM banks) can sit "
               "above the bandwidth roof.")
    return figure("roofline", caption, roofline_figure(panels))


# ---- latency and energy breakdowns --------------------------------------------------------------------------

def breakdown_rows(feasible: list[dict[str, Any]], chosen: Chosen) -> tuple[list[dict[str, Any]], str]:
    """At most MAX_BARS feasible rows, the chosen designs always among them, and what they are: every row when
    they fit; else the chosen designs and the points at the batch of the first one (the most tokens/s first
    when those are still too many)."""
    if len(feasible) <= MAX_BARS:
        return feasible, f"all {count_label(len(feasible), 'feasible design point')}"
    picked = list({point_key(row): row for row, _ in chosen}.values())
    anchor = picked[0] if picked else better_first(feasible, "tokens_per_s")[0]
    why = "the first chosen design" if picked else "the highest-throughput point"
    keys = {point_key(row) for row in picked}
    peers = [row for row in feasible if row["batch"] == anchor["batch"] and point_key(row) not in keys]
    room = MAX_BARS - len(picked)
    if len(peers) > room:
        peers = better_first(peers, "tokens_per_s")[:room]
        at = f"the {len(peers)} with the most tokens/s at batch {anchor['batch']} ({why}'s batch)"
    else:
        at = f"all {count_label(len(peers), 'point')} at batch {anchor['batch']} ({why}'s batch)"
    order = {point_key(row): i for i, row in enumerate(feasible)}
    shown = picked + sorted(peers, key=lambda r: order[point_key(r)])
    head = f"the {count_label(len(picked), 'chosen design')} ({CHOSEN_MARK}) and " if picked else ""
    return shown, f"{len(shown)} of {len(feasible)} feasible design points: {head}{at}"


def breakdown_section(shown: list[dict[str, Any]], what: str, labels: list[str]) -> ReportFigure:
    times = {c.replace("_", " "): [as_number(row.get(f"time_{c}_s")) for row in shown] for c in TIME_CLASSES}
    times = {c: values for c, values in times.items() if np.nansum(values) > 0}  # no empty legend entries
    return figure("breakdown", f"Shows {what}.", breakdown_figure(labels, times))


def energy_breakdown_section(shown: list[dict[str, Any]], what: str, labels: list[str],
                             detail: DetailSource) -> ReportFigure:
    """Energy per output token split into static, memory and compute energy, for the latency breakdown's points."""
    parts = [detail.energy_parts(row) for row in shown]
    if any(p is None for p in parts):
        return figure("energy_breakdown", not_stored("energy by part"))
    names = list(ENERGY_COLORS) + [n for p in parts for n in p if n not in ENERGY_COLORS]
    values = {name: [p.get(name, 0.0) for p in parts] for name in dict.fromkeys(names)}
    return figure("energy_breakdown", f"The points of the latency breakdown: {what}.",
                  energy_breakdown_figure(labels, values))


# ---- energy per token ---------------------------------------------------------------------------------------

def energy_panels(pool: list[dict[str, Any]], chosen: Chosen) -> tuple[list[EnergyPanel], str]:
    """Per model, per device and format, the lowest energy per token over the other knobs (batch, lengths,
    overrides, generic knobs), its batch as the bar's note; and what that covers."""
    measured = [row for row in pool if math.isfinite(as_number(row.get("energy_per_token_J")))]
    panels = []
    for model in dict.fromkeys(row["model"] for row in measured):
        rows = [row for row in measured if row["model"] == model]
        keys = [(device_label(row), format_label(row)) for row in rows]  # labelled once: every row is grouped by both
        devices = list(dict.fromkeys(device for device, _ in keys))
        first = {}  # each format's first row, in the order the rows show them
        for (_, fmt), row in zip(keys, rows, strict=True):
            first.setdefault(fmt, row)
        formats = sorted(first, key=lambda f: _format_rank(first[f]))
        best = {}
        for key, row in zip(keys, rows, strict=True):
            if key not in best or row["energy_per_token_J"] < best[key]["energy_per_token_J"]:
                best[key] = row
        energy = {f: [best[d, f]["energy_per_token_J"] if (d, f) in best else math.nan for d in devices]
                  for f in formats}
        notes = {f: [f"b{best[d, f]['batch']}" if (d, f) in best else "" for d in devices] for f in formats}
        panels.append(EnergyPanel(title=str(model), devices=devices, energy_J=energy, notes=notes))
    varied = ["batch"] + (["prompt and output lengths"] if lengths_vary(measured) else [])
    varied += ["overrides"] if any(overrides_label(row) for row in measured) else []
    varied += ["the knobs the sweep sets"] if any(knobs_label(row) for row in measured) else []
    caption = (f"Each bar is the lowest energy per output token of one device and format over {', '.join(varied)}; "
               "its batch is printed on the bar. One panel per model, one group per device, one bar per format.")
    if "overrides" in varied:
        caption += (" A bar may be a what-if of its device (the overridden values of each point are in results.csv), "
                    "not the device as shipped.")
    best_rows = [row for row, roles in chosen if any("energy" in role for role in roles)]
    if best_rows:
        caption += f" The best-energy design is {point_label(best_rows[0], lengths=lengths_vary(measured))}."
    return panels, caption


def _format_rank(row: dict[str, Any]) -> tuple:
    """16-bit, dense, eager first; then narrower formats."""
    return (tuple(-b for b in _bits(row)), (row.get("sparsity") or "dense") != "dense",
            ("eager", "graphs", "engine").index(row.get("execution") or "eager"))


def energy_section(meeting: list[dict[str, Any]], feasible: list[dict[str, Any]], chosen: Chosen) -> ReportFigure:
    """Energy per token by device and format, over the points meeting the constraints (all feasible points when
    none does)."""
    panels, caption = energy_panels(meeting or feasible, chosen)
    if not panels:
        return figure("energy", "Not drawn: no feasible point has an energy value.")
    if len(meeting) == len(feasible):
        which = "Feasible points."
    elif meeting:
        which = (f"The {count_label(len(meeting), 'point')} meeting the constraints ({len(feasible) - len(meeting)} "
                 "feasible points that break one left out).")
    else:
        which = "No point meets the constraints: every feasible point."
    return figure("energy", f"{which} {caption}", energy_figure(panels))


# ---- latency against batch ----------------------------------------------------------------------------------

def _line_keys(row: dict[str, Any], knob: str, lengths: bool) -> tuple[str, str]:
    """(color key, style key) of a row's line: its hardware (device and overrides) and its format with the generic
    knobs it sets (with the lengths when they vary, and the batch for lines against tensor-parallel devices)."""
    if knob == "tp":  # a line through several tp: its device, link and stages ('x2 (tp1 pp2)' read as one system)
        pp = as_number(row.get("pp"))
        stages = f"pp{int(pp)}" if math.isfinite(pp) and pp > 1 else ""
        device = " / ".join(p for p in (device_label(dict(row, tp=1, pp=1)), link_label(row), stages) if p)
    else:
        device = device_label(row)
    hardware = " / ".join(p for p in (device, overrides_label(row)) if p)
    fmt = " / ".join([format_label(row), *knobs_label(row, on=(knob,))]) + (
        f" / p{row.get('prompt')} o{row.get('output')}" if lengths else "")
    return hardware, (f"b{row.get('batch')} / {fmt}" if knob == "tp" else fmt)


BATCH_METRICS = ("ttft_s", "tpot_s")  # what a line against batch (or tp) plots, of every feasible point


def batch_panels(feasible: list[dict[str, Any]], chosen: Chosen, broken: Broken,
                 knob: str = "batch") -> tuple[list[BatchPanel], str, str]:
    """TTFT/TPOT lines against `knob` (batch, or tp), one panel per model; every line when a model has at most
    MAX_SERIES, else the lines holding a chosen design and those with the lowest TPOT. Returns the panels, a
    caption naming what each panel shows and a title suffix ('' when every line is drawn)."""
    lengths = lengths_vary(feasible)
    chosen_keys = set(roles_by_point(chosen))
    panels, parts, dropped = [], [], False
    for model in dict.fromkeys(row["model"] for row in feasible):
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for row in feasible:
            if row["model"] == model:
                groups.setdefault(_line_keys(row, knob, lengths), []).append(row)
        keys = list(groups)
        holding = [k for k in keys if any(point_key(r) in chosen_keys for r in groups[k])]
        if len(keys) > MAX_SERIES:
            rest = sorted((k for k in keys if k not in holding),
                          key=lambda k: min(as_number(r["tpot_s"]) for r in groups[k]))
            others = rest[:max(MAX_SERIES - len(holding), 0)]
            keep = set(holding) | set(others)
            keys = [k for k in keys if k in keep]
            which = (f"the {len(holding)} holding a chosen design and the {len(others)} others" if holding else
                     f"the {len(others)}")
            parts.append(f"{model}: {len(keys)} of {len(groups)} lines ({which} with the lowest TPOT; the rest are in "
                         f"results.csv)")
            dropped = True
        else:
            parts.append(f"{model}: all {count_label(len(keys), 'line')}")
        series = []
        for key in keys:
            members = sorted(groups[key], key=lambda r: r[knob])
            series.append(BatchSeries(
                label=" / ".join(key), color_key=key[0], style_key=key[1],
                batch=np.array([r[knob] for r in members], dtype=float),
                ttft_s=np.array([r["ttft_s"] for r in members]), tpot_s=np.array([r["tpot_s"] for r in members]),
                chosen=np.array([point_key(r) in chosen_keys for r in members]),
                broken=np.array([bool(broken(r)) for r in members])))
        panels.append(BatchPanel(title=str(model), series=series))
    hardware = "device and its what-if values" if any(overrides_label(row) for row in feasible) else "device"
    styled = "format" if knob == "batch" else "batch and format"
    caption = (f"Feasible points only; one panel per model, one line per {hardware} and {styled} (color: {hardware}, "
               f"line style and marker: {styled}). Drawn: {'; '.join(parts)}.")
    if chosen:
        caption += f" Stars mark the chosen designs ({_chosen_names(chosen, lengths)})."
    if any(broken(row) for row in feasible):
        caption += " Hollow markers break a constraint."
    return panels, caption, " (a subset of lines: see the caption)" if dropped else ""


def batch_section(feasible: list[dict[str, Any]], chosen: Chosen, broken: Broken, knob: str = "batch") -> ReportFigure:
    panels, caption, subset = batch_panels(feasible, chosen, broken, knob)
    name = "batch" if knob == "batch" else "scaling"
    x_label = "batch size" if knob == "batch" else "tensor-parallel devices"
    return figure(name, caption, batch_figure(panels, x_label), FIGURE_TITLES[name] + subset)


# ---- all static figures -------------------------------------------------------------------------------------

def static_figures(rows: list[dict[str, Any]], detail: DetailSource, chosen: Chosen, broken: Broken,
                   search: str | None = None) -> list[ReportFigure]:
    """Every static-batch figure, in order; figures that need feasible points say so when there are none."""
    from explore.report_decode import decode_section
    from explore.report_formats import formats_section
    from explore.report_whatif import whatif_section

    feasible = [row for row in rows if is_feasible(row)]
    if not feasible:
        missing = [figure(name, "Not drawn: no feasible design point.")
                   for name in ("breakdown", "energy_breakdown", "energy", "batch")]
        return [roofline_section(rows, detail, chosen)] + missing
    meeting = [row for row in feasible if not broken(row)]
    shown, what = breakdown_rows(feasible, chosen)
    roles = roles_by_point(chosen)
    labels = [marked_label(row, roles, broken, lengths_vary(shown)) for row in shown]
    figures = [
        roofline_section(rows, detail, chosen),
        breakdown_section(shown, what, labels),
        energy_breakdown_section(shown, what, labels, detail),
        energy_section(meeting, feasible, chosen),
        batch_section(feasible, chosen, broken),
    ]
    if len({row.get("tp") for row in feasible if row.get("tp") is not None}) > 1:
        figures.append(batch_section(feasible, chosen, broken, knob="tp"))
    return figures + formats_section(feasible, broken) + decode_section(feasible) + whatif_section(rows, detail, search)
