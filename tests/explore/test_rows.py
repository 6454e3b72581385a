"""Typed results rows (explore/rows.py): flags read back from results.csv."""

from __future__ import annotations

import math

import pytest

from explore.rows import normalize_row


@pytest.mark.parametrize(("cell", "flag"), [("1.0", True), ("0.0", False), ("1", True), ("0", False), ("True", True),
                                            ("False", False), ("", False), (1.0, True), (0.0, False),
                                            (math.nan, False)])
def test_a_flag_reads_back_as_results_csv_writes_it(cell, flag) -> None:
    """capacity_judged is stored as a float (1.0 / 0.0) and results.csv writes it as '1.0' / '0.0'."""
    assert normalize_row({"capacity_judged": cell})["capacity_judged"] is flag
