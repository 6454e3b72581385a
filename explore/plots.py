"""Figures of the design report: pure functions from data to a matplotlib Figure (no pyplot, no global state).

Values come in SI units and are drawn in the units the report's tables use (explore.rows.metric_scale: times in
ms, memory in GB).
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

# One fixed color per kernel class, so every figure of a report agrees.
CLASS_COLORS = {
    "gemm": "#1f77b4", "attention": "#ff7f0e", "norm": "#2ca02c", "softmax": "#d62728",
    "elementwise": "#9467bd", "embedding": "#8c564b", "communication": "#17becf", "host wait": "#c7c7c7",
}
# Measured-table kinds beyond the kernel classes: pointwise kinds and whole steps (drawn as diamonds).
VALIDATION_COLORS = {"activation": "#e377c2", "rope": "#bcbd22", "rope_part": "#bcbd22", "decode_step": "#000000",
                     "prefill_step": "#7f7f7f"}
PHASE_MARKERS = {"prefill": "o", "decode": "^"}
LINE_STYLES = ("-", "--", ":", "-.")  # after the 10 colors of the cycle run out, lines change style
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h", "<", ">", "p", "*")  # one per numeric format
LOG_RANGE = 20.0  # a value axis whose max / min exceeds this is drawn on a log scale
MS = 1e3  # seconds -> milliseconds, the unit every figure and table shows times in
# Parts of the energy breakdown: one color each.
ENERGY_COLORS = {"static": "#bdbdbd", "memory": "#ff7f0e", "compute": "#1f77b4"}
ROOF_STYLES = {16: "-", 8: "-.", 4: ":"}  # matrix roofs by operand width
ROOF_DECADES = 5.0  # a roofline shows at most this many decades of FLOP/s under its highest roof
CHOSEN_MARK = "★"  # labels of the chosen designs (best on an objective, balanced)
BROKEN_MARK = "✗"  # labels of feasible points that break a constraint


def palette(keys: Sequence[str]) -> dict[str, str]:
    """One color per distinct key, in order: the 10 of tab10 for up to 10 keys, else tab20's 20 (repeating)."""
    keys = list(dict.fromkeys(keys))
    colors = [f"C{i}" for i in range(10)] if len(keys) <= 10 else [
        "#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd",
        "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d",
        "#17becf", "#9edae5"]
    return {key: colors[i % len(colors)] for i, key in enumerate(keys)}


def shades(keys: Sequence[str]) -> dict[str, str]:
    """One shade of a sequential colormap (cividis) per distinct key, in order: colors that do not reuse the devices'
    palette, where a figure colors something else (the energy figure's formats)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    keys = list(dict.fromkeys(keys))
    cmap = colormaps["cividis"]
    return {key: to_hex(cmap(0.1 + 0.8 * i / max(len(keys) - 1, 1))) for i, key in enumerate(keys)}


def markers(keys: Sequence[str]) -> dict[str, str]:
    """One marker per key, in order (repeating beyond len(MARKERS))."""
    return {key: MARKERS[i % len(MARKERS)] for i, key in enumerate(dict.fromkeys(keys))}


def line_styles(keys: Sequence[str]) -> dict[str, tuple[str, str]]:
    """(line style, marker) per key, in order: formats tell apart by both."""
    return {key: (LINE_STYLES[i % len(LINE_STYLES)], MARKERS[i % len(MARKERS)])
            for i, key in enumerate(dict.fromkeys(keys))}


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def wide_range(values: np.ndarray) -> bool:
    """Whether positive values span more than LOG_RANGE (so a log axis reads better)."""
    positive = values[np.isfinite(values) & (values > 0)]
    return positive.size > 0 and positive.max() / positive.min() > LOG_RANGE


def _legend_columns(labels: Sequence[str], width: int = 130) -> int:
    """As many legend columns as fit the longest label in about `width` characters."""
    longest = max((len(label) for label in labels), default=1) + 6
    return max(1, min(5, width // longest))


# ---- roofline -----------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Roof:
    """A matrix-unit roof: the peak FLOP/s of the dtypes that run at one rate, and their operand width."""

    dtypes: tuple[str, ...]  # ("bf16", "fp4"): fp4 run weight-only at the bf16 rate
    flops: float
    bits: int

    @property
    def label(self) -> str:
        return _roof_label(self.bits, self.dtypes)


def _roof_label(bits: int, dtypes: Sequence[str]) -> str:
    """'16-bit (bf16, fp4)': a roof's width and the dtypes that run at it."""
    return f"{bits}-bit ({', '.join(dtypes)})"


@dataclass(frozen=True, kw_only=True)
class RooflinePanel:
    """One device's roofs and the kernels of one design point on it (one entry per distinct kernel)."""

    title: str
    roofs: tuple[Roof, ...]  # every matrix roof the sweep's formats run at, highest first
    peak_vector_flops: float  # FLOP/s of the fp32 vector units
    bandwidth_Bps: float
    intensity: np.ndarray  # FLOP/byte
    achieved_flops: np.ndarray  # FLOP/s
    kernel_class: np.ndarray
    phase: np.ndarray  # "prefill" or "decode"
    time_share: np.ndarray  # share of its pass's time (prefill, or one decode step) over its repeats

    @property
    def ranges(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """(x range, y range): the kernels and every ridge on x; at most ROOF_DECADES under the top roof on y."""
        top = max([r.flops for r in self.roofs] + [self.peak_vector_flops])
        ridges = [r.flops / self.bandwidth_Bps for r in self.roofs]
        low_x = min([float(np.min(self.intensity, initial=math.inf))] + ridges) / 3
        high_x = max([float(np.max(self.intensity, initial=0.0))] + ridges) * 3
        floor = max(float(np.min(self.achieved_flops, initial=math.inf)) / 2, top / 10 ** ROOF_DECADES)
        return (low_x, high_x), (floor, top * 3)


def _draw_roofline(ax: Axes, panel: RooflinePanel) -> None:
    """Roofs as lines with their ridge points, kernels as points sized by their share of time, on log-log axes."""
    (low_x, high_x), (floor, top) = panel.ranges
    x = np.geomspace(low_x, high_x, 200)
    bandwidth = panel.bandwidth_Bps
    ax.plot(x, np.minimum(panel.peak_vector_flops, x * bandwidth), color="#777777", lw=1.0, ls="--")
    for roof in panel.roofs:
        ax.plot(x, np.minimum(roof.flops, x * bandwidth), color="black", lw=1.4, ls=ROOF_STYLES.get(roof.bits, "-"))
        ridge = roof.flops / bandwidth
        ax.plot([ridge], [roof.flops], marker="o", ms=5, color="black", mfc="white", zorder=4)
        ax.annotate(f"ridge {ridge:.3g}", (ridge, roof.flops), xytext=(4, -10), textcoords="offset points",
                    fontsize=7)
    below = panel.achieved_flops < floor
    y = np.where(below, floor * 1.25, panel.achieved_flops)
    size = 10 + 600 * np.clip(panel.time_share, 0, 1)
    for kernel_class, color in CLASS_COLORS.items():
        for phase, marker in PHASE_MARKERS.items():
            for clipped in (False, True):
                keep = (panel.kernel_class == kernel_class) & (panel.phase == phase) & (below == clipped)
                if keep.any():
                    ax.scatter(panel.intensity[keep], y[keep], s=size[keep], c=color, alpha=0.6, zorder=3,
                               marker="v" if clipped else marker, edgecolors="black", linewidths=0.3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low_x, high_x)
    ax.set_ylim(floor, top)
    ax.minorticks_off()
    ax.set_title(textwrap.fill(panel.title, 60), fontsize=9)
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("achieved FLOP/s")
    ax.grid(True, which="major", alpha=0.3)


def _roofline_legend(panels: Sequence[RooflinePanel]) -> list[Line2D]:
    """Proxy handles: kernel classes by color, phases by marker, roofs by line style, size by time share."""
    classes = set().union(*(panel.kernel_class.tolist() for panel in panels))
    handles = [Line2D([], [], ls="", marker="s", color=c, label=k) for k, c in CLASS_COLORS.items() if k in classes]
    handles += [Line2D([], [], ls="", marker=m, color="gray", label=p) for p, m in PHASE_MARKERS.items()]
    # One entry per line style (a width), naming every dtype drawn in it on any panel: an fp16 model's 16-bit roof
    # and a bf16 model's are one line.
    roofs: dict[int, list[str]] = {}
    for roof in (roof for panel in panels for roof in panel.roofs):
        roofs.setdefault(roof.bits, []).extend(roof.dtypes)
    handles += [Line2D([], [], color="black", lw=1.4, ls=ROOF_STYLES.get(bits, "-"),
                       label=f"{_roof_label(bits, list(dict.fromkeys(dtypes)))} roof")
                for bits, dtypes in roofs.items()]
    handles += [Line2D([], [], color="#777777", lw=1.0, ls="--", label="fp32 vector roof"),
                Line2D([], [], ls="", marker="o", color="black", mfc="white", label="ridge point (FLOP/byte)"),
                Line2D([], [], ls="", marker="o", color="gray", ms=12, alpha=0.6, label="size: share of time")]
    if any(np.any(p.achieved_flops < p.ranges[1][0]) for p in panels):
        handles.append(Line2D([], [], ls="", marker="v", color="gray", label="slower: drawn at the axis floor"))
    return handles


def roofline_figure(panels: Sequence[RooflinePanel]) -> Figure:
    """One roofline panel per design point, kernels colored by class, prefill and decode by marker."""
    ncols = min(len(panels), 2)
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(6.0 * ncols, 4.2 * nrows + (1.0 if ncols > 1 else 1.6)), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, panel in zip(axes, panels, strict=False):
        _draw_roofline(ax, panel)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.legend(handles=_roofline_legend(panels), loc="outside lower center", ncols=5 if ncols > 1 else 3, fontsize=8,
               frameon=False)
    return fig


# ---- breakdowns and bars ------------------------------------------------------------------------------------

def _stacked_bars(ax: Axes, labels: Sequence[str], parts: Mapping[str, Sequence[float]],
                  colors: Mapping[str, str]) -> None:
    """Horizontal stacked bars, one per label, one segment per part (NaN draws nothing)."""
    y = np.arange(len(labels))
    left = np.zeros(len(labels))
    for name, values in parts.items():
        width = np.nan_to_num(np.asarray(values, dtype=float))
        ax.barh(y, width, left=left, color=colors.get(name), label=name, height=0.7)
        left += width
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.grid(True, axis="x", alpha=0.3)


# Widest bar label in characters: longer design-point labels (what-if values) wrap onto more lines, so the
# labels never take the whole figure width (the axes would collapse).
BAR_LABEL_CHARS = 60


def _bar_labels(labels: Sequence[str]) -> tuple[list[str], int]:
    """Labels wrapped at BAR_LABEL_CHARS, and the lines they take in all."""
    wrapped = [textwrap.fill(label, BAR_LABEL_CHARS) for label in labels]
    return wrapped, sum(label.count("\n") + 1 for label in wrapped)


def breakdown_figure(labels: Sequence[str], times_s: Mapping[str, Sequence[float]]) -> Figure:
    """Stacked horizontal bars: one bar per design point, one segment per kernel class (drawn in ms)."""
    labels, lines = _bar_labels(labels)
    fig = Figure(figsize=(10.0, 1.6 + 0.28 * lines), layout="constrained")
    ax = fig.subplots()
    _stacked_bars(ax, labels, {c: MS * np.asarray(v, dtype=float) for c, v in times_s.items()}, CLASS_COLORS)
    ax.set_xlabel("latency of one request: prefill and every decode step (ms)")
    if times_s:
        fig.legend(loc="outside lower center", ncols=len(times_s), fontsize=8, frameon=False)
    return fig


def energy_breakdown_figure(labels: Sequence[str], parts_J: Mapping[str, Sequence[float]]) -> Figure:
    """Stacked horizontal bars: energy per output token of each design point split into static, memory and
    compute energy (J/token)."""
    labels, lines = _bar_labels(labels)
    fig = Figure(figsize=(10.0, 1.6 + 0.28 * lines), layout="constrained")
    ax = fig.subplots()
    _stacked_bars(ax, labels, parts_J, ENERGY_COLORS)
    ax.set_xlabel("energy per output token (J/token)")
    fig.legend(loc="outside lower center", ncols=len(parts_J), fontsize=8, frameon=False)
    return fig


def grouped_bars_figure(groups: Sequence[str], values: Mapping[str, Sequence[float]], *, height_in: float,
                        colors: Mapping[str, str] | None = None) -> tuple[Figure, Axes, np.ndarray, list]:
    """A figure of grouped bars: one group per entry of `groups`, one bar per series (NaN draws no bar).
    Returns the figure, its axes, the group positions and each series' bar container."""
    per_group = 0.6 + 0.4 * len(values)
    fig = Figure(figsize=(min(14.0, max(6.5, 2.0 + per_group * len(groups))), height_in), layout="constrained")
    ax = fig.subplots()
    x, bars = _grouped_bars(ax, groups, values, colors)
    return fig, ax, x, bars


def _grouped_bars(ax: Axes, groups: Sequence[str], values: Mapping[str, Sequence[float]],
                  colors: Mapping[str, str] | None) -> tuple[np.ndarray, list]:
    x = np.arange(len(groups))
    width = 0.8 / max(len(values), 1)
    bars = [ax.bar(x + (i - (len(values) - 1) / 2) * width, np.asarray(series, dtype=float), width, label=name,
                   color=(colors or {}).get(name))
            for i, (name, series) in enumerate(values.items())]
    return x, bars


@dataclass(frozen=True, kw_only=True)
class EnergyPanel:
    """Energy per token of one model: one group per device, one bar per format, a note on each bar (its batch)."""

    title: str
    devices: list[str]
    energy_J: dict[str, list[float]]  # format -> one value per device (NaN: no point)
    notes: dict[str, list[str]] = field(default_factory=dict)  # format -> one label per device


def energy_figure(panels: Sequence[EnergyPanel]) -> Figure:
    """Grouped bars per model (one panel each, shared y): devices as groups, formats as bars (J/token)."""
    formats = list(dict.fromkeys(f for panel in panels for f in panel.energy_J))
    colors = shades(formats)  # the device palette colors devices in every other figure
    groups = max(len(panel.devices) for panel in panels)
    width = min(14.0, max(6.5, 2.0 + (0.6 + 0.4 * len(formats)) * groups))
    fig = Figure(figsize=(width, 3.6 * len(panels) + 0.9), layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False, sharey=True).ravel()
    values = np.concatenate([np.asarray(v, dtype=float) for p in panels for v in p.energy_J.values()])
    for ax, panel in zip(axes, panels, strict=True):
        x, bars = _grouped_bars(ax, panel.devices, {f: panel.energy_J[f] for f in panel.energy_J}, colors)
        for container, name in zip(bars, panel.energy_J, strict=True):
            if panel.notes.get(name):
                ax.bar_label(container, labels=panel.notes[name], fontsize=7, padding=1)
        rotate = len(panel.devices) > 4
        ax.set_xticks(x, panel.devices, rotation=20 if rotate else 0, ha="right" if rotate else "center")
        ax.set_ylabel("energy per output token (J/token)", fontsize=8)
        ax.set_title(panel.title, fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
        if wide_range(values):
            ax.set_yscale("log")
        ax.margins(y=0.1)  # room for the notes above the bars
    handles = [Patch(color=colors[f], label=f) for f in formats]
    fig.legend(handles=handles, loc="outside lower center", ncols=_legend_columns(formats), fontsize=8,
               frameon=False, title="format", title_fontsize=8)
    return fig


# ---- latency against batch (or devices) ---------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class BatchSeries:
    """TTFT and TPOT of one combination of the other knobs at several values of one knob (batch size, or the
    devices of a tensor-parallel system). Color tells `color_key` (the hardware) apart, line style and marker
    `style_key` (the format); `chosen` marks points that are chosen designs, `broken` those that break a
    constraint (drawn hollow)."""

    label: str
    batch: np.ndarray  # the knob's values (x)
    ttft_s: np.ndarray
    tpot_s: np.ndarray
    color_key: str = ""
    style_key: str = ""
    chosen: np.ndarray | None = None
    broken: np.ndarray | None = None


@dataclass(frozen=True, kw_only=True)
class BatchPanel:
    """The lines of one model (a row of the figure)."""

    title: str
    series: list[BatchSeries]


def _series_styles(series: Sequence[BatchSeries]) -> tuple[dict[str, dict], list[Line2D]]:
    """Line styles per series label and the legend: color by hardware and line style by format when there are
    few enough of each, else a color (and after 10, a line style) per series."""
    colors = palette([s.color_key for s in series])
    styles = line_styles([s.style_key for s in series])
    if len(colors) <= 20 and len(styles) <= len(MARKERS):
        by_label = {s.label: {"color": colors[s.color_key], "ls": styles[s.style_key][0],
                              "marker": styles[s.style_key][1]} for s in series}
        handles = [Line2D([], [], color=c, lw=2, label=k) for k, c in colors.items()]
        handles += [Line2D([], [], color="black", ls=ls, marker=m, label=k) for k, (ls, m) in styles.items()]
        return by_label, handles
    by_label = {s.label: {"color": f"C{i % 10}", "ls": LINE_STYLES[i // 10 % len(LINE_STYLES)], "marker": "o"}
                for i, s in enumerate(series)}
    return by_label, [Line2D([], [], label=s.label, **by_label[s.label]) for s in series]


def _draw_series(ax: Axes, item: BatchSeries, values: np.ndarray, style: dict) -> None:
    """One line, hollow markers where a point breaks a constraint, a star on a chosen design."""
    ax.plot(item.batch, values, color=style["color"], ls=style["ls"], lw=2.4 if _any(item.chosen) else 1.3)
    broken = item.broken if item.broken is not None else np.zeros(len(values), dtype=bool)
    for keep, face in ((~broken, style["color"]), (broken, "white")):
        if keep.any():
            ax.plot(item.batch[keep], values[keep], ls="none", marker=style["marker"], ms=5.5, color=style["color"],
                    mfc=face)
    if _any(item.chosen):
        ax.plot(item.batch[item.chosen], values[item.chosen], ls="none", marker="*", ms=15, color=style["color"],
                mec="black", mew=0.8, zorder=4)


def _any(mask: np.ndarray | None) -> bool:
    return mask is not None and bool(np.any(mask))


def batch_figure(panels: Sequence[BatchPanel], x_label: str = "batch size") -> Figure:
    """A row per panel (model), two columns against batch size or another knob (log x): TTFT and TPOT in ms."""
    every = [s for panel in panels for s in panel.series]
    styles, handles = _series_styles(every)
    if any(_any(s.chosen) for s in every):
        handles.append(Line2D([], [], ls="none", marker="*", ms=12, color="gray", mec="black",
                              label="chosen design (thick line)"))
    if any(_any(s.broken) for s in every):
        handles.append(Line2D([], [], ls="none", marker="o", color="gray", mfc="white",
                              label="hollow: breaks a constraint"))
    legend_rows = math.ceil(len(handles) / _legend_columns([h.get_label() for h in handles]))
    fig = Figure(figsize=(11.0, 3.9 * len(panels) + 0.6 + 0.2 * legend_rows), layout="constrained")
    axes = fig.subplots(len(panels), 2, squeeze=False)
    batches = np.unique(np.concatenate([np.asarray(s.batch, dtype=float) for s in every] or [np.ones(1)]))
    for (ttft_ax, tpot_ax), panel in zip(axes, panels, strict=True):
        for ax, name, field_name in ((ttft_ax, "TTFT", "ttft_s"), (tpot_ax, "TPOT", "tpot_s")):
            values = [MS * np.asarray(getattr(s, field_name), dtype=float) for s in panel.series]
            for item, y in zip(panel.series, values, strict=True):
                _draw_series(ax, item, y, styles[item.label])
            ax.set_xscale("log")
            ax.set_xticks(batches, [f"{b:g}" for b in batches])
            ax.minorticks_off()
            if wide_range(np.concatenate(values or [np.zeros(0)])):
                ax.set_yscale("log")
            ax.set_xlabel(x_label)
            ax.set_ylabel(f"{name} (ms)")
            ax.set_title(f"{panel.title}: {name}" if panel.title else name, fontsize=10)
            ax.grid(True, which="major", alpha=0.3)
    fig.legend(handles=handles, loc="outside lower center", ncols=_legend_columns([h.get_label() for h in handles]),
               fontsize=8, frameon=False)
    return fig


def validation_figure(device: str, predicted_s: np.ndarray, measured_s: np.ndarray, kinds: np.ndarray,
                      scored: str = "held-out rows") -> Figure:
    """Left: predicted against measured kernel time (log-log, y = x dashed); right: error against measured time.
    `scored`: which rows they are, for the title."""
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    scatter, residual = fig.subplots(1, 2)
    error = predicted_s / measured_s - 1.0
    groups = sorted(set(kinds.tolist()))
    others = palette(groups)  # groups of no kernel class (collectives), each its own color
    for kind in groups:
        rows = kinds == kind
        kernel = kind.split()[0]  # 'decode_step graph': the kernel, then its group's qualifier
        color = VALIDATION_COLORS.get(kernel) or CLASS_COLORS.get(kind.split("_")[0]) or others[kind]
        # Thousands of kernels as faint dots; a handful (whole decode steps, a small table) as visible marks.
        size, alpha = (3, 0.3) if rows.sum() > 200 else (24, 0.8)
        marker = "D" if kernel in ("decode_step", "prefill_step") else "o"
        for ax, y in ((scatter, predicted_s[rows]), (residual, 100 * error[rows])):
            ax.scatter(measured_s[rows], y, s=size, alpha=alpha, color=color, marker=marker, lw=0,
                       label=kind if ax is scatter else None)
    low, high = min(measured_s.min(), predicted_s.min()), max(measured_s.max(), predicted_s.max())
    scatter.plot([low, high], [low, high], "k--", lw=1)
    scatter.set(xscale="log", yscale="log", xlabel="measured time (s)", ylabel="predicted time (s)",
                title=f"{device}: predicted vs measured ({scored})")
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
