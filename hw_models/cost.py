"""KernelCost and KernelCosts: what a device model says one kernel, or a table of kernels, costs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# What limits a kernel: its math, its memory traffic, or the fixed per-kernel launch overhead.
BOUNDS = ("compute", "memory", "overhead")


@dataclass(frozen=True, kw_only=True)
class KernelCost:
    time_s: float
    energy_J: float
    bound: str
    breakdown: dict[str, float]  # time and energy parts: compute_s, memory_s, overhead_s, compute_J, memory_J, static_J


@dataclass(frozen=True, kw_only=True)
class KernelCosts:
    """Per-kernel costs of a KernelTable as arrays; energy_J = compute_J + memory_J + static_J.

    memory_J is all data movement: off-chip DRAM/HBM and, where a model counts them, on-chip SRAM and
    in-bank (PIM) accesses. `unit` is each kernel's execution unit, an index into the device's `units`
    (None: all on unit 0).
    """

    time_s: np.ndarray
    compute_s: np.ndarray
    memory_s: np.ndarray
    overhead_s: np.ndarray
    compute_J: np.ndarray
    memory_J: np.ndarray
    static_J: np.ndarray
    unit: np.ndarray | None = None

    @classmethod
    def broadcast(cls, **fields) -> KernelCosts:
        """Costs whose fields are brought to one shape: (kernels,), or (points, kernels) over a block of design
        points where some fields vary by point and others (a FLOP's energy) do not."""
        shape = np.broadcast_shapes(*(np.shape(v) for k, v in fields.items() if k != "unit" and v is not None))
        return cls(**{k: v if v is None or k == "unit" or np.shape(v) == shape else np.broadcast_to(v, shape)
                      for k, v in fields.items()})

    def take(self, index: np.ndarray) -> KernelCosts:
        """The costs of rows `index` (on the last axis), in that order."""
        return KernelCosts(**{name: None if value is None else value[..., index]
                              for name, value in vars(self).items()})

    @property
    def unit_index(self) -> np.ndarray:
        return np.zeros(len(self.time_s), dtype=int) if self.unit is None else self.unit

    @property
    def energy_J(self) -> np.ndarray:
        return self.compute_J + self.memory_J + self.static_J

    @property
    def bound(self) -> np.ndarray:
        """Index into BOUNDS of the largest time component of each kernel."""
        return np.argmax(np.stack([self.compute_s, self.memory_s, self.overhead_s]), axis=0)

    def __len__(self) -> int:
        return len(self.time_s)

    def row(self, i: int) -> KernelCost:
        parts = {name: float(getattr(self, name)[i])
                 for name in ("compute_s", "memory_s", "overhead_s", "compute_J", "memory_J", "static_J")}
        return KernelCost(time_s=float(self.time_s[i]), energy_J=float(self.energy_J[i]),
                          bound=BOUNDS[int(self.bound[i])], breakdown=parts)
