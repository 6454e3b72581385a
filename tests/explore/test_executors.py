"""The Dask executor gives the rows the local one gives: on a LocalCluster it starts, and on a running one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_sweep import write_tiny_model

from explore.cli import main
from explore.results import read_rows
from explore.runner import run_sweep
from explore.sweep import load_sweep

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

distributed = pytest.importorskip("distributed")


def _sweep_file(tmp_path: Path) -> Path:
    """A tiny model, 4 batch sizes (4 tasks) on 2 devices: 8 points."""
    model = write_tiny_model(tmp_path)
    path = tmp_path / "sweep.yaml"
    path.write_text(f"name: dask\nmodel: {model}\ndevice: [h100-sxm, l4]\n"
                    "workload: {batch: [1, 2, 4, 8], prompt: 16, output: 4}\n")
    return path


def _differences(a: list[dict], b: list[dict]) -> list[str]:
    """Where two row lists differ, field by field ('row 3 ttft_s: 0.1 != 0.2'); NaN equals NaN."""
    if len(a) != len(b):
        return [f"{len(a)} rows != {len(b)} rows"]
    found = []
    for i, (row_a, row_b) in enumerate(zip(a, b, strict=True)):
        for key in sorted(set(row_a) | set(row_b)):
            va, vb = row_a.get(key), row_b.get(key)
            if json.dumps(va) != json.dumps(vb):
                found.append(f"row {i} {key}: {va!r} != {vb!r}")
    return found


@pytest.mark.slow
def test_dask_gives_the_rows_of_a_local_run(tmp_path):
    sweep = load_sweep(str(_sweep_file(tmp_path)))
    local = run_sweep(sweep, tmp_path / "local")
    assert len(local) == 8
    local_csv = read_rows(tmp_path / "local" / "results.csv")
    # On a running cluster, by scheduler address (explore --executor dask --scheduler ADDR).
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        on_dask = run_sweep(sweep, tmp_path / "dask", executor="dask", scheduler=cluster.scheduler_address)
    assert not _differences(on_dask, local)
    # Tasks finish in any order on the cluster; the exported table is in sweep order all the same.
    assert read_rows(tmp_path / "dask" / "results.csv") == local_csv
    # On a LocalCluster the runner starts itself (explore --executor dask --workers 2).
    started = run_sweep(sweep, tmp_path / "started", executor="dask", workers=2)
    assert not _differences(started, local)
    assert read_rows(tmp_path / "started" / "results.csv") == local_csv


def test_scheduler_flag_errors_are_one_line(tmp_path, capsys):
    sweep = str(_sweep_file(tmp_path))
    assert main([sweep, "--out", str(tmp_path / "x"), "--quiet", "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "allowed only with --executor dask" in capsys.readouterr().err
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        code = main([sweep, "--out", str(tmp_path / "x"), "--quiet", "--executor", "dask",
                     "--scheduler", "tcp://127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot reach 'tcp://127.0.0.1:1'" in err and "Traceback" not in err
    # The executor is made before the store: a folder it failed on holds no results tied to this sweep.
    assert not (tmp_path / "x" / "results.sqlite").exists()


def test_a_grid_with_every_point_stored_starts_no_cluster(tmp_path):
    """Rerun with every point stored, a Dask sweep evaluates nothing: it neither starts a cluster nor reaches its
    scheduler (an unreachable address is never tried), and returns the stored rows."""
    import dask

    sweep = load_sweep(str(_sweep_file(tmp_path)))
    local = run_sweep(sweep, tmp_path / "out")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        again = run_sweep(sweep, tmp_path / "out", executor="dask", scheduler="tcp://127.0.0.1:1")
    assert [(r["point_id"], r["tpot_s"]) for r in again] == [(r["point_id"], r["tpot_s"]) for r in local]
