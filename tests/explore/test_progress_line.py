"""The progress line (explore/progress_line.py): rewritten in place on a terminal, and in a log (any other stream) a
line of its own per update shown, at most every LOG_INTERVAL_S seconds and at the end, never run together."""

from __future__ import annotations

import io
import sys

from explore.progress_line import ProgressLine


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_whole_lines_and_a_terminal_one_line_rewritten(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    line = ProgressLine()
    for done in range(1, 4):  # three updates within a second: the first and the last shown
        line.show(f"[{done}/3] feasible {done}   ", last=done == 3)
    assert log.getvalue() == "[1/3] feasible 1\n[3/3] feasible 3\n"
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    line = ProgressLine()
    for done in range(1, 4):
        line.show(f"[{done}/3]", last=done == 3)
    assert terminal.getvalue() == "\r[1/3]\r[2/3]\r[3/3]\n"


def test_a_later_update_is_shown_once_the_interval_has_passed(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    clock = iter([0.0, 4.0, 10.5])
    monkeypatch.setattr("explore.progress_line.time.monotonic", lambda: next(clock))
    line = ProgressLine()
    for text in ("a", "b", "c"):
        line.show(text, last=False)
    assert log.getvalue() == "a\nc\n"
