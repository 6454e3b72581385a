"""Figures of a sweep's objectives: Pareto fronts, rankings, sensitivity as effect sizes, what-if speed-ups.

Pure functions from data to a matplotlib Figure (no pyplot, no global state). Metric values come in SI units and
are drawn in the report's units (explore.rows.metric_scale: times in ms).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from explore.plots import markers, palette, wide_range
from explore.rows import metric_axis_label, metric_scale

FRONT_COLOR = "#d62728"


def _scale_axes(ax: Axes, x: np.ndarray, y: np.ndarray) -> None:
    for values, set_scale in ((x, ax.set_xscale), (y, ax.set_yscale)):
        finite = values[np.isfinite(values)]
        # A log axis would hide zeros (quality_delta is 0 at 16-bit dense) and negative values: linear then.
        if wide_range(values) and bool(np.all(finite > 0)):
            set_scale("log")


def _direction(name: str, minimized: bool) -> str:
    return metric_axis_label(name) + (" (lower is better)" if minimized else " (higher is better)")


# ---- Pareto fronts ------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class ChosenPoint:
    """A labeled point of a Pareto figure: its coordinates (SI), its role ('best tpot_s', 'balanced') and name."""

    x: float
    y: float
    role: str
    label: str


@dataclass(frozen=True, kw_only=True)
class ParetoPoints:
    """Feasible points of a Pareto figure (SI values): their device and format (color and marker), whether they
    meet the constraints (hollow when not) and whether they are on the front."""

    x: np.ndarray
    y: np.ndarray
    device: list[str]
    fmt: list[str]
    meets: np.ndarray
    front: np.ndarray


def _encoding_handles(colors: dict[str, str], shapes: dict[str, str], hollow: bool) -> list[Line2D]:
    handles = [Line2D([], [], ls="none", marker="s", color=c, label=k) for k, c in colors.items()]
    handles += [Line2D([], [], ls="none", marker=m, color="#555555", label=k) for k, m in shapes.items()]
    handles.append(Line2D([], [], ls="-", marker="o", color=FRONT_COLOR, mec="black", mfc="#999999",
                          label="Pareto-optimal (black edge, red staircase)"))
    if hollow:
        handles.append(Line2D([], [], ls="none", marker="o", color="#555555", mfc="white",
                              label="hollow: breaks a constraint"))
    return handles


def pareto_figure(x_name: str, y_name: str, points: ParetoPoints, x_minimized: bool, y_minimized: bool,
                  chosen: Sequence[ChosenPoint]) -> Figure:
    """Every feasible point, colored by device and shaped by format; hollow where it breaks a constraint; the
    front with black edges joined by a red staircase; the chosen points lettered."""
    fig = Figure(figsize=(10.0, 5.6 + 0.2 * len(chosen)), layout="constrained")
    ax = fig.subplots()
    sx, sy = metric_scale(x_name), metric_scale(y_name)
    x, y = points.x * sx, points.y * sy
    colors, shapes = palette(points.device), markers(points.fmt)
    for device, color in colors.items():
        for fmt, marker in shapes.items():
            group = np.array([d == device and f == fmt for d, f in zip(points.device, points.fmt, strict=True)],
                             dtype=bool).reshape(-1)
            for keep, face, edge, size in ((group & points.meets & ~points.front, color, "none", 26),
                                           (group & ~points.meets, "white", color, 26),
                                           (group & points.front, color, "black", 60)):
                if keep.any():
                    ax.scatter(x[keep], y[keep], s=size, marker=marker, facecolors=face, edgecolors=edge,
                               linewidths=1.0, alpha=0.85, zorder=3 if size > 26 else 2)
    order = np.argsort(x[points.front], kind="stable")
    ax.step(x[points.front][order], y[points.front][order], where="post" if x_minimized else "pre",
            color=FRONT_COLOR, lw=1.2, alpha=0.8, zorder=1)
    _scale_axes(ax, x, y)
    to_axes = ax.transAxes.inverted()
    for i, point in enumerate(chosen):
        at = (point.x * sx, point.y * sy)
        # Toward the inside of the axes: a label at the right or top edge would run off it (or sit on the frame).
        fx, fy = to_axes.transform(ax.transData.transform(at))
        dx, dy = (10 if fx < 0.65 else -10), (10 + 16 * (i % 3)) * (1 if fy < 0.75 else -1)  # a box is ~14 pt tall
        ax.annotate(f"{chr(ord('A') + i)}: {point.role}", at, xytext=(dx, dy), textcoords="offset points",
                    ha="left" if dx > 0 else "right", va="bottom" if dy > 0 else "top", fontsize=8,
                    arrowprops={"arrowstyle": "-", "lw": 0.6},
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "#999", "alpha": 0.9}, zorder=5)
        # The chosen point itself above every label box, so another's label never hides it.
        ax.scatter([at[0]], [at[1]], s=60, facecolors="none", edgecolors="black", linewidths=1.2, zorder=6)
    ax.set_xlabel(_direction(x_name, x_minimized))
    ax.set_ylabel(_direction(y_name, y_minimized))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(handles=_encoding_handles(colors, shapes, bool(np.any(~points.meets))), fontsize=7.5, frameon=False,
              loc="center left", bbox_to_anchor=(1.01, 0.5))
    if chosen:  # the letters' full names below the axes, where long labels have room
        handles = [Line2D([], [], ls="", marker=f"${chr(ord('A') + i)}$", color="black",
                          label=textwrap.shorten(f"{p.role}: {p.label}", 170)) for i, p in enumerate(chosen)]
        fig.legend(handles=handles, loc="outside lower left", ncols=1, fontsize=8, frameon=False)
    return fig


def ranking_figure(name: str, labels: Sequence[str], values: Sequence[float], minimized: bool) -> Figure:
    """Horizontal bars of the best design points for one objective, best at the top."""
    fig = Figure(figsize=(10.0, 1.4 + 0.3 * len(labels)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(labels))
    array = np.asarray(values, dtype=float) * metric_scale(name)
    ax.barh(y, array, color="#1f77b4", height=0.7)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(_direction(name, minimized))
    if wide_range(array):
        ax.set_xscale("log")
    ax.grid(True, axis="x", alpha=0.3)
    return fig


# ---- sensitivity as effect sizes ----------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Effect:
    """How one knob moves an objective: each value's median relative to the median over every feasible point."""

    knob: str
    values: list[tuple[str, float]]  # (value label, ratio); NaN: no feasible point at that value

    @property
    def spread(self) -> float:
        """Largest over smallest ratio (1.0: the knob changes nothing; NaN: fewer than two values measured)."""
        ratios = [r for _, r in self.values if math.isfinite(r) and r > 0]
        return max(ratios) / min(ratios) if len(ratios) > 1 else math.nan


RATIO_STEPS = (1.02, 1.05, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1e3, 1e4)


def _times(value: float, _position: float | None = None) -> str:
    return f"{value:.3g}×"


# Gains that differ by less than this (relative) are one value: what floating point leaves of two prices of the same
# work (1 +- 1e-13), drawn as matplotlib draws a constant rather than stretched over the axis.
SAME_GAIN = 1e-9


def _widen_noise(ax) -> None:
    """A linear ratio axis whose view spans no more than rounding noise gets the view of a constant line (its value
    +- 5.5%, as matplotlib autoscales one), not ticks at the 13th decimal."""
    low, high = ax.get_ylim()
    middle = (low + high) / 2
    if high - low <= SAME_GAIN * abs(middle):
        ax.set_ylim(middle - 0.055 * abs(middle), middle + 0.055 * abs(middle))


def _times_within(ax):
    """A ratio formatter for `ax`'s linear axis that tells its ticks apart: as many decimals as a tenth of the view's
    span needs (1.005×, 1.01×, ... where the gains span 2%), trailing zeros dropped."""

    def text(value: float, _position: float | None = None) -> str:
        low, high = ax.get_ylim()
        span = abs(high - low)
        decimals = max(0, math.ceil(-math.log10(span / 10))) if span > 0 else 3
        shown = f"{value:.{decimals}f}".rstrip("0").rstrip(".") if decimals else f"{value:.0f}"
        return f"{shown}×"

    return text


def ratio_ticks(low: float, high: float, most: int = 9) -> list[float]:
    """Round ratios (1×, 1.1×, 2×, 0.5×, ...) inside [low, high] for a log axis, spaced at least 1/most of the
    axis apart, outward from 1×."""
    gap = math.log(high / low) / most
    ticks = [1.0] if low <= 1.0 <= high else []
    for side in (sorted(t for t in RATIO_STEPS if t <= high), sorted((1 / t for t in RATIO_STEPS if 1 / t >= low),
                                                                     reverse=True)):
        last = 1.0
        for tick in side:
            if abs(math.log(tick / last)) >= gap:
                ticks.append(tick)
                last = tick
    return sorted(ticks)


# Value names on a sensitivity row: 7-point text, about this many points a character; the row's axis is about this
# many points wide (the 10.5-inch figure less the knob names at the left and the spreads at the right).
LABEL_CHAR_PT = 4.4
SENSITIVITY_AXIS_PT = 520.0


def label_sides(positions: Sequence[float], widths: Sequence[float]) -> dict[int, int]:
    """Which value names of a row to draw, and where: index -> +1 (above the dot) or -1 (below). `positions` and
    `widths` share one unit (fractions of the axis): a name goes where it overlaps no name drawn on that side, the
    smallest and largest values first (they say which end is which), then the others in order; one that fits
    neither side is left out (its dot stays)."""
    order = sorted(range(len(positions)), key=lambda i: positions[i])
    placed: dict[int, list[int]] = {1: [], -1: []}
    sides: dict[int, int] = {}
    for i in dict.fromkeys(order[:1] + order[-1:] + order[1:-1]):
        for side in ((1, -1) if len(placed[1]) <= len(placed[-1]) else (-1, 1)):
            if all(abs(positions[i] - positions[j]) >= (widths[i] + widths[j]) / 2 for j in placed[side]):
                placed[side].append(i)
                sides[i] = side
                break
    return sides


def sensitivity_figure(objective: str, effects: Sequence[Effect]) -> Figure:
    """One row per knob on one shared log axis: each value's median objective relative to the overall median,
    the knob's span as a bar and its spread (largest / smallest) at the right; knobs in the given order."""
    fig = Figure(figsize=(10.5, 1.3 + 0.62 * len(effects)), layout="constrained")
    ax = fig.subplots()
    ratios = np.array([r for e in effects for _, r in e.values if math.isfinite(r) and r > 0] or [1.0])
    low, high = min(ratios.min(), 1.0) / 1.25, max(ratios.max(), 1.0) * 1.25
    for row, effect in enumerate(effects):
        measured = [(label, r) for label, r in effect.values if math.isfinite(r) and r > 0]
        if not measured:
            continue
        values = [r for _, r in measured]
        ax.plot([min(values), max(values)], [row, row], color="#9ecae1", lw=7, solid_capstyle="round", zorder=1)
        ax.plot(values, [row] * len(values), ls="none", marker="o", ms=6, color="#1f77b4", zorder=2)
        names = [textwrap.shorten(label, 22, placeholder="…") for label, _ in measured]
        span = math.log(high / low)
        sides = label_sides([math.log(r / low) / span for r in values],
                            [(len(n) + 1) * LABEL_CHAR_PT / SENSITIVITY_AXIS_PT for n in names])
        for index, side in sides.items():  # value names above and below the dots, none over another
            ax.annotate(names[index], (values[index], row), xytext=(0, 7 * side), textcoords="offset points",
                        ha="center", va="bottom" if side > 0 else "top", fontsize=7)
        spread = effect.spread
        ax.annotate(f"{spread:.3g}×" if math.isfinite(spread) else "", (1.0, row), xycoords=("axes fraction", "data"),
                    xytext=(6, 0), textcoords="offset points", va="center", fontsize=8, fontweight="bold")
    ax.axvline(1.0, color="#444444", lw=1.0, ls="--", zorder=0)
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    ax.set_xticks(ratio_ticks(low, high), [_times(t) for t in ratio_ticks(low, high)])
    ax.minorticks_off()
    ax.set_ylim(len(effects) - 0.4, -0.6)
    ax.set_yticks(range(len(effects)), [metric_axis_label(e.knob) for e in effects], fontsize=8)
    ax.set_xlabel(f"median {metric_axis_label(objective)} at a knob value / median over all feasible points "
                  "(spread at the right)")
    ax.grid(True, axis="x", alpha=0.3)
    return fig


# ---- what-if speed-up ---------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class SpeedupLine:
    """One device's speed-up at each value of a what-if knob: the median over the other knobs and its range."""

    label: str
    x: np.ndarray
    median: np.ndarray
    low: np.ndarray
    high: np.ndarray


@dataclass(frozen=True, kw_only=True)
class SpeedupPanel:
    """One what-if knob against one metric's gain over the preset as shipped (> 1: better)."""

    knob: str
    title: str  # 'TPOT speed-up'
    lines: list[SpeedupLine]
    ticks: list[str] | None = None  # labels of categorical values at x = 0, 1, ...; None: numeric x
    shipped: float | None = None  # the knob's value in the preset as shipped (numeric x only)


def speedup_figure(rows: Sequence[Sequence[SpeedupPanel]]) -> Figure:
    """A row of panels per what-if knob, a column per metric: the gain over the shipped preset (1 = shipped)."""
    ncols = max(len(row) for row in rows)
    fig = Figure(figsize=(4.6 * ncols + 0.4, 3.5 * len(rows) + 0.9), layout="constrained")
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    colors = palette([line.label for row in rows for panel in row for line in panel.lines])
    for row_axes, row in zip(axes, rows, strict=True):
        for ax, panel in zip(row_axes, row, strict=False):
            for line in panel.lines:
                color = colors[line.label]
                ax.fill_between(line.x, line.low, line.high, color=color, alpha=0.15, lw=0)
                ax.plot(line.x, line.median, color=color, marker="o", lw=1.6)
            ax.axhline(1.0, color="#444444", lw=1.0, ls="--")
            if panel.shipped is not None and math.isfinite(panel.shipped):
                ax.axvline(panel.shipped, color="#444444", lw=1.0, ls=":")
            if panel.ticks is not None:
                ax.set_xticks(range(len(panel.ticks)), [textwrap.shorten(t, 16, placeholder="…")
                                                        for t in panel.ticks], fontsize=8, rotation=20, ha="right")
            ax.set_xlabel(metric_axis_label(panel.knob), fontsize=8)
            ax.set_ylabel(f"{panel.title} (×)", fontsize=8)
            ax.set_title(panel.title, fontsize=10)
            _widen_noise(ax)
            ax.yaxis.set_major_formatter(FuncFormatter(_times_within(ax)))
            ax.grid(True, alpha=0.3)
        for ax in row_axes[len(row):]:
            ax.set_visible(False)
    handles = [Line2D([], [], color=c, marker="o", label=k) for k, c in colors.items()]
    handles.append(Line2D([], [], color="#444444", ls="--", label="1× = the preset as shipped"))
    if any(panel.shipped is not None and math.isfinite(panel.shipped) for row in rows for panel in row):
        handles.append(Line2D([], [], color="#444444", ls=":", label="the shipped value of the knob"))
    handles.append(Line2D([], [], color="#999999", lw=6, alpha=0.3, label="band: min to max over the other knobs"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)), fontsize=8, frameon=False)
    return fig
