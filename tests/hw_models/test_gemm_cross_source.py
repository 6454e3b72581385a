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
- Between the two, where m is 65-256 and the arithmetic intensity is above 100 FLOP/B, the GEMMs scale with each GPU's
  bandwidth, not with the peak math both share: on the shapes both timed, H100 takes a median 1.43x H200's time (the
  bandwidth ratio is 1.43; both reach 0.56 of their own bandwidth), while the shipped fits, moved onto each GPU's
  peaks, predict 1.15x (H100's) and 1.22x (H200's): their roofline corner makes those shapes partly compute-bound, and
  prices them slow on both GPUs (H100's fit +7% on H100, H200's +10% on H200, there). At m 257-1024 the 1.35x is no
  longer bandwidth: H200 runs those at 0.78 of its peak math, its large-m rate, and Vidur's H100 at 0.57 (0.70 at
  larger m), a wider form of the sources' compute-bound gap. A blend fitted jointly (1.70, each source on its own
  GPU's peaks) leaves the m 65-1024 transfer error as it was (31% to 32%): a per-source blend is not what misleads.
- The fixed latency is not one constant: on aiconfigurator's H200 GEMMs of m <= 4 and n <= 256 the time grows from
  2.5 us (k <= 64) by about 80 ns per 64-wide step of k, to 5.6 us at k = 2560, and stays there beyond (cuBLAS
  splits k once a CTA's serial main loop is that long). Vidur's H100 GEMMs all have k >= 512 and weights of 4 MB or
  more, so a fit on them cannot tell that term from the fixed latency. Fitted as a floor on the kernel's busy time
  (a step latency times min(k / 64, a fitted cap), in the smooth maximum with math and traffic), the term takes
  H200's held-out error from 8.7% / 23.9% to 5.6% / 15.8% (2.6 us + 80 ns per step, cap 45 steps), leaves H100's and
  A100's (6.9% / 20.2%, 4.6% / 12.6%) as they were, and moves neither cross-source median by more than half a point
  (12.9% / 29.0% and 25.9% / 71.2%, from 13.1% / 28.4% and 25.4% / 76.2%): Vidur's fit keeps a 4.7 us latency. One
  GemmFit fitted on both sources' training rows with that term meets the targets on both held-out sets (8.0% / 21.8%
  on H100, 6.8% / 23.9% on H200): the form can describe both; one source alone does not determine it. Adding re-read
  operand traffic (each row of output tiles re-streaming the weights, a fitted share of them) on top meets the
  target from H200 to H100 (10.1% / 25.1%) but not back (20.8% / 80.8%), with shares that differ by source (0.18 on
  Vidur's H100, 0.07 on H200) and H100's math fraction pushed to 0.96: not a mechanism the two agree on (counting
  only re-reads of operands larger than the 50 MB L2, H200's fit takes none).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest

from hw_models.calibration import error_summary, load_calibration, predict
from hw_models.gpu import GPUModel
from hw_models.registry import load_device
from tests.kernels.measured_tables import aic_gemm_rows, vidur_rows

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
pytestmark = pytest.mark.skipif(not (DATA / "vidur").is_dir() or not (DATA / "aiconfigurator").is_dir(),
                                reason="../shared/data not present")
TARGET_MEDIAN, TARGET_P90 = 0.12, 0.30


def _vidur_gemms(device: str):
    return [r for r in vidur_rows() if r.kernel == "gemm" and r.device == device]


def _aic_gemms(device: str, gpu: str):
    return [r for r in aic_gemm_rows(gpu, device) if r.dtype == "bf16"]


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


@pytest.fixture(scope="module")
def h200_fit_on_h100(h100_rows) -> Mapping[str, float]:
    """H200's fit on H100's peaks scored on Vidur's H100 GEMMs, priced once for the p90 and median tests."""
    return MappingProxyType(_cross("h100-sxm", "h200", h100_rows))


def test_h200_fit_on_vidur_h100_gemms_meets_the_p90(h100_rows, h200_fit_on_h100):
    assert len(h100_rows) == 21_924  # every H100 GEMM of gemm_points.csv.gz (its README)
    assert h200_fit_on_h100["p90_abs_err"] <= TARGET_P90


@pytest.mark.xfail(strict=True, reason="median 13.1% against the 12% target: H200's fit predicts Vidur's H100 GEMMs "
                   "about 13% too fast, compute-bound ones included, as the sources disagree on identical shapes "
                   "(test_sources_disagree_on_identical_compute_bound_shapes)")
def test_h200_fit_on_vidur_h100_gemms_meets_the_median(h200_fit_on_h100):
    assert h200_fit_on_h100["median_abs_err"] <= TARGET_MEDIAN


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


def test_sources_disagree_on_identical_compute_bound_shapes(medians):
    """On the (m, n, k) both sources timed with at least 1e11 FLOPs (compute-bound on both GPUs: arithmetic
    intensity far above either ridge point), Vidur's H100 median time is more than 1.08x aiconfigurator's H200
    time, and below 1.3x (not a units or shape mix-up): a fit of either source moved to the other at the same peak
    math keeps that gap."""
    h100, h200 = medians
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


def _intensity(shape: tuple) -> float:
    """FLOPs per byte of a 16-bit GEMM of this (m, n, k): both operands read and the output written once."""
    m, n, k = shape
    return 2.0 * m * n * k / (2.0 * (m * k + k * n + m * n))


def _medians(rows) -> dict[tuple, float]:
    times: dict[tuple, list[float]] = {}
    for r in rows:
        times.setdefault((r.m, r.n, r.k), []).append(r.time_s)
    return {shape: float(np.median(t)) for shape, t in times.items()}


@pytest.fixture(scope="module")
def medians(h100_rows, h200_rows) -> tuple[dict[tuple, float], dict[tuple, float]]:
    """Vidur's H100 and aiconfigurator's H200 median time per (m, n, k), computed once for the tests that read them."""
    return _medians(h100_rows), _medians(h200_rows)


def test_sources_agree_on_memory_bound_shapes_once_bandwidth_is_counted(medians):
    """On shared shapes of arithmetic intensity under 100 FLOP/B (memory-bound on both GPUs: ridge points 295 and
    206 FLOP/B), Vidur's H100 time over aiconfigurator's H200 time, divided by the ratio of their datasheet rooflines
    (here the bandwidth ratio 4,800 / 3,350 = 1.43), has a median within 15% of 1: the sources disagree where the
    math bounds the GEMM (test above), not in how they time memory-bound kernels."""
    h100, h200 = medians
    shared = [s for s in set(h100) & set(h200) if _intensity(s) < 100]
    assert len(shared) >= 100
    excess = np.median([h100[s] / h200[s] / (4800 / 3350) for s in shared])
    assert 0.85 < excess < 1.15, excess


def test_h200_small_gemm_latency_grows_with_k_until_split_k(h100_rows, h200_rows):
    """On aiconfigurator's H200 GEMMs of m <= 4 and n <= 256 (kilobytes of operands: no bandwidth or math term), the
    median time at k = 2048 is 1.6x to 2.4x the one at k <= 64 (a serial main loop of 32 steps of 64 k each over
    one), a rise of 40 to 160 ns per 64-wide step (under one DRAM round trip, as a pipelined loop keeps several
    steps in flight), and from k = 2560 to 16384 it stays within 15% (the library splits k rather than lengthen
    the loop). Vidur's H100 GEMMs start at k = 512, where that rise has begun."""
    small = [r for r in h200_rows if r.m <= 4 and r.n <= 256]

    def median_s(ks):
        return float(np.median([r.time_s for r in small if r.k in ks]))
    base_s, k2048_s = median_s({32, 64}), median_s({2048})
    assert 1.6 < k2048_s / base_s < 2.4, (base_s, k2048_s)
    step_s = (k2048_s - base_s) / (2048 / 64 - 1)
    assert 40e-9 < step_s < 160e-9, step_s
    split = [median_s({k}) for k in (2560, 4096, 8192, 16384)]
    assert max(split) < 1.15 * min(split), split
    assert min(r.k for r in h100_rows) == 512


def _mid_m_shared(medians) -> list[tuple]:
    """Shapes both sources timed with m of 65-256 and an arithmetic intensity of at least 100 FLOP/B (above the
    memory-bound set of test_sources_agree_on_memory_bound_shapes_once_bandwidth_is_counted)."""
    h100, h200 = medians
    return sorted(s for s in set(h100) & set(h200) if 64 < s[0] <= 256 and _intensity(s) >= 100)


def test_mid_m_gemms_scale_with_bandwidth_not_peak_math(medians):
    """On shared shapes of m 65-256 above 100 FLOP/B, Vidur's H100 time over aiconfigurator's H200 time has a median
    above 1.3 (nearer the bandwidth ratio 4,800 / 3,350 = 1.43 than the 1.0 of their equal dense peak) and below 1.55
    (not beyond the bandwidth ratio by more than the sources' compute-bound gap, 1.08x, would add)."""
    shapes = _mid_m_shared(medians)
    assert len(shapes) >= 100
    h100, h200 = medians
    ratio = np.median([h100[s] / h200[s] for s in shapes])
    assert 1.3 < ratio < 1.55, ratio


@pytest.mark.xfail(strict=True, reason="the shipped fits moved onto each GPU's peaks predict H100 / H200 of 1.15 "
                   "(H100's fit) and 1.22 (H200's) on those shapes against the measured 1.43: the roofline corner "
                   "prices them as partly compute-bound, and the two GPUs share their peak math")
@pytest.mark.parametrize("fit_of", ["h100-sxm", "h200"])
def test_fits_scale_mid_m_gemms_with_bandwidth(fit_of, h100_rows, h200_rows, medians):
    """Either shipped fit, on each GPU's own peaks, predicts the measured H100 / H200 time ratio of the shared
    mid-m shapes (test above) within 10%: the device dependence a design-space sweep over bandwidth relies on."""
    shapes = _mid_m_shared(medians)
    h100, h200 = medians
    one100, one200 = ({(r.m, r.n, r.k): r for r in rows} for rows in (h100_rows, h200_rows))
    predicted = (predict(_transferred("h100-sxm", fit_of), [one100[s] for s in shapes])
                 / predict(_transferred("h200", fit_of), [one200[s] for s in shapes]))
    measured = np.median([h100[s] / h200[s] for s in shapes])
    assert abs(np.median(predicted) / measured - 1.0) <= 0.10, (np.median(predicted), measured)
