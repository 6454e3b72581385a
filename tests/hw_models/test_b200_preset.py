"""The B200 preset against figures written here from NVIDIA's datasheets, not read back from the preset."""

from __future__ import annotations

import pytest

from hw_models.registry import load_device
from kernels.formats import NumericFormat
from kernels.kernel import Kernel, KernelKind

# NVIDIA HGX B200 specifications, 'Individual Blackwell GPU Specifications', HGX B200 column. Tensor Core
# figures there are with 2:4 sparsity (the DGX B200 page lists FP4 as 144 PFLOPS sparse / 72 dense for 8 GPUs).
SPARSE_BF16_TFLOPS = 4500  # FP16/BF16 Tensor Core 4.5 PFLOPS
SPARSE_FP8_TFLOPS = 9000  # FP8/FP6 Tensor Core 9 PFLOPS
SPARSE_FP4_TFLOPS = 18000  # FP4 Tensor Core 18 PFLOPS
BANDWIDTH_GBPS = 7700  # 180 GB HBM3E at 7.7 TB/s (the DGX B200 page's 64 TB/s / 8 GPUs would be 8 TB/s)
CAPACITY_GB = 180  # also the DGX B200 page: 1,440 GB / 8 GPUs
TDP_W = 1000  # configurable up to 1,000 W


@pytest.fixture(scope="module")
def b200():
    return load_device("b200", calibrated=False)


def test_dense_bf16_is_half_the_sparse_datasheet_figure(b200):
    assert b200.peak_flops("bf16") == pytest.approx(SPARSE_BF16_TFLOPS / 2 * 1e12)
    assert b200.peak_flops("fp16") == pytest.approx(SPARSE_BF16_TFLOPS / 2 * 1e12)


def test_fp8_is_twice_bf16_and_fp4_twice_fp8(b200):
    assert b200.peak_flops("fp8") == pytest.approx(2 * b200.peak_flops("bf16"))
    assert b200.peak_flops("fp8") == pytest.approx(SPARSE_FP8_TFLOPS / 2 * 1e12)
    assert b200.peak_flops("fp4") == pytest.approx(2 * b200.peak_flops("fp8"))
    assert b200.peak_flops("fp4") == pytest.approx(SPARSE_FP4_TFLOPS / 2 * 1e12)


def test_memory_and_power_match_the_datasheet(b200):
    assert b200.bandwidth_Bps == pytest.approx(BANDWIDTH_GBPS * 1e9)
    assert b200.spec.memory.capacity_GB == CAPACITY_GB
    # What a CUDA program can allocate: totalGlobalMem '178.35 GB' (GiB) on an NVIDIA B200
    # (github.com/pytorch/ao/pull/4002)
    assert b200.memory_bytes == pytest.approx(178.35 * 2**30)
    assert b200.spec.power.tdp_W == TDP_W
    assert b200.spec.compute.structured_sparsity == ("2:4",) and "2:4" in b200.sparsity_patterns


def test_reading_1_gb_takes_1_gb_over_the_bandwidth(b200):
    one_gb = 1e9
    read = Kernel(kind=KernelKind.ELEMENTWISE, op="read", flops=0.0, weight_bytes=one_gb, act_bytes=0.0,
                  kv_bytes=0.0, dtype="bf16", tensor_core=False)
    cost = b200.cost(read, execution="device")
    assert cost.bound == "memory"
    assert cost.time_s == pytest.approx(one_gb / (BANDWIDTH_GBPS * 1e9), rel=1e-12)  # 129.9 us


def test_4_bit_gemms_do_not_reach_the_fp4_rate(b200):
    # The kernel layer names 4-bit activations x 4-bit weights "int4", which falls back to int8 (B200 lists no
    # INT4 tensor rate); no format maps to "fp4" yet, so the fp4 peak is reachable only by asking for it.
    dtype = NumericFormat(weight_bits=4, act_bits=4).gemm_dtype("bf16")
    assert dtype == "int4"
    assert b200.peak_flops(dtype) == pytest.approx(b200.peak_flops("int8"))
    assert b200.peak_flops(dtype) < b200.peak_flops("fp4")
