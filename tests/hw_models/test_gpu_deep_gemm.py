"""DeepGEMM's kernels on fewer SMs (GPUModel.sharing_sms, gpu_efficiency.gemm_times sm_limit), as vLLM's dual-batch
overlap runs them while DeepEP's high-throughput all-to-all kernels hold VLLM_DBO_COMM_SMS = 20 SMs
(vllm-project/vllm vllm/v1/worker/gpu_ubatch_wrapper.py at 01e3c43: DeepGEMM's set_num_sms(total - 20), no other
library limited): 112 of an H100's 132 SMs."""

from __future__ import annotations

import numpy as np
import pytest

from hw_models.gpu_efficiency import GemmFit, gemm_times
from hw_models.registry import load_device
from kernels.formats import NumericFormat
from kernels.kernel import Kernel, KernelKind
from kernels.table import KernelTable

H100_SMS = 132
SHARED_SMS = 112  # 132 - VLLM_DBO_COMM_SMS
FP8 = dict(weight_bits=8, act_bits=8, weight_type="fp8_e4m3", act_type="fp8_e4m3", scale_type="fp32")
BLOCK_FP8 = NumericFormat(**FP8, scale_granularity="block")  # DeepSeek-V3's: a scale per 128 x 128 block
TENSOR_FP8 = NumericFormat(weight_bits=8, act_bits=8, weight_type="fp8_e4m3", act_type="fp8_e4m3")


def test_a_gemm_of_132_tiles_takes_one_wave_on_132_sms_and_two_on_112():
    """m = 1,408 = 11 x 128 and n = 1,536 = 12 x 128 in 128 x 128 tiles: 132 tiles, one whole wave on 132 SMs, so
    no padding: 2 x 1,408 x 1,536 x 4,096 = 17.72 GFLOP at 0.8 x 1,979 TFLOP/s = 11.19 us. On 112 SMs: ceil(132 /
    112) = 2 waves of 112 tiles (224 tiles' work, 224 / 132 of the FLOPs) at 112 / 132 of the rate: twice the time,
    22.38 us."""
    fit = GemmFit(compute_fraction=0.8, bandwidth_fraction=0.8, latency_s=0.0, blend=50.0)
    m, n, k = 1408.0, 1536.0, 4096.0
    flops = 2 * m * n * k
    args = dict(m=np.array([m]), n=np.array([n]), k=np.array([k]), batch=np.array([1.0]), flops=np.array([flops]),
                flops_per_s=1979e12, bytes_moved=np.array([m * k + k * n + 2 * m * n]), bandwidth_Bps=3.35e12,
                sm_count=H100_SMS, fit=fit, tiles=np.array([[128.0, 128.0]]), tile_policy="")
    whole = gemm_times(**args)[0][0]
    shared = gemm_times(**args, sm_limit=SHARED_SMS)[0][0]
    assert whole == pytest.approx(17.72e9 / (0.8 * 1979e12), rel=1e-3)
    assert whole == pytest.approx(11.19e-6, rel=1e-3)
    assert shared == pytest.approx(2 * whole, rel=1e-12)
    assert shared == pytest.approx(22.38e-6, rel=1e-3)


def test_operands_are_streamed_by_at_most_the_sms_a_gemm_may_use():
    """A tile policy with per-SM streaming (sm_bandwidth_share 1.5): m = 8 rows, n = 28,672 in vLLM's SM90 tiles of
    16 x 64 is 448 tiles, more than every SM; on 112 of 132 SMs at most 112 stream, each at 1.5 x its even share of
    the whole GPU's 3.35 TB/s (112 x 1.5 x 3.35 / 132 = 4.26 TB/s), above 0.8 x 3.35 = 2.68 TB/s: the GPU's fraction
    still bounds it; with a share of 0.5 the 112 SMs bound it at 112 x 0.5 x 3.35 / 132 = 1.42 TB/s."""
    m, n, k = 8.0, 28672.0, 7168.0
    moved = np.array([k * n + m * k + 2 * m * n])
    for share, rate in ((1.5, 0.8 * 3.35e12), (0.5, SHARED_SMS * 0.5 * 3.35e12 / H100_SMS)):
        fit = GemmFit(compute_fraction=0.8, bandwidth_fraction=0.8, latency_s=0.0, blend=50.0,
                      tile_policy="vllm-cutlass-fp8/sm90", sm_bandwidth_share=share)
        memory_s = gemm_times(m=np.array([m]), n=np.array([n]), k=np.array([k]), batch=np.array([1.0]),
                              flops=np.array([2 * m * n * k]), flops_per_s=1979e12, bytes_moved=moved,
                              bandwidth_Bps=3.35e12, sm_count=H100_SMS, fit=fit, sm_limit=SHARED_SMS)[1][0]
        assert memory_s == pytest.approx(moved[0] / rate, rel=1e-9)


def _gemm(m: int, n: int, k: int) -> Kernel:
    return Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * m * n * k, weight_bytes=2.0 * k * n,
                  act_bytes=2.0 * (m * k + m * n), kv_bytes=0.0, dtype="bf16", tensor_core=True, m=m, n=n, k=k, batch=1)


def _times(device, fmt: NumericFormat | None, *gemms: Kernel) -> np.ndarray:
    table = KernelTable.from_kernels(list(gemms))
    return device.cost_table(table.with_format(fmt) if fmt is not None else table, "device").time_s


@pytest.fixture(scope="module")
def h100():
    return load_device("h100-sxm")


def test_only_block_scaled_fp8_gemms_lose_sms_and_never_run_faster(h100):
    """DeepSeek-V3's MLP up projection (n 2 x 18,432 / 16 = 2,304, k 7,168) at 4,096 tokens, compute-bound: on 112
    SMs it takes longer, by at most 132 / 112 times the whole rate's math plus a wave; a small one never runs faster.
    A 16-bit GEMM and a per-tensor fp8 one (cuBLAS and CUTLASS, which vLLM does not limit) are priced as before,
    and so is every GEMM of a GPU DeepGEMM does not run on (an A100, compute capability 8.0)."""
    shared = h100.sharing_sms(20)
    assert shared.deep_gemm_sms == SHARED_SMS
    big, small = _gemm(4096, 2304, 7168), _gemm(16, 2304, 7168)
    whole_s, shared_s = _times(h100, BLOCK_FP8, big, small), _times(shared, BLOCK_FP8, big, small)
    assert shared_s[0] > whole_s[0] * 1.05
    assert shared_s[1] >= whole_s[1]
    for fmt in (None, TENSOR_FP8):
        assert np.array_equal(_times(shared, fmt, big, small), _times(h100, fmt, big, small))
    assert h100.sharing_sms(0) is h100
    a100 = load_device("a100-sxm-80gb")
    assert a100.sharing_sms(20) is a100


def test_a_gemm_deep_gemm_cannot_run_keeps_every_sm(h100):
    """n = 2,112 is no multiple of 128 (should_use_deepgemm_for_fp8_linear at vllm 00620f9): vLLM runs it on
    CUTLASS's block-scaled kernel, whose SMs it does not limit."""
    odd = _gemm(4096, 2112, 7168)
    assert np.array_equal(_times(h100.sharing_sms(20), BLOCK_FP8, odd), _times(h100, BLOCK_FP8, odd))


def test_more_sms_than_the_gpu_has_are_refused(h100):
    with pytest.raises(ValueError, match=r"^comm_sms: found 132, allowed: 0 to 131"):
        h100.sharing_sms(132)
