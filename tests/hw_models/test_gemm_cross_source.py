"""GEMM accuracy across measurement sources (issue 12's target: cross-source median <= 12%, p90 <= 30% on 16-bit
GEMMs): one GPU's shipped fit moved onto a sibling's peaks and scored on another source's rows of the sibling,
rows the fit never saw (what `explore validate --cross-from` prints; README, Accuracy).

- H200's fit (aiconfigurator's bf16 GEMMs, CUDA-graph replays) on H100 SXM's peaks, scored on Vidur's H100 fp16
  GEMMs (PyTorch-profiler kernel durations): p90 met, median missed.
- H100 SXM's fit (Vidur) on H200's peaks, scored on aiconfigurator's H200 bf16 GEMMs: both missed.

Why the forward median cannot be met by a transfer at equal peaks is in the data, not the model: on the shapes both
sources measured, Vidur's H100 takes longer than aiconfigurator's H200 by more than 12% in the median even where
the GEMM is compute-bound, on the same GH100 die with the same 989 TFLOP/s dense peak.
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


@pytest.mark.xfail(strict=True, reason="median 25% / p90 76% against 12% / 30%: Vidur has few GEMMs under 10 us, and "
                   "its fitted 4.9 us latency (its smallest GEMMs take 4 us; aiconfigurator's 2.4 us) and soft "
                   "roofline corner make aiconfigurator's many small H200 GEMMs too slow")
def test_h100_fit_on_aiconfigurator_h200_gemms_meets_the_target(h200_rows):
    summary = _cross("h200", "h100-sxm", h200_rows)
    assert summary["median_abs_err"] <= TARGET_MEDIAN and summary["p90_abs_err"] <= TARGET_P90


def test_sources_disagree_on_identical_compute_bound_shapes(h100_rows, h200_rows):
    """On the (m, n, k) both sources timed with at least 1e11 FLOPs (compute-bound on both GPUs: arithmetic
    intensity far above either ridge point), Vidur's H100 median time is more than 1.08x aiconfigurator's H200
    time, and below 1.3x (not a units or shape mix-up): a fit of either source moved to the other at the same peak
    math keeps that gap."""
    def medians(rows):
        times: dict[tuple, list[float]] = {}
        for r in rows:
            times.setdefault((r.m, r.n, r.k), []).append(r.time_s)
        return {shape: float(np.median(t)) for shape, t in times.items()}

    h100, h200 = medians(h100_rows), medians(h200_rows)
    shared = [s for s in set(h100) & set(h200) if 2.0 * s[0] * s[1] * s[2] >= 1e11]
    assert len(shared) >= 100
    ratio = np.median([h100[s] / h200[s] for s in shared])
    assert 1.08 < ratio < 1.3, ratio
