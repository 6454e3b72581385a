"""results.sqlite: each batch committed once, kills lose nothing committed, results.csv exported from it."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys

import pytest
from tiny_sweep import write_tiny_model

from explore import runner
from explore.results import ResultsStore, read_results, read_rows
from explore.rows import normalize_row
from explore.runner import columns_for, run_sweep
from explore.sweep import load_sweep
from workloads.errors import InputError


@pytest.fixture
def sweep(tmp_path):
    """12 points, 6 of them on a device too small for the model (NaN metrics and a reason)."""
    model = write_tiny_model(tmp_path)
    path = tmp_path / "sweep.yaml"
    path.write_text(f"name: store\nmodel: {model}\ndevice: [h100-sxm, l4]\n"
                    "workload: {batch: [1, 2, 4], prompt: 16, output: 4}\n"
                    "overrides: {device.memory.capacity_GB: [0.000001, 80]}\n")
    return load_sweep(str(path))


def _csv_cells(row: dict, columns: list[str]) -> dict[str, str]:
    """A row as the csv module writes it (NaN and None as empty cells)."""
    def cell(v):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
    return {c: cell(row.get(c)) for c in columns}


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_csv_regenerated_from_the_database_equals_the_rows(tmp_path, sweep):
    out = tmp_path / "out"
    rows = run_sweep(sweep, out)
    columns = columns_for(sweep)
    assert len(rows) == 12 and sum(not r["fits_in_memory"] for r in rows) == 6
    appended = (out / "results.csv").read_text()
    (out / "results.csv").unlink()
    with ResultsStore(out, columns) as store:
        store.export([r["point_id"] for r in rows])
    assert (out / "results.csv").read_text() == appended
    assert read_rows(out / "results.csv") == [_csv_cells(r, columns) for r in rows]
    # Typed values from the database read the same as the CSV's strings once normalized.
    from_db = read_results(out)
    assert [r["point_id"] for r in from_db] == [r["point_id"] for r in rows]
    assert _same([normalize_row(r) for r in from_db], [normalize_row(r) for r in read_rows(out / "results.csv")])
    assert _same(from_db, [{c: r.get(c) for c in columns} for r in rows])


def test_resume_reuses_stored_rows_and_keeps_each_point_once(tmp_path, sweep):
    out = tmp_path / "out"
    first = run_sweep(sweep, out)
    again = run_sweep(sweep, out)  # nothing evaluated: every row comes back from the database
    columns = columns_for(sweep)
    assert _same([{c: r.get(c) for c in columns} for r in again], [{c: r.get(c) for c in columns} for r in first])
    with ResultsStore(out, columns) as store:
        store.append(first[:3])  # a point stored twice keeps its first row
        assert len(store.load()) == 12
    assert len(read_rows(out / "results.csv")) == 12


def test_a_kill_inside_a_transaction_stores_nothing_of_it(tmp_path, sweep):
    columns = columns_for(sweep)
    rows = [p.row() | {"fits_in_memory": True} for p in sweep.points()]
    with ResultsStore(tmp_path, columns) as store:
        store.append(rows[:4])
    script = ("import os, signal, sqlite3, sys\n"
              "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
              "db.execute('BEGIN IMMEDIATE')\n"
              "db.executemany('INSERT INTO results (point_id) VALUES (?)', [(str(i),) for i in range(100)])\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    killed = subprocess.run([sys.executable, "-c", script, str(tmp_path / "results.sqlite")])
    assert killed.returncode == -9
    with ResultsStore(tmp_path, columns) as store:
        stored = store.load()
        assert list(stored) == [r["point_id"] for r in rows[:4]]
        store.append(rows[4:])
    assert [r["point_id"] for r in read_rows(tmp_path / "results.csv")] == [r["point_id"] for r in rows]


def test_a_results_csv_without_database_is_imported(tmp_path, sweep):
    out = tmp_path / "old"
    rows = run_sweep(sweep, out)
    (out / "results.sqlite").unlink()
    text = (out / "results.csv").read_text()
    (out / "results.csv").write_text(text[:-40])  # the last line cut short by a kill
    with ResultsStore(out, columns_for(sweep)) as store:
        stored = store.load()
    assert list(stored) == [r["point_id"] for r in rows[:-1]]
    assert run_sweep(sweep, out)[-1]["point_id"] == rows[-1]["point_id"]
    assert (out / "results.csv").read_text() == text


def test_other_columns_are_refused(tmp_path, sweep):
    with ResultsStore(tmp_path, columns_for(sweep)) as store:
        store.load()
    with pytest.raises(InputError, match=r"other results columns \(\+x, -model, -device"), \
            ResultsStore(tmp_path, ["point_id", "x"]) as store:
        store.load()


def test_parquet_export_has_typed_columns(tmp_path, sweep):
    pq = pytest.importorskip("pyarrow.parquet")
    rows = run_sweep(sweep, tmp_path)
    table = pq.read_table(tmp_path / "results.parquet")
    assert table.column_names == columns_for(sweep) and table.num_rows == len(rows)
    assert table.column("batch").to_pylist() == [r["batch"] for r in rows]
    assert table.column("fits_in_memory").to_pylist() == [r["fits_in_memory"] for r in rows]


def test_another_sweeps_folder_is_refused_and_the_same_sweep_resumes(tmp_path, sweep):
    with ResultsStore(tmp_path, columns_for(sweep), "first") as store:
        store.load()
    with pytest.raises(InputError, match="holds the results of sweep 'first', not 'second'"), \
            ResultsStore(tmp_path, columns_for(sweep), "second") as store:
        store.load()
    with ResultsStore(tmp_path, columns_for(sweep), "first") as store:
        assert store.load() == {}


def _identical(a, b) -> bool:
    """Equal values of equal types (True is not 1, 1 is not 1.0, NaN is NaN, None is None)."""
    return json.dumps(a) == json.dumps(b) and [type(v) for v in a] == [type(v) for v in b]


def test_stored_values_read_back_as_given(tmp_path):
    columns = ["point_id", "text", "empty", "int", "float", "whole", "nan", "none", "yes", "no", "big"]
    given = [{"point_id": "a", "text": "x, \"y\"\nz", "empty": "", "int": 3, "float": 0.1, "whole": 3.0,
              "nan": math.nan, "none": None, "yes": True, "no": False, "big": 2**62},
             {"point_id": "b", "text": "None", "empty": "True", "int": -1, "float": -0.0, "whole": 1e300,
              "nan": math.inf, "none": "nan", "yes": 1, "no": 0.0, "big": -(2**62)}]
    with ResultsStore(tmp_path, columns) as store:
        store.load()
        store.append(given)
    with ResultsStore(tmp_path, columns) as store:
        stored = store.load()
    for row in given:
        assert _identical([stored[row["point_id"]][c] for c in columns], [row[c] for c in columns])
    for row, expected in zip(read_results(tmp_path), given, strict=True):
        assert _identical(list(row.values()), list(expected.values()))
    # results.csv as the csv module writes the same rows (the appended lines and a rewrite agree).
    appended = (tmp_path / "results.csv").read_text()
    with ResultsStore(tmp_path, columns) as store:
        store.export(["b", "a"])
        store.export(["a", "b"])
    assert (tmp_path / "results.csv").read_text() == appended


def _legacy_store(out, sweep, rows) -> None:
    """out/results.sqlite as the store wrote it before its typed layout: one JSON object per row."""
    columns = columns_for(sweep)
    out.mkdir()
    db = sqlite3.connect(out / "results.sqlite")
    db.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                     "CREATE TABLE results (point_id TEXT PRIMARY KEY, row TEXT NOT NULL, pos INTEGER);")
    db.executemany("INSERT INTO meta VALUES (?, ?)", [("sweep", sweep.name), ("columns", json.dumps(columns))])
    db.executemany("INSERT INTO results VALUES (?, ?, ?)",
                   [(r["point_id"], json.dumps({c: r.get(c) for c in columns}), i) for i, r in enumerate(rows)])
    db.commit()
    db.close()


def test_a_store_of_json_rows_is_read_and_resumed(tmp_path, sweep, monkeypatch):
    """A results folder written before the typed layout: the report reads it as it is, and a run resumes it
    (converted in place) without evaluating a stored point again."""
    rows = run_sweep(sweep, tmp_path / "new")
    columns = columns_for(sweep)
    kept = [{c: r.get(c) for c in columns} for r in rows[:7]]
    _legacy_store(tmp_path / "old", sweep, rows[:7])
    assert _same(read_results(tmp_path / "old"), kept)
    evaluated = []
    real = runner.evaluate_blocks
    monkeypatch.setattr(runner, "evaluate_blocks", lambda ev, blocks: evaluated.extend(blocks) or real(ev, blocks))
    resumed = run_sweep(sweep, tmp_path / "old")
    assert sum(b.size for b in evaluated) == len(rows) - 7
    assert _same([{c: r.get(c) for c in columns} for r in resumed], [{c: r.get(c) for c in columns} for r in rows])
    db = sqlite3.connect(tmp_path / "old" / "results.sqlite")
    assert "row" not in [name for _, name, *_ in db.execute("PRAGMA table_info(results)")]
    db.close()
    assert _same(read_results(tmp_path / "old"), [{c: r.get(c) for c in columns} for r in rows])
    assert (tmp_path / "old" / "results.csv").read_text() == (tmp_path / "new" / "results.csv").read_text()


def test_without_pyarrow_a_stale_parquet_is_removed(tmp_path, sweep, monkeypatch, caplog):
    """A results.parquet written by a run that had pyarrow, rerun where pyarrow is missing, would keep the old rows
    beside a results.csv that has new ones: it is removed, and the run says so."""
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    (tmp_path / "results.parquet").write_bytes(b"rows of an earlier run")
    rows = run_sweep(sweep, tmp_path)
    assert rows and (tmp_path / "results.csv").is_file()
    assert not (tmp_path / "results.parquet").exists()
    assert "results.parquet: removed: pyarrow is not installed" in caplog.text
