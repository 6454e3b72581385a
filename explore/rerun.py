"""A sweep run again on its output folder: which points are stored already, and whether the report drawn last
time still shows these results (then re-drawing it can be skipped).

The report is stamped with a hash of what it was drawn from (the rows, in order, and the goals and sweep file
kept beside them) in STAMP_NAME; a rerun that would draw it from the same inputs keeps it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from explore.model_version import model_digest, report_digest
from explore.results import DB_NAME, plain, read_results
from explore.rows import count_label
from workloads.atomic_write import replacing

REPORT_FILES = ("report.html", "report.md")
STAMP_NAME = ".report-stamp.json"
FIGURES = "figures"  # the report's figure folder (explore/report.py)


def stored_ids(out: Path) -> frozenset[str]:
    """Ids of the points stored in out/results.sqlite (none for a new folder, or one that is not a results store:
    the run itself says what is wrong with it)."""
    db = out / DB_NAME
    if not db.is_file():
        return frozenset()
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return frozenset(r[0] for r in conn.execute("SELECT point_id FROM results"))
    except sqlite3.Error:
        return frozenset()


def stored_of(sweep, stored: frozenset[str]) -> tuple[frozenset[str], frozenset[str]]:
    """A grid's distinct point ids and those of them among `stored` (stored_ids): a run takes their rows from the
    store and evaluates the others."""
    ids = frozenset(sweep.points().point_ids())
    return ids, stored & ids


def stored_label(sweep, out: Path) -> str:
    """How many of the sweep's points out/ stores: 'k of N design points stored' for a grid (stored_of), 'k design
    points stored' for a search, whose points are those it has asked for so far."""
    stored = stored_ids(out)
    if sweep.spec.search.strategy != "grid":
        return f"{count_label(len(stored), 'design point')} stored"
    ids, have = stored_of(sweep, stored)
    return f"{len(have):,} of {count_label(len(ids), 'design point')} stored"


def other_models(out: Path) -> list[str]:
    """Digests of the cost models (explore/model_version.py) other than this one that priced rows stored in
    out/results.sqlite (none for a new folder, or one written before stores kept them)."""
    db = out / DB_NAME
    if not db.is_file():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'models'").fetchone()
    except sqlite3.Error:
        return []
    return [d for d in json.loads(row[0]) if d != model_digest()] if row else []


def report_inputs(rows: list[dict[str, Any]], columns: list[str], kept: dict[str, str]) -> str:
    """A hash of what a report is drawn from: the rows in order, every results column of each as stored (a row
    just evaluated hashes as it does read back), the files kept beside them, and the code that draws it (a report
    of an older version lacks its newer figures)."""
    table = [{c: row.get(c) for c in columns} for row in rows]
    digest = hashlib.sha256(json.dumps(table, default=plain).encode())
    digest.update(json.dumps(kept, sort_keys=True).encode())
    digest.update(report_digest().encode())
    return digest.hexdigest()


def stored_report_current(sweep, out: Path, columns: list[str], kept: dict[str, str], stored: frozenset[str]) -> bool:
    """Whether a run of the grid `sweep` into out/, which stores every one of its points (`stored`: stored_ids), would
    keep the report there: it would draw it from the stored rows in the grid's order and the files `kept` beside
    them, and the report was drawn from those (report_current)."""
    if sweep.spec.search.strategy != "grid" or not stored:
        return False
    ids = list(dict.fromkeys(sweep.points().point_ids()))  # in the order the grid asks for them (run_sweep's rows)
    if not stored.issuperset(ids):
        return False
    by_id = {row["point_id"]: row for row in read_results(out)}
    rows = [by_id.get(i) for i in ids]
    return None not in rows and report_current(out, report_inputs(rows, columns, kept))


def report_current(out: Path, inputs: str) -> bool:
    """Whether the report in `out` was drawn from these inputs (report_inputs) and its files, figures included,
    are all there."""
    stamp = out / STAMP_NAME
    if not stamp.is_file() or not all((out / name).is_file() for name in REPORT_FILES):
        return False
    try:
        stamped = json.loads(stamp.read_text(encoding="utf-8"))
        figures = stamped.get("figures", [])
        return stamped.get("inputs") == inputs and all((out / FIGURES / name).is_file() for name in figures)
    except (ValueError, AttributeError, TypeError):  # an unreadable stamp: draw again
        return False


def stamp_report(out: Path, inputs: str) -> None:
    """Record what the report just drawn in `out` was drawn from, and the figures it drew."""
    figures = sorted(path.name for path in (out / FIGURES).glob("*.png"))
    with replacing(out / STAMP_NAME) as tmp:  # a run killed while writing leaves no half stamp
        tmp.write_text(json.dumps({"inputs": inputs, "figures": figures}), encoding="utf-8")


def unstamp_report(out: Path) -> None:
    """Forget what the report in `out` was drawn from: it was drawn from something else (`explore report` draws
    every stored row), so the sweep's next run draws its own."""
    (out / STAMP_NAME).unlink(missing_ok=True)
