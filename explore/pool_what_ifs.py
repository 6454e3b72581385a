"""What-ifs on the devices of a serving point's other pools: fields of its attention devices or of its prefill pool's
devices, changed there alone.

A point's `device.` what-ifs change its device wherever it runs (every pool of the same device kind); a pool what-if
('attention_device.memory.bandwidth_GBps', 'prefill_device.power.cap_W') changes only that pool's devices, on top of
the point's own where the pool runs the point's device kind, and wins where both set a field. A point without the
pool has nothing to change: its pool what-ifs are left out (it keeps the key of the point without them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from explore.schema import as_list


@dataclass(frozen=True)
class PoolWhatIf:
    """What-ifs on one pool's devices: keys `prefix` + a device field's path, held in DesignPoint field `field`."""

    prefix: str
    field: str
    pool: str  # the pool whose devices it changes, in words
    needs: str  # what a sweep must set for the pool to exist
    needs_flags: str  # what `explore run` must be given for it
    switch: str  # the serving setting without which a point has no such pool
    off: str  # the switch's value(s) without the pool, in words

    def switched_off(self, value: Any) -> bool:
        """Whether a point at this value of the switch has no such pool."""
        return value in ("", "none", None) if self.field == "attention_overrides" else value == 0

    def present(self, serving) -> bool:
        """Whether a serving spec (sim/serving_spec.py ServingSpec, or None) has the pool."""
        if serving is None:
            return False
        return serving.attends_apart if self.field == "attention_overrides" else serving.disaggregated

    def device_name(self, serving, device: str) -> str:
        """The device the pool runs of a spec that has it, on a point of `device`."""
        if self.field == "attention_overrides":
            return serving.attention_device
        return serving.prefill_device or device

    def row_device(self, row: dict[str, Any]) -> str | None:
        """The device a results row runs the pool on (None where it names none)."""
        if self.field == "attention_overrides":
            return row.get("attention_device") or None
        return row.get("prefill_device") or row.get("device")

    def sweep_devices(self, serving, devices: list[str]) -> list[str]:
        """The devices a sweep's serving: section (explore/sweep_serving.py ServingSection) runs the pool on over the
        sweep's `devices` (empty where no point has the pool)."""
        if serving is None:
            return []
        if self.field == "attention_overrides":
            named = as_list(serving.attention_device) if serving.attention_device else []
            return [name for name in dict.fromkeys(named) if name not in ("", "none")]
        if not any(count > 0 for count in as_list(serving.prefill_replicas)):
            return []
        return [serving.prefill_device] if serving.prefill_device else list(dict.fromkeys(devices))

    def pairs(self, values: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
        """The (path, value) pairs of this pool's what-ifs among a point's dimension values."""
        return tuple((key.removeprefix(self.prefix), value) for key, value in values.items()
                     if key.startswith(self.prefix))


POOL_WHAT_IFS = (
    PoolWhatIf(prefix="attention_device.", field="attention_overrides", pool="attention devices",
               needs="a serving: section's attention_device", needs_flags="--serving and --attention-device",
               switch="attention_device", off="attention_device is none"),
    PoolWhatIf(prefix="prefill_device.", field="prefill_overrides", pool="prefill pool",
               needs="a serving: section's prefill pool (prefill_replicas above 0)",
               needs_flags="--serving and --prefill-replicas above 0", switch="prefill_replicas",
               off="prefill_replicas is 0"),
)
