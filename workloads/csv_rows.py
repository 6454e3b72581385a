"""The rows of a CSV table this project writes, a last row cut short by an interrupted write told apart and left out.

Every writer here ends each line, the last one included (csv.writer's line end). A file whose text does not end in
a line end was cut while its last row was written: that row lost its trailing cells, or the tail of its last cell
(1.41280000098049 of 1.4128e-05 s). It is left out with a one-line warning; the command that wrote the table,
run again, writes it again. A row ended by its line end with fewer cells than the header is not cut: its missing
cells are None, as csv.DictReader gives them (a hand-written table may leave optional trailing columns out).
"""

from __future__ import annotations

import csv
import io
import logging
from typing import TextIO

log = logging.getLogger(__name__)

CSVRow = dict[str, str | None]


def table_rows(f: TextIO, where: str) -> tuple[list[str], list[tuple[int, CSVRow]]]:
    """The header of the CSV open in f, and each row not cut short with the line it ends on (the header's is 1);
    `where` names the file in the warning about a row left out."""
    text = f.read()
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = [(reader.line_num, row) for row in reader]
    if rows and not text.endswith(("\n", "\r")):
        line, _ = rows.pop()
        log.warning("%s:%d: left out: the file ends inside this row (no line end after it), a write cut short; the "
                    "command that wrote it, run again, writes it again", where, line)
    return list(reader.fieldnames or []), rows
