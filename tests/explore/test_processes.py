"""Processes and files of a sweep run: pool workers die with the run (kill -9 included), one run per results
folder (an OS lock, so a killed run leaves none behind), --workers capped to what can be used, and temporary
files unique per writer."""

from __future__ import annotations

import contextlib
import csv
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_sweep import write_tiny_model

from explore.cli import main
from explore.report import ReportFigure, ReportTable, render_markdown
from explore.results import LOCK_NAME, _write_csv, folder_lock
from explore.runner import run_sweep, usable_cores
from explore.sweep import load_sweep
from workloads.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


def _children(pid: int) -> dict[int, str]:
    """Live child processes of pid (pid -> start time, which tells a reused pid apart), read from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended while we looked
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = fields[19]
    return found


def _alive(pid: int, started: str) -> bool:
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0] != "Z" and fields[19] == started  # a zombie has ended; another start time is another process


def _wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _end_leftovers(proc: subprocess.Popen, workers: dict[int, str]) -> None:
    """Kill a run a test started and its workers (pid -> start time), where they outlived the test; no other process."""
    for pid, started in workers.items():
        if _alive(pid, started):
            os.kill(pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _sweep(folder: Path, batches: int, name: str = "procs") -> Path:
    """A sweep of the tiny model on one device with `batches` trace groups (one pool task each)."""
    model = write_tiny_model(folder)
    path = folder / f"sweep-{batches}.yaml"
    sizes = ", ".join(str(b) for b in range(1, batches + 1))
    path.write_text(f"name: {name}\nmodel: {model}\ndevice: h100-sxm\n"
                    f"workload: {{batch: [{sizes}], prompt: 16, output: 4}}\n")
    return path


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc (Linux)")
@pytest.mark.skipif(usable_cores() < 2, reason="--workers 2 is capped to 1 on one core: no pool to kill")
def test_kill_9_leaves_no_worker_and_no_lock(tmp_path, capsys):
    out = tmp_path / "out"
    sweep = _sweep(tmp_path, batches=200)  # minutes of work: the run is mid-sweep whenever we look
    proc = subprocess.Popen([sys.executable, "-m", "explore", str(sweep), "--out", str(out), "--workers", "2",
                             "--quiet"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: dict[int, str] = {}
    try:
        workers = _wait_for(lambda: (c := _children(proc.pid)) and len(c) >= 2 and c, 60, "two pool workers")

        # A second run on the folder is refused, naming the folder and the running one's pid.
        assert main([str(sweep), "--out", str(out), "--quiet"]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and str(out) in lines[0] and f"pid {proc.pid}" in lines[0], lines

        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        _wait_for(lambda: not any(_alive(pid, started) for pid, started in workers.items()), 5,
                  f"workers {sorted(workers)} to end with their parent")
    finally:
        _end_leftovers(proc, workers)

    # The killed run's lock went with it (and its workers, which shared it): the next run takes the folder,
    # though the dead run's pid is still in the lock file.
    assert (out / LOCK_NAME).read_text().strip() == str(proc.pid)
    with folder_lock(out):
        assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())


def _hold(path: str, ready, release) -> None:
    with folder_lock(path):
        ready.set()
        release.wait(30)


@contextlib.contextmanager
def _held_elsewhere(out):
    """Another process holds folder `out` for the block: yields that process."""
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(out), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        yield holder
    finally:
        release.set()
        holder.join(30)


def test_a_held_folder_is_refused_and_a_released_one_taken(tmp_path):
    out = tmp_path / "out"
    with _held_elsewhere(out) as holder:
        with pytest.raises(InputError, match=rf"{out}: in use by another explore run \(pid {holder.pid}\)"), \
                folder_lock(out):
            pass
    with folder_lock(out), folder_lock(out):  # free again; re-entrant within one process
        assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())


def test_stale_lock_file_of_a_dead_run_is_taken_over(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / LOCK_NAME).write_text(dead.stdout)  # what a run killed with -9 leaves: its pid, no lock
    with folder_lock(out):
        assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())


def test_workers_above_points_or_cores_are_capped_with_a_notice(tmp_path, caplog):
    sweep = load_sweep(str(_sweep(tmp_path, batches=1)))
    with caplog.at_level(logging.WARNING, logger="explore.runner"):
        rows = run_sweep(sweep, tmp_path / "out", workers=64)
    assert len(rows) == 1
    notices = [r.getMessage() for r in caplog.records if "--workers" in r.getMessage()]
    assert notices == [f"--workers 64: capped to 1 (1 design point, {usable_cores()} usable CPU cores)"]



def test_a_rerun_with_every_point_stored_caps_no_workers(tmp_path, caplog):
    """A rerun that evaluates nothing starts no worker, so it says nothing of capping them."""
    sweep = load_sweep(str(_sweep(tmp_path, batches=1)))
    run_sweep(sweep, tmp_path / "out", workers=1)
    with caplog.at_level(logging.WARNING, logger="explore.runner"):
        rows = run_sweep(sweep, tmp_path / "out", workers=64)
    assert len(rows) == 1
    assert not [r.getMessage() for r in caplog.records if "--workers" in r.getMessage()]


def _rewrite(path: str, rounds: int) -> None:
    rows = [{"a": i, "b": "x" * 200} for i in range(50)]
    for _ in range(rounds):
        _write_csv(Path(path), ["a", "b"], rows)


def test_two_writers_of_one_csv_share_no_temporary_file(tmp_path):
    """Each writer's temporary file is its own: with one shared name, one writer's rename took the other's
    file away (FileNotFoundError) or published a file the other was still writing."""
    path = tmp_path / "results.csv"
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_rewrite, args=(str(path), 300)) for _ in range(2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
    assert [w.exitcode for w in writers] == [0, 0]
    with path.open(newline="") as f:
        assert len(list(csv.DictReader(f))) == 50
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]  # no temporary file left behind


def test_report_md_escapes_html_from_names_as_the_html_report_does():
    evil = "<script>alert(1)</script>"
    table = ReportTable(title=f"Top {evil}", note="note <img src=x onerror=alert(1)>",
                        headers=["device", "reason"], cells=[[f"dev{evil}", "ttft_s <= 0.5 | a\nb"]])
    figure = ReportFigure(name="f", title="T <b>] (x)", caption=f"caption {evil}", png=b"png")
    md = render_markdown(f"sweep {evil}", [f"Models: {evil}."], [figure], [table], lead=1)
    assert "<script" not in md and "<img" not in md and "<b>" not in md and "</" not in md
    assert "&lt;script>alert(1)&lt;/script>" in md
    assert "ttft_s <= 0.5 \\| a b" in md  # comparisons stay readable; cells stay on one line
    assert "![T &lt;b>\\] (x)](figures/f.png)" in md  # the alt text cannot close early


def test_a_report_of_a_folder_a_sweep_is_writing_is_refused(tmp_path, capsys):
    """explore report DIR while a sweep writes DIR drew from its partial rows and said nothing (the sweep then
    overwrote the report at its end); it is now refused in one line naming the run."""
    from explore.cli import main
    from explore.results import CSV_NAME

    out = tmp_path / "out"
    out.mkdir()
    (out / CSV_NAME).write_text("point_id\n")
    with _held_elsewhere(out) as holder:
        assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"in use by another explore run (pid {holder.pid})" in err and len(err.strip().splitlines()) == 1
