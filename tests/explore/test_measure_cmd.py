"""`explore measure` stores each shape as it is timed: an interrupted run keeps the shapes it finished, a rerun times
only the others, and a rerun under other settings (or into a table from before measured_as) times them all again."""

from __future__ import annotations

import pytest

from explore.cli import main
from kernels import harness
from kernels.measured import read_table, write_table

SHAPES = harness.cpu_gemm_grid()[::4]  # the GEMMs --quick times on the CPU


@pytest.fixture
def timer(monkeypatch):
    """The harness's timing replaced: the n-th timed shape takes n ms (so a table shows which run timed each row),
    and a Ctrl-C arrives as the shape numbered stop_at[0] starts."""
    timed: list[int] = []
    stop_at = [0]

    def time_op(fn, make_inputs, *, device, repeats=20, **_):
        if len(timed) + 1 == stop_at[0]:
            raise KeyboardInterrupt
        timed.append(repeats)
        return len(timed) * 1e-3

    monkeypatch.setattr(harness, "time_op", time_op)
    return timed, stop_at


def _measure(table, repeats: int = 3) -> int:
    return main(["measure", "--device-name", "cpu-local", "--kinds", "gemm", "--quick", "--dtype", "fp32",
                 "--repeats", str(repeats), "--threads", "1", "-o", str(table)])


def test_an_interrupted_measure_keeps_its_shapes_and_a_rerun_times_only_the_others(tmp_path, timer, capsys):
    timed, stop_at = timer
    table = tmp_path / "m.csv.gz"
    assert len(SHAPES) == 3
    stop_at[0] = 3
    assert _measure(table) == 130
    err = capsys.readouterr().err
    assert err.endswith("explore: interrupted; 2 of 3 shapes stored: run the same command again to resume\n")
    assert [(r.m, r.n, r.k, r.time_s) for r in read_table(table)] == [(*SHAPES[0], 1e-3), (*SHAPES[1], 2e-3)]

    stop_at[0] = 0
    assert _measure(table) == 0
    assert len(timed) == 3  # the third shape only
    assert f"{table}: 2 of 3 shapes already measured under these settings\n" in capsys.readouterr().out
    assert [(r.m, r.n, r.k, r.time_s) for r in read_table(table)] == [
        (*shape, (i + 1) * 1e-3) for i, shape in enumerate(SHAPES)]


def test_a_rerun_under_other_settings_times_every_shape_again(tmp_path, timer, capsys, monkeypatch):
    timed, _ = timer
    table = tmp_path / "m.csv"
    assert _measure(table) == 0 and _measure(table, repeats=4) == 0
    assert timed == [3, 3, 3, 4, 4, 4]
    assert f"{table}: 0 of 3 shapes already measured under these settings; 3 rows measured otherwise replaced\n" in (
        capsys.readouterr().out)
    assert [r.time_s for r in read_table(table)] == [4e-3, 5e-3, 6e-3]
    # The same again reuses them all.
    assert _measure(table, repeats=4) == 0 and len(timed) == 6
    assert f"{table}: 3 of 3 shapes already measured" in capsys.readouterr().out
    # Another torch (or GPU, driver, CPU threads: the harness's setup) times them again.
    monkeypatch.setattr(harness, "harness_setup", lambda device: "harness torch 0.0; another CPU; threads 1")
    assert _measure(table, repeats=4) == 0 and len(timed) == 9


def test_a_table_from_before_measured_as_is_timed_again(tmp_path, timer, capsys):
    """Its rows do not say what they were measured under: none is reused."""
    timed, _ = timer
    table = tmp_path / "m.csv"
    assert _measure(table) == 0
    write_table(table, read_table(table))  # the same rows without the measured_as column
    assert _measure(table) == 0 and len(timed) == 6
    assert "0 of 3 shapes already measured under these settings; 3 rows measured otherwise replaced" in (
        capsys.readouterr().out)


def test_a_table_whose_last_row_was_cut_times_that_shape_again(tmp_path, timer, capsys):
    """A table a writer left ending inside a row (copied while written, or from before writes were atomic): the row
    is left out (workloads/csv_rows.py) and its shape timed again."""
    timed, _ = timer
    table = tmp_path / "m.csv"
    assert _measure(table) == 0
    table.write_bytes(table.read_bytes()[:-20])
    assert _measure(table) == 0 and len(timed) == 4
    assert f"{table}: 2 of 3 shapes already measured under these settings\n" in capsys.readouterr().out
    assert [r.time_s for r in read_table(table)] == [1e-3, 2e-3, 4e-3]
