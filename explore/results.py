"""results.csv: one row per finished design point, appended and flushed as each finishes.

Running the same sweep again reads the finished rows back and skips their points; a row cut short by a
kill is dropped (and its point evaluated again), so nothing finished is lost and nothing is duplicated.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

from workloads.errors import InputError


def _cell(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return ""
    return value


class ResultsTable:
    """An append-only CSV with a fixed header, keyed by point_id."""

    def __init__(self, path: str | Path, columns: list[str]):
        self.path = Path(path)
        self.columns = list(columns)

    def load(self) -> dict[str, dict[str, str]]:
        """Finished rows by point_id; rewrites the file without a trailing partial row if there is one."""
        if not self.path.exists():
            return {}
        text = self.path.read_text()
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames and list(reader.fieldnames) != self.columns:
            raise InputError(f"{self.path}: written by a sweep with other columns (different overrides); "
                             f"use another --out folder")
        rows, complete = {}, True
        for row in reader:
            if None in row or any(v is None for v in row.values()) or not row.get("point_id"):
                complete = False  # a line cut short by a kill
                continue
            rows[row["point_id"]] = row
        if not complete or (text and not text.endswith("\n")):
            self._rewrite(list(rows.values()))
        return rows

    def _rewrite(self, rows: list[dict]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Append rows and push them to disk before returning."""
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
            f.flush()
            os.fsync(f.fileno())


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """All rows of a results CSV, in file order."""
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))
