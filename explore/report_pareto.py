"""The objective sections of the design report: Pareto fronts, the Pareto-optimal table, parameter sensitivity."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from explore.metrics import metric
from explore.pareto import objective_matrix, pareto_mask
from explore.plots import figure_png
from explore.plots_objectives import (
    ChosenPoint,
    Effect,
    ParetoPoints,
    pareto_figure,
    ranking_figure,
    sensitivity_figure,
)
from explore.plots_serving import NOT_JUDGED_MARK
from explore.report import MAX_PAIRS, MAX_SENSITIVITY, ReportFigure, ReportTable, best_note
from explore.report_serving import metric_cell, unjudged_footnote, varying_knobs
from explore.rows import (
    count_label,
    device_label,
    format_label,
    is_feasible,
    lengths_vary,
    metric_axis_label,
    metric_scale,
    point_label,
    value_label,
)
from explore.sensitivity import effect_sizes, knob_readings
from explore.sweep import Constraint

MAX_FRONT_ROWS = 30  # rows of the Pareto-optimal table
MAX_RANKED = 15  # bars and rows for a single objective
OBJECTIVE_FIGURES = ("pareto_*.png", "ranking_*.png", "sensitivity_*.png")  # file names of the figures below

HOW_TO_READ_PARETO = (
    "Each mark is a feasible design point: its color is the device, its shape the format; hollow marks break a "
    "constraint and cannot be chosen. Marks with a black edge are Pareto-optimal for this pair of objectives (no "
    "other point meeting the constraints is at least as good on both and better on one), joined by the front's "
    "red staircase. Lettered points are the best on each objective and the balanced choice: the front point "
    "closest to the ideal corner once each objective is scaled to [0, 1] over the front.")


SENSITIVITY_DOTS = ("One row per knob that varies in the sweep, all on one scale: each dot is the median of the "
                    "objective over the feasible points at one value of the knob")
HOW_TO_READ_SENSITIVITY = (
    f"{SENSITIVITY_DOTS} (the other knobs at all their values), divided by the median over every feasible point (the "
    "dashed 1× line). The length of a row is the knob's effect, its spread (largest over smallest) printed at the "
    "right; knobs are sorted by it. Values without a feasible point are left out.")


def how_to_read_sensitivity(search: str | None = None) -> str:
    """How to read a sensitivity figure: over every combination of the other knobs (a grid, or a uniform random
    draw), or, for a steered search, over the points it chose, which the caption says."""
    if search not in STEERED_SEARCHES:
        return HOW_TO_READ_SENSITIVITY
    return (f"{SENSITIVITY_DOTS}, divided by the median over every feasible point (the dashed 1× line); its spread "
            f"(largest over smallest) is printed at the right. {steered_sample(search, 'a row')} (a grid over fewer "
            f"values measures the effect itself). Values without a feasible point are left out.")


# Searches steered by the objectives: the points they choose are not a uniform sample of the combinations.
STEERED_SEARCHES = ("nsga2", "tpe")


def steered_sample(search: str, what: str) -> str:
    """What a median over a steered search's points mixes: `what` (a figure's row or line) reads the knob's own
    effect together with where the search looked."""
    return (f"These are the points the {search} search chose, not every combination: at each value the other knobs "
            f"take the values the search tried with it, so {what} mixes the knob's own effect with where the search "
            f"looked")


def objective_names(objectives: dict | None) -> tuple[list[str], list[str]]:
    """The minimized and the maximized metric names (empty lists when none)."""
    objectives = objectives or {}
    return list(objectives.get("minimize") or []), list(objectives.get("maximize") or [])


def split_by_constraints(rows: list[dict[str, Any]], constraints: list[Constraint]) -> tuple[list, list]:
    """The feasible rows that meet every constraint, and those that break one."""
    feasible = [row for row in rows if is_feasible(row)]
    meeting = [row for row in feasible if all(c.holds(row) for c in constraints)]
    violating = [row for row in feasible if not all(c.holds(row) for c in constraints)]
    return meeting, violating


def pareto_rows(rows: list[dict[str, Any]], minimize: list[str], maximize: list[str]) -> list[dict[str, Any]]:
    """The rows on the Pareto front of the objectives (rows with a NaN objective never are)."""
    if not rows:
        return []
    mask = pareto_mask(objective_matrix(rows, minimize, maximize))
    return [row for row, keep in zip(rows, mask, strict=True) if keep]


def chosen_roles(front: list[dict[str, Any]], minimize: list[str], maximize: list[str]) -> dict[int, list[str]]:
    """Index in `front` -> its roles: 'best <metric>' for each objective's best point, and 'balanced'."""
    if not front:
        return {}
    signed = objective_matrix(front, minimize, maximize)
    roles: dict[int, list[str]] = {}
    for column, name in enumerate(minimize + maximize):
        roles.setdefault(int(np.argmin(signed[:, column])), []).append(f"best {name}")
    low, span = signed.min(axis=0), np.ptp(signed, axis=0)
    scaled = np.divide(signed - low, span, out=np.zeros_like(signed), where=span > 0)
    roles.setdefault(int(np.argmin(np.linalg.norm(scaled, axis=1))), []).append("balanced")
    return roles


def _column(rows: list[dict[str, Any]], name: str) -> np.ndarray:
    return np.array([float(row.get(name, math.nan)) for row in rows], dtype=float)


def pareto_points(meeting: list, violating: list, front: list, x: str, y: str) -> ParetoPoints:
    """The Pareto figure's points: those meeting the constraints, then those breaking one."""
    rows = meeting + violating
    on_front = {id(row) for row in front}
    return ParetoPoints(x=_column(rows, x), y=_column(rows, y), device=[device_label(r) for r in rows],
                        fmt=[format_label(r) for r in rows],
                        meets=np.array([True] * len(meeting) + [False] * len(violating), dtype=bool),
                        front=np.array([id(r) in on_front for r in rows], dtype=bool))


# With more than two objectives a pair's own balanced point is not the report's (chosen on every objective): named so.
PAIR_BALANCED = "balanced on this pair"


def _pair_figure(meeting: list, violating: list, x: str, y: str, minimize: list[str], lengths: bool,
                 objectives: int = 2, constrained: bool = True) -> ReportFigure:
    """The Pareto figure of one pair of `objectives` objectives."""
    pair_min, pair_max = [n for n in (x, y) if n in minimize], [n for n in (x, y) if n not in minimize]
    name, title = f"pareto_{x}_{y}".lower(), f"Pareto front: {metric_axis_label(x)} against {metric_axis_label(y)}"
    front = sorted(pareto_rows(meeting, pair_min, pair_max), key=lambda r: float(r[x]))
    if not front:
        return ReportFigure(name=name, title=title, png=None,
                            caption=f"Not drawn: no feasible point meets the constraints with values of {x} and {y}.")
    roles = chosen_roles(front, pair_min, pair_max)
    if objectives > 2:
        roles = {i: [PAIR_BALANCED if role == "balanced" else role for role in r] for i, r in roles.items()}
    chosen = [ChosenPoint(x=float(front[i][x]), y=float(front[i][y]), role=", ".join(r),
                          label=point_label(front[i], lengths=lengths)) for i, r in sorted(roles.items())]
    fig = pareto_figure(x, y, pareto_points(meeting, violating, front, x, y), x in minimize, y in minimize, chosen)
    pair_note = (f" With {objectives} objectives, '{PAIR_BALANCED}' is the balanced point of these two; the report's "
                 f"balanced design (the Pareto table's) weighs all {objectives}." if objectives > 2 else "")
    counted = (f"{count_label(len(meeting), 'feasible point')} meeting the constraints, {len(violating)} breaking one"
               if constrained else f"{count_label(len(meeting), 'feasible point')} (no constraints)")
    caption = (f"{counted}; {len(front)} Pareto-optimal.{_undrawn(meeting + violating, x, y)} "
               f"{HOW_TO_READ_PARETO}{pair_note}")
    return ReportFigure(name=name, title=title, caption=caption, png=figure_png(fig))


def _undrawn(rows: list[dict[str, Any]], x: str, y: str) -> str:
    """' 3 feasible points without a value of quality_delta are not drawn (quality_source says why).', or ''."""
    return _without_values(rows, (x, y), "not drawn")


def _without_values(rows: list[dict[str, Any]], names: Sequence[str], outcome: str) -> str:
    """' 3 feasible points without a value of quality_delta are <outcome> (quality_source says why).', or '' when
    every row has a value of every name."""
    missing = [name for name in names if any(not math.isfinite(float(row.get(name, math.nan))) for row in rows)]
    count = sum(1 for row in rows if any(not math.isfinite(float(row.get(name, math.nan))) for name in missing))
    if not count:
        return ""
    reasons = [f"{entry.reason} says why" for name in missing if (entry := metric(name)) and entry.reason]
    why = f" ({'; '.join(reasons)})" if reasons else ""
    return (f" {count_label(count, 'feasible point')} without a value of {' or '.join(missing)} "
            f"{'is' if count == 1 else 'are'} {outcome}{why}.")


def _ranked(rows: list[dict[str, Any]], name: str, minimized: bool) -> list[dict[str, Any]]:
    measured = [row for row in rows if math.isfinite(float(row.get(name, math.nan)))]
    return sorted(measured, key=lambda r: float(r[name]) * (1 if minimized else -1))


def pareto_figures(rows: list[dict[str, Any]], objectives: dict | None,
                   constraints: Sequence[str] | None) -> list[ReportFigure]:
    """One Pareto figure per pair of objectives (at most MAX_PAIRS); a ranking of the best for one objective."""
    minimize, maximize = objective_names(objectives)
    names = minimize + maximize
    meeting, violating = split_by_constraints(rows, Constraint.parse_all(constraints))
    lengths = lengths_vary(rows)
    if len(names) == 1:
        name = names[0]
        best = _ranked(meeting, name, bool(minimize))[:MAX_RANKED]
        title = f"Best designs by {metric_axis_label(name)}"
        if not best:
            return [ReportFigure(name=f"ranking_{name}".lower(), title=title, png=None,
                                 caption=f"Not drawn: no feasible point meets the constraints with a value of {name}.")]
        fig = ranking_figure(name, [point_label(r, lengths=lengths) for r in best], [r[name] for r in best],
                             bool(minimize))
        caption = (f"The {len(best)} best of {count_label(len(meeting), 'feasible point')} meeting the constraints "
                   f"({len(violating)} feasible points break one and are left out); best at the top.")
        return [ReportFigure(name=f"ranking_{name}".lower(), title=title, caption=caption, png=figure_png(fig))]
    pairs = list(itertools.combinations(names, 2))[:MAX_PAIRS]
    return [_pair_figure(meeting, violating, x, y, minimize, lengths, len(names), bool(constraints)) for x, y in pairs]


def pareto_table(rows: list[dict[str, Any]], objectives: dict | None, constraints: Sequence[str] | None) -> ReportTable:
    """The Pareto-optimal designs over all objectives (the ranked best for one), sorted by the first objective."""
    minimize, maximize = objective_names(objectives)
    names = minimize + maximize
    meeting, violating = split_by_constraints(rows, Constraint.parse_all(constraints))
    lengths = lengths_vary(rows)
    broke = f" {count_label(len(violating), 'feasible point')} breaking a constraint left out." if constraints else ""
    headers = ["design point"] + [metric_axis_label(n) for n in names]
    feasible = [row for row in rows if is_feasible(row)]
    if len(names) == 1:
        best = _ranked(meeting, names[0], bool(minimize))[:MAX_RANKED]
        opening = best_note(best, f"best ({'lower' if minimize else 'higher'} is better)", feasible, meeting)
        return ReportTable(title=f"Best designs by {metric_axis_label(names[0])}", headers=headers,
                           note=f"{opening}{broke}"
                                f"{_without_values(meeting, names, 'left out')}{_unjudged(best, rows, names)}",
                           cells=[[point_label(r, lengths=lengths), metric_cell(r, names[0], metric_scale(names[0]))]
                                  for r in best])
    front, roles = _front_and_roles(meeting, minimize, maximize)
    shown = front[:MAX_FRONT_ROWS]
    more = f" Showing the first {len(shown)} of {len(front)}." if len(front) > len(shown) else ""
    goal = ", ".join([f"minimize {n}" for n in minimize] + [f"maximize {n}" for n in maximize])
    opening = (f"{count_label(len(front), 'point')} no other feasible point beats on every objective ({goal}), "
               f"sorted by {names[0]}." if front else best_note(front, "", feasible, meeting))
    return ReportTable(
        title="Pareto-optimal designs", headers=headers + ["chosen"],
        note=f"{opening}{broke}{_without_values(meeting, names, 'left out')}{more}"
             f"{_unjudged(shown, rows, names)}",
        cells=[[point_label(r, lengths=lengths)] + [metric_cell(r, n, metric_scale(n)) for n in names]
               + [", ".join(roles.get(i, []))] for i, r in enumerate(shown)])


def _unjudged(shown: list[dict[str, Any]], rows: list[dict[str, Any]], names: list[str]) -> str:
    """' <footnote>' on the unjudged capacities among the shown rows where capacity_rps is a column; else ''."""
    if "capacity_rps" not in names:
        return ""
    footnote = unjudged_footnote(shown, varying_knobs(rows), f"{NOT_JUDGED_MARK} marks")
    return f" {footnote}" if footnote else ""


def sensitivity_figures(rows: list[dict[str, Any]], objectives: dict | None,
                        search: str | None = None) -> list[ReportFigure]:
    """One effect-size chart per objective (at most MAX_SENSITIVITY): how far each knob moves it, on one scale.
    `search`: the sweep's strategy; a search's points are where it looked, which the caption says."""
    minimize, maximize = objective_names(objectives)
    how = how_to_read_sensitivity(search)
    readings = knob_readings(rows)  # the same knobs and rows for every objective
    figures = []
    for name in (minimize + maximize)[:MAX_SENSITIVITY]:
        title = f"Sensitivity of {metric_axis_label(name)} to each knob"
        effects = [Effect(knob=knob, values=[(value_label(v), r) for v, r in points])
                   for knob, points in effect_sizes(rows, name, readings)]
        if not effects or not any(math.isfinite(e.spread) for e in effects):
            why = ("no knob varies in the sweep" if not effects else
                   f"no knob has two values with a positive value of {name} at feasible points")
            figures.append(ReportFigure(name=f"sensitivity_{name}".lower(), title=title, png=None,
                                        caption=f"Not drawn: {why}."))
            continue
        ranked = ", ".join(f"{e.knob} {e.spread:.3g}×" for e in effects if math.isfinite(e.spread))
        figures.append(ReportFigure(name=f"sensitivity_{name}".lower(), title=title,
                                    caption=f"Knobs by effect: {ranked}. {how}",
                                    png=figure_png(sensitivity_figure(name, effects))))
    return figures


def chosen_designs(rows: list[dict[str, Any]], objectives: dict | None,
                   constraints: Sequence[str] | None) -> list[tuple[dict[str, Any], list[str]]]:
    """The designs the report picks, with their roles: the best on each objective and the balanced one (the
    best one for a single objective); none without objectives."""
    minimize, maximize = objective_names(objectives)
    names = minimize + maximize
    meeting, _ = split_by_constraints(rows, Constraint.parse_all(constraints))
    if len(names) == 1:
        return [(row, [f"best {names[0]}"]) for row in _ranked(meeting, names[0], bool(minimize))[:1]]
    if not names:
        return []
    front, roles = _front_and_roles(meeting, minimize, maximize)
    return [(front[i], role) for i, role in sorted(roles.items())]


def _front_and_roles(meeting: list[dict[str, Any]], minimize: list[str],
                     maximize: list[str]) -> tuple[list[dict[str, Any]], dict[int, list[str]]]:
    """The Pareto front sorted by the first objective, and the chosen roles by index into it: one ordering for the
    table and the rooflines, so ties (two points equally balanced) resolve to the same design in both."""
    front = sorted(pareto_rows(meeting, minimize, maximize), key=lambda r: float(r[(minimize + maximize)[0]]))
    return front, chosen_roles(front, minimize, maximize)


def objective_sections(rows: list[dict[str, Any]], objectives: dict | None, constraints: Sequence[str] | None,
                       search: str | None = None) -> tuple[list[ReportFigure], list[ReportTable]]:
    """The figures and tables the objectives add to the report (none without objectives), in report order."""
    if not any(objective_names(objectives)):
        return [], []
    figures = pareto_figures(rows, objectives, constraints) + sensitivity_figures(rows, objectives, search)
    return figures, [pareto_table(rows, objectives, constraints)]
