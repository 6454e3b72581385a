"""The explore command as a user runs it: exit codes, one-line errors, JSON metrics, kill -9 and resume
(results.sqlite keeps every committed batch exactly once)."""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from tiny_sweep import interrupted_after_one_task, write_four_point_sweep, write_tiny_model

from explore.knobs import input_columns
from explore.metrics import metric_names
from explore.results import read_results
from explore.runner import run_sweep
from explore.sweep import load_sweep
from kernels.measured import MeasuredKernel, read_table

# The claims here are about rows, columns, messages and files, not about what a report's figure shows.
pytestmark = pytest.mark.usefixtures("figures_undrawn")

ROOT = Path(__file__).resolve().parents[2]


def explore(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """The explore command in a process of its own (what kill -9 needs)."""
    return subprocess.run([sys.executable, "-m", "explore", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def explore_here(capsys, *args: str) -> subprocess.CompletedProcess:
    """The explore command run in this process (`python -m explore` exits with what main returns): its exit code,
    stdout and stderr, without starting Python and importing the project and torch once more."""
    from explore.cli import main

    capsys.readouterr()  # what the test printed before is not the command's
    code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["explore", *args], code, out, err)


@pytest.mark.parametrize("args,needle", [
    (["run", "--model", "llama-2-7b", "--device", "h100-sxn"], "did you mean 'h100-sxm'"),
    (["run", "--model", "nope", "--device", "h100-sxm"], "model: found 'nope'"),
    (["run", "--model", "llama-2-7b", "--device", "h100-sxm", "--batch", "0"], "--batch: found 0"),
    (["run", "--model", "llama-2-7b", "--device", "h100-sxm", "--sparsity", "3:5"],
     "--sparsity: found '3:5', allowed: dense or N:M"),
    (["check", "does-not-exist.yaml"], "does-not-exist.yaml: cannot read"),
    (["check", str(ROOT / "examples" / "quickstrat.yaml")], "cannot read: No such file or directory (did you mean "
                                                           "'quickstart.yaml'?)"),
    (["report", "no-such-dir"], "no results.csv"),
    # A preset a flag names is refused by that flag (it read 'model: found', the key a sweep file writes).
    (["run", "--model", "lama-2-7b", "--device", "h100-sxm"],
     "error: --model: found 'lama-2-7b' (did you mean 'llama-2-7b'?), allowed: a path to a config.json or one of"),
    (["run", "--model", "llama-2-7b", "--device", "H100"],
     "error: --device: found 'H100' (did you mean 'h100-pcie' or 'h100-sxm'?), allowed: a path to a device YAML"),
    (["trace", "--model", "lama-2-7b", "--phase", "prefill", "-o", "trace.json"], "error: --model: found 'lama-2-7b'"),
    (["validate", "--device", "H100", str(ROOT / "tests" / "data" / "bad" / "measured_one_row.csv")],
     "error: --device: found 'H100'"),
    # A required flag misspelled is named, not the flag it leaves out ('required: --device').
    (["run", "--model", "llama-2-7b", "--devcie", "h100-sxm"],
     "error: --devcie: not a flag of explore run (did you mean '--device'?)"),
    # The positional is named as --help shows it (it read 'kind: found 'foo'').
    (["presets", "foo"], "error: KIND: found 'foo', allowed: models, devices, links"),
])
def test_user_mistakes_exit_2_with_one_line(args, needle, capsys):
    done = explore_here(capsys, *args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]


def test_run_json_uses_results_column_names(capsys):
    done = explore_here(capsys, "run", "--model", "llama-2-7b", "--device", "h100-sxm", "--prompt", "64", "--output",
                        "4", "--json")
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    assert set(metric_names("point")) <= set(metrics)
    # 4 output tokens per request: tokens/s is 4 over the end-to-end latency (batch 1).
    assert metrics["tokens_per_s"] == pytest.approx(4 / metrics["e2e_s"])
    assert metrics["fits_in_memory"] is True


def test_run_infeasible_point_reports_reason_not_crash(capsys):
    # Llama-2-13B's 13.0e9 bf16 weights alone are 26 GB; the L4's 24 GB of GDDR6 leave a CUDA program 22.03 GiB
    # = 23.7 GB (PyTorch's 'total capacity', github.com/ArcInstitute/evo2/issues/190). Exit code 1: no metrics to use.
    done = explore_here(capsys, "run", "--model", "llama-2-13b", "--device", "l4", "--prompt", "16", "--output", "2",
                        "--json")
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("explore: infeasible: needs 26.0 GB") and "Traceback" not in done.stderr
    metrics = json.loads(done.stdout)
    assert metrics["fits_in_memory"] is False
    assert "needs" in metrics["infeasible_reason"] and "23.7 GB" in metrics["infeasible_reason"]
    assert metrics["tpot_s"] is None
    # 8-bit weights: 13 GB (and a scale per 128 weights); two L4s: 48 GB.
    assert [h["flags"] for h in metrics["hints"]][:2] == ["--weight-bits 8", "--tp 2"]


def _sweep(tmp_path: Path) -> Path:
    """60 points in 12 trace groups (batch sizes) of 5 devices: results arrive group by group."""
    model = write_tiny_model(tmp_path)
    sweep = tmp_path / "sweep.yaml"
    batches = ", ".join(str(b) for b in range(1, 13))
    sweep.write_text(f"name: resume\nmodel: {model}\ndevice: [h100-sxm, l4, a100-sxm-80gb, l40s, h200]\n"
                     f"workload: {{batch: [{batches}], prompt: 16, output: 4}}\n")
    return sweep


def _rows(out: Path) -> list[dict]:
    with (out / "results.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_kill_9_then_resume_loses_nothing_and_duplicates_nothing(tmp_path):
    sweep = _sweep(tmp_path)
    total = 12 * 5
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "explore", str(sweep), "--out", str(out), "--quiet"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        results = out / "results.csv"
        if results.exists() and results.read_text().count("\n") > 10:  # header + two groups
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # What the database holds after the kill: every batch committed before it, each point once.
    stored = read_results(out)
    partial = [{k: "" if v is None or v != v else str(v) for k, v in row.items()} for row in stored]
    assert 0 < len(partial) < total, "the kill should land mid-sweep"
    assert len({r["point_id"] for r in partial}) == len(partial)
    # results.csv, appended as batches finished, holds no row the database lacks (a last line may be cut short).
    assert {r["point_id"] for r in _rows(out) if r["point_id"]} <= {r["point_id"] for r in partial}

    resumed = explore(str(sweep), "--out", str(out), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    rows = _rows(out)
    ids = [r["point_id"] for r in rows]
    assert len(ids) == total and len(set(ids)) == total
    for row in partial:  # finished rows were kept as they were, not evaluated again
        assert rows[ids.index(row["point_id"])] == row

    # Determinism: the resumed sweep's rows equal an uninterrupted run's.
    run_sweep(load_sweep(str(sweep)), tmp_path / "clean")
    by_id = {r["point_id"]: r for r in _rows(tmp_path / "clean")}
    assert {r["point_id"]: r for r in rows} == by_id
    inputs = input_columns(system=False, serving=False)
    assert list(rows[0])[:len(inputs)] == inputs
    # The resumed results.csv lists the points in sweep order, like the uninterrupted run's.
    assert ids == [r["point_id"] for r in _rows(tmp_path / "clean")]
    assert (out / "report.html").exists()
    db = sqlite3.connect(out / "results.sqlite")
    assert db.execute("SELECT COUNT(*), COUNT(DISTINCT point_id) FROM results").fetchone() == (total, total)
    db.close()


def _synthetic_table(tmp_path: Path) -> Path:
    """GEMMs timed by a known efficiency (compute 0.5, bandwidth 0.8, 6 us latency) under two sources."""
    from hw_models.calibration import predict
    from hw_models.gpu import GPUModel
    from hw_models.gpu_efficiency import Calibration, GemmFit
    from hw_models.registry import load_device
    from kernels.measured import MeasuredKernel, write_table

    base = load_device("h100-sxm", calibrated=False)
    truth = Calibration(device="h100-sxm", gemm=GemmFit(compute_fraction=0.5, bandwidth_fraction=0.8,
                                                        latency_s=6e-6, blend=2.0))
    shapes = [(2**a, 2**b, 2**c) for a in range(0, 13, 2) for b in range(8, 14, 2) for c in range(8, 14, 2)]
    rows = [MeasuredKernel(device="h100-sxm", kernel="gemm", dtype="fp16", time_s=1.0, source=f"src-{i % 2}",
                           m=m, n=n, k=k) for i, (m, n, k) in enumerate(shapes)]
    times = predict(GPUModel(base.spec, calibration=truth), rows)
    rows = [MeasuredKernel(**{**r.__dict__, "time_s": float(t)}) for r, t in zip(rows, times, strict=True)]
    path = tmp_path / "table.csv"
    write_table(path, rows)
    return path


def test_calibrate_writes_provenance_and_validate_reports_json(tmp_path, capsys):
    import yaml

    table = _synthetic_table(tmp_path)
    cal = tmp_path / "h100.yaml"
    done = explore_here(capsys, "calibrate", str(table), "--device", "h100-sxm", "--out", str(cal))
    assert done.returncode == 0, done.stderr
    written = yaml.safe_load(cal.read_text())
    assert written["gemm"]["compute_fraction"] == pytest.approx(0.5, rel=0.02)
    # 63 shapes alternate between two sources (src-0 has 32 rows, src-1 31); half the sources fit: one of them.
    train = written["provenance"]["train_sources"]
    assert written["provenance"]["rows_used"] == {("src-0",): 32, ("src-1",): 31}[tuple(train)]

    done = explore_here(capsys, "validate", str(table), "--device", "h100-sxm", "--json", "--out", str(tmp_path / "v"))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert set(summary["h100-sxm"]["gemm"]) == {"n", "median_abs_err", "p90_abs_err", "median_bias"}
    assert (tmp_path / "v" / "validate-h100-sxm.png").exists()


def test_calibrate_refuses_times_in_milliseconds(tmp_path, capsys):
    # The same GEMMs with time_s in milliseconds (1,000x the seconds): no fit within the parameters' bounds (fractions
    # of at least 0.05, latencies of at most 1 ms) comes near them, so the calibration would price every GEMM ~1,000x
    # off. Refused with one line, and no file written.
    from kernels.measured import write_table

    rows = read_table(_synthetic_table(tmp_path))
    slipped = tmp_path / "ms.csv"
    write_table(slipped, [MeasuredKernel(**{**r.__dict__, "time_s": r.time_s * 1e3}) for r in rows])
    cal = tmp_path / "h100.yaml"
    err = _one_line_error(capsys, ["calibrate", str(slipped), "--device", "h100-sxm", "--out", str(cal)])
    assert "gemm rows for h100-sxm" in err and "faster than measured" in err and "seconds" in err
    assert not cal.exists()


def test_a_gpu_of_ones_own_is_calibrated_priced_and_validated_from_its_device_file(tmp_path, capsys):
    # A GPU no preset describes: a device file of its own (the L40S's figures under another name, no sibling), GEMMs
    # timed by a known efficiency (compute 0.5, bandwidth 0.8, 6 us) on its peaks, its device column the file's name.
    import yaml

    from explore.design_point import DesignPoint
    from hw_models.calibration import predict
    from hw_models.gpu import GPUModel
    from hw_models.gpu_efficiency import Calibration, GemmFit
    from hw_models.registry import load_device, read_device_yaml
    from kernels.measured import write_table

    data, _ = read_device_yaml("l40s")
    device = tmp_path / "my-gpu.yaml"
    device.write_text(yaml.safe_dump({**data, "name": "my-gpu"}))
    base = load_device(str(device), calibrated=False)
    truth = Calibration(device="my-gpu", gemm=GemmFit(compute_fraction=0.5, bandwidth_fraction=0.8, latency_s=6e-6,
                                                      blend=2.0))
    shapes = [(2**a, 2**b, 2**c) for a in range(0, 13, 2) for b in range(8, 14, 2) for c in range(8, 14, 2)]
    rows = [MeasuredKernel(device="my-gpu", kernel="gemm", dtype="bf16", time_s=1.0, source=f"src-{i % 2}",
                           m=m, n=n, k=k) for i, (m, n, k) in enumerate(shapes)]
    times = predict(GPUModel(base.spec, calibration=truth), rows)
    table = tmp_path / "my-gpu.csv"
    write_table(table, [MeasuredKernel(**{**r.__dict__, "time_s": float(t)}) for r, t in zip(rows, times, strict=True)])

    # A file has no shipped place for its fits: --out is needed.
    assert "--out: missing" in _one_line_error(capsys, ["calibrate", str(table), "--device", str(device)])
    cal = tmp_path / "fits" / "my-gpu.yaml"
    from explore.cli import main
    assert main(["calibrate", str(table), "--device", str(device), "--out", str(cal)]) == 0
    out, err = capsys.readouterr()
    assert "calibration: fits/my-gpu.yaml" in out  # how to name it in the file
    assert "notice" not in err
    # A row whose device is misspelled is no fit's: it is named, not silently left out.
    typo = tmp_path / "typo.csv"
    write_table(typo, [replace(r, device="my-gpuu") if i < 2 else r for i, r in enumerate(read_table(table))])
    assert main(["calibrate", str(typo), "--device", str(device), "--out", str(tmp_path / "typo-fits.yaml")]) == 0
    assert "rows of 'my-gpuu' (2 rows) name no preset, device file or --device" in capsys.readouterr().err
    assert yaml.safe_load(cal.read_text())["gemm"]["compute_fraction"] == pytest.approx(0.5, rel=0.02)

    # Named in the device file, the fits price it: explore run says fitted, validate scores the held-out source.
    unnamed = DesignPoint(model="llama-2-7b", device=str(device), batch=1, prompt=64, output=4).point_id
    device.write_text(device.read_text() + "calibration: fits/my-gpu.yaml\n")
    assert load_device(str(device)).calibration.gemm.compute_fraction == pytest.approx(0.5, rel=0.02)
    assert main(["run", "--model", "llama-2-7b", "--device", str(device), "--prompt", "64", "--output", "4",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["calibrated"] == "fitted"
    assert main(["validate", str(table), "--device", str(device), "--json", "--out", str(tmp_path / "v")]) == 0
    summary = json.loads(capsys.readouterr().out)[str(device)]["gemm"]
    assert summary["n"] in (31, 32) and summary["median_abs_err"] < 0.02
    # The calibration is part of what a point evaluates: refitted, it is a new point.
    named = DesignPoint(model="llama-2-7b", device=str(device), batch=1, prompt=64, output=4).point_id
    cal.write_text(cal.read_text() + "# refitted\n")
    refitted = DesignPoint(model="llama-2-7b", device=str(device), batch=1, prompt=64, output=4).point_id
    assert len({unnamed, named, refitted}) == 3

    # Fits of another device, and a what-if on a preset (base:), are refused with one line each.
    cal.write_text(cal.read_text().replace("device: my-gpu", "device: l40s"))
    err = _one_line_error(capsys, ["run", "--model", "llama-2-7b", "--device", str(device)])
    assert "calibration: found 'fits/my-gpu.yaml', fitted for 'l40s'" in err
    what_if = tmp_path / "faster-l40s.yaml"
    what_if.write_text("base: l40s\nmemory: {bandwidth_GBps: 1000}\n")
    err = _one_line_error(capsys, ["calibrate", str(table), "--device", str(what_if), "--out", str(cal)])
    assert "what-if of preset 'l40s' (base:)" in err


def test_validate_scores_general_layout_rows_apart(tmp_path, capsys):
    # A pointwise row off the contiguous loop (variant general) is its own group, priced by that class's fit.
    path = tmp_path / "pointwise.csv"
    path.write_text("device,kernel,bytes,dtype,time_s,source,variant\n"
                    "h200,elementwise,1000000,bf16,5e-6,a,\n"
                    "h200,elementwise,1000000,bf16,5e-6,b,general\n")
    done = explore_here(capsys, "validate", str(path), "--json", "--out", str(tmp_path / "v"))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)["h200"]
    assert summary["elementwise"]["n"] == summary["elementwise general"]["n"] == 1
    # The same bytes take longer off the contiguous loop (0.4 of the DRAM peak, not 0.9): the same measured time
    # is predicted slower there, so its error is the larger.
    assert summary["elementwise general"]["median_bias"] > summary["elementwise"]["median_bias"]
    # Every scored row, written back as a measured-kernel table with its group, prediction and signed error.
    with gzip.open(tmp_path / "v" / "rows.csv.gz", "rt", newline="") as f:
        written = list(csv.DictReader(f))
    assert [(r["source"], r["group"]) for r in written] == [("a", "elementwise"), ("b", "elementwise general")]
    for row in written:
        assert float(row["error"]) == pytest.approx(float(row["predicted_s"]) / float(row["time_s"]) - 1, abs=1e-4)
    assert len(read_table(tmp_path / "v" / "rows.csv.gz")) == 2  # a table `explore validate` itself reads


def test_validate_bad_table_is_one_line(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text("device,kernel\nh100-sxm,gemm\n")
    done = explore_here(capsys, "validate", str(path))
    assert done.returncode == 2 and "time_s" in done.stderr and "Traceback" not in done.stderr


def test_validate_profile_compares_each_profiled_op(tmp_path, tiny_llama, capsys):
    import torch
    from torch.profiler import ProfilerActivity, profile

    from workloads.decoder import DecoderModel, KVCache

    model = DecoderModel(tiny_llama)
    cache = KVCache(tiny_llama, 1, 16, model.dtype)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        model(torch.zeros((1, 16), dtype=torch.long), cache, 0)
    trace = tmp_path / "profile.json"
    prof.export_chrome_trace(str(trace))
    done = explore_here(capsys, "validate", "--profile", str(trace), "--device", "h100-sxm", "--json", "--out",
                        str(tmp_path))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)["h100-sxm"]
    # The tiny llama runs 2 layers x 7 projections + the LM head = 15 GEMMs, each compared once.
    assert summary["gemm"]["n"] == 15
    assert summary["attention_prefill"]["n"] == 2  # by kernel kind: a 16-token prompt's attention is a prefill
    # Each kind's time summed over the run, and a row of all of them: the sums of the kinds' sums.
    kinds = [group for name, group in summary.items() if name != "all kernels"]
    for column in ("measured_s", "predicted_s"):
        assert summary["all kernels"][column] == pytest.approx(sum(group[column] for group in kinds), rel=1e-12)
    assert summary["all kernels"]["n"] == sum(group["n"] for group in kinds)


def _one_line_error(capsys, argv: list[str]) -> str:
    """Run the explore command in this process: it must exit 2 with one line on stderr and no traceback."""
    from explore.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_a_mistyped_flag_is_named_with_the_command_s_nearest_flag(capsys):
    """A flag a command does not take names itself, the command it was given to and that command's nearest flag
    (it read 'unrecognized arguments: --bacth 8 (see explore --help)', the top-level help and no flag)."""
    run = ["run", "--model", "llama-2-7b", "--device", "h100-sxm"]
    err = _one_line_error(capsys, [*run, "--bacth", "8"])
    assert "--bacth: not a flag of explore run (did you mean '--batch'?); allowed: the flags explore run --help" in err
    assert "--kv_bits: not a flag of explore run (did you mean '--kv-bits'?)" in _one_line_error(
        capsys, [*run, "--kv_bits=8"])
    err = _one_line_error(capsys, [str(ROOT / "examples" / "quickstart.yaml"), "--wokers", "2"])
    assert "--wokers: not a flag of explore (did you mean '--workers'?)" in err
    assert "'b.yaml': not an argument of explore check" in _one_line_error(capsys, ["check", "a.yaml", "b.yaml"])


def test_more_user_mistakes_are_one_line(tmp_path, capsys):
    run = ["run", "--model", "llama-2-7b", "--device", "h100-sxm", "--batch", "1", "--prompt", "8", "--output", "2"]
    # argparse's refusals said as every other: the flag, what was found (the nearest choice) and what is allowed.
    assert "--weight-bits: found 7, allowed: 16, 8, 6, 5, 4, 3, 2" in _one_line_error(
        capsys, [*run, "--weight-bits", "7"])
    assert "--phase: found 'prefil' (did you mean 'prefill'?), allowed: prefill, decode" in _one_line_error(
        capsys, ["trace", "--model", "llama-2-7b", "--phase", "prefil", "-o", str(tmp_path / "trace.json")])
    assert "--rate: found 'fast', allowed: a number" in _one_line_error(capsys, [*run, "--serving", "--rate", "fast"])
    assert "did you mean 'check'" in _one_line_error(capsys, ["chek", "sweep.yaml"])
    missing = tmp_path / "no-such-folder" / "trace.json"
    assert f"--chrome-trace: found {str(missing)!r}, whose folder" in _one_line_error(
        capsys, [*run, "--chrome-trace", str(missing)])
    latin1 = tmp_path / "cafe.yaml"
    latin1.write_bytes("name: caf\xe9\nmodel: llama-2-7b\ndevice: h100-sxm\n".encode("latin-1"))
    assert "not UTF-8 text (byte 0xe9" in _one_line_error(capsys, ["check", str(latin1)])
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 2,
        "num_attention_heads": 32, "num_key_value_heads": 3, "vocab_size": 100, "max_position_embeddings": 128}))
    run[2] = str(model)  # a Hugging Face model folder is read through its config.json
    assert "num_key_value_heads: found 3, allowed: a divisor of num_attention_heads (32)" in _one_line_error(
        capsys, run)
    assert "a GPU preset" in _one_line_error(capsys, ["calibrate", str(latin1), "--device", "neupims"])


def test_a_chrome_trace_into_a_missing_folder_is_refused_before_the_run(tmp_path, capsys, monkeypatch):
    """--chrome-trace into a folder that does not exist, or onto a folder: refused in one line naming the flag before
    the point is evaluated (which would be lost when the write failed after it)."""
    from explore.evaluate import Evaluator

    evaluated = []
    monkeypatch.setattr(Evaluator, "evaluate", lambda self, *a, **k: evaluated.append(a) or pytest.fail("evaluated"))
    run = ["run", "--model", "llama-2-7b", "--device", "h100-sxm", "--batch", "1", "--prompt", "8", "--output", "2"]
    for path in (tmp_path / "no-such-folder" / "t.json", tmp_path):
        err = _one_line_error(capsys, [*run, "--chrome-trace", str(path)])
        assert err.startswith(f"explore: error: --chrome-trace: found {str(path)!r}, "), err
        assert "; allowed: a file" in err, err
    assert evaluated == []


def test_a_chrome_trace_of_a_speculative_static_batch_is_refused_in_one_line(tiny_config, tmp_path, capsys):
    """A static batch that decodes speculatively is priced in closed form (sim/speculative.py), with no per-kernel
    timeline to write: --chrome-trace beside --spec-draft is refused in one line naming both (it ran, then ended in a
    ValueError traceback), and nothing is written; a serving run speculates in its event simulation and writes one."""
    path = tmp_path / "t.json"
    run = ["run", "--model", tiny_config, "--device", "h100-sxm", "--batch", "1", "--prompt", "8", "--output", "4",
           "--spec-draft", "medusa", "--chrome-trace", str(path)]
    err = _one_line_error(capsys, run)
    assert err.startswith("explore: error: --chrome-trace: found with --spec-draft 'medusa', allowed: "), err
    assert not path.exists()
    from explore.cli import main

    serving = ["run", "--model", tiny_config, "--device", "h100-sxm", "--serving", "--requests", "2", "--rate", "1",
               "--prompt", "8", "--output", "4", "--spec-draft", "medusa", "--chrome-trace", str(path)]
    assert main(serving) == 0 and path.exists()
    capsys.readouterr()

def test_run_says_when_an_eager_point_waits_on_the_host(tiny_config, capsys):
    """A batch-1 eager decode of the tiny model dispatches its kernels slower than the device runs them: explore run
    says its TPOT is the host's, with the wait; the same point as an engine (CUDA graphs) waits on nothing and says
    nothing."""
    from explore.cli import main

    flags = ["run", "--model", tiny_config, "--device", "h100-sxm", "--prompt", "16", "--output", "4", "--json"]
    assert main(flags) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["time_host_wait_s"] > 0
    assert "waits on PyTorch eager's dispatch on the host" in captured.err
    assert main([*flags, "--execution", "engine"]) == 0
    assert "waits on" not in capsys.readouterr().err


@pytest.mark.parametrize("quiet", [False, True])
def test_an_interrupted_sweep_says_so_on_a_line_of_its_own(tmp_path, capsys, monkeypatch, quiet):
    """A sweep's progress line is left open with carriage returns: Ctrl-C's message starts a new line after it (it was
    appended to '... ETA 3s'), and with --quiet, where no progress line was drawn, none is added."""
    import explore.cli as cli

    def interrupted(args):
        print("\r[3/8] feasible 3, ETA 3s   ", end="", file=sys.stderr)  # as the progress line leaves it
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_sweep", interrupted)
    sweep = _sweep(tmp_path)
    assert cli.main([str(sweep), "--out", str(tmp_path / "o"), *(["--quiet"] if quiet else [])]) == 130
    err = capsys.readouterr().err
    assert ("ETA 3s   \nexplore: interrupted;" in err) != quiet
    assert "explore: interrupted; every finished design point is stored" in err.splitlines()[-1]


@pytest.mark.usefixtures("figures_undrawn")
@pytest.mark.parametrize(("search", "stored", "says"), [
    ("{strategy: grid}", 2, "2 of 4 design points stored"),  # the first task: batch 1's 2 weight widths
    ("{strategy: random, budget: 3, batch: 1, seed: 1}", 1, "1 design point stored"),  # a task per point asked
])
def test_an_interrupted_sweep_says_how_many_points_its_folder_stores(tmp_path, capsys, monkeypatch, search, stored,
                                                                     says):
    """Ctrl-C as a sweep's second task starts: the line says how many points the folder stores, counted from it
    (the progress line, which lags where stderr is not a terminal, does not say): of the grid's, or so far in a
    search."""
    monkeypatch.setenv("LLM_CODESIGN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "o"
    interrupted_after_one_task(monkeypatch, [write_four_point_sweep(tmp_path, search), "--out", str(out), "--quiet"])
    line = capsys.readouterr().err.splitlines()[-1]
    assert line == f"explore: interrupted; {says}: run the same command again to resume", line
    with sqlite3.connect(out / "results.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == stored


@pytest.mark.parametrize(("flags", "says"), [
    (["--serving", "--rate", "1", "--requests", "4", "--attention-device", "h20", "--attention-devices", "3"],
     "--attention-devices: found 3, allowed: a divisor of llama-2-7b's 32 attention heads"),
    (["--tp", "2", "--allreduce", "star"], "--allreduce: found 'star' on link nvlink4"),
])
def test_a_setting_the_evaluation_refuses_is_named_by_its_flag(capsys, flags, says):
    """Refusals raised while the point is evaluated name the setting as explore run takes it (a sweep's key there)."""
    from explore.cli import main

    assert main(["run", "--model", "llama-2-7b", "--device", "h100-sxm", *flags]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert says in line, line
