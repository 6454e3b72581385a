"""A what-if that gives a GPU a tensor-core dtype its preset has no rate for (`compute.peak_TFLOPS.fp8=624` on an A100:
Hopper's fp8 tensor cores on Ampere): the override adds the rate, and the GPU then runs that dtype's GEMMs natively at
it, priced as the project prices a dtype without measurements of its own (the 16-bit fit at the dtype's peak)."""

from __future__ import annotations

import numpy as np
import pytest

from hw_models.registry import load_device, what_if_fields
from kernels.formats import NumericFormat
from kernels.kernel import Kernel, KernelKind
from kernels.table import KernelTable
from workloads.errors import InputError

# A100 SXM datasheet: BF16 tensor 312 TFLOPS dense; the what-if's fp8 rate is twice it (Hopper's fp8:bf16 ratio,
# H100 SXM whitepaper: 1978.9 / 989.4).
A100_BF16_TFLOPS = 312
WHAT_IF_FP8_TFLOPS = 624
FP8 = NumericFormat(weight_bits=8, act_bits=8, weight_type="fp8_e4m3", act_type="fp8_e4m3")


def gemm(m: int, n: int, k: int) -> Kernel:
    """A weight GEMM at 16 bits: X[m, k] @ W[k, n]."""
    return Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * m * n * k, weight_bytes=2.0 * k * n,
                  act_bytes=2.0 * (m * k + m * n), kv_bytes=0.0, dtype="bf16", tensor_core=True, m=m, n=n, k=k, batch=1)


def cost(device, kernel: Kernel, fmt: NumericFormat | None):
    table = KernelTable.from_kernels([kernel])
    return device.cost_table(table.with_format(fmt) if fmt is not None else table, "device")


@pytest.fixture(scope="module")
def what_if():
    return load_device("a100-sxm-80gb", {"compute.peak_TFLOPS.fp8": WHAT_IF_FP8_TFLOPS})


def test_the_added_dtype_runs_natively(what_if):
    plan = what_if.quant_plan(FP8)
    assert (plan.math_dtype, plan.mixed_input, plan.emulated) == ("fp8", False, False)
    assert what_if.spec.peak_flops("fp8") == WHAT_IF_FP8_TFLOPS * 1e12
    assert what_if.gemm_pricing_unmeasured(plan) == "16-bit fit"  # no measured fp8 GEMM on an A100


def test_a_compute_bound_fp8_gemm_takes_the_datasheet_ratio_of_bf16(what_if):
    """At the same (16-bit) fitted efficiency, an 8192^3 GEMM's time scales as the peaks: 312 / 624 of bf16's."""
    big = gemm(8192, 8192, 8192)
    ratio = float(cost(what_if, big, FP8).time_s[0] / cost(what_if, big, None).time_s[0])
    assert ratio == pytest.approx(A100_BF16_TFLOPS / WHAT_IF_FP8_TFLOPS, rel=0.01)


def test_a_decode_gemm_with_fp8_weights_moves_half_the_bf16_weight_bytes(what_if):
    """Batch 1, 4096 x 4096 weights, by hand: bf16 moves 2 B a weight (33,554,432 B) plus a 16-bit input and output
    row (8,192 B each); fp8 moves 1 B a weight (16,777,216 B, half) plus a bf16 scale per 128 weights (262,144 B), an
    fp8 input row (4,096 B) with a bf16 scale per 128 values (64 B) and the 16-bit output row (8,192 B). DRAM bytes
    are the DRAM energy over its energy per byte (hw_models/gpu.py)."""
    decode = gemm(1, 4096, 4096)
    weights_bf16 = 4096 * 4096 * 2

    def moved(fmt):
        return float(cost(what_if, decode, fmt).memory_J[0] / what_if.spec.dram_J_per_byte)
    assert moved(None) == pytest.approx(weights_bf16 + 8192 + 8192, rel=1e-9)
    assert moved(FP8) == pytest.approx(weights_bf16 / 2 + 4096 * 4096 // 128 * 2 + 4096 + 64 + 8192, rel=1e-9)


def test_a_dtype_the_gpu_model_does_not_know_is_refused_naming_the_addable_ones():
    with pytest.raises(InputError, match=r"peak_TFLOPS\.fp6: no such field to override"):
        load_device("a100-sxm-80gb", {"compute.peak_TFLOPS.fp6": 1})
    fields = what_if_fields("a100-sxm-80gb")
    assert {"compute.peak_TFLOPS.fp8", "compute.peak_TFLOPS.fp4"} <= set(fields)
    assert "compute.peak_TFLOPS.fp6" not in fields
    assert what_if_fields("h100-sxm").count("compute.peak_TFLOPS.fp8") == 1  # a field the preset has, listed once


def test_other_kinds_add_no_key():
    """Only a GPU's peak_TFLOPS is marked addable: an NPU's per-dtype MAC rates change, they gain no dtype."""
    with pytest.raises(InputError, match="no such field to override"):
        load_device("neupims", {"npu.macs_per_pe_per_cycle.int8": 2})


def test_a_compute_bound_fp8_gemm_draws_no_more_than_the_tdp(what_if):
    """The FLOP energy rule (hw_models/gpu.py): the board draws its TDP when its math runs at the fitted ceiling of a
    dtype's peak, so a dtype at twice bf16's peak under the same (16-bit) ceiling costs half its energy a FLOP, and a
    compute-bound GEMM in it stays at or below the A100's 400 W TDP (datasheet), as a bf16 one does."""
    assert what_if.joules_per_flop("fp8") == pytest.approx(
        what_if.joules_per_flop("bf16") * A100_BF16_TFLOPS / WHAT_IF_FP8_TFLOPS, rel=1e-12)
    run = cost(what_if, gemm(8192, 8192, 8192), FP8)
    assert float((run.compute_J + run.memory_J + run.static_J)[0] / run.time_s[0]) <= 400


def test_a_device_file_and_a_sweep_block_add_the_rate_as_set_does(what_if, tmp_path):
    """The same override path: a device file on the A100 preset with an fp8 rate, and a sweep's block of points whose
    fp8 rate varies (hw_models/device_block.py), price an fp8 GEMM as the --set what-if does."""
    from hw_models.device_block import block_device, check_knob_values

    path = tmp_path / "a100-fp8.yaml"
    path.write_text(f"base: a100-sxm-80gb\ncompute:\n  peak_TFLOPS:\n    fp8: {WHAT_IF_FP8_TFLOPS}\n")
    big = gemm(8192, 8192, 8192)
    expected = float(cost(what_if, big, FP8).time_s[0])
    assert float(cost(load_device(str(path)), big, FP8).time_s[0]) == pytest.approx(expected, rel=1e-12)
    knobs = {"compute.peak_TFLOPS.fp8": [A100_BF16_TFLOPS, WHAT_IF_FP8_TFLOPS]}
    check_knob_values("a100-sxm-80gb", knobs)
    block = cost(block_device(load_device("a100-sxm-80gb"), knobs), big, FP8).time_s
    assert float(np.ravel(block)[-1]) == pytest.approx(expected, rel=1e-12)
