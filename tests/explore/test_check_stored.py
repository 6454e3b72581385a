"""explore check on a sweep's folder that stores some of its points already: it counts them and estimates only the
points the run evaluates."""

from __future__ import annotations

import pytest
from tiny_sweep import interrupted_after_one_task, write_four_point_sweep

from explore import commands, runner
from explore.cli import main
from explore.evaluate import Evaluator
from explore.sweep import load_sweep

# The claims here are about counts and messages, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")


@pytest.mark.parametrize("out_flag", [True, False], ids=["--out", "default-out"])
def test_check_counts_the_points_an_interrupted_run_stored(tmp_path, monkeypatch, capsys, out_flag):
    """Interrupted after 2 of its 4 points, the sweep's folder stores 2: check, given the folder the run wrote to
    (--out, or out/<name> by default, as the sweep takes it), says so and counts 2 points in its estimate, where it
    said '4 design points (all evaluated)' and counted 4."""
    monkeypatch.setenv("LLM_CODESIGN_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    sweep = write_four_point_sweep(tmp_path)
    out = tmp_path / "elsewhere" if out_flag else tmp_path / "out" / "part"
    where = ["--out", str(out)] if out_flag else []
    interrupted_after_one_task(monkeypatch, [sweep, *where, "--quiet"])
    capsys.readouterr()
    monkeypatch.setattr(commands, "POINT_S", 10.0)  # the points' part, by hand: 10 s a point
    assert main(["check", sweep, *where]) == 0
    said = capsys.readouterr().out
    shown = out if out_flag else "out/part"
    assert f"2 of 4 design points stored already in {shown}/; the run evaluates the other 2" in said, said
    assert "(all evaluated)" not in said
    assert main(["check", sweep, "--out", str(tmp_path / "new")]) == 0  # a new folder: all 4 to evaluate
    fresh = capsys.readouterr().out
    assert "4 design points (all evaluated)" in fresh and "stored already" not in fresh, fresh
    # The same traces cached for both; 2 points fewer at 10 s each, within the printed rounding.
    assert _estimate_s(fresh) - _estimate_s(said) == pytest.approx(20, abs=1)


def test_a_folder_storing_every_point_is_estimated_at_the_run_s_fixed_part_and_its_report(tmp_path, monkeypatch,
                                                                                         capsys):
    """Every point stored: the run starts no worker and evaluates, captures and prepares nothing (run_sweep); check
    says so, and its estimate is the run's fixed part and the report's (the report is drawn from every row)."""
    monkeypatch.setenv("LLM_CODESIGN_CACHE", str(tmp_path / "cache"))
    sweep = write_four_point_sweep(tmp_path)
    out = tmp_path / "out"
    runner.run_sweep(load_sweep(sweep), out)
    monkeypatch.setenv("LLM_CODESIGN_CACHE", str(tmp_path / "empty"))  # traces the run would capture, were any left
    assert main(["check", sweep, "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "all 4 design points stored already in" in said and "no trace to capture" in said, said
    plan = commands.plan_check(load_sweep(sweep), Evaluator(), 1, frozenset(runner.stored_ids(out)))
    assert plan.left == 0
    estimate = plan.estimate
    assert (estimate.trace_s, estimate.prepare_s, estimate.points_s) == (0.0, 0.0, 0.0)
    assert estimate.total_s == estimate.fixed_s + estimate.report_s > 0


def _estimate_s(out: str) -> float:
    return float(out.split("estimated run time: about ")[1].split(" s")[0])


def test_a_folder_whose_report_is_up_to_date_is_estimated_without_drawing_it(tmp_path, monkeypatch, capsys):
    """Every point stored and the report drawn from them: the run keeps the report ("the report is up to date"),
    draws nothing, and check counted the report's drawing in its estimate all the same."""
    monkeypatch.setenv("LLM_CODESIGN_CACHE", str(tmp_path / "cache"))
    sweep = write_four_point_sweep(tmp_path)
    out = tmp_path / "out"
    assert main([sweep, "--out", str(out), "--quiet"]) == 0
    assert main([sweep, "--out", str(out), "--quiet"]) == 0
    assert "the report is up to date" in capsys.readouterr().err  # the run's own decision
    assert main(["check", sweep, "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"the report in {out}/ is up to date (drawn from these results and goals): the run keeps it" in said, said
    assert _estimate_s(said) == pytest.approx(commands.RUN_FIXED_S, abs=0.5)  # the run's fixed part alone
    # The report gone, the run draws it again: check counts it again.
    (out / "report.html").unlink()
    assert main(["check", sweep, "--out", str(out)]) == 0
    again = capsys.readouterr().out
    assert "s of it drawing the report (up to" in again and _estimate_s(again) > commands.RUN_FIXED_S + 0.5, again
