"""The cyclic garbage collector paused while many objects without reference cycles are made."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic collector off inside, as it was after. Each few hundred containers made set it off, and as they
    survive, its full collections walk everything alive (a sweep's traces: millions of objects): a trace's ops made
    with it on (a cached trace's JSON written or read, its layers copied) took 1.3 to 4.6 times as long on the 2-core
    machine (DeepSeek-V3's traces, 2026-12-07)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
