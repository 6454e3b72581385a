"""What-ifs on the devices of a serving point's other pools: fields of its attention devices, of its prefill pool's
devices or of its fleet's mixed replicas' devices, changed there alone.

A point's `device.` what-ifs change its device wherever it runs (every pool of the same device kind); a pool what-if
('attention_device.memory.bandwidth_GBps', 'prefill_device.power.cap_W') changes only that pool's devices, on top of
the point's own where the pool runs the point's device kind, and wins where both set a field. A point without the
pool has nothing to change: its pool what-ifs are left out (it keeps the key of the point without them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from explore.schema import as_list


@dataclass(frozen=True)
class PoolWhatIf:
    """What-ifs on one pool's devices: keys `prefix` + a device field's path, held in DesignPoint field `field`; the
    pool's own rules say when a point has it and on which devices it runs."""

    prefix: str
    field: str
    pool: str  # the pool whose devices it changes, in words
    needs: str  # what a sweep must set for the pool to exist
    needs_flags: str  # what `explore run` must be given for it
    switch: str  # the serving setting without which a point has no such pool
    off: str  # the switch's value(s) without the pool, in words
    switched_off: Callable[[Any], bool]  # whether a point at this value of the switch has no such pool
    present: Callable[[Any], bool]  # whether a serving spec (ServingSpec, or None) has the pool
    device_name: Callable[[Any, str], str]  # the pool's device of a spec that has it, on a point of that device
    row_device: Callable[[dict[str, Any]], str | None]  # the pool's device a results row names (None: none)
    named_devices: Callable[[Any, list[str]], list[str]]  # a sweep's serving: section's pool devices over its devices

    def sweep_devices(self, serving, devices: list[str]) -> list[str]:
        """The devices a sweep's serving: section (explore/sweep_serving.py ServingSection) runs the pool on over the
        sweep's `devices` (empty where no point has the pool)."""
        return [] if serving is None else self.named_devices(serving, devices)

    def pairs(self, values: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
        """The (path, value) pairs of this pool's what-ifs among a point's dimension values."""
        return tuple((key.removeprefix(self.prefix), value) for key, value in values.items()
                     if key.startswith(self.prefix))


def _attention_devices(serving, devices: list[str]) -> list[str]:
    named = as_list(serving.attention_device) if serving.attention_device else []
    return [name for name in dict.fromkeys(named) if name not in ("", "none")]


def _prefill_devices(serving, devices: list[str]) -> list[str]:
    if not any(count > 0 for count in as_list(serving.prefill_replicas)):
        return []
    return [serving.prefill_device] if serving.prefill_device else list(dict.fromkeys(devices))


def _mixed_devices(serving, devices: list[str]) -> list[str]:
    if not any(count for count in as_list(serving.mixed_replicas)):
        return []
    return [name for name in dict.fromkeys(as_list(serving.mixed_device)) if name]


POOL_WHAT_IFS = (
    PoolWhatIf(prefix="attention_device.", field="attention_overrides", pool="attention devices",
               needs="a serving: section's attention_device", needs_flags="--serving and --attention-device",
               switch="attention_device", off="attention_device is none",
               switched_off=lambda value: value in ("", "none", None),
               present=lambda serving: serving is not None and serving.attends_apart,
               device_name=lambda serving, device: serving.attention_device,
               row_device=lambda row: row.get("attention_device") or None, named_devices=_attention_devices),
    PoolWhatIf(prefix="prefill_device.", field="prefill_overrides", pool="prefill pool",
               needs="a serving: section's prefill pool (prefill_replicas above 0)",
               needs_flags="--serving and --prefill-replicas above 0", switch="prefill_replicas",
               off="prefill_replicas is 0", switched_off=lambda value: value == 0,
               present=lambda serving: serving is not None and serving.disaggregated,
               device_name=lambda serving, device: serving.prefill_device or device,
               row_device=lambda row: row.get("prefill_device") or row.get("device"),
               named_devices=_prefill_devices),
    PoolWhatIf(prefix="mixed_device.", field="mixed_overrides", pool="mixed replicas",
               needs="a serving: section's mixed replicas (mixed_replicas above 0)",
               needs_flags="--serving and --mixed-replicas above 0", switch="mixed_replicas",
               off="mixed_replicas is 0", switched_off=lambda value: not value,
               present=lambda serving: serving is not None and serving.mixed,
               device_name=lambda serving, device: serving.mixed_device,
               row_device=lambda row: row.get("mixed_device") or None, named_devices=_mixed_devices),
)
