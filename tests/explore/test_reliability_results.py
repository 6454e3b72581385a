"""A results folder damaged or edited by hand: the run and `explore report` refuse it in one line naming the file, the
row or column and what was found, never a traceback and never a value read as something else."""

from __future__ import annotations

import csv
import json
import sqlite3

import pytest

from explore.results import ResultsStore, read_results
from workloads.errors import InputError

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

COLUMNS = ["point_id", "model", "tokens_per_s", "fits_in_memory"]
ROWS = [{"point_id": "a", "model": "m", "tokens_per_s": 12.5, "fits_in_memory": True},
        {"point_id": "b", "model": "m", "tokens_per_s": 40.0, "fits_in_memory": True}]


def _store(out) -> None:
    with ResultsStore(out, COLUMNS) as store:
        store.load()
        store.append(ROWS)


def _cell(out, column: str) -> str:
    """The SQL column of a results column in out/results.sqlite (c<i>: its place in the stored column list)."""
    with sqlite3.connect(out / "results.sqlite") as db:
        columns = json.loads(db.execute("SELECT value FROM meta WHERE key = 'columns'").fetchone()[0])
    return f"c{columns.index(column)}"


def _sql(out, statement: str) -> None:
    db = sqlite3.connect(out / "results.sqlite")
    db.execute(statement)
    db.commit()
    db.close()


def test_a_store_with_a_column_dropped_by_hand_is_refused_in_one_line(tmp_path):
    out = tmp_path / "out"
    _store(out)
    _sql(out, f"ALTER TABLE results DROP COLUMN {_cell(out, 'tokens_per_s')}")
    with pytest.raises(InputError, match=r"results\.sqlite: tokens_per_s: missing") as refused:
        ResultsStore(out, COLUMNS).load()  # was sqlite3.OperationalError: no such column: c2 (a traceback)
    assert "\n" not in str(refused.value)
    with pytest.raises(InputError, match=r"results\.sqlite: tokens_per_s: missing"):
        read_results(out)  # `explore report`: was "not a sweep's results store (no such column: c2)"


def test_a_non_number_in_a_number_column_of_the_store_is_refused(tmp_path):
    out = tmp_path / "out"
    _store(out)
    _sql(out, f"UPDATE results SET {_cell(out, 'tokens_per_s')} = 'abc' WHERE point_id = 'b'")
    # Was read as NaN: point b counted as infeasible, silently.
    with pytest.raises(InputError, match=r"results\.sqlite: point b: tokens_per_s: found 'abc', allowed: a number"):
        ResultsStore(out, COLUMNS).load()
    with pytest.raises(InputError, match=r"^\S*results\.sqlite: point b: tokens_per_s: found 'abc'"):
        read_results(out)


def test_a_non_number_in_a_results_csv_alone_is_refused_and_numbers_as_text_are_read(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerow(["a", "m", "12.5", "True"])  # as csv writes a row: every cell text
        writer.writerow(["b", "m", "", "False"])  # an empty cell: NaN, as written for a missing metric
    assert [row["tokens_per_s"] for row in read_results(out)] == ["12.5", ""]
    with (out / "results.csv").open("a", newline="") as f:
        csv.writer(f).writerow(["c", "m", "fast", "maybe"])
    with pytest.raises(InputError, match=r"results\.csv:4: tokens_per_s: found 'fast', allowed: a number"):
        read_results(out)
    # The run imports a results.csv without a database (a folder from before it) through the same check, before it
    # makes the database: a second run is refused the same way (an empty store left behind made it start afresh and
    # overwrite results.csv).
    for _ in range(2):
        with pytest.raises(InputError, match=r"results\.csv:4: tokens_per_s: found 'fast', allowed: a number"):
            ResultsStore(out, COLUMNS).load()
        assert not (out / "results.sqlite").exists()


def test_a_folder_this_user_cannot_write_is_refused_naming_the_flag_and_what_is_allowed(tmp_path, monkeypatch):
    """A read-only results folder (chmod a-w; root writes anyway, so the OS's refusal is simulated): the run and
    `explore report` said only "out/.explore.lock: Permission denied" (the CLI's catch-all for OSError)."""
    import os

    from explore.results import LOCK_NAME, folder_lock

    out = tmp_path / "out"
    out.mkdir()
    real_open = os.open

    def refusing_open(path, *args, **kwargs):
        if str(path).endswith(LOCK_NAME):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    refusal = (r"^--out: found '.*out', which this user cannot write \(.*\.explore\.lock: Permission denied\); "
               r"allowed: a folder this user can write")
    with pytest.raises(InputError, match=refusal), folder_lock(out):
        pass


def test_a_results_csv_alone_of_other_columns_is_refused_naming_them(tmp_path):
    """A folder from before the database whose results.csv has a column deleted by hand (or another sweep's): was
    "written by a sweep with other columns (different overrides); use another --out folder", naming no column."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").write_text("point_id,model,fits_in_memory\r\na,m,True\r\n")
    with pytest.raises(InputError, match=r"results\.csv: written by a sweep with other results columns "
                                         r"\(\+tokens_per_s\); allowed: the same sweep, or another --out folder"):
        ResultsStore(out, COLUMNS).load()
    assert not (out / "results.sqlite").exists()


def test_a_store_this_user_cannot_write_is_refused_before_the_run(tmp_path, monkeypatch):
    """results.sqlite read-only (chmod 444; root writes anyway, so the store is opened read-only here): it opened and
    read, and the run's first write, its export after every point was evaluated, ended in a traceback
    (sqlite3.OperationalError: attempt to write a readonly database)."""
    out = tmp_path / "out"
    _store(out)
    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda path, **kw: connect(f"file:{path}?mode=ro", uri=True, **kw))
    with pytest.raises(InputError, match=r"results\.sqlite: found a results store this user cannot write \(attempt "
                                         r"to write a readonly database\); allowed: one this user can write"):
        ResultsStore(out, COLUMNS).load()


def test_a_results_csv_alone_cut_short_by_a_kill_reads_its_complete_rows(tmp_path):
    """`explore report` on a folder of results.csv alone whose last line a kill cut short: the cut row was read with
    its missing cells None (a point without its metrics in the report); the run's import of the file drops it."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").write_text("point_id,model,tokens_per_s,fits_in_memory\r\na,m,12.5,True\r\nb,m,4")
    assert [row["point_id"] for row in read_results(out)] == ["a"]
    with ResultsStore(out, COLUMNS) as store:
        assert list(store.load()) == ["a"]


@pytest.mark.parametrize("columns, lines", [
    (["point_id", "model", "fits_in_memory", "tokens_per_s"], "a,m,True,12.5\r\nb,m,True,4"),
    (COLUMNS, "a,m,12.5,True\r\nb,m,4.25,Tr"),
])
def test_a_results_csv_alone_cut_inside_its_last_cell_reads_the_rows_before(tmp_path, caplog, columns, lines):
    """Cut inside its last cell, a row has every cell: 4 of 4.25 tokens/s was read as point b's, and 'Tr' of True
    refused the folder as "a results file edited by hand". The file ends inside the row (no line end after it, where
    the writer ends every line): the row is left out, with a warning, and a run evaluates its point again."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").write_text(",".join(columns) + "\r\n" + lines, newline="")
    assert [row["point_id"] for row in read_results(out)] == ["a"]
    assert caplog.messages[-1].startswith(f"{out / 'results.csv'}:3: left out: the file ends inside this row")
    with ResultsStore(out, columns) as store:
        assert list(store.load()) == ["a"]
