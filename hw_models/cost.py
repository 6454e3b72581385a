"""KernelCost and KernelCosts: what a device model says one kernel, or a table of kernels, costs."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import cached_property
from typing import Any

import numpy as np

from kernels.kernel import COLLECTIVE_KINDS

# What limits a kernel: its math, its memory traffic, or the fixed per-kernel launch overhead.
BOUNDS = ("compute", "memory", "overhead")
# Kernels whose time is their link's: a system model keeps it as overhead_s (hw_models/system.py), said as "link".
LINK_KINDS = frozenset(kind.value for kind in COLLECTIVE_KINDS)


def bound_name(kind: str, bound: int) -> str:
    """What limits a kernel of this kind (KernelKind value), given the index into BOUNDS of its largest time part."""
    return "link" if kind in LINK_KINDS else BOUNDS[bound]


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
        shapes = {v.shape for k, v in fields.items() if k != "unit" and v is not None}
        if len(shapes) == 1:  # one shape already (one design point): nothing to broadcast
            return cls._of(fields)
        shape = np.broadcast_shapes(*shapes)
        return cls(**{k: v if v is None or k == "unit" or np.shape(v) == shape else np.broadcast_to(v, shape)
                      for k, v in fields.items()})

    @classmethod
    def _of(cls, fields: dict[str, Any]) -> KernelCosts:
        """Costs of the fields given (every one but perhaps `unit`), set without the frozen __init__'s
        object.__setattr__ per field: a cost model makes several of these per design point."""
        costs = object.__new__(cls)
        costs.__dict__["unit"] = None
        costs.__dict__.update(fields)
        return costs

    def faster(self, other: KernelCosts, rows: np.ndarray) -> KernelCosts:
        """The faster of two ways to run the same kernels, where a runtime has both and picks per kernel: `other`'s
        costs in the rows where `rows` is true and other's time is shorter than these, or as short at no more energy;
        these elsewhere (a tie in time goes to the cheaper in energy). Each kernel keeps the unit of the way taken."""
        tie = (other.time_s == self.time_s) & (other.energy_J <= self.energy_J)
        use = rows & ((other.time_s < self.time_s) | tie)
        unit = self.unit if other.unit is None else np.where(use, other.unit, 0 if self.unit is None else self.unit)
        return KernelCosts.broadcast(unit=unit, **{name: np.where(use, getattr(other, name), getattr(self, name))
                                                   for name in TIME_ENERGY_FIELDS})

    def sum(self, name: str, mask: np.ndarray | None = None, without: np.ndarray | None = None) -> float:
        """Field `name` summed over the kernels where `mask` is true (None: all) and `without` is not."""
        values = getattr(self, name)
        if mask is None and without is None:
            return float(values.sum())
        keep = ~without if mask is None else mask if without is None else mask & ~without
        return float(values[keep].sum())

    def sums(self, name: str, masks: dict[str, np.ndarray], without: np.ndarray | None = None) -> np.ndarray:
        """sum(name, mask, without) for each of `masks` (by label), as an array in their order."""
        return np.array([self.sum(name, mask, without) for mask in masks.values()])

    def field_sums(self, masks: dict[str, np.ndarray], without: np.ndarray | None = None) -> np.ndarray:
        """Every summed field (SUM_FIELDS, in columns) over the kernels not in `without` (row 0) and over those of
        each of `masks` (rows 1..., in their order): one product for all the totals of a pass."""
        keep = np.ones(len(self), dtype=bool) if without is None else ~without
        weights = np.array([keep, *(mask & keep for mask in masks.values())], dtype=float)
        return weights @ self.matrix.T

    @cached_property
    def matrix(self) -> np.ndarray:
        """The summed fields (SUM_FIELDS) as the rows of one array, shape (fields, kernels)."""
        return np.array([getattr(self, name) for name in SUM_FIELDS])  # np.stack's checks cost 4x as much

    def take(self, index: np.ndarray) -> KernelCosts:
        """The costs of rows `index` (on the last axis), in that order."""
        return self._mapped(lambda values: values.take(index, axis=-1))  # numpy's fast gather

    def rows_slice(self, start: int, end: int) -> KernelCosts:
        """The costs of rows start to end (on the last axis): views, no copies (of the field matrix too, where
        it was made)."""
        at = slice(start, end) if self.time_s.ndim == 1 else (Ellipsis, slice(start, end))
        part = KernelCosts._of(dict(
            time_s=self.time_s[at], compute_s=self.compute_s[at], memory_s=self.memory_s[at],
            overhead_s=self.overhead_s[at], compute_J=self.compute_J[at], memory_J=self.memory_J[at],
            static_J=self.static_J[at], unit=None if self.unit is None else self.unit[at]))
        if "matrix" in self.__dict__:
            part.__dict__["matrix"] = self.matrix[..., start:end]
        return part

    def _mapped(self, of) -> KernelCosts:
        """These costs with `of` applied to every field (the unit too, where there is one)."""
        return KernelCosts(time_s=of(self.time_s), compute_s=of(self.compute_s), memory_s=of(self.memory_s),
                           overhead_s=of(self.overhead_s), compute_J=of(self.compute_J), memory_J=of(self.memory_J),
                           static_J=of(self.static_J), unit=None if self.unit is None else of(self.unit))

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


COST_FIELDS = tuple(f.name for f in fields(KernelCosts))
TIME_ENERGY_FIELDS = tuple(name for name in COST_FIELDS if name != "unit")  # every field but the unit
# The fields a pass's totals sum (its time and dynamic energy: sim/step_costs.py), in the columns of
# KernelCosts.field_sums, and each one's column.
SUM_FIELDS = ("time_s", "compute_J", "memory_J")
SUM_COLUMN = {name: i for i, name in enumerate(SUM_FIELDS)}


class IndexedCosts:
    """The costs of a table's kernels held as the costs of its distinct rows (`rows`, DeviceModel.cost_rows) and
    each kernel's index into them: a sum over kernels is a product with how often each row occurs (the table's
    distinct_counts, which it keeps), and the per-kernel arrays of KernelCosts are made when first read (an event
    simulation's timeline reads them; an analytic sum does not)."""

    def __init__(self, rows: KernelCosts, index: np.ndarray, table: Any):
        """`table`: the KernelTable priced (its distinct_counts give how often each row occurs)."""
        self.rows, self.index, self.table = rows, index, table

    def sum(self, name: str, mask: np.ndarray | None = None, without: np.ndarray | None = None) -> float:
        """Field `name` summed over the kernels where `mask` is true (None: all) and `without` is not."""
        return float(getattr(self.rows, name) @ self.table.distinct_counts(mask, without))

    def sums(self, name: str, masks: dict[str, np.ndarray], without: np.ndarray | None = None) -> np.ndarray:
        """sum(name, mask, without) for each of `masks` (by label; the table's own, whose counts it keeps), as an
        array in their order."""
        return self.table.distinct_counts_matrix(masks, without) @ getattr(self.rows, name)

    def field_sums(self, masks: dict[str, np.ndarray], without: np.ndarray | None = None) -> np.ndarray:
        """KernelCosts.field_sums of the kernels, as a product of the counts (the table's, per mask mapping) with
        the distinct rows' fields."""
        return self.table.labelled_counts(masks, without) @ self.rows.matrix.T

    def map_rows(self, **fields: np.ndarray) -> IndexedCosts:
        """These costs with some fields of the distinct rows replaced (elementwise changes: every kernel of a row
        changes alike)."""
        return IndexedCosts(replace(self.rows, **fields), self.index, self.table)

    @cached_property
    def full(self) -> KernelCosts:
        """The per-kernel costs, in kernel order."""
        return self.rows.take(self.index)

    def __len__(self) -> int:
        return len(self.index)

    def __getattr__(self, name: str) -> Any:  # the rest of KernelCosts' interface, on the per-kernel costs
        if name.startswith("__") or name in ("rows", "index", "table", "full", "matrix"):
            raise AttributeError(name)
        if name in COST_FIELDS and "full" not in self.__dict__:  # one field: gathered alone, then kept
            values = getattr(self.rows, name)
            values = self.__dict__[name] = None if values is None else values.take(self.index, axis=-1)
            return values
        return getattr(self.full, name)
