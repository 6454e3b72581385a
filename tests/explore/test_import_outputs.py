"""The paths commands write, checked before their work (import-vidur, import-aiconfigurator, measure and trace -o,
calibrate, validate and a sweep's --out: explore/out_paths.py), and the cells of the tables the importers and
validate read: each refusal one line on stderr naming the flag or the file and line, what was found and what is
allowed, exit code 2, no traceback."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pytest

from explore.cli import main
from tests.explore.tiny_sweep import write_sweep, write_tiny_model

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

GEMM_HEADER = ["gpu", "model", "tp", "op", "m", "k", "n", "median_ms", "mean_ms", "std_ms"]


def vidur_folder(tmp_path: Path, m: str = "4096") -> Path:
    """A Vidur data folder of two GEMM rows (the second with `m`) and no streaming profiles."""
    folder = tmp_path / "vidur"
    (folder / "profiling" / "compute").mkdir(parents=True)
    rows = [["a100", "Qwen/Qwen-72B", "1", "attn_pre_proj", "4096", "8192", "24576", "7.3", "7.2", "0.2"],
            ["a100", "Qwen/Qwen-72B", "1", "attn_post_proj", m, "8192", "8192", "2.5", "2.4", "0.1"]]
    with gzip.open(folder / "gemm_points.csv.gz", "wt", newline="") as f:
        csv.writer(f).writerows([GEMM_HEADER, *rows])
    return folder


def refused(argv: list[str], capsys) -> str:
    """The one line `explore argv` prints on stderr, which must exit with code 2."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("explore: error: ")
    return err.removeprefix("explore: error: ").strip()


@pytest.mark.parametrize("command", ["import-vidur", "import-aiconfigurator"])
def test_an_importer_refuses_a_suffix_the_table_writer_does_not_write_before_reading(command, tmp_path, capsys):
    """The folder is no data folder at all: the -o refusal comes first, so it was checked before the import."""
    out = tmp_path / "kernels.txt"
    message = refused([command, str(tmp_path / "none"), "-o", str(out)], capsys)
    assert message == f"-o: found {str(out)!r}, allowed: a path ending in .csv or .csv.gz"


@pytest.mark.parametrize("command", ["import-vidur", "import-aiconfigurator"])
def test_an_importer_refuses_a_missing_folder_before_reading(command, tmp_path, capsys):
    out = tmp_path / "no-such-folder" / "kernels.csv.gz"
    message = refused([command, str(tmp_path / "none"), "-o", str(out)], capsys)
    assert message == (f"-o: found {str(out)!r}, whose folder {out.parent} does not exist; allowed: a file in an "
                       f"existing folder this user can write")


def test_an_importer_refuses_an_existing_folder_as_its_table(tmp_path, capsys):
    out = tmp_path / "kernels.csv"
    out.mkdir()
    message = refused(["import-vidur", str(vidur_folder(tmp_path)), "-o", str(out)], capsys)
    assert message == (f"-o: found {str(out)!r}, an existing folder; allowed: a file path ending in .csv or .csv.gz "
                       f"(a new file or one to overwrite)")


def test_an_importer_writes_a_good_folder(tmp_path, capsys):
    out = tmp_path / "kernels.csv"
    assert main(["import-vidur", str(vidur_folder(tmp_path)), "-o", str(out)]) == 0
    assert out.read_text().count("\n") == 3  # the header and two GEMMs
    assert capsys.readouterr().out == f"{out}: 2 measured kernels from {tmp_path / 'vidur'}\n"


def test_an_empty_cell_of_an_imported_csv_names_the_file_line_and_column(tmp_path, capsys):
    folder = vidur_folder(tmp_path, m="")
    message = refused(["import-vidur", str(folder), "-o", str(tmp_path / "kernels.csv")], capsys)
    # line 3: the header, then the second row
    assert message == f"{folder / 'gemm_points.csv.gz'}:3: m: found an empty cell, allowed: a number"
    assert not (tmp_path / "kernels.csv").exists()


def test_an_empty_m_cell_of_a_measured_table_is_said_to_be_empty(tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("device,kernel,m,n,k,dtype,time_s\nh100-sxm,gemm,,4096,4096,bf16,1e-4\n")
    message = refused(["validate", str(table)], capsys)
    assert message == (f"{table}:2: m: found m (empty cell), n 4096, k 4096, allowed: at least 1 in each of m, n, k "
                       f"for gemm rows")


@pytest.fixture
def one_gemm_table(tmp_path) -> Path:
    table = tmp_path / "one.csv"
    table.write_text("device,kernel,m,n,k,dtype,time_s,source\nh100-sxm,gemm,64,4096,4096,bf16,1e-4,a\n")
    return table


def test_calibrate_refuses_an_existing_folder_as_its_file(one_gemm_table, tmp_path, capsys):
    """Before the fit (which one row could not make: that refusal would come first otherwise)."""
    folder = tmp_path / "fits"
    folder.mkdir()
    message = refused(["calibrate", str(one_gemm_table), "--device", "h100-sxm", "--out", str(folder)], capsys)
    assert message == (f"--out: found {str(folder)!r}, an existing folder; allowed: a file path (a new file or one to "
                       f"overwrite)")


def test_validate_refuses_an_existing_file_as_its_folder(one_gemm_table, tmp_path, capsys):
    plots = tmp_path / "plots"
    plots.write_text("")
    message = refused(["validate", str(one_gemm_table), "--out", str(plots)], capsys)
    assert message == (f"--out: found {str(plots)!r}, an existing file; allowed: a folder for the plots (new, or one "
                       f"to write into)")
    message = refused(["validate", str(one_gemm_table), "--out", str(plots / "sub")], capsys)
    assert message == (f"--out: found {str(plots / 'sub')!r}, under the file {plots}; allowed: a folder for the plots "
                       f"(new, or one to write into)")


def test_trace_refuses_an_existing_folder_before_tracing(tmp_path, capsys):
    message = refused(["trace", "--model", "llama-2-7b", "--phase", "decode", "-o", str(tmp_path)], capsys)
    assert message == f"-o: found {str(tmp_path)!r}, an existing folder; allowed: a file path (a new file or one to " \
                      f"overwrite)"


def test_calibrate_refuses_a_file_under_a_file_and_makes_a_new_folder(one_gemm_table, tmp_path, capsys):
    """calibrate makes its file's folder (hw_models/calibration.py write_calibration): a new one passes the check
    (and the fit on one row is refused next), one under a file does not."""
    blocker = tmp_path / "taken"
    blocker.write_text("")
    message = refused(["calibrate", str(one_gemm_table), "--device", "h100-sxm", "--out", str(blocker / "f.yaml")],
                      capsys)
    assert message == (f"--out: found {str(blocker / 'f.yaml')!r}, under the file {blocker}; allowed: a file path in "
                       f"a folder (new or existing)")
    message = refused(["calibrate", str(one_gemm_table), "--device", "h100-sxm", "--out", str(tmp_path / "new" / "f")],
                      capsys)
    assert "gemm rows for h100-sxm: found 1 to fit on" in message


def test_a_sweep_refuses_an_existing_file_as_its_folder(tmp_path, capsys):
    sweep = write_sweep(tmp_path, f"name: tiny\nmodel: {write_tiny_model(tmp_path)}\ndevice: h100-sxm\n")
    taken = tmp_path / "results"
    taken.write_text("")
    message = refused([sweep, "--out", str(taken)], capsys)
    assert message == f"--out: found {str(taken)!r}, an existing file; allowed: a folder (new or a sweep's own)"


def test_measure_refuses_an_existing_folder_as_its_table_before_timing(tmp_path, capsys):
    out = tmp_path / "cpu.csv"
    out.mkdir()
    message = refused(["measure", "--device-name", "my-cpu", "--quick", "-o", str(out)], capsys)
    assert message == (f"-o: found {str(out)!r}, an existing folder; allowed: a file path ending in .csv or .csv.gz "
                       f"(a new file or one to overwrite)")
