"""GPU pricing of quantized GEMMs (hw_models/gpu_quant.py): fewer weight bits never slower in a memory-bound decode
GEMM, the speed-up bounded by the bytes moved and the dequantization work (hand-computed from the fit's parameters),
fp8 at the fp8 rate against aiconfigurator's measured H200 GEMMs, and emulation where a GPU lacks the dtype."""

from __future__ import annotations

import csv
import gzip
import statistics
from pathlib import Path

import numpy as np
import pytest

from hw_models.registry import load_device
from kernels.formats import NumericFormat
from kernels.kernel import Kernel, KernelKind
from kernels.table import KernelTable

AIC_GEMM = (Path(__file__).resolve().parents[3] / "shared" / "data" / "aiconfigurator" / "h200_sxm" / "gemm" / "vllm"
            / "0.24.0" / "gemm_perf.csv.gz")
# Llama-2-7B's decode GEMMs, batch 1: (n, k) of QKV-sized, MLP up and MLP down projections.
LLAMA2_7B_GEMMS = ((4096, 4096), (11008, 4096), (4096, 11008))
WEIGHT_BITS = (16, 8, 6, 5, 4, 3, 2)


def gemm(m: int, n: int, k: int) -> Kernel:
    """A weight GEMM at 16 bits: X[m, k] @ W[k, n]."""
    return Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * m * n * k, weight_bytes=2.0 * k * n,
                  act_bytes=2.0 * (m * k + m * n), kv_bytes=0.0, dtype="bf16", tensor_core=True, m=m, n=n, k=k, batch=1)


def time_s(device, kernels: list[Kernel], fmt: NumericFormat) -> np.ndarray:
    table = KernelTable.from_kernels(kernels).with_format(fmt)
    return device.cost_table(table, "device").time_s


@pytest.fixture(scope="module")
def a100():
    return load_device("a100-sxm-80gb")


@pytest.mark.parametrize("n, k", LLAMA2_7B_GEMMS)
def test_fewer_weight_bits_are_never_slower_at_batch_1(a100, n, k):
    times = [float(time_s(a100, [gemm(1, n, k)], NumericFormat(weight_bits=bits))[0]) for bits in WEIGHT_BITS]
    shown = dict(zip(WEIGHT_BITS, times, strict=True))
    assert all(later <= earlier for earlier, later in zip(times, times[1:], strict=False)), shown


@pytest.mark.parametrize("n, k", LLAMA2_7B_GEMMS)
@pytest.mark.parametrize("bits", [8, 4, 3])
def test_speedup_follows_bytes_minus_dequantization(a100, n, k, bits):
    """By hand, from the A100 fit (hw_models/calibration/a100-sxm-80gb.yaml): a GEMM takes at least its latency plus
    its weights at the fitted bandwidth, and at most that plus its dequantization (1.125 + 0.5 [4-bit] or 1.0 + 0.5
    [8-bit] or 1.625 + 0.5 [3-bit] lane instructions per weight at 19.5 / 2 T/s) plus its 16-row padded tensor work
    at the fitted fraction of 312 TFLOP/s (the smooth maximum of two times is at most their sum)."""
    fit = a100.calibration.gemm
    bandwidth = 2039e9 * fit.bandwidth_fraction
    ops = {8: 1.0 + 0.5, 4: 9 / 8 + 0.5, 3: 9 / 8 + 0.5 + 0.5}[bits]
    padded_work = 2 * 16 * n * k
    work = 2 * n * k + fit.padding_share * (padded_work - 2 * n * k)
    compute_s = work / (312e12 * fit.compute_fraction) + ops * n * k / (19.5e12 / 2)
    weights_16, weights_b = 2.0 * n * k, 2.0 * n * k * (bits + 16 / 128) / 16
    acts = 2.0 * (k + n)
    t16_low = fit.latency_s + (weights_16 + acts) / bandwidth
    tb_high = fit.latency_s + (weights_b + acts) / bandwidth + compute_s
    t16, tb = (float(time_s(a100, [gemm(1, n, k)], NumericFormat(weight_bits=b))[0]) for b in (16, bits))
    assert t16 / tb <= weights_16 / weights_b  # never more than the bytes saved
    assert t16 / tb >= t16_low / tb_high  # never less than bytes minus dequantization and padding


def _aic_rows() -> dict[str, dict[tuple[int, int, int], float]]:
    rows: dict[str, dict] = {}
    with gzip.open(AIC_GEMM, "rt") as f:
        for r in csv.DictReader(f):
            rows.setdefault(r["gemm_dtype"], {})[int(r["m"]), int(r["n"]), int(r["k"])] = float(r["latency"])
    return rows


@pytest.mark.skipif(not AIC_GEMM.is_file(), reason="../shared/data/aiconfigurator not present")
def test_fp8_gemm_speedup_on_h200_matches_the_measured():
    """Per-tensor fp8 (vLLM's CutlassFP8ScaledMMLinearKernel, its input quantization included) over bf16
    (torch.nn.functional.linear) on H200, aiconfigurator's gemm_perf table: the median speed-up over the GEMMs with
    m, n and k all at least 4,096 (693 shapes, about 1.59x: the math-bound regime where fp8's doubled rate shows)
    is predicted within 10%."""
    rows = _aic_rows()
    shapes = sorted(s for s in rows["bfloat16"] if s in rows["fp8"] and min(s) >= 4096)
    measured = statistics.median(rows["bfloat16"][s] / rows["fp8"][s] for s in shapes)
    h200 = load_device("h200")
    kernels = [gemm(*s) for s in shapes]
    fp8 = NumericFormat(weight_bits=8, act_bits=8, weight_type="fp8_e4m3", act_type="fp8_e4m3",
                        scale_granularity="tensor")
    predicted = statistics.median(time_s(h200, kernels, NumericFormat()) / time_s(h200, kernels, fp8))
    assert len(shapes) > 500
    assert predicted == pytest.approx(measured, rel=0.10)


def test_fp8_runs_at_the_fp8_rate_where_the_gpu_has_it():
    """A compute-bound 8192^3 GEMM on the H100 roofline (no fit): fp8 math at 1,978.9 TFLOP/s, bf16 at 989.4."""
    h100 = load_device("h100-sxm", calibrated=False)
    fp8 = NumericFormat(weight_bits=8, act_bits=8, weight_type="fp8_e4m3", act_type="fp8_e4m3",
                        scale_granularity="tensor")
    big = [gemm(8192, 8192, 8192)]
    assert float(time_s(h100, big, fp8)[0]) == pytest.approx(2 * 8192**3 / 1978.9e12, rel=1e-9)
    assert h100.quant_plan(fp8).notice == ""


def test_fp4_on_a100_runs_weight_only_and_says_so():
    """No fp4 (or fp8) tensor cores on Ampere: engines run such checkpoints weight-only (vLLM's Marlin kernels:
    "Weight-only FP4 compression will be used leveraging the Marlin kernel", marlin_utils_fp4.py), so the math runs
    at the fp16 rate on 16-bit activations plus the CUDA cores' dequantization of the weights alone, and the plan's
    notice says so (explore run prints it)."""
    a100 = load_device("a100-sxm-80gb", calibrated=False)
    nvfp4 = NumericFormat(weight_bits=4, act_bits=4, weight_type="fp4_e2m1", act_type="fp4_e2m1", scale_type="e4m3",
                          group_size=16)
    plan = a100.quant_plan(nvfp4)
    assert plan.emulated and plan.math_dtype == "bf16" and plan.act_ops == 0.0  # the traced activations' dtype
    assert "run weight-only on a100-sxm-80gb" in plan.notice and "fp4" in plan.notice
    # Roofline, compute-bound: the fp16 math plus the weights' dequantization (2.375 ops: Marlin's fp4 placement 15
    # per 8, its exponent rebias folded into the e4m3 scales, the scale 0.5) once per 64 rows, at 9.75 T lane
    # instructions/s; no activation is converted.
    m = n = k = 4096
    ops = 2.375 * n * k * (m / 64)
    expected = 2 * m * n * k / 312e12 + ops / 9.75e12
    assert float(time_s(a100, [gemm(m, n, k)], nvfp4)[0]) == pytest.approx(expected, rel=1e-9)
    # B200 has fp4 tensor cores: native, no notice.
    assert load_device("b200").quant_plan(nvfp4).notice == ""


def test_fp8_w8a8_on_a100_is_priced_as_fp8_weights_alone():
    """vLLM runs fp8 checkpoints on Ampere "as weight-only W8A16, utilizing FP8 Marlin" (docs/features/quantization/
    fp8.md): W8A8 and W8A16 fp8 weights cost the same GEMM work there (fp16 math, 1.75 dequantization ops a weight:
    Marlin's fp8 placement, 7 per 4, its exponent rebias folded into the scales, per-tensor scales in the epilogue),
    where an H100 runs W8A8 at its fp8
    rate. Converting every activation too (the emulation an int4 W4A4 on an H100 gets) made a 2K-token prefill 45%
    slower than fp16 on a calibrated A100."""
    a100 = load_device("a100-sxm-80gb", calibrated=False)
    fp8 = dict(weight_bits=8, weight_type="fp8_e4m3", scale_granularity="tensor")
    w8a8 = NumericFormat(act_bits=8, act_type="fp8_e4m3", **fp8)
    w8a16 = NumericFormat(**fp8)
    shapes = [gemm(1, 4096, 4096), gemm(16384, 4096, 4096), gemm(16384, 11008, 4096)]
    # Equal, the activations' bytes included: the fallback reads them at 16 bits, as W8A16 does.
    assert time_s(a100, shapes, w8a8) == pytest.approx(time_s(a100, shapes, w8a16), rel=1e-12)
    m = n = k = 4096
    expected = 2 * m * n * k / 312e12 + 1.75 * n * k * (m / 64) / 9.75e12
    assert float(time_s(a100, [gemm(m, n, k)], w8a8)[0]) == pytest.approx(expected, rel=1e-9)
    h100 = load_device("h100-sxm", calibrated=False)
    assert h100.quant_plan(w8a8).math_dtype == "fp8" and h100.quant_plan(w8a8).notice == ""


def test_fp4_on_h100_runs_weight_only_at_the_bf16_rate():
    """The H100 has fp8 tensor cores and no fp4 ones (H100 datasheet); vLLM runs fp4 checkpoints there weight-only
    too ("Weight-only FP4 compression will be used leveraging the Marlin kernel", marlin_utils_fp4.py): 16-bit
    activations, the math at the bf16 peak (989.4 TFLOP/s), not the fp8 one (1978.9) an fp8 emulation ran at, and
    the weights' dequantization only. Under an engine the other path (dequantize apart, then the 16-bit GEMM) writes
    the weights at 16 bits and runs at the same bf16 rate, so W4A4 costs what W4A16 on the same weights does."""
    h100 = load_device("h100-sxm", calibrated=False)
    fp4 = dict(weight_bits=4, weight_type="fp4_e2m1", scale_type="e4m3", group_size=16)
    w4a4 = NumericFormat(act_bits=4, act_type="fp4_e2m1", **fp4)
    plan = h100.quant_plan(w4a4)
    assert plan.math_dtype == "bf16" and plan.act_ops == 0.0
    assert "fp4 GEMMs run weight-only on h100-sxm" in plan.notice
    # Roofline, compute-bound: 4096^3 at the bf16 peak plus 2.375 ops a weight (Marlin's fp4 placement 15 / 8, the
    # exponent rebias folded into the e4m3 scales, the scale 0.5) once per 64 rows at half the 66.9 TFLOP/s fp32 peak;
    # no activation is converted.
    m = n = k = 4096
    expected = 2 * m * n * k / 989.4e12 + 2.375 * n * k * (m / 64) / (66.9e12 / 2)
    assert float(time_s(h100, [gemm(m, n, k)], w4a4)[0]) == pytest.approx(expected, rel=1e-9)
    shapes = [gemm(1, 4096, 4096), gemm(16384, 4096, 4096), gemm(16384, 11008, 4096)]
    table = KernelTable.from_kernels(shapes)
    engine = [h100.cost_table(table.with_format(fmt), "engine").time_s for fmt in (w4a4, NumericFormat(**fp4))]
    assert engine[0] == pytest.approx(engine[1], rel=1e-12)  # the activations at 16 bits in both


@pytest.mark.parametrize("device, act", [("h100-sxm", dict(act_bits=4, act_type="fp4_e2m1", weight_bits=4,
                                                             weight_type="fp4_e2m1", scale_type="e4m3", group_size=16)),
                                         ("a100-sxm-80gb", dict(act_bits=8, act_type="fp8_e4m3", weight_bits=8,
                                                                weight_type="fp8_e4m3", scale_granularity="tensor"))])
def test_a_weight_only_run_reads_its_activations_at_16_bits(device, act):
    """A GEMM that a GPU runs weight-only (NVFP4 on an H100, W8A8 fp8 on an A100) reads its input at 16 bits: vLLM's
    fallback kernels take the bf16 activations (marlin_utils_fp4.py apply_fp4_marlin_linear and marlin_utils_fp8.py
    apply_fp8_marlin_linear pass the 16-bit input to the Marlin GEMM). By hand, X[4, 32] @ W[32, 64]: the input
    4 x 32 x 2 B and the output 4 x 64 x 2 B, 768 B (the format's 4.5-bit input, its e4m3 scales included, gave
    72 + 512 = 584 B, its 8-bit one 128 + 512 = 640 B), beside the weights' 64 x 32 stored bits, on the datasheet
    roofline (memory_s x bandwidth)."""
    gpu = load_device(device, calibrated=False)
    fmt = NumericFormat(**act)
    assert gpu.quant_plan(fmt).mixed_input  # the plan runs it weight-only
    weights_B = 64 * 32 * fmt.weight_storage_bits / 8  # 4.5 bits (e4m3 per 16) or 8 (a per-tensor scale)
    table = KernelTable.from_kernels([gemm(4, 64, 32)]).with_format(fmt)
    moved_B = float(gpu.cost_table(table, "device").memory_s[0]) * gpu.spec.bandwidth_Bps
    assert moved_B - weights_B == pytest.approx(4 * 32 * 2 + 4 * 64 * 2, rel=1e-12)


@pytest.mark.parametrize("fmt, ops", [
    # NVFP4: fp4 placed 15 instructions per 8 (two dequant calls of 7 and a shift), rebias folded into the e4m3
    # scales (dequant_skip_flop), the scale multiply 0.5.
    (dict(weight_bits=4, weight_type="fp4_e2m1", scale_type="e4m3", group_size=16), 15 / 8 + 0.5),
    # MXFP4: the same placement, the rebias kept under e8m0 scales (one hmul2 per pair, 0.5), the scale 0.5.
    (dict(weight_bits=4, weight_type="fp4_e2m1", scale_type="e8m0", group_size=32), 15 / 8 + 0.5 + 0.5),
    # fp8 e4m3, fp16 scales per 128: 7 per 4 (two calls' halves of 3 and a shift), rebias folded, the scale 0.5.
    (dict(weight_bits=8, weight_type="fp8_e4m3"), 7 / 4 + 0.5),
    # int4 keeps TensorRT-LLM's converter count: 9 per 8 and the scale.
    (dict(weight_bits=4), 9 / 8 + 0.5)], ids=["nvfp4", "mxfp4", "fp8", "int4"])
def test_float_weights_dequantize_as_marlins_sequences(fmt, ops):
    """Weight-only float formats pay, per weight and pass, the instructions of vLLM's Marlin sequences, counted by hand
    from csrc/quantization/marlin/dequant.h (dequant<half2, kFE2M1f>, <half2, kFE4M3fn>) and the calls of
    csrc/moe/marlin_moe_wna16/marlin_template.h's matmul, whose dequant_skip_flop drops the exponent rebias for fp8
    e4m3 weights and for fp4 weights with e4m3 scales."""
    plan = load_device("h100-sxm", calibrated=False).quant_plan(NumericFormat(**fmt))
    assert plan.mixed_input and plan.weight_ops == pytest.approx(ops, rel=1e-12)


def test_default_format_prices_as_before(a100):
    """A table under the default format is priced like the traced table (no dequantization, cuBLAS tiles)."""
    kernels = [gemm(1, n, k) for n, k in LLAMA2_7B_GEMMS] + [gemm(4096, 4096, 4096)]
    plain = a100.cost_table(KernelTable.from_kernels(kernels), "device").time_s
    assert np.array_equal(time_s(a100, kernels, NumericFormat()), plain)


@pytest.mark.parametrize("device", ["h100-sxm", "l40s"])
def test_fp8_weights_of_either_element_type_meet_fp8_activations_on_the_tensor_cores(device):
    """Ada's mma.sync.m16n8k32 and Hopper's wgmma take e4m3 and e5m2 operands in every pairing (CUTLASS
    include/cute/arch/mma_sm89.hpp: SM89_16x8x32_F32E5M2E4M3F32_TN, mma.sync...f32.e5m2.e4m3.f32), so e5m2 weights
    beside e4m3 activations need no CUDA-core conversion: the same plan and time as e4m3 weights, 8 bits either way."""
    gpu = load_device(device)
    fp8 = dict(weight_bits=8, act_bits=8, act_type="fp8_e4m3")
    e4m3, e5m2 = NumericFormat(weight_type="fp8_e4m3", **fp8), NumericFormat(weight_type="fp8_e5m2", **fp8)
    plan = gpu.quant_plan(e5m2)
    assert plan.math_dtype == "fp8" and plan.weight_ops == 0.0 and plan.notice == ""
    kernels = [gemm(m, n, k) for m in (1, 4096) for n, k in LLAMA2_7B_GEMMS]
    assert time_s(gpu, kernels, e5m2) == pytest.approx(time_s(gpu, kernels, e4m3), rel=1e-12)


def test_a_weight_only_fallback_names_the_16_bit_dtype_the_gpu_has():
    """A T4 (Turing) has fp16 tensor cores and no bf16 ones (its preset: fp16 65 TFLOP/s, no bf16 rate), so fp8
    weights it runs weight-only are dequantized for fp16 math, as vLLM runs FP8 checkpoints on compute capability 7.5
    ("as weight-only W8A16, utilizing FP8 Marlin", docs/features/quantization/fp8.md), not bf16: the plan, its
    notice and emulated_gemms say fp16. An A100, which has bf16, keeps the traced bf16."""
    from explore.format_checks import emulated_gemms
    fp8 = NumericFormat(weight_bits=8, act_bits=8, weight_type="fp8_e4m3", act_type="fp8_e4m3")
    t4 = load_device("t4")
    plan = t4.quant_plan(fp8)
    assert plan.math_dtype == "fp16" and "for fp16 math" in plan.notice
    assert emulated_gemms(t4, fp8) == "fp8 as fp16"
    # The same kernel as fp8 weights meeting 16-bit activations (W8A16), priced at the fp16 rate either way.
    kernels = [gemm(m, n, k) for m in (1, 4096) for n, k in LLAMA2_7B_GEMMS]
    w8a16 = NumericFormat(weight_bits=8, weight_type="fp8_e4m3")
    assert time_s(t4, kernels, fp8) == pytest.approx(time_s(t4, kernels, w8a16), rel=1e-12)
    assert load_device("a100-sxm-80gb").quant_plan(fp8).math_dtype == "bf16"
