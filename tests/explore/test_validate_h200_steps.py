"""Whole decode steps measured on an H200 with this project's harness (data/measured/h200-2026-12-04/h200-steps.csv.gz:
Llama-3-8B bf16 and Llama-2-7B fp16 at batch 1, 8 and 32 after 512 or 2,048 cached tokens, each step launched eagerly
and replayed from a CUDA graph) against the steps `explore validate` simulates for them, launched as they were timed.
No step was used to fit anything; the eager host cost per kernel comes from gpt-fast's A100 figure
(hw_models/device.py), the graph gap per kernel from this data's profiles (tests/hw_models/test_h200_harness.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from explore.calibrate_cmd import predict_steps
from hw_models.calibration import error_summary
from kernels.measured import read_table

pytestmark = pytest.mark.slow  # the measured H200 profiles' steps priced whole: 15 s of setup

TABLE = Path(__file__).resolve().parents[2] / "data" / "measured" / "h200-2026-12-04" / "h200-steps.csv.gz"


@pytest.fixture(scope="module")
def steps(evaluator):
    rows = read_table(TABLE)
    return rows, predict_steps("h200", rows, str(TABLE), evaluator)


@pytest.mark.parametrize("timing", ["isolated", "graph"])
def test_steps_are_within_20_percent_at_the_median(steps, timing):
    rows, predicted = steps
    pick = np.array([r.timing == timing for r in rows])
    summary = error_summary(predicted[pick], np.array([r.time_s for r in rows])[pick])
    assert summary["n"] == 12 and summary["median_abs_err"] <= 0.20, summary


def test_batch_1_llama_2_7b_at_2k_context_eager_and_graphs(steps):
    # The check on our own H200 measurement: each mode within 20%, and graphs at least 3x faster than eager
    # in both the measurement (33.9 ms against 6.80 ms) and the model.
    rows, predicted = steps
    by_timing = {r.timing: (r.time_s, p) for r, p in zip(rows, predicted, strict=True)
                 if r.model == "llama-2-7b" and r.batch == 1 and r.kv_len == 2049}
    for measured_s, predicted_s in by_timing.values():
        assert abs(predicted_s / measured_s - 1) <= 0.20, (measured_s, predicted_s)
    for index in (0, 1):
        assert by_timing["isolated"][index] > 3 * by_timing["graph"][index]


def test_more_batch_never_makes_a_graph_step_faster(steps):
    # Measured and predicted alike, per model and context: batch 1 <= 8 <= 32.
    rows, predicted = steps
    for source in ([r.time_s for r in rows], list(predicted)):
        times = {(r.model, r.kv_len, r.batch): t for r, t in zip(rows, source, strict=True) if r.timing == "graph"}
        for model, kv_len, _ in times:
            assert times[(model, kv_len, 1)] <= times[(model, kv_len, 8)] <= times[(model, kv_len, 32)]


@pytest.mark.parametrize("table", [
    TABLE.parent / "run1" / "h200-steps.csv.gz",
    pytest.param(TABLE, marks=pytest.mark.xfail(strict=True, reason=(
        "the second lease's host dispatched a median 26.0 us per kernel (eager steps of 26.4-44.6 ms, median 33.7 "
        "ms, over 1,298 kernels), 20% over gpt-fast's 21.6 us: the eager host cost moves with the host machine and "
        "its load, which the model's one constant per execution mode does not follow")))])
def test_gpt_fast_dispatch_per_kernel_holds_on_this_hosts_eager_steps(evaluator, table):
    """The eager host cost per kernel, derived from gpt-fast's A100 machine (21.6 us), read off the H200 lease's host:
    each eager H200 step is host-bound (its kernels take 6-15 ms of the 24-46 ms), so its time over the kernels our
    decoder launches per step (1,298) is that host's dispatch per kernel. The first lease's host: a median 20.8 us
    (18.6-35.8), within 10% of gpt-fast's."""
    from hw_models.device import EAGER_DISPATCH_S

    implied_s = [r.time_s / len(evaluator.lowered(r.model, "decode", r.batch, r.kv_len - 1))
                 for r in read_table(table) if r.timing == "isolated"]
    assert len(implied_s) == 12
    assert float(np.median(implied_s)) == pytest.approx(EAGER_DISPATCH_S, rel=0.10), np.median(implied_s)
