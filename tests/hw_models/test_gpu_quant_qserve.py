"""QServe's W4A8 GEMMs on a GPU (hw_models/gpu_quant.py): int8 tensor-core math on 4-bit weights, unpacked once per
warp row of the grid on the kernels' own tiles.

Expected values are counted by hand from QServe's kernels (github.com/mit-han-lab/qserve
kernels/csrc/qgemm/w4a8_per_chn/gemm_cuda.cu and w4a8_per_group/gemm_cuda.cu: share_to_reg_one_stage_B and the
launch tiles of gemm_w4a8_per_chn / gemm_w4a8_per_group) and the A100 datasheet (624 TOPS dense int8, 19.5 TFLOP/s
FP32, so 9.75e12 lane instructions/s; 2,039 GB/s), on a Llama-3-8B MLP projection (k 4,096, n 14,336)."""

from __future__ import annotations

import pytest

from hw_models.gpu_quant import (
    QSERVE_CHANNEL_PASSES,
    QSERVE_GROUP_PASSES,
    W4A8_CHANNEL_OPS,
    W4A8_TWO_LEVEL_OPS,
    dequant_ops,
    quant_plan,
    weight_passes,
)
from hw_models.registry import load_device
from kernels.formats import NumericFormat
from kernels.kernel import Kernel, KernelKind
from kernels.table import KernelTable

K, N = 4096, 14336
PER_CHANNEL = NumericFormat(weight_bits=4, act_bits=8, scale_granularity="channel")
TWO_LEVEL = NumericFormat(weight_bits=4, act_bits=8, scale_type="two_level")
W8A8 = NumericFormat(weight_bits=8, act_bits=8, scale_granularity="channel")
A100 = load_device("a100-sxm-80gb")


def _ops(fmt: NumericFormat, m: int) -> float:
    plan = quant_plan(fmt, A100.spec.compute.peak_TFLOPS, "a100-sxm-80gb")
    return float(dequant_ops(plan, m=m, n=N, k=K, batch=1, quantized=True))


def _time_s(fmt: NumericFormat, m: int) -> float:
    gemm = Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * m * K * N, weight_bytes=2.0 * K * N,
                  act_bytes=2.0 * m * (K + N), kv_bytes=0.0, dtype="bf16", tensor_core=True, layer=0,
                  module="model.layers.0.mlp.up_proj", m=m, n=N, k=K, batch=1)
    return float(A100.cost_table(KernelTable.from_kernels([gemm]).with_format(fmt), "device").time_s[0])


def test_instruction_counts_per_weight_are_the_kernels():
    """Per 32-bit word of eight weights: a mask, and a mask and a shift (3); two-level scales add a multiply and a
    __vadd4 per register (4), and each thread's 32 weights 7 instructions to extract four 8-bit scales and 4 byte
    permutes to broadcast four zeros."""
    assert W4A8_CHANNEL_OPS == pytest.approx(3 / 8)
    assert W4A8_TWO_LEVEL_OPS == pytest.approx((4 * 3 + 4 * 4 + 7 + 4) / 32)


@pytest.mark.parametrize("tiles, m, passes", [
    (QSERVE_CHANNEL_PASSES, 1, 1),  # m < 128: blocks of 32 rows, one 32-row warp each
    (QSERVE_CHANNEL_PASSES, 100, 4),  # four blocks of 32
    (QSERVE_CHANNEL_PASSES, 200, 8),  # 128-256: four blocks of 64 rows, two 32-row warps each
    (QSERVE_CHANNEL_PASSES, 256, 8),
    (QSERVE_CHANNEL_PASSES, 300, 6),  # above 256: three blocks of 128 rows, two 64-row warps each
    (QSERVE_GROUP_PASSES, 128, 4),  # exactly 128: two blocks of 64 rows, two 32-row warps each
    (QSERVE_GROUP_PASSES, 129, 4),  # above 128: two blocks of 128 rows, two 64-row warps each
    (QSERVE_GROUP_PASSES, 4096, 64),
])
def test_a_weight_is_unpacked_once_per_warp_row_of_the_grid(tiles, m, passes):
    assert float(weight_passes(tiles, m)) == passes


def test_plans_take_the_kernel_of_their_scales():
    """Per-channel scales: 3/8 x 8 passes x k x n at m = 256; two-level scales: 39/32 x 4 passes at m = 128."""
    assert _ops(PER_CHANNEL, 256) == pytest.approx(3 / 8 * 8 * K * N)
    assert _ops(TWO_LEVEL, 128) == pytest.approx(39 / 32 * 4 * K * N)


def test_decode_gains_from_the_bytes_and_prefill_pays_the_unpacking():
    """At one token the 4-bit weights move half the bytes of 8-bit ones (29.4 MB against 58.7 MB, 14 and 29 us at
    2,039 GB/s, against 2.3 us of unpacking): W4A8 is faster. At 4,096 tokens the math is the same int8 MMA
    (481 GFLOP, 0.77 ms at 624 TOPS) and the unpacking adds 3/8 x 64 passes x 58.7e6 / 9.75e12 = 0.14 ms in series:
    W4A8 is slower, by no more than that share."""
    assert _time_s(PER_CHANNEL, 1) < _time_s(W8A8, 1)
    prefill_w4, prefill_w8 = _time_s(PER_CHANNEL, 4096), _time_s(W8A8, 4096)
    assert prefill_w8 < prefill_w4 <= prefill_w8 * (1 + 0.14 / 0.77) * 1.01
