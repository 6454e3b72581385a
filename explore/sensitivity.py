"""Parameter sensitivity: how each knob of a sweep moves an objective (median over feasible points per value)."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from explore.design_point import FORMAT_FIELDS, generic_knobs
from explore.knobs import knobs
from explore.rows import OVERRIDE_PREFIX, as_number, is_feasible
from explore.serving_settings import RULES
from kernels.formats import IDLE_FIELDS, NumericFormat


def _knob_names() -> list[str]:
    """The registered knobs sensitivity looks at: the point's, the system's (tp, pp, ep, link, allreduce), then the
    serving ones."""
    return [k.name for scope in ("point", "system", "serving") for k in knobs(scope=scope)]


# Knobs that equal another on every row where they alias it, each beside the knob it would repeat: a serving point's
# batch is its max_seqs, spread experts' ep is the tp.
ALIASES = (("batch", "max_seqs"), ("ep", "tp"))
# Knobs whose empty value on a row means the point does not read them (explore/serving_settings.py RULES: a serving
# setting read only beside others; a node link where the devices fit one node; a generic knob whose switches are off
# or whose model lacks what it reads, DesignPoint.reads; a serving knob whose switches are off, lora_rank without
# adapters): those rows measure other knobs.
UNREAD_WHEN_EMPTY = frozenset({rule.field for rule in RULES} | {"node_link"}
                              | {k.name for k in generic_knobs() if k.only_with or k.only_for is not None}
                              | {k.name for k in knobs(scope="serving") if k.only_with})


def _key(value: Any) -> Any:
    """A hashable key that treats every NaN and None alike (a missing value)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    return value


def varying_knobs(rows: list[dict[str, Any]]) -> list[str]:
    """The knobs (explore/knobs.py, then each device.<path> override column) that take more than one value in the
    rows that read them (_reading), less an alias equal to the knob it repeats on every row (ALIASES), whose effect
    would show twice."""
    return list(knob_readings(rows))


def knob_readings(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each of varying_knobs with the rows that read it (_reading): what the sensitivity to every objective groups."""
    overrides = dict.fromkeys(key for row in rows for key in row if key.startswith(OVERRIDE_PREFIX))
    aliases = {knob for knob, of in ALIASES if all(_key(row.get(knob)) == _key(row.get(of)) for row in rows)}
    readings = {knob: _reading(rows, knob) for knob in (*_knob_names(), *overrides) if knob not in aliases}
    return {knob: reading for knob, reading in readings.items() if len({_key(row.get(knob)) for row in reading}) > 1}


def _reading(rows: list[dict[str, Any]], knob: str) -> list[dict[str, Any]]:
    """The rows that read `knob`: all of them, less those where a knob left unread shows empty (UNREAD_WHEN_EMPTY)
    and those whose format does not read a format part (NumericFormat.idle_fields: a group size beside 16-bit weights
    and KV cache shows its default, which would count those points at the default's value)."""
    if knob in IDLE_FIELDS and any(knob in row for row in rows[:1]):
        return [row for row in rows if knob not in _idle_format_fields(
            tuple((name, row[name]) for name in FORMAT_FIELDS if _key(row.get(name)) is not None))]
    if knob not in UNREAD_WHEN_EMPTY:
        return rows
    return [row for row in rows if _key(row.get(knob)) is not None]


@functools.lru_cache(maxsize=1024)
def _idle_format_fields(parts: tuple[tuple[str, Any], ...]) -> tuple[str, ...]:
    """NumericFormat.idle_fields of a row's format parts (none where they make no format: a row is read as it is)."""
    try:
        return NumericFormat(**dict(parts)).idle_fields
    except (TypeError, ValueError):
        return ()


def sensitivity(rows: list[dict[str, Any]], objective: str,
                readings: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, list[tuple[Any, float]]]:
    """For each varying knob, (value, median objective over the feasible rows at that value), values in row order.
    `readings`: the rows' knob_readings, where the caller has them (one per sweep, whatever the objective).

    A value whose feasible rows all lack the objective (or that has no feasible row) gets NaN; a missing
    override value (a row without that override) is None.
    """
    result: dict[str, list[tuple[Any, float]]] = {}
    for knob, reading in (knob_readings(rows) if readings is None else readings).items():
        samples: dict[Any, list[float]] = {}
        for row in reading:
            values = samples.setdefault(_key(row.get(knob)), [])
            number = as_number(row.get(objective))
            if is_feasible(row) and math.isfinite(number):
                values.append(number)
        result[knob] = [(value, float(np.median(v)) if v else math.nan) for value, v in samples.items()]
    return result


def overall_median(rows: list[dict[str, Any]], objective: str) -> float:
    """The median of the objective over every feasible row that has a value of it (NaN when none does)."""
    values = [as_number(row.get(objective)) for row in rows if is_feasible(row)]
    values = [v for v in values if math.isfinite(v)]
    return float(np.median(values)) if values else math.nan


def effect_sizes(rows: list[dict[str, Any]], objective: str, readings: dict[str, list[dict[str, Any]]] | None = None,
                 ) -> list[tuple[str, list[tuple[Any, float]]]]:
    """Each varying knob with (value, median objective at that value / median over every feasible row), the knob
    that moves the objective most (largest over smallest ratio) first: one scale for every knob, so a knob that
    changes the objective by 1% and one that doubles it are told apart at a glance. Empty when the overall
    median is not positive (no ratio is meaningful). `readings`: as sensitivity takes them."""
    reference = overall_median(rows, objective)
    if not (math.isfinite(reference) and reference > 0):
        return []

    def spread(points: list[tuple[Any, float]]) -> float:
        ratios = [r for _, r in points if math.isfinite(r) and r > 0]
        return max(ratios) / min(ratios) if len(ratios) > 1 else 1.0

    ratios = {knob: [(value, m / reference) for value, m in points] for knob, points in
              sensitivity(rows, objective, readings).items()}
    return sorted(ratios.items(), key=lambda item: -spread(item[1]))
