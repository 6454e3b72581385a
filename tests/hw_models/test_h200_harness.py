"""The shipped H200 model against this project's own H200 measurements (data/measured/h200-2026-12-04): GEMMs,
attention and pointwise kernels timed by kernels/harness.py, and torch.profiler traces of whole eager decode steps.

The H200 calibration was fitted on aiconfigurator's tables and, for the residual add and SiLU classes and torch's SDPA
attention, on half of the harness's pointwise sizes and attention cases; its GEMM fits never saw a harness row, so
those errors are cross-source, and no fit saw the profiled steps. Bounds are the accuracy targets of issue 12 (GEMM
cross-source median <= 12%, p90 <= 30%; attention <= 15%); a miss is a strict xfail with its reason.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest

from hw_models.calibration import error_summary, load_calibration, predict
from hw_models.registry import load_device
from kernels.lowering import lower_op
from kernels.measured import read_table
from kernels.table import KernelTable
from workloads.profiler_import import profile_to_trace

DATA = Path(__file__).resolve().parents[2] / "data" / "measured" / "h200-2026-12-04"
README = Path(__file__).resolve().parents[2] / "README.md"
PROFILES = ["llama-3-8b-b1", "llama-3-8b-b32", "llama-2-7b-b1", "llama-2-7b-b32"]


# The summaries are cached (read-only mappings): the README tests score the same tables and profiles as the target
# tests, and reading a profile and pricing its kernels is a second or so.
@functools.cache
def _summary(table: str, kernel: str | None = None) -> Mapping[str, float]:
    rows = [r for r in read_table(DATA / table) if kernel is None or r.kernel == kernel]
    return MappingProxyType(error_summary(predict(load_device("h200"), rows), np.array([r.time_s for r in rows])))


@functools.cache
def _profile_summary(name: str, kernel_class: str) -> Mapping[str, float]:
    trace = profile_to_trace(DATA / f"h200-profile-{name}.json.gz")
    pairs = [(kernel, op.attrs["measured_time_s"]) for op in trace.ops
             if op.attrs.get("measured_time_s") and (kernel := lower_op(op, trace.dtype)) is not None
             and kernel.kernel_class == kernel_class]
    predicted = load_device("h200").cost_table(KernelTable.from_kernels([k for k, _ in pairs]),
                                               execution="device").time_s
    return MappingProxyType(error_summary(predicted, np.array([t for _, t in pairs])))


def test_the_gemm_and_step_rows_are_a_source_the_calibration_never_saw():
    fitted_on = set(load_calibration("h200").provenance["sha256"].split(", "))
    for table in ("h200-gemm.csv.gz", "h200-steps.csv.gz"):
        assert hashlib.sha256((DATA / table).read_bytes()).hexdigest() not in fitted_on
    # The SDPA table fits the torch_sdpa attention family on half of its cases (below).
    assert hashlib.sha256((DATA / "h200-attention.csv.gz").read_bytes()).hexdigest() in fitted_on


def test_gemm_cross_source_error_meets_the_target():
    summary = _summary("h200-gemm.csv.gz")
    assert summary["n"] == 200
    assert summary["median_abs_err"] <= 0.12 and summary["p90_abs_err"] <= 0.30, summary


@pytest.mark.parametrize("name", PROFILES)
def test_gemms_inside_profiled_decode_steps_meet_the_target(name):
    summary = _profile_summary(name, "gemm")
    assert summary["n"] == 225  # 7 per layer over 32 layers and the LM head
    assert summary["median_abs_err"] <= 0.12 and summary["p90_abs_err"] <= 0.30, summary


def _readme_row(start: str) -> str:
    """The README's Accuracy table row that starts with `start`."""
    return next(line for line in README.read_text().splitlines() if line.startswith(start))


def test_readme_states_the_harness_gemm_error_as_scored():
    stated = re.search(r"\| ([\d.]+)% / ([\d.]+)% / ([+-][\d.]+)% \|", _readme_row("| GEMM bf16 (torch.mm")).groups()
    summary = _summary("h200-gemm.csv.gz")
    scored = [summary["median_abs_err"], summary["p90_abs_err"], summary["median_bias"]]
    assert [float(x) for x in stated] == pytest.approx([100 * x for x in scored], abs=0.05), (stated, scored)


def test_readme_states_the_profiled_gemm_errors_as_scored():
    row = _readme_row("| GEMMs inside profiled eager decode steps")
    low, high = (float(x) for x in re.search(r"\| ([\d.]+)-([\d.]+)% \(p90", row).groups())
    medians = [100 * _profile_summary(name, "gemm")["median_abs_err"] for name in PROFILES]
    assert [low, high] == pytest.approx([min(medians), max(medians)], abs=0.05), medians


@pytest.mark.parametrize("kernel", ["attention_prefill", "attention_decode"])
def test_torch_sdpa_attention_on_held_out_cases(kernel):
    """torch's SDPA (cuDNN's kernel on the H200, over a contiguous KV cache) has a fit of its own, on half of the
    harness's cases (five head layouts); the other half scores it: within the issue's 15% attention target."""
    train = set(load_calibration("h200").provenance["train_sources"])
    rows = [r for r in read_table(DATA / "h200-attention.csv.gz") if r.kernel == kernel and r.source not in train]
    assert len(rows) >= 15
    summary = error_summary(predict(load_device("h200"), rows), np.array([r.time_s for r in rows]))
    assert summary["median_abs_err"] <= 0.15, summary


@pytest.mark.parametrize("kernel", ["attention_prefill", "attention_decode"])
def test_the_engine_attention_fit_prices_torch_sdpa_kernels_slow(kernel):
    """Why torch's kernels have a fit apart: priced as the engine's paged FlashAttention-3 (aiconfigurator's rows),
    the same cases come out 20% (decode; cuDNN streams a contiguous cache at up to 96% of the DRAM peak, the paged
    kernel at 84%) to 29% (prefill) slow in the median."""
    rows = [replace(r, backend="") for r in read_table(DATA / "h200-attention.csv.gz") if r.kernel == kernel]
    summary = error_summary(predict(load_device("h200"), rows), np.array([r.time_s for r in rows]))
    assert 0.10 < summary["median_bias"] < 0.40, summary


@pytest.mark.parametrize("name", PROFILES)
def test_attention_inside_profiled_decode_steps_meets_the_target(name):
    # Kernel durations inside eager steps (cuDNN's, two launches per call at batch 1), which no fit saw.
    summary = _profile_summary(name, "attention")
    assert summary["n"] == 32 and summary["median_abs_err"] <= 0.15, summary


def _warm(kernel: str, general: bool) -> list:
    return [r for r in read_table(DATA / "h200-pointwise-warm.csv.gz")
            if r.kernel == kernel and (r.variant == "general") == general]


@pytest.mark.parametrize("kernel", ["elementwise", "activation"])
def test_fitted_pointwise_classes_on_held_out_sizes(kernel):
    # The classes fitted on the harness's own pointwise rows (warm inputs), scored on the sizes the fit left out.
    train = set(load_calibration("h200").provenance["train_sources"])
    rows = [r for r in _warm(kernel, general=False) if r.source not in train]
    assert len(rows) >= 3
    summary = error_summary(predict(load_device("h200"), rows), np.array([r.time_s for r in rows]))
    assert summary["median_abs_err"] <= 0.15, summary


def test_general_layout_pointwise_ops_on_held_out_sizes():
    """Casts, per-row products and negations of a strided half (pointwise ops off the contiguous vectorized loop) have
    a fit of their own on half of their sizes; the other half scores it. Priced as contiguous streams instead, the
    same rows come out fast by a third and more in the median: these ops stream at about 0.4 of the DRAM peak."""
    train = set(load_calibration("h200").provenance["train_sources"])
    rows = _warm("elementwise", general=True)
    held_out = [r for r in rows if r.source not in train]
    assert len(held_out) >= 10
    summary = error_summary(predict(load_device("h200"), held_out), np.array([r.time_s for r in held_out]))
    assert summary["median_abs_err"] <= 0.15, summary
    contiguous = [replace(r, variant="") for r in rows]
    bias = error_summary(predict(load_device("h200"), contiguous), np.array([r.time_s for r in rows]))["median_bias"]
    assert bias < -0.25, bias


@pytest.mark.parametrize("group", ["elementwise", "activation", "elementwise general"])
def test_the_harness_warm_streaming_table_of_a_later_lease(group):
    """`explore measure --kinds streaming` as the harness now times it (warm inputs), on a later lease: rows no fit saw,
    half of them at a hidden size (8,192) the fits never had, scored by the fits of the warm check's rows."""
    train = set(load_calibration("h200").provenance["train_sources"])
    from explore.calibrate_cmd import row_group  # the groups `explore validate` reports

    rows = [r for r in read_table(DATA / "h200-streaming-warm.csv.gz") if row_group(r) == group]
    assert len(rows) in (12, 36) and not {r.source for r in rows} & train
    summary = error_summary(predict(load_device("h200"), rows), np.array([r.time_s for r in rows]))
    assert summary["median_abs_err"] <= 0.15, summary


def test_warm_inputs_save_only_their_latency():
    """The same pointwise ops with inputs just written (warm, as a pass's pointwise kernels find them) and after a
    flush: warm is faster while the inputs fit the 50 MB L2 many times over, by a fraction of a microsecond to a
    microsecond and a half, and within 8% of each other at 16,384 rows (128 MB of input and more), where both stream
    from DRAM."""
    with open(DATA / "h200-warm-check.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40
    for r in rows:
        cold_s, warm_s, rows_ = float(r["cold_s"]), float(r["warm_s"]), int(r["rows"])
        if rows_ <= 64:
            assert 0.1e-6 < cold_s - warm_s < 2.0e-6, r
        elif rows_ >= 16384:
            assert abs(warm_s / cold_s - 1) < 0.08, r


def test_graph_launch_is_the_measured_gap_between_replayed_kernels():
    # Replaying a step from a CUDA graph costs its kernels' own durations plus a gap per kernel; the preset's
    # graph_launch_us is that gap, recomputed here from the shipped step times and profiles.
    steps = {(r.model, r.batch, r.timing): r.time_s for r in read_table(DATA / "h200-steps.csv.gz") if r.kv_len == 2049}
    gaps_us = []
    for name in PROFILES:
        model, _, batch = name.rpartition("-b")
        events = json.loads(gzip.decompress((DATA / f"h200-profile-{name}.json.gz").read_bytes()))["traceEvents"]
        durations_us = [e["dur"] for e in events if e.get("cat") == "kernel"]
        assert len(durations_us) > 1000  # a whole step: about 46 kernels per layer
        gaps_us.append((steps[(model, int(batch), "graph")] * 1e6 - sum(durations_us)) / len(durations_us))
    assert all(0.3 < gap < 0.5 for gap in gaps_us), gaps_us
    assert load_device("h200").spec.overhead.graph_launch_us == pytest.approx(np.mean(gaps_us), abs=0.02)


def _in_step_gemm_times(name: str) -> dict[tuple[int, int, int], float]:
    """Median profiled duration of each GEMM shape inside one eager decode step (nothing flushes between them)."""
    trace = profile_to_trace(DATA / f"h200-profile-{name}.json.gz")
    times: dict[tuple, list[float]] = {}
    for op in trace.ops:
        kernel = lower_op(op, trace.dtype) if op.attrs.get("measured_time_s") else None
        if kernel is not None and kernel.kernel_class == "gemm":
            times.setdefault((kernel.m, kernel.n, kernel.k), []).append(op.attrs["measured_time_s"])
    return {shape: float(np.median(t)) for shape, t in times.items()}


def test_a_flush_that_writes_slows_the_next_gemm_by_its_write_back():
    """The same GEMM timed after a flush that writes 256 MiB (as triton.testing.do_bench does) and after the harness's
    flush, which reads it: the writing flush's dirty lines, written back as the GEMM's reads evict them, cost a gap
    growing with the weights until they fill the 50 MB L2 (about 1 us at 8 MB, 7-8 us from 90 MB on)."""
    with open(DATA / "h200-flush-check.csv") as f:
        rows = list(csv.DictReader(f))
    gap_us = {(int(r["m"]), float(r["weight_MB"])): (float(r["write_flush_s"]) - float(r["read_flush_s"])) * 1e6
              for r in rows}
    for m in (1, 32):
        by_size = [gap_us[(m, w)] for w in sorted(w for mm, w in gap_us if mm == m)]
        assert 0.5 < by_size[0] < 2 and min(by_size[2:]) > 5, by_size  # 8 MB, then >= 90 MB


def test_after_the_reading_flush_an_isolated_gemm_costs_its_in_step_time_plus_at_most_a_launch():
    """With the reading flush, a GEMM timed alone takes its in-step duration (profiled, no flush) plus its own
    device launch, which the in-step duration leaves out: a gap no larger than the preset's 2.1 us launch and no
    longer growing with the weight bytes, as it did after the writing flush (data/measured/h200-2026-12-04/run1)."""
    isolated = {(r.m, r.n, r.k): r.time_s for r in read_table(DATA / "h200-gemm.csv.gz")}
    gaps_us: dict[float, list[float]] = {}
    for name in PROFILES:
        for shape, in_step_s in _in_step_gemm_times(name).items():
            if shape in isolated:
                gaps_us.setdefault(shape[1] * shape[2] * 2 / 1e6, []).append((isolated[shape] - in_step_s) * 1e6)
    launch_us = load_device("h200").spec.overhead.kernel_launch_us
    small, large = np.median(gaps_us[8.388608]), np.median([g for w, gs in gaps_us.items() if w > 80 for g in gs])
    assert 0 < large <= small <= launch_us + 0.2, gaps_us


def test_a_second_lease_repeats_the_kernel_times():
    """Every kernel of the tables timed again on a second lease of the machine (h200-repeat.csv.gz): the median
    difference is about 1%, far under the model errors the tests above bound."""
    def key(r):
        return (r.kernel, r.m, r.n, r.k, r.batch, r.seq_len, r.kv_len, r.heads, r.kv_heads, r.head_dim, r.bytes)

    first = {key(r): r.time_s for table in ("h200-gemm", "h200-attention", "h200-pointwise", "h200-norm")
             for r in read_table(DATA / f"{table}.csv.gz")}
    repeat = read_table(DATA / "h200-repeat.csv.gz")
    diffs = [abs(r.time_s / first[key(r)] - 1) for r in repeat]
    assert len(diffs) == len(repeat) == 258
    assert np.median(diffs) < 0.02 and np.quantile(diffs, 0.9) < 0.05, (np.median(diffs), np.quantile(diffs, 0.9))
