"""DesignPoint: one combination of model, device, workload, numeric format and device overrides."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

from kernels.formats import NumericFormat
from sim.serving import SERVING_METRICS
from sim.serving_spec import ServingSpec

# Columns every results row starts with (the inputs), then METRIC_COLUMNS.
INPUT_COLUMNS = ("point_id", "model", "device", "batch", "prompt", "output", "weight_bits", "act_bits", "kv_bits",
                 "sparsity", "execution")
# The knobs of a design point (every input column but the key).
KNOB_COLUMNS = INPUT_COLUMNS[1:]
# tokens_per_s is end to end (every output token over the makespan, prefill included); decode_tokens_per_s
# counts the tokens after each request's first over the decode time (sim/result.py SimResult.metrics).
METRIC_COLUMNS = (
    "ttft_s", "tpot_s", "e2e_s", "tokens_per_s", "decode_tokens_per_s", "energy_per_token_J", "avg_power_W",
    "peak_memory_B", "fits_in_memory", "infeasible_reason", "area_mm2", "cost_usd", "tokens_per_usd", "calibrated",
)
# Latency of one request by kernel class (prefill and all decode steps), after the metrics.
KERNEL_CLASSES = ("gemm", "attention", "norm", "softmax", "elementwise", "embedding")
BREAKDOWN_COLUMNS = tuple(f"time_{c}_s" for c in KERNEL_CLASSES)
# Time in collectives over the link, and the hourly price of the whole system: columns of sweeps over systems
# of several devices (and of serving sweeps, whose replicas and pools are systems too).
COMMUNICATION_COLUMN = "time_communication_s"
SYSTEM_PRICE_COLUMN = "usd_per_hour"
# Knob columns of a sweep over systems of several devices.
SYSTEM_INPUT_COLUMNS = ("tp", "pp", "ep", "link")
# Knob columns of a serving sweep (after the inputs), and its metrics (after METRIC_COLUMNS).
SERVING_INPUT_COLUMNS = tuple(ServingSpec().columns())
SERVING_METRIC_COLUMNS = SERVING_METRICS


@dataclass(frozen=True, kw_only=True)
class DesignPoint:
    model: str
    device: str
    batch: int
    prompt: int
    output: int
    weight_bits: int = 16
    act_bits: int = 16
    kv_bits: int = 16
    sparsity: str = "dense"  # structured N:M weight sparsity ("dense", "2:4", ...)
    # Which kernels run and how they are launched: "eager" (PyTorch eager: framework dispatch and a host launch per
    # aten op), "graphs" (the same kernels replayed from CUDA graphs) or "engine" (a serving engine's fused
    # kernels, kernels/fusion.py: decode replayed from CUDA graphs, prefill launched from the host).
    execution: str = "eager"
    use_calibration: bool = True  # False: the datasheet roofline even where a preset has a fitted calibration
    overrides: tuple[tuple[str, Any], ...] = ()  # device fields by dotted path, e.g. ("memory.bandwidth_GBps", 4000)
    # A serving workload (requests arriving, a scheduler) instead of the static batch of batch, prompt, output.
    serving: ServingSpec | None = None
    tp: int = 1  # tensor-parallel devices (kernels/parallel.py)
    pp: int = 1  # pipeline stages, each of tp devices
    ep: int = 1  # expert parallelism: 1, or tp to spread an MoE model's experts over the tp devices
    link: str = ""  # the link between them: a link preset name or path; empty: the device's own (hw_models/link.py)
    link_overrides: tuple[tuple[str, Any], ...] = ()  # link fields, e.g. ("bandwidth_GBps", 300)

    @cached_property
    def point_id(self) -> str:
        """Stable hash of the inputs: the key under which the result is stored (resume skips stored keys)."""
        values = self._values()
        if values["sparsity"] == "dense":
            del values["sparsity"]  # points stored before sparsity existed keep their keys (resume still works)
        if values["serving"] is None:
            del values["serving"]  # static points keep the keys they had before serving existed
        if values["tp"] == 1 and not values["link"]:
            del values["tp"], values["link"]  # one-device points keep their keys
        if values["pp"] == 1:
            del values["pp"]
        if values["ep"] == 1:
            del values["ep"]
        if not values["link_overrides"]:
            del values["link_overrides"]
        canonical = json.dumps(values, sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def numeric_format(self) -> NumericFormat:
        return NumericFormat(weight_bits=self.weight_bits, act_bits=self.act_bits, kv_bits=self.kv_bits,
                             sparsity=self.sparsity)

    def _values(self) -> dict[str, Any]:
        """Field values by name (shallow: the fields are numbers, strings and tuples)."""
        return {name: getattr(self, name) for name in _FIELD_NAMES}

    def row(self) -> dict[str, Any]:
        """Input columns of the results table, one column per override ('device.memory.bandwidth_GBps')."""
        values = self._values()
        values.pop("overrides")
        link_overrides = values.pop("link_overrides")
        serving = values.pop("serving")
        row = {"point_id": self.point_id, **values, "link": self.link or "default"}
        if serving is not None:
            row.update(serving.columns())
        row.update({f"device.{path}": value for path, value in self.overrides})
        row.update({f"link.{path}": value for path, value in link_overrides})
        return row


_FIELD_NAMES = tuple(f.name for f in fields(DesignPoint))
