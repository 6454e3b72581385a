"""The rows of a CSV table: a last row without its line end is cut short and left out; a row ended by its line end
stays, however few its cells."""

from __future__ import annotations

import io

import pytest

from workloads.csv_rows import table_rows


@pytest.mark.parametrize("end", ["\r\n", "\n"])
def test_every_row_of_a_table_ending_in_a_line_end_is_kept(end):
    text = f"a,b,c{end}1,2,3{end}4,5{end}"
    assert table_rows(io.StringIO(text, newline=""), "t.csv") == (
        ["a", "b", "c"], [(2, {"a": "1", "b": "2", "c": "3"}), (3, {"a": "4", "b": "5", "c": None})])


def test_a_cut_row_spanning_lines_is_left_out_whole_and_named_by_its_last_line(caplog):
    # A quoted cell holds a line break: the record that ends the file starts on line 3 and ends, cut, on line 4.
    text = 'a,b\r\n1,2\r\n3,"x\r\ny'
    header, rows = table_rows(io.StringIO(text, newline=""), "t.csv")
    assert (header, rows) == (["a", "b"], [(2, {"a": "1", "b": "2"})])
    assert caplog.messages[0].startswith("t.csv:4: left out: the file ends inside this row")


def test_a_header_alone_without_its_line_end_has_no_rows_and_no_warning(caplog):
    assert table_rows(io.StringIO("a,b", newline=""), "t.csv") == (["a", "b"], [])
    assert table_rows(io.StringIO("", newline=""), "t.csv") == ([], [])
    assert not caplog.messages
