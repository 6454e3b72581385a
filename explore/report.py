"""Design report of a sweep: a self-contained HTML page (figures embedded as PNG) and a Markdown summary."""

from __future__ import annotations

import base64
import datetime
import html
import logging
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from explore.metrics import TIME_CLASSES, better_first, metric
from explore.out_paths import refusing_unwritable
from explore.rerun import FIGURES, unstamp_report
from explore.rows import (
    as_number,
    constraint_label,
    count_label,
    device_label,
    format_label,
    format_number,
    is_feasible,
    knobs_label,
    metric_axis_label,
    metric_column,
    metric_value_label,
    normalize_row,
    overrides_label,
    overrides_of,
)
from explore.sweep_notes import device_links, link_models_words

if TYPE_CHECKING:
    from explore.design_point import DesignPoint
    from explore.evaluate import Evaluator

log = logging.getLogger(__name__)

MAX_SERIES = 16  # lines in a panel of a figure against batch (or rate); more: the chosen ones and a named subset
TOP_N = 10
MAX_INFEASIBLE = 20
MAX_BROKEN = 20  # rows of the table of points that break a constraint
MAX_PAIRS = 6  # Pareto figures (pairs of objectives)
MAX_SENSITIVITY = 3  # sensitivity figures (objectives)
MAX_DETAIL = 6  # serving designs re-run for the per-request figures


def figures_of_kind(serving: bool) -> tuple[str, ...]:
    """Names of the figures a static or a serving report may draw beside its objectives': its module's FIGURE_TITLES,
    a static report's decode-time figure (explore/report_decode.py), the what-if figure (explore/report_whatif.py)."""
    from explore.report_serving import FIGURE_TITLES as SERVING_TITLES
    from explore.report_static import FIGURE_TITLES

    return (*SERVING_TITLES, "whatif") if serving else (*FIGURE_TITLES, "decode_time", "whatif")


# Figures a report draws only where its sweep calls for them, each giving way to a caption or to nothing elsewhere:
# against tensor-parallel devices (explore/report_static.py static_figures: tp takes several values), against weight
# bits (report_formats.py: several weight widths), the decode time (report_decode.py: a KV budget or a draft), the
# what-ifs (report_whatif.py: overrides), the slowdowns (report_serving.py rate_figures: a slowdown SLO) and the
# capacity (capacity_section: a capacity search).
CALLED_FOR = ("scaling", "formats", "decode_time", "whatif", "serving_slowdown", "serving_capacity")


def figures_drawn(objectives: int, serving: bool, *, varies: bool, called: Collection[str]) -> int:
    """The figures a report draws where its points are feasible, for a sweep of `objectives` objectives: a ranking (one
    objective) or a Pareto figure per pair, a sensitivity figure per objective where some knob `varies`
    (report_pareto.py sensitivity_figures), and those of its kind (static or serving) but the CALLED_FOR ones not in
    `called`."""
    pairs = 1 if objectives == 1 else min(math.comb(objectives, 2), MAX_PAIRS)
    own = pairs + (min(objectives, MAX_SENSITIVITY) if varies else 0) if objectives else 0
    return own + sum(name not in CALLED_FOR or name in called for name in figures_of_kind(serving))


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


# ---- constraints and tables ---------------------------------------------------------------------------------

def constraint_judge(constraints: Sequence[str] | None) -> Callable[[dict[str, Any]], list[str]]:
    """A function from a row to the constraints it breaks, as the sweep writes them ('ttft_s <= 2'; none for an
    infeasible row: it cannot run at all)."""
    from explore.sweep import Constraint

    parsed = Constraint.parse_all(constraints)

    def broken(row: dict[str, Any]) -> list[str]:
        if not parsed or not is_feasible(row):
            return []
        return [f"{c.metric} {c.op} {c.bound:g}" for c in parsed if not c.holds(row)]

    return broken


def broken_cell(row: dict[str, Any], broken: Callable[[dict[str, Any]], list[str]]) -> str:
    """The constraints a row breaks with its value of each: 'ttft_s <= 2 (TTFT is 2,645 ms)'."""
    from explore.sweep import Constraint

    return "; ".join(f"{text} ({_unit_words(c.metric)} is {metric_value_label(c.metric, row.get(c.metric))}"
                     f"{_why_missing(row, c.metric)})" for text in broken(row) for c in [Constraint.parse(text)])


def _why_missing(row: dict[str, Any], name: str) -> str:
    """': <why>' where a metric has no value and its registry entry names the column that says why."""
    entry = metric(name)
    if entry is None or not entry.reason or math.isfinite(as_number(row.get(name))):
        return ""
    return f": {row.get(entry.reason) or 'no reason stored'}"


def _unit_words(metric: str) -> str:
    """'TTFT' for 'ttft_s': the metric's name without its unit."""
    return metric_axis_label(metric).split(" (")[0]


def _point_cells(row: dict[str, Any], knobs: bool, overrides: bool) -> list[str]:
    """Table cells naming a design point: with `knobs`, the generic knobs it sets (explore/rows.py knobs_label)."""
    cells = [str(row.get("model", "")), device_label(row), str(row.get("batch", "")),
             f"{row.get('prompt')}/{row.get('output')}", format_label(row)]
    return cells + ([", ".join(knobs_label(row))] if knobs else []) + ([overrides_label(row)] if overrides else [])


def _point_headers(knobs: bool, overrides: bool) -> list[str]:
    return POINT_HEADERS + (["knobs"] if knobs else []) + (["overrides"] if overrides else [])


POINT_HEADERS = ["model", "device", "batch", "prompt/output", "format"]
# Each column headed by its metric's registry label (explore/metrics.py), in the unit figures show it in.
DESIGN_METRICS = tuple(metric_column(name) for name in ("tokens_per_s", "ttft_s", "tpot_s", "energy_per_token_J",
                                                        "avg_power_W", "peak_memory_B", "tokens_per_usd"))
DESIGN_HEADERS = [header for header, _, _ in DESIGN_METRICS]
PEAK_MEMORY = metric_column("peak_memory_B")  # the infeasible points' one metric


def _design_cells(row: dict[str, Any]) -> list[str]:
    """Table cells of a design point's metrics, in DESIGN_HEADERS order."""
    return [format_number(row.get(name), scale) for _, name, scale in DESIGN_METRICS]


def best_note(shown: Sequence[dict[str, Any]], what: str, feasible: Sequence[dict[str, Any]],
              meeting: Sequence[dict[str, Any]]) -> str:
    """The opening of a best-design table's note: 'The N feasible points <what>.', or why it lists none (no point is
    feasible, none meets the constraints, or none has the metric it ranks by)."""
    if shown:
        return f"The {count_label(len(shown), 'feasible point')} {what.strip()}."
    if not feasible:
        return "None: no design point is feasible."
    return "None: no feasible point meets the constraints." if not meeting else \
        "None: no feasible point meeting the constraints has this metric."


def _design_table(title: str, what: str, rows: list[dict[str, Any]], knobs: bool, overrides: bool,
                  left_out: str, feasible: list[dict[str, Any]], meeting: list[dict[str, Any]]) -> ReportTable:
    """A table of design points with their metrics."""
    note = best_note(rows, what, feasible, meeting)
    return ReportTable(title=title, note=f"{note}{left_out}",
                       headers=_point_headers(knobs, overrides) + DESIGN_HEADERS,
                       cells=[_point_cells(row, knobs, overrides) + _design_cells(row) for row in rows])


def report_tables(rows: list[dict[str, Any]], constraints: Sequence[str] | None = None,
                  ) -> tuple[list[ReportTable], list[ReportTable]]:
    """The tables before the figures (top designs by throughput and by energy, among the points meeting the
    constraints) and after them (the points that break a constraint, marked with the ones they break; the
    infeasible points with their reasons)."""
    overrides = any(overrides_of(row) for row in rows)
    knobs = any(knobs_label(row) for row in rows)
    broken = constraint_judge(constraints)
    feasible = [row for row in rows if is_feasible(row)]
    meeting = [row for row in feasible if not broken(row)]
    violating = [row for row in feasible if broken(row)]
    meets = " meeting the constraints" if constraints else ""
    left_out = (f" {count_label(len(violating), 'feasible point')} that break a constraint are left out (listed in "
                "'Points that break a constraint').") if violating else ""
    fastest = better_first(meeting, "tokens_per_s")[:TOP_N]
    frugal = better_first((r for r in meeting if math.isfinite(r.get("energy_per_token_J", math.nan))),
                          "energy_per_token_J")[:TOP_N]
    lead = [_design_table("Highest throughput", f"{meets} with the most tokens/s", fastest, knobs, overrides, left_out,
                          feasible, meeting),
            _design_table("Lowest energy per token", f"{meets} with the least energy per output token", frugal,
                          knobs, overrides, left_out, feasible, meeting)]
    tail = []
    if violating:
        shown = better_first(violating, "tokens_per_s")[:MAX_BROKEN]
        more = f" Showing the {len(shown)} with the most tokens/s." if len(violating) > len(shown) else ""
        tail.append(ReportTable(
            title="Points that break a constraint",
            note=f"{count_label(len(violating), 'feasible point')} run but break a constraint: no best-design table, "
                 f"Pareto front or chosen design includes them.{more}",
            headers=_point_headers(knobs, overrides) + DESIGN_HEADERS + ["breaks"],
            cells=[_point_cells(r, knobs, overrides) + _design_cells(r) + [broken_cell(r, broken)] for r in shown]))
    infeasible = [row for row in rows if not is_feasible(row)]
    shown = infeasible[:MAX_INFEASIBLE]
    more = f" Showing the first {len(shown)} of {len(infeasible)}." if len(infeasible) > len(shown) else ""
    tail.append(ReportTable(
        title="Infeasible design points", note=infeasible_note(len(infeasible), more),
        headers=_point_headers(knobs, overrides) + [PEAK_MEMORY[0], "reason"],
        cells=[_point_cells(r, knobs, overrides) + [format_number(r.get("peak_memory_B"), PEAK_MEMORY[2]),
                                             r.get("infeasible_reason") or "no metrics (NaN)"] for r in shown]))
    return lead, tail


def infeasible_note(count: int, more: str = "") -> str:
    """The note of the infeasible points' table: how many cannot run, or that every point runs."""
    return f"{count_label(count, 'point')} cannot run.{more}" if count else "Every point runs."


def _summary(rows: list[dict[str, Any]], constraints: Sequence[str] | None) -> list[str]:
    """Header lines: counts, models, devices, constraints, date."""
    feasible = sum(is_feasible(row) for row in rows)
    broken = constraint_judge(constraints)
    violating = sum(bool(broken(row)) for row in rows)
    meets = f"; {feasible - violating} meet the constraints" if constraints else ""
    models = ", ".join(dict.fromkeys(str(row.get("model")) for row in rows))
    devices = ", ".join(dict.fromkeys(str(row.get("device")) for row in rows))
    counts = f"{count_label(len(rows), 'design point')}, {feasible} feasible, {len(rows) - feasible} infeasible"
    lines = [f"{counts}{meets}.",
             f"Models: {models or 'none'}.", f"Devices: {devices or 'none'}."]
    if constraints:
        from explore.sweep import Constraint

        lines.append("Constraints: " + ", ".join(constraint_label(c.metric, c.op, c.bound)
                                                 for c in Constraint.parse_all(constraints)) + ".")
    if waiting := host_wait_note(rows):
        lines.append(waiting)
    if links := link_models_note(rows):
        lines.append(f"Note: {links}.")
    return lines + ["Times in ms, energy in J per output token, power in W."]


def link_models_note(rows: list[dict[str, Any]]) -> str:
    """Where the rows' systems of devices run over links priced by different models ('' where not), as a sweep's
    start says it (explore/sweep_notes.py mixed_links_note), from the rows alone: the report may be redrawn without
    its sweep. Rows on one device join nothing; rows on datasheet rooflines (calibrated none) price every link so."""
    pairs = {(str(row.get("device")), str(row.get("link") or "default")) for row in rows
             if as_number(row.get("tp")) * as_number(row.get("pp")) >= 2 and row.get("calibrated") != "none"}
    return link_models_words({link for _, link in device_links(pairs)})


def host_wait_note(rows: list[dict[str, Any]]) -> str:
    """How many feasible points wait on PyTorch eager's dispatch, and what that means ('' where none does)."""
    feasible = [row for row in rows if is_feasible(row)]
    waiting = sum(waits_on_dispatch(row) for row in feasible)
    return (f"{waiting} of {len(feasible)} feasible points wait on the host (PyTorch eager's dispatch, "
            "`time_host_wait_s`; the 'host wait' of the latency breakdown): their decode steps take the host's time, "
            "so faster devices and narrower formats do not shorten their TPOT; `execution: graphs` or `engine` "
            "removes the wait.") if waiting else ""


def over_tdp_note(rows: list[dict[str, Any]]) -> str:
    """How many feasible points draw more on average than their hardware is rated for ('' where none does)."""
    feasible = [row for row in rows if is_feasible(row)]
    over = sum(as_number(row.get("avg_power_W")) > as_number(row.get("tdp_W")) for row in feasible)
    return (f"{over} of {len(feasible)} feasible points draw more on average than their hardware is rated for "
            "(avg_power_W above tdp_W): their presets' energy per action adds up to more than the chip can draw, so "
            "those figures are high or the chip would throttle, which is not modeled.") if over else ""


def waits_on_dispatch(row: dict[str, Any]) -> bool:
    """Whether an eager point's device waits on the host's dispatch (a point that offloads waits on the host link
    instead, which no launch mode removes). A pass waits where the host dispatches its kernels slower than the device
    runs them; a decode step launches as many kernels as the prefill for less work, so where any pass waits, every
    decode step does, and the TPOT is the host's time."""
    if row.get("execution") != "eager" or as_number(row.get("offloaded_B")) > 0:
        return False
    times = [as_number(row.get(f"time_{c}_s")) for c in TIME_CLASSES]
    wait, total = as_number(row.get("time_host_wait_s")), math.fsum(t for t in times if math.isfinite(t))
    return math.isfinite(wait) and total > 0 and wait > WAIT_SHARE * total


WAIT_SHARE = 1e-6  # a wait below this share of a point's time is rounding, not a host-bound pass


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


# Markdown passes raw HTML through: a '<' that opens a tag (a letter, '/', '!' or '?' after it: CommonMark's
# raw HTML and autolinks) is escaped, so a name like '<script>' or '<img onerror=...>' shows as text, as in
# report.html. '<=' in a constraint stays readable.
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


def _md_text(text: str) -> str:
    """Text from names, descriptions and notes, safe in Markdown: no HTML tag opens in it."""
    return _TAG_START.sub("&lt;", str(text))


def _md_line(text: str) -> str:
    """_md_text on one line (a heading, a table cell)."""
    return _md_text(text).replace("\r", " ").replace("\n", " ")


def _md_cell(text: str) -> str:
    return _md_line(text).replace("|", "\\|")


def _md_table(table: ReportTable) -> str:
    """A table section in Markdown."""
    lines = [f"## {_md_line(table.title)}", "", _md_text(table.note), ""]
    if table.cells:
        lines += ["| " + " | ".join(_md_cell(h) for h in table.headers) + " |",
                  "|" + "---|" * len(table.headers)]
        lines += ["| " + " | ".join(_md_cell(c) for c in cells) + " |" for cells in table.cells]
        lines.append("")
    return "\n".join(lines)


def _md_figure(figure: ReportFigure) -> str:
    """A figure section in Markdown, the PNG referenced from figures/."""
    alt = _md_line(figure.title).replace("[", "\\[").replace("]", "\\]")
    image = f"![{alt}](figures/{figure.name}.png)\n\n" if figure.png is not None else ""
    return f"## {_md_line(figure.title)}\n\n{image}{_md_text(figure.caption)}\n"


def render_markdown(title: str, summary: list[str], figures: list[ReportFigure], tables: list[ReportTable],
                    *, lead: int = 2) -> str:
    """The report as Markdown; figures are referenced as figures/<name>.png; `lead` tables precede the figures."""
    parts = [f"# {_md_line(title)}", "", _md_text(" ".join(summary)), ""]
    parts += [_md_table(t) for t in tables[:lead]] + [_md_figure(f) for f in figures]
    parts += [_md_table(t) for t in tables[lead:]]
    return "\n".join(parts)


def write_report(out_dir: Path, rows: list[dict], *, title: str, evaluator: Evaluator | None = None,
                 objectives: dict | None = None, constraints: list[str] | None = None,
                 slo: Mapping[str, Any] | None = None, search: str | None = None,
                 points: Mapping[str, DesignPoint] | None = None,
                 rate_profile: Sequence[Sequence[float]] | None = None) -> tuple[Path, Path]:
    """Write out_dir/report.html (self-contained) and out_dir/report.md (+ figures/*.png); return both paths.

    `objectives` ({"minimize": [...], "maximize": [...]}) and `constraints` (["ttft_s <= 0.5", ...]) add the
    Pareto fronts, the Pareto-optimal table and the parameter sensitivity; without objectives they are left out.
    Constraints also keep the points that break them out of every best-design table, and mark them where they
    are shown. `search` (the sweep's strategy: grid, random, nsga2, tpe) says how the points were chosen: the
    sensitivity figures of a search say that its points are not every combination of the knobs. Serving rows (a
    `scheduler` set) get figures against the arrival rate instead of the static-batch ones; `slo` ({"ttft_s": 2.0,
    "tpot_s": 0.1, "attainment": 0.9}, the sweep's serving SLO) draws its limits, `rate_profile` (the sweep's
    [[duration_s, multiplier], ...] phases) is named beside its arrivals, and
    `points` (point_id -> DesignPoint of the sweep) lets the report re-run chosen serving points for their
    per-request latency distributions and KV-cache timelines. What the evaluator prices for the figures (kernels,
    energy by part, the shipped preset of what-if points, serving runs) is stored in out_dir/report_detail.json.gz;
    a report without an evaluator (`explore report DIR`) draws them from there, and logs one line naming the
    figures it cannot draw.
    """
    from explore.report_detail import DETAIL_FILE, HOW_TO_STORE, DetailSource
    from explore.report_pareto import OBJECTIVE_FIGURES, chosen_designs, objective_sections
    from explore.report_serving import report_sections

    out_dir = Path(out_dir)
    typed = [normalize_row(row) for row in rows]
    detail = DetailSource(evaluator, typed, out_dir)
    extra_figures, extra_tables = objective_sections(typed, objectives, constraints, search)
    chosen = chosen_designs(typed, objectives, constraints)
    kind_figures, lead_tables, tail_tables, kind_summary = report_sections(typed, evaluator, chosen, points, slo,
                                                                           constraints, detail, search, rate_profile)
    figures = extra_figures + kind_figures
    tables = extra_tables + lead_tables + tail_tables
    summary = _summary(typed, constraints) + kind_summary + [f"Written {datetime.date.today().isoformat()}."]
    # The results are stored before the report: `explore report` draws it again once its files can be written.
    with refusing_unwritable(f"a report this user can write: make it writable or remove it, then `explore report "
                             f"{out_dir}` draws the report from the stored results"):
        # The stamp describes the files about to change: a command killed while writing them leaves none, so the next
        # run draws them again rather than keep half a report as up to date (a stamp is written once all are drawn).
        unstamp_report(out_dir)
        figure_dir = out_dir / FIGURES
        figure_dir.mkdir(parents=True, exist_ok=True)
        for stale in (path for pattern in OBJECTIVE_FIGURES for path in figure_dir.glob(pattern)):
            stale.unlink()  # objective figures of an earlier report (other objectives); this one writes its own below
        for stale in (figure_dir / f"{name}.png" for name in {*figures_of_kind(False), *figures_of_kind(True)}):
            stale.unlink(missing_ok=True)  # static or serving figures of an earlier report; this one writes its own
        for figure in figures:
            if figure.png is not None:
                (figure_dir / f"{figure.name}.png").write_bytes(figure.png)
        detail.save()
        if detail.unstored_figures():
            log.warning("%s: figures not drawn: %s (%s holds no detail for their points; %s)", out_dir,
                        ", ".join(detail.unstored_figures()), DETAIL_FILE, HOW_TO_STORE)
        html_path, md_path = out_dir / "report.html", out_dir / "report.md"
        lead = len(extra_tables) + len(lead_tables)  # the top-design tables precede the figures
        html_path.write_text(render_html(title, summary, figures, tables, lead=lead), encoding="utf-8")
        md_path.write_text(render_markdown(title, summary, figures, tables, lead=lead), encoding="utf-8")
    return html_path, md_path


def roofline_panels(evaluator: Evaluator, rows: list[dict[str, Any]], chosen=()) -> list:
    """The roofline panels of rows (kept for callers of the earlier API): see report_static.roofline_panels."""
    from explore.report_detail import DetailSource
    from explore.report_static import roofline_panels as panels

    return panels(DetailSource(evaluator, rows, None), rows, chosen)
