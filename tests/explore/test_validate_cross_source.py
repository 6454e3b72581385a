"""`explore validate --cross-from`: another preset's fits on this device's peaks, scored on rows they never saw."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest

from explore.calibrate_cmd import cross_source
from hw_models.calibration import predict
from hw_models.gpu import GPUModel
from hw_models.gpu_efficiency import Calibration, GemmFit
from hw_models.registry import load_device
from kernels.measured import MeasuredKernel, write_table
from workloads.errors import InputError

TRUTH = Calibration(device="h200", gemm=GemmFit(compute_fraction=0.7, bandwidth_fraction=0.8, latency_s=3e-6,
                                                blend=2.0, padding_share=0.3),
                    provenance={"table": "other.csv.gz", "sha256": "0" * 64})


def _rows(device: str) -> list[MeasuredKernel]:
    shapes = [(1, 4096, 4096), (16, 11008, 4096), (512, 4096, 4096), (4096, 14336, 4096), (33, 128, 65536)]
    return [MeasuredKernel(device=device, kernel="gemm", dtype="bf16", time_s=1.0, source="synthetic", m=m, n=n, k=k)
            for m, n, k in shapes]


@pytest.fixture
def shipped(monkeypatch):
    """The other preset's shipped calibration, as the command reads it."""
    monkeypatch.setattr("explore.calibrate_cmd.load_calibration", lambda name: TRUTH if name == "h200" else None)


def test_rows_made_by_the_transferred_fits_score_zero_error(shipped, tmp_path):
    # Rows timed exactly as h200's fractions predict on H100's own peaks: the transfer must reproduce them.
    base = load_device("h100-sxm", calibrated=False)
    rows = _rows("h100-sxm")
    times = predict(GPUModel(base.spec, calibration=replace(TRUTH, device="h100-sxm")), rows)
    rows = [replace(r, time_s=float(t)) for r, t in zip(rows, times, strict=True)]
    table = tmp_path / "h100.csv"
    write_table(table, rows)
    summary, note = cross_source(rows, "h100-sxm", "h200", [str(table)])
    assert summary["gemm"]["n"] == len(rows) and summary["gemm"]["median_abs_err"] < 1e-9
    assert "h200" in note and "h100-sxm" in note
    # On the datasheet roofline the same rows are predicted faster: the check compares something.
    roofline = predict(base, rows)
    assert np.all(roofline < times)


def test_a_table_the_fit_was_made_on_is_refused(shipped, tmp_path, monkeypatch):
    rows = _rows("h100-sxm")
    table = tmp_path / "h100.csv"
    write_table(table, rows)
    digest = hashlib.sha256(table.read_bytes()).hexdigest()
    monkeypatch.setattr("explore.calibrate_cmd.load_calibration",
                        lambda name: replace(TRUTH, provenance={"table": str(table), "sha256": digest}))
    with pytest.raises(InputError, match="never saw"):
        cross_source(rows, "h100-sxm", "h200", [str(table)])


def test_a_preset_without_a_calibration_is_refused(shipped, tmp_path):
    with pytest.raises(InputError, match="--cross-from: 'v100-sxm2' has no shipped calibration"):
        cross_source(_rows("h100-sxm"), "h100-sxm", "v100-sxm2", [])


def test_rows_of_a_training_source_in_another_file_are_refused(shipped, tmp_path, monkeypatch):
    # A decompressed or filtered copy of the table the fit was made on has other bytes but the same rows: the
    # provenance's train_sources, not the file's hash, say which rows the fit saw.
    rows = _rows("h100-sxm")
    seen = [replace(r, source="vidur:Qwen/Qwen-72B") for r in rows[:2]] + rows[2:]
    table = tmp_path / "copy.csv"
    write_table(table, seen)
    monkeypatch.setattr("explore.calibrate_cmd.load_calibration", lambda name: replace(
        TRUTH, provenance={"table": "other.csv.gz", "sha256": "0" * 64, "train_sources": ["vidur:Qwen/Qwen-72B"]}))
    with pytest.raises(InputError, match=r"copy\.csv: found 2 h100-sxm rows .*'vidur:Qwen/Qwen-72B'.*never saw"):
        cross_source(seen, "h100-sxm", "h200", [str(table)])
    # The same preset's held-out sources alone are rows its fit never saw.
    summary, _ = cross_source(rows, "h100-sxm", "h200", [str(table)])
    assert summary["gemm"]["n"] == len(rows)


def test_a_class_the_preset_borrows_from_its_sibling_is_not_scored_as_its_fit(tmp_path):
    # H200 has no RoPE fit of its own and prices RoPE on H100 SXM's (sibling:); its calibration file's elementwise
    # fallback (Calibration.stream) is not how it prices RoPE, so a cross-source check has no H200 RoPE fit to score.
    h200 = load_device("h200").calibration
    assert "rope" in h200.borrowed and h200.stream("rope") == load_device("h100-sxm").calibration.stream("rope")
    rope = MeasuredKernel(device="h100-sxm", kernel="rope", dtype="fp16", time_s=5e-6, source="synthetic",
                          bytes=8 << 20)
    rows = [*_rows("h100-sxm"), rope]
    table = tmp_path / "h100.csv"
    write_table(table, rows)
    summary, note = cross_source(rows, "h100-sxm", "h200", [str(table)])
    assert "rope" not in summary and summary["gemm"]["n"] == len(rows) - 1
    assert f"all {len(rows) - 1} of its kernel rows" in note


@pytest.mark.parametrize("device", ["neupims", "ci-host-cpu"])
def test_a_device_that_is_no_gpu_is_refused(shipped, tmp_path, device):
    # GPU fits have no meaning on an NPU's or a CPU's peaks (an NPU's spec crashed the GPU model: a traceback).
    rows = _rows(device)
    table = tmp_path / "other.csv"
    write_table(table, rows)
    with pytest.raises(InputError, match=f"--device: found '{device}' \\(an? (npu|cpu) preset\\), allowed: a GPU"):
        cross_source(rows, device, "h200", [str(table)])
