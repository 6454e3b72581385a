"""What the report prices again for a few design points: their kernels on the roofline, their energy by part,
and, for what-if points, the metrics of the preset as shipped.

The results table holds none of these, so they come from an evaluator (a trace per model, batch and prompt: the
slow part of a report). They are kept beside the results in report_cache.json, stamped with the results they
were computed for, so re-drawing a finished sweep's report re-traces nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from explore.plots import Roof
from explore.rows import as_number, point_from_row
from kernels.formats import DTYPE_BITS, NumericFormat

if TYPE_CHECKING:
    from explore.design_point import DesignPoint
    from explore.evaluate import Evaluator
    from kernels.table import KernelTable

log = logging.getLogger(__name__)

CACHE_FILE = "report_cache.json"
CACHE_VERSION = 1
FINGERPRINT = ("ttft_s", "tpot_s", "energy_per_token_J", "tokens_per_s")  # metrics a stale entry would differ in
ENERGY_PARTS = ("static", "memory", "compute")
TRACED_DTYPE = "bf16"


def design_point(row: dict[str, Any]) -> DesignPoint:
    """The design point of a (typed) static row, with its system (tp, pp, ep, link) where the row has one."""
    point = point_from_row(row)
    system = {name: int(as_number(row[name])) for name in ("tp", "pp", "ep") if math.isfinite(as_number(row.get(name)))}
    link = row.get("link")
    return replace(point, **system, link="" if link in (None, "", "default") else str(link))


def point_key(row: dict[str, Any]) -> str:
    """The stored key of a row's point (its point_id; computed for rows made by hand)."""
    return str(row.get("point_id") or design_point(row).point_id)


def results_stamp(rows: list[dict[str, Any]]) -> str:
    """A hash of the rows' points and metrics: cached detail is used only for exactly these results."""
    items = sorted((point_key(row), [repr(as_number(row.get(m))) for m in FINGERPRINT]) for row in rows)
    return hashlib.sha256(json.dumps([CACHE_VERSION, items]).encode()).hexdigest()[:20]


def sweep_dtypes(rows: list[dict[str, Any]]) -> list[str]:
    """The matrix dtypes the sweep's formats compute in: the traced 16-bit type and each quantized GEMM's."""
    formats = {NumericFormat(weight_bits=int(r["weight_bits"]), act_bits=int(r["act_bits"]), kv_bits=int(r["kv_bits"]))
               for r in rows}
    return list(dict.fromkeys([TRACED_DTYPE, *sorted((f.gemm_dtype(TRACED_DTYPE) for f in formats),
                                                     key=lambda d: -DTYPE_BITS.get(d, 16))]))


def device_roofs(device: Any, dtypes: list[str]) -> list[Roof]:
    """A roof per distinct peak rate among the dtypes, named after its widest dtype (a narrower one the device
    lacks runs at that rate and joins its roof), highest first."""
    by_rate: dict[float, list[str]] = {}
    for dtype in dtypes:
        try:
            rate = float(device.peak_flops(dtype))
        except (KeyError, ValueError) as err:  # a device kind without that dtype at all
            log.debug("no %s roof on %s: %s", dtype, getattr(device, "name", device), err)
            continue
        by_rate.setdefault(rate, []).append(dtype)
    roofs = [Roof(label=f"{max(DTYPE_BITS.get(d, 16) for d in names)}-bit ({', '.join(names)})", flops=rate,
                  bits=max(DTYPE_BITS.get(d, 16) for d in names)) for rate, names in by_rate.items() if rate > 0]
    return sorted(roofs, key=lambda r: -r.flops)


def kernel_points(device: Any, table: KernelTable, execution: str) -> dict[str, list]:
    """Intensity, achieved FLOP/s, class and share of the pass's time of each distinct kernel of a table (each
    layer repeats the same kernels: drawn once, with the share of all its repeats); zero-work kernels dropped."""
    time_s = device.cost_table(table, execution).time_s
    total = float(time_s.sum()) or 1.0
    keep = (table.flops > 0) & (table.bytes > 0) & (time_s > 0)
    intensity = table.flops[keep] / table.bytes[keep]
    achieved = table.flops[keep] / time_s[keep]
    shares: dict[tuple, float] = {}
    for x, y, kind, share in zip(np.round(intensity, 6).tolist(), np.round(np.log10(achieved), 6).tolist(),
                                 table.kernel_class[keep].tolist(), (time_s[keep] / total).tolist(), strict=True):
        shares[x, y, kind] = shares.get((x, y, kind), 0.0) + share
    return {"intensity": [x for x, _, _ in shares], "achieved_flops": [10.0 ** y for _, y, _ in shares],
            "kernel_class": [c for _, _, c in shares], "time_share": list(shares.values())}


class DetailSource:
    """Per-point detail from the cache when it was computed for the same results, else from the evaluator
    (None without one). `save` writes what was computed."""

    def __init__(self, evaluator: Evaluator | None, rows: list[dict[str, Any]], out_dir: Path | None) -> None:
        self.evaluator = evaluator
        self.path = Path(out_dir) / CACHE_FILE if out_dir is not None else None
        self.stamp = results_stamp(rows)
        self.dtypes = sweep_dtypes(rows) if rows else [TRACED_DTYPE]
        self.entries: dict[str, Any] = {}
        self.computed = 0
        if self.path is not None and self.path.is_file():
            try:
                cached = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                log.warning("%s: not read (%s); the report prices its points again", self.path, err)
                cached = {}
            if isinstance(cached, dict) and cached.get("stamp") == self.stamp:
                self.entries = cached.get("entries") or {}

    @property
    def can_price(self) -> bool:
        return self.evaluator is not None

    def _get(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self.entries:
            if self.evaluator is None:
                return None
            self.entries[key] = compute()
            self.computed += 1
        return self.entries[key]

    def kernels(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """The roofline data of a feasible row: roofs, bandwidth and its prefill and first decode step's kernels."""
        return self._get(f"kernels {point_key(row)}", lambda: self._kernels(design_point(row)))

    def _kernels(self, point: DesignPoint) -> dict[str, Any]:
        evaluator = self.evaluator
        device = evaluator.device(point.device, point.overrides, point.use_calibration)
        tables = evaluator.evaluate(point).tables
        phases = {phase: kernel_points(device, table, point.execution)
                  for phase, table in (("prefill", tables.prefill), ("decode", tables.decode))}
        return {"roofs": [[r.label, r.flops, r.bits] for r in device_roofs(device, self.dtypes)],
                "vector_flops": float(device.peak_flops("fp32")), "bandwidth_Bps": float(device.bandwidth_Bps),
                "phases": phases}

    def energy_parts(self, row: dict[str, Any]) -> dict[str, float] | None:
        """Energy per output token of a feasible row by part: static (idle power over the run), memory (data
        movement), compute."""
        return self._get(f"energy {point_key(row)}", lambda: self._energy(design_point(row)))

    def _energy(self, point: DesignPoint) -> dict[str, float]:
        result = self.evaluator.evaluate(point).result
        tokens = result.output_tokens or 1
        return {name.removesuffix("_J"): value / tokens for name, value in result.energy_parts_J.items()}

    def baseline(self, row: dict[str, Any]) -> dict[str, float] | None:
        """The metrics of a what-if row's point on the preset as shipped (no overrides), priced even where the
        shipped preset has too little memory for it (its timing does not depend on the capacity)."""
        base = replace(design_point(row), overrides=())
        return self._get(f"baseline {base.point_id}", lambda: self._baseline(base))

    def _baseline(self, point: DesignPoint) -> dict[str, float]:
        evaluation = self.evaluator.evaluate(point, price_infeasible=True)
        if evaluation.result is None:
            return {}
        return {name: float(value) for name, value in evaluation.result.metrics().items()}

    def save(self) -> None:
        """Write the cache when something was computed (a report with nothing new leaves it as it is)."""
        if self.path is not None and self.computed:
            self.path.write_text(json.dumps({"stamp": self.stamp, "entries": self.entries}), encoding="utf-8")
