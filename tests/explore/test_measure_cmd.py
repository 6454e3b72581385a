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


def _cpu_preset(tmp_path, repeats: int = 3) -> int:
    return main(["measure", "--device-name", "my-cpu", "--repeats", str(repeats), "--threads", "1", "--cpu-preset",
                 str(tmp_path / "my-cpu.yaml")])


def test_an_interrupted_cpu_preset_resumes_and_a_rerun_times_nothing(tmp_path, timer, capsys):
    """--cpu-preset times each of its 8 shapes (a streaming size of 6 ops, a GEMV, 3 GEMMs in fp32 and in bf16: 13 ops)
    in 3 rounds, storing each in OUT.csv as it goes; the preset is fitted on each shape's fastest round, the first
    here (the n-th op takes n ms), and the table then holds those rows."""
    timed, stop_at = timer
    preset, table = tmp_path / "my-cpu.yaml", tmp_path / "my-cpu.csv"
    stop_at[0] = 13 + 7  # round 2's GEMV: 1 of its 8 shapes stored
    assert _cpu_preset(tmp_path) == 130
    assert capsys.readouterr().err.endswith(
        "explore: interrupted; 9 of 24 shapes stored: run the same command again to resume\n")
    assert not preset.exists() and [r.time_s for r in read_table(table)] == [n * 1e-3 for n in range(1, 20)]

    stop_at[0] = 0
    assert _cpu_preset(tmp_path) == 0
    assert len(timed) == 3 * 13  # the 20 ops of the 15 shapes not stored
    assert f"{table}: 9 of 24 shapes already measured under these settings\n" in capsys.readouterr().out
    fitted = read_table(table)
    assert [r.time_s for r in fitted] == [n * 1e-3 for n in range(1, 14)]
    assert {r.device for r in fitted} == {str(preset)}
    written = preset.read_text()

    assert _cpu_preset(tmp_path) == 0 and len(timed) == 39
    assert f"{table}: the fastest of 3 rounds of all 8 shapes already measured under these settings\n" in (
        capsys.readouterr().out)
    assert preset.read_text() == written and read_table(table) == fitted
    assert _cpu_preset(tmp_path, repeats=4) == 0 and len(timed) == 39 + 3 * 13
