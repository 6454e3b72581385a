"""The format section of the design report: what fewer weight bits buy on each device (time and energy per output
token against weight bits) and what they cost in published quality (quality_delta), when a sweep varies the
weight bits. Reads stored results only."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from explore.plots import figure_png
from explore.plots_formats import FormatPanel, FormatSeries, formats_figure
from explore.report import ReportFigure
from explore.report_static import FIGURE_TITLES
from explore.rows import as_number, count_label, device_label, format_label

HOW_TO_READ = ("Compression grows to the right. In a memory-bound decode each halving of the weight bits should cut "
               "TPOT by close to the share of weight bytes in the traffic; a flat line means the device spends what "
               "the bytes save on dequantization, or the format runs at its 16-bit rate. Hollow marks break a "
               "constraint.")


def _sparsity(row: dict[str, Any]) -> str:
    return row.get("sparsity") or "dense"


def _quality_words(rows: list[dict[str, Any]]) -> str:
    """'w16a16kv16 0, w4a16kv16 +0.13, w4a16kv16-2:4 n/a': the published quality_delta of each format drawn."""
    deltas = {format_label(row): as_number(row.get("quality_delta")) for row in rows}
    return ", ".join(f"{label} {'n/a' if not math.isfinite(d) else f'{d:+.3g}' if d else '0'}"
                     for label, d in deltas.items())


def format_panels(feasible: list[dict[str, Any]], broken) -> tuple[list[FormatPanel], str]:
    """Per model, at its smallest batch: one line per device and sparsity pattern, one mark per weight width (the
    point with the lowest TPOT where other knobs vary too). Returns the panels and what they show."""
    panels, parts, quality = [], [], []
    for model in dict.fromkeys(row["model"] for row in feasible):
        of_model = [row for row in feasible if row["model"] == model]
        batch = min(row["batch"] for row in of_model)
        best: dict[tuple[str, str, int], dict[str, Any]] = {}
        for row in of_model:
            key = (device_label(row), _sparsity(row), int(row["weight_bits"]))
            if row["batch"] == batch and (key not in best or row["tpot_s"] < best[key]["tpot_s"]):
                best[key] = row
        series = []
        for device, sparsity in dict.fromkeys(key[:2] for key in best):
            members = sorted((row for (d, s, _), row in best.items() if (d, s) == (device, sparsity)),
                             key=lambda row: -row["weight_bits"])
            series.append(FormatSeries(
                label=f"{device} / {sparsity}", color_key=device, style_key=sparsity,
                weight_bits=np.array([row["weight_bits"] for row in members], dtype=float),
                tpot_s=np.array([row["tpot_s"] for row in members], dtype=float),
                energy_J=np.array([row["energy_per_token_J"] for row in members], dtype=float),
                broken=np.array([bool(broken(row)) for row in members], dtype=bool)))
        panels.append(FormatPanel(title=f"{model}, batch {batch}", series=series))
        parts.append(f"{model} at batch {batch}: {count_label(len(series), 'line')}")
        quality.append(f"{model}: {_quality_words(list(best.values()))}")
    sparse = len({_sparsity(row) for row in feasible}) > 1
    lines = ("one line per device and sparsity pattern (color: device, line style: sparsity)" if sparse else
             "one line per device (color)")
    caption = (f"Feasible points at each model's smallest batch; {lines}, one mark per weight width, the point with "
               f"the lowest TPOT where "
               f"activation or KV bits, lengths or overrides vary too. Drawn: {'; '.join(parts)}. Published quality "
               f"loss of the formats drawn (quality_delta, WikiText-2 perplexity increase; n/a: no published "
               f"figure): {'; '.join(quality)}.")
    return panels, caption


def formats_section(feasible: list[dict[str, Any]], broken) -> list[ReportFigure]:
    """The format figure when the feasible points span more than one weight width (else none)."""
    if len({row.get("weight_bits") for row in feasible}) < 2:
        return []
    panels, caption = format_panels(feasible, broken)
    return [ReportFigure(name="formats", title=FIGURE_TITLES["formats"], caption=f"{caption} {HOW_TO_READ}",
                         png=figure_png(formats_figure(panels)))]
