"""A file this user cannot write in a results folder (report.md or report.html, or the objectives.json and a serving
sweep's sweep.yaml copy a sweep keeps beside its results, made read-only after a run): the sweep and `explore report
DIR` refuse it in one line naming the file, what was found and what to do, exit 2, where they said only
"DIR/report.md: Permission denied" (the CLI's catch-all for OSError)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from explore.cli import main
from tests.explore.tiny_sweep import write_sweep, write_tiny_serving_sweep
from tests.explore.undrawn import undrawn_figures

# The claims here are about messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_config) -> tuple[str, Path]:
    """A one-point sweep of the tiny model, run once: its sweep file and its output folder (report written)."""
    folder = tmp_path_factory.mktemp("swept")
    sweep = write_sweep(folder, f"name: tiny\nmodel: {tiny_config}\ndevice: h100-sxm\n"
                                "workload: {batch: 1, prompt: 32, output: 4}\n")
    with undrawn_figures():
        assert main([sweep, "--out", str(folder / "out"), "--quiet"]) == 0
    return sweep, folder / "out"


def _copy(swept: tuple[str, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(swept[1], tmp_path / "out"))


def _read_only(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`path` made read-only (chmod 444); root writes anyway, so there the OS's refusal of a write is simulated."""
    path.write_text("an earlier report\n")
    path.chmod(0o444)
    if os.geteuid() != 0:
        return
    write_text = Path.write_text

    def refusing(self: Path, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", refusing)


def _report_allowed(out: Path) -> str:
    return (f"a report this user can write: make it writable or remove it, then `explore report {out}` draws the "
            f"report from the stored results")


def _refusal(capsys: pytest.CaptureFixture, out: Path, name: str, allowed: str | None = None) -> list[str]:
    """The lines the command wrote to stderr, its last the one-line refusal of out/name (by default a report file's),
    the file left as it was."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert not any("Traceback" in line for line in lines), lines
    assert lines[-1] == (f"explore: error: {out / name}: found a path this user cannot write (Permission denied); "
                         f"allowed: {allowed or _report_allowed(out)}"), lines
    assert (out / name).read_text() == "an earlier report\n"
    return lines


@pytest.mark.parametrize("name", ["report.md", "report.html"])
def test_explore_report_refuses_a_read_only_report_file_saying_what_to_do(swept, tmp_path, capsys, monkeypatch,
                                                                            name):
    out = _copy(swept, tmp_path)
    _read_only(out / name, monkeypatch)
    assert main(["report", str(out)]) == 2
    assert len(_refusal(capsys, out, name)) == 1
    # What it says to do works: the file made writable, the same command writes the report.
    monkeypatch.undo()
    (out / name).chmod(0o644)
    assert main(["report", str(out)]) == 0
    assert (out / name).read_text() != "an earlier report\n"


def test_a_sweep_redrawing_its_report_refuses_a_read_only_report_md(swept, tmp_path, capsys, monkeypatch):
    """The sweep run again (every point stored) with --force-report: its report is what it writes."""
    out = _copy(swept, tmp_path)
    _read_only(out / "report.md", monkeypatch)
    assert main([swept[0], "--out", str(out), "--quiet", "--force-report"]) == 2
    _refusal(capsys, out, "report.md")


def test_a_sweep_refuses_a_read_only_objectives_json_saying_what_to_do(swept, tmp_path, capsys, monkeypatch):
    """The objectives.json the sweep keeps beside its results, written after them: run again once writable, the sweep
    writes it without evaluating its point again."""
    out = _copy(swept, tmp_path)
    _read_only(out / "objectives.json", monkeypatch)
    assert main([swept[0], "--out", str(out), "--quiet"]) == 2
    _refusal(capsys, out, "objectives.json", "files beside the results this user can write (objectives.json): make it "
             "writable or remove it, then run the sweep again (its stored points are not evaluated again)")
    monkeypatch.undo()
    (out / "objectives.json").chmod(0o644)
    assert main([swept[0], "--out", str(out), "--quiet"]) == 0
    assert "all 1 design points already stored" in capsys.readouterr().err
    assert json.loads((out / "objectives.json").read_text())["name"] == "tiny"


def test_a_serving_sweep_refuses_a_read_only_sweep_yaml_copy_saying_what_to_do(tmp_path, capsys, monkeypatch):
    """The copy of its sweep file a serving sweep keeps beside its results (to re-run chosen points for their
    per-request figures), written in the same loop as objectives.json: run again once writable, the sweep writes it
    without evaluating its point again."""
    sweep = write_tiny_serving_sweep(tmp_path, "  rate: 50\n")
    out = tmp_path / "out"
    assert main([sweep, "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    _read_only(out / "sweep.yaml", monkeypatch)
    assert main([sweep, "--out", str(out), "--quiet"]) == 2
    _refusal(capsys, out, "sweep.yaml", "files beside the results this user can write (objectives.json, sweep.yaml): "
             "make it writable or remove it, then run the sweep again (its stored points are not evaluated again)")
    monkeypatch.undo()
    (out / "sweep.yaml").chmod(0o644)
    assert main([sweep, "--out", str(out), "--quiet"]) == 0
    assert "all 1 design points already stored" in capsys.readouterr().err
    assert (out / "sweep.yaml").read_text() == Path(sweep).read_text()
