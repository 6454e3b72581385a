"""`explore report` refuses results that lack a metric the report reads of every point of their kind, or one the
folder's objectives.json ranks or bounds points by, in one line: it failed with a KeyError (a static row without
ttft_s), or drew a report of no feasible point (without tokens_per_s), of blank serving panels (without goodput_rps),
or saying no point met the goals."""

from __future__ import annotations

import csv
import json

import pytest

from explore.cli import main
from explore.commands import _check_metric_columns
from explore.knobs import KNOBS, input_columns
from workloads.errors import InputError

GOALS = {"objectives": {"maximize": ["tokens_per_s"], "minimize": ["tpot_s"]}, "constraints": ["tpot_s <= 0.05"]}
# What the report reads of every static point: whether it is feasible (a finite tokens/s), and the TTFT and TPOT its
# figure against batch plots; of every serving point, the p99 TTFT and TPOT, goodput, SLO attainment and energy per
# token its figures against arrival rate plot.
STATIC_READ = "tokens_per_s, ttft_s, tpot_s"
SERVING_READ = "tokens_per_s, ttft_p99_s, tpot_p99_s, goodput_rps, slo_attainment, energy_per_token_J"


def _value(column: str) -> str:
    """A cell a sweep could have written: the key, a knob's default (the first preset for the model and device), a
    metric's number."""
    if column == "point_id":
        return "p1"
    if column in ("model", "device"):
        return {"model": "llama-2-7b", "device": "h100-sxm"}[column]
    knob = KNOBS.get(column)
    return str(knob.default) if knob is not None and knob.default is not None else "0.01"


def _folder(tmp_path, metrics: list[str], goals: dict | None = GOALS, serving: bool = False):
    """A results folder of one hand-written results.csv row (every input column, then `metrics`) and the goals."""
    header = input_columns(system=False, serving=serving) + metrics
    with open(tmp_path / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerow([_value(name) for name in header])
    if goals is not None:
        (tmp_path / "objectives.json").write_text(json.dumps(goals))
    return tmp_path


def _refusal(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_a_results_csv_without_an_objective_is_refused_in_one_line(tmp_path, capsys):
    out = _folder(tmp_path, ["ttft_s", "tpot_s"])  # tokens_per_s deleted by hand
    assert main(["report", str(out)]) == 2
    err = _refusal(capsys)
    assert f"{out / 'results.csv'}: tokens_per_s: missing" in err, err
    assert "objective or constraint (tpot_s, tokens_per_s)" in err, err
    assert not (out / "report.html").exists()


def test_a_static_row_without_the_ttft_its_figure_plots_is_refused_in_one_line(tmp_path, capsys):
    out = _folder(tmp_path, ["tpot_s", "tokens_per_s"])
    assert main(["report", str(out)]) == 2
    err = _refusal(capsys)
    assert err.endswith(f"{out / 'results.csv'}: ttft_s: missing, allowed: results holding the metrics the report "
                        f"reads of every point ({STATIC_READ}) and every metric objectives.json names as an objective "
                        f"or constraint (tpot_s, tokens_per_s)"), err
    assert not (out / "report.html").exists()


def test_without_objectives_json_the_metrics_the_report_reads_are_still_required(tmp_path, capsys):
    out = _folder(tmp_path, ["ttft_s", "tpot_s"], goals=None)  # read as infeasible: "no feasible design point"
    assert main(["report", str(out)]) == 2
    assert _refusal(capsys).endswith(f"tokens_per_s: missing, allowed: results holding the metrics the report reads "
                                     f"of every point ({STATIC_READ})")


def test_a_serving_row_without_goodput_is_refused_in_one_line(tmp_path, capsys):
    metrics = ["tokens_per_s", "ttft_p99_s", "tpot_p99_s", "slo_attainment", "energy_per_token_J"]
    out = _folder(tmp_path, metrics, goals=None, serving=True)
    assert main(["report", str(out)]) == 2
    assert _refusal(capsys).endswith(f"{out / 'results.csv'}: goodput_rps: missing, allowed: results holding the "
                                     f"metrics the report reads of every point ({SERVING_READ})")


def test_results_holding_every_metric_read_pass_the_check(tmp_path):
    from explore.results import read_results

    out = _folder(tmp_path, ["ttft_s", "tpot_s", "tokens_per_s"])
    _check_metric_columns(out, read_results(out), GOALS)  # no refusal
    with pytest.raises(InputError, match="e2e_s: missing"):  # a constraint's metric counts too
        _check_metric_columns(out, read_results(out), {"constraints": ["e2e_s <= 1.0"]})
