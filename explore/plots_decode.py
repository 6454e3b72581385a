"""The decode-time figure: time and energy per output token against the KV budget (plain decoding) and against the
acceptance rate (speculative decoding), one line per device and KV policy or draft."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from explore.plots import MS, palette

MARKER_SIZE = 4
LEGEND_ROW_IN = 0.14  # inches a legend row of 7-point text takes


@dataclass(frozen=True)
class DecodeSeries:
    """One line: its label, the key that colors it (the device) and (x, TPOT, energy per token) per point."""

    label: str
    color_key: str
    x: np.ndarray
    tpot_s: np.ndarray
    energy_J: np.ndarray


def decode_figure(by_budget: Sequence[DecodeSeries], by_acceptance: Sequence[DecodeSeries]) -> Figure:
    """Two columns (against the KV budget, against the acceptance rate), two rows (TPOT, energy per token)."""
    columns = [(series, x_label) for series, x_label in ((by_budget, "KV budget (tokens a windowed head keeps)"),
                                                         (by_acceptance, "acceptance rate")) if series]
    lines = max(len(series) for series, _ in columns)  # legend rows below the panels, which keep their height
    fig = Figure(figsize=(6.0 * len(columns), 7.0 + LEGEND_ROW_IN * lines), layout="constrained")
    axes = fig.subplots(2, len(columns), squeeze=False)
    colors = palette([s.color_key for column, _ in columns for s in column])
    styles = ["-", "--", ":", "-."]
    for c, (series, x_label) in enumerate(columns):
        for i, item in enumerate(series):
            for row, values, y_label in ((0, item.tpot_s * MS, "TPOT (ms)"),
                                         (1, item.energy_J, "energy per output token (J)")):
                ax = axes[row][c]
                ax.plot(item.x, values, linestyle=styles[i % len(styles)], marker="o", ms=MARKER_SIZE,
                        color=colors[item.color_key], label=item.label)
                ax.set_xlabel(x_label)
                ax.set_ylabel(y_label)
                ax.grid(alpha=0.3)
        if c == 0 and x_label.startswith("KV"):
            for row in range(2):
                axes[row][c].set_xscale("log", base=2)
    # One legend below the panels (inside them it hid points where many lines run): each column's lines once.
    handles = [h for c in range(len(columns)) for h in axes[0][c].get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(columns), fontsize=7, frameon=False)
    return fig
