"""results.csv lines written column by column (explore/results_csv.py) are the csv module's lines."""

from __future__ import annotations

import csv
import io
import math

import numpy as np

from explore.columns import Columns
from explore.results_csv import csv_text


def _csv_module(rows: list[list]) -> str:
    """What csv.writer writes for these cells (NaN as an empty cell, as the store's rewrite writes it)."""
    out = io.StringIO()
    csv.writer(out).writerows([[None if v != v else v for v in row] for row in rows])
    return out.getvalue()


def test_lines_equal_the_csv_modules():
    rng = np.random.default_rng(0)
    repeated = rng.choice([0.1, 1e-9, 2.5e20, math.nan, 3.0], size=50)  # few distinct values, NaN among them
    distinct = rng.random(50) * 10.0 ** rng.integers(-12, 12, 50)
    signed_zero = np.where(np.arange(50) % 2 == 0, -0.0, 0.0)  # -0.0 and 0.0 are one value to np.unique
    columns = Columns(size=50, names=("id", "const", "repeated", "distinct", "zero", "fits", "count", "why", "ints",
                                      "floats", "texts", "counts"),
                      arrays={"id": [f"p{i}" for i in range(50)], "repeated": repeated, "distinct": distinct,
                              "zero": signed_zero, "fits": np.arange(50) % 3 == 0, "count": np.arange(50),
                              "why": ["", "a, b", 'say "x"', "line\nbreak", None] * 10,
                              "ints": [1, 2.0, True, None, math.nan] * 10,
                              "floats": [0.5, -0.0, math.nan, 0.5, 1e22] * 10, "texts": ["a", "b,c"] * 25,
                              "counts": list(range(50))},
                      constants={"const": 4000.0})
    names = ["id", "const", "repeated", "distinct", "zero", "fits", "count", "why", "missing", "ints", "floats",
             "texts", "counts"]
    expected = _csv_module([[row.get(name) for name in names] for row in columns.rows()])
    assert csv_text(columns, names) == expected
    assert "-0.0" in expected and '"a, b"' in expected  # the cases above are exercised
    assert csv_text(Columns(size=0, names=()), names) == ""
