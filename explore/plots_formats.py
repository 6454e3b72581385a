"""The format figure of the design report: time per output token and energy per output token against weight bits,
one line per device (and sparsity pattern), one row per model. A pure function from data to a matplotlib Figure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from explore.plots import MS, _legend_columns, line_styles, palette, wide_range


@dataclass(frozen=True, kw_only=True)
class FormatSeries:
    """TPOT and energy per token of one device (`color_key`) and weight layout (`style_key`: the sparsity
    pattern) at several weight widths; `broken` marks points that break a constraint (drawn hollow)."""

    label: str
    color_key: str
    style_key: str
    weight_bits: np.ndarray
    tpot_s: np.ndarray
    energy_J: np.ndarray
    broken: np.ndarray


@dataclass(frozen=True, kw_only=True)
class FormatPanel:
    """The lines of one model (a row of the figure)."""

    title: str
    series: list[FormatSeries]


def formats_figure(panels: Sequence[FormatPanel]) -> Figure:
    """A row per panel (model), two columns against weight bits (fewest bits on the right, as compression grows):
    TPOT in ms and energy per output token in J."""
    every = [s for panel in panels for s in panel.series]
    colors = palette([s.color_key for s in every])
    styles = line_styles([s.style_key for s in every])
    handles = [Line2D([], [], color=c, lw=2, label=k) for k, c in colors.items()]
    if len(styles) > 1:
        handles += [Line2D([], [], color="black", ls=ls, marker=m, label=k) for k, (ls, m) in styles.items()]
    if any(s.broken.any() for s in every):
        handles.append(Line2D([], [], ls="none", marker="o", color="gray", mfc="white",
                              label="hollow: breaks a constraint"))
    columns = _legend_columns([h.get_label() for h in handles])
    fig = Figure(figsize=(11.0, 3.6 * len(panels) + 0.6 + 0.2 * math.ceil(len(handles) / columns)),
                 layout="constrained")
    axes = fig.subplots(len(panels), 2, squeeze=False)
    bits = np.unique(np.concatenate([s.weight_bits for s in every] or [np.array([16.0])]))
    for (tpot_ax, energy_ax), panel in zip(axes, panels, strict=True):
        for ax, name, unit, scale, attribute in ((tpot_ax, "TPOT", "ms", MS, "tpot_s"),
                                                  (energy_ax, "energy per output token", "J", 1.0, "energy_J")):
            drawn = []
            for item in panel.series:
                values = scale * np.asarray(getattr(item, attribute), dtype=float)
                drawn.append(values)
                ls, marker = styles[item.style_key]
                color = colors[item.color_key]
                ax.plot(item.weight_bits, values, color=color, ls=ls, lw=1.4)
                for keep, face in ((~item.broken, color), (item.broken, "white")):
                    if keep.any():
                        ax.plot(item.weight_bits[keep], values[keep], ls="none", marker=marker, ms=6, color=color,
                                mfc=face)
            ax.set_xticks(bits, [f"{b:g}" for b in bits])
            ax.invert_xaxis()
            if wide_range(np.concatenate(drawn or [np.zeros(0)])):
                ax.set_yscale("log")
            ax.set_xlabel("weight bits")
            ax.set_ylabel(f"{name} ({unit})")
            ax.set_title(f"{panel.title}: {name}" if panel.title else name, fontsize=10)
            ax.grid(True, alpha=0.3)
    fig.legend(handles=handles, loc="outside lower center", ncols=columns, fontsize=8, frameon=False)
    return fig
