"""Figures of a serving sweep's report: pure functions from data to a matplotlib Figure (no pyplot, no global state).

Metrics against the arrival rate (one line per design, a filled marker where the point meets its SLO), capacity
bars, and per-request detail of a few re-run designs: latency CDFs, KV-cache use and batch size over time.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import LogFormatterSciNotation

from explore.plots import MS, grouped_bars_figure, wide_range
from explore.rows import metric_axis_label
from sim.serving_metrics import window_power_W

LIMIT_COLOR = "#444444"
TIMELINE_WINDOWS = 200  # the timeline shows time-weighted means over this many windows of each run
ARRIVAL_WINDOWS = 50  # and the arrival rate over this many (wider: a window holds enough arrivals to read a rate)
MAX_SEQS_IN_VIEW = 0.25  # a max_seqs line is drawn where some batch reaches this share of it
NOT_JUDGED_MARK = "\u2020"  # a dagger after a capacity its search could not judge (capacity_judged 0)
AT_TOP_MARK = "\u2265"  # before a capacity at the top of its search range, a lower bound (capacity_at_top 1)


@dataclass(frozen=True, kw_only=True)
class SeriesStyle:
    """How one line is drawn: its color, line style and marker."""

    color: str
    linestyle: str = "-"
    marker: str = "o"


@dataclass(frozen=True, kw_only=True)
class RateSeries:
    """Metrics of one design (everything but the arrival rate fixed) at each swept rate, sorted by rate."""

    label: str
    style: SeriesStyle
    rate_per_s: np.ndarray
    values: Mapping[str, np.ndarray]  # metric name -> one value per rate (NaN: not measured)
    meets_slo: np.ndarray  # 1.0 meets the SLO, 0.0 misses it, NaN: no SLO


@dataclass(frozen=True, kw_only=True)
class Limit:
    """A horizontal (or, on a CDF, vertical) reference line: an SLO limit, a constraint bound, a target."""

    value: float
    label: str
    linestyle: str = "--"


@dataclass(frozen=True, kw_only=True)
class Panel:
    """One panel of a figure against the arrival rate: the metric it plots, its title and y label."""

    metric: str
    title: str
    ylabel: str
    limits: Sequence[Limit] = ()
    identity: bool = False  # draw y = x (the offered rate)
    ylim: tuple[float, float] | None = None
    scale: float = 1.0  # from the metric's SI value (and its limits') to the unit drawn (1e3: seconds as ms)


@dataclass(frozen=True, kw_only=True)
class RunDetail:
    """Per-request latencies and the iterations of one re-run serving design (times from its first arrival)."""

    label: str
    color: str
    ttft_s: np.ndarray
    tpot_s: np.ndarray  # NaN for one-token requests (dropped from the CDF)
    start_s: np.ndarray  # per iteration
    duration_s: np.ndarray
    kv_utilization: np.ndarray  # fraction of KV blocks in use
    batch_size: np.ndarray  # sequences running
    end_s: float  # the last request's finish
    max_seqs: float
    # Which engine ran each iteration (a replica, or a pipelined replica's engine or data-parallel rank) and how many
    # the run had; None: one engine ran every iteration.
    engine: np.ndarray | None = None
    engines: int = 1
    # Each iteration's dynamic energy and the system's static power (None: stored before power was): the power line.
    dynamic_J: np.ndarray | None = None
    static_W: float = math.nan
    rated_W: float = math.nan  # tdp_W: what the hardware is rated (or capped) to draw
    # An autoscaled pool's (time, replicas held) at each change, and the replicas it held on average (static_W is its
    # static power at that mean); None: a fixed pool.
    replicas_held: np.ndarray | None = None
    mean_replicas: float = math.nan
    replica_engines: int = 1  # engines of each replica (pipeline stages, data-parallel ranks)
    # Each request's arrival since the first (None: stored before arrivals were): the arrival rate's panel.
    arrival_s: np.ndarray | None = None

    def arrival_rate(self, edges_s: np.ndarray) -> np.ndarray:
        """Requests arriving per second within each window."""
        return np.histogram(self.arrival_s, bins=edges_s)[0] / np.diff(edges_s)

    def held(self, edges_s: np.ndarray) -> np.ndarray:
        """Time-weighted replicas held within each window (an autoscaled pool's)."""
        times, held = self.replicas_held[:, 0], self.replicas_held[:, 1]
        ends = np.append(times[1:], max(self.end_s, times[-1]))
        return windowed_mean(times, ends - times, held, edges_s)

    def power_W(self, edges_s: np.ndarray) -> np.ndarray:
        """The whole system's mean power within each window: static power (of the replicas held then, where the pool
        scales) plus every iteration's dynamic energy there (replicas' iterations overlap)."""
        static_W = self.static_W if self.replicas_held is None else \
            self.static_W / self.mean_replicas * self.held(edges_s)
        return static_W + window_power_W(self.start_s, self.duration_s, self.dynamic_J, edges_s)

    def engine_mean(self, values: np.ndarray, edges_s: np.ndarray) -> np.ndarray:
        """Time-weighted means per window of `values` (one per iteration), over each engine's iterations (which do
        not overlap), averaged over the engines (an engine without iterations counts as zero; of an autoscaled
        pool, over the engines of the replicas held then)."""
        if self.engine is None:
            return windowed_mean(self.start_s, self.duration_s, values, edges_s)
        values = np.asarray(values, dtype=float)
        total = sum(windowed_mean(self.start_s[self.engine == e], self.duration_s[self.engine == e],
                                  values[self.engine == e], edges_s) for e in np.unique(self.engine))
        if self.replicas_held is not None:
            held = self.held(edges_s) * self.replica_engines
            return np.divide(total, held, out=np.zeros_like(total), where=held > 0)
        return total / max(self.engines, 1)


def windowed_mean(start_s: np.ndarray, duration_s: np.ndarray, values: np.ndarray,
                  edges_s: np.ndarray) -> np.ndarray:
    """Time-weighted mean per window of the step function that is values[i] over [start[i], start[i] +
    duration[i]) and zero between iterations (which must not overlap)."""
    order = np.argsort(start_s, kind="stable")
    start, duration, value = start_s[order], duration_s[order], np.asarray(values, dtype=float)[order]
    if not len(start):
        return np.zeros(len(edges_s) - 1)
    before = np.concatenate([[0.0], np.cumsum(value * duration)])  # area of the iterations before each one
    index = np.searchsorted(start, edges_s, side="right") - 1
    at = np.clip(index, 0, None)
    area = np.where(index >= 0, before[at] + value[at] * np.clip(edges_s - start[at], 0.0, duration[at]), 0.0)
    return np.diff(area) / np.diff(edges_s)


def _legend_columns(labels: Sequence[str], width: int = 110) -> int:
    """As many legend columns as fit the longest label in about `width` characters."""
    longest = max((len(label) for label in labels), default=1) + 6
    return max(1, min(4, width // longest))


def merged_limits(limits: Sequence[Limit]) -> list[Limit]:
    """Limits at the same value as one line whose label names them all (the first one's style)."""
    by_value: dict[float, list[Limit]] = {}
    for limit in limits:
        by_value.setdefault(limit.value, []).append(limit)
    return [Limit(value=value, label="; ".join(dict.fromkeys(m.label for m in same)), linestyle=same[0].linestyle)
            for value, same in by_value.items()]


def _limit_handles(panels_limits: Sequence[Sequence[Limit]]) -> list[Line2D]:
    """One legend entry per distinct limit label across panels."""
    seen = dict.fromkeys((limit.label, limit.linestyle) for limits in panels_limits for limit in limits)
    return [Line2D([], [], color=LIMIT_COLOR, lw=1.1, ls=ls, label=label) for label, ls in seen]


def _draw_limits(ax: Axes, limits: Sequence[Limit], vertical: bool = False) -> None:
    for limit in limits:
        draw = ax.axvline if vertical else ax.axhline
        draw(limit.value, color=LIMIT_COLOR, lw=1.1, ls=limit.linestyle, zorder=1)


def _label_limits(ax: Axes, limits: Sequence[Limit], series: Sequence[RateSeries], metric: str) -> None:
    """Each horizontal limit's label on its line, at the end of the axes (left or right) where the lines
    come no closer to it (after the axes' scales are set)."""
    log = ax.get_yscale() == "log"

    def gap(limit: Limit, end: int) -> float:
        ends = [np.asarray(s.values[metric], dtype=float)[end] for s in series if len(s.rate_per_s)]
        ends = [v for v in ends if math.isfinite(v) and (v > 0 or not log)]
        scale = (lambda v: math.log10(v)) if log and limit.value > 0 else (lambda v: v)
        return min((abs(scale(v) - scale(limit.value)) for v in ends), default=math.inf)

    low, high = (math.log10(v) for v in ax.get_ylim()) if log else ax.get_ylim()
    for limit in limits:
        right = gap(limit, -1) > gap(limit, 0)
        at = (math.log10(limit.value) if log else limit.value) if limit.value > 0 or not log else low
        below = (at - low) / ((high - low) or 1.0) > 0.9  # no room above a line at the top of the axes
        ax.annotate(limit.label, xy=(0.99 if right else 0.01, limit.value), xycoords=("axes fraction", "data"),
                    xytext=(0, -2 if below else 2), textcoords="offset points", ha="right" if right else "left",
                    va="top" if below else "bottom",
                    fontsize=7.5, color=LIMIT_COLOR, zorder=4,
                    bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.75})


def _draw_series(ax: Axes, item: RateSeries, metric: str) -> None:
    """A line through every rate; markers filled where the point meets the SLO, hollow where it misses it."""
    style = item.style
    y = np.asarray(item.values[metric], dtype=float)
    ax.plot(item.rate_per_s, y, color=style.color, ls=style.linestyle, lw=1.4, zorder=2)
    misses = item.meets_slo == 0.0
    for keep, face in ((~misses, style.color), (misses, "white")):
        if keep.any():
            ax.plot(item.rate_per_s[keep], y[keep], ls="none", marker=style.marker, ms=6, color=style.color,
                    markerfacecolor=face, markeredgewidth=1.2, zorder=3)


def _series_handles(series: Sequence[RateSeries]) -> list[Line2D]:
    handles = [Line2D([], [], color=s.style.color, ls=s.style.linestyle, marker=s.style.marker, label=s.label)
               for s in series]
    if any((s.meets_slo == 0.0).any() for s in series):
        handles += [Line2D([], [], ls="none", marker="o", color="gray", label="filled: meets the SLO"),
                    Line2D([], [], ls="none", marker="o", color="gray", markerfacecolor="white",
                           label="hollow: misses the SLO")]
    return handles


def _rate_axis(ax: Axes, rates: np.ndarray, linear: bool = False) -> None:
    if wide_range(rates) and not linear:
        ax.set_xscale("log")
    elif linear:
        ax.set_xlim(left=0)
    if 0 < len(rates) <= 8:
        ax.set_xticks(rates, [f"{r:g}" for r in rates])
        ax.xaxis.minorticks_off()  # the rates alone; a log y axis keeps its minor ticks
    ax.set_xlabel(metric_axis_label("rate_per_s"))  # as the serving tables head the rate


def rate_figure(series: Sequence[RateSeries], panels: Sequence[Panel]) -> Figure:
    """One panel per metric against the arrival rate (shared x), one line per series, limits as gray lines;
    a panel whose positive values span more than LOG_RANGE gets a log y axis."""
    handles = _series_handles(series)
    if any(p.identity for p in panels):
        handles.append(Line2D([], [], color=LIMIT_COLOR, lw=1.0, ls="-.", label="every request good (= arrival rate)"))
    columns = _legend_columns([h.get_label() for h in handles])
    # The panels keep their height whatever the legend below them takes: a row of it per 0.2 in.
    fig = Figure(figsize=(5.6 * len(panels) + 0.4, 4.4 + 0.2 * math.ceil(len(handles) / columns)),
                 layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False, sharex=True).ravel()
    rates = np.unique(np.concatenate([s.rate_per_s for s in series] or [np.zeros(0)]))
    rates = rates[np.isfinite(rates)]
    unscaled = series
    for ax, panel in zip(axes, panels, strict=True):
        limits = merged_limits([replace(limit, value=limit.value * panel.scale) for limit in panel.limits])
        series = [replace(s, values={**s.values, panel.metric: np.asarray(s.values[panel.metric]) * panel.scale})
                  for s in unscaled]
        for item in series:
            _draw_series(ax, item, panel.metric)
        _draw_limits(ax, limits)
        if panel.identity and len(rates):
            ax.plot([0, rates.max()], [0, rates.max()], color=LIMIT_COLOR, lw=1.0, ls="-.", zorder=1)
        values = np.concatenate([np.asarray(s.values[panel.metric], dtype=float) for s in series] or [np.zeros(0)])
        values = np.concatenate([values, [limit.value for limit in limits]])
        if panel.ylim is not None:
            ax.set_ylim(*panel.ylim)
        elif wide_range(values) and not panel.identity:  # y = x reads as a diagonal only on linear axes
            ax.set_yscale("log")
            # Within two decades a log axis may hold a single power of ten: label some of the ticks between (2, 5).
            ax.yaxis.set_minor_formatter(LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(2, 0.4)))
        elif np.nanmin(values, initial=0.0) >= 0:
            ax.set_ylim(bottom=0)
        _rate_axis(ax, rates, linear=any(p.identity for p in panels))  # shared x: one scale
        _label_limits(ax, limits, series, panel.metric)
        ax.set_ylabel(panel.ylabel)
        ax.set_title(panel.title, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    fig.legend(handles=handles, loc="outside lower center", ncols=columns, fontsize=8, frameon=False)
    return fig


def _capacity_label(capacity_rps: float, judged: bool, at_top: bool = False) -> str:
    """A capacity bar's label: its value, 'none' at zero, '' for NaN (no bar); NOT_JUDGED_MARK after an unjudged one,
    AT_TOP_MARK before one at the top of its search range."""
    if not math.isfinite(capacity_rps):
        return ""
    value = "none" if capacity_rps == 0 else f"{AT_TOP_MARK if at_top else ''}{capacity_rps:.3g}"
    return value + ("" if judged else NOT_JUDGED_MARK)


# A tick label's character width and line height in inches at fontsize 8 (DejaVu Sans: about 0.55 em a character,
# 1.2 em a line).
TICK_CHAR_IN, TICK_LINE_IN = 8 * 0.55 / 72, 8 * 1.2 / 72
TILT_DEG = 20


def _group_ticks(groups: Sequence[str], width_in: float) -> tuple[dict, float]:
    """Tick labels for bar groups across a figure `width_in` wide, and the height in inches they add below the axes
    beyond a level label's: level where they are few and short, wrapped at 28 characters; tilted where the tilted
    labels' bands of lines stay apart; else upright (vertical), wrapped wider where their lines would not fit the
    group's width."""
    per_group_in = width_in / max(len(groups), 1)
    wrapped = [textwrap.fill(g, 28) for g in groups]
    if not (len(groups) > 4 or sum(len(g) for g in groups) > 60):
        return {"labels": wrapped, "rotation": 0, "ha": "center"}, 0.0
    lines = max(label.count("\n") + 1 for label in wrapped)
    if per_group_in * math.sin(math.radians(TILT_DEG)) >= lines * TICK_LINE_IN:
        return {"labels": wrapped, "rotation": TILT_DEG, "ha": "right"}, 0.0
    fitting = max(1, int(per_group_in / TICK_LINE_IN) - 1)
    width = max(28, math.ceil(max(len(g) for g in groups) / fitting))
    upright = [textwrap.fill(g, width) for g in groups]
    longest = max(len(line) for label in upright for line in label.splitlines())
    return {"labels": upright, "rotation": 90, "ha": "center"}, longest * TICK_CHAR_IN


def capacity_figure(groups: Sequence[str], capacity_rps: Mapping[str, Sequence[float]],
                    colors: Mapping[str, str], judged: Mapping[str, Sequence[bool]] | None = None,
                    at_top: Mapping[str, Sequence[bool]] | None = None) -> Figure:
    """Grouped bars: one group per design (device, format, ...), one bar per scheduler, the value on each bar;
    a zero bar (no rate meets the SLO) is labeled 'none'; NaN draws no bar. A capacity `judged` marks False
    (its search stopped on a run too short or noisy to judge, sim/capacity.py) is a hollow bar whose label ends in
    NOT_JUDGED_MARK, with a legend entry saying so; without `judged` every capacity counts as judged. One `at_top`
    marks True (the top of its search range was sustainable) is labeled AT_TOP_MARK first: at least that."""
    fig, ax, x, bars = grouped_bars_figure(groups, capacity_rps, height_in=4.6, colors=colors)
    marks = {name: list((judged or {}).get(name, [True] * len(values))) for name, values in capacity_rps.items()}
    tops = {name: list((at_top or {}).get(name, [False] * len(values))) for name, values in capacity_rps.items()}
    for (name, values), container in zip(capacity_rps.items(), bars, strict=True):
        heights = np.asarray(values, dtype=float)
        for bar, ok in zip(container, marks[name], strict=True):
            if not ok:  # hollow, as a rate figure's hollow marker: not a verdict on the design
                bar.set(facecolor="white", edgecolor=colors[name], linewidth=1.5)
        ax.bar_label(container, labels=[_capacity_label(h, ok, top) for h, ok, top in
                                        zip(heights, marks[name], tops[name], strict=True)], fontsize=8, padding=2)
    ticks, below_in = _group_ticks(groups, fig.get_figwidth())
    ax.set_xticks(x, **ticks, fontsize=8)
    fig.set_figheight(fig.get_figheight() + below_in)  # upright labels: the axes keep their height
    ax.set_ylabel("capacity (requests/s meeting the SLO)")
    ax.set_ylim(0, max([np.nanmax(np.asarray(v, dtype=float), initial=0.0) for v in capacity_rps.values()]
                       + [1e-9]) * 1.15)
    ax.grid(True, axis="y", alpha=0.3)
    handles = [Patch(color=colors[name], label=name) for name in capacity_rps]
    unjudged = any(not ok and math.isfinite(h) for name, values in capacity_rps.items()
                   for h, ok in zip(np.asarray(values, dtype=float), marks[name], strict=True))
    if unjudged:
        handles.append(Patch(facecolor="white", edgecolor=LIMIT_COLOR, linewidth=1.5,
                             label=f"hollow, {NOT_JUDGED_MARK}: not judged (too few requests to tell whether the "
                                   "queue keeps up; raise the number of requests)"))
    topped = any(top and math.isfinite(h) and h > 0 for name, values in capacity_rps.items()
                 for h, top in zip(np.asarray(values, dtype=float), tops[name], strict=True))
    if topped:
        handles.append(Patch(facecolor="none", edgecolor="none",
                             label=f"{AT_TOP_MARK}: the top of the searched range, sustained: at least that (raise "
                                   "the range's high to find the capacity)"))
    long_legend = unjudged or topped
    fig.legend(handles=handles, loc="outside lower center", fontsize=8, frameon=False, title="scheduler",
               title_fontsize=8, ncols=_legend_columns([h.get_label() for h in handles]) if long_legend
               else min(len(handles), 4))
    return fig


def _cdf(ax: Axes, values: np.ndarray, color: str) -> None:
    values = np.sort(values[np.isfinite(values)])
    if values.size:
        ax.step(values, np.arange(1, values.size + 1) / values.size, where="post", color=color, lw=1.5)


def latency_cdf_figure(runs: Sequence[RunDetail], limits: Mapping[str, Sequence[Limit]],
                       attainment: float | None) -> Figure:
    """TTFT and TPOT CDFs over requests in ms (shared y: fraction of requests), SLO limits (in seconds, as the
    runs' latencies) as vertical lines and the SLO's attainment target as a horizontal one."""
    fig = Figure(figsize=(11.5, 4.6 + 0.2 * len(runs)), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, field, name in zip(axes, ("ttft_s", "tpot_s"), ("TTFT", "TPOT"), strict=True):
        for run in runs:
            _cdf(ax, MS * getattr(run, field), run.color)
        _draw_limits(ax, [replace(limit, value=MS * limit.value) for limit in limits.get(field, ())], vertical=True)
        if attainment is not None:
            ax.axhline(attainment, color=LIMIT_COLOR, lw=0.9, ls=":", zorder=1)
        values = np.concatenate([getattr(run, field) for run in runs] + [[lim.value for lim in limits.get(field, ())]])
        if wide_range(values):
            ax.set_xscale("log")
        ax.set_xlabel(f"{name} (ms)")
        ax.set_title(f"{name}: fraction of requests at or below x", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("fraction of requests")
    axes[0].set_ylim(0, 1.02)
    handles = [Line2D([], [], color=run.color, lw=1.5, label=run.label) for run in runs]
    handles += _limit_handles(list(limits.values()))
    if attainment is not None:
        handles.append(Line2D([], [], color=LIMIT_COLOR, lw=0.9, ls=":",
                              label=f"SLO attainment target ({attainment:g})"))
    fig.legend(handles=handles, loc="outside lower center", ncols=1, fontsize=8, frameon=False)
    return fig


def timeline_figure(runs: Sequence[RunDetail]) -> Figure:
    """The requests arriving per second over ARRIVAL_WINDOWS windows, where the runs carry their arrivals; KV-cache
    utilization (%) above running batch size against time since the first arrival (shared x), as time-weighted means
    over TIMELINE_WINDOWS windows of each run, per engine (RunDetail.engine_mean); below them the whole system's power
    in the same windows, its rated power dashed, where the runs carry their energy; and the replicas an autoscaled pool
    held, where a run scales."""
    arrived = [run for run in runs if run.arrival_s is not None]
    powered = [run for run in runs if run.dynamic_J is not None]
    scaled = [run for run in runs if run.replicas_held is not None]
    fig = Figure(figsize=(11.5, 6.4 + 2.6 * (bool(arrived) + bool(powered) + bool(scaled)) + 0.2 * len(runs)),
                 layout="constrained")
    every = fig.subplots(bool(arrived) + 2 + bool(powered) + bool(scaled), 1, sharex=True)
    axes = every[1:] if arrived else every  # the panels below the arrivals'
    for run in arrived:
        edges = np.linspace(0.0, max(run.end_s, 1e-9), ARRIVAL_WINDOWS + 1)
        every[0].stairs(run.arrival_rate(edges), edges, color=run.color, lw=1.3)
    if arrived:
        every[0].set_ylim(bottom=0)
        every[0].set_ylabel("requests/s")
        every[0].set_title(f"Requests arriving (per second, over {ARRIVAL_WINDOWS} windows)", fontsize=10)
    kv_ax, batch_ax = axes[:2]
    for run in scaled:  # an autoscaled pool's replicas held, as a step line
        times, held = run.replicas_held[:, 0], run.replicas_held[:, 1]
        axes[-1].step(np.append(times, run.end_s), np.append(held, held[-1]), where="post", color=run.color, lw=1.3)
    if scaled:
        axes[-1].set_ylim(bottom=0)
        axes[-1].set_ylabel("replicas held")
        axes[-1].set_title("Replicas an autoscaled pool held (starting, serving or draining)", fontsize=10)
    tallest = 0.0  # the highest batch drawn
    for run in runs:
        edges = np.linspace(0.0, max(run.end_s, 1e-9), TIMELINE_WINDOWS + 1)
        centers = (edges[:-1] + edges[1:]) / 2
        kv_ax.plot(centers, 100 * run.engine_mean(run.kv_utilization, edges), color=run.color, lw=1.3)
        batch = run.engine_mean(run.batch_size, edges)
        batch_ax.plot(centers, batch, color=run.color, lw=1.3)
        tallest = max(tallest, float(np.nanmax(batch, initial=0.0)))
        if run.dynamic_J is not None:
            axes[2].plot(centers, run.power_W(edges), color=run.color, lw=1.3)
            if math.isfinite(run.rated_W):
                axes[2].axhline(run.rated_W, color=run.color, lw=1.0, ls="--", alpha=0.7)
    if powered:
        axes[2].set_ylim(bottom=0)
        axes[2].set_ylabel("power (W)")
        axes[2].set_title("Power of the whole system (dashed: its rated power, tdp_W)", fontsize=10)
    # A max_seqs far above every batch drawn (MAX_SEQS_IN_VIEW) would flatten the batches against the axis: it is
    # named in the title instead.
    every_limit = sorted({run.max_seqs for run in runs if math.isfinite(run.max_seqs)})
    limits = [value for value in every_limit if tallest >= value * MAX_SEQS_IN_VIEW]
    for value in limits:
        batch_ax.axhline(value, color=LIMIT_COLOR, lw=1.0, ls=":", zorder=1)
    above = [value for value in every_limit if value not in limits]
    kv_ax.set_ylim(0, 105)
    kv_ax.set_ylabel("KV cache in use (%)")
    kv_ax.set_title("KV-cache utilization", fontsize=10)
    batch_ax.set_ylim(bottom=0)
    batch_ax.set_ylabel("running sequences")
    batch_ax.set_title("Running batch size" + (f" (max_seqs {', '.join(f'{v:g}' for v in above)}: far above every "
                                               f"batch, not drawn)" if above else ""), fontsize=10)
    axes[-1].set_xlabel("time since the first arrival (s)")
    axes[-1].set_xlim(left=0)
    for ax in every:
        ax.grid(True, which="major", alpha=0.3)
    handles = [Line2D([], [], color=run.color, lw=1.5, label=run.label) for run in runs]
    if limits:
        handles.append(Line2D([], [], color=LIMIT_COLOR, lw=1.0, ls=":",
                              label=f"max_seqs ({', '.join(f'{v:g}' for v in limits)})"))
    fig.legend(handles=handles, loc="outside lower center", ncols=1, fontsize=8, frameon=False)
    return fig
