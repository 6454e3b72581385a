"""The what-if view of a sweep with device overrides: each point's gain over the same point on the preset as
shipped (TPOT and TTFT speed-up, energy per token saved), against each overridden field. A static sweep's what-ifs
are its device's and its link's; a serving sweep's also its other pools' devices' (explore/pool_what_ifs.py), each
point's baseline the sweep's design point without them."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from explore.design_point import DesignPoint
from explore.metrics import metric
from explore.plots import figure_png
from explore.plots_objectives import SpeedupLine, SpeedupPanel, speedup_figure
from explore.pool_what_ifs import POOL_WHAT_IFS
from explore.report import ReportFigure
from explore.report_detail import DetailSource, design_point, not_stored
from explore.report_pareto import STEERED_SEARCHES, steered_sample
from explore.rows import OVERRIDE_PREFIX, as_number, device_label, is_feasible, is_serving, overrides_of, value_label
from explore.run_support import LINK_PREFIX, WHAT_IF_PREFIXES

TITLE = "What-if against the preset as shipped"
SHIPPED_FITS = "shipped_fits"  # beside a row's gains: 1 where its point fits on the presets as shipped, 0 where not
MAX_KNOBS = 3  # rows of the figure: the overridden fields that vary most
# (metric, panel title): each gain is shipped / what-if for a metric better lower (> 1: the what-if is faster or
# spends less energy), what-if / shipped for one better higher.
GAINS = (("tpot_s", "TPOT speed-up"), ("ttft_s", "TTFT speed-up"),
         ("energy_per_token_J", "energy per token saved"))
HOW_TO_READ = ("Each line is one device: at each value of the overridden field, the median gain over every other "
               "knob ({others}, the other overrides), the band from the smallest to the largest. Gains "
               "are shipped / what-if: 2× TPOT speed-up halves the time per output token, 1× changes nothing.")


def _gain(name: str, shipped: float, whatif: float) -> float:
    """How much better the what-if is (> 1: better), the way the metric's registry entry says is better."""
    return shipped / whatif if metric(name).better == "min" else whatif / shipped


def what_ifs_of(row: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The what-ifs set in a row: a static row's device overrides ('memory.bandwidth_GBps'), a serving row's every
    what-if column ('device.memory.bandwidth_GBps', 'attention_device.memory.bandwidth_GBps', 'link.bandwidth_GBps')."""
    if not is_serving(row):
        return overrides_of(row) + tuple(sorted((key, value) for key, value in row.items()
                                                if key.startswith(LINK_PREFIX) and value not in (None, "")))
    return tuple(sorted((key, value) for key, value in row.items()
                        if key.startswith(WHAT_IF_PREFIXES) and value not in (None, "")))


def _what_if_prefixes(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    return WHAT_IF_PREFIXES if any(is_serving(row) for row in rows) else (OVERRIDE_PREFIX, LINK_PREFIX)


def _override_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Override columns, those taking the most values first (at most MAX_KNOBS)."""
    prefixes = _what_if_prefixes(rows)
    columns = dict.fromkeys(k for row in rows for k in row if k.startswith(prefixes))
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


def _shipped(column: str, rows: list[dict[str, Any]]) -> float | None:
    """The shipped value of a what-if column where the rows that set it change one preset: the device's for
    'device.' columns, the attention devices' or the prefill pool's for theirs, the link's for 'link.' ones; None
    where they change several."""
    setting = [row for row in rows if row.get(column) not in (None, "")]
    if column.startswith(LINK_PREFIX):
        links = {row.get("link") if row.get("link") not in (None, "", "default") else _default_link(row["device"])
                 for row in setting}
        if len(links) != 1 or None in links:
            return None
        return _link_value(links.pop(), column.removeprefix(LINK_PREFIX))
    named = {OVERRIDE_PREFIX: lambda row: row["device"], **{pool.prefix: pool.row_device for pool in POOL_WHAT_IFS}}
    prefix = next((prefix for prefix in named if column.startswith(prefix)), None)
    presets = {named[prefix](row) for row in setting} if prefix else set()
    if len(presets) != 1 or None in presets:
        return None
    return shipped_value(presets.pop(), OVERRIDE_PREFIX + column.removeprefix(prefix))


def _default_link(device: str) -> str | None:
    from hw_models.link import default_link
    from workloads.errors import InputError

    try:
        return default_link(device)
    except InputError:
        return None


def _link_value(link: str, field: str) -> float | None:
    """A link preset's (or file's) value of `field` as shipped; None where it cannot be read."""
    from hw_models.link import load_link
    from workloads.errors import InputError

    try:
        number = as_number(getattr(load_link(link), field, None))
    except (InputError, OSError):
        return None
    return number if math.isfinite(number) else None


def _tick(column: str, value: Any) -> str:
    """A categorical axis value: a pool column's empty value is a point without that pool."""
    pool = next((pool for pool in POOL_WHAT_IFS if column.startswith(pool.prefix)), None)
    return f"no {pool.pool}" if value in (None, "") and pool is not None else value_label(value)


def gains(rows: list[dict[str, Any]], detail: DetailSource, points: Mapping[str, DesignPoint] | None = None,
          ) -> list[tuple[dict[str, Any], dict[str, float]]] | None:
    """(row, {metric: shipped / what-if}) of each feasible what-if row; None when a baseline cannot be priced
    (neither stored nor priceable). A row of the sweep without overrides is its own points' baseline. A serving
    row's baseline is its design point (`points`: point_id -> DesignPoint of the sweep) without its what-ifs."""
    feasible = [row for row in rows if is_feasible(row)]
    shipped = {_key(row): row for row in feasible if not what_ifs_of(row)}
    result = []
    for row in feasible:
        if not what_ifs_of(row):
            continue
        if is_serving(row):  # its stored baseline, else the sweep's row of its point without what-ifs, else priced
            point = (points or {}).get(row.get("point_id"))
            base_point = None if point is None else without_what_ifs(point)
            known = None if base_point is None else shipped.get(base_point.point_id)
            base = detail.baseline(row, base_point, known)
        else:
            # A static row's point is rebuilt without its what-ifs (design_point reads no link column), where the sweep
            # has rows without them to find it among.
            base = (shipped.get(design_point(dict(row, **{k: None for k in row if k.startswith(OVERRIDE_PREFIX)}))
                                .point_id) if shipped else None) or detail.baseline(row)
        if base is None:
            return None
        result.append((row, {m: _gain(m, as_number(base.get(m)), as_number(row.get(m))) for m, _ in GAINS}
                       | {SHIPPED_FITS: as_number(base.get("fits_in_memory"))}))
    return result


def _key(row: dict[str, Any]) -> str:
    """The key a row without what-ifs is found by as a baseline: its point_id (a static row's computed again)."""
    return str(row.get("point_id")) if is_serving(row) else design_point(row).point_id


def without_what_ifs(point: DesignPoint) -> DesignPoint:
    """A design point on its presets as shipped: no device, link or pool what-ifs."""
    return replace(point, overrides=(), link_overrides=(), **{pool.field: () for pool in POOL_WHAT_IFS})


def axis_values(rows: list[dict[str, Any]], column: str) -> list[Any]:
    """The values rows take in a what-if column, in axis order: those that are not numbers (None, 'default': a point
    without the field, as one without the pool a pool what-if changes) first, by name, then the numbers rising."""

    def order(value: Any) -> tuple[bool, float, str]:
        number = as_number(value)
        return (math.isfinite(number), number if math.isfinite(number) else 0.0, str(value))

    return sorted(dict.fromkeys(row.get(column) for row in rows), key=order)


def _lines(pairs: list[tuple[dict[str, Any], dict[str, float]]], devices: list[str], column: str, metric: str,
           values: list[Any]) -> list[SpeedupLine]:
    """One line per device (`devices`: each pair's device_label): median, min and max gain at each value of the
    column."""
    # The gains grouped by (device, value) in one pass, so that a panel costs O(points), not O(points x values).
    found: dict[tuple[str, str], list[float]] = {}
    for (row, g), device in zip(pairs, devices, strict=True):
        found.setdefault((device, value_label(row.get(column))), []).extend(
            [g[metric]] if math.isfinite(g[metric]) else [])
    lines = []
    for device in dict.fromkeys(devices):
        stats = []
        for value in values:
            cell = found.get((device, value_label(value)))
            stats.append((statistics.median(cell), min(cell), max(cell)) if cell else (math.nan,) * 3)
        array = np.array(stats, dtype=float).reshape(-1, 3)
        x = np.array([as_number(v) for v in values], dtype=float)
        lines.append(SpeedupLine(label=device, x=x if np.isfinite(x).all() else np.arange(len(values), dtype=float),
                                 median=array[:, 0], low=array[:, 1], high=array[:, 2]))
    return lines


def _headline(pairs: list[tuple[dict[str, Any], dict[str, float]]]) -> str:
    """The smallest and largest gain of each metric the what-ifs move (GAINS), with the point that reaches it: a power
    cap moves TTFT and energy and leaves TPOT, more bandwidth the reverse; and how many points do not fit on their
    presets as shipped (their what-ifs make them run)."""

    def name(row: dict[str, Any]) -> str:
        at = f"{as_number(row.get('rate_per_s')):g} req/s" if is_serving(row) else f"batch {row['batch']}"
        return ", ".join(f"{path}={value_label(v)}" for path, v in what_ifs_of(row)) + f", {at}"

    said, compared = [], False
    for gain, words in GAINS:
        measured = [(g[gain], row) for row, g in pairs if math.isfinite(g[gain])]
        if not measured:
            continue
        compared = True
        (high, best), (low, worst) = max(measured, key=lambda t: t[0]), min(measured, key=lambda t: t[0])
        if f"{low:.3g}" == f"{high:.3g}" == "1":
            continue  # a metric no what-if moves
        said.append(f"{words} from {low:.3g}× ({device_label(worst)}, {name(worst)}) to "
                    f"{high:.3g}× ({device_label(best)}, {name(best)}).")
    if not compared:  # every point's preset as shipped has no timing to compare (it does not fit)
        return ("No point runs on its presets as shipped (each is infeasible there: its memory does not hold it), so "
                "there is no gain to show: the what-ifs are what make these points run.")
    moved = " ".join(said) or "No what-if moves TPOT, TTFT or energy per token (1× throughout)."
    unfit = sum(1 for _, g in pairs if g.get(SHIPPED_FITS) == 0.0)
    return moved + (f" On the presets as shipped {unfit} of these {len(pairs)} points do not fit in memory (their "
                    f"timings priced all the same): the what-ifs are what make them run." if unfit else "")


def whatif_section(rows: list[dict[str, Any]], detail: DetailSource, search: str | None = None,
                   points: Mapping[str, DesignPoint] | None = None) -> list[ReportFigure]:
    """The what-if figure of a sweep with overrides (none without); `search`: the sweep's strategy, whose points a
    steered search (nsga2, tpe) chose where it looked, which the caption says; `points`: a serving sweep's design
    points by point_id, whose baselines are priced from them."""
    if not any(what_ifs_of(row) for row in rows if is_feasible(row)):
        return []
    pairs = gains(rows, detail, points)
    if pairs is None:
        return [ReportFigure(name="whatif", title=TITLE, png=None,
                             caption=not_stored("metrics on the preset as shipped"))]
    what = [row for row, _ in pairs]
    devices = [device_label(row) for row in what]  # once: every panel groups by them
    grid = []
    for column in _override_columns(what):
        values = axis_values(what, column)
        numeric = all(math.isfinite(as_number(v)) for v in values)
        shipped = _shipped(column, what) if numeric else None
        grid.append([SpeedupPanel(knob=column, title=title, lines=_lines(pairs, devices, column, metric, values),
                                  ticks=None if numeric else [_tick(column, v) for v in values], shipped=shipped)
                     for metric, title in GAINS])
    steered = f" {steered_sample(search, 'a median')}." if search in STEERED_SEARCHES else ""
    serving = any(is_serving(row) for row in what)
    same = "model, format, requests, scheduler" if serving else "model, batch, format, lengths"
    others = "model, arrival rate, format" if serving else "model, batch, format"
    caption = (f"{len(pairs)} feasible what-if points, each against the same point ({same}) on the presets as "
               f"shipped. {_headline(pairs)} {HOW_TO_READ.format(others=others)}{steered}")
    return [ReportFigure(name="whatif", title=TITLE, caption=caption, png=figure_png(speedup_figure(grid)))]
