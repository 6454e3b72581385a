"""Fit a GPU preset's efficiency models on measured kernels, score predictions, and store calibrations.

Fits minimize the squared log ratio of predicted to measured kernel time (so a 10% miss on a 5 us
kernel weighs as much as on a 5 ms one) with bounded least squares. Rows are split by their `source`
(for the Vidur data, one model each; for aiconfigurator's, one weight shape or attention head
configuration each), so held-out rows come from groups the fit never saw.

A row is compared as its source timed it (MeasuredKernel.timing): the model's device time, plus the host
launch where the timing includes one. Device time and the launch gap are separate terms: the fit's
latencies are device-side; launch costs come from the preset's overhead figures.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import math
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import numpy as np
import yaml
from scipy.optimize import least_squares

from hw_models.gpu import GPUModel
from hw_models.gpu_efficiency import AttentionFit, Calibration, GemmFit, StreamFit
from kernels.measured import MeasuredKernel
from kernels.table import KernelTable
from workloads.errors import InputError

STREAM_FIT_CLASSES = ("norm", "elementwise", "activation", "rope", "embedding")
GEMM_KINDS = ("gemm", "batched_gemm")
LOW_PRECISION_DTYPES = ("fp8", "fp4")
ATTENTION_KINDS = ("attention_prefill", "attention_decode")
CALIBRATION_FOLDER = "calibration"


def train_sources(sources: set[str], train_fraction: float) -> list[str]:
    """A deterministic share of the sources for fitting: the first by SHA-256 of their names."""
    ranked = sorted(sources, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    count = min(len(ranked), max(1, math.ceil(train_fraction * len(ranked))))
    return sorted(ranked[:count])


def _table(rows: list[MeasuredKernel]) -> tuple[KernelTable, np.ndarray]:
    return KernelTable.from_kernels([r.to_kernel() for r in rows]), np.array([r.time_s for r in rows])


def gemm_key(row: MeasuredKernel) -> str:
    """The GEMM fit a row belongs to: its dtype, or 'dtype/variant' for a scaling variant fitted apart; 16-bit
    (and weight-quantized 'wXaY' rows, which compute at 16 bits) share the default fit, key ''."""
    if row.dtype not in LOW_PRECISION_DTYPES:
        return ""
    return row.dtype if row.variant in ("", "tensor") else f"{row.dtype}/{row.variant}"


def as_timed(device: GPUModel, device_s: np.ndarray, timings: np.ndarray) -> np.ndarray:
    """Device times read as each row's source timed them (see kernels.measured.TIMINGS)."""
    launch, node = device.host_s("eager"), device.host_s("graphs")
    return np.select([timings == "isolated", timings == "eager", timings == "graph"],
                     [device_s + launch, np.maximum(device_s, launch), np.maximum(device_s, node)], device_s)


def predict(device: GPUModel, rows: list[MeasuredKernel]) -> np.ndarray:
    """Predicted times of measured kernel rows, as their sources timed them (a GEMM variant fitted apart is
    priced with its own fit)."""
    predicted = np.empty(len(rows))
    keys = np.array([gemm_key(r) if r.kernel in GEMM_KINDS else "" for r in rows], dtype=object)
    for key in dict.fromkeys(keys.tolist()):
        index = np.flatnonzero(keys == key)
        model = device
        if "/" in key and device.calibration is not None:
            model = GPUModel(device.spec, device.reference, device.calibration.with_variant(key))
        table, _ = _table([rows[i] for i in index])
        predicted[index] = model.cost_table(table, execution="device").time_s
    return as_timed(device, predicted, np.array([r.timing for r in rows]))


def _fit(base: GPUModel, rows: list[MeasuredKernel], make, to_calibration, x0, lower, upper):
    """make(x) of the parameters x that minimize the squared log error of the model priced with
    to_calibration(make(x)) on the rows (bounded least squares)."""
    table, measured = _table(rows)
    timings = np.array([r.timing for r in rows])

    def residual(x):
        model = GPUModel(base.spec, base.reference, Calibration(device=base.name, **to_calibration(make(x))))
        return np.log(as_timed(model, model.cost_table(table, execution="device").time_s, timings) / measured)

    x = least_squares(residual, x0=x0, bounds=(lower, upper), x_scale="jac").x
    return make([float(v) for v in x])


def fit_gemm(base: GPUModel, rows: list[MeasuredKernel]) -> GemmFit:
    """One GEMM fit on rows of one dtype (the rows' dtype picks the peak rate)."""
    def make(x):
        return GemmFit(compute_fraction=x[0], bandwidth_fraction=x[1], latency_s=x[2] * 1e-6, blend=x[3],
                       padding_share=x[4])
    return _fit(base, rows, make, lambda fit: {"gemm": fit}, [0.8, 0.8, 5.0, 4.0, 0.5],
                [0.05, 0.05, 0.0, 1.0, 0.0], [1.0, 1.0, 1000.0, 50.0, 1.0])


def fit_stream(base: GPUModel, kernel_class: str, rows: list[MeasuredKernel]) -> StreamFit:
    def make(x):
        return StreamFit(bandwidth_fraction=x[0], latency_s=x[1] * 1e-6)
    return _fit(base, rows, make, lambda fit: {"streams": {kernel_class: fit}}, [0.7, 3.0], [0.01, 0.0],
                [1.0, 1000.0])


def fit_attention(base: GPUModel, rows: list[MeasuredKernel]) -> AttentionFit:
    def make(x):
        return AttentionFit(compute_fraction=x[0], bandwidth_fraction=x[1], latency_s=x[2] * 1e-6)
    return _fit(base, rows, make, lambda fit: {"attention": fit}, [0.6, 0.7, 5.0], [0.01, 0.01, 0.0],
                [1.0, 1.0, 1000.0])


def fit_calibration(base: GPUModel, rows: list[MeasuredKernel], *, table_path: str | list[str],
                    train_fraction: float, command: str) -> Calibration:
    """Fit every kernel class that has measurements on this device, on the training share of sources.

    `table_path` names the table (or tables) the rows came from; the provenance records each one's SHA-256.
    """
    paths = [table_path] if isinstance(table_path, str) else list(table_path)
    table_path = ", ".join(paths)
    rows = [r for r in rows if r.device == base.name and not r.is_step]  # whole steps are validated, not fitted
    if not rows:
        raise InputError(f"{table_path}: no kernel rows for device {base.name!r}")
    train = train_sources({r.source for r in rows}, train_fraction)
    fitting = [r for r in rows if r.source in set(train)]
    gemm_rows: dict[str, list[MeasuredKernel]] = {}
    for r in fitting:
        if r.kernel in GEMM_KINDS:
            gemm_rows.setdefault(gemm_key(r), []).append(r)
    gemms = {key: fit_gemm(base, group) for key, group in sorted(gemm_rows.items())}
    streams = {c: fit_stream(base, c, [r for r in fitting if r.kernel == c])
               for c in STREAM_FIT_CLASSES if any(r.kernel == c for r in fitting)}
    attention = [r for r in fitting if r.kernel in ATTENTION_KINDS]
    provenance = {
        "table": table_path, "sha256": ", ".join(hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths),
        "rows_used": len(fitting), "rows_for_device": len(rows), "train_fraction": train_fraction,
        "train_sources": train, "date": datetime.date.today().isoformat(), "command": command,
    }
    return Calibration(device=base.name, gemm=gemms.pop("", None), gemm_dtypes=gemms or None, streams=streams or None,
                       attention=fit_attention(base, attention) if attention else None, provenance=provenance)


def error_summary(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """Count, median and p90 of |predicted / measured - 1|, and the median signed error."""
    err = predicted / measured - 1.0
    return {"n": int(len(err)), "median_abs_err": float(np.median(np.abs(err))),
            "p90_abs_err": float(np.percentile(np.abs(err), 90)), "median_bias": float(np.median(err))}


def calibration_path(device: str) -> Path:
    return Path(str(resources.files("hw_models"))) / CALIBRATION_FOLDER / f"{device}.yaml"


def write_calibration(cal: Calibration, path: Path) -> None:
    data = {"device": cal.device, "provenance": cal.provenance,
            "gemm": asdict(cal.gemm) if cal.gemm else None,
            "gemm_dtypes": {k: asdict(v) for k, v in (cal.gemm_dtypes or {}).items()},
            "streams": {k: asdict(v) for k, v in (cal.streams or {}).items()},
            "attention": asdict(cal.attention) if cal.attention else None}
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ("# Fitted by `explore calibrate` (see provenance): efficiency of hw_models/gpu_efficiency.py's\n"
              "# models for this preset. Do not edit by hand: rerun the command.\n")
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))


def read_calibration(path: Path) -> Calibration:
    try:
        data = yaml.safe_load(path.read_text())
        return Calibration(
            device=data["device"], provenance=data.get("provenance"),
            gemm=GemmFit(**data["gemm"]) if data.get("gemm") else None,
            gemm_dtypes={k: GemmFit(**v) for k, v in (data.get("gemm_dtypes") or {}).items()} or None,
            streams={k: StreamFit(**v) for k, v in (data.get("streams") or {}).items()} or None,
            attention=AttentionFit(**data["attention"]) if data.get("attention") else None,
        )
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise InputError(f"{path}: not a calibration file ({type(err).__name__}: {err})") from None


def load_calibration(device: str) -> Calibration | None:
    """The shipped calibration of a preset, if it has one (read once per file version: sweeps load a preset
    once per override value)."""
    path = calibration_path(device)
    return _read_calibration_version(path, path.stat().st_mtime_ns) if path.is_file() else None


@functools.lru_cache(maxsize=64)
def _read_calibration_version(path: Path, mtime_ns: int) -> Calibration:
    return read_calibration(path)
