"""The what-if view of a sweep with device overrides: each point's gain over the same point on the preset as
shipped (TPOT and TTFT speed-up, energy per token saved), against each overridden field."""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np

from explore.metrics import metric
from explore.plots import figure_png
from explore.plots_objectives import SpeedupLine, SpeedupPanel, speedup_figure
from explore.report import ReportFigure
from explore.report_detail import DetailSource, design_point, not_stored
from explore.report_pareto import STEERED_SEARCHES, steered_sample
from explore.rows import OVERRIDE_PREFIX, as_number, device_label, is_feasible, overrides_of, value_label

TITLE = "What-if against the preset as shipped"
MAX_KNOBS = 3  # rows of the figure: the overridden fields that vary most
# (metric, panel title): each gain is shipped / what-if for a metric better lower (> 1: the what-if is faster or
# spends less energy), what-if / shipped for one better higher.
GAINS = (("tpot_s", "TPOT speed-up"), ("ttft_s", "TTFT speed-up"),
         ("energy_per_token_J", "energy per token saved"))
HOW_TO_READ = ("Each line is one device: at each value of the overridden field, the median gain over every other "
               "knob (model, batch, format, the other overrides), the band from the smallest to the largest. Gains "
               "are shipped / what-if: 2× TPOT speed-up halves the time per output token, 1× changes nothing.")


def _gain(name: str, shipped: float, whatif: float) -> float:
    """How much better the what-if is (> 1: better), the way the metric's registry entry says is better."""
    return shipped / whatif if metric(name).better == "min" else whatif / shipped


def _override_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Override columns, those taking the most values first (at most MAX_KNOBS)."""
    columns = dict.fromkeys(k for row in rows for k in row if k.startswith(OVERRIDE_PREFIX))
    counts = {c: len({value_label(row.get(c)) for row in rows}) for c in columns}
    return sorted(columns, key=lambda c: -counts[c])[:MAX_KNOBS]


def shipped_value(device: str, column: str) -> float | None:
    """The value of an overridden field (a 'device.' column) in the device's preset as shipped; None where it is
    not a number or cannot be read."""
    from hw_models.registry import read_device_yaml
    from workloads.errors import InputError

    try:
        node: Any = read_device_yaml(device)[0]
    except (InputError, OSError):
        return None
    for key in column.removeprefix(OVERRIDE_PREFIX).split("."):
        node = node.get(key) if isinstance(node, dict) else None
    number = as_number(node)
    return number if math.isfinite(number) else None


def gains(rows: list[dict[str, Any]], detail: DetailSource) -> list[tuple[dict[str, Any], dict[str, float]]] | None:
    """(row, {metric: shipped / what-if}) of each feasible what-if row; None when a baseline cannot be priced
    (neither stored nor priceable). A row of the sweep without overrides is its own points' baseline."""
    feasible = [row for row in rows if is_feasible(row)]
    shipped = {design_point(row).point_id: row for row in feasible if not overrides_of(row)}
    result = []
    for row in feasible:
        if not overrides_of(row):
            continue
        base_id = design_point(dict(row, **{k: None for k in row if k.startswith(OVERRIDE_PREFIX)})).point_id
        base = shipped.get(base_id) or detail.baseline(row)
        if base is None:
            return None
        result.append((row, {m: _gain(m, as_number(base.get(m)), as_number(row.get(m))) for m, _ in GAINS}))
    return result


def _lines(pairs: list[tuple[dict[str, Any], dict[str, float]]], column: str, metric: str,
           values: list[Any]) -> list[SpeedupLine]:
    """One line per device: median, min and max gain at each value of the column."""
    lines = []
    for device in dict.fromkeys(device_label(row) for row, _ in pairs):
        stats = []
        for value in values:
            found = [g[metric] for row, g in pairs if device_label(row) == device
                     and value_label(row.get(column)) == value_label(value) and math.isfinite(g[metric])]
            stats.append((statistics.median(found), min(found), max(found)) if found else (math.nan,) * 3)
        array = np.array(stats, dtype=float).reshape(-1, 3)
        x = np.array([as_number(v) for v in values], dtype=float)
        lines.append(SpeedupLine(label=device, x=x if np.isfinite(x).all() else np.arange(len(values), dtype=float),
                                 median=array[:, 0], low=array[:, 1], high=array[:, 2]))
    return lines


def _headline(pairs: list[tuple[dict[str, Any], dict[str, float]]]) -> str:
    """The smallest and largest gain of each metric the what-ifs move (GAINS), with the point that reaches it: a power
    cap moves TTFT and energy and leaves TPOT, more bandwidth the reverse."""

    def name(row: dict[str, Any]) -> str:
        return ", ".join(f"{path}={value_label(v)}" for path, v in overrides_of(row))

    said = []
    for gain, words in GAINS:
        measured = [(g[gain], row) for row, g in pairs if math.isfinite(g[gain])]
        if not measured:
            continue
        (high, best), (low, worst) = max(measured, key=lambda t: t[0]), min(measured, key=lambda t: t[0])
        if f"{low:.3g}" == f"{high:.3g}" == "1":
            continue  # a metric no what-if moves
        said.append(f"{words} from {low:.3g}× ({device_label(worst)}, {name(worst)}, batch {worst['batch']}) to "
                    f"{high:.3g}× ({device_label(best)}, {name(best)}, batch {best['batch']}).")
    return " ".join(said) or "No what-if moves TPOT, TTFT or energy per token (1× throughout)."


def whatif_section(rows: list[dict[str, Any]], detail: DetailSource, search: str | None = None) -> list[ReportFigure]:
    """The what-if figure of a sweep with overrides (none without); `search`: the sweep's strategy, whose points a
    steered search (nsga2, tpe) chose where it looked, which the caption says."""
    if not any(overrides_of(row) for row in rows if is_feasible(row)):
        return []
    pairs = gains(rows, detail)
    if pairs is None:
        return [ReportFigure(name="whatif", title=TITLE, png=None,
                             caption=not_stored("metrics on the preset as shipped"))]
    what = [row for row, _ in pairs]
    grid = []
    devices = {row["device"] for row in what}
    for column in _override_columns(what):
        values = sorted(dict.fromkeys(row.get(column) for row in what), key=lambda v: (as_number(v), str(v)))
        numeric = all(math.isfinite(as_number(v)) for v in values)
        shipped = shipped_value(next(iter(devices)), column) if numeric and len(devices) == 1 else None
        grid.append([SpeedupPanel(knob=column, title=title, lines=_lines(pairs, column, metric, values),
                                  ticks=None if numeric else [value_label(v) for v in values], shipped=shipped)
                     for metric, title in GAINS])
    steered = f" {steered_sample(search, 'a median')}." if search in STEERED_SEARCHES else ""
    caption = (f"{len(pairs)} feasible what-if points, each against the same point (model, batch, format, lengths) "
               f"on the preset as shipped. {_headline(pairs)} {HOW_TO_READ}{steered}")
    return [ReportFigure(name="whatif", title=TITLE, caption=caption, png=figure_png(speedup_figure(grid)))]
