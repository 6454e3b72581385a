"""max_decode_preemptions in a sweep's serving: section (sim/schedulers/orca.py): it reaches each point's spec and
its results column, and a bad value or a scheduler other than orca is one line, exit 2."""

from __future__ import annotations

from explore.cli import main
from explore.results import read_results
from explore.sweep import load_sweep
from tests.explore.test_serving_sweep import WHOLE as PLAIN
from tests.explore.test_serving_sweep import _serving_sweep as _sweep

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
