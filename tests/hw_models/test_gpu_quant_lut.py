"""SqueezeLLM's codebook (lut) weights on a GPU run its CUDA-core GEMV (hw_models/gpu_quant.py): 6 lane instructions a
weight and token, once per token; or, where faster (a GEMM of a few tokens or more), a kernel that writes the weights at
16 bits and the 16-bit GEMM on them.

Expected values are hand-computed from the kernel's per-weight work (squeezellm/quant_cuda_kernel.cu,
VecQuant3MatMulKernelNUQPerChannel and its Batched form, which loops over the tokens) and the RTX A6000 datasheet
(FP32 38.7 TFLOP/s, so 19.35e12 lane instructions/s; 768 GB/s), on a Llama-2-7B MLP projection (k 4,096, n 11,008)."""

from __future__ import annotations

import numpy as np
import pytest

from hw_models.gpu_quant import dequant_ops, quant_plan
from hw_models.registry import load_device
from kernels.formats import NumericFormat
from kernels.kernel import Kernel, KernelKind
from kernels.table import KernelTable

K, N = 4096, 11008
LUT3 = NumericFormat(weight_bits=3, weight_type="lut", scale_granularity="channel")
A6000 = load_device("rtx-a6000")


def _plan(fmt: NumericFormat):
    return quant_plan(fmt, A6000.spec.compute.peak_TFLOPS, "rtx-a6000")


def _ops(fmt: NumericFormat, tokens: int) -> float:
    return float(dequant_ops(_plan(fmt), m=tokens, n=N, k=K, batch=1, quantized=True))


def _time_s(fmt: NumericFormat, tokens: int) -> float:
    gemm = Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * tokens * K * N, weight_bytes=2.0 * K * N,
                  act_bytes=2.0 * tokens * (K + N), kv_bytes=0.0, dtype="fp16", tensor_core=True, layer=0,
                  module="model.layers.0.mlp.up_proj", m=tokens, n=N, k=K, batch=1)
    table = KernelTable.from_kernels([gemm]).with_format(fmt)
    return float(A6000.cost_table(table, "device").time_s[0])


def test_the_lut_gemv_pays_its_work_once_per_token():
    """6 lane instructions a weight and token: 6 x k x n at one token, 32 times that at 32; a tensor-core W4A16
    kernel dequantizes once per 64-row M-tile, the same at 1 and 32 tokens."""
    assert _ops(LUT3, 1) == pytest.approx(6 * K * N)
    assert _ops(LUT3, 32) == pytest.approx(32 * 6 * K * N)
    w4 = NumericFormat(weight_bits=4)
    assert _ops(w4, 32) == pytest.approx(_ops(w4, 1))


def test_at_one_token_the_lut_gemv_is_bound_by_its_3_bit_weights():
    """6 x 45.1e6 / 19.35e12 = 14.0 us of instructions against 45.1e6 x 3 / 8 / 768e9 = 22.0 us of weights: at least
    16 / 3 fewer bytes than fp16's, so more than 3x faster than fp16 with room for efficiency."""
    assert 6 * K * N / 19.35e12 < K * N * 3 / 8 / 768e9
    assert _time_s(NumericFormat(), 1) / _time_s(LUT3, 1) > 3.0


def test_at_32_tokens_a_lut_gemm_is_slower_than_fp16():
    """32 x 6 / 19.35e12 = 9.9 ps of instructions a weight against fp16's 2 B / 768 GB/s = 2.6 ps of weights (its
    math, 64 FLOPs a weight at 154.8 TFLOP/s, 0.4 ps): the GEMV, which redoes its work per token, loses, and so does
    the other path, which writes the weights at 16 bits before the fp16 GEMM reads them."""
    assert 32 * 6 / 19.35e12 > 2 / 768e9
    assert _time_s(LUT3, 32) > _time_s(NumericFormat(), 32)
    assert np.isfinite(_time_s(LUT3, 32))


# On a calibrated A100 (datasheet: FP32 19.5 TFLOP/s, so 9.75e12 lane instructions/s; 2,039 GB/s).
A100 = load_device("a100-sxm-80gb")
LUT4 = NumericFormat(weight_bits=4, weight_type="lut", scale_granularity="channel")
A100_LANE_OPS_PER_S = 19.5e12 / 2
A100_BANDWIDTH_BPS = 2039e9


def _gemm(tokens: int) -> KernelTable:
    return KernelTable.from_kernels([Kernel(
        kind=KernelKind.GEMM, op="mm", flops=2.0 * tokens * K * N, weight_bytes=2.0 * K * N,
        act_bytes=2.0 * tokens * (K + N), kv_bytes=0.0, dtype="bf16", tensor_core=True, layer=0,
        module="model.layers.0.mlp.up_proj", m=tokens, n=N, k=K, batch=1)])


@pytest.mark.parametrize("execution", ["engine"])
@pytest.mark.parametrize("tokens", [8, 256, 2048])
def test_a_lut_gemm_of_many_tokens_is_never_slower_than_dequantizing_then_the_bf16_gemm(tokens, execution):
    """The invariant under a serving engine: a lut GEMM costs at most what the same GEMM costs run in bf16 plus a
    kernel that reads the stored 4-bit weights and writes them at 16 bits (2.125 lane instructions a weight: the 4-bit
    unpack and the codebook lookup); priced apart, each as the A100 prices such a kernel. And the per-token GEMV is not
    what runs: its instructions alone, tokens x 6 x k x n / 9.75e12, take longer (37 ms at 256 tokens)."""
    lut = _gemm(tokens).with_format(LUT4)
    stored_B = float(lut.weight_bytes[0])
    dequantize = Kernel(kind=KernelKind.ELEMENTWISE, op="dequantize", flops=2 * 2.125 * K * N, weight_bytes=stored_B,
                        act_bytes=2.0 * K * N, kv_bytes=0.0, dtype="bf16", tensor_core=False, layer=0,
                        module="model.layers.0.mlp.up_proj")
    apart_s = (float(A100.cost_table(_gemm(tokens), execution).time_s[0])
               + float(A100.cost_table(KernelTable.from_kernels([dequantize]), execution).time_s[0]))
    lut_s = float(A100.cost_table(lut, execution).time_s[0])
    assert lut_s <= apart_s * (1 + 1e-9)
    assert lut_s < tokens * 6 * K * N / A100_LANE_OPS_PER_S


@pytest.mark.parametrize("tokens", [8, 256])
def test_outside_an_engine_a_lut_gemm_is_squeezellm_s_gemv_at_every_size(tokens):
    """PyTorch eager (and an isolated kernel) runs SqueezeLLM's QuantLinearLUT, which calls its lookup GEMV for any
    number of tokens: at least the GEMV's instructions, tokens x 6 x k x n / 9.75e12."""
    for execution in ("eager", "device"):
        lut_s = float(A100.cost_table(_gemm(tokens).with_format(LUT4), execution).time_s[0])
        assert lut_s >= tokens * 6 * K * N / A100_LANE_OPS_PER_S


def test_a_lut_gemv_at_one_token_stays_the_gemv():
    """At one token the GEMV wins: its 6 x k x n instructions take 27.7 us, while dequantizing apart moves 4.5 B a
    weight (0.5 stored read, 2 written, 2 read by the GEMM), 99.5 us at 2,039 GB/s. So the time is the GEMV's: at
    least its instructions, under the other path's traffic."""
    lut_s = float(A100.cost_table(_gemm(1).with_format(LUT4), "device").time_s[0])
    assert 6 * K * N / A100_LANE_OPS_PER_S <= lut_s < 4.5 * K * N / A100_BANDWIDTH_BPS


def test_a_lut_gemm_costs_the_same_alone_and_in_a_table_with_others():
    """The choice is made per row: a 256-token lut GEMM priced beside a one-token one costs what it costs alone."""
    one, many = _gemm(1).with_format(LUT4), _gemm(256).with_format(LUT4)
    both = KernelTable.concat([one, many])
    times = A100.cost_table(both, "device").time_s
    assert times[0] == pytest.approx(float(A100.cost_table(one, "device").time_s[0]))
    assert times[1] == pytest.approx(float(A100.cost_table(many, "device").time_s[0]))
