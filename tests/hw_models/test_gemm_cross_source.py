"""GEMM accuracy across measurement sources (issue 12's target: cross-source median <= 12%, p90 <= 30% on 16-bit
GEMMs): one GPU's shipped fit moved onto a sibling's peaks and scored on another source's rows of the sibling,
rows the fit never saw (what `explore validate --cross-from` prints; README, Accuracy).

- H200's fit (aiconfigurator's bf16 GEMMs, CUDA-graph replays) on H100 SXM's peaks, scored on Vidur's H100 fp16
  GEMMs (PyTorch-profiler kernel durations): p90 met, median missed.
- H100 SXM's fit (Vidur) on H200's peaks, scored on aiconfigurator's H200 bf16 GEMMs: both missed, on all rows and
  on the rows inside the shapes Vidur timed.

What the data say about the two sources, each checked below on the measured rows alone (no model):
- Vidur's ~4 us floor is the device's, not a timing term of Vidur's: on GEMMs of m <= 16 streaming 4 MB or more of
  weights (Vidur's smallest weights are 4.2 MB), both sources' times are a line of the same intercept, about 4.1 us,
  and bandwidths of 0.85-0.89 of each datasheet. aiconfigurator's 2.4 us are GEMMs of kilobytes, a range Vidur
  never timed; both sources time every kernel an op launches, so a split-K reduction, where cuBLAS runs one, is
  in both.
- Memory-bound, the sources agree once each GPU's bandwidth is counted; compute-bound (the same 989 TFLOP/s dense
  peak), Vidur's H100 takes a median 1.12x aiconfigurator's H200 on identical shapes, spread from 0.94x to 1.33x
  over shapes: a per-shape difference of kernel choice, which no one factor (a clock) would explain, and which no
  fit moved between them at equal peaks can undo.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hw_models.calibration import error_summary, load_calibration, predict
from hw_models.gpu import GPUModel
from hw_models.registry import load_device

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
pytestmark = pytest.mark.skipif(not (DATA / "vidur").is_dir() or not (DATA / "aiconfigurator").is_dir(),
                                reason="../shared/data not present")
TARGET_MEDIAN, TARGET_P90 = 0.12, 0.30


def _vidur_gemms(device: str):
    from kernels.vidur_import import _gemm_rows

    return [r for r in _gemm_rows(DATA / "vidur" / "gemm_points.csv.gz") if r.device == device]


def _aic_gemms(device: str, gpu: str):
    from kernels.aiconfigurator_import import _gemm_rows

    path = next((DATA / "aiconfigurator" / gpu / "gemm").glob("*/*/gemm_perf.csv.gz"))
    return [r for r in _gemm_rows(path, device, gpu) if r.dtype == "bf16"]


def _transferred(device: str, from_name: str) -> GPUModel:
    base = load_device(device, calibrated=False)
    return GPUModel(base.spec, base.reference, replace(load_calibration(from_name), device=device))


def _cross(device: str, from_name: str, rows) -> dict[str, float]:
    return error_summary(predict(_transferred(device, from_name), rows), np.array([r.time_s for r in rows]))


@pytest.fixture(scope="module")
def h100_rows():
    return _vidur_gemms("h100-sxm")


@pytest.fixture(scope="module")
def h200_rows():
    return _aic_gemms("h200", "h200_sxm")


def test_h200_fit_on_vidur_h100_gemms_meets_the_p90(h100_rows):
    assert len(h100_rows) == 21_924  # every H100 GEMM of gemm_points.csv.gz (its README)
    assert _cross("h100-sxm", "h200", h100_rows)["p90_abs_err"] <= TARGET_P90


@pytest.mark.xfail(strict=True, reason="median 13.1% against the 12% target: H200's fit predicts Vidur's H100 GEMMs "
                   "about 13% too fast, compute-bound ones included, as the sources disagree on identical shapes "
                   "(test_sources_disagree_on_identical_compute_bound_shapes)")
def test_h200_fit_on_vidur_h100_gemms_meets_the_median(h100_rows):
    assert _cross("h100-sxm", "h200", h100_rows)["median_abs_err"] <= TARGET_MEDIAN


@pytest.mark.xfail(strict=True, reason="median 25% / p90 76% against 12% / 30%: 42% of aiconfigurator's H200 rows "
                   "lie outside Vidur's shapes (weights under 4 MB, GEMMs of kilobytes at 2.4 us; median error 41% "
                   "there), where H100's fitted 4.9 us latency (set on MB-sized GEMMs whose line meets 4.1 us) does "
                   "not hold; inside them (20.3% / 50.0%) the soft corner (blend 1.37) prices m 65-1024 30% slow on "
                   "H200's lower ridge point, and compute-bound rows carry the sources' 1.12x")
def test_h100_fit_on_aiconfigurator_h200_gemms_meets_the_target(h200_rows):
    summary = _cross("h200", "h100-sxm", h200_rows)
    assert summary["median_abs_err"] <= TARGET_MEDIAN and summary["p90_abs_err"] <= TARGET_P90


@pytest.mark.xfail(strict=True, reason="20.3% / 50.0% on the 20,604 H200 rows inside Vidur's H100 shapes: H100's soft "
                   "roofline corner (blend 1.37) prices m 65-1024 about 30% slow on H200's lower ridge point (206 "
                   "against 295 FLOP/B), and compute-bound rows carry the sources' 1.12x")
def test_h100_fit_on_aiconfigurator_h200_gemms_inside_vidurs_shapes_meets_the_target(h100_rows, h200_rows):
    """The reverse transfer scored only on aiconfigurator's rows inside the shapes Vidur timed (n x k and m within
    the range of Vidur's H100 GEMMs): what is left once the H100 fit is not asked to extrapolate to kilobyte GEMMs."""
    def bounds(values):
        return min(values), max(values)
    nk_low, nk_high = bounds([r.n * r.k for r in h100_rows])
    m_high = max(r.m for r in h100_rows)
    inside = [r for r in h200_rows if nk_low <= r.n * r.k <= nk_high and r.m <= m_high]
    assert 0.5 < len(inside) / len(h200_rows) < 0.7  # most rows, not all: 42% lie outside
    summary = _cross("h200", "h100-sxm", inside)
    assert summary["median_abs_err"] <= TARGET_MEDIAN and summary["p90_abs_err"] <= TARGET_P90, summary


def test_sources_disagree_on_identical_compute_bound_shapes(h100_rows, h200_rows):
    """On the (m, n, k) both sources timed with at least 1e11 FLOPs (compute-bound on both GPUs: arithmetic
    intensity far above either ridge point), Vidur's H100 median time is more than 1.08x aiconfigurator's H200
    time, and below 1.3x (not a units or shape mix-up): a fit of either source moved to the other at the same peak
    math keeps that gap."""
    h100, h200 = _medians(h100_rows), _medians(h200_rows)
    shared = [s for s in set(h100) & set(h200) if 2.0 * s[0] * s[1] * s[2] >= 1e11]
    assert len(shared) >= 100
    ratios = np.array([h100[s] / h200[s] for s in shared])
    assert 1.08 < np.median(ratios) < 1.3, np.median(ratios)
    # Spread over shapes (interquartile range over a tenth of the median): the gap is per shape, the library's kernel
    # choice, not one factor such as a clock, which would move every shape alike.
    q1, q3 = np.percentile(ratios, [25, 75])
    assert q3 - q1 > 0.1 * np.median(ratios), (q1, q3)


def _floor(rows) -> tuple[float, float]:
    """(intercept_s, bandwidth_Bps) of a least-squares line of time over bytes moved, on GEMMs of m <= 16 that
    stream at least 4 MB of 16-bit weights (Vidur's smallest) and take under 60 us (memory-bound, one wave)."""
    kept = [r for r in rows if r.m <= 16 and 2 * r.n * r.k >= 4e6 and r.time_s < 60e-6]
    moved = np.array([2.0 * (r.n * r.k + r.m * r.k + r.m * r.n) for r in kept])
    slope, intercept = np.polyfit(moved, np.array([r.time_s for r in kept]), 1)
    return float(intercept), float(1.0 / slope)


def test_the_4us_floor_of_vidurs_gemms_is_the_devices(h100_rows, h200_rows):
    """Vidur's smallest GEMMs take 4 us where aiconfigurator's go down to 2.4 us; on the weight sizes both timed,
    both sources' small-m GEMMs meet the same intercept (within 1 us; the Kineto sum of kernel durations and the
    graph replay's per-call share read alike), above aiconfigurator's kilobyte-GEMM floor, and stream at a share of
    their own datasheet bandwidth (H100 SXM 3,350 GB/s, H200 4,800 GB/s) between 0.75 and 0.95: no timing term
    of one source, and no bandwidth at the datasheet peak."""
    (h100_s, h100_Bps), (h200_s, h200_Bps) = _floor(h100_rows), _floor(h200_rows)
    assert abs(h100_s - h200_s) < 1e-6, (h100_s, h200_s)
    assert min(h100_s, h200_s) > min(r.time_s for r in h200_rows) + 0.5e-6
    assert 0.75 < h100_Bps / 3350e9 < 0.95 and 0.75 < h200_Bps / 4800e9 < 0.95, (h100_Bps, h200_Bps)


def _medians(rows) -> dict[tuple, float]:
    times: dict[tuple, list[float]] = {}
    for r in rows:
        times.setdefault((r.m, r.n, r.k), []).append(r.time_s)
    return {shape: float(np.median(t)) for shape, t in times.items()}


def test_sources_agree_on_memory_bound_shapes_once_bandwidth_is_counted(h100_rows, h200_rows):
    """On shared shapes of arithmetic intensity under 100 FLOP/B (memory-bound on both GPUs: ridge points 295 and
    206 FLOP/B), Vidur's H100 time over aiconfigurator's H200 time, divided by the ratio of their datasheet rooflines
    (here the bandwidth ratio 4,800 / 3,350 = 1.43), has a median within 15% of 1: the sources disagree where the
    math bounds the GEMM (test above), not in how they time memory-bound kernels."""
    h100, h200 = _medians(h100_rows), _medians(h200_rows)

    def intensity(s):
        m, n, k = s
        return 2.0 * m * n * k / (2.0 * (m * k + k * n + m * n))
    shared = [s for s in set(h100) & set(h200) if intensity(s) < 100]
    assert len(shared) >= 100
    excess = np.median([h100[s] / h200[s] / (4800 / 3350) for s in shared])
    assert 0.85 < excess < 1.15, excess
