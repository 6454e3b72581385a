"""hw_models.cpu_host on rows given to it (nothing timed): the CPU preset's rates are the rows' figures, and the
held-out check of bench/check_cpu_host_preset.sh misses a wrong preset.

The rows are hand-made: a 1 ms pass over 20 MB (20 GB/s), and fp32 GEMMs at 100, 200 and 300 GFLOP/s. On one
thread of 2 FMA pipes x 16 fp32 lanes (AVX-512) the median 200 GFLOP/s is an effective 200 / (2 x 2 x 16) =
3.125 GHz. Held-out rows are timed at the roofline of those rates, worked out below by hand.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hw_models import cpu_host
from hw_models.registry import load_device
from kernels.measured import MeasuredKernel
from kernels.table import KernelTable

NAME = "test-host-cpu"
# The held-out check (here and in test_cpu_host_preset.py, whose docstring says why 35%): median |predicted /
# measured - 1| of each regime's shapes at most this.
TOLERANCE = 0.35
MEMORY_BOUND = [(1, 4096, 2048), (1, 2048, 4096), (1, 8192, 1024)]  # 32 MiB fp32 weights: beyond L2
COMPUTE_BOUND = [(512, 512, 512), (768, 768, 768), (384, 1536, 1024)]
FACTS = cpu_host.HostFacts(cpu_name="x", logical_cpus=2, simd_width_bits=512, simd_isa="AVX-512", caches=(),
                           memory_GB=8.0)
BANDWIDTH_Bps, FP32_FLOPs = 20e9, 200e9


def regime_medians(device, held: list[MeasuredKernel]) -> tuple[float, float, float, str]:
    """(memory-bound, compute-bound, all) median absolute errors of held-out rows (MEMORY_BOUND's, then
    COMPUTE_BOUND's) on a device, and a per-shape line for messages."""
    predicted = device.cost_table(KernelTable.from_kernels([r.to_kernel() for r in held]), "device").time_s
    errors = predicted / np.array([r.time_s for r in held]) - 1
    n_memory = len(MEMORY_BOUND)
    medians = [float(np.median(np.abs(e))) for e in (errors[:n_memory], errors[n_memory:], errors)]
    detail = ", ".join(f"{r.m}x{r.n}x{r.k}: {e:+.0%}" for r, e in zip(held, errors, strict=True))
    return medians[0], medians[1], medians[2], detail


def _row(kernel: str, time_s: float, **shape) -> MeasuredKernel:
    return MeasuredKernel(device=NAME, kernel=kernel, dtype="fp32", time_s=time_s, source="s", **shape)


def _training() -> list[MeasuredKernel]:
    gemm = 2 * 1000**3  # FLOP of a 1000 x 1000 x 1000 GEMM
    return [_row("elementwise", 1e-3, bytes=2e7),  # 20 GB/s
            _row("elementwise", 1e-3, bytes=1e7),  # 10 GB/s: the best pass sets the bandwidth
            # A GEMV 1 x 1000 x 1000 reads 4 x (1000 + 10^6) B and writes 4 x 1000 B (4,008,000 B): 4 GB/s in 1 ms.
            _row("gemm", 1e-3, m=1, n=1000, k=1000),
            *[_row("gemm", gemm / rate, m=1000, n=1000, k=1000) for rate in (100e9, 300e9, 200e9)]]


def _preset(tmp_path, rows=None) -> tuple[dict, str]:
    data = cpu_host.cpu_preset(rows or _training(), FACTS, name=NAME, threads=1, provenance="p")
    path = tmp_path / f"{NAME}.yaml"
    path.write_text(cpu_host.preset_yaml(data))
    return data, str(path)


def _roofline_s(m: int, n: int, k: int) -> float:
    """A held-out fp32 GEMM's time at 20 GB/s and 200 GFLOP/s: the slower of its bytes and its FLOP."""
    return max(4 * (m * k + k * n + m * n) / BANDWIDTH_Bps, 2 * m * n * k / FP32_FLOPs)


def _held_out() -> list[MeasuredKernel]:
    return [_row("gemm", _roofline_s(*shape), m=shape[0], n=shape[1], k=shape[2])
            for shape in MEMORY_BOUND + COMPUTE_BOUND]


def test_the_preset_takes_the_best_pass_and_the_median_gemm_rate(tmp_path):
    data, path = _preset(tmp_path)
    assert data["memory"]["bandwidth_GBps"] == 20.0
    assert data["compute"]["frequency_GHz"] == 3.125 and data["compute"]["cores"] == 1
    device = load_device(path)
    assert device.bandwidth_Bps == BANDWIDTH_Bps and device.peak_flops("fp32") == FP32_FLOPs


def test_a_gemv_can_set_the_bandwidth(tmp_path):
    """The GEMV of 4,008,000 B in 0.1 ms: 40.08 GB/s, above the 20 GB/s pass."""
    rows = [dataclasses.replace(r, time_s=1e-4) if r.m == 1 else r for r in _training()]
    assert _preset(tmp_path, rows)[0]["memory"]["bandwidth_GBps"] == 40.08


def test_fastest_keeps_each_rows_fastest_round():
    a, b = _training()[:2]
    slow_a, slow_b = dataclasses.replace(a, time_s=2e-3), dataclasses.replace(b, time_s=5e-3)
    assert cpu_host.fastest([[slow_a, b], [a, slow_b]]) == [a, b]


def test_the_held_out_check_passes_the_right_preset_and_misses_a_wrong_one(tmp_path):
    """Held-out rows at the roofline of the preset's own rates: no error on it. 10x the bandwidth puts the GEMVs
    (memory-bound even then: 16.8 MFLOP take 84 us, their 33.6 MB 168 us) at -90%, a tenth of it at +900%; a 10x
    clock puts the squares at -90% (768^3 and 384 x 1536 x 1024) and -88.3% (512^3, memory-bound at 10x:
    3,145,728 B take 157.3 us against 1,342 us of FLOP at 200 GFLOP/s), a median of 90%."""
    data, path = _preset(tmp_path)
    held = _held_out()
    right = regime_medians(load_device(path), held)
    assert right[:3] == pytest.approx((0.0, 0.0, 0.0), abs=1e-9), right[3]
    for field, factor, regime, expected in (("memory.bandwidth_GBps", 10.0, 0, 0.9),
                                            ("memory.bandwidth_GBps", 0.1, 0, 9.0),
                                            ("compute.frequency_GHz", 10.0, 1, 0.9)):
        section, key = field.split(".")
        wrong = load_device(path, overrides={field: data[section][key] * factor})
        medians = regime_medians(wrong, held)
        assert medians[regime] == pytest.approx(expected, rel=1e-9) and medians[regime] > TOLERANCE, medians[3]


def test_bf16_rate_sets_native_bf16():
    def rows(bf16_time_s: float) -> list[MeasuredKernel]:
        base = _row("gemm", 0.01, m=1000, n=1000, k=1000)
        return [base, dataclasses.replace(base, dtype="bf16", time_s=bf16_time_s), _row("elementwise", 1e-3, bytes=1e7)]

    # 2e9 FLOP in 10 ms = 200 GFLOP/s on one core of 2 pipes x 16 lanes: an effective 3.125 GHz.
    slow = cpu_host.cpu_preset(rows(0.01), FACTS, name=NAME, threads=1, provenance="p")
    assert slow["compute"]["frequency_GHz"] == 3.125 and "bf16" not in slow["compute"]["simd_dtypes"]
    assert slow["memory"]["bandwidth_GBps"] == 10.0  # 1e7 B in 1 ms
    fast = cpu_host.cpu_preset(rows(0.002), FACTS, name=NAME, threads=1, provenance="p")
    assert "bf16" in fast["compute"]["simd_dtypes"] and "AMX" in fast["compute"]["source"]
