"""`explore report` refuses results that lack a metric the folder's objectives.json ranks or bounds points by, in one
line, where it drew a report saying no point met the goals."""

from __future__ import annotations

import csv
import json

import pytest

from explore.cli import main
from explore.commands import _check_goal_columns
from explore.knobs import KNOBS, input_columns
from workloads.errors import InputError

GOALS = {"objectives": {"maximize": ["tokens_per_s"], "minimize": ["tpot_s"]}, "constraints": ["tpot_s <= 0.05"]}


def _value(column: str) -> str:
    """A cell a sweep could have written: the key, a knob's default (the first preset for the model and device), a
    metric's number."""
    if column == "point_id":
        return "p1"
    if column in ("model", "device"):
        return {"model": "llama-2-7b", "device": "h100-sxm"}[column]
    knob = KNOBS.get(column)
    return str(knob.default) if knob is not None and knob.default is not None else "1"


def _folder(tmp_path, metrics: list[str]):
    """A results folder of one hand-written results.csv row (every input column, then `metrics`) and the goals."""
    header = input_columns(system=False, serving=False) + metrics
    with open(tmp_path / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerow([_value(name) for name in header])
    (tmp_path / "objectives.json").write_text(json.dumps(GOALS))
    return tmp_path


def test_a_results_csv_without_an_objective_is_refused_in_one_line(tmp_path, capsys):
    out = _folder(tmp_path, ["tpot_s"])  # tokens_per_s deleted by hand
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert f"{out / 'results.csv'}: tokens_per_s: missing" in err, err
    assert "objective or constraint (tpot_s, tokens_per_s)" in err, err
    assert not (out / "report.html").exists()


def test_results_holding_every_goal_metric_pass_the_check(tmp_path):
    from explore.results import read_results

    out = _folder(tmp_path, ["tpot_s", "tokens_per_s"])
    _check_goal_columns(out, read_results(out), GOALS)  # no refusal
    with pytest.raises(InputError, match="tpot_s: missing"):  # a constraint's metric counts too
        _check_goal_columns(out, [{"tokens_per_s": 1.0}], {"constraints": ["tpot_s <= 0.05"]})
