"""`explore report DIR` given something other than a sweep's output folder: one line naming what it found, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from explore.cli import main


def test_a_file_in_the_folder_names_the_folder_to_pass(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv = tmp_path / "results.csv"
    csv.write_text("point_id\n")
    assert main(["report", str(csv)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"{csv}: found a file" in line and f"output folder (here {tmp_path})" in line


def test_a_folder_without_results_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"{tmp_path}: no results.csv here" in line
