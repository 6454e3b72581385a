"""Numeric formats (bits, group scales, GEMM dtype) and KernelTable rescaling of decode attention."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.formats import NumericFormat
from kernels.kernel import Kernel, KernelKind
from kernels.lowering import lower_trace
from kernels.table import KernelTable


def test_w4_group128_weight_scale():
    # 4 bits per weight + one 16-bit scale per 128 weights = 4.125 bits, against 16.
    fmt = NumericFormat(weight_bits=4, group_size=128)
    assert fmt.weight_scale == (4 + 16 / 128) / 16 == 0.2578125
    assert NumericFormat(weight_bits=8, group_size=128).weight_scale == (8 + 16 / 128) / 16
    assert NumericFormat(weight_bits=4, group_size=32).weight_scale == (4 + 16 / 32) / 16
    # 16-bit: no scales, no change.
    assert NumericFormat().weight_scale == 1.0 and NumericFormat().kv_scale(128) == 1.0
    assert NumericFormat(kv_bits=8).kv_scale(128) == (8 + 16 / 128) / 16
    assert NumericFormat(act_bits=8).act_scale == 0.5


@pytest.mark.parametrize("field", ["weight_bits", "act_bits", "kv_bits"])
@pytest.mark.parametrize("bits", [0, 1, 7, 32])  # 5 and 6 are weight widths (llama.cpp's K-quants)
def test_bad_bits_raise(field, bits):
    with pytest.raises(ValueError, match=field):
        NumericFormat(**{field: bits})


@pytest.mark.parametrize("field", ["act_bits", "kv_bits"])
def test_two_and_three_bits_are_for_weights_only(field):
    assert NumericFormat(weight_bits=2).weight_scale == pytest.approx((2 + 16 / 128) / 16)
    with pytest.raises(ValueError, match=f"{field}: found 2, allowed: 16, 8, 4"):
        NumericFormat(**{field: 2})


def test_bad_group_size_raises():
    with pytest.raises(ValueError, match="group_size"):
        NumericFormat(weight_bits=4, group_size=0)


@pytest.mark.parametrize("w, a, expected", [
    (16, 16, "bf16"),  # no quantization
    (4, 16, "bf16"),  # w4a16: weights dequantized to the activation type, 16-bit math
    (8, 16, "bf16"),  # w8a16: same
    (16, 8, "bf16"),  # 8-bit activations with 16-bit weights: no integer path
    (8, 8, "int8"),  # w8a8: integer tensor cores
    (4, 8, "int8"),  # w4a8: int8 math
    (4, 4, "int4"),  # w4a4: int4 math
    (2, 4, "int4"),  # w2a4 and w3a4: narrower weights fit the same 4-bit lanes
    (3, 4, "int4"),
    (2, 8, "int8"),  # 8-bit activations keep int8 math whatever the weights
])
def test_gemm_dtype_rules(w, a, expected):
    assert NumericFormat(weight_bits=w, act_bits=a).gemm_dtype("bf16") == expected


def test_label():
    assert NumericFormat(weight_bits=4, act_bits=16, kv_bits=8).label == "w4a16kv8"


def _decode_attention(kv_len: int, layer: int = 0) -> Kernel:
    # Llama-3-8B-like layer: 32 heads of 128, 8 KV heads, batch 1.
    return Kernel(kind=KernelKind.ATTENTION_DECODE, op="attn", flops=4.0 * 32 * 128 * kv_len, weight_bytes=0.0,
                  act_bytes=2.0 * 32 * 128 * 2, kv_bytes=2.0 * 8 * kv_len * 128 * 2, dtype="bf16", tensor_core=True,
                  layer=layer, batch=1, heads=32, kv_heads=8, q_len=1, kv_len=kv_len, head_dim=128)


def _gemm() -> Kernel:
    return Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * 4096 * 4096, weight_bytes=2.0 * 4096 * 4096,
                  act_bytes=2.0 * 2 * 4096, kv_bytes=0.0, dtype="bf16", tensor_core=True, m=1, n=4096, k=4096,
                  batch=1)


def test_at_kv_lengths_scales_linearly():
    table = KernelTable.from_kernels([_gemm(), _decode_attention(100, layer=0), _gemm(), _decode_attention(100, 1)])
    steps = table.at_kv_lengths(np.array([100, 200, 1000]))
    # Two attention rows per step, step-major: [s0 l0, s0 l1, s1 l0, s1 l1, s2 l0, s2 l1]; GEMMs are not in it.
    assert len(steps) == 6
    assert all(k.kind == KernelKind.ATTENTION_DECODE for k in steps.kernels)
    # FLOPs 4 x 32 x 128 x kv: 1,638,400 at 100; 3,276,800 at 200; 16,384,000 at 1000.
    np.testing.assert_allclose(steps.flops, [1_638_400] * 2 + [3_276_800] * 2 + [16_384_000] * 2)
    # KV bytes 2 x 8 x kv x 128 x 2: 409,600 at 100; 819,200 at 200; 4,096,000 at 1000.
    np.testing.assert_allclose(steps.kv_bytes, [409_600] * 2 + [819_200] * 2 + [4_096_000] * 2)
    # The query and output traffic does not depend on the context.
    np.testing.assert_allclose(steps.act_bytes, [16_384] * 6)
    np.testing.assert_allclose(steps.weight_bytes, 0.0)
    # Each row carries the keys it attends to.
    np.testing.assert_array_equal(steps.kv_len, [100, 100, 200, 200, 1000, 1000])


def test_at_kv_lengths_clips_at_sliding_window():
    table = KernelTable.from_kernels([_decode_attention(100)])
    steps = table.at_kv_lengths(np.array([100, 400, 500, 600, 5000]), window=500)
    # Keys attended: min(kv, 500) -> 100, 400, 500, 500, 500.
    np.testing.assert_allclose(steps.flops, [4 * 32 * 128 * n for n in (100, 400, 500, 500, 500)])
    np.testing.assert_allclose(steps.kv_bytes, [2 * 8 * n * 128 * 2 for n in (100, 400, 500, 500, 500)])
    np.testing.assert_array_equal(steps.kv_len, [100, 400, 500, 500, 500])


def test_at_kv_lengths_matches_a_retraced_step(tiny_llama, trace_of):
    # Rescaling the step traced at context 16 (kv 17) to kv 25 equals tracing the step at context 24.
    base = KernelTable.from_kernels(lower_trace(trace_of(tiny_llama, "decode", 2, 1, 16)))
    retraced = KernelTable.from_kernels(lower_trace(trace_of(tiny_llama, "decode", 2, 1, 24)))
    scaled = base.at_kv_lengths(np.array([25]))
    mask = retraced.decode_attention_mask
    np.testing.assert_allclose(scaled.flops, retraced.flops[mask])
    np.testing.assert_allclose(scaled.kv_bytes, retraced.kv_bytes[mask])
    np.testing.assert_allclose(scaled.act_bytes, retraced.act_bytes[mask])
    # Nothing else in the step depends on the context.
    np.testing.assert_allclose(base.flops[~mask], retraced.flops[~mask])
    np.testing.assert_allclose(base.bytes[~mask], retraced.bytes[~mask])


def test_with_format_scales_traffic_by_role(trace_of):
    table = KernelTable.from_kernels(lower_trace(trace_of("llama-2-7b", "decode", 1, 1, 512)))
    fmt = NumericFormat(weight_bits=4, act_bits=16, kv_bits=8, group_size=128)
    quantized = table.with_format(fmt)
    np.testing.assert_allclose(quantized.weight_bytes, table.weight_bytes * 4.125 / 16)
    np.testing.assert_allclose(quantized.kv_bytes, table.kv_bytes * 8.125 / 16)
    np.testing.assert_allclose(quantized.act_bytes, table.act_bytes)  # 16-bit activations
    np.testing.assert_allclose(quantized.flops, table.flops)
    # w4a16 math stays bf16; w8a8 moves weight GEMMs (and only them) to int8.
    assert set(quantized.dtype.tolist()) == set(table.dtype.tolist())
    w8a8 = table.with_format(NumericFormat(weight_bits=8, act_bits=8))
    for kernel, dtype in zip(table.kernels, w8a8.dtype.tolist(), strict=True):
        weight_gemm = kernel.kind == KernelKind.GEMM and kernel.weight_bytes > 0
        assert dtype == ("int8" if weight_gemm else kernel.dtype)
    # The decode step's weight traffic at w4: the 16-bit figure (hand, test_capture_bytes) x 4.125 / 16.
    assert quantized.weight_bytes.sum() == pytest.approx((13_214_687_232 + 8_192) * 4.125 / 16)


def test_quantized_activations_shrink_a_gemm_input_not_its_output(trace_of):
    table = KernelTable.from_kernels(lower_trace(trace_of("llama-3-8b", "decode", 8, 1, 512)))
    q_proj = next(i for i, k in enumerate(table.kernels) if (k.kind, k.m, k.n, k.k) == (KernelKind.GEMM, 8, 4096, 4096))
    # Hand: input 8 x 4096 bf16 = 65,536 B, output 8 x 4096 bf16 = 65,536 B; at a8 the input halves, the
    # output (read by the next kernels at 16 bits) does not: 32,768 + 65,536.
    assert table.act_bytes[q_proj] == 131_072
    assert table.with_format(NumericFormat(weight_bits=8, act_bits=8)).act_bytes[q_proj] == 98_304
    assert table.with_format(NumericFormat(weight_bits=4, act_bits=4)).act_bytes[q_proj] == 16_384 + 65_536


NVFP4_W4A4 = NumericFormat(weight_bits=4, act_bits=4, weight_type="fp4_e2m1", act_type="fp4_e2m1", scale_type="e4m3",
                           group_size=16)
MXFP4_W4A4 = NumericFormat(weight_bits=4, act_bits=4, weight_type="fp4_e2m1", act_type="fp4_e2m1", scale_type="e8m0",
                           group_size=32)


@pytest.mark.parametrize("fmt, input_bits", [(NVFP4_W4A4, 4 + 8 / 16), (MXFP4_W4A4, 4 + 8 / 32)],
                         ids=["nvfp4", "mxfp4"])
def test_block_scaled_activations_move_their_scales(fmt, input_bits):
    """Hand: a block-scaled fp4 GEMM's input moves 4 bits a value plus its block's 8-bit scale (NVFP4: an e4m3 per 16
    values, 4.5 bits; MXFP4: an e8m0 per 32, 4.25 bits; OCP MX v1.0 Table 1); its 16-bit output is written as
    traced. A B200 runs the format on its fp4 tensor cores (no 16-bit inputs), so these are the bytes it prices."""
    from hw_models.registry import load_device

    m, n, k = 64, 4096, 8192
    gemm = Kernel(kind=KernelKind.GEMM, op="mm", flops=2.0 * m * n * k, weight_bytes=2.0 * k * n,
                  act_bytes=2.0 * (m * k + m * n), kv_bytes=0.0, dtype="bf16", tensor_core=True, m=m, n=n, k=k, batch=1)
    table = KernelTable.from_kernels([gemm]).with_format(fmt)
    assert table.act_bytes[0] == pytest.approx(m * k * input_bits / 8 + m * n * 2)
    assert table.weight_bytes[0] == pytest.approx(k * n * input_bits / 8)  # the weights by the same rule
    plan = load_device("b200").quant_plan(fmt)
    assert plan.dtype == plan.math_dtype == "fp4" and not plan.mixed_input


def test_per_token_scaled_activations_move_no_scale_bytes():
    """Integer activations (SmoothQuant's, QServe's: a scale per token) and fp8 activations beside integer weights
    (a scale per tensor) count their values alone, 8 bits, whatever the weights' group scales."""
    assert NumericFormat(weight_bits=8, act_bits=8).act_storage_bits == 8.0
    assert NumericFormat(weight_bits=4, act_bits=8, act_type="fp8_e4m3").act_storage_bits == 8.0
