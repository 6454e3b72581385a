"""Design report of a sweep: a self-contained HTML page (figures embedded as PNG) and a Markdown summary."""

from __future__ import annotations

import base64
import datetime
import html
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from explore.design_point import KERNEL_CLASSES
from explore.plots import (
    BatchSeries,
    RooflinePanel,
    batch_figure,
    breakdown_figure,
    energy_figure,
    figure_png,
    roofline_figure,
)
from explore.rows import (
    as_number,
    count_label,
    device_label,
    format_label,
    format_number,
    is_feasible,
    lengths_vary,
    normalize_row,
    overrides_label,
    overrides_of,
    point_from_row,
    point_label,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from explore.design_point import DesignPoint
    from explore.evaluate import Evaluator
    from kernels.table import KernelTable

MAX_BARS = 30  # design points in the latency breakdown
MAX_SERIES = 16  # lines in the TTFT/TPOT figure
TOP_N = 10
MAX_INFEASIBLE = 20

FIGURE_TITLES = {
    "roofline": "Roofline of the workload's kernels", "breakdown": "Latency breakdown by kernel class",
    "energy": "Energy per output token by device", "batch": "TTFT and TPOT against batch size",
    "scaling": "TTFT and TPOT against tensor-parallel devices",
}
HOW_TO_READ = {
    "roofline": "Each point is a distinct kernel of the design point named above the panel (repeated layers "
                "drawn once). The solid line is the 16-bit tensor-core roof, the dashed line the fp32 vector roof; a "
                "point left of the knee is memory-bound, and its distance below the roof is time lost to launch "
                "overhead or to a slower rate. Kernels without FLOPs (embedding lookups, copies) are not shown.",
    "breakdown": "Each bar is the latency of one request (prefill plus all decode steps), split by kernel class; "
                 "the longest segment is what to speed up first.",
    "energy": "Lower is better. Bars compare devices (groups) and models (colors) at one batch size and format.",
    "batch": "Left: time to first token; right: time per output token after the first. A flat TPOT line means "
             "decode is memory-bound and batching is nearly free; a rising one means compute has become the limit.",
    "scaling": "Each line is one model, device, batch and format on 1, 2, 4, ... devices; a line that flattens "
               "has run into its all-reduces or per-kernel overheads, which more devices do not divide.",
}


@dataclass(frozen=True, kw_only=True)
class ReportFigure:
    """One figure of the report: `png` is None when it could not be drawn, and `caption` says why."""

    name: str
    title: str
    caption: str
    png: bytes | None


@dataclass(frozen=True, kw_only=True)
class ReportTable:
    """A table of the report: a title, a one-line note and string cells (already formatted)."""

    title: str
    note: str
    headers: list[str]
    cells: list[list[str]]


# ---- figure data --------------------------------------------------------------------------------------------

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


def _kernel_points(device: Any, table: KernelTable, phase: str) -> tuple[np.ndarray, ...]:
    """Intensity, achieved FLOP/s, class and phase of the distinct kernels of a table (zero-work ones dropped)."""
    time_s = device.cost_table(table).time_s
    keep = (table.flops > 0) & (table.bytes > 0) & (time_s > 0)
    intensity = table.flops[keep] / table.bytes[keep]
    achieved = table.flops[keep] / time_s[keep]
    # Every layer repeats the same kernels: plot each distinct (intensity, rate, class) once.
    distinct = dict.fromkeys(zip(np.round(intensity, 6).tolist(), np.round(np.log10(achieved), 6).tolist(),
                                 table.kernel_class[keep].tolist(), strict=True))
    points = np.array([(x, 10.0 ** y) for x, y, _ in distinct]).reshape(-1, 2)
    classes = np.array([c for _, _, c in distinct], dtype=object)
    return points[:, 0], points[:, 1], classes, np.full(len(classes), phase, dtype=object)


def roofline_panels(evaluator: Evaluator, rows: list[dict[str, Any]],
                    chosen: Sequence[tuple[dict[str, Any], list[str]]] = ()) -> list[RooflinePanel]:
    """A roofline panel per chosen design (its roles in the title), or per device with a feasible point when
    nothing is chosen: peak math and off-chip bandwidth, and the kernels achieved."""
    panels = []
    shown = list(chosen) or [(row, []) for row in _representatives(rows)]
    for row, roles in shown:
        point = point_from_row(row)
        device = evaluator.device(point.device, point.overrides, point.use_calibration)
        tables = evaluator.evaluate(point).tables
        parts = [_kernel_points(device, tables.prefill, "prefill"), _kernel_points(device, tables.decode, "decode")]
        intensity, achieved, classes, phases = (np.concatenate(column) for column in zip(*parts, strict=True))
        label = point_label(row, lengths=True)
        panels.append(RooflinePanel(
            title=f"{label}\n({', '.join(roles)})" if roles else label,
            peak_tensor_flops=max(device.peak_flops("bf16"), device.peak_flops("fp16")),
            peak_vector_flops=device.peak_flops("fp32"), bandwidth_Bps=device.bandwidth_Bps,
            intensity=intensity, achieved_flops=achieved, kernel_class=classes, phase=phases,
        ))
    return panels


def breakdown_rows(feasible: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """At most MAX_BARS feasible rows (the smallest and largest batch when there are more), and what they are."""
    if len(feasible) <= MAX_BARS:
        return feasible, f"all {count_label(len(feasible), 'feasible design point')}"
    batches = sorted({row["batch"] for row in feasible})
    ends = [row for row in feasible if row["batch"] in (batches[0], batches[-1])]
    shown = ends[:MAX_BARS]
    what = f"{len(shown)} of {len(feasible)} feasible design points (batch {batches[0]} and {batches[-1]}"
    return shown, what + (f", the first {MAX_BARS})" if len(ends) > MAX_BARS else ")")


def _bits(row: dict[str, Any]) -> tuple[int, int, int]:
    return row["weight_bits"], row["act_bits"], row["kv_bits"]


def _format_key(row: dict[str, Any]) -> tuple:
    """Everything format_label shows, ordered so that 16-bit, dense, eager sorts first."""
    return tuple(-b for b in _bits(row)), (row.get("sparsity") or "dense") != "dense", row.get("execution") == "graphs"


def energy_data(feasible: list[dict[str, Any]]) -> tuple[list[str], dict[str, list[float]], str]:
    """Devices, energy per token per model (NaN where missing) and a caption, at the most common batch and format."""
    measured = [row for row in feasible if math.isfinite(row.get("energy_per_token_J", math.nan))]
    if not measured:
        return [], {}, "No feasible point has an energy value."
    counts = Counter((row["batch"], _format_key(row)) for row in measured)
    (batch, fmt), _ = min(counts.items(), key=lambda item: (-item[1], item[0]))
    chosen = [row for row in measured if row["batch"] == batch and _format_key(row) == fmt]
    devices = list(dict.fromkeys(device_label(row) for row in chosen))
    models = list(dict.fromkeys(row["model"] for row in chosen))
    energy = {model: [min((r["energy_per_token_J"] for r in chosen
                           if r["model"] == model and device_label(r) == device), default=math.nan)
                      for device in devices] for model in models}
    caption = (f"Batch {batch}, format {format_label(chosen[0])} (the most common batch and format among feasible "
               "points).")
    if len({(r["model"], r["device"]) for r in chosen}) < len(chosen):
        caption += " Where a device has several points (overrides, lengths), the lowest energy is shown."
    return devices, energy, caption


def batch_series(feasible: list[dict[str, Any]], knob: str = "batch") -> tuple[list[BatchSeries], str]:
    """TTFT/TPOT lines against `knob` (batch, or tp), one per combination of the other knobs, at most MAX_SERIES,
    and a caption."""
    lengths = lengths_vary(feasible)
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in feasible:
        other = dict(row, tp=1) if knob == "tp" else row  # a line per system size: its label without the size
        label = point_label(other, lengths=lengths, batch=knob != "batch")
        groups.setdefault(label, []).append(row)
    series = []
    for label, members in list(groups.items())[:MAX_SERIES]:
        members = sorted(members, key=lambda r: r[knob])
        series.append(BatchSeries(label=label, batch=np.array([r[knob] for r in members], dtype=float),
                                  ttft_s=np.array([r["ttft_s"] for r in members]),
                                  tpot_s=np.array([r["tpot_s"] for r in members])))
    shown = f"the first {MAX_SERIES} of {len(groups)}" if len(groups) > MAX_SERIES else f"all {len(groups)}"
    what = "model, device and format" if knob == "batch" else "model, device, batch and format"
    return series, f"Feasible points only; one line per combination of {what} ({shown} shown)."


# ---- figures ------------------------------------------------------------------------------------------------

def _figure(name: str, caption: str, fig: Figure | None = None) -> ReportFigure:
    """A report figure with its title; a figure without a plot keeps only its caption (why it is missing)."""
    if fig is not None:
        caption += " " + HOW_TO_READ[name]
    return ReportFigure(name=name, title=FIGURE_TITLES[name], caption=caption,
                        png=None if fig is None else figure_png(fig))


def _roofline_figure(rows: list[dict[str, Any]], evaluator: Evaluator | None,
                     chosen: Sequence[tuple[dict[str, Any], list[str]]] = ()) -> ReportFigure:
    """The roofline figure, or why it is missing (no evaluator, no feasible point)."""
    if evaluator is None:
        return _figure("roofline", "Not drawn: the report was written without an evaluator to re-price kernels.")
    panels = roofline_panels(evaluator, rows, chosen)
    if not panels:
        return _figure("roofline", "Not drawn: no feasible design point.")
    which = ("The chosen designs (the best on each objective and the balanced one, as in the Pareto table)"
             if chosen else "Per device, one representative feasible point (first model, smallest batch)")
    caption = (f"{which}: the kernels of the prefill and the first decode step, against the peak 16-bit math rate "
               "and off-chip bandwidth. Kernels that run beside the off-chip path (attention in HBM-PIM banks) "
               "can sit above the bandwidth roof.")
    return _figure("roofline", caption, roofline_figure(panels))


def report_figures(rows: list[dict[str, Any]], evaluator: Evaluator | None,
                   chosen: Sequence[tuple[dict[str, Any], list[str]]] = ()) -> list[ReportFigure]:
    """Every figure of the report, in order; figures that need feasible points say so when there are none."""
    feasible = [row for row in rows if is_feasible(row)]
    if not feasible:
        missing = [_figure(name, "Not drawn: no feasible design point.") for name in ("breakdown", "energy", "batch")]
        return [_roofline_figure(rows, evaluator, chosen)] + missing
    shown, what = breakdown_rows(feasible)
    labels = [point_label(row, lengths=lengths_vary(shown)) for row in shown]
    times = {c: [as_number(row.get(f"time_{c}_s")) for row in shown] for c in (*KERNEL_CLASSES, "communication")}
    times = {c: values for c, values in times.items() if np.nansum(values) > 0}  # no empty legend entries
    devices, energy, energy_caption = energy_data(feasible)
    series, batch_caption = batch_series(feasible)
    sizes = {row.get("tp") for row in feasible if row.get("tp") is not None}
    scaling = []
    if len(sizes) > 1:  # a sweep over tensor-parallel systems: how latency scales with the devices
        tp_series, tp_caption = batch_series(feasible, knob="tp")
        scaling = [_figure("scaling", tp_caption, batch_figure(tp_series, "tensor-parallel devices"))]
    return [
        _roofline_figure(rows, evaluator, chosen),
        _figure("breakdown", f"Shows {what}.", breakdown_figure(labels, times)),
        _figure("energy", energy_caption, energy_figure(devices, energy) if devices else None),
        _figure("batch", batch_caption, batch_figure(series)),
        *scaling,
    ]


# ---- tables -------------------------------------------------------------------------------------------------

def _point_cells(row: dict[str, Any], overrides: bool) -> list[str]:
    """Table cells naming a design point."""
    cells = [str(row.get("model", "")), device_label(row), str(row.get("batch", "")),
             f"{row.get('prompt')}/{row.get('output')}", format_label(row)]
    return cells + ([overrides_label(row)] if overrides else [])


POINT_HEADERS = ["model", "device", "batch", "prompt/output", "format"]
DESIGN_HEADERS = ["tokens/s", "TTFT (ms)", "TPOT (ms)", "energy/token (J)", "avg power (W)", "peak memory (GB)",
                  "tokens/USD"]


def _design_cells(row: dict[str, Any]) -> list[str]:
    """Table cells of a design point's metrics, in DESIGN_HEADERS order."""
    scaled = (("tokens_per_s", 1.0), ("ttft_s", 1e3), ("tpot_s", 1e3), ("energy_per_token_J", 1.0),
              ("avg_power_W", 1.0), ("peak_memory_B", 1e-9), ("tokens_per_usd", 1.0))
    return [format_number(row.get(name), scale) for name, scale in scaled]


def _design_table(title: str, what: str, rows: list[dict[str, Any]], overrides: bool) -> ReportTable:
    """A table of design points with their metrics."""
    headers = POINT_HEADERS + (["overrides"] if overrides else []) + DESIGN_HEADERS
    return ReportTable(title=title, note=f"The {count_label(len(rows), 'feasible point')} with {what}.",
                       headers=headers, cells=[_point_cells(row, overrides) + _design_cells(row) for row in rows])


def report_tables(rows: list[dict[str, Any]]) -> list[ReportTable]:
    """Top designs by throughput and by energy, and the infeasible points with their reasons."""
    overrides = any(overrides_of(row) for row in rows)
    feasible = [row for row in rows if is_feasible(row)]
    fastest = sorted(feasible, key=lambda r: -r["tokens_per_s"])[:TOP_N]
    frugal = sorted((r for r in feasible if math.isfinite(r.get("energy_per_token_J", math.nan))),
                    key=lambda r: r["energy_per_token_J"])[:TOP_N]
    infeasible = [row for row in rows if not is_feasible(row)]
    shown = infeasible[:MAX_INFEASIBLE]
    more = f" Showing the first {len(shown)} of {len(infeasible)}." if len(infeasible) > len(shown) else ""
    return [
        _design_table("Highest throughput", "the most tokens/s", fastest, overrides),
        _design_table("Lowest energy per token", "the least energy per output token", frugal, overrides),
        ReportTable(title="Infeasible design points", note=f"{count_label(len(infeasible), 'point')} cannot run.{more}",
                    headers=POINT_HEADERS + (["overrides"] if overrides else []) + ["peak memory (GB)", "reason"],
                    cells=[_point_cells(r, overrides) + [format_number(r.get("peak_memory_B"), 1e-9),
                           r.get("infeasible_reason") or "no metrics (NaN)"] for r in shown]),
    ]


def _summary(rows: list[dict[str, Any]]) -> list[str]:
    """Header lines: counts, models, devices, date."""
    feasible = sum(is_feasible(row) for row in rows)
    models = ", ".join(dict.fromkeys(str(row.get("model")) for row in rows))
    devices = ", ".join(dict.fromkeys(str(row.get("device")) for row in rows))
    return [f"{count_label(len(rows), 'design point')}, {feasible} feasible, {len(rows) - feasible} infeasible.",
            f"Models: {models or 'none'}.", f"Devices: {devices or 'none'}.",
            f"Written {datetime.date.today().isoformat()}."]


# ---- rendering ----------------------------------------------------------------------------------------------

STYLE = ("body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}"
         "table{border-collapse:collapse;font-size:0.82em;margin-bottom:1em}"
         "th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}th{background:#f3f3f3}"
         "td:nth-child(-n+5){white-space:nowrap}.scroll{overflow-x:auto}"
         "img{max-width:100%;height:auto;border:1px solid #eee}.note{color:#555}")


def _html_table(table: ReportTable) -> str:
    """A table section in HTML, every cell escaped."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in table.cells)
    grid = f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>" if table.cells else ""
    return f"<h2>{html.escape(table.title)}</h2><p class='note'>{html.escape(table.note)}</p>{grid}"


def _html_figure(figure: ReportFigure) -> str:
    """A figure section in HTML, the PNG inline as a data URI."""
    image = ""
    if figure.png is not None:
        data = base64.b64encode(figure.png).decode("ascii")
        image = f"<img src='data:image/png;base64,{data}' alt='{html.escape(figure.title, quote=True)}'>"
    return f"<h2>{html.escape(figure.title)}</h2>{image}<p class='note'>{html.escape(figure.caption)}</p>"


def render_html(title: str, summary: list[str], figures: list[ReportFigure], tables: list[ReportTable],
                *, lead: int = 2) -> str:
    """The whole report as one HTML page with no external resources; the first `lead` tables precede the figures."""
    header = "".join(f"<p>{html.escape(line)}</p>" for line in summary)
    body = "".join(_html_table(t) for t in tables[:lead]) + "".join(_html_figure(f) for f in figures)
    body += "".join(_html_table(t) for t in tables[lead:])
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{header}{body}</body></html>\n")


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(table: ReportTable) -> str:
    """A table section in Markdown."""
    lines = [f"## {table.title}", "", table.note, ""]
    if table.cells:
        lines += ["| " + " | ".join(_md_cell(h) for h in table.headers) + " |",
                  "|" + "---|" * len(table.headers)]
        lines += ["| " + " | ".join(_md_cell(c) for c in cells) + " |" for cells in table.cells]
        lines.append("")
    return "\n".join(lines)


def _md_figure(figure: ReportFigure) -> str:
    """A figure section in Markdown, the PNG referenced from figures/."""
    image = f"![{figure.title}](figures/{figure.name}.png)\n\n" if figure.png is not None else ""
    return f"## {figure.title}\n\n{image}{figure.caption}\n"


def render_markdown(title: str, summary: list[str], figures: list[ReportFigure], tables: list[ReportTable],
                    *, lead: int = 2) -> str:
    """The report as Markdown; figures are referenced as figures/<name>.png; `lead` tables precede the figures."""
    parts = [f"# {title}", "", " ".join(summary), ""]
    parts += [_md_table(t) for t in tables[:lead]] + [_md_figure(f) for f in figures]
    parts += [_md_table(t) for t in tables[lead:]]
    return "\n".join(parts)


def write_report(out_dir: Path, rows: list[dict], *, title: str, evaluator: Evaluator | None = None,
                 objectives: dict | None = None, constraints: list[str] | None = None,
                 slo: Mapping[str, Any] | None = None,
                 points: Mapping[str, DesignPoint] | None = None) -> tuple[Path, Path]:
    """Write out_dir/report.html (self-contained) and out_dir/report.md (+ figures/*.png); return both paths.

    `objectives` ({"minimize": [...], "maximize": [...]}) and `constraints` (["ttft_s <= 0.5", ...]) add the
    Pareto fronts, the Pareto-optimal table and the parameter sensitivity; without objectives they are left out.
    Serving rows (a `scheduler` set) get figures against the arrival rate instead of the static-batch ones;
    `slo` ({"ttft_s": 2.0, "tpot_s": 0.1, "attainment": 0.9}, the sweep's serving SLO) draws its limits, and
    `points` (point_id -> DesignPoint of the sweep) lets the report re-run chosen serving points for their
    per-request latency distributions and KV-cache timelines.
    """
    from explore.report_pareto import OBJECTIVE_FIGURES, chosen_designs, objective_sections
    from explore.report_serving import FIGURE_TITLES as SERVING_TITLES
    from explore.report_serving import report_sections

    out_dir = Path(out_dir)
    typed = [normalize_row(row) for row in rows]
    extra_figures, extra_tables = objective_sections(typed, objectives, constraints)
    chosen = chosen_designs(typed, objectives, constraints)
    kind_figures, lead_tables, tail_tables, kind_summary = report_sections(typed, evaluator, chosen, points, slo,
                                                                           constraints)
    figures = extra_figures + kind_figures
    tables = extra_tables + lead_tables + tail_tables
    summary = _summary(typed) + kind_summary
    summary += [f"Constraints: {', '.join(constraints)}."] if extra_tables and constraints else []
    figure_dir = out_dir / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    for stale in (path for pattern in OBJECTIVE_FIGURES for path in figure_dir.glob(pattern)):
        stale.unlink()  # objective figures of an earlier report (other objectives); this one writes its own below
    for stale in (figure_dir / f"{name}.png" for name in [*FIGURE_TITLES, *SERVING_TITLES]):
        stale.unlink(missing_ok=True)  # static or serving figures of an earlier report; this one writes its own
    for figure in figures:
        if figure.png is not None:
            (figure_dir / f"{figure.name}.png").write_bytes(figure.png)
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    lead = len(extra_tables) + len(lead_tables)  # the top-design tables precede the figures
    html_path.write_text(render_html(title, summary, figures, tables, lead=lead), encoding="utf-8")
    md_path.write_text(render_markdown(title, summary, figures, tables, lead=lead), encoding="utf-8")
    return html_path, md_path
