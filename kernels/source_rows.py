"""The rows of the CSV files the kernel-table importers convert (Vidur's and aiconfigurator's data), read so that a
missing cell, an empty one or one that is not a number is one line naming the file, its line and the column."""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from workloads.errors import InputError


@dataclass(frozen=True)
class SourceRow:
    """One row of a source CSV and where it is ('FILE:LINE', the header being line 1)."""

    cells: dict[str, str | None]
    where: str

    def __getitem__(self, name: str) -> str:
        raw = self.cells.get(name)
        if raw is None:
            raise InputError(f"{self.where}: {name}: no such cell (its column missing or the row short), allowed: "
                             f"a row with every column the importer reads")
        return raw

    def get(self, name: str, default: str = "") -> str:
        """The cell's text, or `default` where the row has no such cell."""
        raw = self.cells.get(name)
        return default if raw is None else raw

    def number(self, name: str) -> float:
        """The cell as a number."""
        raw = self[name]
        if not raw.strip():
            raise InputError(f"{self.where}: {name}: found an empty cell, allowed: a number")
        try:
            return float(raw)
        except ValueError:
            raise InputError(f"{self.where}: {name}: found {raw!r}, allowed: a number") from None

    def whole(self, name: str) -> int:
        """The cell as a whole number."""
        value = self.number(name)
        if not value.is_integer():
            raise InputError(f"{self.where}: {name}: found {self[name]!r}, allowed: a whole number")
        return int(value)


def source_rows(path: Path) -> Iterator[SourceRow]:
    """Each row of a gzipped CSV file, with its place."""
    with gzip.open(path, "rt", newline="") as f:
        reader = csv.DictReader(f)
        for cells in reader:
            yield SourceRow(cells, f"{path}:{reader.line_num}")
