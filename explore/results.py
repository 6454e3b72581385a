"""The results store of a sweep: results.sqlite, with results.csv (and results.parquet) exported from it.

results.sqlite (WAL mode) holds one row per finished design point, keyed by point_id (PRIMARY KEY). Each
finished batch is inserted in one transaction and committed before `append` returns, so a kill -9 at any
moment loses no finished point, and the key makes a point impossible to store twice. A row is one SQL column per
results column (c<i> for the i-th of the columns listed in the meta table), typed as the evaluation gave it: an
int, a float or a text as itself, NaN as NULL (SQLite's only form of it), and None, True and False as the BLOBs
'None', 'True' and 'False', so reading a row back gives the values an evaluation gave. A block's rows are written
with one executemany of tuples, no per-row document. A store written before (one JSON object per row, in a `row`
column) is converted to this layout in one transaction when a run opens it, and read as it is by read_results.

results.csv is the export users read: rows are appended to it as batches finish, and it is rewritten from
the database when a run starts (dropping a line cut short by a kill, adding rows committed just before one)
and when a run ends, in the order the search strategy asked for the points where known, else in insertion
order. results.parquet is written next to it at the end of a run when pyarrow is importable.

Running the same sweep again loads the stored rows and skips their points. An output folder written before
the database existed (results.csv only) is imported into a new database on first load.

One run at a time per folder (folder_lock: an flock on .explore.lock, released by the kernel however the run
ends). Files rewritten whole go through a temporary file of a unique name beside them, renamed over them.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import itertools
import json
import logging
import math
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from explore.columns import Columns
from explore.model_version import model_digest
from explore.out_paths import check_out_folder
from explore.results_csv import csv_text
from workloads.atomic_write import replacing
from workloads.csv_rows import table_rows
from workloads.errors import InputError

log = logging.getLogger(__name__)

DB_NAME = "results.sqlite"
CSV_NAME = "results.csv"
PARQUET_NAME = "results.parquet"

_META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
# Exported order: asked order where known, then insertion order (rowid grows with each insert).
_ORDER = "ORDER BY pos IS NULL, pos, rowid"
# Values SQLite has no form of, stored as BLOBs (NaN is NULL); no results value is ever bytes.
_DECODED = {b"None": None, b"True": True, b"False": False}
_ENCODED = {value: blob for blob, value in _DECODED.items() if value is not None}
_NONE = b"None"
_PLAIN = frozenset((str, int, float))


def _cell_names(columns: list[str]) -> list[str]:
    """The SQL column of each results column: point_id, else c<i>."""
    if "point_id" not in columns:
        raise ValueError(f"results columns without point_id: {columns}")
    return ["point_id" if name == "point_id" else f"c{i}" for i, name in enumerate(columns)]


def _table_sql(columns: list[str]) -> str:
    cells = [name for name in _cell_names(columns) if name != "point_id"]
    # point_id: DesignPoint.point_id; pos: the position the strategy asked for it in (set on export), else NULL;
    # the results columns untyped, so each value keeps the type it was stored with.
    return f"CREATE TABLE results (point_id TEXT PRIMARY KEY, pos INTEGER{''.join(f', {c}' for c in cells)})"


def _encoded(value: Any) -> Any:
    """A value as stored: str, int and float as themselves (SQLite stores NaN as NULL), the rest as BLOBs."""
    if value.__class__ in _PLAIN:
        return value
    if value is None:
        return _NONE
    if isinstance(value, bool | np.bool_):
        return _ENCODED[bool(value)]
    if isinstance(value, np.generic):
        return _encoded(value.item())
    for base in (str, int, float):  # a subclass: as its base type
        if isinstance(value, base):
            return base(value)
    return str(value)  # as the JSON rows stored it (json default=str)


def _encoded_column(columns: Columns, name: str) -> Iterable[Any]:
    """Column `name` of a batch as stored, row by row (None where the batch lacks it)."""
    if name not in columns.arrays:
        return itertools.repeat(_encoded(columns.constants.get(name)), columns.size)
    values = columns.arrays[name]
    if isinstance(values, np.ndarray):
        if values.dtype.kind == "b":
            return np.where(values, _ENCODED[True], _ENCODED[False]).tolist()
        if values.dtype.kind in "fiu":
            return values.tolist()
    return [v if v.__class__ in _PLAIN else _encoded(v) for v in values]


def _decoded(row: Sequence[Any]) -> list[Any]:
    """A stored row's values as they were given (NULL: NaN; BLOBs: None, True, False)."""
    return [math.nan if v is None else _DECODED[v] if v.__class__ is bytes else v for v in row]


LOCK_NAME = ".explore.lock"  # in the output folder; the lock is an flock on it, the file itself stays
_held: dict[Path, int] = {}  # folders this process holds, with how many nested folder_lock blocks hold each


@contextlib.contextmanager
def folder_lock(out_dir: str | Path) -> Iterator[None]:
    """Hold an output folder for one run: a second run on it (another process) is refused in one line.

    The lock is an OS lock (flock) on out_dir/.explore.lock, so the kernel releases it when the holding
    process ends, however it ends: a run killed with -9 leaves no stale lock to clean up, and the pid in the
    file is only read to name a live holder. Pool workers forked by the run share its open file and so keep
    the lock until they exit (they die with the run: explore/runner.py). Re-entrant within a process: the
    command holds the folder across the run and the report, and run_sweep holds it for direct callers.
    """
    out_dir = Path(out_dir)
    check_out_folder("--out", out_dir, "a folder (new or a sweep's own)")
    key = out_dir.resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(out_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except PermissionError as err:  # a read-only folder (or one under it): the first thing a run writes is the lock
        raise InputError(f"--out: found {str(out_dir)!r}, which this user cannot write ({err.filename}: "
                         f"{err.strerror}); allowed: a folder this user can write (new, or a sweep's own)") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise InputError(f"{out_dir}: in use by another explore run (pid {holder}); allowed: one run per "
                             f"results folder: wait for that run to end, or use another --out folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
    finally:
        os.close(fd)  # releases the flock (pool workers are shut down by now)


def plain(value: Any) -> Any:
    """JSON fallback for numpy scalars and the like."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _csv_lines(columns: list[str], rows: Iterable[dict[str, Any]]) -> Iterator[list[Any]]:
    """The cells of each row in column order: empty for a missing value, None or NaN (csv writes None as '')."""
    for row in rows:
        yield [None if v != v else v for v in map(row.get, columns)]  # v != v: NaN


def _write_csv(path: Path, columns: list[str], rows: Iterable[dict[str, Any]]) -> None:
    """Write a complete CSV atomically (a temporary file renamed over the old one)."""
    with replacing(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(_csv_lines(columns, rows))


def _read_legacy_csv(path: Path, columns: list[str]) -> list[dict[str, str]]:
    """Complete rows of a results.csv written before the database existed (a line cut short is dropped)."""
    with path.open(newline="") as f:
        header, lines = table_rows(f, str(path))
    if header and header != columns:
        raise InputError(f"{path}: written by a sweep with other results columns ({_column_change(header, columns)}); "
                         f"allowed: the same sweep, or another --out folder")
    rows = [(line, row) for line, row in lines if _complete(row) and row.get("point_id")]
    _check_rows((f"{path}:{line}" for line, _ in rows), (row for _, row in rows), columns)
    return [row for _, row in rows]


def _column_change(old: Iterable[str], new: Iterable[str]) -> str:
    """How a sweep's results columns differ from those a folder was written with: '+added, -removed'."""
    old, new = list(old), list(new)
    change = [f"+{c}" for c in new if c not in old] + [f"-{c}" for c in old if c not in new]
    return ", ".join(change) or "another order"


def _complete(row: dict[Any, Any]) -> bool:
    """Whether a csv.DictReader row has a cell for every column and none past them (a line cut short has None)."""
    return None not in row and all(v is not None for v in row.values())


class ResultsStore:
    """The rows of one output folder, keyed by point_id: load() what is stored, append() finished batches."""

    def __init__(self, out_dir: str | Path, columns: list[str], sweep_name: str | None = None):
        self.out_dir = Path(out_dir)
        self.columns = list(columns)
        self.sweep_name = sweep_name  # stored with the results: another sweep's rows are not mixed in
        self.db_path = self.out_dir / DB_NAME
        self.csv_path = self.out_dir / CSV_NAME
        self._db: sqlite3.Connection | None = None
        # Ids appended to a store that was empty when loaded, in order (None: the store had rows, or was not loaded).
        self._appended: list[str] | None = None

    # -- database -------------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            fresh = not self.db_path.exists()
            if self.out_dir.exists() and not self.out_dir.is_dir():
                raise InputError(f"--out: {self.out_dir} is a file, allowed: a folder (new or a sweep's own)")
            # An output folder from before the database: its rows are read (and refused) before the database file is
            # made, so a refused import leaves no empty store behind that a rerun would take for this folder's own.
            legacy = _read_legacy_csv(self.csv_path, self.columns) if fresh and self.csv_path.exists() else None
            self.out_dir.mkdir(parents=True, exist_ok=True)
            try:
                db = sqlite3.connect(self.db_path, isolation_level=None)  # transactions are explicit below
                # 16 KiB pages (a new store's; an existing one keeps its own): a row of a few dozen columns is about
                # 0.4 KB, and bulk inserts into 4 KiB pages spend a fifth of their time more splitting them.
                db.execute("PRAGMA page_size=16384")
                db.execute("PRAGMA journal_mode=WAL")
                # A commit is in the write-ahead log when it returns: a run killed at any moment (kill -9 included)
                # loses no committed batch. Only an OS crash or power cut may lose the last few, which a rerun
                # evaluates again (the database stays consistent); FULL would also sync each commit to the disk.
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(_META)
                stored = db.execute("SELECT value FROM meta WHERE key = 'columns'").fetchone()
                # A store this user cannot write opens and reads; its first write, at the end of the run, would fail.
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('write_check', '')")
                finally:
                    db.execute("ROLLBACK")
            except sqlite3.OperationalError as err:
                if "readonly" not in str(err):
                    raise InputError(f"{self.db_path}: cannot be used as a results store ({err}); allowed: a "
                                     f"sweep's own results.sqlite, or a new --out folder") from None
                raise InputError(f"{self.db_path}: found a results store this user cannot write ({err}); allowed: "
                                 f"one this user can write (the run stores its rows and their order in it), or "
                                 f"another --out folder") from None
            except sqlite3.DatabaseError as err:
                raise InputError(f"{self.db_path}: cannot be used as a results store ({err}); allowed: a "
                                 f"sweep's own results.sqlite, or a new --out folder") from None
            stored_name = db.execute("SELECT value FROM meta WHERE key = 'sweep'").fetchone()
            if stored_name is None and self.sweep_name is not None:
                db.execute("INSERT INTO meta VALUES ('sweep', ?)", (self.sweep_name,))
            elif stored_name is not None and self.sweep_name not in (None, stored_name[0]):
                db.close()
                raise InputError(f"{self.db_path}: holds the results of sweep {stored_name[0]!r}, not "
                                 f"{self.sweep_name!r}; allowed: that sweep (to resume it), or another --out folder")
            if stored is None:
                db.execute("INSERT INTO meta VALUES ('columns', ?)", (json.dumps(self.columns),))
            elif json.loads(stored[0]) != self.columns:
                db.close()
                change = _column_change(json.loads(stored[0]), self.columns)
                raise InputError(f"{self.db_path}: written by a sweep with other results columns "
                                 f"({change}: the knobs it sets, its overrides, derived "
                                 f"knobs, constraints or SLO changed); allowed: the same sweep, or another --out "
                                 f"folder")
            layout = _layout(db)
            if layout and "row" not in layout and (missing := _missing_cells(layout, self.columns)):
                db.close()
                raise InputError(f"{self.db_path}: {', '.join(missing)}: missing from its results table, allowed: "
                                 f"the results table a sweep writes (not edited by hand), or a new --out folder")
            self._db = db
            if not layout:
                db.execute(_table_sql(self.columns))
            elif "row" in layout:
                self._convert_json_rows()
            if legacy is not None:
                self._insert([Columns.from_rows(legacy)])
        return self._db

    def _convert_json_rows(self) -> None:
        """Rewrite a store of JSON rows (written before the typed layout) in the typed layout, in one transaction:
        the same rows, order and asked positions."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            stored = db.execute("SELECT rowid, row, pos FROM results ORDER BY rowid").fetchall()
            rows = [_stored_row(self.db_path, rowid, text) for rowid, text, _ in stored]
            db.execute("DROP TABLE results")
            db.execute(_table_sql(self.columns))
            self._execute_inserts([Columns.from_rows(rows)], "INSERT INTO")
            db.executemany("UPDATE results SET pos = ? WHERE point_id = ?",
                           [(pos, row["point_id"]) for row, (_, _, pos) in zip(rows, stored, strict=True)
                            if pos is not None])
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _execute_inserts(self, batches: list[Columns], verb: str) -> None:
        cells = _cell_names(self.columns)
        sql = f"{verb} results ({', '.join(cells)}) VALUES ({', '.join('?' * len(cells))})"
        for batch in batches:
            self._db.executemany(sql, zip(*(_encoded_column(batch, name) for name in self.columns), strict=True))

    def _insert(self, batches: list[Columns]) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            # A point already stored keeps its first row: nothing is ever stored twice.
            before = db.total_changes
            self._execute_inserts(batches, "INSERT OR IGNORE INTO")
            if db.total_changes > before:
                # The cost models that priced the stored rows (explore/model_version.py): this one joins them once
                # it has stored a row (a rerun that only reads the folder prices nothing).
                models = db.execute("SELECT value FROM meta WHERE key = 'models'").fetchone()
                priced_by = json.loads(models[0]) if models else []
                if model_digest() not in priced_by:
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('models', ?)",
                               (json.dumps([*priced_by, model_digest()]),))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def rows(self) -> list[dict[str, Any]]:
        """All stored rows, in export order."""
        return _typed_rows(self._connect(), self.columns)

    def load(self) -> dict[str, dict[str, Any]]:
        """Finished rows by point_id, every one stored (a point the sweep had once may come back); brings results.csv
        in line with the database's current rows."""
        _check_store(self._connect(), self.columns, self.db_path)
        rows = {row["point_id"]: row for row in self.rows()}
        _write_csv(self.csv_path, self.columns, _typed_rows(self._connect(), self.columns, current=True))
        self._appended = [] if not rows else None  # ids appended since, while they are the whole store in order
        return rows

    def update(self, column: str, values: dict[str, Any]) -> None:
        """Set one column of stored rows (by point_id) in one committed transaction, and rewrite results.csv."""
        if not values:
            return
        db = self._connect()
        cell = _cell_names(self.columns)[self.columns.index(column)]
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(f"UPDATE results SET {cell} = ? WHERE point_id = ?",
                           [(_encoded(value), point_id) for point_id, value in values.items()])
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        _write_csv(self.csv_path, self.columns, _typed_rows(db, self.columns, current=True))

    def append(self, rows: Sequence[dict[str, Any]] | Sequence[Columns]) -> None:
        """Store finished rows (dicts, or batches of them as Columns) in one committed transaction, then append
        them to results.csv."""
        batches = [Columns.from_rows(rows)] if rows and isinstance(rows[0], dict) else [b for b in rows if b.size]
        if not batches:
            return
        self._connect()
        self._insert(batches)
        new = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        with self.csv_path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(self.columns)
            f.writelines(csv_text(batch, self.columns) for batch in batches)
        if self._appended is not None:
            for batch in batches:
                self._appended.extend(batch.column("point_id"))

    def export(self, order: Iterable[str] = (),
               stored: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Rewrite results.csv (and results.parquet) from the database: the ids in `order`, in that order, where an
        order is given (the points the sweep asked for: rows of points it no longer has stay in the database only),
        else every row.

        `stored`: every stored row by id in insertion order, where the caller holds them (saves reading them back).
        Returns the rows as exported.
        """
        db = self._connect()
        order = list(dict.fromkeys(order))
        if stored is not None:
            rows = [stored[i] for i in order] if order else list(stored.values())
        if self._appended is not None and order == self._appended:
            # Every row was appended this run, in the asked order, to a file rewritten when the run began:
            # the database's insertion order and results.csv are that order already.
            rows = self.rows() if stored is None else rows
            write_parquet(self.out_dir / PARQUET_NAME, self.columns, rows)
            return rows
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("UPDATE results SET pos = NULL")
            db.executemany("UPDATE results SET pos = ? WHERE point_id = ?",
                           [(i, point_id) for i, point_id in enumerate(order)])
            if order:  # rows stored after this (a later run's, killed or not) are current until it exports
                db.execute("INSERT OR REPLACE INTO meta VALUES ('exported_rowid', "
                           "(SELECT COALESCE(MAX(rowid), 0) FROM results))")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        rows = _typed_rows(db, self.columns, current=bool(order)) if stored is None else rows
        _write_csv(self.csv_path, self.columns, rows)
        write_parquet(self.out_dir / PARQUET_NAME, self.columns, rows)
        return rows

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_parquet(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> bool:
    """results.parquet with typed columns; skipped (False) when pyarrow is not importable, and a results.parquet
    there from a run that had it removed, with a notice: it would no longer hold what results.csv holds."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        if path.exists():
            path.unlink()
            log.warning("%s: removed: pyarrow is not installed to rewrite it from these results (results.csv holds "
                        "them)", path)
        return False
    from explore.rows import normalize_row

    typed = [normalize_row({c: row.get(c) for c in columns}) for row in rows]
    arrays = []
    for c in columns:
        values = [row[c] for row in typed]
        if any(isinstance(v, float) for v in values) and all(v is None or isinstance(v, int | float)
                                                             for v in values):
            values = [None if v is None else float(v) for v in values]  # ints and floats: one float column
        arrays.append(pa.array(values))
    with replacing(path) as tmp:
        pq.write_table(pa.Table.from_arrays(arrays, names=columns), tmp)
    return True


def read_results(out_dir: str | Path, required: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The rows of a sweep's output folder: from results.sqlite when there is one, else from results.csv. Every
    row must be a mapping holding the `required` columns (a store edited by hand, or a CSV another tool wrote,
    is refused in one line naming the row and what it lacks)."""
    out_dir = Path(out_dir)
    db_path = out_dir / DB_NAME
    if db_path.is_file():
        db = sqlite3.connect(db_path)
        try:
            if "row" in _layout(db):  # a store of JSON rows, written before the typed layout
                stored = db.execute(f"SELECT rowid, row FROM results {_ORDER}").fetchall()
                rows = [_stored_row(db_path, rowid, text) for rowid, text in stored]
                where = [f"{db_path}: row {rowid}" for rowid, _ in stored]
            else:
                columns = json.loads(db.execute("SELECT value FROM meta WHERE key = 'columns'").fetchone()[0])
                if missing := _missing_cells(_layout(db), columns):
                    raise InputError(f"{db_path}: {', '.join(missing)}: missing from its results table, allowed: the "
                                     f"results table a sweep writes (not edited by hand)")
                _check_store(db, columns, db_path)
                rows = _typed_rows(db, columns, current=True)
                where = [f"{db_path}: point {row['point_id']}" for row in rows]
        except InputError:
            raise
        except (sqlite3.DatabaseError, TypeError, ValueError) as err:
            raise InputError(f"{db_path}: not a sweep's results store ({err})") from None
        finally:
            db.close()
    else:
        rows = read_rows(out_dir / CSV_NAME)
        if rows and "point_id" not in rows[0]:
            raise InputError(f"{out_dir / CSV_NAME}: no point_id column: not a results table written by explore")
        # A line cut short by a kill (or holding cells past the header's) holds no finished point: left out, as a run
        # importing the file leaves it out.
        kept = [(f"{out_dir / CSV_NAME}:{line}", row) for line, row in enumerate(rows, start=2) if _complete(row)]
        where, rows = [place for place, _ in kept], [row for _, row in kept]
        _check_rows(where, rows, list(rows[0]) if rows else [])
    required = list(required)
    for place, row in zip(where, rows, strict=True):
        missing = [column for column in required if column not in row]
        if missing:
            raise InputError(f"{place}: {', '.join(missing)}: missing, allowed: a results row with every input "
                             f"column ({', '.join(required)})")
    return rows


def _layout(db: sqlite3.Connection) -> list[str]:
    """The SQL columns of a store's results table (none before it is made)."""
    return [name for _, name, *_ in db.execute("PRAGMA table_info(results)")]


def _missing_cells(layout: list[str], columns: list[str]) -> list[str]:
    """The results columns whose SQL column a store's results table lacks (a column dropped by hand)."""
    return [name for name, cell in zip(columns, _cell_names(columns), strict=True) if cell not in layout]


def _value_checks(columns: Iterable[str]) -> list[tuple[str, str]]:
    """The results columns that hold a number or a flag (the metrics registry's kinds), with what each allows."""
    from explore.rows import column_types

    _, flags, numbers = column_types()
    return [(name, "a number" if name in numbers else "True or False") for name in columns
            if name in numbers or name in flags]


def _bad_value(value: Any, allowed: str) -> bool:
    """Whether a stored value is text that a number (or flag) column cannot hold: numbers and flags are stored as
    themselves, and as text only in rows read from a CSV (every cell a string: '12.5', 'True', '' for NaN)."""
    if value.__class__ is not str or not value.strip():
        return False
    if allowed != "a number" and value.strip().lower() in ("true", "false"):
        return False
    try:
        float(value)
    except ValueError:
        return True
    return False


def _check_rows(where: Iterable[str], rows: Iterable[dict[str, Any]], columns: Iterable[str]) -> None:
    """InputError naming the first row (its place in `where`) with text in a number or flag column: a results file
    edited by hand, whose value would otherwise read as NaN (an infeasible point) or False."""
    checks = _value_checks(columns)
    for place, row in zip(where, rows, strict=False):
        for name, allowed in checks:
            if _bad_value(row.get(name), allowed):
                raise InputError(f"{place}: {name}: found {row[name]!r}, allowed: {allowed}, or empty (a results "
                                 f"file edited by hand: restore the value, or delete the row to evaluate it again)")


def _check_store(db: sqlite3.Connection, columns: list[str], db_path: Path) -> None:
    """_check_rows over a typed store: only rows holding text in a number or flag column are read back (an evaluated
    row holds none; a row imported from a CSV holds nothing but text)."""
    checks = _value_checks(columns)
    if not checks:
        return
    cell = dict(zip(columns, _cell_names(columns), strict=True))
    names = ["point_id", *(name for name, _ in checks)]
    text = " OR ".join(f"typeof({cell[name]}) = 'text'" for name, _ in checks)
    stored = db.execute(f"SELECT {', '.join(cell[n] for n in names)} FROM results WHERE {text} ORDER BY rowid")
    rows = [dict(zip(names, values, strict=True)) for values in stored]
    _check_rows((f"{db_path}: point {row['point_id']}" for row in rows), rows, columns)


def _typed_rows(db: sqlite3.Connection, columns: list[str], current: bool = False) -> list[dict[str, Any]]:
    """The rows of a store in the typed layout, in export order; `current`: only those of the sweep as last run (the
    points its last finished run asked for, and any stored since), not rows of points it no longer has."""
    cells = _cell_names(columns)
    exported = db.execute("SELECT value FROM meta WHERE key = 'exported_rowid'").fetchone() if current else None
    where = f"WHERE pos IS NOT NULL OR rowid > {int(exported[0])} " if exported else ""
    stored = db.execute(f"SELECT {', '.join(cells)} FROM results {where}{_ORDER}")
    return [dict(zip(columns, _decoded(row), strict=True)) for row in stored]


def _stored_row(db_path: Path, rowid: int, text: Any) -> dict[str, Any]:
    """One stored row, refused in one line when it is not the JSON object a run stores."""
    try:
        row = json.loads(text)
    except (TypeError, ValueError):
        row = None
    if not isinstance(row, dict) or not isinstance(row.get("point_id"), str):
        raise InputError(f"{db_path}: row {rowid}: found {str(text)[:60]!r}, allowed: a JSON object of results "
                         f"columns with a point_id (a row written by explore, not edited)")
    return row


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """All rows of a results CSV, in file order (a last row cut short left out: workloads/csv_rows.py)."""
    with Path(path).open(newline="") as f:
        return [row for _, row in table_rows(f, str(path))[1]]

