"""The fused-MoE model on a GPU (hw_models/gpu_moe.py): the roofline of an uncalibrated preset, never faster than
the roofline once fitted, the fitter recovering known parameters, fits kept in a calibration file, and held-out
error of the shipped H200 fits on aiconfigurator's measured layers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hw_models.calibration import (
    MOE_PARAMETERS,
    fit_moe,
    load_calibration,
    predict,
    read_calibration,
    training_sources,
    write_calibration,
)
from hw_models.gpu import GPUModel
from hw_models.gpu_efficiency import Calibration, GemmFit, MoeFit
from hw_models.registry import load_device
from kernels.measured import MeasuredKernel
from kernels.moe import fused_moe_kernel
from kernels.table import KernelTable

AICONFIGURATOR = Path(__file__).resolve().parents[3] / "shared" / "data" / "aiconfigurator"
TRUTH = MoeFit(compute_fraction=0.55, bandwidth_fraction=0.85, act_bandwidth_fraction=0.6, latency_s=25e-6, blend=2.0,
               padding_share=0.5, cta_bandwidth_Bps=20e9, unaligned_slowdown=0.3, ep_latency_s=12e-6)


def _layers(rng: np.random.Generator, count: int) -> KernelTable:
    """Fused MoE layers of random shapes: tokens 1 to 16k, top-1 to 8 of 8 to 256 experts, some spread."""
    kernels = []
    for _ in range(count):
        experts, topk = int(2 ** rng.integers(3, 9)), int(2 ** rng.integers(0, 4))
        tokens, held = int(2 ** rng.integers(0, 15)), experts // int(2 ** rng.integers(0, 3))
        routed = tokens * topk * held / experts
        kernels.append(fused_moe_kernel(
            tokens=tokens, routed=routed, touched=min(held, routed), hidden=int(rng.choice([2048, 4096, 7168])),
            inter=int(rng.choice([22, 256, 704, 2048, 14336])), weight_width=float(rng.choice([2.0, 1.0])),
            act_width=2.0, dtype="bf16", routed_all=tokens * topk))
    return KernelTable.from_kernels(kernels)


def test_uncalibrated_gpu_prices_the_fused_layer_on_the_roofline():
    """No calibration: math at the dense peak, the touched experts' weights and the activations at bandwidth."""
    device = load_device("l4", calibrated=False)
    assert device.calibration is None
    table = _layers(np.random.default_rng(1), 50)
    roofline = np.maximum(table.flops / device.peak_flops("bf16"), table.bytes / device.spec.bandwidth_Bps)
    np.testing.assert_allclose(device.cost_table(table, execution="device").time_s, roofline, rtol=1e-12)


def test_a_fitted_layer_is_never_faster_than_the_roofline():
    """Any fit within the fitter's bounds (fractions at most 1) prices every layer at or above the larger of its
    math at peak and its bytes at bandwidth."""
    rng = np.random.default_rng(2)
    base = load_device("h200", calibrated=False)
    table = _layers(rng, 200)
    roofline = np.maximum(table.flops / base.peak_flops("bf16"), table.bytes / base.spec.bandwidth_Bps)
    for _ in range(20):
        fit = MoeFit(**{name: float(rng.uniform(low, high) * scale)
                        for name, (_, low, high, scale) in MOE_PARAMETERS.items()})
        model = GPUModel(base.spec, calibration=Calibration(device="h200", moe=fit))
        assert (model.cost_table(table, execution="device").time_s >= roofline * (1 - 1e-12)).all(), fit


def test_a_calibration_without_a_moe_fit_prices_the_layer_as_a_grouped_gemm():
    base = load_device("h200", calibrated=False)
    table = _layers(np.random.default_rng(3), 30)
    gemm = GemmFit(compute_fraction=0.7, bandwidth_fraction=0.8, latency_s=5e-6, blend=3.0, padding_share=0.5)
    as_gemm = GPUModel(base.spec, calibration=Calibration(device="h200", gemm=gemm))
    as_moe = GPUModel(base.spec, calibration=Calibration(device="h200", gemm=gemm, moe=TRUTH))
    gemm_s = as_gemm.cost_table(table, execution="device").time_s
    assert (gemm_s > 0).all() and not np.allclose(gemm_s, as_moe.cost_table(table, execution="device").time_s)


def _rows(times, shapes) -> list[MeasuredKernel]:
    return [MeasuredKernel(device="h200", kernel="moe", dtype="bf16", time_s=float(t), source="synthetic", m=m, n=n,
                           k=k, topk=topk, experts=e, expert_parallel=ep, backend="triton")
            for t, (m, n, k, topk, e, ep) in zip(times, shapes, strict=True)]


def test_fitter_recovers_known_moe_parameters():
    """Rows priced by a known fit over tokens 1 to 16k and thin to wide experts (one unaligned): the fit finds every
    parameter of it."""
    shapes = [(tokens, inter, hidden, topk, experts, ep)
              for tokens in (1, 4, 16, 64, 256, 1024, 4096, 16384)
              for inter, hidden, topk, experts, ep in ((14336, 4096, 2, 8, 1), (14336, 4096, 2, 8, 4),
                                                       (2048, 7168, 8, 256, 8), (704, 2816, 8, 128, 1),
                                                       (88, 2816, 8, 128, 1), (512, 2048, 8, 256, 32))]
    base = load_device("h200", calibrated=False)
    model = GPUModel(base.spec, calibration=Calibration(device="h200", moe=TRUTH))
    times = predict(model, _rows(np.ones(len(shapes)), shapes))
    fitted = fit_moe(base, _rows(times, shapes))
    np.testing.assert_allclose(predict(GPUModel(base.spec, calibration=Calibration(device="h200", moe=fitted)),
                                       _rows(times, shapes)), times, rtol=0.01)
    for name in MoeFit.__dataclass_fields__:  # every parameter, the L2 speed-up at its no-effect value included
        assert getattr(fitted, name) == pytest.approx(getattr(TRUTH, name), rel=0.01), name


def test_an_expert_parallel_layer_pays_the_fits_step_once():
    """The same layer (two of Mixtral's experts at one token) with its experts spread over 8 devices takes the fit's
    expert-parallel step beyond the split layer's time, 12 us here, and nothing more; a fit without the step prices
    both alike."""
    base = load_device("h200", calibrated=False)
    layers = KernelTable.from_kernels([fused_moe_kernel(tokens=1, routed=2, touched=2, hidden=4096, inter=14336,
                                                        weight_width=2.0, act_width=2.0, dtype="bf16",
                                                        expert_parallel=ep) for ep in (1, 8)])
    split_s, spread_s = GPUModel(base.spec, calibration=Calibration(device="h200", moe=TRUTH)).cost_table(
        layers, execution="device").time_s
    assert spread_s - split_s == pytest.approx(12e-6, rel=1e-9)
    no_step = GPUModel(base.spec, calibration=Calibration(device="h200", moe=replace(TRUTH, ep_latency_s=0.0)))
    assert np.ptp(no_step.cost_table(layers, execution="device").time_s) == 0.0


def test_moe_fits_round_trip_through_a_calibration_file(tmp_path):
    cal = Calibration(device="h200", moe=TRUTH, moe_dtypes={"fp8/block128": replace(TRUTH, latency_s=30e-6)})
    write_calibration(cal, tmp_path / "h200.yaml")
    back = read_calibration(tmp_path / "h200.yaml")
    assert (back.moe, back.moe_dtypes) == (cal.moe, cal.moe_dtypes)
    assert back.fitted_classes == ("moe", "moe fp8/block128")
    assert back.with_variant("fp8/block128").moe_fit("fp8").latency_s == 30e-6


# Held-out error of the shipped H200 fits (explore calibrate aic-kernels.csv.gz --device h200) on the model shapes
# they were not fitted on, over every such row of aiconfigurator's H200 moe_perf.csv.gz (explore validate, README):
# median 9.9% (bf16), 13.8% (fp8 per-tensor), 8.4% (fp8 block-scaled). This test scores every 8th held-out row
# (to stay fast; 10.5%, 13.2% and 8.6% on that sample); the bound is the full median plus 2 points, for the sampling.
# A guard against regressions scored on the fit's own source (held-out shapes of the same aiconfigurator tables),
# not an independent accuracy claim: no other source measures fused MoE layers.
HELD_OUT_MEDIAN = {"bf16": 0.099, "fp8": 0.138, "fp8/block128": 0.084}
MARGIN = 0.02


@pytest.mark.slow  # a whole run of seconds: run with the slow checks
@pytest.mark.skipif(not AICONFIGURATOR.is_dir(), reason="../shared/data/aiconfigurator not present")
def test_held_out_error_on_measured_h200_moe_layers():
    from hw_models.calibration import gemm_key
    from kernels.aiconfigurator_import import _moe_rows

    path = next((AICONFIGURATOR / "h200_sxm" / "moe").glob("*/*/moe_perf.csv.gz"))
    rows = list(_moe_rows(path, "h200", "h200_sxm"))
    train = set(load_calibration("h200").provenance["train_sources"])
    assert set(training_sources(rows, 0.5)) <= train  # the shipped fit's own split of these sources
    held_out = [r for r in rows if r.source not in train][::8]
    error = predict(load_device("h200"), held_out) / np.array([r.time_s for r in held_out]) - 1.0
    keys = np.array([gemm_key(r) or "bf16" for r in held_out])
    for key, median in HELD_OUT_MEDIAN.items():
        assert np.median(np.abs(error[keys == key])) <= median + MARGIN, (
            f"{key}: median error on held-out H200 MoE shapes (same source as the fit: aiconfigurator moe_perf)")
