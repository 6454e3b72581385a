"""max_decode_preemptions in a sweep's serving: section (sim/schedulers/orca.py): it reaches each point's spec and
its results column; beside another scheduler it is a setting nothing reads (explore/serving_settings.py): a grid's such
points are one design, a section where no point reads it one line, exit 2, as a bad value is."""

from __future__ import annotations

import pytest

from explore.cli import main
from explore.results import read_results
from explore.sweep import load_sweep
from tests.explore.test_serving_sweep import WHOLE as PLAIN
from tests.explore.test_serving_sweep import _serving_sweep as _sweep

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

# Orca at one rate, prompts batched up to 64 tokens: the budget new prompts take first.
SERVING = PLAIN.replace("[static, continuous, chunked]", "orca").replace("rate: [50, 400]", "rate: 400") + \
    "  prompt_batch_tokens: 64\n"


def test_a_sweep_sets_it_per_point_and_shows_its_column(tmp_path):
    path = _sweep(tmp_path, SERVING + "  max_decode_preemptions: [0, 4]\n")
    assert sorted(p.serving.max_decode_preemptions for p in load_sweep(path).points()) == [0, 4]
    out = tmp_path / "out"
    assert main([path, "--out", str(out), "--quiet"]) == 0
    assert sorted(int(r["max_decode_preemptions"]) for r in read_results(out)) == [0, 4]


def test_bad_values_are_one_line(tmp_path, capsys):
    bad = _sweep(tmp_path, SERVING + "  max_decode_preemptions: -1\n")
    assert main(["check", bad]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "serving.max_decode_preemptions: found -1" in err, err
    chunked = _sweep(tmp_path, SERVING.replace("scheduler: orca", "scheduler: chunked") +
                     "  max_decode_preemptions: 4\n")
    for argv in (["check", chunked], [chunked, "--out", str(tmp_path / "out"), "--quiet"]):  # found before any run
        assert main(argv) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert "serving.max_decode_preemptions: found 4 with scheduler 'chunked'" in line and "sweep.yaml:" in line


def test_a_grid_crossing_schedulers_with_it_evaluates_each_design_once(tmp_path, capsys):
    """scheduler [orca, chunked] x max_decode_preemptions [0, 4]: chunked reads no decode preemptions, so by hand the 4
    points are 2 + 1 = 3 designs; the check says so and the run writes one row a design, chunked's without the
    setting."""
    path = _sweep(tmp_path, SERVING.replace("scheduler: orca", "scheduler: [orca, chunked]") +
                  "  max_decode_preemptions: [0, 4]\n")
    assert main(["check", path]) == 0
    said = capsys.readouterr().out
    assert "4 design points (3 distinct designs evaluated)" in said, said
    assert "1 of 4 points are another point's design, run once: max_decode_preemptions changes nothing where the " \
           "scheduler is static or continuous or chunked" in said, said
    out = tmp_path / "out"
    assert main([path, "--out", str(out), "--quiet"]) == 0
    rows = read_results(out)
    assert sorted((r["scheduler"], r.get("max_decode_preemptions")) for r in rows) == [
        ("chunked", None), ("orca", 0), ("orca", 4)], rows
