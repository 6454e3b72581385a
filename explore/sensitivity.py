"""Parameter sensitivity: how each knob of a sweep moves an objective (median over feasible points per value)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from explore.design_point import KNOB_COLUMNS, SERVING_INPUT_COLUMNS
from explore.rows import OVERRIDE_PREFIX, as_number, is_feasible

KNOBS = (*KNOB_COLUMNS, *SERVING_INPUT_COLUMNS)


def _key(value: Any) -> Any:
    """A hashable key that treats every NaN and None alike (a missing value)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    return value


def varying_knobs(rows: list[dict[str, Any]]) -> list[str]:
    """The knobs (KNOBS, then each device.<path> override column) that take more than one value in the rows."""
    overrides = dict.fromkeys(key for row in rows for key in row if key.startswith(OVERRIDE_PREFIX))
    return [knob for knob in (*KNOBS, *overrides) if len({_key(row.get(knob)) for row in rows}) > 1]


def sensitivity(rows: list[dict[str, Any]], objective: str) -> dict[str, list[tuple[Any, float]]]:
    """For each varying knob, (value, median objective over the feasible rows at that value), values in row order.

    A value whose feasible rows all lack the objective (or that has no feasible row) gets NaN; a missing
    override value (a row without that override) is None.
    """
    result: dict[str, list[tuple[Any, float]]] = {}
    for knob in varying_knobs(rows):
        samples: dict[Any, list[float]] = {}
        for row in rows:
            values = samples.setdefault(_key(row.get(knob)), [])
            number = as_number(row.get(objective))
            if is_feasible(row) and math.isfinite(number):
                values.append(number)
        result[knob] = [(value, float(np.median(v)) if v else math.nan) for value, v in samples.items()]
    return result
