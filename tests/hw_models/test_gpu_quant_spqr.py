"""SpQR's bilevel statistics on a GPU (hw_models/gpu_quant.py): the W3A16/W4A16 dequantization plus the work of
turning each group's 3-bit scale and zero into fp16 with the second-level statistics.

Expected values are hand-computed: the per-group count is read off SpQR's kernel (Vahe1994/SpQR
inference_lib/src/spqr_quant/inference_kernels/spqr_cuda_kernel.cu, spqr_quantized_matvec_fused, per 64-bit word):
the second-level slice shifted out (1) and into place (5), three 64-bit shuffle-ors (12), the scale and zero
extracted (1), converted to half2 (5), dequantized (2) and broadcast (2), 28 lane instructions per group; the
one-level path's 3-bit unpack 1.625 (llama.cpp-style planes) and 4-bit 1.125 (FasterTransformer's converter) and
a scale, 0.5. Times use the A100 SXM 80 GB datasheet (FP32 19.5 TFLOP/s, so 9.75e12 lane instructions/s; 2,039 GB/s)
on a Llama-2-7B MLP projection (k 4,096, n 11,008) at one token."""

from __future__ import annotations

import pytest

from hw_models.gpu_quant import dequant_ops, quant_plan
from hw_models.registry import load_device
from kernels.formats import NumericFormat
from kernels.kernel import Kernel, KernelKind
from kernels.table import KernelTable

K, N = 4096, 11008
A100 = load_device("a100-sxm-80gb")
GROUP_OPS = 1 + 5 + 12 + 1 + 5 + 2 + 2


def spqr(bits: int, beta1: int, beta2: int = 16) -> NumericFormat:
    return NumericFormat(weight_bits=bits, scale_type="spqr3", group_size=beta1, scale_group_size=beta2)


def _plan(fmt: NumericFormat):
    return quant_plan(fmt, A100.spec.compute.peak_TFLOPS, "a100-sxm-80gb")


def _time_s(fmt: NumericFormat, tokens: int = 1) -> float:
    gemm = Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * tokens * K * N, weight_bytes=2.0 * K * N,
                  act_bytes=2.0 * tokens * (K + N), kv_bytes=0.0, dtype="fp16", tensor_core=True, layer=0,
                  module="model.layers.0.mlp.up_proj", m=tokens, n=N, k=K, batch=1)
    table = KernelTable.from_kernels([gemm]).with_format(fmt)
    return float(A100.cost_table(table, "device").time_s[0])


@pytest.mark.parametrize(("fmt", "ops"), [
    (spqr(3, 8, 64), 1.625 + 0.5 + GROUP_OPS / 8),  # Table 1's ~3.9-bit configuration: 5.625
    (spqr(4, 16), 1.125 + 0.5 + GROUP_OPS / 16),  # Appendix B's near-lossless configuration: 3.375
    (spqr(3, 16, 64), 1.625 + 0.5 + GROUP_OPS / 16),  # beta2 moves bytes, not instructions
])
def test_spqr_adds_its_second_level_to_the_one_level_dequantization(fmt, ops):
    plan = _plan(fmt)
    assert plan.weight_ops == pytest.approx(ops)
    assert plan.mixed_input and not plan.emulated and plan.notice == ""
    one_level = _plan(NumericFormat(weight_bits=fmt.weight_bits, group_size=fmt.group_size if fmt.group_size >= 16
                                    else 16))
    assert plan.weight_ops - one_level.weight_ops == pytest.approx(GROUP_OPS / fmt.group_size)
    # Paid once per 64-row M-tile pass, as the one-level path: the same at 1 and 64 tokens.
    assert float(dequant_ops(plan, m=64, n=N, k=K, batch=1, quantized=True)) == pytest.approx(ops * K * N)


def test_at_one_token_spqr_beats_fp16_by_less_than_its_bytes():
    """~3.9-bit SpQR: 5.625 x 45.1e6 / 9.75e12 = 26.0 us of instructions and 45.1e6 x 3.875 / 8 / 2,039e9 = 10.7 us of
    weights, against fp16's 45.1e6 x 2 / 2,039e9 = 44.2 us: faster than fp16, but by less than the 16 / 3.875 = 4.1x
    its bytes alone would give, since its dequantization takes longer than its weights."""
    weights = K * N
    instructions_s, weights_s, fp16_s = 5.625 * weights / 9.75e12, weights * 3.875 / 8 / 2039e9, weights * 2 / 2039e9
    assert weights_s < instructions_s < fp16_s
    speedup = _time_s(NumericFormat()) / _time_s(spqr(3, 8, 64))
    assert 1.0 < speedup < 16 / 3.875


def test_spqr_never_faster_than_the_one_level_format_of_its_width():
    """Same integers, more instructions (the second level) and more bytes per weight (6 / 8 + 64 / 512 = 0.875 bits
    against a 16-bit scale per 128's 0.125): at one token and at 64, never faster than W3A16 g128."""
    for tokens in (1, 64):
        assert _time_s(spqr(3, 8, 64), tokens) >= _time_s(NumericFormat(weight_bits=3), tokens)
