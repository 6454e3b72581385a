"""Figures of the design report: pure functions from data to a matplotlib Figure (no pyplot, no global state)."""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from explore.rows import as_number, metric_axis_label

# One fixed color per kernel class, so every figure of a report agrees.
CLASS_COLORS = {
    "gemm": "#1f77b4", "attention": "#ff7f0e", "norm": "#2ca02c", "softmax": "#d62728",
    "elementwise": "#9467bd", "embedding": "#8c564b", "communication": "#17becf",
}
# Measured-table kinds beyond the kernel classes: pointwise kinds and whole decode steps.
VALIDATION_COLORS = {"activation": "#e377c2", "rope": "#bcbd22", "decode_step": "#000000"}
PHASE_MARKERS = {"prefill": "o", "decode": "^"}
LINE_STYLES = ("-", "--", ":", "-.")  # after the 10 colors of the cycle run out, lines change style
LOG_RANGE = 20.0  # a value axis whose max / min exceeds this is drawn on a log scale


@dataclass(frozen=True, kw_only=True)
class RooflinePanel:
    """One device's roofs and the kernels of one design point on it (one entry per kernel)."""

    title: str
    peak_tensor_flops: float  # FLOP/s of the 16-bit tensor dtype
    peak_vector_flops: float  # FLOP/s of the fp32 vector units
    bandwidth_Bps: float
    intensity: np.ndarray  # FLOP/byte
    achieved_flops: np.ndarray  # FLOP/s
    kernel_class: np.ndarray
    phase: np.ndarray  # "prefill" or "decode"


@dataclass(frozen=True, kw_only=True)
class BatchSeries:
    """TTFT and TPOT of one combination of the other knobs at several values of one knob (batch size, or the
    devices of a tensor-parallel system)."""

    label: str
    batch: np.ndarray  # the knob's values (x)
    ttft_s: np.ndarray
    tpot_s: np.ndarray


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def wide_range(values: np.ndarray) -> bool:
    """Whether positive values span more than LOG_RANGE (so a log axis reads better)."""
    positive = values[np.isfinite(values) & (values > 0)]
    return positive.size > 0 and positive.max() / positive.min() > LOG_RANGE


def _draw_roofline(ax: Axes, panel: RooflinePanel) -> None:
    """Roofs as lines and kernels as points on one log-log axes."""
    ridge = panel.peak_tensor_flops / panel.bandwidth_Bps
    low = min(float(np.min(panel.intensity, initial=ridge)), panel.peak_vector_flops / panel.bandwidth_Bps) / 4
    high = max(float(np.max(panel.intensity, initial=ridge)), ridge) * 4
    x = np.geomspace(low, high, 200)
    ax.plot(x, np.minimum(panel.peak_tensor_flops, x * panel.bandwidth_Bps), color="black", lw=1.5)
    ax.plot(x, np.minimum(panel.peak_vector_flops, x * panel.bandwidth_Bps), color="black", lw=1.0, ls="--")
    for kernel_class, color in CLASS_COLORS.items():
        for phase, marker in PHASE_MARKERS.items():
            keep = (panel.kernel_class == kernel_class) & (panel.phase == phase)
            if keep.any():
                ax.scatter(panel.intensity[keep], panel.achieved_flops[keep], s=22, c=color, marker=marker,
                           alpha=0.7, edgecolors="none")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(top=panel.peak_tensor_flops * 3)
    ax.set_title(textwrap.fill(panel.title, 60), fontsize=9)
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("achieved FLOP/s")
    ax.grid(True, which="major", alpha=0.3)


def _roofline_legend(classes: set[str]) -> list[Line2D]:
    """Proxy handles: the kernel classes shown by color, phases by marker, roofs by line style."""
    handles = [Line2D([], [], ls="", marker="s", color=c, label=k) for k, c in CLASS_COLORS.items() if k in classes]
    handles += [Line2D([], [], ls="", marker=m, color="gray", label=p) for p, m in PHASE_MARKERS.items()]
    handles += [Line2D([], [], color="black", lw=1.5, label="16-bit tensor roof"),
                Line2D([], [], color="black", lw=1.0, ls="--", label="fp32 vector roof")]
    return handles


def roofline_figure(panels: Sequence[RooflinePanel]) -> Figure:
    """One roofline panel per device, kernels colored by class, prefill and decode by marker."""
    ncols = min(len(panels), 2)
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(6.0 * ncols, 4.2 * nrows + 0.8), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, panel in zip(axes, panels, strict=False):
        _draw_roofline(ax, panel)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    classes = set().union(*(panel.kernel_class.tolist() for panel in panels))
    fig.legend(handles=_roofline_legend(classes), loc="outside lower center", ncols=5, fontsize=8, frameon=False)
    return fig


def breakdown_figure(labels: Sequence[str], times_s: Mapping[str, Sequence[float]]) -> Figure:
    """Stacked horizontal bars: one bar per design point, one segment per kernel class (seconds)."""
    fig = Figure(figsize=(10.0, 1.6 + 0.28 * len(labels)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(labels))
    left = np.zeros(len(labels))
    for kernel_class, values in times_s.items():
        width = np.nan_to_num(np.asarray(values, dtype=float))
        ax.barh(y, width, left=left, color=CLASS_COLORS.get(kernel_class), label=kernel_class, height=0.7)
        left += width
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("latency of one request (s)")
    ax.grid(True, axis="x", alpha=0.3)
    if times_s:
        fig.legend(loc="outside lower center", ncols=len(times_s), fontsize=8, frameon=False)
    return fig


def grouped_bars_figure(groups: Sequence[str], values: Mapping[str, Sequence[float]], *, height_in: float,
                        colors: Mapping[str, str] | None = None) -> tuple[Figure, Axes, np.ndarray, list]:
    """A figure of grouped bars: one group per entry of `groups`, one bar per series (NaN draws no bar).
    Returns the figure, its axes, the group positions and each series' bar container."""
    per_group = 0.6 + 0.4 * len(values)
    fig = Figure(figsize=(min(14.0, max(6.5, 2.0 + per_group * len(groups))), height_in), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(groups))
    width = 0.8 / max(len(values), 1)
    bars = [ax.bar(x + (i - (len(values) - 1) / 2) * width, np.asarray(series, dtype=float), width, label=name,
                   color=(colors or {}).get(name))
            for i, (name, series) in enumerate(values.items())]
    return fig, ax, x, bars


def energy_figure(groups: Sequence[str], energy_J: Mapping[str, Sequence[float]]) -> Figure:
    """Grouped bars: one group per device, one bar per model (joules per output token; NaN draws no bar)."""
    fig, ax, x, _ = grouped_bars_figure(groups, energy_J, height_in=4.4)
    ax.set_xticks(x, groups, rotation=20 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center")
    ax.set_ylabel("energy per output token (J)")
    if wide_range(np.concatenate([np.asarray(v, dtype=float) for v in energy_J.values()] or [np.zeros(0)])):
        ax.set_yscale("log")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return fig


def batch_figure(series: Sequence[BatchSeries], x_label: str = "batch size") -> Figure:
    """Two panels against batch size, or another knob (log x): TTFT and TPOT, one line per series."""
    fig = Figure(figsize=(11.0, 4.6 + 0.18 * math.ceil(len(series) / 2)), layout="constrained")
    ttft_ax, tpot_ax = fig.subplots(1, 2)
    batches = np.unique(np.concatenate([np.asarray(s.batch, dtype=float) for s in series] or [np.ones(1)]))
    for i, item in enumerate(series):
        style = {"color": f"C{i % 10}", "ls": LINE_STYLES[i // 10 % len(LINE_STYLES)], "marker": "o"}
        ttft_ax.plot(item.batch, item.ttft_s, label=item.label, **style)
        tpot_ax.plot(item.batch, item.tpot_s, **style)
    for ax, name, field in ((ttft_ax, "TTFT", "ttft_s"), (tpot_ax, "TPOT", "tpot_s")):
        ax.set_xscale("log")
        ax.set_xticks(batches, [str(int(b)) for b in batches])
        ax.minorticks_off()
        values = np.concatenate([np.asarray(getattr(s, field), dtype=float) for s in series] or [np.zeros(0)])
        if wide_range(values):
            ax.set_yscale("log")
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"{name} (s)")
        ax.set_title(name, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return fig


def validation_figure(device: str, predicted_s: np.ndarray, measured_s: np.ndarray, kinds: np.ndarray) -> Figure:
    """Left: predicted against measured kernel time (log-log, y = x dashed); right: error against measured time."""
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    scatter, residual = fig.subplots(1, 2)
    error = predicted_s / measured_s - 1.0
    for kind in sorted(set(kinds.tolist())):
        rows = kinds == kind
        color = VALIDATION_COLORS.get(kind) or CLASS_COLORS.get(kind.split("_")[0], "#7f7f7f")
        # Thousands of kernels as faint dots; a handful (whole decode steps, a small table) as visible marks.
        size, alpha = (3, 0.3) if rows.sum() > 200 else (24, 0.8)
        marker = "D" if kind == "decode_step" else "o"
        for ax, y in ((scatter, predicted_s[rows]), (residual, 100 * error[rows])):
            ax.scatter(measured_s[rows], y, s=size, alpha=alpha, color=color, marker=marker, lw=0,
                       label=kind if ax is scatter else None)
    low, high = min(measured_s.min(), predicted_s.min()), max(measured_s.max(), predicted_s.max())
    scatter.plot([low, high], [low, high], "k--", lw=1)
    scatter.set(xscale="log", yscale="log", xlabel="measured time (s)", ylabel="predicted time (s)",
                title=f"{device}: predicted vs measured (held-out rows)")
    residual.axhline(0, color="k", lw=1)
    for bound in (-25, 25):
        residual.axhline(bound, color="k", lw=0.6, ls=":")
    residual.set(xscale="log", xlabel="measured time (s)", ylabel="prediction error (%)",
                 ylim=(max(-100, np.percentile(100 * error, 0.5) - 5), min(300, np.percentile(100 * error, 99.5) + 5)),
                 title="error = predicted / measured - 1 (dotted: +-25%)")
    legend = scatter.legend(fontsize=8, loc="upper left")
    for handle in legend.legend_handles:  # legend marks at full size and opacity, however faint the dots
        handle.set_alpha(1.0)
        handle.set_sizes([24])
    for ax in (scatter, residual):
        ax.grid(True, which="major", alpha=0.3)
    return fig


# ---- objectives: Pareto fronts, rankings, sensitivity -------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class ChosenPoint:
    """A labeled point of a Pareto figure: its coordinates, its role ('best TPOT (s)', 'balanced') and its name."""

    x: float
    y: float
    role: str
    label: str


def _scale_axes(ax: Axes, x: np.ndarray, y: np.ndarray) -> None:
    if wide_range(x):
        ax.set_xscale("log")
    if wide_range(y):
        ax.set_yscale("log")


def pareto_figure(x_name: str, y_name: str, meeting: np.ndarray, violating: np.ndarray, front: np.ndarray,
                  x_minimized: bool, chosen: Sequence[ChosenPoint]) -> Figure:
    """Feasible points (grey), constraint violators (light x), the front (red, step line), chosen points labeled.

    `meeting`, `violating` and `front` are (n, 2) arrays of metric values (not signed); `front` sorted by x.
    """
    fig = Figure(figsize=(9.0, 5.4 + 0.2 * len(chosen)), layout="constrained")
    ax = fig.subplots()
    if len(violating):
        ax.scatter(violating[:, 0], violating[:, 1], s=24, marker="x", color="#c7c7c7", lw=1,
                   label="violates a constraint")
    ax.scatter(meeting[:, 0], meeting[:, 1], s=20, color="#8c8c8c", alpha=0.8, edgecolors="none",
               label="feasible, meets constraints")
    ax.step(front[:, 0], front[:, 1], where="post" if x_minimized else "pre", color="#d62728", lw=1.2, alpha=0.8)
    ax.scatter(front[:, 0], front[:, 1], s=46, color="#d62728", edgecolors="black", lw=0.6, zorder=3,
               label="Pareto-optimal")
    every = np.concatenate([meeting, violating]) if len(violating) else meeting
    _scale_axes(ax, every[:, 0], every[:, 1])
    for i, point in enumerate(chosen):
        ax.annotate(f"{chr(ord('A') + i)}: {point.role}", (point.x, point.y), xytext=(10, 10 + 12 * (i % 3)),
                    textcoords="offset points", fontsize=8, arrowprops={"arrowstyle": "-", "lw": 0.6},
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "#999", "alpha": 0.9}, zorder=4)
    ax.set_xlabel(metric_axis_label(x_name) + (" (lower is better)" if x_minimized else " (higher is better)"))
    ax.set_ylabel(metric_axis_label(y_name))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="best")
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
    array = np.asarray(values, dtype=float)
    ax.barh(y, array, color="#1f77b4", height=0.7)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(metric_axis_label(name) + (" (lower is better)" if minimized else " (higher is better)"))
    if wide_range(array):
        ax.set_xscale("log")
    ax.grid(True, axis="x", alpha=0.3)
    return fig




def sensitivity_figure(objective: str, panels: Mapping[str, Sequence[tuple[str, float]]]) -> Figure:
    """Small multiples: one panel per knob, its values (categorical) on x, the median objective on y."""
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.3 * nrows + 0.3), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (knob, points) in zip(axes, panels.items(), strict=False):
        labels = [textwrap.shorten(label, 18, placeholder="…") for label, _ in points]
        x = np.arange(len(points))
        numeric = all(not math.isnan(as_number(label)) for label, _ in points)  # join ordered values only, not names
        ax.plot(x, [v for _, v in points], marker="o", color="#1f77b4", ls="-" if numeric else "none")
        long = sum(len(label) for label in labels) > 28 or len(labels) > 6
        ax.set_xticks(x, labels, fontsize=8, rotation=30 if long else 0, ha="right" if long else "center")
        ax.set_xlim(-0.5, len(points) - 0.5)
        if wide_range(np.array([v for _, v in points], dtype=float)):
            ax.set_yscale("log")
        ax.set_title(metric_axis_label(knob), fontsize=9)
        ax.set_ylabel(f"median {metric_axis_label(objective)}", fontsize=8)
        ax.tick_params(axis="y", which="both", labelsize=8)
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return fig
