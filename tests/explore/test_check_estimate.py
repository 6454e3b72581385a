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


def _estimate_s(out: str) -> float:
    return float(out.split("estimated run time: about ")[1].split(" s")[0])


def test_check_leaves_out_the_points_a_sweep_records_as_not_run(tmp_path, capsys):
    """Two rates by a rejecting and a queueing gateway beside a slowdown SLO: the two rejecting points are recorded
    not run (ServingSpec.unjudged), so 2 of the 4 are evaluated and the estimate is the two queueing points' alone."""
    model = write_tiny_model(tmp_path)

    def check(actions: str) -> str:
        path = write_sweep(tmp_path, f"name: est\nmodel: {model}\ndevice: h100-sxm\nserving:\n  rate: [10, 20]\n"
                                     f"  requests: 5000\n  prompt: 32\n  output: 4\n  busy_waiting_requests: 4\n"
                                     f"  busy_action: {actions}\n  slo: {{slowdown: {{tbt: {{p50: 1.25}}}}}}\n")
        assert main(["check", path]) == 0
        return capsys.readouterr().out

    crossed, queued = check("[reject, queue]"), check("queue")
    assert "4 design points (2 distinct designs evaluated)" in crossed, crossed
    assert "2 design points (all evaluated)" in queued, queued
    assert _estimate_s(crossed) == _estimate_s(queued)
