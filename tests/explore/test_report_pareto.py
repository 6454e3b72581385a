"""The report's Pareto-optimal (and single-objective best) table (explore/report_pareto.py pareto_table): a capacity
its search could not judge (capacity_judged 0) carries the serving tables' dagger and footnote."""

from __future__ import annotations

import math

from explore.report_pareto import pareto_table
from explore.rows import normalize_row
from tests.explore.test_report_serving import _capacity_rows

DAGGER = "\u2020"


def _rows() -> tuple[list[dict], dict, dict]:
    """The serving report's capacity rows (a judged H100, an unjudged A100, an infeasible L4), typed; the A100 made
    the more frugal so that both searched designs are Pareto-optimal over capacity and energy."""
    rows = [normalize_row(r) for r in _capacity_rows(with_columns=True)]
    judged, unjudged = rows[0], rows[1]
    unjudged["energy_per_token_J"] = judged["energy_per_token_J"] / 2
    return rows, judged, unjudged


def _cells(table) -> dict[str, list[str]]:
    return {cells[0].split(" / ")[1]: cells for cells in table.cells}


def test_pareto_table_marks_an_unjudged_capacity_and_quotes_its_note():
    rows, judged, unjudged = _rows()
    assert judged["capacity_judged"] and not unjudged["capacity_judged"]  # the search's own verdicts
    table = pareto_table(rows, {"maximize": ["capacity_rps"], "minimize": ["energy_per_token_J"]}, None)
    at = 1 + table.headers[1:].index(next(h for h in table.headers if "capacity" in h.lower()))
    cells = _cells(table)
    assert set(cells) == {"h100-sxm", "a100-sxm-80gb"}  # both on the front
    assert cells["h100-sxm"][at] == f"{judged['capacity_rps']:.4g}"  # judged: no mark
    assert cells["a100-sxm-80gb"][at] == f"{unjudged['capacity_rps']:.4g} {DAGGER}"
    assert f"{DAGGER} marks a capacity not judged (capacity_judged 0)" in table.note
    assert unjudged["capacity_note"] in table.note and "h100-sxm" not in table.note  # the judged one: no footnote
    assert "Raise the number of requests" in table.note


def test_single_objective_table_marks_it_too():
    rows, _, unjudged = _rows()
    table = pareto_table(rows, {"maximize": ["capacity_rps"]}, None)
    assert _cells(table)["a100-sxm-80gb"][1] == f"{unjudged['capacity_rps']:.4g} {DAGGER}"
    assert f"{DAGGER} marks a capacity not judged" in table.note


def test_no_mark_or_footnote_without_a_capacity_column_or_an_unjudged_capacity():
    rows, judged, _ = _rows()
    objectives = {"minimize": ["energy_per_token_J", "ttft_p99_s"]}  # capacity is not a column
    table = pareto_table(rows, objectives, None)
    assert DAGGER not in table.note + "".join(c for row in table.cells for c in row)
    judged_only = pareto_table([judged], {"maximize": ["capacity_rps"], "minimize": ["energy_per_token_J"]}, None)
    assert DAGGER not in judged_only.note + "".join(c for row in judged_only.cells for c in row)


def test_points_without_a_value_of_an_objective_are_counted_as_left_out():
    """A point with no published quality (quality_delta NaN) cannot be ranked on it: the A100, which spends half the
    H100's energy, would be on the front of energy against quality; it is left out and the note says so and why,
    so 'best energy_per_token_J' is not read as the best of every feasible point. The single-objective table too."""
    rows, judged, unjudged = _rows()
    judged["quality_delta"], unjudged["quality_delta"] = 0.13, math.nan
    table = pareto_table(rows, {"minimize": ["energy_per_token_J", "quality_delta"]}, None)
    assert set(_cells(table)) == {"h100-sxm"}
    assert "1 feasible point without a value of quality_delta is left out (quality_source says why)." in table.note
    ranked = pareto_table(rows, {"minimize": ["quality_delta"]}, None)
    assert set(_cells(ranked)) == {"h100-sxm"} and "without a value of quality_delta is left out" in ranked.note
    everyone = pareto_table(rows, {"minimize": ["energy_per_token_J"]}, None)
    assert "left out" not in everyone.note


def test_a_pareto_caption_speaks_of_constraints_only_where_the_sweep_has_them():
    """Without constraints the caption said '2 feasible points meeting the constraints, 0 breaking one'."""
    from explore.report_pareto import pareto_figures

    rows, judged, unjudged = _rows()
    objectives = {"minimize": ["energy_per_token_J"], "maximize": ["capacity_rps"]}
    (free,) = pareto_figures(rows, objectives, None)
    assert "2 feasible points (no constraints);" in free.caption and "breaking" not in free.caption
    bound = judged["energy_per_token_J"] * 0.75  # the A100 spends half the H100's energy: it alone meets this
    (held,) = pareto_figures(rows, objectives, [f"energy_per_token_J <= {bound!r}"])
    assert "1 feasible point meeting the constraints, 1 breaking one;" in held.caption


def test_a_table_with_no_design_to_list_says_why():
    """Where no feasible point meets the constraints (a quality_delta bound on a model no paper measured: every
    point's figure is NaN), the best-design tables say so as the other best-design tables do ('None: no feasible
    point meets the constraints.'), where they read 'The 0 feasible points best (lower is better).' and '0 points no
    other feasible point beats on every objective'; a table with rows keeps its opening."""
    rows, judged, unjudged = _rows()
    judged["quality_delta"], unjudged["quality_delta"] = math.nan, math.nan
    for objectives in ({"minimize": ["tpot_s"]}, {"minimize": ["tpot_s", "energy_per_token_J"]}):
        table = pareto_table(rows, objectives, ["quality_delta <= 1.0"])
        assert not table.cells and table.note.startswith("None: no feasible point meets the constraints.")
        assert "2 feasible points breaking a constraint left out." in table.note
        assert pareto_table(rows, objectives, None).note.startswith(("The 2 feasible points best", "2 points"))
