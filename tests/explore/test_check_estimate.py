"""explore check counts only the traces the on-disk cache lacks."""

from __future__ import annotations

from explore.cli import main
from explore.runner import run_sweep
from explore.sweep import load_sweep
from tests.explore.tiny_sweep import write_sweep, write_tiny_model


def test_check_counts_traces_left_to_capture(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLM_CODESIGN_CACHE", str(tmp_path / "cache"))  # empty: nothing traced yet
    model = write_tiny_model(tmp_path)
    path = write_sweep(tmp_path, f"name: est\nmodel: {model}\ndevice: h100-sxm\n"
                                 f"workload: {{batch: [1, 2], prompt: 16, output: 2}}\n")
    assert main(["check", path]) == 0
    assert "up to 2 traces to capture" in capsys.readouterr().out
    run_sweep(load_sweep(path), tmp_path / "out")
    assert main(["check", path]) == 0
    assert "0 of 2 traces to capture (the others are in the trace cache)" in capsys.readouterr().out
