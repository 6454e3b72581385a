"""vLLM's per-tensor fp8 CUTLASS tile dispatch (hw_models/gpu_gemm_configs.py): the tiles read off its dispatch
files, the padded work and busy SMs they give by hand, and the fitter recovering a per-SM streaming share."""

from __future__ import annotations

import numpy as np
import pytest

from hw_models.calibration import fit_gemm, predict
from hw_models.gpu import GPUModel
from hw_models.gpu_efficiency import Calibration, GemmFit, busy_sms, gemm_times, padded_flops
from hw_models.gpu_gemm_configs import policy_tiles, tile_policy
from hw_models.registry import load_device
from kernels.measured import MeasuredKernel

SM90, SM89 = "vllm-cutlass-fp8/sm90", "vllm-cutlass-fp8/sm89"


@pytest.mark.parametrize(("m", "n", "k", "tile"), [
    (8, 4096, 4096, (16, 64)),      # M <= 16: swapped 64 x 16 TileShape, 16 rows of C by 64 columns
    (32, 1024, 4096, (16, 64)),     # M in (16, 64], N <= 1280: swapped 64 x 16
    (32, 4096, 4096, (64, 64)),     # M in (16, 64], N > 1280: swapped 64 x 64
    (100, 4096, 4096, (64, 128)),   # M in (64, 128]: 64 x 128
    (200, 4096, 4096, (128, 128)),  # M > 128: default 128 x 128
    (8192, 4096, 8192, (256, 128)),  # M >= 8192 and K >= 6144: cooperative 256 x 128
    (8192, 4096, 4096, (128, 128)),  # K below 6144: the default again
])
def test_sm90_tiles_follow_the_dispatch_file(m, n, k, tile):
    tile_m, tile_n, sms = policy_tiles(SM90, m, n, k)
    assert (tile_m[0], tile_n[0], sms[0]) == (*tile, 1)


@pytest.mark.parametrize(("m", "n", "tile"), [
    (8, 4096, (16, 64)),      # next_pow_2(M) <= 16, next_pow_2(N) <= 8192
    (8, 16384, (16, 128)),    # next_pow_2(N) in (8192, 24576]
    (8, 32768, (32, 64)),     # larger N
    (24, 16384, (32, 128)),   # M in (16, 32], next_pow_2(N) in (8192, 16384]
    (100, 16384, (128, 128)),  # M in (64, 128], next_pow_2(N) in (8192, 16384]
    (200, 4096, (64, 128)),   # M in (128, 256], next_pow_2(N) <= 4096
    (300, 8192, (256, 128)),  # M > 256, next_pow_2(N) in (4096, 8192]
    (300, 5000, (256, 128)),  # next_pow_2(5000) = 8192
    (300, 16384, (128, 128)),
])
def test_sm89_tiles_follow_the_dispatch_file(m, n, tile):
    tile_m, tile_n, _ = policy_tiles(SM89, m, n, 4096)
    assert (tile_m[0], tile_n[0]) == tile


def test_policy_by_preset_architecture():
    assert tile_policy("vllm-cutlass-fp8", "h200") == SM90
    assert tile_policy("vllm-cutlass-fp8", "l40s") == SM89
    assert tile_policy("vllm-cutlass-fp8", "a100-sxm-80gb") == ""  # no fp8 tensor cores: no such dispatch
    assert tile_policy("vllm-cutlass-fp8", "b200") == ""  # SM100's dispatch did not help held-out rows


def test_padded_work_and_busy_sms_by_hand():
    one = np.array([1.0])
    # m = 8, n = 4096 on SM90: 16 x 64 tiles, 1 x 64 = 64 tiles in one wave of 132 SM slots.
    m, n, k = np.array([8.0]), np.array([4096.0]), np.array([1024.0])
    assert padded_flops(m, n, k, one, 132, tile_policy=SM90)[0] == pytest.approx(2 * 132 * 16 * 64 * 1024)
    assert busy_sms(m, n, k, one, 132, SM90)[0] == 64
    # m = 4096, n = 4096 with the 128 x 128 default: 32 x 32 = 1024 tiles, ceil(1024 / 132) = 8 waves.
    big = np.array([4096.0])
    assert padded_flops(big, big, big, one, 132, tile_policy=SM90)[0] == pytest.approx(2 * 8 * 132 * 128**2 * 4096)
    assert busy_sms(big, big, big, one, 132, SM90)[0] == 132


def test_few_tiles_stream_at_the_per_sm_rate():
    """m = 8, n = 1024, k = 16384 on SM90: 16 tiles, so 16 of 132 SMs stream the weights, each at 1.5 times its
    even share of 4.8 TB/s (54.5 GB/s, 873 GB/s in all), below the 0.8 x 4.8 TB/s the whole GPU would reach."""
    fit = GemmFit(compute_fraction=0.8, bandwidth_fraction=0.8, latency_s=0.0, blend=50.0, padding_share=0.0,
                  tile_policy=SM90, sm_bandwidth_share=1.5)
    one, bytes_moved = np.array([1.0]), np.array([16384 * 1024 + 8 * 16384 + 2 * 8 * 1024.0])
    _, memory_s, _, _ = gemm_times(m=np.array([8.0]), n=np.array([1024.0]), k=np.array([16384.0]), batch=one,
                                flops=np.array([2.0 * 8 * 1024 * 16384]), flops_per_s=1979e12,
                                bytes_moved=bytes_moved, bandwidth_Bps=4.8e12, sm_count=132, fit=fit)
    assert memory_s[0] == pytest.approx(bytes_moved[0] / (16 * 1.5 * 4.8e12 / 132))
    # Without a policy the limit is off: the whole GPU's fraction of bandwidth.
    _, memory_s, _, _ = gemm_times(m=np.array([8.0]), n=np.array([1024.0]), k=np.array([16384.0]), batch=one,
                                flops=np.array([2.0 * 8 * 1024 * 16384]), flops_per_s=1979e12,
                                bytes_moved=bytes_moved, bandwidth_Bps=4.8e12, sm_count=132, fit=fit, tile_policy="")
    assert memory_s[0] == pytest.approx(bytes_moved[0] / (0.8 * 4.8e12))


def _fp8_rows(times: np.ndarray, shapes) -> list[MeasuredKernel]:
    return [MeasuredKernel(device="h200", kernel="gemm", dtype="fp8", variant="tensor", timing="graph",
                           time_s=float(t), source="synthetic", m=m, n=n, k=k)
            for t, (m, n, k) in zip(times, shapes, strict=True)]


def test_fitter_recovers_a_known_per_sm_rate():
    """Synthetic H200 fp8 rows priced with the SM90 dispatch and SMs streaming 2.5 times their share of bandwidth:
    the fit takes the SM90 policy from the preset and recovers that share (and the GPU-wide bandwidth fraction)."""
    base = load_device("h200", calibrated=False)
    truth = GemmFit(compute_fraction=0.7, bandwidth_fraction=0.8, latency_s=5e-6, blend=3.0, padding_share=0.5,
                    tile_policy=SM90, sm_bandwidth_share=2.5, quantize_bytes_per_input=3.0,
                    quantize_latency_s=2e-6, quantize_bandwidth_fraction=0.6)
    rng = np.random.default_rng(11)
    shapes = [(int(m), int(n), int(k)) for m, n, k in 2 ** rng.integers([0, 8, 8], [15, 17, 17], size=(300, 3))]
    model = GPUModel(base.spec, calibration=Calibration(device="h200", gemm_dtypes={"fp8": truth}))
    times = predict(model, _fp8_rows(np.ones(len(shapes)), shapes))
    fitted = fit_gemm(base, _fp8_rows(times, shapes))
    assert fitted.tile_policy == SM90
    assert fitted.sm_bandwidth_share == pytest.approx(2.5, rel=0.05)
    assert fitted.bandwidth_fraction == pytest.approx(0.8, rel=0.05)
