"""The detail a report draws beyond the results table, stored beside the results: the kernels of a few design
points on the roofline, their energy by part, the metrics of what-if points on the preset as shipped, and the
per-request latencies and iteration log of a few serving runs.

The sweep's own report prices them with its evaluator (traces, kernel tables, serving re-runs) and keeps them in
report_detail.json.gz; `explore report DIR` then draws every figure from the results and that file, without an
evaluator (nor torch). Each entry carries the metrics of the row it was computed for, and is used only while the
row still has them, so changed results are never drawn with stale detail.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from explore.format_checks import format_knob_names, gemms_run_as
from explore.plots import Roof
from explore.rows import as_number, format_number, is_serving, metric_column, point_from_row, row_format
from kernels.formats import DTYPE_BITS, DTYPE_SHORT, NumericFormat
from sim.step_costs import batch_modes
from sim.workload import BatchWorkload
from workloads.atomic_write import replacing

if TYPE_CHECKING:
    from explore.design_point import DesignPoint
    from explore.evaluate import Evaluator
    from kernels.table import KernelTable

log = logging.getLogger(__name__)

DETAIL_FILE = "report_detail.json.gz"
LEGACY_FILE = "report_cache.json"  # an older version's store (stamped with all results at once): removed
DETAIL_VERSION = 4  # 4: kernels at the work and bytes the device runs (DeviceModel.as_run); 3: a roof stores its dtypes
FINGERPRINT = ("ttft_s", "tpot_s", "energy_per_token_J", "tokens_per_s")  # metrics a stale entry would differ in
NO_PRICING = "`explore report` reads stored results only"
HOW_TO_STORE = "running the sweep again on this folder stores it (finished points are kept)"
# The figures drawn from each kind of entry, for the line that says which ones a report could not draw.
FIGURES_OF = {"kernels": ("roofline",), "energy": ("energy_breakdown",), "baseline": ("whatif",),
              "serving": ("serving_cdf", "serving_timeline")}
ENERGY_PARTS = ("static", "memory", "compute")


def design_point(row: dict[str, Any]) -> DesignPoint:
    """The design point of a (typed) static row, with its system (tp, pp, ep, link) where the row has one."""
    point = point_from_row(row)
    system = {name: int(as_number(row[name])) for name in ("tp", "pp", "ep") if math.isfinite(as_number(row.get(name)))}
    link = row.get("link")
    return replace(point, **system, link="" if link in (None, "", "default") else str(link))


def point_key(row: dict[str, Any]) -> str:
    """The stored key of a row's point (its point_id; computed for rows made by hand)."""
    return str(row.get("point_id") or design_point(row).point_id)


def fingerprint(row: dict[str, Any]) -> list[str]:
    """The metrics of a row an entry computed for it is stamped with (repr: exact, and NaN equals NaN)."""
    return [repr(as_number(row.get(m))) for m in FINGERPRINT]


def not_stored(what: str) -> str:
    """The caption of a figure whose detail is neither stored nor can be priced."""
    return (f"Not drawn: {DETAIL_FILE} holds no {what} for these points (a folder written by an older version, or "
            f"results that changed since), and this report prices nothing ({NO_PRICING}); {HOW_TO_STORE}.")


def sweep_formats(rows: list[dict[str, Any]]) -> set[NumericFormat]:
    """The sweep's formats, every format knob included (an fp4 format is not an int4 one)."""
    names = format_knob_names()
    first = {tuple(repr(r.get(n)) for n in names): r for r in rows}  # one row per combination of format values
    return {row_format(r) for r in first.values()}


def sweep_dtypes(device: Any, formats: set[NumericFormat], traced: str) -> list[tuple[str, str]]:
    """(dtype, the dtype whose rate prices it) of the matrix math the sweep's formats compute in on a device, for a
    model traced in `traced`: that 16-bit type and each quantized weight width's GEMM dtype, at the rate the device
    runs it (explore/format_checks.py gemms_run_as: fp4 on an H100 runs weight-only at the 16-bit rate)."""
    pairs = []
    for fmt in formats:
        runs_as = {dtype: math for dtype, math, _ in gemms_run_as(device, fmt)}
        for bits in fmt.weight_widths:
            dtype = (fmt if bits == fmt.weight_bits else fmt.at_bits(bits)).gemm_dtype(traced)
            # A 16-bit GEMM (weight-only) keeps the model's roof: a CPU takes its int8 path only where its table
            # lookups are slower (gemms_run_as' 'where').
            pairs.append((dtype, runs_as.get(dtype, dtype) if DTYPE_BITS.get(dtype, 16) < 16 else dtype))
    pairs.sort(key=lambda pair: (-DTYPE_BITS.get(pair[0], 16), pair))
    return list(dict.fromkeys([(traced, traced), *pairs]))


def device_roofs(device: Any, dtypes: list[tuple[str, str]]) -> list[Roof]:
    """A roof per distinct peak rate among the (dtype, the dtype whose rate prices it) pairs, of the width of its
    widest dtype (a narrower one the device runs at that rate joins its roof), highest first."""
    by_rate: dict[float, list[str]] = {}
    for dtype, math_dtype in dtypes:
        try:
            rate = float(device.peak_flops(math_dtype))
        except (KeyError, ValueError) as err:  # a device kind without that dtype at all
            log.debug("no %s roof on %s: %s", math_dtype, getattr(device, "name", device), err)
            continue
        by_rate.setdefault(rate, []).append(dtype)
    roofs = [Roof(dtypes=tuple(dict.fromkeys(names)), flops=rate, bits=max(DTYPE_BITS.get(d, 16) for d in names))
             for rate, names in by_rate.items() if rate > 0]
    return sorted(roofs, key=lambda r: -r.flops)


def kernel_points(device: Any, table: KernelTable, execution: str) -> dict[str, list]:
    """Intensity, achieved FLOP/s, class and share of the pass's time of each distinct kernel of a table as the device
    runs it (DeviceModel.as_run: the sparsity it exploits, a weight-only GEMM's 16-bit inputs), each layer's repeats
    of one kernel drawn once with the share of all of them; zero-work kernels dropped."""
    time_s = device.cost_table(table, execution).time_s
    table = device.as_run(table)
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


def read_entries(out_dir: Path) -> dict[str, Any]:
    """The stored entries of a results folder: {} when there is no file or it cannot be read (the report then
    prices again what it can, and says which figures it cannot draw)."""
    path = out_dir / DETAIL_FILE
    if not path.is_file():
        return {}
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, EOFError, zlib.error, ValueError, RecursionError) as err:
        log.warning("%s: not read (%s: %s); its figures are priced again where an evaluator can", path,
                    type(err).__name__, err)
        return {}
    if not isinstance(data, dict) or data.get("version") != DETAIL_VERSION or not isinstance(data.get("entries"), dict):
        return {}
    return data["entries"]


def write_entries(out_dir: Path, entries: dict[str, Any]) -> None:
    """Write the entries to out_dir/DETAIL_FILE through a temporary file renamed into place (a reader never sees
    half a file)."""
    payload = gzip.compress(json.dumps({"version": DETAIL_VERSION, "entries": entries},
                                       separators=(",", ":")).encode(), compresslevel=6)
    with replacing(out_dir / DETAIL_FILE) as tmp:
        tmp.write_bytes(payload)
    (out_dir / LEGACY_FILE).unlink(missing_ok=True)  # an older version's file: stale beside this one


def pool_rows(point: DesignPoint, figures: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """Each pool of a serving point's run (explore/evaluate.py serving_pools, in the run's order): its kind
    ('prefill', 'serve', 'decode', or 'mixed' for a fleet's other replicas), device and figures."""
    from explore.evaluate import pool_kind, serving_pools

    return [{"pool": pool_kind(role, device), "device": device or point.device} | mine
            for (role, _, device, _, _), mine in zip(serving_pools(point), figures.values(), strict=True)]


# A pool_rows row's cells: its kind and device, then figures, each headed by its metric's label (explore/rows.py).
POOL_COLUMNS = (("pool", "pool", 1.0), ("device", "device", 1.0), ("replicas", "replicas", 1.0),
                ("requests", "requests", 1.0),
                *(metric_column(name) for name in ("ttft_p50_s", "tpot_p50_s", "tpot_p90_s", "goodput_rps")))


def pool_cells(pool: dict[str, Any]) -> list[str]:
    """A pool_rows row as table cells (POOL_COLUMNS), in the units their headers show."""
    return [str(pool[name]) if isinstance(pool[name], str) else format_number(pool[name], scale)
            for _, name, scale in POOL_COLUMNS]


class DetailSource:
    """Per-point detail from the stored file where it was computed for the row's current metrics, else from the
    evaluator (None without one). `save` writes the entries this report used, when it computed any."""

    def __init__(self, evaluator: Evaluator | None, rows: list[dict[str, Any]], out_dir: Path | None) -> None:
        self.evaluator = evaluator
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.formats = sweep_formats(rows)
        self.stored: dict[str, Any] = read_entries(self.out_dir) if self.out_dir is not None else {}
        self.entries: dict[str, Any] = {}  # what this report drew: the next file holds exactly these
        self.computed = 0
        self.unstored: set[str] = set()  # kinds of detail asked for that were neither stored nor priceable

    @property
    def can_price(self) -> bool:
        return self.evaluator is not None

    def _get(self, kind: str, key: str, row: dict[str, Any], compute: Callable[[], Any] | None) -> Any:
        """The entry `key` computed for `row`'s metrics: stored, else computed (without an evaluator, or without
        `compute`, None)."""
        stamp = fingerprint(row)
        if key not in self.entries:
            entry = self.stored.get(key)
            if isinstance(entry, dict) and entry.get("fingerprint") == stamp and "data" in entry:
                self.entries[key] = entry
            elif self.evaluator is None:
                self.unstored.add(kind)
                return None
            elif compute is None:
                return None
            else:
                self.entries[key] = {"fingerprint": stamp, "data": compute()}
                self.computed += 1
        return self.entries[key]["data"]

    def kernels(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """The roofline data of a feasible row: roofs, bandwidth and its prefill and first decode step's kernels."""
        return self._get("kernels", f"kernels {point_key(row)}", row, lambda: self._kernels(design_point(row)))

    def _kernels(self, point: DesignPoint) -> dict[str, Any]:
        evaluator = self.evaluator
        device = evaluator.device(point.device, point.overrides, point.use_calibration)
        evaluation = evaluator.evaluate(point)
        tables, speculative = evaluation.tables, evaluation.speculative
        # A speculative point decodes in verification passes (k + 1 query tokens a sequence): its decode step drawn.
        decode = tables.decode if speculative is None else speculative.verify
        # Each pass priced as the run prices it: on the point's system (its all-reduces on the link), in the launch
        # mode of the pass (sim/step_costs.py batch_modes); the roofs are one device's.
        system = evaluator.point_device(point)
        query = 1 if speculative is None else speculative.speculation.verified
        modes = batch_modes(system, point.execution, BatchWorkload(batch=point.batch, prompt_len=point.prompt,
                                                                   output_len=point.output), query)
        phases = {phase: kernel_points(system, table, mode)
                  for phase, table, mode in (("prefill", tables.prefill, modes[0]), ("decode", decode, modes[1]))}
        # The roofs of the point's own model: an fp16 model's 16-bit math runs at the fp16 peak, a bf16 one's at bf16.
        dtypes = sweep_dtypes(device, self.formats, DTYPE_SHORT[evaluator.config(point.model).dtype])
        return {"roofs": [[list(r.dtypes), r.flops, r.bits] for r in device_roofs(device, dtypes)],
                "vector_flops": float(device.peak_flops("fp32")), "bandwidth_Bps": float(device.bandwidth_Bps),
                "phases": phases}

    def energy_parts(self, row: dict[str, Any]) -> dict[str, float] | None:
        """Energy per output token of a feasible row by part: static (idle power over the run), memory (data
        movement), compute."""
        return self._get("energy", f"energy {point_key(row)}", row, lambda: self._energy(design_point(row)))

    def _energy(self, point: DesignPoint) -> dict[str, float]:
        result = self.evaluator.evaluate(point).result
        tokens = result.output_tokens or 1
        return {name.removesuffix("_J"): value / tokens for name, value in result.energy_parts_J.items()}

    def baseline(self, row: dict[str, Any], base: DesignPoint | None = None,
                 known: dict[str, Any] | None = None) -> dict[str, float] | None:
        """The metrics of a what-if row's point on the presets as shipped: `known` (a row of the sweep, stored as the
        entry), else `base` priced (a static row's: its point without its overrides), even where the shipped preset
        has too little memory for it (its timing does not depend on the capacity). A serving row's point cannot be
        rebuilt from the row: without `base` or `known` its entry is read, never priced."""
        # A static row's point is rebuilt only where it is priced (a stored entry needs none).
        compute = (lambda: {name: as_number(known.get(name)) for name in known}) if known is not None else (
            None if base is None and is_serving(row) else
            lambda: self._baseline(base if base is not None else replace(design_point(row), overrides=())))
        # Keyed by the what-if row (not the shared base point): each entry is stamped with its own row's metrics.
        return self._get("baseline", f"baseline {point_key(row)}", row, compute)

    def _baseline(self, point: DesignPoint) -> dict[str, float]:
        evaluation = self.evaluator.evaluate(point, price_infeasible=True)
        if evaluation.result is None:
            return {}
        # Whether the shipped point fits beside its timings, priced even where it does not.
        return {name: float(value) for name, value in evaluation.result.metrics().items()} | {
            "fits_in_memory": float(bool(evaluation.metrics.get("fits_in_memory", True)))}

    def serving_run(self, row: dict[str, Any], point: DesignPoint | None) -> dict[str, Any] | None:
        """Per-request TTFT and TPOT and the iteration log (start, duration, KV utilization, batch size) of a
        serving row's run, times from its first arrival; None when it is not stored and cannot be re-run (no
        evaluator, or no design point for the row)."""
        return self._get("serving", f"serving {point_key(row)}", row,
                         None if point is None else lambda: self._serving(point))

    def _serving(self, point: DesignPoint) -> dict[str, Any]:
        result = self.evaluator.evaluate(point).result
        records, iterations = result.records, result.iterations
        origin = float(records.arrival_s.min())
        return {"ttft_s": records.ttft_s.tolist(), "tpot_s": records.tpot_s.tolist(),
                "arrival_s": (records.arrival_s - origin).tolist(),
                "start_s": (iterations.start_s - origin).tolist(), "duration_s": iterations.duration_s.tolist(),
                "kv_utilization": iterations.kv_utilization().tolist(), "batch_size": iterations.batch_size.tolist(),
                "engine": iterations.replica.tolist(), "engines": len(iterations.replica_names),
                "end_s": float(records.finish_s.max()) - origin, "dynamic_J": iterations.dynamic_J.tolist(),
                "static_W": result.energy_parts_J["static_J"] / result.makespan_s,
                # A fleet's: each pool's device, replicas and the requests it served (ServingResult.pool_figures).
                **({"pools": pool_rows(point, result.pool_figures())} if point.serving.mixed else {}),
                # An autoscaled pool's replicas held, (time, replicas) at each change.
                **({} if result.scaled is None else {
                    "replicas_held": [[t - origin, held] for t, held in result.scaled],
                    "mean_replicas": result.scaling_metrics()["mean_replicas"],
                    # Every replica made, of every pool (each pool's replicas laid out alike): a fleet's
                    # mixed_device pool's too.
                    "replica_engines": len(iterations.replica_names)
                    // sum(point.serving.built_replicas().values())})}

    def unstored_figures(self) -> list[str]:
        """The figures this report could not draw for want of stored detail (and of an evaluator)."""
        return [name for kind, names in FIGURES_OF.items() if kind in self.unstored for name in names]

    def save(self) -> None:
        """Write the entries this report used when it computed some (a report with nothing new leaves the file as
        it is: `explore report DIR` never writes it)."""
        if self.out_dir is not None and self.computed:
            write_entries(self.out_dir, self.entries)
