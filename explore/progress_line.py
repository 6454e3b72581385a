"""A progress line on stderr: rewritten in place on a terminal; on anything else (a CI log, a file) a line of its own
at most every LOG_INTERVAL_S seconds and at the end, so that updates do not run together on one line."""

from __future__ import annotations

import math
import sys
import time

LOG_INTERVAL_S = 10.0


class ProgressLine:
    """Shows one progress message after another (`show`), as the stream allows."""

    def __init__(self) -> None:
        self._shown_s = -math.inf

    def show(self, text: str, *, last: bool) -> None:
        """Show `text`; `last`: the final update, which ends the line."""
        stream = sys.stderr  # looked up now: a caller (or a test) may have replaced it
        if stream.isatty():
            print(f"\r{text}", end="\n" if last else "", file=stream, flush=True)
            return
        now_s = time.monotonic()
        if last or now_s - self._shown_s >= LOG_INTERVAL_S:
            print(text.rstrip(), file=stream, flush=True)
            self._shown_s = now_s
