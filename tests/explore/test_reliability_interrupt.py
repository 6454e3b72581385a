"""Ctrl-C on a sweep run with --workers: the run ends at once, its workers with it, every finished point stays
stored, and the same command run again resumes at once (the folder's lock went with the workers)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_processes import _alive, _children, _end_leftovers, _sweep, _wait_for

from explore.results import folder_lock
from explore.runner import usable_cores

ROOT = Path(__file__).resolve().parents[2]
# The run has to end well before the rest of its sweep could run: the 200 tasks take minutes on 2 workers (three
# on this 2-core machine), one task a few seconds at most.
STOP_S = 30


def _stored(out: Path) -> int:
    try:
        with sqlite3.connect(f"file:{out / 'results.sqlite'}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.Error:  # not made yet
        return 0


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc (Linux)")
@pytest.mark.skipif(usable_cores() < 2, reason="--workers 2 is capped to 1 on one core: no pool to stop")
def test_ctrl_c_with_workers_stops_the_run_and_its_workers_at_once(tmp_path):
    out = tmp_path / "out"
    sweep = _sweep(tmp_path, batches=200)  # a pool task per batch: minutes of work
    proc = subprocess.Popen([sys.executable, "-m", "explore", str(sweep), "--out", str(out), "--workers", "2",
                             "--quiet"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    workers: dict[int, str] = {}
    try:
        _wait_for(lambda: _stored(out) >= 3, 120, "three stored points")
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGINT)
        start = time.monotonic()
        # Before: the pool ran all of its queued tasks first (172 s), storing none of them.
        _, err = proc.communicate(timeout=STOP_S)
        assert time.monotonic() - start < STOP_S
        assert proc.returncode == 130 and "interrupted" in err, err
        _wait_for(lambda: not any(_alive(pid, started) for pid, started in workers.items()), 5,
                  f"workers {sorted(workers)} to end")
    finally:
        _end_leftovers(proc, workers)
    stored = _stored(out)
    assert 3 <= stored < 200
    # The interrupt line counts what the folder stores once the run has stopped (its workers write no rows).
    assert f"explore: interrupted; {stored} of 200 design points stored:" in err, err
    with folder_lock(out):  # free: the rerun would resume, not be refused
        pass
