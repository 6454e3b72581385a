"""Lines of results.csv from a batch of rows held as columns, as csv.writer (the excel dialect) writes them.

Written column by column rather than cell by cell: a value shared by every row is formatted once, a numpy column of
floats is formatted once per distinct value (a what-if grid repeats values: points bound by memory do not depend
on the FLOP/s knob), and each line is one join. NaN and None are empty cells.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from explore.columns import Columns

# What makes csv's QUOTE_MINIMAL quote a cell: the delimiter, the quote character or a line break.
_QUOTED = re.compile(r'[",\r\n]')
LINE_END = "\r\n"  # csv.writer's lineterminator


def cell(value: Any) -> str:
    """One cell as csv.writer writes it: '' for None and NaN, a float as repr, text quoted where it must be."""
    if value is None or value != value:  # value != value: NaN
        return ""
    if value.__class__ is float:
        return repr(value)
    text = str(value)
    return '"' + text.replace('"', '""') + '"' if _QUOTED.search(text) else text


def _float_cells(values: np.ndarray) -> Iterable[str]:
    """The cells of a float column, each distinct value formatted once (np.unique would merge -0.0 into 0.0: a column
    holding one is formatted value by value)."""
    if len(values) < 2 or np.any((values == 0) & np.signbit(values)):
        return [cell(v) for v in values.tolist()]
    distinct, where = np.unique(values, return_inverse=True)  # sorted, NaN (one value) last
    text = list(map(repr, distinct.tolist()))
    if np.isnan(distinct[-1]):
        text[-1] = ""
    return operator.itemgetter(*where.ravel().tolist())(text)


def column_cells(columns: Columns, name: str) -> Iterable[str]:
    """The cells of column `name` of a batch, row by row (empty where the batch lacks it)."""
    if name not in columns.arrays:
        return itertools.repeat(cell(columns.constants.get(name)), columns.size)
    values = columns.arrays[name]
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        return _float_cells(values)
    if isinstance(values, np.ndarray):
        values = values.tolist()
    kinds = set(map(type, values))
    if kinds == {float}:
        return _float_cells(np.array(values, dtype=float))
    if kinds == {str} and not _QUOTED.search("".join(values)):
        return values
    if kinds == {int}:
        return list(map(str, values))
    return [cell(v) for v in values]


def csv_text(columns: Columns, names: list[str]) -> str:
    """The lines of a batch's rows, the cells of `names` in that order, each line ended."""
    if not columns.size:
        return ""
    lines = map(",".join, zip(*(column_cells(columns, name) for name in names), strict=True))
    return LINE_END.join(lines) + LINE_END
