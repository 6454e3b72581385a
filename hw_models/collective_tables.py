"""Published collective timings (data/published/collectives/) scored against the link models, for `explore validate`.

A table has one row per timed call: `device` (a GPU preset, whose default link the calls ran over), `collective`,
`backend` (nccl: NCCL's collective; nvls: the multimem kernel through the NVSwitch), `devices`, `message_bytes`
(nccl-tests' convention: hw_models/link.py) and `time_s`. NCCL rows are priced by the link's NCCL fits, made on
other systems' measurements: their error is cross-source. NVLS all-reduce rows are priced by hw_models/nvls.py's fit,
made on this very table: its held-out rows and its fitted rows are reported apart. NVLS rows of other collectives have
no model and are left out, with a note.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from hw_models.link import default_link, held_out, load_link_model
from hw_models.nvls import load_nvls_fit, nvls_all_reduce_time_s
from hw_models.registry import load_device
from workloads.errors import InputError

COLUMNS = ("device", "collective", "backend", "devices", "message_bytes", "time_s")


def is_collective_table(path: str | Path) -> bool:
    """Whether a CSV's header is a collective table's."""
    with open(path, newline="") as f:
        header = next(csv.reader(f), [])
    return "collective" in header and "message_bytes" in header


def score_collectives(path: str | Path) -> tuple[dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], list[str]]:
    """{device: {group: (predicted_s, measured_s)}} for a collective table's rows, and notes on what was left out.
    A group names the collective, the backend and what priced it."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: columns {', '.join(missing)} missing; a collective table has "
                             f"{', '.join(COLUMNS)}")
        rows = list(reader)
    groups: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    notes = []
    for row in rows:
        device, kind, backend = row["device"], row["collective"], row["backend"]
        size, n, time_s = float(row["message_bytes"]), int(row["devices"]), float(row["time_s"])
        link = load_link_model(default_link(load_device(device).name))
        if backend == "nccl":
            group = f"{kind} nccl (fit: {link.fitted_on.get(kind, 'datasheet')})"
            predicted = link.collective_time_s(kind, size, n)
        elif backend == "nvls" and kind == "all_reduce" and (fit := load_nvls_fit()) is not None:
            part = "held out" if held_out(n, size) else "fitted"
            group = f"{kind} nvls ({part})"
            predicted = nvls_all_reduce_time_s(size, n, link.spec, fit.all_reduce)
        else:
            notes.append(f"{device}: {kind} over {backend}: no model of it, left out")
            continue
        groups[device][group].append((float(predicted), time_s))
    scored = {device: {group: tuple(np.array(side) for side in zip(*pairs, strict=True))
                       for group, pairs in sorted(by_group.items())} for device, by_group in groups.items()}
    return scored, list(dict.fromkeys(notes))
