"""How many copies of a GEMM's lookup tables SAIL's PIM level writes (hw_models/cpu.py table_copies): the count that
finishes its lookups soonest, the fewest on a tie."""

from __future__ import annotations

import numpy as np
import pytest

from hw_models.cpu import table_copies


def _by_search(build_s, write_s, read_s, add_s, holding, arrays):
    """Every count from 1 to the most the arrays hold tried, the first of the soonest taken."""
    most = max(int(arrays // holding), 1)
    times = [max(build_s, r * write_s) + max(read_s / min(r * holding, arrays), add_s) for r in range(1, most + 1)]
    return 1 + int(np.argmin(times))


@pytest.mark.parametrize("row, copies", [
    # max(1, 0.1 r) + 100 / r: 3.1 + 3.2258 at 31, 3.2 + 3.125 at 32, 3.3 + 3.0303 at 33.
    ((1.0, 0.1, 100.0, 0.0, 1.0, 100.0), 32),
    # max(10, r) + max(12 / r, 2): 12.4 at 5, 12 from 6 to 10 (the builds and the adds outlast the rest), 13 at 11.
    ((10.0, 1.0, 12.0, 2.0, 1.0, 100.0), 6),
    # The writes outlast the builds from the first copy on and the adds the reads: one copy.
    ((0.0, 1.0, 1.0, 5.0, 1.0, 100.0), 1),
    # Reads fall until 50 copies fill the 100 arrays, each copy on 2: max(0, r / 1000) + 10 / (2r) falls to 50.
    ((0.0, 0.001, 10.0, 0.0, 2.0, 100.0), 50),
    # One copy needs more arrays than there are: its tables run in passes.
    ((1.0, 0.1, 100.0, 0.0, 300.0, 100.0), 1),
])
def test_the_copies_that_finish_soonest(row, copies):
    got = table_copies(*(np.array([v]) for v in row[:5]), row[5])
    assert got.tolist() == [copies] and _by_search(*row) == copies


def test_the_closed_form_finds_what_a_search_of_every_count_finds():
    """Times spread over six decades, some zero, some writes a whole fraction of the builds (ties between counts)."""
    rng = np.random.default_rng(7)
    n = 3000
    build_s, write_s, read_s, add_s = (10 ** rng.uniform(-9, -3, n) for _ in range(4))
    for times in (build_s, write_s, read_s, add_s):
        times[rng.random(n) < 0.05] = 0.0
    write_s[:200] = build_s[:200] / rng.integers(1, 40, 200)
    holding = np.floor(10 ** rng.uniform(0, 3.5, n))
    got = table_copies(build_s, write_s, read_s, add_s, holding, 4000.0)
    want = [_by_search(*row, 4000.0) for row in zip(build_s, write_s, read_s, add_s, holding, strict=True)]
    assert got.tolist() == want
