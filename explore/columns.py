"""Results rows as columns: what a block of design points' evaluation gives, and what the store writes in bulk."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Columns:
    """`size` results rows: `arrays` hold one value per row (a list, tuple or numpy array), `constants` one value
    for every row; `names` orders the row's keys (each in arrays or constants)."""

    size: int
    names: tuple[str, ...]
    arrays: dict[str, Sequence[Any] | np.ndarray] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.size

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]]) -> Columns:
        """Rows as columns; a name some rows lack is None in them."""
        names = tuple(dict.fromkeys(name for row in rows for name in row))
        return cls(size=len(rows), names=names, arrays={name: [row.get(name) for row in rows] for name in names})

    def __contains__(self, name: str) -> bool:
        return name in self.arrays or name in self.constants

    def column(self, name: str) -> Iterable[Any]:
        """The values of `name` row by row (Python values; None where the name is absent)."""
        if name in self.arrays:
            values = self.arrays[name]
            return values.tolist() if isinstance(values, np.ndarray) else values
        return itertools.repeat(self.constants.get(name), self.size)

    def values(self, name: str) -> list[Any]:
        """column(name) as a list."""
        values = self.column(name)
        return values if isinstance(values, list) else list(values)

    def set(self, name: str, values: Sequence[Any] | np.ndarray) -> None:
        """Set (or add, last) a column of one value per row."""
        self.constants.pop(name, None)
        self.arrays[name] = values
        if name not in self.names:
            self.names = (*self.names, name)

    def merged(self, other: Columns) -> Columns:
        """These columns with `other`'s added after them (other's value where both have a name)."""
        if other.size != self.size:
            raise ValueError(f"{other.size} rows merged into {self.size}")
        arrays = {k: v for k, v in self.arrays.items() if k not in other} | other.arrays
        constants = {k: v for k, v in self.constants.items() if k not in other} | other.constants
        return Columns(size=self.size, names=tuple(dict.fromkeys((*self.names, *other.names))), arrays=arrays,
                       constants=constants)

    def rows(self) -> list[dict[str, Any]]:
        """The rows as dicts, keys in `names` order: copies of one row of the constants, each array's values set in
        (a dict copy is cheaper than a dict made pair by pair)."""
        template = {name: None if name in self.arrays else self.constants.get(name) for name in self.names}
        rows = [template.copy() for _ in range(self.size)]
        for name, values in self.arrays.items():
            values = values.tolist() if isinstance(values, np.ndarray) else values
            if len(values) != self.size:
                raise ValueError(f"column {name!r}: {len(values)} values for {self.size} rows")
            for row, value in zip(rows, values):  # noqa: B905 (lengths checked above)
                row[name] = value
        return rows

    def row(self, i: int) -> dict[str, Any]:
        """Row i as a dict."""
        return {name: _item(self.arrays[name][i]) if name in self.arrays else self.constants[name]
                for name in self.names}


def _item(value: Any) -> Any:
    """A Python value from a numpy scalar (numbers as evaluations give them)."""
    return value.item() if isinstance(value, np.generic) else value
