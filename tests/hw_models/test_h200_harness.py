"""The shipped H200 model against this project's own H200 measurements (data/measured/h200-2026-12-04): GEMMs,
attention and pointwise kernels timed by kernels/harness.py, and torch.profiler traces of whole eager decode steps.

The H200 calibration was fitted on aiconfigurator's tables and, for the residual add and SiLU classes, on half of
the harness's pointwise sizes; its GEMM and attention fits never saw a harness row, so those errors are
cross-source. Bounds are the accuracy targets of issue 12 (GEMM cross-source median <= 12%, p90 <= 30%; attention
<= 15%); a miss is a strict xfail with its reason.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from hw_models.calibration import error_summary, load_calibration, predict
from hw_models.registry import load_device
from kernels.lowering import lower_op
from kernels.measured import read_table
from kernels.table import KernelTable
from workloads.profiler_import import profile_to_trace

DATA = Path(__file__).resolve().parents[2] / "data" / "measured" / "h200-2026-12-04"
PROFILES = ["llama-3-8b-b1", "llama-3-8b-b32", "llama-2-7b-b1"]


def _summary(table: str, kernel: str | None = None) -> dict:
    rows = [r for r in read_table(DATA / table) if kernel is None or r.kernel == kernel]
    return error_summary(predict(load_device("h200"), rows), np.array([r.time_s for r in rows]))


def _profile_summary(name: str, kernel_class: str) -> dict:
    trace = profile_to_trace(DATA / f"h200-profile-{name}.json.gz")
    pairs = [(kernel, op.attrs["measured_time_s"]) for op in trace.ops
             if op.attrs.get("measured_time_s") and (kernel := lower_op(op, trace.dtype)) is not None
             and kernel.kernel_class == kernel_class]
    predicted = load_device("h200").cost_table(KernelTable.from_kernels([k for k, _ in pairs]),
                                               execution="device").time_s
    return error_summary(predicted, np.array([t for _, t in pairs]))


def test_the_gemm_and_attention_rows_are_a_source_the_calibration_never_saw():
    fitted_on = set(load_calibration("h200").provenance["sha256"].split(", "))
    for table in ("h200-gemm.csv.gz", "h200-attention.csv.gz", "h200-steps.csv.gz"):
        assert hashlib.sha256((DATA / table).read_bytes()).hexdigest() not in fitted_on


def test_gemm_cross_source_error_meets_the_target():
    summary = _summary("h200-gemm.csv.gz")
    assert summary["n"] == 200
    assert summary["median_abs_err"] <= 0.12 and summary["p90_abs_err"] <= 0.30, summary


@pytest.mark.parametrize("name", PROFILES)
def test_gemms_inside_profiled_decode_steps_meet_the_target(name):
    summary = _profile_summary(name, "gemm")
    assert summary["n"] == 225  # 7 per layer over 32 layers and the LM head
    assert summary["median_abs_err"] <= 0.12 and summary["p90_abs_err"] <= 0.30, summary


def test_decode_attention_cross_source_error_meets_the_target():
    summary = _summary("h200-attention.csv.gz", "attention_decode")
    assert summary["median_abs_err"] <= 0.15, summary


@pytest.mark.xfail(strict=True, reason="torch 2.11's SDPA runs cuDNN's attention kernel on the H200; the prefill fit "
                   "is aiconfigurator's FlashAttention-3 rows: predicted 26% slow (median over 8 cases, 72% slow at "
                   "128 tokens), and the fit carries no per-implementation term")
def test_prefill_attention_cross_source_error_meets_the_target():
    summary = _summary("h200-attention.csv.gz", "attention_prefill")
    assert summary["median_abs_err"] <= 0.15, summary


@pytest.mark.xfail(strict=True, reason="the attention inside an eager step is cuDNN's kernel (two launches per call, "
                   "4.6 us each at batch 1 and 2,049 keys): the FlashAttention-3 fit prices it 21-50% slow")
@pytest.mark.parametrize("name", PROFILES)
def test_attention_inside_profiled_decode_steps_meets_the_target(name):
    summary = _profile_summary(name, "attention")
    assert summary["median_abs_err"] <= 0.15, summary


@pytest.mark.parametrize("kernel", ["elementwise", "activation"])
def test_fitted_pointwise_classes_on_held_out_sizes(kernel):
    # The classes fitted on the harness's own pointwise rows, scored on the sizes the fit left out.
    train = set(load_calibration("h200").provenance["train_sources"])
    rows = [r for r in read_table(DATA / "h200-pointwise.csv.gz") if r.kernel == kernel and r.source not in train]
    assert len(rows) >= 4
    summary = error_summary(predict(load_device("h200"), rows), np.array([r.time_s for r in rows]))
    assert summary["median_abs_err"] <= 0.15, summary


def test_graph_launch_is_the_measured_gap_between_replayed_kernels():
    # Replaying a step from a CUDA graph costs its kernels' own durations plus a gap per kernel; the preset's
    # graph_launch_us is that gap, recomputed here from the shipped step times and profiles.
    steps = {(r.model, r.timing): r.time_s for r in read_table(DATA / "h200-steps.csv.gz")
             if r.batch == 1 and r.kv_len == 2049}
    gaps_us = []
    for model in ("llama-3-8b", "llama-2-7b"):
        events = json.loads(gzip.decompress((DATA / f"h200-profile-{model}-b1.json.gz").read_bytes()))["traceEvents"]
        durations_us = [e["dur"] for e in events if e.get("cat") == "kernel"]
        assert len(durations_us) > 1000  # a whole step: about 46 kernels per layer
        gaps_us.append((steps[(model, "graph")] * 1e6 - sum(durations_us)) / len(durations_us))
    assert all(0.3 < gap < 0.5 for gap in gaps_us), gaps_us
    assert load_device("h200").spec.overhead.graph_launch_us == pytest.approx(np.mean(gaps_us), abs=0.02)


def test_isolated_gemms_took_longer_than_in_step_by_more_than_a_launch_growing_with_the_weights():
    """The harness's GEMM rows were timed after a flush that wrote 256 MiB; the same GEMMs inside a profiled eager
    step (no flush) took less by a gap that grows with the weight bytes, from about 3.3 us at 8 MB to about 9 us at
    90-117 MB, where a launch alone would add one constant: consistent with the flush's dirty lines written back
    inside the timed kernel (up to the 50 MB L2), which is why the harness's flush now reads its buffer."""
    isolated = {(r.m, r.n, r.k): r.time_s for r in read_table(DATA / "h200-gemm.csv.gz")}
    gaps_us: dict[float, list[float]] = {}
    for name in PROFILES:
        trace = profile_to_trace(DATA / f"h200-profile-{name}.json.gz")
        in_step: dict[tuple, list[float]] = {}
        for op in trace.ops:
            kernel = lower_op(op, trace.dtype) if op.attrs.get("measured_time_s") else None
            if kernel is not None and kernel.kernel_class == "gemm":
                in_step.setdefault((kernel.m, kernel.n, kernel.k), []).append(op.attrs["measured_time_s"])
        for shape, times in in_step.items():
            if shape in isolated:
                weight_MB = shape[1] * shape[2] * 2 / 1e6
                gaps_us.setdefault(weight_MB, []).append((isolated[shape] - float(np.median(times))) * 1e6)
    small, large = np.median(gaps_us[8.388608]), np.median([g for w, gs in gaps_us.items() if w > 80 for g in gs])
    assert 2.1 < small < 4.5 and large > 2 * small, gaps_us
